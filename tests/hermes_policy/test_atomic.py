"""One atomic-write helper: a crash mid-write leaves the old file (or directory) as it was."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_policy.atomic import atomic_dir, atomic_path, atomic_write_json, atomic_write_text, remove_leftovers
from hermes_policy.errors import HermesError


def test_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_exception_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "rows.parquet"
    target.write_bytes(b"old contents")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]


def test_killed_process_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A real crash: the writer dies (no cleanup, no exception handling) half-way through."""
    target = tmp_path / "spec.json"
    target.write_text('{"policy": "full"}')
    script = (
        "import os, sys\n"
        "from hermes_policy.atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    with open(tmp, 'w') as f:\n"
        "        f.write('{\"policy\": \"hal')\n"
        "        f.flush()\n"
        "        os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert json.loads(target.read_text()) == {"policy": "full"}


def test_missing_directory_and_directory_target_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(HermesError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.txt", "x")
    with pytest.raises(HermesError, match="is a directory"):
        atomic_write_text(tmp_path, "x")


def test_directory_swap_is_all_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "state.txt").write_text("step 50")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as staging:
            (staging / "state.txt").write_text("step 1")
            raise KeyboardInterrupt
    assert (target / "state.txt").read_text() == "step 50"
    with atomic_dir(target) as staging:
        (staging / "state.txt").write_text("step 100")
    assert (target / "state.txt").read_text() == "step 100"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_leftovers_of_a_killed_swap_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "model"
    (tmp_path / ".model.tmp-abc").mkdir()
    (tmp_path / ".model.stale-def").mkdir()
    (tmp_path / "other").mkdir()
    remove_leftovers(target)
    assert [p.name for p in tmp_path.iterdir()] == ["other"]


# ------------------------------------------------------------------ a disk that fills up partway
def _limited(limit_bytes: int):
    """preexec_fn: the child may write no file past ``limit_bytes`` (writes then fail with EFBIG, as on a full
    disk; Python ignores SIGXFSZ, so the write raises instead of killing the process). Unprivileged, unlike a
    small tmpfs."""
    import resource

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_full_disk_mid_write_is_one_error_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "rows.parquet"
    target.write_bytes(b"old contents")
    script = (
        "from hermes_policy.atomic import atomic_write_bytes\n"
        "from hermes_policy.errors import HermesError\n"
        "try:\n"
        f"    atomic_write_bytes({str(target)!r}, b'x' * 200_000)\n"
        "except HermesError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            preexec_fn=_limited(64 * 1024))
    assert result.returncode == 0, result.stderr
    assert f"cannot write {target}: File too large" in result.stdout
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]


def test_no_space_left_in_a_staged_folder_keeps_the_old_folder(tmp_path: Path, monkeypatch) -> None:
    import errno

    target = tmp_path / "figures"
    target.mkdir()
    (target / "old.png").write_bytes(b"old")
    with pytest.raises(HermesError, match="No space left on device"):
        with atomic_dir(target) as staging:
            (staging / "a.png").write_bytes(b"new")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(staging / "b.png"))
    assert sorted(p.name for p in target.iterdir()) == ["old.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]
    # the folders it made for a new target are removed again
    with pytest.raises(HermesError):
        with atomic_dir(tmp_path / "a" / "b" / "new") as staging:
            raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figures"]


def test_cli_on_a_full_disk_says_so_in_one_line_and_keeps_the_previous_output(tmp_path: Path) -> None:
    """data synth (a folder staged whole) and derive (one file), each over a previous output, with writes
    failing partway through: exit 2, one line, the previous output byte for byte, nothing left beside it."""
    from analysis.synthetic import hermes_like_recording

    cli = [sys.executable, "-m", "hermes_lab"]
    data = tmp_path / "data"
    synth = [*cli, "data", "synth", "--frames", "48", "--videos", "3", "--size", "96x96", "--mp4", "--out", str(data)]
    assert subprocess.run(synth, capture_output=True).returncode == 0
    study = tmp_path / "study"
    hermes_like_recording(num_layers=6).save(study)
    spec = tmp_path / "spec.json"
    derive = [*cli, "derive", "--study", str(study), "--out", str(spec)]
    assert subprocess.run(derive, capture_output=True).returncode == 0
    before = {p: p.read_bytes() for p in [*data.rglob("*"), spec] if p.is_file()}
    video = max(len(b) for p, b in before.items() if p.suffix == ".mp4")
    for args, limit in ((synth, video // 2), (derive, spec.stat().st_size // 2)):
        result = subprocess.run([*args, "--overwrite", "--seed", "1"] if args is synth else [*args, "--overwrite"],
                                capture_output=True, text=True, preexec_fn=_limited(limit))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
        assert lines[-1].startswith("hermes-lab: error: ") and "File too large" in lines[-1], result.stderr
    assert {p: p.read_bytes() for p in [*data.rglob("*"), spec] if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "spec.json", "study"]
