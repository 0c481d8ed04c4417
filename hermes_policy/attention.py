"""The one seam everything shares: our registered attention function.

transformers lets a model call a named attention function
(``AttentionInterface.register``). Ours, ``"hermes"``, does two things:

1. computes the attention output against whatever the layer's cache holds now,
   with a **right-aligned** causal mask: the q new queries are the last q of
   the S keys. Layers may therefore hold different numbers of tokens (the
   model-built mask cannot express that, so none is built: transformers skips
   mask creation for attention names it has no mask function for);
2. hands an :class:`AttentionEvent` to every attached :class:`AttentionObserver`
   whose :class:`Subscription` wants that layer and phase. Observers that filtered
   an event out are not called at all, and when nobody wants it no event is built.

Observers never get L x L for free: :meth:`AttentionEvent.attention` computes
softmax only for the query rows asked for, against all keys, and memoises it
per event so several observers share one computation.

A forward may also carry its own **key mask** (:data:`KeyMask`): per layer, which keys each
new query row may see, replacing the right-aligned causal mask (and segments) there. The
causal memory map (:mod:`hermes_policy.knockout`) packs many copies of one question into one
forward with it, each copy losing different cache rows at different layers: hiding a key
from the softmax is exactly removing it, so the packed forward equals one eviction per copy.

Outside a :func:`streaming_context` the function is plain right-aligned
causal attention, so a model set to ``"hermes"`` still works when called directly.
"""

from __future__ import annotations

import contextvars
import importlib.util
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from transformers import AttentionInterface

from hermes_policy.cache import CompactCache
from hermes_policy.tokens import TokenMeta

ATTENTION_NAME = "hermes"

#: What a forward is for; observers use it to decide whether to look.
PHASES = ("prefix", "ingest", "ask", "decode", "probe")

#: ``key_mask(layer, n_key)``: the (q, S) or (Hq, q, S) bool mask of a forward's q new query rows over the
#: layer's S keys (True: may attend), or None for the right-aligned causal mask. ``layer`` is a cache layer.
KeyMask = Callable[[int, int], "torch.Tensor | None"]


@dataclass(frozen=True)
class Segment:
    """A run of new tokens that forms one independent query (e.g. one pseudo-query).

    Tokens of a segment see the cache and the earlier tokens of their own
    segment only, so several prompts can share one forward without seeing each other.
    """

    tag: str
    start: int
    stop: int


@dataclass
class AttentionEvent:
    """One layer's attention inputs during one forward.

    Attributes:
        layer: cache layer index (the decoder layer, counting only layers with attention and a KV cache).
        phase: one of :data:`PHASES`.
        query: (1, Hq, q, D) queries of the new tokens (after RoPE).
        key, value: (1, Hkv, S, D) every key/value the layer attends to, new ones last. ``value`` is
            None for embedding-level pseudo-queries (:mod:`hermes_policy.embedding_probe`), which
            compute attention weights but no attention output.
        cache: the cache being attended to; :attr:`positions` and :attr:`meta` of
            the keys are read from it only when an observer asks (most events are skipped).
        scaling: softmax scale.
        tag: free-form label of the forward (e.g. which pseudo-query), set by the caller.
        segments: independent queries packed in this forward (None: the new tokens are one sequence).
        mask: the forward's own (q, S) or (Hq, q, S) key mask at this layer (:data:`KeyMask`), which then
            replaces the causal mask and segments in :meth:`attention`; None: causal.
        heads: on a per-head cache (:class:`~hermes_policy.head_cache.HeadCache`), each KV head's committed
            rows ``c_h``: ``key`` is then padded, head ``h``'s cached keys in columns ``[0, c_h)`` and the new
            ones last, and ``mask`` hides the padding (read a head's attention as ``[..., :c_h]``).
        head_probs: on a per-head cache, when the caller computed them: per KV head, the (G, q, c_h + n)
            probabilities of its group's query rows over that head's own keys (cached first, new last);
            :meth:`attention` lays them into the padded form only when asked.
    """

    layer: int
    phase: str
    query: torch.Tensor
    key: torch.Tensor
    value: torch.Tensor | None
    cache: CompactCache = field(repr=False)
    scaling: float = 1.0
    tag: str = ""
    segments: tuple[Segment, ...] | None = None
    mask: torch.Tensor | None = field(default=None, repr=False)
    heads: tuple[int, ...] | None = None
    head_probs: list[torch.Tensor] | None = field(default=None, repr=False)
    _memo: dict[tuple[int, ...], torch.Tensor] = field(default_factory=dict, repr=False)

    @cached_property
    def positions(self) -> torch.Tensor:
        """(A, S) positions of the keys."""
        return self.cache.key_positions(self.layer)

    @cached_property
    def meta(self) -> TokenMeta:
        """Metadata of the keys (S rows)."""
        return self.cache.key_meta(self.layer)

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
            if self.head_probs is not None:
                self._memo[idx] = _pad_head_probs(self.head_probs, self.heads, self.n_key, idx)
            elif self.mask is not None:
                self._memo[idx] = masked_attention_rows(self.query[0], self.key[0], idx, self.scaling, self.mask)
            else:
                self._memo[idx] = attention_rows(self.query[0], self.key[0], idx, self.scaling, self.segments)
        return self._memo[idx]


