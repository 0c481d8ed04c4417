"""Metrics on attention recordings: recency, anchors, entropy, temporal bias.

Every function here is pure: it reads a :class:`probes.recording.Recording`
(or plain tensors, for the ``*_from_*`` kernels that the Recording-level
functions wrap) and returns new tensors. Nothing is cached or mutated.

Axis letters follow the recording format: L layers, T steps, Q query kinds,
H heads, F frames of the stream, P token positions inside a frame, A frame
ages. In the ``*_from_*`` kernels ``frames`` is the (T,) count of frames
streamed at each step, so frame ``f`` has age ``frames[t] - 1 - f`` at step
``t`` (age 0 = the newest frame) and normalised age ``d = age / (frames[t] - 1)``
in [0, 1], the same ``d`` that HERMES's recency score ``exp(-k·d)`` uses.

The Recording-level functions first drop frame slots that never hold a token
(:class:`FrameAxis`): Qwen-VL tags each fused pair of frames with the pair's
first frame, so every other slot is empty, and ages there count pairs.

NaN in ``frame_mass`` marks a frame that was not streamed yet or not cached;
every reduction here skips NaN rather than treating it as zero mass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from analysis.errors import StudyError
from probes.recording import Recording

#: a frame's mass relative to uniform (n·mass) is floored here before the log in the
#: decay fit, so that one frame with (numerically) zero mass cannot dominate the slope.
#: Planted exp(-k·d) profiles are recovered exactly while n·mass at d = 1 stays above
#: it (k up to about 13); steeper decays read lower but keep their order.
DECAY_FLOOR = 1e-6

QuerySelector = str | Sequence[str] | None


# --------------------------------------------------------------------------- recording access
def query_indices(rec: Recording, query: QuerySelector = None) -> list[int]:
    """Indices on the Q axis for ``query``: None = every kind, a name, or a list of names."""
    names = rec.queries if query is None else [query] if isinstance(query, str) else list(query)
    if not names:
        raise StudyError("no query kind selected; pass a kind the recording has, e.g. " + ", ".join(rec.queries))
    out = []
    for name in names:
        if name not in rec.queries:
            raise StudyError(f"the recording has no query kind {name!r}; it has {', '.join(rec.queries)}")
        out.append(rec.queries.index(name))
    return out


def require(rec: Recording, quantity: str) -> None:
    """Raise :class:`StudyError` unless every layer recorded ``quantity``."""
    missing = [layer for layer in rec.layers() if (quantity, layer) not in rec]
    if missing:
        raise StudyError(
            f"the recording lacks blocks.{missing[0]}.attn.{quantity}; re-run the probe with {quantity!r} captured"
        )


def has(rec: Recording, quantity: str) -> bool:
    """Whether every layer recorded ``quantity``."""
    return all((quantity, layer) in rec for layer in rec.layers())


def layer_slice(rec: Recording, layer: int, quantity: str, query: QuerySelector = None) -> torch.Tensor:
    """One layer's ``quantity`` as float64 with a leading L=1 axis, selected query kinds only: (1, T, Q', ...).

    float64 because the fits below subtract nearly equal sums of many small masses.
    """
    return rec[quantity, layer].to(torch.float64)[None, :, query_indices(rec, query)]


def per_layer(rec: Recording, quantity: str, query: QuerySelector, fn) -> torch.Tensor:
    """``fn`` applied to each layer's (1, T, Q', ...) slice, results concatenated on axis 0.

    Recordings of real models are large (L·T·Q·H·F floats); working one
    layer at a time keeps the float64 copies to one layer's worth.
    """
    require(rec, quantity)
    return torch.cat([fn(layer_slice(rec, layer, quantity, query)) for layer in rec.layers()])


def stacked(rec: Recording, quantity: str, query: QuerySelector = None) -> torch.Tensor:
    """``quantity`` for every layer as float64, selected query kinds only: (L, T, Q', ...)."""
    return per_layer(rec, quantity, query, lambda x: x)


def frames_streamed(rec: Recording) -> torch.Tensor:
    """(T,) long: frames streamed at each step.

    Read from ``steps.frames``; a recording without it falls back to one past
    the newest frame that any layer, query or head saw (NaN marks the rest).
    """
    if "steps.frames" in rec:
        return rec["steps.frames"].to(torch.long).reshape(-1)
    require(rec, "frame_mass")
    seen = torch.stack([(~torch.isnan(rec["frame_mass", layer])).any(dim=1).any(dim=1)
                        for layer in rec.layers()]).any(dim=0)  # (T, F)
    idx = torch.arange(seen.shape[-1]).expand_as(seen)
    return torch.where(seen, idx + 1, torch.zeros_like(idx)).amax(dim=-1)


@dataclass(frozen=True)
class FrameAxis:
    """The frame axis as the metrics see it: only frame slots that ever hold tokens.

    A model that encodes several frames into one temporal step (Qwen-VL fuses
    pairs) tags all of that step's tokens with its first frame, so the
    recording's frame axis has slots that are NaN at every step. Metrics drop
    those slots, so ages and "the newest 10%" count *cached units* (frames, or
    frame groups for Qwen-VL) rather than empty slots: age 0 is always the
    newest unit. For one-frame-per-step models nothing changes.

    Attributes:
        slots: (F',) long, the frame indices that hold mass somewhere in the recording.
        frames: (T,) long, how many of those slots were streamed at each step.
    """

    slots: torch.Tensor
    frames: torch.Tensor


def frame_axis(rec: Recording) -> FrameAxis:
    """The :class:`FrameAxis` of a recording (one pass over every layer's frame mass)."""
    require(rec, "frame_mass")
    held = torch.stack([(~torch.isnan(rec["frame_mass", layer])).flatten(0, -2).any(dim=0)
                        for layer in rec.layers()]).any(dim=0)  # (F,)
    slots = torch.nonzero(held).flatten()
    streamed = frames_streamed(rec)
    return FrameAxis(slots, (slots[None, :] < streamed[:, None]).sum(-1))


def per_layer_mass(rec: Recording, query: QuerySelector, fn) -> torch.Tensor:
    """``fn(frame_mass, frames)`` per layer on the :class:`FrameAxis` (empty slots dropped); concatenated on axis 0.

    ``fn`` gets a (1, T, Q', H, F') float64 slice and the (T,) streamed-slot counts.
    """
    axis = frame_axis(rec)
    return per_layer(rec, "frame_mass", query, lambda x: fn(x[..., axis.slots], axis.frames))


def frame_ages(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(T, F) long: age of frame f at step t, or -1 where f was not streamed yet."""
    f = torch.arange(num_frames)
    age = frames.reshape(-1, 1) - 1 - f
    return torch.where(f < frames.reshape(-1, 1), age, torch.full_like(age, -1))


def normalised_ages(frames: torch.Tensor, num_frames: int) -> torch.Tensor:
    """(T, F) float64: age / (frames[t] - 1) in [0, 1]; NaN for unstreamed frames and one-frame steps."""
    age = frame_ages(frames, num_frames).to(torch.float64)
    span = (frames.reshape(-1, 1) - 1).to(torch.float64)
    d = age / span
    return torch.where((age >= 0) & (span > 0), d, torch.full_like(d, math.nan))


def _newest_count(n: torch.Tensor, fraction: float) -> torch.Tensor:
    """ceil(fraction·n) as long; the 1e-9 nudge keeps float error from rounding 0.1·30 up to 4."""
    return torch.ceil(n.to(torch.float64) * fraction - 1e-9).clamp(min=0).to(torch.long)


# --------------------------------------------------------------------------- age profile
def age_profile_from_mass(frame_mass: torch.Tensor, frames: torch.Tensor, max_age: int | None = None) -> torch.Tensor:
    """Mean attention mass vs frame age.

    Args:
        frame_mass: (L, T, Q, H, F) mass per frame, NaN where not streamed/cached.
        frames: (T,) frames streamed at each step.
        max_age: last age kept (default: the oldest age that occurs).

    Returns:
        (L, H, A) with A = max_age + 1: mass at each age, averaged over the
        steps and query kinds where that age exists; NaN where it never does.
    """
    L, T, Q, H, F = frame_mass.shape
    A = int(frames.max().item()) if max_age is None else max_age + 1
    # frame index holding age a at step t: f = frames[t] - 1 - a (gathered, so memory stays O(L·T·Q·H·A))
    f = frames.reshape(T, 1) - 1 - torch.arange(A)
    ok = (f >= 0) & (f < F)
    idx = f.clamp(0, max(F - 1, 0)).reshape(1, T, 1, 1, A).expand(L, T, Q, H, A)
    by_age = torch.take_along_dim(frame_mass, idx, dim=-1) if F > 0 else frame_mass.new_full((L, T, Q, H, A), math.nan)
    by_age = torch.where(ok.reshape(1, T, 1, 1, A), by_age, torch.full_like(by_age, math.nan))
    return by_age.nanmean(dim=(1, 2))


def age_profile(rec: Recording, query: QuerySelector = None, max_age: int | None = None) -> torch.Tensor:
    """(L, H, A) mean attention mass vs frame age (age 0 = newest), over steps and the chosen query kinds.

    Ages count the units of :class:`FrameAxis` (frames, or fused frame groups).
    """
    frames = frame_axis(rec).frames
    A = int(frames.max().item()) if max_age is None else max_age + 1
    return per_layer_mass(rec, query, lambda x, n: age_profile_from_mass(x, n, A - 1))


# --------------------------------------------------------------------------- recency
def decay_rate_from_mass(frame_mass: torch.Tensor, frames: torch.Tensor, floor: float = DECAY_FLOOR) -> torch.Tensor:
    """Exponential decay rate k of mass vs normalised age, per layer and head.

    Model: ``mass ∝ exp(-k·d)`` within each (step, query) snapshot. We fit
    ``log(max(n·mass, floor)) = c_{t,q} - k·d`` by ordinary least squares with
    one free intercept per snapshot (the "within" estimator: centre d and the
    log-mass inside each snapshot, then pool). Why this fit:

    * it is exact for a planted exponential, whatever the number of frames;
    * the per-snapshot intercept absorbs normalisation (mass sums to 1 over a
      different number of frames at every step), so early steps with few
      frames do not bias the slope;
    * k is on the scale of HERMES's ``exp(-k·d)`` (k = 20 for its sensory tier),
      so a measured k reads directly against the release's constants.

    Weighted least squares (weights = mass) was the alternative; it lets the
    few heaviest frames decide, which is what ``newest10`` already measures.

    Args:
        frame_mass: (L, T, Q, H, F); NaN entries are skipped.
        frames: (T,) frames streamed at each step; steps with < 2 frames carry no slope.
        floor: lower bound on n·mass before the log.

    Returns:
        (L, H) k; 0 for attention flat in time, > 0 for recency, < 0 when old
        frames get more; NaN where no snapshot had two frames.
    """
    L, T, Q, H, F = frame_mass.shape
    d = normalised_ages(frames, F)[None, :, None, None, :]  # (1, T, 1, 1, F)
    n = frames.to(torch.float64).reshape(1, T, 1, 1, 1)
    valid = ~torch.isnan(frame_mass) & ~torch.isnan(d)
    y = torch.log(torch.clamp(torch.nan_to_num(frame_mass, nan=0.0) * n, min=floor))
    w = valid.to(torch.float64)
    cnt = w.sum(-1, keepdim=True).clamp(min=1)
    d0 = torch.nan_to_num(d, nan=0.0)
    dc = (d0 - (d0 * w).sum(-1, keepdim=True) / cnt) * w
    yc = (y - (y * w).sum(-1, keepdim=True) / cnt) * w
    sxx = (dc * dc).sum(dim=(1, 2, 4))
    sxy = (dc * yc).sum(dim=(1, 2, 4))
    k = -sxy / sxx
    return torch.where(sxx > 0, k, torch.full_like(k, math.nan))


def newest_share_from_mass(frame_mass: torch.Tensor, frames: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """Share of the mass on the newest ``ceil(fraction·n)`` frames, mean over steps and queries: (L, H).

    The share is taken of the mass on cached frames, so eviction (NaN frames)
    does not shrink it. Uniform attention scores ``ceil(0.1·n)/n`` (>= 0.1).
    """
    L, T, Q, H, F = frame_mass.shape
    n = frames.reshape(-1, 1)
    newest = (torch.arange(F) >= n - _newest_count(frames, fraction).reshape(-1, 1)) & (torch.arange(F) < n)
    mass = torch.nan_to_num(frame_mass, nan=0.0)
    top = (mass * newest[None, :, None, None, :]).sum(-1)
    total = mass.sum(-1)
    share = top / total
    share = torch.where((total > 0) & (frames.reshape(1, T, 1, 1) > 0), share, torch.full_like(share, math.nan))
    return share.nanmean(dim=(1, 2))


def recency_index(rec: Recording, query: QuerySelector = None, newest_fraction: float = 0.1) -> dict[str, torch.Tensor]:
    """How strongly each head favours recent frames; higher = more recency.

    Returns:
        ``decay``: (L, H) fitted k of ``mass ∝ exp(-k·d)`` (see :func:`decay_rate_from_mass`);
        ``newest10``: (L, H) share of mass on the newest ``ceil(newest_fraction·n)`` frames.
    """
    return {
        "decay": per_layer_mass(rec, query, decay_rate_from_mass),
        "newest10": per_layer_mass(rec, query, lambda x, n: newest_share_from_mass(x, n, newest_fraction)),
    }


# --------------------------------------------------------------------------- anchors
def topk_concentration(position_mass: torch.Tensor) -> torch.Tensor:
    """How concentrated the within-frame position mass is, on a 0..1 scale.

    With k = max(1, P // 8), ``share`` is the fraction of mass on the k
    heaviest positions and ``k/P`` what uniform mass would give, so
    ``(share - k/P) / (1 - k/P)`` is 0 for uniform and 1 when all mass sits
    on <= k positions. We prefer it to a Gini coefficient because it reads
    as "mass on a few anchor positions" (HERMES's picture) and a handful of
    anchors amid a flat background moves it far more than it moves Gini.

    Args:
        position_mass: (..., P) mass per in-frame position (any scale; NaN = missing).

    Returns:
        (...) concentration; NaN where a row has no mass; 0 when P == 1 (nothing to concentrate).
    """
    P = position_mass.shape[-1]
    x = torch.nan_to_num(position_mass.to(torch.float64), nan=0.0).clamp(min=0)
    k = max(1, P // 8)
    total = x.sum(-1)
    if k >= P:
        return torch.where(total > 0, torch.zeros_like(total), torch.full_like(total, math.nan))
    share = x.topk(k, dim=-1).values.sum(-1) / total
    conc = (share - k / P) / (1 - k / P)
    return torch.where(total > 0, conc, torch.full_like(conc, math.nan))


def anchor_structure(rec: Recording, query: QuerySelector = None) -> dict[str, torch.Tensor]:
    """Sparse, frame-periodic "anchor" attention (HERMES's long-term signature).

    Returns:
        ``concentration``: (L, H) mean over steps/queries of :func:`topk_concentration`
        of ``position_mass``; NaN everywhere if the recording lacks it.
        ``periodicity``: (L, H) mean over steps/queries of the recorded
        ``periodicity`` (autocorrelation at a one-frame lag); NaN if absent.
    """
    L, H = rec.num_layers, rec.num_heads
    nan = torch.full((L, H), math.nan, dtype=torch.float64)
    out = {"concentration": nan.clone(), "periodicity": nan.clone()}
    if has(rec, "position_mass"):
        out["concentration"] = per_layer(rec, "position_mass", query,
                                         lambda x: topk_concentration(x).nanmean(dim=(1, 2)))
    if has(rec, "periodicity"):
        out["periodicity"] = per_layer(rec, "periodicity", query, lambda x: x.nanmean(dim=(1, 2)))
    return out


# --------------------------------------------------------------------------- entropy and sparsity
def gini(x: torch.Tensor) -> torch.Tensor:
    """Normalised Gini coefficient over the last axis, skipping NaN: (...).

    0 = all equal, 1 = all mass on one entry (scaled by n/(n-1) so that the
    maximum is 1 for any n). NaN for fewer than two entries or no mass.
    """
    x = x.to(torch.float64)
    valid = ~torch.isnan(x)
    n = valid.sum(-1).to(torch.float64)
    # torch.sort puts NaN last, so the valid values take ranks 1..n exactly
    xs = torch.nan_to_num(torch.sort(x, dim=-1).values, nan=0.0)
    i = torch.arange(1, x.shape[-1] + 1, dtype=torch.float64)
    total = xs.sum(-1)
    g = 2 * (i * xs).sum(-1) / (n * total) - (n + 1) / n
    g = g * n / (n - 1)
    return torch.where((n >= 2) & (total > 0), g, torch.full_like(g, math.nan))


def entropy_summary(rec: Recording, query: QuerySelector = None) -> dict[str, torch.Tensor]:
    """Attention spread over the video, per layer and head.

    Returns:
        ``entropy``: (L, H) mean over steps/queries of the recorded entropy
        divided by ``log(N)``, N = cached frames × ``tokens_per_frame`` (1 = uniform
        over every video token). If ``tokens_per_frame`` is unknown (<= 0) the
        raw entropy in nats is returned instead.
        ``sparsity``: (L, H) mean normalised Gini of the mass over frames
        (:func:`gini`): 0 = spread evenly over frames, 1 = on one frame. It is
        frame-level, so it complements the token-level entropy.
    """
    require(rec, "entropy")
    require(rec, "frame_mass")
    tpf = int(rec.meta.get("tokens_per_frame") or 0)
    entropy, sparsity = [], []
    for layer in rec.layers():
        ent = layer_slice(rec, layer, "entropy", query)  # (1, T, Q, H)
        fm = layer_slice(rec, layer, "frame_mass", query)  # (1, T, Q, H, F)
        if tpf > 0:
            tokens = (~torch.isnan(fm)).sum(-1).to(torch.float64) * tpf
            ent = torch.where(tokens > 1, ent / torch.log(tokens), torch.full_like(ent, math.nan))
        entropy.append(ent.nanmean(dim=(1, 2)))
        sparsity.append(gini(fm).nanmean(dim=(1, 2)))
    return {"entropy": torch.cat(entropy), "sparsity": torch.cat(sparsity)}


# --------------------------------------------------------------------------- temporal bias
def rank(x: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor, ties sharing their average rank (as Spearman needs)."""
    order = torch.argsort(x, stable=True)
    sorted_x = x[order]
    _, inverse, counts = torch.unique_consecutive(sorted_x, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    avg = ends - (counts.to(torch.float64) - 1) / 2  # mean of ranks start..end
    ranks = torch.empty_like(x, dtype=torch.float64)
    ranks[order] = avg[inverse]
    return ranks


def spearman(x: torch.Tensor, y: torch.Tensor) -> float:
    """Spearman rank correlation of two 1-D tensors over entries where both are finite.

    0.0 when either side is constant (no monotone trend to measure); NaN with fewer than 3 pairs.
    """
    ok = torch.isfinite(x) & torch.isfinite(y)
    if int(ok.sum()) < 3:
        return math.nan
    rx, ry = rank(x[ok].to(torch.float64)), rank(y[ok].to(torch.float64))
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = torch.sqrt((rx * rx).sum() * (ry * ry).sum())
    return 0.0 if den == 0 else float((rx * ry).sum() / den)


def ols_slope(x: torch.Tensor, y: torch.Tensor) -> float:
    """Least-squares slope of y on x over finite pairs; NaN with fewer than 2 or constant x."""
    ok = torch.isfinite(x) & torch.isfinite(y)
    if int(ok.sum()) < 2:
        return math.nan
    xc, yc = x[ok].double() - x[ok].double().mean(), y[ok].double() - y[ok].double().mean()
    sxx = (xc * xc).sum()
    return math.nan if sxx == 0 else float((xc * yc).sum() / sxx)


def temporal_bias_from_mass(mass: torch.Tensor, frames: int, exclude_recent: float = 0.1) -> dict[str, torch.Tensor]:
    """MemStream's check on one step: does mass rise with frame index, content aside?

    Args:
        mass: (L, H, F) mass per frame at one step (already averaged over query kinds).
        frames: frames streamed at that step (n); frames >= n are ignored.
        exclude_recent: the newest ``ceil(exclude_recent·n)`` frames are dropped
            so that plain recency (which every shallow layer shows) does not
            decide the sign.

    Returns:
        ``rho``: (L,) Spearman rho between frame index and the head-mean mass;
        ``slope``: (L,) OLS slope of relative mass (n·mass, 1 = uniform) on
        normalised index f/(n-1), i.e. the change in relative mass from the
        first to the last frame of the stream;
        ``rho_heads``: (L, H) the same rho per head.
        NaN where fewer than 3 frames remain.
    """
    L, H, F = mass.shape
    n = min(int(frames), F)
    keep = n - int(_newest_count(torch.tensor(n), exclude_recent)) if exclude_recent > 0 else n
    m = mass[..., :keep].to(torch.float64)
    idx = torch.arange(keep, dtype=torch.float64)
    layer_mean = m.nanmean(dim=1)  # (L, keep)
    rho = torch.tensor([spearman(idx, layer_mean[layer]) for layer in range(L)], dtype=torch.float64)
    rel_idx = idx / max(n - 1, 1)
    slope = torch.tensor([ols_slope(rel_idx, layer_mean[layer] * n) for layer in range(L)], dtype=torch.float64)
    rho_heads = torch.tensor([[spearman(idx, m[layer, h]) for h in range(H)] for layer in range(L)],
                             dtype=torch.float64)
    return {"rho": rho, "slope": slope, "rho_heads": rho_heads}


def temporal_bias(
    rec: Recording, query: QuerySelector = None, exclude_recent: float = 0.1, step: int = -1
) -> dict[str, torch.Tensor]:
    """Per-layer temporal bias at one step (default: the final one); see :func:`temporal_bias_from_mass`."""
    frames = frame_axis(rec).frames
    T = len(frames)
    if not -T <= step < T:
        raise StudyError(f"step {step} is outside the recording's {T} steps")
    at = per_layer_mass(rec, query, lambda x, n: x[:, step].nanmean(dim=1))  # (L, H, F')
    return temporal_bias_from_mass(at, int(frames[step]), exclude_recent)
