"""Evaluation results: per-question :class:`EvalRow` rows, fidelity vs the full cache, :class:`EvalResult`'s
summaries and the files they are written to (``results.json``, ``rows.parquet``).

What the rows measure is described in :mod:`hermes_policy.eval.harness`; the table is
:mod:`hermes_policy.eval.report`'s.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch

from hermes_policy.atomic import atomic_path, atomic_write_text
from hermes_policy.data.questions import CATEGORIES
from hermes_policy.eval.errors import EvalError
from hermes_policy.eval.stats import BOOTSTRAP, cluster_bootstrap_ci, paired_comparison

RESULTS_FORMAT = "hermes-lab/eval-results"
CONFIG_FORMAT = "hermes-lab/eval-config"
VERSION = 1


@dataclass
class EvalRow:
    """One question answered in one run (one row of ``rows.parquet``).

    Attributes:
        run: the run's label, e.g. ``hermes@0.3`` (unique within an evaluation).
        policy: the policy as listed, ``name`` or ``name[variant]``.
        policy_name: the registered policy name.
        budget_setting: the budget as given (a ratio, or absolute tokens), None for ``full``.
        budget: video tokens per layer this video got (None: unlimited).
        reference: the row belongs to a hidden ``full`` run, streamed only as the fidelity reference.
        kv_bytes: key/value bytes the compact cache held when the question arrived.
        peak_kv_bytes: the largest ``kv_bytes`` of this stream so far (sampled after every ingest and at each question).
        video_tokens: video tokens of the whole video.
        video_tokens_seen: video tokens streamed in by the question's time.
        video_tokens_kept: video tokens in the cache then, averaged over layers.
        kept_fraction: ``video_tokens_kept / video_tokens_seen``.
        scores: the scorer's per-option scores; ``option_probs`` is their softmax.
        full_predicted, agrees_with_full, kl_vs_full: fidelity against the full-cache run's answer to the
            same question (``KL(p_full || p_run)`` over the option distributions); None without a reference.
    """

    run: str
    policy: str
    policy_name: str
    budget_setting: float | None
    budget: int | None
    reference: bool
    video_index: int
    video: str
    question_index: int
    qid: str
    task: str
    category: str
    time: float
    asked_at: float
    frames_seen: int
    question: str
    answer: str
    predicted: str
    correct: bool
    ttft_ms: float
    kv_bytes: int
    peak_kv_bytes: int
    video_tokens: int
    video_tokens_seen: int
    video_tokens_kept: float
    kept_fraction: float
    letter_prob: float | None
    top_token: str | None
    scores: list[float]
    option_probs: list[float]
    answer_text: str | None = None
    full_predicted: str | None = None
    agrees_with_full: bool | None = None
    kl_vs_full: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalRow:
        """A row back from ``asdict`` (JSONL or parquet); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        row = cls(**{k: v for k, v in d.items() if k in names})
        row.scores, row.option_probs = list(row.scores), list(row.option_probs)
        return row


def option_probs(scores: Sequence[float] | torch.Tensor) -> list[float]:
    """Softmax of option scores (float64): the answer-option distribution fidelity compares."""
    return torch.softmax(torch.as_tensor(scores, dtype=torch.float64), dim=0).tolist()


def option_kl(reference: Sequence[float] | torch.Tensor, other: Sequence[float] | torch.Tensor) -> float:
    """``KL(p_ref || p_other)`` in nats, where p = softmax over the option scores."""
    log_p = torch.log_softmax(torch.as_tensor(reference, dtype=torch.float64), dim=0)
    log_q = torch.log_softmax(torch.as_tensor(other, dtype=torch.float64), dim=0)
    return float((log_p.exp() * (log_p - log_q)).sum())


def attach_fidelity(rows: Sequence[EvalRow], reference: str) -> None:
    """Fill every row's ``full_predicted``, ``agrees_with_full`` and ``kl_vs_full`` from run ``reference``'s rows."""
    ref = {(r.video_index, r.question_index): r for r in rows if r.run == reference}
    for r in rows:
        f = ref.get((r.video_index, r.question_index))
        if f is None:
            r.full_predicted = r.agrees_with_full = r.kl_vs_full = None
            continue
        r.full_predicted = f.predicted
        r.agrees_with_full = r.predicted == f.predicted
        # a free-form (count) question has no option distribution to compare
        r.kl_vs_full = option_kl(f.scores, r.scores) if len(r.scores) and len(f.scores) == len(r.scores) else None


def _category_order(categories: set[str]) -> list[str]:
    known = [c for c in (*CATEGORIES, "forward") if c in categories]
    return known + sorted(categories - set(known))