@runtime_checkable
class AttentionObserver(Protocol):
    """Anything that wants to see attention: probes that record, policies that score."""

    def observe(self, event: AttentionEvent) -> None:
        """Called once per layer per forward; call ``event.attention(rows)`` for the rows needed."""


@dataclass(frozen=True)
class Subscription:
    """An observer and the events it wants: some layers, some phases (None: all of them).

    The filter lives here rather than in each observer so that an observer that
    wants nothing from a layer costs nothing there: it is never called.
    """

    observer: AttentionObserver
    layers: frozenset[int] | None = None
    phases: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.observer, AttentionObserver):
            raise TypeError(f"an observer needs an observe(event) method, got {type(self.observer).__name__}")
        if self.phases is not None:
            unknown = set(self.phases) - set(PHASES)
            if unknown:
                raise ValueError(f"unknown phase(s) {sorted(unknown)}; phases are {PHASES}")
        if self.layers is not None and any(isinstance(i, bool) or not isinstance(i, int) or i < 0
                                           for i in self.layers):
            raise ValueError(f"layers must be non-negative layer indices, got {sorted(self.layers)!r}")

    def wants(self, layer: int, phase: str) -> bool:
        return (self.layers is None or layer in self.layers) and (self.phases is None or phase in self.phases)


def subscribe(
    observer: AttentionObserver | Subscription,
    layers: Iterable[int] | None = None,
    phases: Iterable[str] | None = None,
) -> Subscription:
    """``observer`` as a :class:`Subscription` (an existing one is returned as it is when no filter is given)."""
    if isinstance(observer, Subscription):
        if layers is None and phases is None:
            return observer
        observer = observer.observer
    return Subscription(observer, None if layers is None else frozenset(layers),
                        None if phases is None else frozenset(phases))


@dataclass
class StreamingContext:
    """What the attention function needs beyond its tensors, for the current forward."""

    cache: CompactCache
    phase: str
    subscriptions: tuple[Subscription, ...] = ()
    tag: str = ""
    segments: tuple[Segment, ...] | None = None
    key_mask: KeyMask | None = None

    def observers_for(self, layer: int) -> list[AttentionObserver]:
        """The observers that want this layer in this forward's phase, in attachment order."""
        return [s.observer for s in self.subscriptions if s.wants(layer, self.phase)]


_ACTIVE: contextvars.ContextVar[StreamingContext | None] = contextvars.ContextVar("hermes_streaming", default=None)


