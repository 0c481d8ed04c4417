"""The retrieval mixture of experts: fusing cache scores with an external ranker, and the temporal bias.

MemStream observes that query-frame similarity rises along the stream, so
retrieval by the cache's own scores drifts to late frames. Our fusion rule
(MemStream publishes none), per layer over its offloaded frame blocks:

    s = (1 - beta) * norm(detrend(s_int)) + beta * norm(s_ext)

* ``s_int``: the internal score of each block, ReKV's ``q̄ · k̄_block`` (mean
  question query against the block's mean key, summed over KV heads).
* ``detrend`` (optional): remove the linear trend of ``s_int`` over the
  blocks' frame indices, ``s_int - b·(t - mean t)``; the mean is kept. ``b`` is
  the least-squares slope ``cov(t, s_int) / var(t)`` (``"ls"``, the default) or
  the Theil-Sen slope, the median of pairwise slopes (``"theil-sen"``), which a
  few strongly relevant frames cannot tilt. A relevance signal that is not a
  trend in time survives; a drift toward late frames does not.
* ``s_ext``: the external ranker's score of the block's frame thumbnail.
  Frames it could not score (no thumbnail) get the mean of the normalised
  scores it did give: no opinion.
* ``norm``: ``"zscore"`` ((x - mean) / std) or ``"minmax"``; a constant vector
  becomes zeros. Normalising puts two experts with unrelated scales on one
  scale; z-scores keep an outlier's margin, min-max bounds it.
* Selection: the top-k of ``s``, ties broken by ``s_int`` (so beta = 1 with an
  indifferent ranker still retrieves by the cache). With ``beta = 0`` and no
  detrending the ranking is exactly ReKV's.

:func:`temporal_bias` measures the bias (Spearman rho and least-squares slope of
scores over frame index) so it can be compared before and after fusion.
"""

from __future__ import annotations

import math

import torch

NORMS = ("zscore", "minmax")


def ls_slope(y: torch.Tensor, t: torch.Tensor) -> float:
    """Least-squares slope of ``y`` over ``t`` (NaN when ``t`` is constant or n < 2)."""
    y, t = y.double(), t.double()
    if y.numel() < 2:
        return math.nan
    tc = t - t.mean()
    var = float((tc * tc).sum())
    return float((tc * (y - y.mean())).sum()) / var if var > 0 else math.nan


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """(n,) float64 ranks 1..n, ties sharing their average rank (as Spearman needs)."""
    x = x.double()
    order = torch.argsort(x, stable=True)
    ranks = torch.empty_like(x)
    ranks[order] = torch.arange(1, x.numel() + 1, dtype=torch.float64)
    _, inverse = torch.unique(x, return_inverse=True)
    sums = torch.zeros(int(inverse.max()) + 1 if x.numel() else 0, dtype=torch.float64).index_add_(0, inverse, ranks)
    counts = torch.bincount(inverse).double()
    return (sums / counts)[inverse]


def temporal_bias(scores: torch.Tensor, frame_index: torch.Tensor) -> dict[str, float]:
    """How much ``scores`` (F,) rise with ``frame_index`` (F,).

    Returns:
        ``{"rho": Spearman rank correlation, "slope": least-squares slope per frame}``;
        NaN where undefined (fewer than 2 frames, or constant scores or indices).
    """
    s, t = scores.flatten().double(), frame_index.flatten().double()
    if s.numel() != t.numel():
        raise ValueError(f"scores ({s.numel()}) and frame_index ({t.numel()}) differ in length")
    slope = ls_slope(s, t)
    rho = math.nan
    if s.numel() >= 2:
        rs, rt = average_ranks(s), average_ranks(t)
        rs, rt = rs - rs.mean(), rt - rt.mean()
        den = float(rs.norm() * rt.norm())
        rho = float((rs * rt).sum()) / den if den > 0 else math.nan
    return {"rho": rho, "slope": slope}


