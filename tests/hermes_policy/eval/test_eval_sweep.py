"""Eval sweeps: policy x budget runs, fidelity vs the full cache, the output folder and resuming."""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict

import pyarrow.parquet as pq
import pytest
import torch
import typer
from conftest import _tiny
from typer.testing import CliRunner

from hermes_policy.data import synthesize, write_dataset
from hermes_policy.data.dataset import letter_index
from hermes_policy.errors import BudgetError, PolicyError
from hermes_policy.eval import (
    EvalError,
    EvalRow,
    LetterScorer,
    PolicyRecipe,
    Scored,
    attach_fidelity,
    evaluate,
    option_kl,
    option_probs,
    plan,
)
from hermes_policy.eval.cli import register
from hermes_policy.eval.report import format_table
from hermes_policy.eval.sweep import PARTIAL_FILE, EvalDir, build_recipes, data_fingerprint


@pytest.fixture(scope="module")
def items():
    """3 synthetic videos x 8 frames (64x64, 2 fps), 1 question per category each."""
    return synthesize(seed=5, videos=3, frames=8, size=(64, 64), per_category=1)


def _app() -> typer.Typer:
    app = typer.Typer()
    app.callback()(lambda: None)  # a group, so the command keeps its name "eval"
    register(app)
    return app


# ------------------------------------------------------------ the runs of a sweep
def test_sweep_labels_policy_by_budget_and_full_once():
    recipes = build_recipes("full,sink-window,hermes", budget_ratio="0.15,0.3")
    assert [r.key for r in recipes] == ["full", "sink-window@0.15", "sink-window@0.3", "hermes@0.15", "hermes@0.3"]
    assert [r.budget_given for r in recipes] == [None, 0.15, 0.3, 0.15, 0.3]
    mixed = build_recipes("window", budget="512, 64", budget_ratio="0.5")
    assert [(r.key, r.budget, r.budget_ratio) for r in mixed] == [
        ("window@512", 512, None), ("window@64", 64, None), ("window@0.5", None, 0.5)]
    assert [r.key for r in build_recipes("full")] == ["full"]


def test_sweep_spec_is_its_policy_entry_or_a_second_run(tmp_path):
    spec = tmp_path / "tuned.json"
    spec.write_text(json.dumps({"format": "hermes-lab/policy-spec", "version": 1, "policy": "sink-window",
                                "params": {"budget": 96, "sink_tokens": 4}}))
    both = build_recipes("full,sink-window", budget_ratio="0.3", spec=spec)
    assert [r.key for r in both] == ["full", "sink-window@0.3", "sink-window[tuned]@0.3"]
    assert both[2].params == {"sink_tokens": 4} and both[2].policy_label == "sink-window[tuned]"
    own = build_recipes("full", spec=spec)  # not listed: the spec is the entry, with its own budget
    assert [r.key for r in own] == ["full", "sink-window@96"] and own[1].params["budget"] == 96
    assert [r.key for r in build_recipes("full,sink-window", budget="64", spec=spec)] == [
        "full", "sink-window@64", "sink-window[tuned]@64"]


@pytest.mark.parametrize(
    "kwargs,error,message",
    [
        ({"policy": "full,lru"}, PolicyError, "unknown policy 'lru'"),
        ({"policy": ""}, EvalError, "--policy is empty"),
        ({"policy": "full,,window", "budget": "8"}, EvalError, "empty entry"),
        ({"policy": "window,window", "budget": "8"}, EvalError, "twice"),
        ({"policy": "window", "budget_ratio": "0"}, BudgetError, "(0, 1]"),
        ({"policy": "window", "budget_ratio": "1.01"}, BudgetError, "(0, 1]"),
        ({"policy": "window", "budget_ratio": "nan"}, BudgetError, "(0, 1]"),
        ({"policy": "window", "budget": "0"}, BudgetError, "positive"),
        ({"policy": "window", "budget": "1.5"}, EvalError, "must be a int"),
        ({"policy": "window"}, EvalError, "needs a budget"),
    ],
)
def test_sweep_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build_recipes(**kwargs)