@contextmanager
def streaming_context(
    cache: CompactCache,
    phase: str,
    observers: Sequence[AttentionObserver | Subscription] = (),
    tag: str = "",
    segments: Sequence[Segment] | None = None,
    key_mask: KeyMask | None = None,
) -> Iterator[StreamingContext]:
    """Make ``cache``, ``observers`` (and any packed ``segments`` or ``key_mask``) visible to the attention function.

    Plain observers see every layer; a :class:`Subscription` sees the layers and phases it names.
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if key_mask is not None and segments:
        raise ValueError("a forward takes segments or a key mask, not both (a key mask says everything segments do)")
    subscriptions = tuple(subscribe(o) for o in observers)
    ctx = StreamingContext(cache, phase, subscriptions, tag, tuple(segments) if segments else None, key_mask)
    token = _ACTIVE.set(ctx)
    try:
        yield ctx
    finally:
        _ACTIVE.reset(token)


def right_aligned_causal_mask(
    n_query: int,
    n_key: int,
    rows: Sequence[int] | None = None,
    device=None,
    segments: Sequence[Segment] | None = None,
) -> torch.Tensor:
    """(r, S) bool, True where query row i may attend key j (the q queries are the last q keys).

    With ``segments``, a new token additionally sees only new tokens of its own segment.
    """
    rows_t = torch.arange(n_query, device=device) if rows is None else torch.as_tensor(rows, device=device)
    offset = n_key - n_query
    cols = torch.arange(n_key, device=device)[None, :]
    mask = cols <= (offset + rows_t)[:, None]
    if segments:
        seg = torch.full((n_query,), -1, dtype=torch.long, device=device)
        for i, segment in enumerate(segments):
            seg[segment.start : segment.stop] = i
        key_seg = torch.cat([torch.full((offset,), -2, dtype=torch.long, device=device), seg])
        mask &= (key_seg[None, :] == -2) | (key_seg[None, :] == seg[rows_t][:, None])
    return mask


def attention_rows(
    query: torch.Tensor,
    key: torch.Tensor,
    rows: Sequence[int],
    scaling: float,
    segments: Sequence[Segment] | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Softmax rows of attention for selected queries, grouped-query aware.

    Args:
        query: (Hq, q, D).
        key: (Hkv, S, D); Hq must be a multiple of Hkv.
        rows: r indices into the q queries.
        segments: packed independent queries (see :class:`Segment`).
        mask: the (r, q) mask of the rows over the new keys, when the caller built it once for many layers.

    Returns:
        (Hq, r, S) float32.
    """
    hq, q, d = query.shape
    hkv, s, _ = key.shape
    group = hq // hkv
    index = torch.as_tensor(rows, device=query.device, dtype=torch.long)
    r = index.numel()
    # grouped matmul: (Hkv, G*r, D) x (Hkv, D, S), no copy of the keys per query head. Like
    # transformers' eager attention, scores are computed in the model dtype and softmaxed in float32.
    every_row = isinstance(rows, range) and rows == range(q)
    qs = (query if every_row else query.index_select(1, index)).reshape(hkv, group * r, d)
    scores = torch.matmul(qs, key.transpose(-1, -2)).reshape(hq, r, s).float()
    scores.mul_(scaling)  # in place: the float32 scores are this call's own tensor either way
    # only the new (last q) columns can be hidden from a new query row
    if mask is None:
        mask = right_aligned_causal_mask(q, q, index.tolist(), device=query.device, segments=segments)
    scores[..., s - q :].masked_fill_(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1)


def masked_attention_rows(query: torch.Tensor, key: torch.Tensor, rows: Sequence[int], scaling: float,
                          mask: torch.Tensor) -> torch.Tensor:
    """:func:`attention_rows` under a forward's own key mask (:data:`KeyMask`) instead of the causal one.

    Args:
        query: (Hq, q, D); key: (Hkv, S, D).
        mask: (q, S) or (Hq, q, S) bool, True where a row may attend a key.

    Returns:
        (Hq, r, S) float32.
    """
    hq, _, d = query.shape
    hkv, s, _ = key.shape
    group = hq // hkv
    index = torch.as_tensor(rows, device=query.device, dtype=torch.long)
    r = index.numel()
    qs = query.index_select(1, index).reshape(hkv, group * r, d)
    scores = torch.matmul(qs, key.transpose(-1, -2)).reshape(hq, r, s).float() * scaling
    rows_mask = mask.to(query.device).index_select(-2, index)
    return torch.softmax(scores.masked_fill(~rows_mask, float("-inf")), dim=-1)


