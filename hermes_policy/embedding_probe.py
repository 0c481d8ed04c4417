"""Pseudo-queries read off the token embeddings: HERMES's fast scoring path, through the same seam.

HERMES's release has two ways to get a pseudo-query's attention over the cache.
With eager attention it runs the prompt through the model and reads the
attention weights (our ``pseudo_query="forward"``). With sdpa or flash
attention, its default, it runs no forward at all: at every layer it projects
the prompt's *input embeddings*, after that layer's input norm, to queries and
keys, rotates them to the prompt's positions and takes softmax attention against
the layer's cached keys. No attention output, MLP or residual stream is
computed, so a probe costs two small projections per layer instead of a whole
forward (on CPU, as much as ingesting a chunk). That is ``pseudo_query="embedding"``.

The rows are handed to observers as ordinary ``probe`` events, through
:func:`hermes_policy.attention.notify`, so HERMES's scorer and the probes read
them exactly as they read a forward's. A layer no observer wants is not computed.

Within a prompt the release builds no mask on that path, so every prompt token sees the whole prompt
(``causal=False``, what HERMES uses); ``causal=True`` masks later tokens as a forward would. Packed
prompts never see each other either way. With per-layer tails
(:attr:`~hermes_policy.cache.CompactCache.layer_tails`) each layer rotates the prompt to its own
positions.

Queries and keys are made as the layer's own attention makes them: Qwen3's
per-head ``q_norm`` / ``k_norm`` are applied, Qwen3.5's gated query projection
is split from its gate, and only the rotary dimensions are rotated. A hybrid's
linear-attention layers have no attention and are not probed.
"""

from __future__ import annotations

import weakref
from typing import Literal

import torch
from torch import nn

from hermes_policy.attention import (
    StreamingContext,
    attention_rows,
    notify,
    padded_heads,
    right_aligned_causal_mask,
)
from hermes_policy.cache import CompactCache
from hermes_policy.errors import PolicyError
from hermes_policy.models.base import EncodedChunk, ModelAdapter
from hermes_policy.rope import RotarySpec

PseudoQueryDepth = Literal["forward", "embedding"]
#: how a pseudo-query's attention is obtained: a forward of the prompt, or its embeddings only
PSEUDO_QUERY_DEPTHS: tuple[str, ...] = ("forward", "embedding")


def decoder_layers(adapter: ModelAdapter) -> list[nn.Module]:
    """The decoder layers with attention, one per cache layer, each with ``input_layernorm`` and
    ``self_attn.{q,k}_proj`` (Llama / Qwen2 / Qwen3 layout)."""
    every = list(getattr(adapter.text_model, "layers", ()))
    layers = [every[i] for i in adapter.kv_layers] if len(every) == adapter.num_model_layers else every
    for layer in layers:
        attn = getattr(layer, "self_attn", None)
        if not hasattr(layer, "input_layernorm") or not all(hasattr(attn, n) for n in ("q_proj", "k_proj")):
            raise PolicyError(
                f"pseudo_query='embedding' needs Llama/Qwen2-style decoder layers (input_layernorm, "
                f"self_attn.q_proj/k_proj); {adapter.name} has {type(layer).__name__}; "
                f"use pseudo_query='forward'"
            )
    return layers


def _execution_device(module: nn.Module) -> torch.device:
    """Where ``module`` computes. accelerate's offload hooks sit on each module that holds weights, so
    calling it directly still loads them; its weights are on the meta device until then."""
    device = module.weight.device
    if device.type == "meta":
        device = torch.device(getattr(getattr(module, "_hf_hook", None), "execution_device", None) or "cpu")
    return device


