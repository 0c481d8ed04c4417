"""Online reducers: attention rows -> the small per-head summaries a recording keeps.

Everything here is a pure function of one layer's attention rows and the
metadata of its keys, so it can be tested on hand-made inputs and never
needs more than (H, S) memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hermes_policy.tokens import TokenMeta

EPS = 1e-12


@dataclass
class LayerReduction:
    """Summaries of one layer's attention at one step, for N distributions (heads x query kinds).

    Attributes:
        frame_mass: (N, F) mass per frame, normalised over video tokens (NaN for frames with no cached token).
        position_mass: (N, P) mass per in-frame position, normalised over video tokens.
        entropy: (N,) entropy in nats of the attention restricted to video tokens.
        sink_mass: (N,) mass on tokens that belong to no frame.
        periodicity: (N,) autocorrelation of per-token video mass at a lag of P tokens.
        row: (N, S) the distribution itself (kept only for the bounded raw window).
    """

    frame_mass: torch.Tensor
    position_mass: torch.Tensor
    entropy: torch.Tensor
    sink_mass: torch.Tensor
    periodicity: torch.Tensor
    row: torch.Tensor


def reduce_rows(row: torch.Tensor, meta: TokenMeta, num_frames: int, tokens_per_frame: int,
                patches_per_frame: int | None = None) -> LayerReduction:
    """Reduce attention distributions of one layer.

    Args:
        row: (N, S) attention distributions over S keys, one per head (or per
            head x query kind, flattened); a multi-token query is averaged over
            its tokens first, so they vote equally.
        meta: metadata of the S keys.
        num_frames: F, frames in the stream so far (frame indices are < F).
        tokens_per_frame: tokens of one frame unit, its text included: the period of the anchor structure.
        patches_per_frame: P, image patches per frame (the width of ``position_mass``); default
            ``tokens_per_frame`` (a family whose frames carry no text).

    Returns:
        the :class:`LayerReduction`, every field with leading dimension N.
    """
    row = row.float()
    heads = row.shape[0]
    video = meta.is_video
    video_row = row[:, video]  # (H, V)
    video_mass = video_row.sum(dim=1)  # (H,)
    p = video_row / video_mass.clamp_min(EPS)[:, None]

    frames = meta.frame[video].long()
    frame_mass = torch.zeros(heads, num_frames).index_add_(1, frames, p)
    present = torch.zeros(num_frames, dtype=torch.bool)
    present[frames] = True
    frame_mass[:, ~present] = float("nan")

    patch = meta.patch[video].long()
    is_patch = patch >= 0
    width = patches_per_frame or tokens_per_frame
    position_mass = torch.zeros(heads, width).index_add_(1, patch[is_patch], p[:, is_patch])

    entropy = -(p * torch.log(p.clamp_min(EPS))).sum(dim=1)
    return LayerReduction(
        frame_mass=frame_mass,
        position_mass=position_mass,
        entropy=entropy,
        sink_mass=row[:, ~video].sum(dim=1),
        periodicity=lag_autocorrelation(p, tokens_per_frame),
        row=row,
    )


def lag_autocorrelation(x: torch.Tensor, lag: int) -> torch.Tensor:
    """Pearson correlation of each row with itself shifted by ``lag``.

    Args:
        x: (H, V) sequences.

    Returns:
        (H,) correlations; NaN where the sequence is shorter than lag + 2 or constant.
    """
    if x.shape[1] < lag + 2:
        return torch.full((x.shape[0],), float("nan"))
    a, b = x[:, :-lag], x[:, lag:]
    a = a - a.mean(dim=1, keepdim=True)
    b = b - b.mean(dim=1, keepdim=True)
    denom = (a.norm(dim=1) * b.norm(dim=1))
    corr = (a * b).sum(dim=1) / denom.clamp_min(EPS)
    return torch.where(denom > EPS, corr, torch.full_like(corr, float("nan")))


def split(reduction: LayerReduction, parts: int) -> list[LayerReduction]:
    """Undo a flattening of ``parts`` query kinds into the leading dimension: N = parts x H."""
    fields = ("frame_mass", "position_mass", "entropy", "sink_mass", "periodicity", "row")
    chunks = {f: getattr(reduction, f).chunk(parts, dim=0) for f in fields}
    return [LayerReduction(**{f: chunks[f][i] for f in fields}) for i in range(parts)]
