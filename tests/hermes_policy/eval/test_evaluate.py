"""The evaluation harness: question timing, letter scoring, budgets, results and the ``eval`` command."""

from __future__ import annotations

import json
import math
from collections import Counter

import pyarrow.parquet as pq
import pytest
import torch
import typer
from conftest import _tiny
from typer.testing import CliRunner

from hermes_policy.data import DatasetError, Question, VideoItem, load_annotations, synthesize, write_dataset
from hermes_policy.data.dataset import letter_index
from hermes_policy.errors import BudgetError
from hermes_policy.eval import (
    EvalError,
    PolicyRecipe,
    Scored,
    StreamInfo,
    evaluate,
    fit_budget,
    letter_token_ids,
    stream_info,
)
from hermes_policy.eval.cli import register
from hermes_policy.eval.report import format_table
from hermes_policy.policies import make_policy
from hermes_policy.session import StreamingSession
from hermes_policy.video import SyntheticVideo, write_mp4


@pytest.fixture(scope="module")
def items():
    """2 synthetic videos x 12 frames (64x64, 2 fps), 1 question per category each."""
    return synthesize(seed=2, videos=2, frames=12, size=(64, 64), per_category=1)


def _counts(items) -> Counter:
    return Counter(q.category for it in items for q in it.questions)


def test_evaluate_full_and_sink_window(items):
    adapter = _tiny("tiny-embedded")
    recipes = [PolicyRecipe("full"), PolicyRecipe("sink-window", budget_ratio=0.3)]
    result = evaluate(adapter, items, recipes, chunk_frames=4, progress=False)
    n = sum(len(it.questions) for it in items)
    assert result.runs == ["full", "sink-window@0.3"] and len(result.rows) == 2 * n
    assert result.reference == "full" and not any(r.reference for r in result.rows)  # the listed full serves
    cells = {(c["run"], c["category"]): c for c in result.summary()}
    for policy in result.runs:
        for category, count in _counts(items).items():
            cell = cells[(policy, category)]
            assert cell["n"] == count and 0.0 <= cell["accuracy"] <= 1.0
        assert cells[(policy, "overall")]["n"] == n
        assert cells[(policy, "overall")]["ttft_ms_median"] > 0
    info = stream_info(adapter, items[0])
    assert (info.frames, info.video_tokens) == (12, 12 * adapter.tokens_per_frame(64, 64))
    rows = [r for r in result.rows if r.run == "sink-window@0.3"]
    assert {r.budget for r in rows} == {max(info.tokens_per_frame, round(0.3 * info.video_tokens))}
    assert {(r.policy, r.budget_setting) for r in rows} == {("sink-window", 0.3)}
    full = {(r.video_index, r.question_index): r for r in result.rows if r.run == "full"}
    for f in full.values():  # the full cache keeps every video token, and only grows
        assert f.kept_fraction == 1.0 and f.video_tokens_kept == f.video_tokens_seen
        assert f.peak_kv_bytes == f.kv_bytes and (f.agrees_with_full, f.kl_vs_full) == (True, 0.0)
    for r in rows:  # same questions, same moments; the window never holds more than the full cache
        f = full[(r.video_index, r.question_index)]
        assert (r.frames_seen, r.asked_at, r.video_tokens_seen) == (f.frames_seen, f.time, f.video_tokens_seen)
        assert r.kv_bytes <= r.peak_kv_bytes <= f.peak_kv_bytes and len(r.scores) == 4 and r.predicted in "ABCD"
        assert r.video_tokens_kept <= r.budget and r.kept_fraction == r.video_tokens_kept / r.video_tokens_seen
        assert 0.0 <= r.letter_prob <= 1.0 and sum(r.option_probs) == pytest.approx(1.0)
        assert r.full_predicted == f.predicted and r.agrees_with_full == (r.predicted == f.predicted)
        assert r.kl_vs_full >= 0.0
    # the stream outgrows the budget: late questions see a fraction of what streamed
    assert min(r.kept_fraction for r in rows) < 1.0
    doc = result.to_dict()
    assert [d["policy"] for d in doc["results"]] == ["full", "sink-window"]
    assert doc["results"][0]["accuracy"] == result.accuracy("full")
    assert doc["results"][1]["peak_kv_bytes"] == max(r.peak_kv_bytes for r in rows)
    assert doc["results"][1]["fidelity"]["agreement"] == result.agreement("sink-window@0.3")
    assert "full" in format_table(result) and "real-time" in format_table(result)