# ------------------------------------------------------------------ fidelity
def test_option_kl_and_probs():
    assert option_probs([0.0, 0.0]) == [0.5, 0.5]
    assert option_kl([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]) == 0.0
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)  # p = (1/2, 1/2), q = (1/4, 3/4)
    assert option_kl([0.0, 0.0], [0.0, math.log(3.0)]) == pytest.approx(expected)
    # shift invariance of softmax; asymmetry of KL
    assert option_kl([5.0, 1.0], [2.0, 0.0]) == pytest.approx(option_kl([4.0, 0.0], [3.0, 1.0]))
    assert option_kl([3.0, 0.0], [0.0, 0.0]) != pytest.approx(option_kl([0.0, 0.0], [3.0, 0.0]))
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        p, q = torch.randn(4, generator=gen) * 3, torch.randn(4, generator=gen) * 3
        assert option_kl(p, q) >= 0.0


def _row(run, q, scores, predicted):
    return EvalRow(run=run, policy=run, policy_name=run, budget_setting=None, budget=None, reference=False,
                   video_index=0, video="v", question_index=q, qid="", task="", category="real-time", time=0.0,
                   asked_at=0.0, frames_seen=1, question="?", answer="A", predicted=predicted,
                   correct=predicted == "A", ttft_ms=1.0, kv_bytes=1, peak_kv_bytes=1, video_tokens=1,
                   video_tokens_seen=1, video_tokens_kept=1.0, kept_fraction=1.0, letter_prob=None,
                   top_token=None, scores=scores, option_probs=option_probs(scores))


def test_attach_fidelity_matches_rows_by_question():
    rows = [_row("full", 0, [2.0, 0.0], "A"), _row("full", 1, [0.0, 2.0], "B"),
            _row("w", 1, [0.0, 1.0], "B"), _row("w", 0, [0.0, 1.0], "B")]
    attach_fidelity(rows, "full")
    assert [(r.full_predicted, r.agrees_with_full) for r in rows] == [("A", True), ("B", True), ("B", True),
                                                                       ("A", False)]
    assert rows[0].kl_vs_full == 0.0 and rows[2].kl_vs_full == pytest.approx(option_kl([0.0, 2.0], [0.0, 1.0]))


def _recency_oracle(session, q) -> Scored:
    """Right iff the stream's first frame and the question's own are still cached in every layer; else a fixed
    wrong letter."""
    cache = session.cache
    held = all({0, q.frame} <= set(cache.meta(layer).frame.tolist()) for layer in range(cache.num_layers))
    right = letter_index(q.answer, len(q.options))
    scores = torch.zeros(len(q.options))
    scores[right if held else (right + 1) % len(q.options)] = 2.0
    return Scored(scores, ttft_ms=0.0)


def test_hidden_full_reference_when_full_is_not_listed(items):
    adapter = _tiny("tiny-embedded")
    tpf = adapter.tokens_per_frame(64, 64)
    # every question comes after frame 3: a one-frame window has dropped frame 0 by then
    recipes = [PolicyRecipe("window", budget=tpf), PolicyRecipe("window", budget=16 * tpf)]
    result = evaluate(adapter, items, recipes, progress=False, scorer=_recency_oracle)
    n = sum(len(it.questions) for it in items)
    assert result.runs == [f"window@{tpf}", f"window@{16 * tpf}"] and result.reference == "full"
    ref = [r for r in result.rows if r.run == "full"]
    assert len(ref) == n and all(r.reference for r in ref) and len(result.rows) == 3 * n
    assert result.accuracy("full") == 1.0 and result.agreement("full") == 1.0 and result.kl("full") == 0.0
    assert result.agreement(f"window@{16 * tpf}") == 1.0  # a window larger than the video is the full cache
    small = result.agreement(f"window@{tpf}")
    assert 0.0 <= small < 1.0 and small == result.accuracy(f"window@{tpf}")
    assert result.kl(f"window@{tpf}") > 0.0
    assert [s["policy"] for s in result.to_json()] == ["window", "window"]  # the reference is not listed
    assert "full" not in {line.split()[1] for line in format_table(result).splitlines()[3:-1] if line.strip()}
    one = evaluate(adapter, items[:1], [PolicyRecipe("full")], progress=False, scorer=_recency_oracle)
    assert isinstance(one.to_json(), dict) and one.reference == "full"  # one run: one object


