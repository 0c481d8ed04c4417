"""Intervals and paired tests on planted rows with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import binomtest

from hermes_policy.eval.report import format_table
from hermes_policy.eval.results import EvalResult, EvalRow, attach_fidelity
from hermes_policy.eval.stats import N_RESAMPLES, cluster_bootstrap_ci, mcnemar_exact, paired_comparison


def row(run: str, video: int, question: int, correct: bool, category: str = "real-time") -> EvalRow:
    return EvalRow(
        run=run, policy=run.split("@")[0], policy_name=run.split("@")[0], budget_setting=None, budget=None,
        reference=False, video_index=video, video=f"v{video}", question_index=question, qid=f"{video}-{question}",
        task="t", category=category, time=1.0, asked_at=1.0, frames_seen=2, question="q?", answer="A",
        predicted="A" if correct else "B", correct=correct, ttft_ms=1.0, kv_bytes=1, peak_kv_bytes=1,
        video_tokens=10, video_tokens_seen=10, video_tokens_kept=5.0, kept_fraction=0.5, letter_prob=None,
        top_token=None, scores=[1.0, 0.0] if correct else [0.0, 1.0], option_probs=[0.5, 0.5],
    )


def planted(run_correct: list[bool], ref_correct: list[bool], per_video: int = 4) -> EvalResult:
    rows = []
    for i, (a, b) in enumerate(zip(run_correct, ref_correct)):
        video, question = divmod(i, per_video)
        category = "backward" if question % 2 else "real-time"
        rows.append(row("full", video, question, b, category))
        rows.append(row("hermes@0.3", video, question, a, category))
    attach_fidelity(rows, "full")
    return EvalResult(rows, ["full", "hermes@0.3"], reference="full", model="planted")


def test_identical_runs_differ_by_nothing():
    correct = [bool(x) for x in np.random.default_rng(1).integers(0, 2, 40)]
    result = planted(correct, correct)
    overall = [c for c in result.comparisons() if c["category"] == "overall"]
    assert len(overall) == 1
    c = overall[0]
    assert (c["run"], c["reference"], c["n"]) == ("hermes@0.3", "full", 40)
    assert c["delta"] == 0 and c["ci"] == [0.0, 0.0] and c["p_value"] == 1.0


def test_thirty_more_of_forty_discordant_matches_the_binomial_test():
    # 35 questions only the run gets right, 5 only the reference does, 20 both get right
    run = [True] * 35 + [False] * 5 + [True] * 20
    ref = [False] * 35 + [True] * 5 + [True] * 20
    c = paired_comparison("a", "b", "overall", run, ref, [i // 4 for i in range(60)])
    assert (c.run_only, c.reference_only) == (35, 5)
    assert c.delta == pytest.approx(30 / 60)
    assert c.p_value == pytest.approx(binomtest(5, 40, 0.5).pvalue, rel=1e-12)
    assert c.ci[0] > 0, "thirty more right answers in sixty is not noise"
    for k, n in [(0, 1), (3, 10), (7, 14), (12, 31)]:
        assert mcnemar_exact(k, n - k) == pytest.approx(binomtest(k, n, 0.5).pvalue, rel=1e-12)


def test_the_bootstrap_resamples_videos_not_questions():
    # each video's questions are all right or all wrong: 20 independent draws, not 200
    per_video = np.repeat(np.random.default_rng(2).integers(0, 2, 20), 10).astype(float)
    clusters = np.repeat(np.arange(20), 10)
    clustered = cluster_bootstrap_ci(per_video, clusters)
    iid = cluster_bootstrap_ci(per_video, np.arange(200))
    assert clustered[1] - clustered[0] > 2 * (iid[1] - iid[0])
    assert clustered[0] <= per_video.mean() <= clustered[1]
    assert cluster_bootstrap_ci(per_video, clusters) == clustered, "a fixed seed: the same interval every time"
    assert cluster_bootstrap_ci([], []) is None
    assert N_RESAMPLES >= 1000


def test_results_json_and_table_carry_the_intervals(tmp_path):
    rng = np.random.default_rng(3)
    result = planted([bool(x) for x in rng.integers(0, 2, 48)], [bool(x) for x in rng.integers(0, 2, 48)])
    doc = json.loads(json.dumps(result.to_dict()))  # strict JSON
    hermes = doc["results"][1]
    lo, hi = hermes["accuracy_ci"]
    assert lo <= hermes["accuracy"] <= hi
    assert set(hermes["by_category_ci"]) == set(hermes["by_category"])
    assert hermes["by_category_ci"]["counting"] is None, "a category with no question has no interval"
    assert hermes["fidelity"]["agreement_ci"][0] <= hermes["fidelity"]["agreement"]
    assert doc["compare_to"] == "full" and doc["bootstrap"]["resamples"] == N_RESAMPLES
    cats = {c["category"] for c in doc["comparisons"]}
    assert cats == {"real-time", "backward", "overall"}
    assert all(set(c) >= {"run", "reference", "category", "delta", "ci", "p_value", "n"} for c in doc["comparisons"])
    text = format_table(result)
    assert f"{hermes['accuracy']:.3f} ± {(hi - lo) / 2:.3f}" in text


def test_compare_to_another_run_and_to_a_missing_one():
    result = planted([True, False] * 8, [True] * 16)
    result.compare_to = "hermes@0.3"
    assert {c["run"] for c in result.comparisons()} == {"full"}
    result.compare_to = "nope"
    with pytest.raises(Exception, match="no run of that name"):
        result.comparisons()


def test_the_paired_table_names_a_spec_reference_verbatim():
    """``hermes[attn]@0.1`` is a run name, not rich markup: the title must print its brackets."""
    import io

    from rich.console import Console

    from hermes_policy.eval.report import comparison_table

    console = Console(file=io.StringIO(), width=200)
    console.print(comparison_table([{"run": "hermes[causal]@0.1", "reference": "hermes[attn]@0.1",
                                     "category": "overall", "n": 4, "delta": 0.1, "ci": [0.0, 0.2],
                                     "p_value": 0.5, "run_only": 1, "reference_only": 0}]))
    text = console.file.getvalue()
    assert "paired with hermes[attn]@0.1" in text and "hermes[causal]@0.1" in text