def _weighted_values(probs: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """(Hq, q, S) probabilities x (Hkv, S, D) values -> (1, q, Hq, D), grouped-query aware."""
    hq, q, s = probs.shape
    hkv, _, d = value.shape
    grouped = probs.to(value.dtype).reshape(hkv, (hq // hkv) * q, s)
    return torch.matmul(grouped, value).reshape(hq, q, d).transpose(0, 1)[None]


def _flash_attn_available(query: torch.Tensor) -> bool:
    return query.is_cuda and query.dtype in (torch.float16, torch.bfloat16) and _HAS_FLASH_ATTN


_HAS_FLASH_ATTN = importlib.util.find_spec("flash_attn") is not None


def _attend(query, key, value, attention_mask, scaling, dropout, segments=None):
    """(1, Hq, q, D) x (1, Hkv, S, D) -> (1, q, Hq, D), right-aligned causal."""
    q, s = query.shape[-2], key.shape[-2]
    if attention_mask is None and segments is None and _flash_attn_available(query):
        from flash_attn import flash_attn_func  # optional GPU extra; bottom-right causal since 2.1

        return flash_attn_func(
            query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), softmax_scale=scaling, causal=q > 1
        )
    if attention_mask is not None:
        raise ValueError(
            "hermes attention builds its own right-aligned causal mask; padding masks are not supported"
        )
    mask = right_aligned_causal_mask(q, s, device=query.device, segments=segments) if q > 1 else None
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
    ctx = _ACTIVE.get()
    segments = ctx.segments if ctx is not None else None
    layer = getattr(module, "layer_idx", None)
    if ctx is not None and layer is not None:
        layer = ctx.cache.cache_layer(layer)  # observers count cache layers (a hybrid's attention layers)
    if ctx is not None and layer is not None and ctx.cache.granularity == "head":
        if attention_mask is not None or ctx.key_mask is not None:
            raise ValueError("a per-head cache builds its own masks; padding masks and key masks are not supported")
        return _head_attention(ctx, layer, query, scale, dropout, segments), None
    shift = ctx.cache.layer_shift(layer) if ctx is not None and layer is not None else 0
    if shift:
        # per-layer tails: the cache moved this layer's new keys to its own positions; the queries follow
        query = ctx.cache.shift_rotate(query, shift)
    watchers = ctx.observers_for(layer) if ctx is not None and ctx.subscriptions else []
    if watchers and layer is None:
        raise RuntimeError("attention module has no layer_idx; cannot route observations")
    mask = None
    if ctx is not None and ctx.key_mask is not None:
        if layer is None:
            raise RuntimeError("attention module has no layer_idx; cannot apply a key mask")
        mask = ctx.key_mask(layer, key.shape[-2])
    probs = None
    if mask is not None:
        if attention_mask is not None:
            raise ValueError("hermes attention builds its own masks; padding masks are not supported")
        out = _attend_key_mask(query, key, value, mask, scale)
    elif watchers and ctx.phase == "probe" and attention_mask is None:
        # A probe forward exists only to be observed and observers read every row of it,
        # so the probabilities are computed once (eager math) and give the output too.
        probs = attention_rows(query[0], key[0], range(query.shape[-2]), scale, segments)  # (Hq, q, S)
        out = _weighted_values(probs, value[0]).to(query.dtype)
    else:
        out = _attend(query, key, value, attention_mask, scale, dropout, segments)
    if watchers:
        notify(ctx, layer, watchers, query, key, value, scale, probs, mask)
    return out, None


def _head_attention(ctx: StreamingContext, layer: int, query: torch.Tensor, scale: float, dropout: float,
                    segments) -> torch.Tensor:
    """(1, Hq, q, D) queries against a per-head cache layer -> (1, q, Hq, D).

    Each group of ``Hq / Hkv`` query heads attends to its own KV head's rows (no padding, no mask beyond the
    right-aligned causal one); with per-layer tails each group is first rotated by its head's shift.
    """
    cache = ctx.cache
    keys, values = cache.attended(layer)
    hkv = len(keys)
    group = query.shape[1] // hkv
    rotation = cache.head_rotation(layer, query.device)
    if rotation is not None:  # each group follows its head's tail shift (the rotation its new keys took)
        cos, sin = rotation
        query = cache.rotary.apply(query, cos.repeat_interleave(group, 0), sin.repeat_interleave(group, 0))
    if len({k.shape[0] for k in keys}) == 1:
        # every head holds as many rows (an equal per-head budget, mostly): one kernel call over the stacked
        # heads beats one per head (1.6x on a 36-token prefill here); the stack is a transient copy
        out = _attend(query, torch.stack(keys)[None], torch.stack(values)[None], None, scale, dropout, segments)
    else:
        out = torch.cat([_attend(query[:, h * group : (h + 1) * group], k[None, None], v[None, None], None, scale,
                                 dropout, segments) for h, (k, v) in enumerate(zip(keys, values))], dim=2)
    watchers = ctx.observers_for(layer) if ctx.subscriptions else []
    if watchers:
        committed = cache.head_lengths(layer)
        key, valid = padded_heads(keys, committed)
        base = right_aligned_causal_mask(query.shape[-2], key.shape[-2], device=key.device, segments=segments)
        notify(ctx, layer, watchers, query, key, padded_heads(values, committed)[0], scale,
               mask=valid.repeat_interleave(group, 0)[:, None, :] & base, heads=tuple(committed))
    return out


def _pad_head_probs(probs: Sequence[torch.Tensor], committed: Sequence[int], width: int,
                    rows: tuple[int, ...]) -> torch.Tensor:
    """Per-head (G, q, c_h + n) probabilities as one (Hq, r, width) tensor laid out as :func:`padded_heads` lays
    the keys (cached columns first, the n new ones last), zero on padding."""
    index = torch.as_tensor(rows, device=probs[0].device)
    group = probs[0].shape[0]
    out = probs[0].new_zeros(group * len(probs), len(rows), width)
    for h, (p, c) in enumerate(zip(probs, committed)):
        p = p.index_select(1, index)
        n = p.shape[-1] - c
        out[h * group : (h + 1) * group, :, :c] = p[..., :c]
        out[h * group : (h + 1) * group, :, width - n :] = p[..., c:]
    return out


def padded_heads(rows: Sequence[torch.Tensor], committed: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-head (c_h + n, D) rows, the n new ones last in every head, as one padded (1, Hkv, P, D) tensor.

    Head ``h``'s cached rows fill columns ``[0, c_h)`` and the new rows the last n, P = max c_h + n, so the
    right-aligned causal mask still applies to the new columns; for observers only (attention never pads).

    Returns:
        the padded rows, and the (Hkv, P) bool mask of real (not padding) columns.
    """
    n = rows[0].shape[0] - committed[0]
    width = max(committed) + n
    out = rows[0].new_zeros(len(rows), width, rows[0].shape[-1])
    cols = torch.arange(width, device=out.device)
    valid = torch.zeros(len(rows), width, dtype=torch.bool, device=out.device)
    for h, (r, c) in enumerate(zip(rows, committed)):
        out[h, :c] = r[:c]
        out[h, width - n :] = r[c:]
        valid[h] = (cols < c) | (cols >= width - n)
    return out[None], valid


def _attend_key_mask(query, key, value, mask: torch.Tensor, scaling: float) -> torch.Tensor:
    """(1, Hq, q, D) x (1, Hkv, S, D) under a (q, S) or (Hq, q, S) key mask -> (1, q, Hq, D)."""
    q, s = query.shape[-2], key.shape[-2]
    if mask.shape[-2:] != (q, s) or mask.ndim not in (2, 3) or (mask.ndim == 3 and mask.shape[0] != query.shape[1]):
        raise ValueError(f"a key mask must be ({q}, {s}) or ({query.shape[1]}, {q}, {s}), got {tuple(mask.shape)}")
    out = F.scaled_dot_product_attention(
        query, key, value, attn_mask=mask.to(query.device)[None] if mask.ndim == 3 else mask.to(query.device),
        scale=scaling, enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2).contiguous()


def notify(
    ctx: StreamingContext,
    layer: int,
    watchers: Sequence[AttentionObserver],
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor | None,
    scale: float,
    probs: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    heads: tuple[int, ...] | None = None,
    head_probs: list[torch.Tensor] | None = None,
) -> None:
    """Hand one layer's attention inputs to ``watchers`` as an :class:`AttentionEvent`.

    Args:
        query: (1, Hq, q, D); key, value: (1, Hkv, S, D), the q new keys last.
        probs: (Hq, q, S) probabilities of every query row, when the caller already has them.
        mask: the forward's key mask at this layer, if it has one (:data:`KeyMask`).
        heads: a per-head cache's committed rows per KV head (``key`` is then padded; see :class:`AttentionEvent`).
        head_probs: a per-head cache's per-head probabilities, when the caller has them (see :class:`AttentionEvent`).
    """
    event = AttentionEvent(
        layer=layer,
        phase=ctx.phase,
        query=query.detach(),
        key=key.detach(),
        value=None if value is None else value.detach(),
        cache=ctx.cache,
        scaling=scale,
        tag=ctx.tag,
        segments=ctx.segments,
        mask=mask,
        heads=heads,
        head_probs=head_probs,
    )
    if probs is not None:
        event._memo[tuple(range(query.shape[-2]))] = probs
    for observer in watchers:
        observer.observe(event)


AttentionInterface.register(ATTENTION_NAME, hermes_attention)
