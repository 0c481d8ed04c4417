"""Bad values for this round's options and input files: one ``hermes-lab: error:`` line, exit 2, nothing written.

Covers --device-map, --max-memory, --offload-folder, --gpus-per-rank, --dist-timeout, --videos and config:
models, on every command that takes them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hermes_lab.cli import main

VIDEO = "synthetic:seed=1,frames=4"


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    empty = tmp / "empty.txt"
    empty.write_text("# nothing\n\n")
    binary = tmp / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00video")
    bad_map = tmp / "map.json"
    bad_map.write_text("{not json")
    bad_config = tmp / "config.json"
    bad_config.write_text('{"model_type": "bert"}')
    return [
        (["--device-map", "everywhere"], "device-map"),
        (["--device-map", str(bad_map)], "not valid JSON"),
        (["--device-map", "auto", "--max-memory", "cpu=lots"], "DEVICE=SIZE"),
        (["--max-memory", "cpu=1GiB"], "give one too"),
        (["--offload-folder", str(tmp / "off")], "give a --device-map too"),
        (["--model", "config:no-such-model"], "unknown config"),
        (["--model", f"config:{bad_config}"], "model_type 'bert'"),
        (["--model", f"config:{bad_map}"], "not valid JSON"),
    ], [
        (["--dist-timeout", "0"], "--dist-timeout must be a number in [1, 2592000]"),
        (["--dist-timeout", "nan"], "--dist-timeout must be a number in [1, 2592000]"),
        (["--gpus-per-rank", "0"], "positive number of GPUs"),
    ], [
        (["--videos", str(empty)], "lists no videos"),
        (["--videos", str(binary)], "UTF-8"),
        (["--videos", str(tmp / "missing.txt")], "does not exist"),
        (["--videos", str(tmp)], "is a folder, not a file"),
    ]


def _commands(tmp: Path, data: Path) -> dict[str, list[str]]:
    return {
        "stream": ["stream", "--video", VIDEO, "--max-new-tokens", "1"],
        "bench": ["bench", "--video", VIDEO, "--frames", "4", "--policies", "full"],
        "study": ["study", "--video", VIDEO, "--video", "synthetic:seed=2,frames=4", "--out", str(tmp / "study")],
        "eval": ["eval", "--data", str(data), "--policy", "full", "--out", str(tmp / "eval")],
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bad-input-data")
    assert main(["data", "synth", "--seed", "1", "--videos", "1", "--frames", "4", "--per-category", "1",
                 "--out", str(folder)]) == 0
    return folder


@pytest.mark.parametrize("command", ["stream", "bench", "study", "eval"])
def test_bad_options_and_files_are_one_line_and_write_nothing(command: str, data: Path, tmp_path: Path,
                                                              capsys) -> None:
    placement, launch, videos = _bad_inputs(tmp_path)
    cases = list(placement)
    if command != "stream":
        cases += launch
    if command == "study":
        base = ["study", "--out", str(tmp_path / "study")]
        cases += [(args, match) for args, match in videos]
    for args, match in cases:
        argv = (base if command == "study" and args[0] == "--videos" else _commands(tmp_path, data)[command]) + args
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2, (argv, err)
        assert "Traceback" not in err and err.count("hermes-lab: error:") == 1 and match in err, (argv, err)
        for out in ("study", "eval"):
            assert not (tmp_path / out).exists(), f"{argv} wrote {out}/ before failing"


def test_dashboard_refuses_bad_placement_before_streamlit(tmp_path: Path, capsys) -> None:
    placement, _, _ = _bad_inputs(tmp_path)
    for args, match in placement:
        if args[0] == "--model":
            continue  # the dashboard picks models in the app; a bad one shows on its page
        assert main(["dashboard", *args]) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err and match in err, (args, err)
