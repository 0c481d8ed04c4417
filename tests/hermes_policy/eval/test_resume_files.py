"""Resuming ``hermes-lab eval --out DIR`` from damaged files: a partial file with a non-UTF-8 byte, a torn
line or a changed line, a truncated ``rows.parquet``, and a folder a failed start left with only its config."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hermes_lab.cli import main
from hermes_policy.eval import EvalError, EvalRow
from hermes_policy.eval.sweep import PARTIAL_FILE, EvalDir, unit_checksum

EVAL = ["eval", "--model", "tiny-embedded", "--policy", "full,sink-window"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("data") / "d"
    assert main(["data", "synth", "--seed", "1", "--videos", "2", "--frames", "8", "--out", str(d)]) == 0
    return d


@pytest.fixture(scope="module")
def clean(data, tmp_path_factory) -> Path:
    """An uninterrupted run: 2 videos x (full, sink-window@0.5) = 4 units."""
    out = tmp_path_factory.mktemp("clean") / "out"
    assert main([*EVAL, "--data", str(data), "--budget-ratio", "0.5", "--out", str(out), "--json"]) == 0
    return out


def _eval(data: Path, out: Path, ratio: str = "0.5") -> int:
    return main([*EVAL, "--data", str(data), "--budget-ratio", ratio, "--out", str(out), "--json"])


def _stable(folder: Path) -> list[dict]:
    """rows.parquet without the timings, which differ between runs."""
    return [{k: v for k, v in r.items() if k != "ttft_ms"} for r in pq.read_table(folder / "rows.parquet").to_pylist()]


def _units(clean: Path) -> list[tuple[str, int, list[EvalRow]]]:
    by_unit: dict[tuple[str, int], list[EvalRow]] = {}
    for record in pq.read_table(clean / "rows.parquet").to_pylist():
        row = EvalRow.from_dict(record)
        by_unit.setdefault((row.run, row.video_index), []).append(row)
    return [(run, video, rows) for (run, video), rows in by_unit.items()]


def _interrupted(clean: Path, out: Path, finished: int = 3) -> list[bytes]:
    """``out`` as a run of ``clean``'s settings killed after ``finished`` units; returns the partial file's lines."""
    out.mkdir()
    shutil.copy(clean / "config.json", out / "config.json")
    outdir = EvalDir(out)
    for run, video, rows in _units(clean)[:finished]:
        outdir.append(run, video, rows)
    return (out / PARTIAL_FILE).read_bytes().splitlines()


def _write(out: Path, lines: list[bytes], torn_tail: bytes = b"") -> None:
    (out / PARTIAL_FILE).write_bytes(b"".join(line + b"\n" for line in lines) + torn_tail)


def _assert_resumed(clean: Path, out: Path, err: str, dropped: int, why: str, again: str) -> None:
    assert "Traceback" not in err
    warnings = [line for line in err.splitlines() if "damaged line" in line]
    assert len(warnings) == 1, err  # said once
    assert f"dropped {dropped} damaged line(s) of {PARTIAL_FILE}" in warnings[0] and why in warnings[0]
    assert f"evaluating again: {again}" in warnings[0]
    assert _stable(out) == _stable(clean)
    assert not (out / PARTIAL_FILE).exists()


def test_partial_line_format_has_a_checksum_over_the_whole_unit(clean, tmp_path):
    lines = _interrupted(clean, tmp_path / "out")
    assert len(lines) == 3  # one line per unit, holding all its rows
    record = json.loads(lines[0])
    assert list(record)[:2] == ["run", "video_index"] and len(record["rows"]) > 1
    assert record["sha256"] == unit_checksum(record)


def test_a_non_utf8_byte_drops_that_line_only(data, clean, tmp_path, capsys):
    out = tmp_path / "out"
    lines = _interrupted(clean, out)
    lines[1] = lines[1].replace(b'"question": "', b'"question": "\xff', 1)  # sink-window@0.5 on video 0
    _write(out, lines)
    capsys.readouterr()
    assert _eval(data, out) == 0
    err = capsys.readouterr().err
    assert "resuming: 2 of 4 streams already done" in err
    _assert_resumed(clean, out, err, 1, "1 not UTF-8", "sink-window@0.5 on video 0")


def test_a_torn_last_line_is_dropped_with_a_warning(data, clean, tmp_path, capsys):
    out = tmp_path / "out"
    lines = _interrupted(clean, out)
    _write(out, lines[:2], torn_tail=lines[2][: len(lines[2]) // 2])  # a writer killed mid-line: full on video 1
    capsys.readouterr()
    assert _eval(data, out) == 0
    err = capsys.readouterr().err
    assert "resuming: 2 of 4 streams already done" in err
    _assert_resumed(clean, out, err, 1, "1 cut off mid-write", "full on video 1")


def test_a_changed_line_fails_its_checksum_and_its_unit_runs_again(data, clean, tmp_path, capsys):
    out = tmp_path / "out"
    lines = _interrupted(clean, out, finished=4)
    assert b'"correct": false' in lines[0]
    lines[0] = lines[0].replace(b'"correct": false', b'"correct": true', 1)  # full on video 0
    _write(out, lines)
    capsys.readouterr()
    assert _eval(data, out) == 0
    err = capsys.readouterr().err
    assert "resuming: 3 of 4 streams already done" in err
    _assert_resumed(clean, out, err, 1, "checksum mismatch", "full on video 0")
    assert not any(r["correct"] for r in _stable(out) if r["run"] == "full" and r["video_index"] == 0)


def test_lines_without_a_checksum_are_not_trusted(clean, tmp_path, capsys):
    """A partial file of a hermes-lab before checksums: its units are evaluated again, never taken unverified."""
    out = tmp_path / "out"
    lines = _interrupted(clean, out)
    legacy = json.loads(lines[0])
    del legacy["sha256"]
    _write(out, [json.dumps(legacy, ensure_ascii=False).encode(), *lines[1:]])
    settings = json.loads((out / "config.json").read_text())["settings"]
    units = [(run, video) for run, video, _ in _units(clean)]
    assert sorted(EvalDir(out).resume(settings, units)) == sorted(units[1:3])
    err = capsys.readouterr().err
    assert "1 without a checksum" in err and "evaluating again: full on video 0" in err
    assert len((out / PARTIAL_FILE).read_bytes().splitlines()) == 2  # repaired: the unverifiable line is gone


def test_a_truncated_rows_parquet_is_one_line_error(data, clean, tmp_path, capsys):
    out = tmp_path / "out"
    shutil.copytree(clean, out)
    parquet = out / "rows.parquet"
    parquet.write_bytes(parquet.read_bytes()[: parquet.stat().st_size // 2])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert _eval(data, out) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("hermes-lab: error: ") and "rows.parquet is damaged" in err
    assert f"delete {out}" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing written


def test_a_config_left_by_a_failed_start_is_not_an_evaluation(data, clean, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    shutil.copy(clean / "config.json", out / "config.json")  # settings: --budget-ratio 0.5; nothing finished
    capsys.readouterr()
    assert _eval(data, out, ratio="0.25") == 0
    err = capsys.readouterr().err
    assert "holds an evaluation" not in err and "starting it over" in err
    config = json.loads((out / "config.json").read_text())
    assert [p["label"] for p in config["settings"]["policies"]] == ["full", "sink-window@0.25"]
    assert {r["run"] for r in _stable(out)} == {"full", "sink-window@0.25"}


def test_only_torn_lines_are_nothing_finished_but_a_unit_of_other_settings_is_refused(clean, tmp_path):
    out = tmp_path / "out"
    lines = _interrupted(clean, out, finished=1)
    settings = json.loads((out / "config.json").read_text())["settings"]
    other = {**settings, "chunk_frames": 2}
    with pytest.raises(EvalError, match=r"other settings \(chunk_frames differ\)"):
        EvalDir(out).resume(other, [("full", 0)])
    _write(out, [], torn_tail=lines[0][:40])
    outdir = EvalDir(out)
    assert outdir.resume(other, [("full", 0)]) == {}
    assert (out / PARTIAL_FILE).exists()  # resume writes nothing; start replaces the failed start's files
    outdir.start({"settings": other})
    assert json.loads((out / "config.json").read_text()) == {"settings": other}
    assert not (out / PARTIAL_FILE).exists()


def test_bad_settings_fail_before_anything_is_written(data, tmp_path, capsys):
    out = tmp_path / "never"
    for bad in (["--chunk-frames", "0"], ["--reindex", "sometimes"], ["--fps", "0"]):
        code = main(["eval", "--model", "tiny-embedded", "--data", str(data), "--policy", "full", "--out", str(out),
                     *bad])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "hermes-lab: error:" in err
        assert not out.exists(), f"{bad}: the folder must not be created"
