"""Layers holding different tokens: our attention equals HF's eager attention on the kept tokens.

The oracle is the stock HF model running transformers' own
``eager_attention_forward`` over a plain ``DynamicCache`` holding each
layer's kept keys/values. The model-built mask cannot express unequal layer
lengths, so the reference feeds the question one token at a time (a single
query may see every cached key, so it needs no mask; mathematically the same
as prefilling the question at once, which is what the session does).
"""

from __future__ import annotations

import torch
from conftest import close
from transformers import AttentionInterface
from transformers.models.llama.modeling_llama import eager_attention_forward

from hermes_policy import StreamingSession
from hermes_policy.mc_format import format_question
from hermes_policy.policies import keep_rows


def _eager_single_query(module, query, key, value, attention_mask, **kwargs):
    assert query.shape[-2] == 1, "the reference only feeds one token at a time"
    return eager_attention_forward(module, query, key, value, None, **kwargs)


AttentionInterface.register("eager-single-query", _eager_single_query)


def evict_differently(session: StreamingSession, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    cache = session.cache
    for layer in range(cache.num_layers):
        is_video = cache.meta(layer).is_video
        n_video = int(is_video.sum())
        keep = torch.randperm(n_video, generator=gen)[: n_video // (layer + 2)].sort().values
        cache.evict(layer, keep_rows(is_video, keep))


def reference_logits_one_token_at_a_time(session: StreamingSession, question: str) -> torch.Tensor:
    adapter, cache = session.adapter, session.cache
    ref = cache.to_dynamic()
    text = session.template.question_text(format_question(question, None))
    chunk = adapter.encode_question(text, session.next_position)
    adapter.set_attention("eager-single-query")
    try:
        with torch.no_grad():
            for t in range(len(chunk)):
                out = adapter.model(
                    inputs_embeds=chunk.embeds[None, t : t + 1],
                    position_ids=adapter.position_ids(chunk.positions[:, t : t + 1]),
                    past_key_values=ref,
                    use_cache=True,
                )
    finally:
        adapter.set_attention("hermes")
    return out.logits[0, -1].float()


def test_unequal_per_layer_eviction_matches_eager(tiny, frames):
    session = StreamingSession(tiny)
    session.ingest(frames[:8])
    evict_differently(session)
    lengths = session.cache.lengths()
    assert len(set(lengths)) == len(lengths), "every layer should hold a different number of tokens"
    streamed = session.question_logits("Which shape came first?")
    reference = reference_logits_one_token_at_a_time(session, "Which shape came first?")
    assert close(streamed, reference, atol=1e-4), (streamed - reference).abs().max()
    assert session.cache.lengths() == lengths


def test_eviction_frees_memory(tiny, frames):
    session = StreamingSession(tiny)
    session.ingest(frames[:8])
    before = session.kv_bytes
    evict_differently(session)
    after = session.kv_bytes
    rows_before = session.cache.layer_len(0)  # unchanged reference point for the arithmetic below
    per_row = 2 * tiny.num_kv_heads * tiny.head_dim * session.cache.keys(0).element_size()
    assert after == per_row * sum(session.cache.lengths())
    assert after < before
    assert rows_before == session.cache.layer_len(0)