def _memory_oracle(session: StreamingSession, q: Question) -> Scored:
    """Right iff asked just after its frame streamed, with the stream's first and newest frames still cached.

    (Frame groups, e.g. Qwen-VL's pairs, tag their tokens with one frame of the group: hence the slack.)
    """
    cache, group = session.cache, session.adapter.frames_per_group
    held = True
    for layer in range(cache.num_layers):
        frames = set(cache.meta(layer).frame[cache.meta(layer).is_video].tolist())
        held &= 0 in frames and max(frames) >= q.frame - (group - 1)
    on_time = session.frames_seen == q.frame + 1 and session.pending_frames == 0
    right = letter_index(q.answer, len(q.options))
    scores = torch.zeros(len(q.options))
    scores[right if held and on_time else (right + 1) % len(q.options)] = 1.0
    return Scored(scores, ttft_ms=0.0)


@pytest.mark.parametrize("name", ["tiny-embedded", "tiny-qwen2-vl"])
def test_planted_oracle_separates_full_from_a_one_frame_window(items, name):
    adapter = _tiny(name)
    one_frame = adapter.tokens_per_frame(64, 64)
    recipes = [PolicyRecipe("full"), PolicyRecipe("sink-window", budget=one_frame, label="one-frame")]
    result = evaluate(adapter, items, recipes, chunk_frames=4, progress=False, scorer=_memory_oracle)
    assert result.accuracy("full") == 1.0
    for category in _counts(items):
        assert result.accuracy("full", category) == 1.0
    # every question comes after frame 3, so a one-frame (group) window has always forgotten something
    assert result.accuracy("one-frame") == 0.0
    # ... and so it never answers as the full cache does; the one-hot scores put KL at (e-1)/(e+3) each
    assert result.agreement("full") == 1.0 and result.kl("full") == 0.0
    assert result.agreement("one-frame") == 0.0
    assert result.kl("one-frame") == pytest.approx((math.e - 1) / (math.e + 3))


def test_letter_logits_decide_the_answer(items, monkeypatch):
    """question_logits planted to spike at the correct (or a wrong) letter's token: accuracy 1 (or 0)."""
    adapter = _tiny("tiny-embedded")
    tok = adapter.tokenizer
    unique = [VideoItem(it.video, [Question(q.time, q.frame, f"{q.question} [{v}.{i}]", q.options, q.answer,
                                            q.answer_text, q.category) for i, q in enumerate(it.questions)])
              for v, it in enumerate(items)]
    answers = {q.question: q.answer for it in unique for q in it.questions}
    shift = {"value": 0}

    def planted(self, question, options=None):
        letter = "ABCD"[("ABCD".index(answers[question]) + shift["value"]) % len(options)]
        logits = torch.zeros(adapter.lm_head.out_features)
        logits[tok.convert_tokens_to_ids(letter)] = 10.0
        return logits

    monkeypatch.setattr(StreamingSession, "question_logits", planted)
    recipes = [PolicyRecipe("sink-window", budget=8)]
    assert evaluate(adapter, unique, recipes, progress=False, reference=False).accuracy("sink-window@8") == 1.0
    shift["value"] = 1
    assert evaluate(adapter, unique, recipes, progress=False, reference=False).accuracy("sink-window@8") == 0.0


class _SpaceTokenizer:
    """Characters are tokens (id = code point), except that " A" .. " D" are single tokens 1001..1004."""

    class _Out:
        def __init__(self, ids):
            self.input_ids = ids

    def __call__(self, text, add_special_tokens=False):
        ids, i = [], 0
        while i < len(text):
            if text[i] == " " and i + 1 < len(text) and text[i + 1] in "ABCD":
                ids.append(1001 + "ABCD".index(text[i + 1]))
                i += 2
            else:
                ids.append(ord(text[i]))
                i += 1
        return self._Out(ids)


def test_letter_token_ids_in_context_and_space_variants():
    assert letter_token_ids(_SpaceTokenizer(), "assistant\n", 3) == [[65, 1001], [66, 1002], [67, 1003]]
    # after a trailing space the letter merges with it: the letter's own token is used, the spaced one joins
    assert letter_token_ids(_SpaceTokenizer(), "assistant ", 2) == [[65, 1001], [66, 1002]]
    tok = _tiny("tiny-embedded").tokenizer  # byte tokenizer: no single-token " A"
    assert letter_token_ids(tok, "<|im_start|>assistant\n", 4) == [[65], [66], [67], [68]]