def test_json_object_shape(items):
    adapter = _tiny("tiny-embedded")
    result = evaluate(adapter, items[:1], [PolicyRecipe("sink-window", budget_ratio=0.5)], progress=False,
                      model="tiny-embedded")
    obj = result.to_json()
    assert list(obj) == ["weights", "model", "policy", "budget", "accuracy", "accuracy_ci", "by_category",
                         "by_category_ci", "ttft_ms_median", "peak_kv_bytes", "kept_fraction", "fidelity"]
    assert list(obj["by_category"]) == list(obj["by_category_ci"]) == ["real-time", "backward", "counting"]
    assert list(obj["fidelity"]) == ["agreement", "kl", "agreement_ci", "kl_ci"]
    lo, hi = obj["accuracy_ci"]
    assert lo <= obj["accuracy"] <= hi
    assert (obj["model"], obj["policy"], obj["budget"]) == ("tiny-embedded", "sink-window", 0.5)
    assert obj["weights"] == "random"  # a tiny model's weights are seeded noise, and it says so
    rows = [r for r in result.rows if r.run == "sink-window@0.5"]
    assert obj["peak_kv_bytes"] == max(r.peak_kv_bytes for r in rows) > 0
    assert obj["kept_fraction"] == pytest.approx(sum(r.kept_fraction for r in rows) / len(rows))
    assert 0.0 < obj["kept_fraction"] < 1.0 and obj["fidelity"]["kl"] >= 0.0
    json.dumps(obj, allow_nan=False)  # strict JSON


# ------------------------------------------------------------------ resuming
class _Counting:
    """A deterministic scorer that counts calls and can fail after ``fail_after`` of them."""

    def __init__(self, fail_after: int | None = None):
        self.calls, self.fail_after = 0, fail_after

    def __call__(self, session, q):
        if self.fail_after is not None and self.calls >= self.fail_after:
            raise RuntimeError("interrupted")
        self.calls += 1
        return _recency_oracle(session, q)


def _comparable(rows):
    return [asdict(r) for r in rows]


def test_resume_runs_only_the_missing_units(tmp_path, items):
    adapter = _tiny("tiny-embedded")
    recipes = build_recipes("window,sink-window", budget_ratio="0.3,0.6")
    settings = {"model": "tiny-embedded", "data_sha256": data_fingerprint(items)}
    units = plan(items, recipes).units
    per_video = [len(it.questions) for it in items]
    assert len(units) == 3 * 5  # 4 listed runs + the hidden full reference, per video

    clean = evaluate(adapter, items, recipes, progress=False, scorer=_Counting())

    out = EvalDir(tmp_path / "run")
    assert out.resume(settings, units) == {}
    out.start({"settings": settings})
    first = _Counting(fail_after=7 * per_video[0] + 1)  # dies inside the 8th unit
    with pytest.raises(RuntimeError, match="interrupted"):
        evaluate(adapter, items, recipes, progress=False, scorer=first, on_unit=out.append)
    lines = (tmp_path / "run" / PARTIAL_FILE).read_text().splitlines()
    assert len(lines) == 7  # every finished unit is on disk, the broken one is not

    done = out.resume(settings, units)
    assert sorted(done) == sorted(units[:7])
    second = _Counting()
    resumed = evaluate(adapter, items, recipes, progress=False, scorer=second, done=done, on_unit=out.append)
    missing = units[7:]
    assert second.calls == sum(per_video[v] for _, v in missing)  # only the missing units were streamed
    assert _comparable(resumed.rows) == _comparable(clean.rows)
    out.finish(resumed)
    assert not (tmp_path / "run" / PARTIAL_FILE).exists()
    back = pq.read_table(tmp_path / "run" / "rows.parquet").to_pylist()
    assert [EvalRow.from_dict(r) for r in back] == resumed.rows
    assert json.loads((tmp_path / "run" / "results.json").read_text())["results"] == resumed.to_json()

    # a finished folder resumes as done: nothing is streamed again
    assert sorted(out.resume(settings, units)) == sorted(units)


