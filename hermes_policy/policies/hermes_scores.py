"""The pure arithmetic of HERMES's scores, shared by its per-layer and per-head pruning.

Nothing here touches a cache: each function maps tensors to tensors, so the per-layer policy
(:mod:`hermes_policy.policies.hermes`) and the per-KV-head one (:mod:`hermes_policy.policies.hermes_heads`)
score with exactly the same formulas. See :mod:`hermes_policy.policies.hermes` for what they mean.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import torch
import torch.nn.functional as F

from hermes_policy.errors import PolicyError

#: frame value that marks a summary row of a long-term layer (not a frame of the stream)
SUMMARY_FRAME = -2
#: added to the span in :func:`minmax`, as the release does (a constant vector maps to zeros)
MINMAX_EPS = 1e-6

TIER_QUERY = {"working": "mixed", "long-term": "global"}

#: working-band parameters as functions of the relative depth p inside the band
WORKING_PARAMS = {
    "llava-ov": lambda p: (1 - 0.9 * p, 20 - 19.5 * p),
    "qwen2.5-vl": lambda p: (0.75 - 0.6 * p, 20 - 12 * p),
}


def minmax(x: torch.Tensor) -> torch.Tensor:
    """(T,) -> (T,) in [0, 1): ``(x - min) / (max - min + 1e-6)``; a constant vector gives zeros."""
    if x.numel() == 0:
        return x
    low = x.min()
    return (x - low) / (x.max() - low + MINMAX_EPS)


def resample(x: torch.Tensor, n: int) -> torch.Tensor:
    """A (m,) profile linearly resampled onto n points (``align_corners=False``, as the release smooths)."""
    if x.numel() == n:
        return x
    if n == 0 or x.numel() == 0:
        return torch.zeros(n, dtype=x.dtype)
    return F.interpolate(x.view(1, 1, -1), size=n, mode="linear", align_corners=False).view(-1)


def raw_score(attn: torch.Tensor | None, t: int, alpha: float, k: float | None) -> torch.Tensor:
    """(T,) unsmoothed score of a layer's T candidates (oldest first) from their (T,) attention.

    The terms are added in the release's order, so a pure tier (alpha 0 or 1) gives bit-identical scores.
    """
    score = torch.zeros(t)
    if alpha < 1:
        if attn is None:
            raise PolicyError("hermes: a layer that mixes in attention was not given its pseudo-query attention")
        score = minmax(attn.float()) * (1 - alpha)
    if alpha > 0:
        score = score + _recency_term(t, float(k), float(alpha))
    return score


@functools.lru_cache(maxsize=256)
def _recency_term(t: int, k: float, alpha: float) -> torch.Tensor:
    """``minmax(exp(-k d)) * alpha`` over T candidates: the same every prune once the budget is full, so made
    once per (T, k, alpha). Callers add to it and never write into it."""
    d = (t - 1 - torch.arange(t, dtype=torch.float32)) / max(t - 1, 1)
    return minmax(torch.exp(-k * d)) * alpha


def smooth(raw: list[torch.Tensor], tiers: list[str], gamma: Mapping[str, float]) -> list[torch.Tensor]:
    """Cross-layer smoothing from the second-to-last layer down: ``s_l <- (1 - g) s_l + g resample(s_{l+1})``,
    ``g`` the weight of layer l's tier."""
    out = list(raw)
    for layer in range(len(raw) - 2, -1, -1):
        g = float(gamma[tiers[layer]])
        out[layer] = (1 - g) * raw[layer] + g * resample(out[layer + 1], raw[layer].numel())
    return out
