"""The streaming protocol manifest (protocol.json, eval --protocol, figures refusing mixed protocols) and
OVO-Bench's forward-active REC questions in hermes-lab's own eval (free-form counts, OVO-Bench's rule)."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from hermes_policy.data.dataset import DatasetError, count_question, parse_question, question_to_dict, read_dataset
from hermes_policy.eval.cli import register
from hermes_policy.eval.errors import EvalError
from hermes_policy.eval.protocol import (
    PROTOCOL_FILE,
    check_comparable,
    differences,
    manifest,
    read_manifest,
    write_manifest,
)
from hermes_policy.eval.scoring import extract_count
from hermes_policy.video import SyntheticVideo, write_mp4


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)

    @app.command("noop")
    def _noop() -> None:  # a second command, so "eval" stays a subcommand
        pass

    return app


def _manifest(**changes):
    settings = {"chunk_frames": 4, "fps": None, "reindex": "lazy", "scoring": "cloze", "system_prompt": "s",
                "data_sha256": "ab", "data_format": "ovobench", "videos": 1, "questions": 5, "limit": None}
    settings.update(changes)
    return manifest(**settings)


# ------------------------------------------------------------------ REC data
def test_count_questions_round_trip_and_refuse_bad_counts():
    q = count_question(2.0, "How many times did they jump?", 3, "forward", "REC", "4/0")
    d = question_to_dict(q)
    assert d["answer_format"] == "count" and d["options"] == [] and d["answer"] == "3"
    assert parse_question(d) == q
    assert "answer_format" not in question_to_dict(parse_question(
        {"time": 1, "question": "Q?", "options": ["a", "b"], "answer": "A"}))  # a choice question stays as it was
    for bad, words in ((-1, ">= 0"), ("three", ">= 0"), (True, ">= 0"), (2.5, ">= 0")):
        with pytest.raises(ValueError, match=words):
            count_question(1.0, "How many?", bad, "forward")
    with pytest.raises(ValueError, match="has no 'options'"):
        parse_question({**d, "options": ["1", "2"]})
    with pytest.raises(ValueError, match="'answer_format' must be choice or count"):
        parse_question({**d, "answer_format": "essay"})


def test_count_extraction_is_ovo_benchs_rule():
    assert extract_count("3") == "3"
    assert extract_count("They did it 3 times.") == "3"
    assert extract_count("three") == ""
    assert extract_count("1 or 2") == "12"  # every run of digits joined, as OVO-Bench's score.py does
    assert extract_count("") == ""


# -------------------------------------------------------------- manifests
def test_manifest_names_every_rule_and_differences_are_dotted():
    m = _manifest()
    assert m["format"] == "hermes-lab/streaming-protocol" and m["version"] == 1
    assert m["question_view"]["future_frames"] is False and m["question_view"]["options_shown"] is False
    assert m["stream"] == {**m["stream"], "chunk_frames": 4, "fps": None, "reindex": "lazy"}
    assert m["answer_extraction"]["multiple_choice"]["scoring"] == "cloze"
    assert "count" not in m["answer_extraction"]  # no free-form question: no count rule to compare
    assert "count" in _manifest(count_questions=2)["answer_extraction"]
    assert "REC" in m["forward_active"] and m["dataset"]["sha256"] == "ab"
    assert differences(m, _manifest()) == []
    assert differences(m, _manifest(chunk_frames=8, data_sha256="cd")) == ["dataset.sha256", "stream.chunk_frames"]
    assert _manifest(scoring="letter")["question_view"]["options_shown"] is True
    with pytest.raises(EvalError):
        _manifest(scoring="count")


def test_check_comparable(tmp_path):
    a, b, c, old = (tmp_path / n for n in ("a", "b", "c", "old"))
    for folder in (a, b, c, old):
        folder.mkdir()
    write_manifest(a, _manifest())
    write_manifest(b, _manifest())
    write_manifest(c, _manifest(fps=2.0))
    check_comparable([a, b])
    check_comparable([a])  # one folder: nothing to compare
    with pytest.raises(EvalError, match=r"different protocols \(stream\.fps differ\).*--mixed-protocols"):
        check_comparable([a, b, c])
    check_comparable([a, c], allow_mixed=True)
    with pytest.raises(EvalError, match="no protocol.json in .*old"):
        check_comparable([a, old])
    assert read_manifest(old) is None and read_manifest(a) == _manifest()
    (old / PROTOCOL_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(EvalError, match="not a hermes-lab protocol manifest"):
        read_manifest(old)


# ------------------------------------------------- eval on OVO-Bench data
@pytest.fixture(scope="module")
def ovo(tmp_path_factory):
    """An OVO-Bench annotation file over one synthetic clip: backward, real-time, and the three forward tasks."""
    folder = tmp_path_factory.mktemp("ovo")
    write_mp4(SyntheticVideo(seed=4, frames=12, width=64, height=64, fps=2), folder / "clip.mp4")
    anno = [
        {"id": 1, "video": "clip.mp4", "task": "EPM", "realtime": 4.0, "question": "What appeared first?",
         "options": ["circle", "square", "triangle"], "gt": 0},
        {"id": 2, "video": "clip.mp4", "task": "STU", "realtime": 2.0, "question": "What is on screen?",
         "options": ["a shape", "nothing"], "gt": 0},
        {"id": 3, "video": "clip.mp4", "task": "REC", "activity": "appear",
         "test_info": [{"realtime": 1.5, "count": 1}, {"realtime": 3.0, "count": 2}, {"realtime": 5.0, "count": 3}]},
        {"id": 5, "video": "clip.mp4", "task": "SSR", "test_info": [{"realtime": 2.5, "step": "draw", "type": 1}]},
        {"id": 6, "video": "clip.mp4", "task": "CRR", "question": "What colour is the last shape?",
         "test_info": [{"realtime": 1.0, "type": 0}, {"realtime": 5.5, "type": 1}]},
    ]
    path = folder / "ovo_bench_new.json"
    path.write_text(json.dumps(anno))
    return path


def _eval(data, *extra):
    return CliRunner().invoke(_app(), ["eval", "--model", "tiny-embedded", "--data", str(data), "--policy",
                                       "full,sink-window", "--budget", "8", "--fps", "2", *extra])


def test_eval_scores_ovo_forward_active_rec_and_writes_the_manifest(tmp_path, ovo):
    out = tmp_path / "eval"
    result = _eval(ovo, "--out", str(out), "--json")
    assert result.exit_code == 0, result.output
    rows = pq.read_table(out / "rows.parquet").to_pylist()
    listed = [r for r in rows if r["run"] == "full"]
    assert {r["task"] for r in listed} == {"EPM", "STU", "REC", "SSR", "CRR"}
    rec = [r for r in listed if r["task"] == "REC"]
    # every probe is its own question at its own time, on the one stream of the video
    assert [(r["time"], r["answer"], r["category"]) for r in rec] == [(1.5, "1", "forward"), (3.0, "2", "forward"),
                                                                      (5.0, "3", "forward")]
    assert [r["frames_seen"] for r in rec] == [4, 7, 11]
    for r in rec:
        assert r["scores"] == [] and r["kl_vs_full"] is None
        assert r["predicted"] == extract_count(r["answer_text"]) and r["correct"] == (r["predicted"] == r["answer"])
    forward = [r for r in listed if r["category"] == "forward"]
    assert len(forward) == 3 + 1 + 2
    results = json.loads((out / "results.json").read_text())
    assert results["results"][0]["by_category"]["forward"] is not None
    # the manifest: in its own file and in config.json, equal to what --protocol prints for these settings
    written = json.loads((out / PROTOCOL_FILE).read_text())
    assert json.loads((out / "config.json").read_text())["protocol"] == written
    assert written["dataset"]["questions"] == 2 + 3 + 1 + 2 and "count" in written["answer_extraction"]
    assert written["answer_extraction"]["multiple_choice"]["scoring"] == "letter"  # tiny-embedded's own
    printed = _eval(ovo, "--protocol")
    assert printed.exit_code == 0, printed.output
    assert json.loads(printed.stdout) == written
    assert not (tmp_path / "other").exists()
    other = _eval(ovo, "--protocol", "--scoring", "cloze", "--chunk-frames", "2")
    assert differences(written, json.loads(other.stdout)) == [
        "answer_extraction.multiple_choice.rule", "answer_extraction.multiple_choice.scoring",
        "question_view.options_shown", "stream.chunk_frames"]


def test_eval_without_out_says_so(ovo):
    result = _eval(ovo)
    assert result.exit_code != 0
    assert "--out is required" in str(result.exception) or "--out is required" in result.output


def test_figures_refuse_runs_of_other_protocols(tmp_path, ovo):
    from hermes_lab.cli import main

    a, b = tmp_path / "a", tmp_path / "b"
    assert _eval(ovo, "--out", str(a), "--json").exit_code == 0
    assert _eval(ovo, "--out", str(b), "--json", "--chunk-frames", "2").exit_code == 0
    figures = tmp_path / "figures"
    assert main(["figures", "--eval", str(a), "--eval", str(b), "--out", str(figures), "--format", "png"]) == 2
    assert not figures.exists()  # refused before anything is written
    assert main(["figures", "--eval", str(a), "--eval", str(b), "--out", str(figures), "--format", "png",
                 "--mixed-protocols"]) == 0
    assert any(figures.iterdir())


def test_read_dataset_keeps_count_questions(tmp_path):
    line = {"video": "synthetic:seed=1,frames=8", "questions": [
        question_to_dict(count_question(1.0, "How many shapes appeared?", 2, "forward", "REC"))]}
    (tmp_path / "dataset.jsonl").write_text(json.dumps(line) + "\n")
    (item,) = read_dataset(tmp_path)
    assert item.questions[0].answer_format == "count" and item.questions[0].options == ()
    (tmp_path / "dataset.jsonl").write_text(json.dumps({**line, "questions": [{**line["questions"][0],
                                                                                "answer": "many"}]}) + "\n")
    with pytest.raises(DatasetError, match="question 0: a count question's answer"):
        read_dataset(tmp_path)
