"""Cache occupancy: which frames each layer still holds, chunk by chunk, under a memory policy.

:func:`run_occupancy` streams frames through a
:class:`~hermes_policy.session.StreamingSession` one chunk at a time and, after
each chunk (once the policy has pruned), reads what the compact cache really
holds: per layer, the share of each frame's patch tokens still cached, the
layer's row count, the KV bytes, and the summary slot of HERMES's long-term
layers. It reads the cache only; the policy and session run unchanged.

What is counted is what sits in the compact cache: ReKV-style policies that
offload old frames to CPU blocks show them as evicted (they come back only at
question time), which is also what ``kv_bytes`` counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from hermes_policy.cache import CompactCache
from hermes_policy.errors import SessionError
from hermes_policy.head_cache import HeadCache
from hermes_policy.models.base import ModelAdapter
from hermes_policy.policies.base import Policy
from hermes_policy.policies.hermes import SUMMARY_FRAME
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import Frame


@dataclass(frozen=True)
class Occupancy:
    """What a streaming run's cache held after each chunk.

    Attributes:
        policy: the policy's resolved configuration (``Policy.config()``).
        tokens_per_frame: patch tokens per frame (per frame group for Qwen-VL).
        frames_per_group: frames the model fuses into one cached unit (Qwen-VL: 2).
        frames: (T,) int64 frames streamed after each step.
        time: (T,) float64 stream time (s) of each step's last frame.
        held: (T, L, F) float32 share of frame f's patch tokens that layer l holds
            after step t: 1 = all, 0 = all evicted; NaN for frames not streamed by
            then and for frame slots that are not a cached unit (the second frame
            of a fused Qwen-VL pair, whose tokens carry the pair's first frame).
        tokens: (T, L) int64 rows per layer (system prefix and summary slot included).
        kv_bytes: (T,) int64 key/value bytes held.
        summary: (T, L) int64 evicted tokens folded into the layer's summary slot (0 = no slot); a per-head
            run: summed over the layer's heads.
        head_tokens: (T, L, Hkv) int64 rows each KV head holds, for a run with a per-head cache
            (granularity head; ``held`` is then averaged over the heads); None for a per-layer cache.
    """

    policy: dict
    tokens_per_frame: int
    frames_per_group: int
    frames: np.ndarray
    time: np.ndarray
    held: np.ndarray
    tokens: np.ndarray
    kv_bytes: np.ndarray
    summary: np.ndarray
    head_tokens: np.ndarray | None = None

    @property
    def num_steps(self) -> int:
        return int(self.frames.shape[0])

    @property
    def num_layers(self) -> int:
        return int(self.held.shape[1])

    def layer_frame_counts(self, step: int = -1) -> np.ndarray:
        """(L,) frames with at least one token held by each layer after ``step``."""
        held = self.held[step]
        return np.nansum(held > 0, axis=-1).astype(np.int64)


def held_shares(cache: CompactCache, num_frames: int, tokens_per_frame: int) -> np.ndarray:
    """(L, F) share of each frame's ``tokens_per_frame`` patch tokens that each layer holds now.

    Only patch tokens (``patch >= 0``) count, so per-frame text (timestamps)
    and policy-owned slots never inflate a share. A per-head cache: the share averaged over the layer's heads.
    """
    out = np.zeros((cache.num_layers, num_frames), dtype=np.float32)
    for layer in range(cache.num_layers):
        metas = _layer_metas(cache, layer)
        for meta in metas:
            frames = meta.frame[(meta.frame >= 0) & (meta.patch >= 0)].long()
            counts = torch.bincount(frames, minlength=num_frames)[:num_frames]
            out[layer] += counts.numpy() / tokens_per_frame / len(metas)
    return out


def _layer_metas(cache: CompactCache, layer: int) -> list:
    """The layer's row metadata: one per KV head for a per-head cache, else the layer's one."""
    if isinstance(cache, HeadCache):
        return [cache.head_meta(layer, h) for h in range(cache.num_kv_heads)]
    return [cache.meta(layer)]


def summary_counts(cache: CompactCache) -> np.ndarray:
    """(L,) evicted tokens folded into each layer's summary slot (0 where the layer has none).

    A slot is a row tagged ``SUMMARY_FRAME``; the fold count is what the
    hermes policy keeps in ``cache.policy_state["summary_count"]``.
    """
    out = np.zeros(cache.num_layers, dtype=np.int64)
    if isinstance(cache, HeadCache):  # per head, keyed "layer:head"
        for key, count in cache.policy_state.get("head_summary_count", {}).items():
            layer, head = map(int, key.split(":"))
            if bool((cache.head_meta(layer, head).frame == SUMMARY_FRAME).any()):
                out[layer] += int(count)
        return out
    folded = cache.policy_state.get("summary_count", {})
    for layer in range(cache.num_layers):
        if bool((cache.meta(layer).frame == SUMMARY_FRAME).any()):
            out[layer] = int(folded.get(layer, 0))
    return out


def run_occupancy(
    adapter: ModelAdapter,
    policy: Policy,
    frames: Sequence[Frame],
    chunk_frames: int = 4,
    progress: Callable[[int, int], None] | None = None,
    flush_after: Sequence[int] = (),
) -> Occupancy:
    """Stream ``frames`` under ``policy`` and record the cache after every chunk.

    Args:
        adapter: the model.
        policy: a fresh policy (policies keep per-stream state).
        frames: the stream, in order.
        chunk_frames: frames per prefill (rounded up to the model's frame groups).
        progress: called as ``progress(frames_done, total)`` after each chunk.
        flush_after: frame counts at which a partial chunk is prefilled, as a question asked then
            would (``eval`` flushes before every question): replaying an evaluated stream with its
            questions' ``frames_seen`` gives the very chunks, hence the very cache, it had.
    """
    if not frames:
        raise SessionError("the video yielded no frames; nothing to stream")
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=chunk_frames))
    size = session.chunk_frames
    group = adapter.frames_per_group
    total = len(frames)
    held, tokens, kv, summary, steps, times, heads = [], [], [], [], [], [], []
    cuts = sorted(set(flush_after))
    start = 0
    while start < total:
        end = min(start + size, total)
        end = next((c for c in cuts if start < c < end), end)
        chunk = list(frames[start:end])
        start = end
        session.ingest(chunk)
        session.flush()  # the last chunk may be short
        assert session.tokens_per_frame is not None  # set by the first chunk
        shares = held_shares(session.cache, total, session.tokens_per_frame)
        streamed = np.arange(total) < session.frames_seen
        unit = np.arange(total) % group == 0
        shares[:, ~(streamed & unit)] = math.nan
        held.append(shares)
        tokens.append(session.cache.lengths())
        if isinstance(session.cache, HeadCache):
            heads.append(session.cache.all_head_lengths())
        kv.append(session.cache.kv_bytes)
        summary.append(summary_counts(session.cache))
        steps.append(session.frames_seen)
        times.append(session.stream_time)
        if progress is not None:
            progress(session.frames_seen, total)
    return Occupancy(
        policy=policy.config(),
        tokens_per_frame=int(session.tokens_per_frame or 0),
        frames_per_group=group,
        frames=np.asarray(steps, dtype=np.int64),
        time=np.asarray(times, dtype=np.float64),
        held=np.stack(held),
        tokens=np.asarray(tokens, dtype=np.int64),
        kv_bytes=np.asarray(kv, dtype=np.int64),
        summary=np.stack(summary),
        head_tokens=np.asarray(heads, dtype=np.int64) if heads else None,
    )


def compare(runs: Mapping[str, Occupancy], step: int = -1) -> pd.DataFrame:
    """Policies side by side after one step: one row per run.

    Columns: ``run``, ``policy``, ``frames`` (streamed by then), ``kv_bytes``,
    ``rows_min`` / ``rows_max`` (rows per layer), ``frames_held`` (mean over
    layers of the frames with at least one token held) and ``summary_tokens``
    (evicted tokens folded into summary slots, all layers).
    """
    rows = []
    for name, run in runs.items():
        if not -run.num_steps <= step < run.num_steps:
            raise SessionError(f"step {step} is outside run {name!r}'s {run.num_steps} steps")
        rows.append({
            "run": name,
            "policy": run.policy.get("policy"),
            "frames": int(run.frames[step]),
            "kv_bytes": int(run.kv_bytes[step]),
            "rows_min": int(run.tokens[step].min()),
            "rows_max": int(run.tokens[step].max()),
            "frames_held": float(run.layer_frame_counts(step).mean()),
            "summary_tokens": int(run.summary[step].sum()),
        })
    return pd.DataFrame(rows, columns=["run", "policy", "frames", "kv_bytes", "rows_min", "rows_max", "frames_held",
                                       "summary_tokens"])


def suggested_budget(tokens_per_frame: int, num_frames: int, share: float = 0.25) -> int:
    """A budget (video tokens per layer) of whole frames holding about ``share`` of the stream, at least one frame.

    A default for a demo: small enough that every pruning policy has to evict.
    """
    if tokens_per_frame < 1 or num_frames < 1:
        raise SessionError("a budget needs at least one frame of at least one token")
    frames = max(1, round(share * num_frames))
    return frames * tokens_per_frame


__all__ = ["Occupancy", "compare", "held_shares", "run_occupancy", "suggested_budget", "summary_counts"]