def test_resume_refuses_other_settings_and_dropped_videos(tmp_path, items):
    units = plan(items, [PolicyRecipe("full")]).units
    out = EvalDir(tmp_path / "run")
    out.start({"settings": {"model": "a", "chunk_frames": 4}})
    out.append("full", 2, [])
    with pytest.raises(EvalError, match=r"other settings \(chunk_frames differ\).*pick another --out or delete"):
        out.resume({"model": "a", "chunk_frames": 8}, units)
    with pytest.raises(EvalError, match=r"video\(s\) \[2\].*would drop"):
        out.resume({"model": "a", "chunk_frames": 4}, units[:2])
    assert sorted(out.resume({"model": "a", "chunk_frames": 4}, units)) == [("full", 2)]
    # a unit cut off mid-line is dropped (and streamed again); later appends start on a fresh line
    with open(tmp_path / "run" / PARTIAL_FILE, "a") as f:
        f.write('{"run": "full", "video_index": 0, "rows": [')
    assert sorted(out.resume({"model": "a", "chunk_frames": 4}, units)) == [("full", 2)]
    out.append("full", 1, [])
    assert sorted(out.resume({"model": "a", "chunk_frames": 4}, units)) == [("full", 1), ("full", 2)]
    # outputs without a config are not ours to overwrite; --out must be a folder
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "results.json").write_text("{}")
    with pytest.raises(EvalError, match="no config.json"):
        EvalDir(stray).resume({}, units)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EvalError, match="is a file"):
        EvalDir(tmp_path / "file")


def test_eval_command_resumes_an_interrupted_sweep(tmp_path, items, monkeypatch):
    (tmp_path / "data").mkdir()
    write_dataset(items, tmp_path / "data")
    args = ["eval", "--model", "tiny-embedded", "--data", str(tmp_path / "data"), "--policy", "full,window",
            "--budget-ratio", "0.3,0.6"]
    clean = CliRunner().invoke(_app(), [*args, "--out", str(tmp_path / "clean"), "--json"])
    assert clean.exit_code == 0, clean.output

    calls = {"n": 0, "fail_after": None}
    real = LetterScorer.__call__

    def flaky(self, session, q):
        if calls["fail_after"] is not None and calls["n"] >= calls["fail_after"]:
            raise KeyboardInterrupt  # as a user's Ctrl-C would
        calls["n"] += 1
        return real(self, session, q)

    monkeypatch.setattr(LetterScorer, "__call__", flaky)
    calls["fail_after"] = 4 * len(items[0].questions)  # 3 units of video 0, then one more
    out = tmp_path / "out"
    first = CliRunner().invoke(_app(), [*args, "--out", str(out)])
    assert first.exit_code == 130  # click turns Ctrl-C into Abort
    assert len((out / PARTIAL_FILE).read_text().splitlines()) == 4 and not (out / "rows.parquet").exists()

    calls.update(n=0, fail_after=None)
    second = CliRunner().invoke(_app(), [*args, "--out", str(out)])
    assert second.exit_code == 0, second.output
    assert "resuming: 4 of 9 streams already done" in second.stderr
    assert calls["n"] == sum(len(it.questions) for it in items) * 3 - 4 * len(items[0].questions)
    assert "│ window " in second.stdout and not (out / PARTIAL_FILE).exists()

    def stable(path):  # timings differ between runs; everything else must not
        return [{k: v for k, v in r.items() if k != "ttft_ms"} for r in pq.read_table(path).to_pylist()]

    assert stable(out / "rows.parquet") == stable(tmp_path / "clean" / "rows.parquet")

    other = CliRunner().invoke(_app(), [*args[:-1], "0.5", "--out", str(out)])
    assert isinstance(other.exception, EvalError) and "pick another --out" in str(other.exception)
