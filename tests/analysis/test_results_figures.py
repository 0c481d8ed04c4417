"""hermes-lab figures --eval / --bench: every figure in every format, from planted results."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.errors import StudyError
from analysis.results_figures import BENCH_FIGURES, EVAL_FIGURES, eval_tables, read_eval, write_result_figures
from hermes_lab.cli import main
from hermes_policy.eval.results import EvalResult, EvalRow, attach_fidelity


def _row(run: str, video: int, question: int, correct: bool, category: str, kept: float) -> EvalRow:
    policy = run.split("@")[0]
    return EvalRow(
        run=run, policy=policy, policy_name=policy, budget_setting=None, budget=None, reference=False,
        video_index=video, video=f"v{video}", question_index=question, qid="", task="t", category=category,
        time=1.0, asked_at=1.0, frames_seen=2, question="q?", answer="A", predicted="A" if correct else "B",
        correct=correct, ttft_ms=1.0, kv_bytes=int(kept * 2**20), peak_kv_bytes=int(kept * 2**21),
        video_tokens=10, video_tokens_seen=10, video_tokens_kept=10 * kept, kept_fraction=kept, letter_prob=None,
        top_token=None, scores=[1.0, 0.0] if correct else [0.0, 1.0], option_probs=[0.5, 0.5],
    )


def eval_dir(path, model: str, seed: int):
    rng = np.random.default_rng(seed)
    runs = {"full": (1.0, 0.9), "sink-window@0.1": (0.1, 0.5), "sink-window@0.3": (0.3, 0.6),
            "hermes@0.1": (0.1, 0.8), "hermes@0.3": (0.3, 0.85)}
    rows = [_row(run, v, q, bool(rng.random() < p), ("real-time", "backward")[q % 2], kept)
            for run, (kept, p) in runs.items() for v in range(8) for q in range(4)]
    attach_fidelity(rows, "full")
    configs = {run: {"policy_label": run.split("@")[0], "budget_given": float(run.split("@")[1]) if "@" in run else None}
               for run in runs}
    result = EvalResult(rows, list(runs), configs, reference="full", model=model)
    path.mkdir()
    (path / "results.json").write_text(json.dumps(result.to_dict()))
    return path


def test_eval_figures_in_every_format_with_their_tables(tmp_path):
    a, b = eval_dir(tmp_path / "a", "model-a", 1), eval_dir(tmp_path / "b", "model-b", 2)
    paths = write_result_figures(tmp_path / "out", [a, b], [], "pdf,png,svg,html")
    names = {p.name for p in paths}
    for fig in EVAL_FIGURES:
        assert {f"{fig}.{ext}" for ext in ("pdf", "png", "svg", "html", "parquet", "csv")} <= names
    acc = pd.read_parquet(tmp_path / "out" / "accuracy_budget.parquet")
    # two models: lines are labelled by model, the full cache is the reference, every point has its interval
    assert set(acc["line"]) >= {"model-a · hermes", "model-b · sink-window"}
    assert acc[acc["full"]]["kept_fraction"].eq(1.0).all()
    assert ((acc["lo"] <= acc["accuracy"]) & (acc["accuracy"] <= acc["hi"])).all()
    assert set(acc["category"]) == {"overall", "real-time", "backward"}
    pareto = pd.read_parquet(tmp_path / "out" / "pareto.parquet")
    assert len(pareto) == 10 and pareto["label"].str.startswith("model-").all()


def test_tables_follow_the_results_exactly(tmp_path):
    folder = read_eval(eval_dir(tmp_path / "a", "m", 3))
    acc = eval_tables([folder])["accuracy_budget"]
    hermes = next(r for r in folder.results["results"] if r["policy"] == "hermes" and r["budget"] == 0.3)
    got = acc[(acc["run"] == "hermes@0.3") & (acc["category"] == "overall")].iloc[0]
    assert got["accuracy"] == hermes["accuracy"] and [got["lo"], got["hi"]] == hermes["accuracy_ci"]
    assert got["line"] == "hermes", "one model: lines are the policies"


def test_bench_out_and_its_figures(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--model", "tiny-embedded", "--video", "synthetic:seed=1,frames=4", "--frames", "4,8",
                 "--policies", "full,sink-window", "--budget", "8", "--ttft-repeats", "1", "--out", str(out)])
    assert code == 0
    rows = pd.read_parquet(out / "rows.parquet")
    assert list(rows["model"].unique()) == ["tiny-embedded"] and len(rows) == 4
    assert json.loads((out / "rows.json").read_text())[0]["policy"] == "full"
    paths = write_result_figures(tmp_path / "figs", [], [out], "png,html")
    assert {f"{fig}.png" for fig in BENCH_FIGURES} <= {p.name for p in paths}
    capsys.readouterr()
    code = main(["bench", "--model", "tiny-embedded", "--frames", "4", "--out", str(out)])
    assert code == 2 and "not an empty folder" in capsys.readouterr().err


def test_bad_folders_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match="no finished evaluation"):
        write_result_figures(tmp_path / "o", [tmp_path / "empty"], [])
    with pytest.raises(StudyError, match="nothing to draw"):
        write_result_figures(tmp_path / "o", [], [])
    code = main(["figures", "--bench", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no bench rows" in err
    assert not (tmp_path / "o").exists(), "nothing is written when an input is bad"
