"""One recording seen one slice at a time: a layer, a head (or the head mean), a query kind, a step.

The paper figures (:mod:`analysis.tidy`) average over everything; an
interactive explorer (the dashboard's attention page) needs the same
quantities for one chosen slice. Each function here reads a
:class:`probes.recording.Recording` and returns plain tensors or a tidy
DataFrame; nothing is cached or mutated.

Selectors: ``head=None`` averages over heads; ``step=None`` averages over
steps, an int picks one step (negative counts from the end, as in Python).
Axis letters follow :mod:`analysis.metrics`: L layers, T steps, H heads,
F frames of the stream, P positions inside a frame, A frame ages, W raw steps,
S keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch

from analysis.derive import TIERS, TierAssignment
from analysis.errors import StudyError
from analysis.metrics import age_profile_from_mass, anchor_structure, frame_axis, per_layer_mass, recency_index
from analysis.tidy import RECENCY_COLUMNS
from hermes_policy.policies.spec import PolicySpec
from probes.recording import Recording

#: per-layer metrics of :func:`depth_profile_data`, recency first, then anchors
DEPTH_METRICS = ("newest10", "decay", "concentration", "periodicity")


# --------------------------------------------------------------------------- selectors
def num_steps(rec: Recording) -> int:
    return int(rec["frame_mass", 0].shape[0])


def check_step(rec: Recording, step: int | None) -> int | None:
    """``step`` as a non-negative index (or None); :class:`StudyError` when out of range."""
    if step is None:
        return None
    T = num_steps(rec)
    if not -T <= step < T:
        raise StudyError(f"step {step} is outside the recording's {T} steps")
    return step % T


def check_head(rec: Recording, head: int | None) -> int | None:
    if head is not None and not 0 <= head < rec.num_heads:
        raise StudyError(f"head {head} is outside the recording's {rec.num_heads} heads")
    return head


def check_layer(rec: Recording, layer: int) -> int:
    if not 0 <= layer < rec.num_layers:
        raise StudyError(f"layer {layer} is outside the recording's {rec.num_layers} layers")
    return layer


def _slice(x: torch.Tensor, q: int, step: int | None, head: int | None) -> torch.Tensor:
    """(T, Q, H, ...) -> (T', H', ...) with T' = 1 for a chosen step and H' = 1 for a chosen head."""
    x = x[:, q]
    if step is not None:
        x = x[step : step + 1]
    if head is not None:
        x = x[:, head : head + 1]
    return x


def steps_table(rec: Recording) -> pd.DataFrame:
    """One row per step: ``step, frames`` (streamed by then), ``time`` (stream seconds)."""
    T = num_steps(rec)
    frames = rec["steps.frames"].tolist() if "steps.frames" in rec else [math.nan] * T
    times = rec["steps.time"].tolist() if "steps.time" in rec else [math.nan] * T
    return pd.DataFrame({"step": range(T), "frames": frames, "time": times})


# --------------------------------------------------------------------------- age heatmap
def age_heatmap(rec: Recording, query: str, step: int | None = None, head: int | None = None) -> torch.Tensor:
    """(L, A) attention mass by frame age (0 = newest) for one query kind, head (or mean) and step (or all).

    Ages count the units of :class:`analysis.metrics.FrameAxis`; A is the
    oldest age anywhere in the recording, so the heatmap keeps its width when
    the step changes (ages not reached yet at that step are NaN).
    """
    step, head = check_step(rec, step), check_head(rec, head)
    axis = frame_axis(rec)
    A = max(int(axis.frames.max().item()), 1)

    def one_layer(x: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:  # x: (1, T, 1, H, F')
        if step is not None:
            x, frames = x[:, step : step + 1], frames[step : step + 1]
        if head is not None:
            x = x[:, :, :, head : head + 1]
        return age_profile_from_mass(x, frames, A - 1).nanmean(dim=1)  # (1, A)

    return per_layer_mass(rec, query, one_layer)


# --------------------------------------------------------------------------- per frame
def frame_mass(rec: Recording, layer: int, query: str, step: int = -1, head: int | None = None) -> torch.Tensor:
    """(F,) float64 mass per frame of the stream at one step (NaN: not streamed yet, or not a frame slot).

    The frame axis is the recording's own (frame index in the video), so it
    lines up with the video's frames.
    """
    check_layer(rec, layer)
    step, head = check_step(rec, step), check_head(rec, head)
    q = rec.query_index(query) if query in rec.queries else _no_query(rec, query)
    x = _slice(rec["frame_mass", layer].to(torch.float64), q, step, head)  # (1, H', F)
    return x.nanmean(dim=(0, 1))


def frame_by_layer(rec: Recording, frame: int, query: str, step: int = -1, head: int | None = None) -> pd.DataFrame:
    """Which layers attend to ``frame`` most at one step.

    Returns:
        L rows sorted by ``mass`` (descending): ``layer``, ``mass`` (share of the
        layer's video attention on the frame), ``relative`` (mass × cached frames:
        1 = what uniform attention over frames would give), ``rank`` (1 = most).
        :class:`StudyError` when the frame was not streamed by that step.
    """
    step, head = check_step(rec, step), check_head(rec, head)
    F = int(rec["frame_mass", 0].shape[-1])
    if not 0 <= frame < F:
        raise StudyError(f"frame {frame} is outside the recording's {F} frames")
    q = rec.query_index(query) if query in rec.queries else _no_query(rec, query)
    rows = []
    for layer in rec.layers():
        x = _slice(rec["frame_mass", layer].to(torch.float64), q, step, head)[0]  # (H', F)
        mass = x[:, frame].nanmean()
        cached = (~torch.isnan(x)).any(dim=0).sum()
        rows.append({"layer": layer, "mass": float(mass), "relative": float(mass * cached)})
    df = pd.DataFrame(rows)
    if df["mass"].isna().all():
        raise StudyError(f"frame {frame} was not streamed (or not cached) by step {step}; pick an earlier frame")
    df = df.sort_values("mass", ascending=False, na_position="last").reset_index(drop=True)
    df["rank"] = range(1, len(df) + 1)
    return df


# --------------------------------------------------------------------------- within a frame
def position_profile(
    rec: Recording, layer: int, query: str, step: int | None = None, head: int | None = None
) -> torch.Tensor:
    """(P,) float64 within-frame attention ("anchor" profile), summing to 1; uniform reads 1/P.

    Each step's and head's position mass is normalised first, then averaged,
    so every observation weighs the same (as :func:`analysis.tidy.anchor_profile_data`).
    """
    check_layer(rec, layer)
    step, head = check_step(rec, step), check_head(rec, head)
    if ("position_mass", layer) not in rec:
        raise StudyError("the recording has no position_mass; re-record it to see within-frame attention")
    q = rec.query_index(query) if query in rec.queries else _no_query(rec, query)
    x = _slice(rec["position_mass", layer].to(torch.float64), q, step, head)  # (T', H', P)
    x = x / x.nansum(dim=-1, keepdim=True)
    return x.nanmean(dim=(0, 1))


# --------------------------------------------------------------------------- raw rows
def raw_steps(rec: Recording) -> int:
    """W, the number of first steps whose raw attention rows were kept (0 if none)."""
    return int(rec["rows", 0].shape[0]) if ("rows", 0) in rec else 0


def raw_window(rec: Recording, layer: int, query: str, head: int | None = None) -> torch.Tensor:
    """(W, S) raw attention over every cached key (mean over query tokens) for the first W steps.

    Keys are in cache order: system prefix, frames oldest to newest, then the
    query's own tokens. Trailing key columns that no step reached are dropped;
    shorter (earlier) steps stay NaN-padded on the right.
    """
    check_layer(rec, layer)
    head = check_head(rec, head)
    if raw_steps(rec) == 0:
        raise StudyError("the recording kept no raw attention rows; record it with raw steps > 0")
    q = rec.query_index(query) if query in rec.queries else _no_query(rec, query)
    x = _slice(rec["rows", layer].to(torch.float64), q, None, head)  # (W, H', S)
    x = x.nanmean(dim=1)
    seen = (~torch.isnan(x)).any(dim=0)
    width = int(torch.nonzero(seen).max()) + 1 if seen.any() else 0
    return x[:, :width]


# --------------------------------------------------------------------------- depth
def depth_profile_data(rec: Recording, tiers: TierAssignment, query=None) -> pd.DataFrame:
    """Recency and anchor metrics vs depth, per layer: head mean and head range.

    Same columns as :func:`analysis.tidy.recency_depth_data` (so the same
    figure renders it), with metrics ``newest10`` and ``decay``
    (:func:`analysis.metrics.recency_index`) then ``concentration`` and
    ``periodicity`` (:func:`analysis.metrics.anchor_structure`); a metric the
    recording cannot provide (all NaN) is left out. 4·L rows at most.
    """
    if tiers.num_layers != rec.num_layers:
        raise StudyError(f"tiers cover {tiers.num_layers} layers but the recording has {rec.num_layers}")
    values = {**recency_index(rec, query), **anchor_structure(rec, query)}
    rows = []
    for metric in DEPTH_METRICS:
        x = values[metric]
        if torch.isnan(x).all():
            continue
        for layer in rec.layers():
            v = x[layer]
            ok = v[~torch.isnan(v)]
            rows.append({"layer": layer, "tier": tiers.layers[layer], "metric": metric,
                         "mean": float(ok.mean()) if ok.numel() else math.nan,
                         "head_min": float(ok.min()) if ok.numel() else math.nan,
                         "head_max": float(ok.max()) if ok.numel() else math.nan})
    return pd.DataFrame(rows, columns=RECENCY_COLUMNS)


# --------------------------------------------------------------------------- specs
SPEC_FIELDS = ("tier", "alpha", "k", "budget_share")


def compare_specs(specs: Mapping[str, PolicySpec]) -> pd.DataFrame:
    """Per-layer settings of several specs side by side.

    Returns:
        one row per layer; columns ``layer`` then ``{name} {field}`` for each
        spec and field of :data:`SPEC_FIELDS`, and ``tiers agree`` (whether every
        spec puts the layer in the same tier). :class:`StudyError` when a spec has
        no per-layer settings or the specs cover different layer counts.
    """
    if not specs:
        raise StudyError("no spec to compare")
    counts = {name: len(spec.layers or []) for name, spec in specs.items()}
    if any(n == 0 for n in counts.values()) or len(set(counts.values())) != 1:
        raise StudyError(f"specs must all have per-layer settings for the same layers, got {counts}")
    n = next(iter(counts.values()))
    table: dict[str, list] = {"layer": list(range(n))}
    for name, spec in specs.items():
        for f in SPEC_FIELDS:
            table[f"{name} {f}"] = [entry.get(f) for entry in spec.layers or []]
    tiers = [[entry.get("tier") for entry in spec.layers or []] for spec in specs.values()]
    table["tiers agree"] = [len({t[i] for t in tiers}) == 1 for i in range(n)]
    return pd.DataFrame(table)


def tier_counts(spec: PolicySpec) -> dict[str, int]:
    """Layers per tier in a spec, in depth order (tiers absent from the spec count 0)."""
    tiers = [entry.get("tier") for entry in spec.layers or []]
    return {t: tiers.count(t) for t in TIERS}


def _no_query(rec: Recording, query: str) -> int:
    raise StudyError(f"the recording has no query kind {query!r}; it has {', '.join(rec.queries)}")


__all__: Sequence[str] = [
    "DEPTH_METRICS", "age_heatmap", "compare_specs", "depth_profile_data", "frame_by_layer", "frame_mass",
    "num_steps", "position_profile", "raw_steps", "raw_window", "steps_table", "tier_counts",
]
