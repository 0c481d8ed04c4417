"""Ad-hoc attention rows from a plain HF model, traced with nnsight.

For quick looks at a model outside a streaming session: nnsight's ``.source``
exposes the arguments each decoder layer passes to its attention function
(query and key after RoPE), and :func:`hermes_policy.attention.attention_rows`
turns the chosen query rows into probabilities, exactly as the streaming
probes do. Nothing L x L is materialised unless every row is asked for.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from hermes_policy.attention import attention_rows


def decoder_layers(model: nn.Module) -> nn.ModuleList:
    """The decoder layer list of a causal LM or a VLM (``model.model[.language_model].layers``)."""
    inner = model.model
    inner = getattr(inner, "language_model", inner)
    return inner.layers


def _attention_call_label(source) -> str:
    """nnsight's name for the line that calls the attention function inside an attention module."""
    for line in str(source).splitlines():
        label, _, code = line.partition("->")
        if "= attention_interface(" in code:
            return label.strip()
    raise ValueError("this attention module calls no attention_interface; it predates transformers' AttentionInterface")


def trace_attention_rows(
    model: nn.Module,
    inputs: dict[str, torch.Tensor],
    rows: Sequence[int] | None = None,
    layers: Sequence[int] | None = None,
) -> dict[int, torch.Tensor]:
    """Attention probabilities of chosen query rows, per layer, from one nnsight trace.

    Args:
        model: a plain HF model (e.g. ``LlamaForCausalLM``, a ``*ForConditionalGeneration``).
        inputs: forward kwargs for one unpadded sequence (``input_ids`` or ``inputs_embeds``, ...).
        rows: query positions to observe (negative allowed); None = all.
        layers: layer indices; None = all.

    Returns:
        layer -> (H, r, S) float32 probabilities.
    """
    from nnsight import NNsight

    traced = NNsight(model)
    wrapped_layers = decoder_layers(traced)
    chosen = list(range(len(decoder_layers(model)))) if layers is None else list(layers)
    labels = {i: _attention_call_label(wrapped_layers[i].self_attn.source) for i in chosen}
    saved = {}
    with torch.no_grad(), traced.trace(**inputs):
        for i in chosen:
            call = getattr(wrapped_layers[i].self_attn.source, labels[i])
            args, kwargs = call.inputs
            saved[i] = (args[1].save(), args[2].save(), kwargs.get("scaling"))
    out = {}
    for i, (query, key, scaling) in saved.items():
        q = query.shape[-2]
        idx = range(q) if rows is None else [r % q for r in rows]
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        out[i] = attention_rows(query[0], key[0], list(idx), scale)
    return out
