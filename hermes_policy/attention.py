"""The one seam everything shares: our registered attention function.

transformers lets a model call a named attention function
(``AttentionInterface.register``). Ours, ``"hermes"``, does two things:

1. computes the attention output against whatever the layer's cache holds now,
   with a **right-aligned** causal mask: the q new queries are the last q of
   the S keys. Layers may therefore hold different numbers of tokens (the
   model-built mask cannot express that, so none is built: transformers skips
   mask creation for attention names it has no mask function for);
2. hands an :class:`AttentionEvent` to every attached :class:`AttentionObserver`.

Observers never get L x L for free: :meth:`AttentionEvent.attention` computes
softmax only for the query rows asked for, against all keys, and memoises it
per event so several observers share one computation.

Outside a :func:`streaming_context` the function is plain right-aligned
causal attention, so a model set to ``"hermes"`` still works when called directly.
"""

from __future__ import annotations

import contextvars
import importlib.util
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from hermes_policy.cache import CompactCache
from hermes_policy.tokens import TokenMeta

ATTENTION_NAME = "hermes"

#: What a forward is for; observers use it to decide whether to look.
PHASES = ("prefix", "ingest", "ask", "decode", "probe")


@dataclass
class AttentionEvent:
    """One layer's attention inputs during one forward.

    Attributes:
        layer: decoder layer index.
        phase: one of :data:`PHASES`.
        query: (1, Hq, q, D) queries of the new tokens (after RoPE).
        key, value: (1, Hkv, S, D) every key/value the layer attends to, new ones last.
        positions: (A, S) positions of those keys.
        meta: metadata of those keys (S rows).
        scaling: softmax scale.
        tag: free-form label of the forward (e.g. which pseudo-query), set by the caller.
    """

    layer: int
    phase: str
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor
    positions: torch.Tensor
    meta: TokenMeta
    scaling: float
    tag: str = ""
    _memo: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def n_query(self) -> int:
        return self.query.shape[-2]

    @property
    def n_key(self) -> int:
        return self.key.shape[-2]

    def attention(self, rows: Sequence[int] | None = None) -> torch.Tensor:
        """Softmax attention probabilities of the chosen query rows over all keys.

        Args:
            rows: indices into the q new queries (negative allowed); None = all q rows.

        Returns:
            (Hq, r, S) float32 probabilities; row i masks keys after its own position.
        """
        q = self.n_query
        idx = tuple(range(q)) if rows is None else tuple(r % q for r in rows)
        if idx not in self._memo:
            self._memo[idx] = attention_rows(self.query[0], self.key[0], idx, self.scaling)
        return self._memo[idx]


@runtime_checkable
class AttentionObserver(Protocol):
    """Anything that wants to see attention: probes that record, policies that score."""

    def observe(self, event: AttentionEvent) -> None:
        """Called once per layer per forward; call ``event.attention(rows)`` for the rows needed."""


@dataclass
class StreamingContext:
    """What the attention function needs beyond its tensors, for the current forward."""

    cache: CompactCache
    phase: str
    observers: tuple[AttentionObserver, ...] = ()
    tag: str = ""


_ACTIVE: contextvars.ContextVar[StreamingContext | None] = contextvars.ContextVar("hermes_streaming", default=None)


@contextmanager
def streaming_context(
    cache: CompactCache, phase: str, observers: Sequence[AttentionObserver] = (), tag: str = ""
) -> Iterator[StreamingContext]:
    """Make ``cache`` and ``observers`` visible to the attention function for one forward."""
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    ctx = StreamingContext(cache, phase, tuple(observers), tag)
    token = _ACTIVE.set(ctx)
    try:
        yield ctx
    finally:
        _ACTIVE.reset(token)


def right_aligned_causal_mask(n_query: int, n_key: int, rows: Sequence[int] | None = None, device=None) -> torch.Tensor:
    """(r, S) bool, True where query row i may attend key j (the q queries are the last q keys)."""
    rows_t = torch.arange(n_query, device=device) if rows is None else torch.as_tensor(rows, device=device)
    last_visible = n_key - n_query + rows_t  # (r,)
    return torch.arange(n_key, device=device)[None, :] <= last_visible[:, None]


def attention_rows(query: torch.Tensor, key: torch.Tensor, rows: Sequence[int], scaling: float) -> torch.Tensor:
    """Softmax rows of attention for selected queries, grouped-query aware.

    Args:
        query: (Hq, q, D).
        key: (Hkv, S, D); Hq must be a multiple of Hkv.
        rows: r indices into the q queries.

    Returns:
        (Hq, r, S) float32.
    """
    hq, q, _ = query.shape
    hkv, s, _ = key.shape
    index = torch.as_tensor(rows, device=query.device, dtype=torch.long)
    qs = query.index_select(1, index).float()  # (Hq, r, D)
    k = key.float().repeat_interleave(hq // hkv, dim=0)  # (Hq, S, D)
    scores = torch.matmul(qs, k.transpose(-1, -2)) * scaling
    mask = right_aligned_causal_mask(q, s, index.tolist(), device=query.device)
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def _flash_attn_available(query: torch.Tensor) -> bool:
    return query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and _HAS_FLASH_ATTN


_HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def _attend(query, key, value, attention_mask, scaling, dropout):
    """(1, Hq, q, D) x (1, Hkv, S, D) -> (1, q, Hq, D), right-aligned causal."""
    q, s = query.shape[-2], key.shape[-2]
    if attention_mask is None and _flash_attn_available(query):
        from flash_attn import flash_attn_func  # optional GPU extra; bottom-right causal since 2.1

        return flash_attn_func(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), softmax_scale=scaling, causal=q > 1
        )
    if attention_mask is not None:
        raise ValueError(
            "hermes attention builds its own right-aligned causal mask; padding masks are not supported"
        )
    mask = right_aligned_causal_mask(q, s, device=query.device) if q > 1 else None
    out = F.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=mask,
        dropout_p=dropout,
        scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous()


def hermes_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """The registered attention function (signature fixed by transformers).

    Args:
        query: (1, Hq, q, D); key, value: (1, Hkv, S, D).

    Returns:
        ((1, q, Hq, D) output, None): weights are never materialised here.
    """
    if query.shape[0] != 1:
        raise ValueError("hermes attention streams one sequence at a time (batch size 1)")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = _attend(query, key, value, attention_mask, scale, dropout)
    ctx = _ACTIVE.get()
    if ctx is not None and ctx.observers:
        layer = getattr(module, "layer_idx", None)
        if layer is None:
            raise RuntimeError("attention module has no layer_idx; cannot route observations")
        event = AttentionEvent(
            layer=layer,
            phase=ctx.phase,
            query=query.detach(),
            key=key.detach(),
            value=value.detach(),
            positions=ctx.cache.key_positions(layer),
            meta=ctx.cache.key_meta(layer),
            scaling=scale,
            tag=ctx.tag,
        )
        for observer in ctx.observers:
            observer.observe(event)
    return out, None


AttentionInterface.register(ATTENTION_NAME, hermes_attention)