def _project(attn: nn.Module, proj: nn.Module, norm_name: str, x: torch.Tensor, head_dim: int) -> torch.Tensor:
    """(1, n, hidden) -> (1, H, n, D) before RoPE, as the attention module computes it."""
    out = proj(x)
    n_heads = out.shape[-1] // head_dim
    if proj is attn.q_proj and out.shape[-1] == 2 * getattr(attn.config, "num_attention_heads", -1) * head_dim:
        # Qwen3.5's gated attention: each head's query is followed by its output gate
        out = out.view(1, x.shape[1], n_heads // 2, 2 * head_dim)[..., :head_dim]
    else:
        out = out.view(1, x.shape[1], n_heads, head_dim)
    norm = getattr(attn, norm_name, None)
    if norm is not None:
        out = norm(out)
    return out.transpose(1, 2)


class _Projections:
    """A model's projected prompts: per prompt embedding (the last few seen), per layer, its queries and keys
    before RoPE. HERMES asks the same prompts after every chunk, and only their positions move, so the
    norm and the two projections are made once per prompt; the weights' version counters are part of the key,
    so an in-place change of a layer's weights makes it project again."""

    SIZE = 4

    def __init__(self) -> None:
        self.entries: list[tuple[torch.Tensor, dict[int, tuple]]] = []

    def of(self, embeds: torch.Tensor) -> dict[int, tuple]:
        for seen, layers in self.entries:
            if seen.shape == embeds.shape and seen.dtype == embeds.dtype and seen.device == embeds.device \
                    and torch.equal(seen, embeds):
                return layers
        layers: dict[int, tuple] = {}
        self.entries = [(embeds.detach().clone(), layers), *self.entries[: self.SIZE - 1]]
        return layers


_PROJECTIONS: weakref.WeakKeyDictionary[nn.Module, _Projections] = weakref.WeakKeyDictionary()


def _versions(layer: nn.Module) -> tuple[int, ...]:
    """Where the weights a prompt's projection reads live (norm, q/k projections and norms), and their version
    counters: a weight replaced or changed in place gives another key."""
    attn = layer.self_attn
    parts = [layer.input_layernorm, attn.q_proj, attn.k_proj, getattr(attn, "q_norm", None),
             getattr(attn, "k_norm", None)]
    return tuple((t.data_ptr(), t._version) for m in parts if m is not None for t in m.parameters(recurse=False))


def segment_mask(n: int, segments, device=None) -> torch.Tensor:
    """(n, n) bool: prompt token i may see prompt token j when they are in the same segment (no causal order)."""
    seg = torch.zeros(n, dtype=torch.long, device=device)
    for i, segment in enumerate(segments or ()):
        seg[segment.start : segment.stop] = i + 1
    return seg[:, None] == seg[None, :]


@torch.no_grad()
def embedding_probe(
    adapter: ModelAdapter, cache: CompactCache, packed: EncodedChunk, ctx: StreamingContext, causal: bool = True
) -> None:
    """Notify ``ctx``'s observers of each layer's embedding-level attention of ``packed`` over ``cache``.

    Must run inside ``cache.scratch(packed.positions, packed.meta)`` so that events'
    key positions and metadata include the prompt's own rows (nothing is written).
    Events carry the probabilities of every prompt row, and no values.

    Args:
        packed: the pseudo-queries, (n, hidden) embeddings at (A, n) positions.
        causal: mask a prompt's later tokens from its earlier ones (False: a prompt's tokens see all of it).
    """
    head_dim, n = adapter.head_dim, packed.embeds.shape[0]
    # shared across layers: rotations (per device and tail shift), and which prompt tokens see which
    # (segments never see each other)
    rotation: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}
    masks: dict[torch.device, torch.Tensor] = {}
    memo = _PROJECTIONS.setdefault(adapter.text_model, _Projections()).of(packed.embeds)
    for index, layer in enumerate(decoder_layers(adapter)):
        watchers = ctx.observers_for(index)
        if not watchers:
            continue
        attn = layer.self_attn
        device = _execution_device(attn.q_proj)
        shift = cache.layer_shift(index)
        if (device, shift) not in rotation:
            rotation[device, shift] = adapter.rotary.cos_sin((packed.positions + shift).to(device))
        if device not in masks:
            masks[device] = (right_aligned_causal_mask(n, n, device=device, segments=ctx.segments) if causal
                             else segment_mask(n, ctx.segments, device))
        versions = _versions(layer)
        hit = memo.get(index)
        if hit is None or hit[0] != versions or hit[1].device != device:
            x = layer.input_layernorm(packed.embeds[None].to(device))  # (1, n, hidden)
            hit = memo[index] = (versions, _project(attn, attn.q_proj, "q_norm", x, head_dim),
                                 _project(attn, attn.k_proj, "k_norm", x, head_dim))
        query, own_keys = hit[1], hit[2]  # before RoPE
        scale = getattr(attn, "scaling", head_dim**-0.5)
        if cache.granularity == "head":
            _notify_heads(adapter, cache, index, ctx, watchers, query, own_keys, packed, masks[device], scale)
            continue
        cos, sin = rotation[device, shift]
        query, own_keys = RotarySpec.apply(query, cos, sin), RotarySpec.apply(own_keys, cos, sin)
        cached = cache.keys(index)
        key = torch.cat([cached, own_keys.to(cached.device, cached.dtype)], dim=2)
        query = query.to(key.device)
        mask = masks[device].to(key.device)
        probs = attention_rows(query[0], key[0], range(n), scale, ctx.segments, mask=mask)  # (Hq, n, S)
        notify(ctx, index, watchers, query, key, None, scale, probs)


