"""The lmms-eval plugin's streaming core (hermes_policy.lmms.streams), without lmms-eval: it runs in the default
suite."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hermes_policy.errors import BudgetError, ModelError, PolicyError, SessionError, VideoError
from hermes_policy.lmms import MODEL_CLASS, MODEL_ID, tasks_path
from hermes_policy.lmms.streams import (
    PluginConfig,
    PluginError,
    StreamRunner,
    continuation_logprob,
    open_visuals,
    truncate_at_stops,
)
from hermes_policy.lmms.tasks.hermes_tiny import utils as tiny_task
from hermes_policy.video import SyntheticVideo, write_mp4

ROOT = Path(__file__).resolve().parents[3]
SPEC = "synthetic:seed=560531041,frames={n},fps=2,size=64x64"
QUESTION = "What shape appeared first? Answer with one word."


@pytest.fixture(scope="module")
def full_runner():
    return StreamRunner(PluginConfig(model="tiny-qwen2-vl", policy="full"))


def test_entry_point_names_the_manifest():
    # read as text: tomllib is not in Python 3.10, which the project supports
    text = (ROOT / "pyproject.toml").read_text()
    assert '[project.entry-points."lmms_eval.models"]\nhermes_lab = "hermes_policy.lmms:manifest"\n' in text
    extra = next(line for line in text.splitlines() if line.startswith("lmms = ["))
    assert '"lmms-eval==0.7.3"' in extra and '"av>=12,<16"' in extra
    module, _, name = MODEL_CLASS.rpartition(".")
    assert (module, name, MODEL_ID) == ("hermes_policy.lmms.model", "HermesLab", "hermes_lab")
    # the plugin's own modules never load lmms-eval into the main install
    import sys

    assert "lmms_eval" not in sys.modules


def test_bundled_task_files_are_current():
    questions, rounds = tiny_task.make_docs()
    folder = tasks_path() / "hermes_tiny"
    on_disk = [json.loads(line) for line in (folder / "hermes_tiny.jsonl").read_text().splitlines()]
    assert on_disk == questions
    assert [json.loads(line) for line in (folder / "hermes_tiny_rounds.jsonl").read_text().splitlines()] == rounds
    assert {p.name for p in folder.glob("*.yaml")} == {"hermes_tiny.yaml", "hermes_tiny_mc.yaml",
                                                       "hermes_tiny_rounds.yaml"}
    # each round's video is a longer prefix of the same stream, cut at its probe's frame
    for doc in rounds:
        counts = [int(p["video"].split("frames=")[1].split(",")[0]) for p in doc["probes"]]
        assert counts == sorted(counts) and counts[-1] <= tiny_task.FRAMES
    assert tiny_task.process_results(questions[0], [" 2, maybe"]) == {"word_accuracy": 1.0}
    assert tiny_task.process_results(questions[0], ["two"]) == {"word_accuracy": 0.0}
    assert tiny_task.rounds_process_results(rounds[0], [["2", "x"]])["round_accuracy"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("args, error, words", [
    ({"modle": "embedded"}, PluginError, "unknown model_args ['modle']"),
    ({"budget": 0}, BudgetError, "positive integer"),
    ({"budget": "many"}, BudgetError, "positive integer"),
    ({"budget_ratio": 1.5}, BudgetError, "(0, 1]"),
    ({"budget": 10, "budget_ratio": 0.5}, BudgetError, "not both"),
    ({"rounds": "sometimes"}, PluginError, "stream or restart"),
    ({"fps": -1}, Exception, "fps"),
    ({"chunk_frames": 0}, PluginError, "chunk_frames"),
    ({"model": ""}, PluginError, "must name a model"),
])
def test_bad_model_args_are_one_clear_error(args, error, words):
    with pytest.raises(error) as info:
        PluginConfig.from_args(args)
    assert words in str(info.value) and "\n" not in str(info.value)


def test_none_strings_mean_unset():
    config = PluginConfig.from_args({"fps": "none", "budget": 16, "policy": "sink-window"})
    assert config.fps is None and config.budget == 16


def test_unknown_model_and_policy_fail_before_any_request():
    with pytest.raises(ModelError):
        StreamRunner(PluginConfig(model="no-such-model", policy="full"))
    with pytest.raises(PolicyError, match="unknown policy 'nope'"):
        StreamRunner(PluginConfig(model="tiny-qwen2-vl", policy="nope"))


def test_bad_visuals(tmp_path):
    with pytest.raises(VideoError, match="does not exist"):
        open_visuals([str(tmp_path / "missing.mp4")], "t/test/0")
    with pytest.raises(PluginError, match="no visual"):
        open_visuals([], "t/test/0")
    with pytest.raises(PluginError, match="one video per request"):
        open_visuals([SPEC.format(n=2), SPEC.format(n=3)], "t/test/0")
    with pytest.raises(PluginError, match="visual 0 is a dict"):
        open_visuals([{"array": [0.0]}], "t/test/0")


def test_impossible_budget_is_refused_before_streaming():
    runner = StreamRunner(PluginConfig(model="tiny-qwen2-vl", policy="sink-window", budget=1))
    with pytest.raises(BudgetError):
        runner.stream(open_visuals([SPEC.format(n=4)], "k"))
    assert runner.records == []


def test_images_stream_as_frames(full_runner):
    images = [np.full((64, 64, 3), 40 * i, dtype=np.uint8) for i in range(4)]
    images[2] = np.zeros((32, 48, 3), dtype=np.uint8)  # another size: resized to the first image's
    visuals = open_visuals(images, "images/test/0")
    assert visuals.key == "images/test/0"
    session = full_runner.stream(visuals)
    assert session.frames_seen == 4 and session.stream_time == pytest.approx(3.0)  # 1 fps spacing


def test_generate_records_the_cache_and_reuses_the_stream(full_runner):
    visuals = open_visuals(SPEC.format(n=6), "k")
    session = full_runner.stream(visuals)
    before = len(full_runner.records)
    full_runner.generate(session, QUESTION, 3)
    assert full_runner.stream(open_visuals([SPEC.format(n=6)], "k2")) is session  # same video: same cache
    full_runner.generate(session, QUESTION, 3)
    records = full_runner.records[before:]
    assert [r.frames for r in records] == [6, 6] and records[0].kv_bytes == records[1].kv_bytes > 0
    assert records[0].budget is None and records[0].kept_fraction == pytest.approx(1.0)
    summary = full_runner.summary(records)
    assert summary["hermes_questions"] == 2 and summary["hermes_policy"] == "full"


def test_loglikelihood_is_a_loss_and_greedy_matches_generation():
    # the trained embedded model answers in words its tokenizer re-encodes exactly, so its greedy answer
    # can be scored back; the random tiny models' answers need not round-trip
    runner = StreamRunner(PluginConfig(model="embedded", policy="full"))
    session = runner.stream(open_visuals([SPEC.format(n=5)], "k"))
    question = "What colour is the circle now?"
    greedy = session.ask(question, max_new_tokens=3)
    ids = runner.adapter.tokenizer(greedy.answer, add_special_tokens=False).input_ids
    assert greedy.answer and ids
    loss, is_greedy = runner.loglikelihood(session, question, " " + greedy.answer)  # lmms-eval's delimiter
    assert loss > 0 and is_greedy
    logprob, _ = continuation_logprob(session, question, greedy.answer)
    assert loss == pytest.approx(-logprob / len(ids))
    other = next(w for w in ("zebra", "purple") if w != greedy.answer)
    other_loss, other_greedy = runner.loglikelihood(session, question, " " + other)
    assert not other_greedy and other_loss > loss
    assert continuation_logprob(session, question, "") == (0.0, True)
    with pytest.raises(SessionError):
        continuation_logprob(session, "  ", "x")


def test_continued_stream_equals_the_longer_video_streamed_at_once(full_runner):
    full_runner.close()
    session = full_runner.stream(open_visuals([SPEC.format(n=4)], "k"))
    first = session.question_logits(QUESTION)
    continued = full_runner.continue_stream(open_visuals([SPEC.format(n=9)], "k"))
    assert continued is session and session.frames_seen == 9 and session.stream_time == pytest.approx(4.0)
    logits = session.question_logits(QUESTION)
    full_runner.close()
    fresh = full_runner.stream(open_visuals([SPEC.format(n=9)], "k"))
    assert fresh is not session and fresh.frames_seen == 9
    assert torch.allclose(logits, fresh.question_logits(QUESTION), atol=1e-4)
    assert not torch.allclose(first, logits, atol=1e-4)  # the later frames changed what it sees


def test_a_round_video_that_does_not_extend_the_stream_restarts_it(full_runner):
    full_runner.close()
    session = full_runner.stream(open_visuals([SPEC.format(n=8)], "k"))
    shorter = full_runner.continue_stream(open_visuals([SPEC.format(n=3)], "k"))
    assert shorter is not session and shorter.frames_seen == 3


def test_restart_mode_streams_each_round_afresh():
    runner = StreamRunner(PluginConfig(model="tiny-qwen2-vl", policy="full", rounds="restart"))
    session = runner.stream(open_visuals([SPEC.format(n=4)], "k"))
    again = runner.continue_stream(open_visuals([SPEC.format(n=6)], "k"))
    assert again is not session and again.frames_seen == 6


def test_budgeted_stream_from_a_file_keeps_its_budget(tmp_path):
    path = write_mp4(SyntheticVideo(seed=3, frames=8, width=64, height=64, fps=2), tmp_path / "clip.mp4")
    log = tmp_path / "log" / "streams.jsonl"
    runner = StreamRunner(PluginConfig(model="tiny-qwen2-vl", policy="sink-window", budget=8, fps=2,
                                       stream_log=str(log)))
    session = runner.stream(open_visuals([str(path)], "k"))
    assert session.frames_seen == 8
    text = runner.generate(session, QUESTION, 2, until=["\n"])
    assert isinstance(text, str)
    record = runner.records[-1]
    assert record.budget == 8 and record.video_tokens_kept <= 8 < record.video_tokens_seen
    logged = json.loads(log.read_text().splitlines()[-1])
    assert logged["budget"] == 8 and logged["policy"] == "sink-window@8"


def test_budget_ratio_sizes_per_stream():
    runner = StreamRunner(PluginConfig(model="tiny-qwen2-vl", policy="sink-window", budget_ratio=0.5))
    runner.stream(open_visuals([SPEC.format(n=8)], "k"))
    small = runner._budget
    runner.stream(open_visuals([SPEC.format(n=16)], "k"))
    assert runner._budget > small


def test_truncate_at_stops():
    assert truncate_at_stops("red\nblue", ["\n"]) == "red"
    assert truncate_at_stops("red. blue", [".", " "]) == "red"
    assert truncate_at_stops("red", None) == "red"
    assert truncate_at_stops("red", "") == "red"