def test_questions_past_the_end_are_asked_at_the_end(items):
    adapter = _tiny("tiny-embedded")
    late = [VideoItem(items[0].video, [Question(100.0, -1, "Q?", ("a", "b"), "A", "a", "real-time")])]
    seen = []

    def scorer(session, q):
        seen.append((session.frames_seen, session.stream_time))
        return Scored(torch.tensor([1.0, 0.0]), 0.0)

    result = evaluate(adapter, late, [PolicyRecipe("full")], progress=False, scorer=scorer)
    assert seen == [(12, 5.5)] and result.rows[0].asked_at == 5.5 and result.accuracy("full") == 1.0


def test_video_files_from_annotations_are_asked_on_time(tmp_path):
    """An OVO-Bench-style file over a real mp4: container timestamps follow the same timing rule."""
    write_mp4(SyntheticVideo(seed=4, frames=8, width=64, height=64), tmp_path / "clip.mp4")  # 2 fps
    (tmp_path / "ovo.json").write_text(json.dumps([
        {"id": i, "video": "clip.mp4", "task": "STU", "realtime": t, "question": f"Q{i}?", "options": ["a", "b"],
         "gt": 0} for i, t in enumerate([1.0, 2.2, 3.5])]))
    items = load_annotations(tmp_path / "ovo.json")
    seen = []

    def scorer(session, q):
        seen.append(session.frames_seen)
        return Scored(torch.tensor([0.0, 1.0]), 0.0)

    adapter = _tiny("tiny-embedded")
    result = evaluate(adapter, items, [PolicyRecipe("window", budget_ratio=0.5)], progress=False, scorer=scorer,
                      reference=False)
    assert seen == [3, 5, 8]  # frames at 0, 0.5, ... s: those at or before each question's time
    assert result.accuracy("window@0.5", "real-time") == 0.0 and {r.task for r in result.rows} == {"STU"}
    assert {r.budget for r in result.rows} == {round(0.5 * 8 * adapter.tokens_per_frame(64, 64))}


def test_budgets_from_ratio_are_fitted_to_what_the_policy_accepts():
    info = StreamInfo("v", frames=10, tokens_per_frame=16, frames_per_group=2, num_layers=4)
    assert info.video_tokens == 80
    assert PolicyRecipe("sink-window", budget_ratio=0.5)(info).budget == 40
    assert PolicyRecipe("sink-window", budget_ratio=0.01)(info).budget == 16  # at least one frame group
    reserve = PolicyRecipe("sink-window", budget_ratio=0.01, params={"sink_tokens": 4})(info)
    assert reserve.budget == 20
    # hermes splits the budget over layers: the fitted budget is the smallest whose every layer holds a frame
    hermes = PolicyRecipe("hermes", budget_ratio=0.01)(info)
    hermes.validate(16, 4)
    smaller = make_policy("hermes", budget=hermes.budget - 1)
    with pytest.raises(BudgetError):
        smaller.validate(16, 4)
    assert fit_budget(lambda b: make_policy("window", budget=b), 3, info).budget == 16
    with pytest.raises(BudgetError, match="cannot hold one frame"):
        PolicyRecipe("sink-window", budget=8)(info)  # an absolute budget is not silently raised
    with pytest.raises(EvalError, match="--budget-ratio"):
        PolicyRecipe("sink-window")(info)
    assert PolicyRecipe("full", budget_ratio=0.5)(info).budget is None


def test_evaluate_rejects_empty_work(items):
    adapter = _tiny("tiny-embedded")
    with pytest.raises(EvalError, match="no questions"):
        evaluate(adapter, [VideoItem(items[0].video, [])], [PolicyRecipe("full")], progress=False)
    with pytest.raises(EvalError, match="twice"):
        evaluate(adapter, items, [PolicyRecipe("full"), PolicyRecipe("full")], progress=False)


# ------------------------------------------------------------------- CLI
def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command keeps its name "eval"
    register(app)
    return app


