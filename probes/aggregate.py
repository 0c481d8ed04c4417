"""One recording from many: the mean over videos of every quantity, and its spread.

A study over several videos records each video on its own (same model, same
settings) and then aggregates them into a recording of the same format, so that
``derive``, ``figures`` and the dashboard read it like any other.

**Alignment (the time axis).** Videos differ in length, so their recordings have
different numbers of steps T and frames F. They are aligned *by step*: with one
chunk size, step ``t`` of every video has streamed the same number of frames
(``chunk_frames · (t + 1)``) unless the video ended inside that chunk, so frame
``f`` has the same age, and the same normalised age, in every video at step
``t`` — the quantities derive and the metrics reduce over (age profiles, the
newest 10 %, decay, anchors) mean the same thing in each. Every tensor is
NaN-padded to the longest video (T) and the widest frame / key axes (F, S), and
reduced over videos with a NaN-skipping mean. The aggregate's ``steps.frames``
is, per step, the most frames any video had streamed (the longest videos
define it); a video whose frame count at a step differs from that (it ended in
a partial chunk there) is left out of that step, as if it were NaN, so that no
step mixes two different sets of ages (and each step's frame mass still sums to
one). ``steps.videos`` (T,) counts the videos averaged at each step; within a
step the NaN pattern (frames not yet streamed, empty fused-frame slots, the
padding of raw rows) is the same for every video, so that is also the count
behind every value of the step. ``steps.time`` is the mean stream time.

**Spread.** ``blocks.{L}.attn.{quantity}_std`` is the sample standard deviation
over the videos averaged there (ddof = 1): NaN where fewer than two videos were.

**Memory.** Recordings of real models are large (L·T·Q·H·F floats each), so
videos are folded in one at a time (Welford's online mean and variance, in
float64): memory is a few times one recording, whatever the number of videos.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from tqdm import tqdm

from probes.recording import STD_SUFFIX, TENSORS_FILE, Recording, RecordingError, parse_layer_name

#: meta that must agree between the recordings of one aggregate (else their axes mean different things)
SHARED_META = ("model", "num_layers", "num_heads", "queries", "tokens_per_frame", "patches_per_frame", "chunk_frames",
               "query_kind")
#: meta copied from the first recording when every recording agrees on it
COMMON_META = ("model_info", "prompts", "fps", "hermes_lab_version")


# --------------------------------------------------------------------------- alignment
def reference_frames(step_frames: Sequence[torch.Tensor]) -> torch.Tensor:
    """The aggregate's ``steps.frames``: per step, the most frames any video had streamed.

    Args:
        step_frames: each video's (T_i,) ``steps.frames``.

    Returns:
        (T,) int64 with T = max T_i.
    """
    if not step_frames:
        raise RecordingError("nothing to aggregate: no recordings")
    t = max(int(f.numel()) for f in step_frames)
    padded = torch.stack([_pad(f.reshape(-1).to(torch.int64), (t,), 0) for f in step_frames])
    return padded.amax(dim=0)


def step_mask(frames: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(T,) bool: the steps of a (T_i,) ``steps.frames`` that agree with the (T,) reference (False past its end)."""
    mask = torch.zeros(reference.numel(), dtype=torch.bool)
    n = min(frames.numel(), reference.numel())
    mask[:n] = frames.reshape(-1)[:n].to(torch.int64) == reference[:n]
    return mask


def _pad(x: torch.Tensor, shape: Sequence[int], fill: float) -> torch.Tensor:
    """``x`` grown to ``shape`` (every axis at least as long), new entries ``fill``."""
    if tuple(x.shape) == tuple(shape):
        return x
    out = torch.full(tuple(shape), fill, dtype=x.dtype)
    out[tuple(slice(0, n) for n in x.shape)] = x
    return out