def _num(x: float | None) -> float | None:
    """NaN -> None, so the JSON stays strict."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


@dataclass
class EvalResult:
    """Per-question rows plus the summaries computed from them.

    Attributes:
        rows: one per (run, question), in evaluation order; a hidden reference run's rows included.
        runs: the labels of the runs asked for, in order (a hidden reference run is not one of them).
        policy_configs: label -> resolved recipe (``PolicyRecipe.to_dict``) or ``{"label": ...}``.
        reference: the label of the full-cache run fidelity is measured against (None: no fidelity).
        model: the model's name, for the summaries.
        weights: ``random`` for a ``config:`` model (its accuracy is noise; every summary says so).
        compare_to: the run every other run is compared with, question by question (``comparisons``);
            None: the fidelity reference, else ``full`` when it ran, else no comparisons.
    """

    rows: list[EvalRow]
    runs: list[str]
    policy_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: str | None = None
    model: str | None = None
    weights: str = "trained"
    compare_to: str | None = None
    #: ``{"videos", "questions"}`` that ``--skip-missing`` left out (None: none were)
    skipped_missing: dict[str, int] | None = None

    @property
    def policies(self) -> list[str]:
        """Alias of :attr:`runs`."""
        return self.runs

    @property
    def categories(self) -> list[str]:
        return _category_order({r.category for r in self.rows})

    @property
    def category_columns(self) -> list[str]:
        """Every known category, asked or not, then any other the rows have: ``by_category``'s keys, in order."""
        return _category_order(set(CATEGORIES) | set(self.categories))

    def _listed(self, run: str) -> tuple[str, int | float | None]:
        """The run's policy as listed and its budget as given."""
        config = self.policy_configs.get(run, {})
        return config.get("policy_label", run), config.get("budget_given")

    def _select(self, run: str, category: str = "overall") -> list[EvalRow]:
        return [r for r in self.rows if r.run == run and (category == "overall" or r.category == category)]

    def accuracy(self, run: str, category: str = "overall") -> float:
        """Fraction correct (``overall``: over all questions, i.e. micro-averaged); NaN if none."""
        rows = self._select(run, category)
        return sum(r.correct for r in rows) / len(rows) if rows else float("nan")

    def agreement(self, run: str, category: str = "overall") -> float:
        """Fraction of questions answered as the full cache answers them; NaN without a reference."""
        rows = [r for r in self._select(run, category) if r.agrees_with_full is not None]
        return sum(r.agrees_with_full for r in rows) / len(rows) if rows else float("nan")

    def kl(self, run: str, category: str = "overall") -> float:
        """Mean over questions of ``KL(p_full || p_run)`` (nats); NaN without a reference."""
        return _mean([r.kl_vs_full for r in self._select(run, category) if r.kl_vs_full is not None])

    # ---------------------------------------------------------------- statistics
    def accuracy_ci(self, run: str, category: str = "overall") -> list[float] | None:
        """95% interval of :meth:`accuracy`, bootstrapped over videos (:mod:`hermes_policy.eval.stats`)."""
        rows = self._select(run, category)
        return cluster_bootstrap_ci([float(r.correct) for r in rows], [r.video_index for r in rows])

    def agreement_ci(self, run: str, category: str = "overall") -> list[float] | None:
        rows = [r for r in self._select(run, category) if r.agrees_with_full is not None]
        return cluster_bootstrap_ci([float(r.agrees_with_full) for r in rows], [r.video_index for r in rows])

    def kl_ci(self, run: str, category: str = "overall") -> list[float] | None:
        rows = [r for r in self._select(run, category) if r.kl_vs_full is not None]
        return cluster_bootstrap_ci([r.kl_vs_full for r in rows], [r.video_index for r in rows])

    @property
    def comparison_reference(self) -> str | None:
        """The run :meth:`comparisons` compares against (see :attr:`compare_to`)."""
        if self.compare_to is not None:
            return self.compare_to
        if self.reference is not None:
            return self.reference
        return "full" if "full" in self.runs else None

    def comparisons(self) -> list[dict[str, Any]]:
        """Every other run against :attr:`comparison_reference`, overall and per category: the accuracy
        difference, its paired bootstrap interval and the exact McNemar p-value on the discordant questions."""
        reference = self.comparison_reference
        if reference is None:
            return []
        ref = {(r.video_index, r.question_index): r for r in self.rows if r.run == reference}
        if not ref:
            raise EvalError(f"--compare-to {reference!r}: no run of that name in these results "
                            f"(runs: {', '.join(self.runs)})")
        out = []
        for run in self.runs:
            if run == reference:
                continue
            for category in [*self.categories, "overall"]:
                pairs = [(r, ref[r.video_index, r.question_index]) for r in self._select(run, category)
                         if (r.video_index, r.question_index) in ref]
                if not pairs:
                    continue
                out.append(paired_comparison(
                    run, reference, category, [a.correct for a, _ in pairs], [b.correct for _, b in pairs],
                    [a.video_index for a, _ in pairs],
                ).to_dict())
        return out

    def run_summary(self, run: str) -> dict[str, Any]:
        """The ``--json`` object of one run: model, policy, budget (as given), accuracy overall and by category,
        median TTFT, peak KV bytes (max over videos), mean kept fraction and fidelity vs the full cache."""
        rows = self._select(run)
        policy, budget = self._listed(run)
        labelled = {"weights": self.weights} if self.weights != "trained" else {}  # trained: as it always was
        return {
            **labelled,
            "model": self.model,
            "policy": policy,
            "budget": budget,
            "accuracy": _num(self.accuracy(run)),
            "accuracy_ci": self.accuracy_ci(run),
            "by_category": {c: _num(self.accuracy(run, c)) for c in self.category_columns},
            "by_category_ci": {c: self.accuracy_ci(run, c) for c in self.category_columns},
            "ttft_ms_median": statistics.median(r.ttft_ms for r in rows) if rows else None,
            "peak_kv_bytes": max((r.peak_kv_bytes for r in rows), default=None),
            "kept_fraction": _num(_mean([r.kept_fraction for r in rows])),
            "fidelity": {"agreement": _num(self.agreement(run)), "kl": _num(self.kl(run)),
                         "agreement_ci": self.agreement_ci(run), "kl_ci": self.kl_ci(run)},
        }

    def to_json(self) -> dict[str, Any] | list[dict[str, Any]]:
        """What ``eval --json`` prints: one run's :meth:`run_summary`, or a list of them for a sweep."""
        objects = [self.run_summary(run) for run in self.runs]
        return objects[0] if len(objects) == 1 else objects

    def summary(self) -> list[dict[str, Any]]:
        """Per run and category (plus ``overall``): n, accuracy, TTFT, KV bytes, kept fraction, fidelity."""
        cells = []
        for run in self.runs:
            policy, budget = self._listed(run)
            for category in [*self.categories, "overall"]:
                rows = self._select(run, category)
                if not rows:
                    continue
                ttft = [r.ttft_ms for r in rows]
                budgets = [r.budget for r in rows if r.budget is not None]
                cells.append({
                    "run": run,
                    "policy": policy,
                    "budget": budget,
                    "category": category,
                    "n": len(rows),
                    "correct": sum(r.correct for r in rows),
                    "accuracy": sum(r.correct for r in rows) / len(rows),
                    "accuracy_ci": self.accuracy_ci(run, category),
                    "ttft_ms_mean": statistics.fmean(ttft),
                    "ttft_ms_median": statistics.median(ttft),
                    "kv_bytes_mean": statistics.fmean(r.kv_bytes for r in rows),
                    "peak_kv_bytes": max(r.peak_kv_bytes for r in rows),
                    "kept_fraction_mean": _num(_mean([r.kept_fraction for r in rows])),
                    "budget_tokens_mean": statistics.fmean(budgets) if budgets else None,
                    "agreement": _num(self.agreement(run, category)),
                    "kl_mean": _num(self.kl(run, category)),
                })
        return cells

    def to_dict(self) -> dict[str, Any]:
        """The results document, ``results.json`` (no rows: they go to ``rows.parquet``)."""
        return {
            "format": RESULTS_FORMAT,
            "version": VERSION,
            "model": self.model,
            "runs": self.runs,
            "reference": self.reference,
            "categories": self.categories,
            "questions": len({(r.video_index, r.question_index) for r in self.rows}),
            "results": [self.run_summary(run) for run in self.runs],
            "summary": self.summary(),
            "compare_to": self.comparison_reference,
            "comparisons": self.comparisons(),
            "bootstrap": BOOTSTRAP,
            "skipped_missing": self.skipped_missing,
            "policy_configs": self.policy_configs,
        }

    def write_rows(self, path: str | Path) -> Path:
        """Per-question rows as JSONL (``.jsonl``) or parquet (``.parquet``), written atomically."""
        path = Path(path)
        records = [asdict(r) for r in self.rows]
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            with atomic_path(path, EvalError) as tmp:
                pq.write_table(pa.Table.from_pylist(records), tmp)
            return path
        if path.suffix != ".jsonl":
            raise EvalError(f"rows go to a .jsonl or .parquet file, got {path}")
        return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


__all__ = [
    "CONFIG_FORMAT",
    "RESULTS_FORMAT",
    "VERSION",
    "EvalResult",
    "EvalRow",
    "attach_fidelity",
    "option_kl",
    "option_probs",
]