def theil_sen_slope(y: torch.Tensor, t: torch.Tensor, max_points: int = 2048) -> float:
    """Median of the pairwise slopes ``(y_j - y_i) / (t_j - t_i)`` (NaN when undefined).

    Robust to outliers: a few very relevant frames do not tilt it, where they
    do tilt a least-squares fit. Above ``max_points`` points, an evenly spaced
    subset of them is used (O(n^2) pairs).
    """
    y, t = y.double().flatten(), t.double().flatten()
    if y.numel() > max_points:
        keep = torch.linspace(0, y.numel() - 1, max_points).round().long()
        y, t = y[keep], t[keep]
    i, j = torch.triu_indices(y.numel(), y.numel(), offset=1)
    dt = t[j] - t[i]
    ok = dt != 0
    if not bool(ok.any()):
        return math.nan
    return float(torch.quantile((y[j] - y[i])[ok] / dt[ok], 0.5))


#: ``detrend`` methods: least squares, or Theil-Sen (robust)
DETRENDS = ("ls", "theil-sen")


def detrend(scores: torch.Tensor, frame_index: torch.Tensor, method: str = "ls") -> torch.Tensor:
    """``scores`` minus their linear trend over ``frame_index`` (mean kept), float32.

    Args:
        method: ``"ls"`` (least squares) or ``"theil-sen"`` (median pairwise slope).
            Least squares removes the linear correlation exactly, but a strongly
            relevant early frame pulls its slope down and leaves a rank trend in
            the residual; Theil-Sen ignores such outliers.
    """
    if method not in DETRENDS:
        raise ValueError(f"detrend method must be one of {DETRENDS}, got {method!r}")
    slope = ls_slope(scores, frame_index) if method == "ls" else theil_sen_slope(scores, frame_index)
    if math.isnan(slope):
        return scores.float().clone()
    t = frame_index.double()
    return (scores.double() - slope * (t - t.mean())).float()


def normalise(x: torch.Tensor, how: str = "zscore") -> torch.Tensor:
    """z-score or min-max of the finite entries; non-finite entries get the mean of the normalised ones."""
    if how not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {how!r}")
    x = x.double()
    ok = torch.isfinite(x)
    out = torch.zeros_like(x)
    if not bool(ok.any()):
        return out.float()
    v = x[ok]
    if how == "zscore":
        std = float(v.std(unbiased=False)) if v.numel() > 1 else 0.0
        out[ok] = (v - v.mean()) / std if std > 0 else torch.zeros_like(v)
    else:
        span = float(v.max() - v.min())
        out[ok] = (v - v.min()) / span if span > 0 else torch.zeros_like(v)
    out[~ok] = out[ok].mean()
    return out.float()


def fuse_scores(
    internal: torch.Tensor,
    external: torch.Tensor | None,
    frame_index: torch.Tensor,
    beta: float,
    detrend_internal: bool | str = True,
    norm: str = "zscore",
) -> torch.Tensor:
    """(F,) fused retrieval scores (see the module docstring); ``external`` may hold NaN (no opinion) or be None.

    ``detrend_internal``: False, True (= ``"ls"``), ``"ls"`` or ``"theil-sen"``.
    """
    if detrend_internal:
        method = "ls" if detrend_internal is True else detrend_internal
        s_int = detrend(internal, frame_index, method)
    else:
        s_int = internal.float()
    fused = (1 - beta) * normalise(s_int, norm)
    if beta and external is not None:
        fused = fused + beta * normalise(external, norm)
    return fused


def select_fused(fused: torch.Tensor, internal: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the top ``k`` by ``fused``, ties broken by ``internal``; ascending (time order)."""
    k = min(k, fused.numel())
    by_internal = torch.argsort(internal.float(), descending=True, stable=True)
    order = by_internal[torch.argsort(fused.float()[by_internal], descending=True, stable=True)]
    return torch.sort(order[:k]).values
