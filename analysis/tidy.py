"""Tidy (long-format) tables behind every figure.

Each figure is drawn *from* its table, and the table is written beside the
figure (parquet and csv), so a reader can re-plot or check any number in a
paper figure. One row per observation; columns are plain ints, floats and
strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
import torch

from analysis.derive import TIERS, TierAssignment
from analysis.metrics import QuerySelector, age_profile, per_layer, recency_index

AGE_COLUMNS = ["layer", "age", "mass"]
RECENCY_COLUMNS = ["layer", "tier", "metric", "mean", "head_min", "head_max"]
ANCHOR_COLUMNS = ["layer", "tier", "position", "mass"]
HEAD_TIER_COLUMNS = ["layer", "head", "tier", "tier_index"]


def age_heatmap_data(rec, query: QuerySelector = None, max_age: int | None = None) -> pd.DataFrame:
    """Layer × frame-age mass (mean over heads, steps, query kinds): L·A rows of ``layer, age, mass``."""
    prof = age_profile(rec, query, max_age).nanmean(dim=1)  # (L, A)
    L, A = prof.shape
    layer, age = torch.meshgrid(torch.arange(L), torch.arange(A), indexing="ij")
    return pd.DataFrame({"layer": layer.flatten().numpy().astype("int64"),
                         "age": age.flatten().numpy().astype("int64"),
                         "mass": prof.flatten().numpy().astype("float64")})


def recency_depth_data(rec, tiers: TierAssignment, query: QuerySelector = None) -> pd.DataFrame:
    """Recency vs depth: for each layer and metric (``newest10``, ``decay``) the head mean and range (2·L rows)."""
    rows = []
    for metric, x in recency_index(rec, query).items():
        for layer in range(rec.num_layers):
            v = x[layer]
            rows.append({"layer": layer, "tier": tiers.layers[layer], "metric": metric,
                         "mean": float(v.nanmean()), "head_min": float(v.nan_to_num(float("inf")).min()),
                         "head_max": float(v.nan_to_num(float("-inf")).max())})
    return pd.DataFrame(rows, columns=RECENCY_COLUMNS)


def default_anchor_layers(tiers: TierAssignment) -> list[int]:
    """The middle layer of each non-empty tier, shallow to deep."""
    out = []
    for tier in TIERS:
        idx = tiers.layers_in(tier)
        if idx:
            out.append(idx[len(idx) // 2])
    return out


def anchor_profile_data(rec, tiers: TierAssignment, layers: Sequence[int] | None = None,
                        query: QuerySelector = None) -> pd.DataFrame:
    """Within-frame position mass for chosen layers: ``layer, tier, position, mass`` (len(layers)·P rows).

    Mass is each step/query/head's position mass normalised to sum 1, then
    averaged, so every layer's curve sums to 1 and uniform reads as 1/P.
    """
    layers = default_anchor_layers(tiers) if layers is None else list(layers)
    prof = per_layer(rec, "position_mass", query,
                     lambda pm: (pm / pm.nansum(-1, keepdim=True)).nanmean(dim=(1, 2, 3)))  # (L, P)
    rows = [{"layer": layer, "tier": tiers.layers[layer], "position": p, "mass": float(prof[layer, p])}
            for layer in layers for p in range(prof.shape[1])]
    return pd.DataFrame(rows, columns=ANCHOR_COLUMNS)


def head_tier_data(tiers: TierAssignment, num_heads: int) -> pd.DataFrame:
    """Per-head tiers (every head takes its layer's tier where none were measured): L·H rows."""
    rows = [{"layer": layer, "head": h, "tier": t, "tier_index": TIERS.index(t)}
            for layer, heads in enumerate(tiers.head_tiers(num_heads)) for h, t in enumerate(heads)]
    return pd.DataFrame(rows, columns=HEAD_TIER_COLUMNS)
