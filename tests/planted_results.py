"""Planted evaluation results with known answers, written as an ``eval --out`` folder (no model runs)."""

from __future__ import annotations

import json

import numpy as np

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
    """A finished eval folder: full, sink-window and hermes at 0.1 and 0.3 over 8 videos x 4 questions."""
    rng = np.random.default_rng(seed)
    runs = {"full": (1.0, 0.9), "sink-window@0.1": (0.1, 0.5), "sink-window@0.3": (0.3, 0.6),
            "hermes@0.1": (0.1, 0.8), "hermes@0.3": (0.3, 0.85)}
    rows = [_row(run, v, q, bool(rng.random() < p), ("real-time", "backward")[q % 2], kept)
            for run, (kept, p) in runs.items() for v in range(8) for q in range(4)]
    attach_fidelity(rows, "full")
    configs = {run: {"policy_label": run.split("@")[0],
                     "budget_given": float(run.split("@")[1]) if "@" in run else None}
               for run in runs}
    result = EvalResult(rows, list(runs), configs, reference="full", model=model)
    path.mkdir(parents=True)
    (path / "results.json").write_text(json.dumps(result.to_dict()))
    return path
