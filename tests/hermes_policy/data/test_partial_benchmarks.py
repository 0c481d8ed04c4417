"""Real benchmark annotations: a relative --video-root, and a benchmark of which only some videos are here."""

from __future__ import annotations

import json

from hermes_lab.cli import main
from hermes_policy.data import read_dataset
from hermes_policy.video import SyntheticVideo, write_mp4


def _annotations(folder, videos: list[str]) -> None:
    anno = [{"video_path": v, "questions": [{"task_type": "Object Perception", "question": "What is shown now?",
                                              "time_stamp": "00:00:01", "answer": "A",
                                              "options": ["A. a circle", "B. a square"]}]} for v in videos]
    (folder / "questions_real.json").write_text(json.dumps(anno))


def test_a_relative_video_root_resolves_from_the_datasets_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "vids").mkdir()
    write_mp4(SyntheticVideo(seed=4, frames=4, width=64, height=64), tmp_path / "vids" / "a.mp4")
    _annotations(tmp_path, ["a.mp4"])
    assert main(["data", "convert", "questions_real.json", "--video-root", "vids", "--out", "ds"]) == 0
    capsys.readouterr()
    line = json.loads((tmp_path / "ds" / "dataset.jsonl").read_text().splitlines()[0])
    assert line["video"] == str(tmp_path / "vids" / "a.mp4"), "outside the dataset's folder: absolute"
    monkeypatch.chdir(tmp_path / "vids")  # from anywhere else, the dataset still finds its video
    (item,) = read_dataset(tmp_path / "ds")
    assert item.video == str(tmp_path / "vids" / "a.mp4")


def test_skip_missing_evaluates_what_is_there_and_says_so(tmp_path, capsys):
    write_mp4(SyntheticVideo(seed=4, frames=4, width=64, height=64), tmp_path / "a.mp4")
    _annotations(tmp_path, ["a.mp4", "gone.mp4", "also-gone.mp4"])
    data, out = tmp_path / "questions_real.json", tmp_path / "r"
    code = main(["eval", "--model", "tiny-embedded", "--data", str(data), "--policy", "full", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "2 of 3 videos are missing" in err and not out.exists()
    code = main(["eval", "--model", "tiny-embedded", "--data", str(data), "--policy", "full", "--out", str(out),
                 "--skip-missing", "--json"])
    captured = capsys.readouterr()
    assert code == 0 and captured.err.count("--skip-missing: 2 of 3 videos (2 questions)") == 1
    expected = {"videos": 2, "questions": 2}
    assert json.loads((out / "config.json").read_text())["skipped_missing"] == expected
    results = json.loads((out / "results.json").read_text())
    assert results["skipped_missing"] == expected and results["questions"] == 1
    _annotations(tmp_path, ["gone.mp4"])
    code = main(["eval", "--model", "tiny-embedded", "--data", str(data), "--policy", "full",
                 "--out", str(tmp_path / "r2"), "--skip-missing"])
    assert code == 2 and "none of the 1 videos" in capsys.readouterr().err