def _masked(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` (T', ...) as float64 with the steps ``mask`` leaves out set to NaN (T' <= len(mask))."""
    x = x.to(torch.float64)
    keep = mask[: x.shape[0]].reshape(-1, *([1] * (x.ndim - 1)))
    return torch.where(keep, x, torch.full_like(x, math.nan))


# --------------------------------------------------------------------------- online mean and spread
class RunningStats:
    """Welford's mean and variance per element, skipping NaN; the shape grows to the largest input.

    Attributes:
        count: (...) int32, non-NaN values seen per element.
        mean, m2: (...) float64, running mean and sum of squared deviations.
    """

    def __init__(self) -> None:
        self.count = torch.zeros(0, dtype=torch.int32)
        self.mean = torch.zeros(0, dtype=torch.float64)
        self.m2 = torch.zeros(0, dtype=torch.float64)

    def add(self, x: torch.Tensor) -> None:
        """Fold in one video's values (any float tensor of the same rank as earlier ones; NaN = absent)."""
        if self.count.ndim != x.ndim:
            if self.count.numel():
                raise RecordingError(f"cannot aggregate a {x.ndim}-d tensor with {self.count.ndim}-d ones")
            self.count = self.count.reshape((0,) * x.ndim)
            self.mean, self.m2 = self.mean.reshape(self.count.shape), self.m2.reshape(self.count.shape)
        shape = [max(a, b) for a, b in zip(self.count.shape, x.shape)]
        self.count, self.mean, self.m2 = (_pad(t, shape, 0) for t in (self.count, self.mean, self.m2))
        x = _pad(x.to(torch.float64), shape, math.nan)
        valid = ~torch.isnan(x)
        self.count = self.count + valid.to(torch.int32)
        delta = torch.where(valid, x - self.mean, torch.zeros_like(x))
        self.mean = self.mean + delta / self.count.clamp(min=1)
        self.m2 = self.m2 + delta * torch.where(valid, x - self.mean, torch.zeros_like(x))

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, sample std) as float32; NaN where no value (mean) or fewer than two (std) were seen."""
        nan = torch.full_like(self.mean, math.nan)
        mean = torch.where(self.count > 0, self.mean, nan)
        std = torch.where(self.count > 1, (self.m2.clamp(min=0) / (self.count - 1).clamp(min=1)).sqrt(), nan)
        return mean.to(torch.float32), std.to(torch.float32)


# --------------------------------------------------------------------------- meta
def check_compatible(metas: Sequence[dict[str, Any]], names: Sequence[str] | None = None) -> None:
    """Raise :class:`RecordingError` unless the recordings share model, shape, query kinds and chunking.

    ``names`` label the recordings in the message (default: their ``video``).
    """
    labels = list(names) if names is not None else [str(m.get("video")) for m in metas]
    for i, meta in enumerate(metas):
        if "aggregate" in meta:
            raise RecordingError(f"{labels[i]} is already an aggregate; aggregate the videos' own recordings")
        for key in SHARED_META:
            if meta.get(key) != metas[0].get(key):
                raise RecordingError(f"cannot aggregate {labels[0]} and {labels[i]}: they differ in {key} "
                                     f"({metas[0].get(key)!r} vs {meta.get(key)!r}); study them separately")


def aggregate_meta(metas: Sequence[dict[str, Any]], steps: int, frames: int,
                   sources: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """The aggregate's metadata: what every recording shares, and which videos it averages.

    ``sources`` (one dict per recording, e.g. its path) are merged into the listed videos.
    """
    sources = sources or [{} for _ in metas]
    meta: dict[str, Any] = {key: metas[0][key] for key in SHARED_META if key in metas[0]}
    meta.update({key: metas[0].get(key) for key in COMMON_META if all(m.get(key) == metas[0].get(key) for m in metas)})
    meta.update({
        "video": f"aggregate of {len(metas)} videos",
        "steps": steps,
        "frames": frames,
        "seconds": round(sum(float(m.get("seconds", 0.0)) for m in metas), 3),
        "aggregate": {
            "videos": len(metas),
            "alignment": "by step; a video is left out of a step where its frame count differs (a partial chunk)",
            "std": "sample standard deviation over videos (ddof=1); NaN where fewer than two",
            "sources": [{"video": m.get("video"), "steps": m.get("steps"), "frames": m.get("frames"), **src}
                        for m, src in zip(metas, sources)],
        },
    })
    return meta


# --------------------------------------------------------------------------- the aggregate
def aggregate(recordings: Iterable[Recording], step_frames: Sequence[torch.Tensor],
              sources: Sequence[dict[str, Any]] | None = None, progress: bool = False) -> Recording:
    """Mean and spread over videos of every per-layer tensor; see the module docstring for the alignment.

    Args:
        recordings: the videos' recordings, in order (an iterable, so they can be loaded one at a time).
        step_frames: each recording's (T_i,) ``steps.frames``, in the same order (known before loading).
        sources: per recording, extra entries for ``meta["aggregate"]["sources"]`` (e.g. its path).
        progress: show a tqdm bar over the recordings (stderr).

    Returns:
        A :class:`Recording`: ``blocks.{L}.attn.{q}`` (mean) and ``..._std`` for each quantity every
        recording has, ``steps.frames`` / ``steps.time`` / ``steps.videos`` (T,).
    """
    reference = reference_frames(step_frames)
    stats: dict[str, RunningStats] = {}
    times, videos = RunningStats(), torch.zeros(reference.numel(), dtype=torch.int64)
    metas: list[dict[str, Any]] = []
    names: set[str] | None = None
    bar = tqdm(recordings, total=len(step_frames), unit="video", desc="aggregating", file=sys.stderr,
               disable=not progress, leave=False)
    for rec, frames in zip(bar, step_frames):
        metas.append(rec.meta)
        check_compatible([metas[0], rec.meta])
        mask = step_mask(frames, reference)
        videos += mask.to(torch.int64)
        times.add(_masked(rec["steps.time"], mask) if "steps.time" in rec else torch.full((1,), math.nan))
        layered = {n for n in rec.tensors if parse_layer_name(n)}
        names = layered if names is None else names & layered  # only what every recording has
        for name in layered:
            stats.setdefault(name, RunningStats()).add(_masked(rec.tensors[name], mask))
    if len(metas) != len(step_frames):
        raise RecordingError(f"expected {len(step_frames)} recordings to aggregate, got {len(metas)}")
    tensors: dict[str, torch.Tensor] = {"steps.frames": reference, "steps.time": times.result()[0],
                                        "steps.videos": videos}
    for name in sorted(names or ()):
        tensors[name], tensors[name + STD_SUFFIX] = stats[name].result()
    frames_axis = max((t.shape[-1] for n, t in tensors.items() if n.endswith(".frame_mass")), default=0)
    return Recording(tensors, aggregate_meta(metas, int(reference.numel()), frames_axis, sources))


def read_step_frames(directory: str | Path) -> torch.Tensor:
    """A saved recording's (T,) ``steps.frames``, read without loading its other tensors."""
    path = Path(directory) / TENSORS_FILE
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.get_tensor("steps.frames")
    except Exception as e:  # noqa: BLE001  (safetensors raises its own types for missing keys, corrupt files)
        raise RecordingError(f"cannot read steps.frames from {path}: {e}") from None


def aggregate_dirs(directories: Sequence[str | Path], root: str | Path | None = None,
                   progress: bool = False) -> Recording:
    """:func:`aggregate` of saved recordings, loading one at a time; sources name each path (relative to ``root``)."""
    paths = [Path(d) for d in directories]
    sources = [{"path": str(p.relative_to(root) if root is not None else p)} for p in paths]
    return aggregate((Recording.load(p) for p in paths), [read_step_frames(p) for p in paths], sources, progress)


__all__ = ["RunningStats", "aggregate", "aggregate_dirs", "aggregate_meta", "check_compatible", "read_step_frames",
           "reference_frames", "step_mask"]
