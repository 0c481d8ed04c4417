"""Confidence intervals and paired tests for an evaluation's per-question rows.

Questions about one video are not independent: they share the stream, the cache and often the
same scene. Every interval here is therefore a **cluster bootstrap over videos**: a resample draws
videos with replacement and keeps all of their questions, and the statistic is recomputed on it
(percentile interval). A paired comparison of two runs resamples the videos once for both, so the
pairing of each question with itself survives. ``N_RESAMPLES`` resamples from ``SEED``, always, so
that a rerun prints the same interval.

The paired test is McNemar's, exact: of the questions exactly one of the two runs gets right,
how many each run wins is Binomial(n, 1/2) under the null of equal accuracy; the two-sided p-value
is twice the smaller tail, capped at 1 (identical runs: no discordant question, p = 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: resamples per interval, the seed they are drawn from, and the interval's coverage
N_RESAMPLES = 2000
SEED = 0
LEVEL = 0.95
#: what ``results.json`` says about how its intervals were made
BOOTSTRAP = {"method": "percentile bootstrap, clustered by video", "resamples": N_RESAMPLES, "seed": SEED,
             "level": LEVEL}


def cluster_bootstrap_ci(
    values: Sequence[float], clusters: Sequence[int], *, resamples: int = N_RESAMPLES, seed: int = SEED,
    level: float = LEVEL,
) -> list[float] | None:
    """Percentile interval of the mean of ``values`` (one per question) when whole clusters are resampled.

    Args:
        values: (n,) per-question values (1/0 for correct, a KL, ...).
        clusters: (n,) the cluster (video) of each value.

    Returns:
        ``[lo, hi]``, or None when there is nothing to resample (no values).
    """
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return None
    _, cluster = np.unique(np.asarray(clusters), return_inverse=True)
    sums = np.bincount(cluster, weights=x)
    counts = np.bincount(cluster).astype(np.float64)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, sums.size, size=(resamples, sums.size))  # (R, C): each row one resample of videos
    means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return [float(lo), float(hi)]


def mcnemar_exact(run_only: int, reference_only: int) -> float:
    """Two-sided exact McNemar p-value from the two discordant counts."""
    n = run_only + reference_only
    if n == 0:
        return 1.0
    k = min(run_only, reference_only)
    tail = sum(math.comb(n, i) for i in range(k + 1))
    return min(1.0, 2 * tail / 2**n)


@dataclass(frozen=True)
class PairedComparison:
    """One run against the reference run on the questions both answered (one category, or ``overall``)."""

    run: str
    reference: str
    category: str
    n: int
    delta: float
    ci: list[float] | None
    p_value: float
    run_only: int
    reference_only: int

    def to_dict(self) -> dict:
        return {"run": self.run, "reference": self.reference, "category": self.category, "delta": self.delta,
                "ci": self.ci, "p_value": self.p_value, "n": self.n, "run_only": self.run_only,
                "reference_only": self.reference_only}


def paired_comparison(
    run: str, reference: str, category: str, correct: Sequence[bool], reference_correct: Sequence[bool],
    clusters: Sequence[int],
) -> PairedComparison:
    """Accuracy difference (run - reference) with its paired cluster-bootstrap interval and McNemar p-value.

    Args:
        correct, reference_correct: (n,) whether each run got question i right; the same questions, in the
            same order.
        clusters: (n,) the video of question i.
    """
    a = np.asarray(correct, dtype=bool)
    b = np.asarray(reference_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same questions: {a.shape} vs {b.shape}")
    diff = a.astype(np.float64) - b.astype(np.float64)
    run_only, reference_only = int((a & ~b).sum()), int((~a & b).sum())
    return PairedComparison(
        run=run, reference=reference, category=category, n=int(a.size),
        delta=float(diff.mean()) if a.size else float("nan"),
        ci=cluster_bootstrap_ci(diff, clusters),
        p_value=mcnemar_exact(run_only, reference_only),
        run_only=run_only, reference_only=reference_only,
    )


def half_width(ci: Sequence[float] | None) -> float | None:
    """Half the interval's width, for ``acc ± h`` (None without an interval)."""
    return None if ci is None else (ci[1] - ci[0]) / 2


__all__ = [
    "BOOTSTRAP",
    "LEVEL",
    "N_RESAMPLES",
    "SEED",
    "PairedComparison",
    "cluster_bootstrap_ci",
    "half_width",
    "mcnemar_exact",
    "paired_comparison",
]