def _notify_heads(adapter: ModelAdapter, cache, layer: int, ctx: StreamingContext, watchers, query: torch.Tensor,
                  own_keys: torch.Tensor, packed: EncodedChunk, prompt_mask: torch.Tensor, scale: float) -> None:
    """:func:`embedding_probe` on a per-head cache: each KV head's group of queries, at that head's own
    positions (tails move heads by different amounts), against the head's own keys; one padded event.

    Each group's softmax runs over its head's own keys (no padding, no mask beyond the prompt's); the event
    carries them per head (``head_probs``) and pads them only for an observer that reads ``attention()``.

    Args:
        query: (1, Hq, n, D), own_keys: (1, Hkv, n, D), both before RoPE; prompt_mask: (n, n) bool.
    """
    hkv = own_keys.shape[1]
    group = query.shape[1] // hkv
    n = query.shape[-2]
    rotations: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    committed = cache.head_lengths(layer)
    shifts = cache.head_shifts(layer)
    for shift in set(shifts):
        rotations[shift] = adapter.rotary.cos_sin((packed.positions + shift).to(query.device))
    if len(set(committed)) == 1:
        # every head holds as many rows: the per-layer computation, with one (n, R) rotation per head
        cos = torch.stack([rotations[s][0] for s in shifts])  # (Hkv, n, R)
        sin = torch.stack([rotations[s][1] for s in shifts])
        cached = torch.stack([cache.head_keys(layer, h) for h in range(hkv)])  # (Hkv, S, D)
        query = RotarySpec.apply(query, cos.repeat_interleave(group, 0), sin.repeat_interleave(group, 0))
        key = torch.cat([cached, RotarySpec.apply(own_keys[0], cos, sin).to(cached.device, cached.dtype)], dim=1)
        query = query.to(key.device)
        probs = attention_rows(query[0], key, range(n), scale, mask=prompt_mask.to(key.device))  # (Hq, n, S)
        notify(ctx, layer, watchers, query, key[None], None, scale, probs=probs, heads=tuple(committed))
        return
    queries, keys, probs = [], [], []
    for h, shift in enumerate(shifts):
        cos, sin = rotations[shift]
        cached = cache.head_keys(layer, h)
        q = RotarySpec.apply(query[:, h * group : (h + 1) * group], cos, sin).to(cached.device)
        k = torch.cat([cached, RotarySpec.apply(own_keys[0, h], cos, sin).to(cached.device, cached.dtype)])
        scores = torch.matmul(q[0], k.T).float() * scale  # (G, n, S_h + n)
        scores[..., -n:].masked_fill_(~prompt_mask.to(scores.device), float("-inf"))
        queries.append(q)
        keys.append(k)
        probs.append(torch.softmax(scores, dim=-1))
    # ragged heads: the rows stay per head; the event pads them only for an observer that asks
    notify(ctx, layer, watchers, torch.cat(queries, dim=1), padded_heads(keys, committed)[0], None, scale,
           heads=tuple(committed), head_probs=probs)