def test_eval_command_writes_results_config_and_rows(tmp_path, items):
    write_dataset(items, tmp_path)
    out = tmp_path / "runs" / "eval"
    result = CliRunner().invoke(_app(), [
        "eval", "--model", "tiny-embedded", "--data", str(tmp_path), "--policy", "full,sink-window",
        "--budget-ratio", "0.3", "--chunk-frames", "4", "--out", str(out), "--json",
    ])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)  # a sweep of two runs: a list of two objects
    assert [(p["policy"], p["budget"]) for p in printed] == [("full", None), ("sink-window", 0.3)]
    assert "evaluating" not in result.stderr  # no progress bar in --json mode
    n = sum(len(it.questions) for it in items)
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "protocol.json", "results.json", "rows.parquet"]
    saved = json.loads((out / "results.json").read_text())
    assert saved["results"] == printed and saved["runs"] == ["full", "sink-window@0.3"]
    assert {c["category"] for c in saved["summary"]} == {"real-time", "backward", "counting", "overall"}
    config = json.loads((out / "config.json").read_text())
    assert [p["label"] for p in config["policies"]] == ["full", "sink-window@0.3"]
    assert config["policies"][1]["budget_ratio"] == 0.3 and config["model_info"]["layers"] == 4
    assert config["questions"] == n and config["data_format"] == "jsonl" and config["settings"]["data_sha256"]
    rows = pq.read_table(out / "rows.parquet").to_pylist()
    assert len(rows) == 2 * n and {r["run"] for r in rows} == {"full", "sink-window@0.3"}
    for column in ("budget", "peak_kv_bytes", "kept_fraction", "option_probs", "full_predicted",
                   "agrees_with_full", "kl_vs_full"):
        assert all(column in r for r in rows)


def test_eval_command_table_spec_and_limit(tmp_path, items):
    write_dataset(items, tmp_path / "d.jsonl")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"format": "hermes-lab/policy-spec", "version": 1, "policy": "window",
                                "params": {"budget": 999}}))
    result = CliRunner().invoke(_app(), [
        "eval", "--model", "tiny-embedded", "--data", str(tmp_path / "d.jsonl"), "--policy", "full",
        "--spec", str(spec), "--budget", "8", "--limit", "1", "--out", str(tmp_path / "out"),
    ])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert any(line.startswith("│ full ") for line in lines) and any(line.startswith("│ window ") for line in lines)
    for head in ("real-time", "backward", "counting", "overall", "agree", "KL", "TTFT ms", "peak KV MiB", "kept %"):
        assert head in result.stdout
    table = pq.read_table(tmp_path / "out" / "rows.parquet").to_pylist()
    assert {r["run"] for r in table} == {"full", "window@8"}
    assert {r["budget"] for r in table if r["policy"] == "window"} == {8}  # --budget overrides the spec's
    assert len(table) == 2 * len(items[0].questions) and {r["video_index"] for r in table} == {0}


@pytest.mark.parametrize(
    "args,error,message",
    [
        (["--policy", "sink-window"], EvalError, "--budget-ratio"),
        (["--policy", "lru"], Exception, "unknown policy 'lru'"),
        (["--policy", " , "], EvalError, "--policy is empty"),
        (["--budget-ratio", "-1"], BudgetError, "(0, 1]"),
        (["--budget-ratio", "1.5"], BudgetError, "(0, 1]"),
        (["--budget-ratio", "0.3,abc"], EvalError, "every entry must be a float"),
        (["--policy", "full", "--format", "ovobench"], DatasetError, "not valid JSON"),
        (["--policy", "full", "--limit", "0"], DatasetError, "--limit must be >= 1"),
    ],
)
def test_eval_command_errors(tmp_path, items, args, error, message):
    write_dataset(items, tmp_path)
    # a model that does not exist: every argument error must come first, before any model loads
    result = CliRunner().invoke(_app(), ["eval", "--model", "no-such-model", "--data",
                                         str(tmp_path / "dataset.jsonl"), "--out", str(tmp_path / "o"), *args])
    assert isinstance(result.exception, error) and message in str(result.exception), result.output
    assert not (tmp_path / "o").exists()


def test_table_shows_a_spec_variant_label_verbatim(tmp_path, items):
    """``window[spec]`` next to ``window``: rich must not swallow ``[spec]`` as markup."""
    write_dataset(items, tmp_path / "d.jsonl")
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"format": "hermes-lab/policy-spec", "version": 1, "policy": "window",
                                "params": {"budget": 999}}))
    result = CliRunner().invoke(_app(), [
        "eval", "--model", "tiny-embedded", "--data", str(tmp_path / "d.jsonl"), "--policy", "window",
        "--spec", str(spec), "--budget", "8", "--limit", "1", "--out", str(tmp_path / "out"),
    ])
    assert result.exit_code == 0, result.output
    assert any(line.startswith("│ window[spec] ") for line in result.stdout.splitlines()), result.stdout
