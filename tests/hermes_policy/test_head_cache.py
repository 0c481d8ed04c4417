"""The per-KV-head cache (granularity head) against its oracles, on every tiny family.

* unlimited budget: per-head storage streams to the logits of one full forward of the stock model;
* equal selections in every head equal today's per-layer cache (logits and bytes);
* ragged eviction (each head its own rows) equals transformers' eager attention over a padded cache whose
  padding is masked per head;
* re-indexed per-head keys equal the model's own RoPE applied at the new positions;
* a question (prefill and decode) rolls back exactly, recurrent state included;
* ``kv_bytes`` is the sum over heads of rows x head_dim x 2 x dtype bytes.
"""

from __future__ import annotations

import pytest
import torch
from conftest import close
from oracles import full_sequence, reference_logits
from test_rope import model_rope
from transformers import AttentionInterface
from transformers.models.llama.modeling_llama import eager_attention_forward

from hermes_policy import SessionConfig, StreamingSession, make_policy
from hermes_policy.errors import PolicyError, SessionError
from hermes_policy.head_cache import HeadCache
from hermes_policy.mc_format import format_question
from hermes_policy.rope import dense_positions

#: per model layer, the (1, Hq, 1, P) additive mask of the padded reference cache's columns
_REFERENCE_MASKS: dict[int, torch.Tensor] = {}


def _eager_ragged(module, query, key, value, attention_mask, **kwargs):
    assert query.shape[-2] == 1, "the reference feeds one token at a time"
    pad = _REFERENCE_MASKS[module.layer_idx]
    mask = torch.zeros(1, query.shape[1], 1, key.shape[-2])
    mask[..., : pad.shape[-1]] = pad
    return eager_attention_forward(module, query, key, value, mask, **kwargs)


AttentionInterface.register("eager-ragged-reference", _eager_ragged)


def head_session(adapter, frames, policy=None, **config) -> StreamingSession:
    session = StreamingSession(adapter, policy or make_policy("full", granularity="head"),
                               SessionConfig(chunk_frames=2, **config))
    session.ingest(frames)
    return session


def evict_each_head(cache: HeadCache, seed: int = 0) -> None:
    """Keep a different random subset of video rows in every (layer, head); non-video rows stay."""
    gen = torch.Generator().manual_seed(seed)
    for layer in range(cache.num_layers):
        keeps = []
        for head in range(cache.num_kv_heads):
            is_video = cache.head_meta(layer, head).is_video
            video = torch.nonzero(is_video).flatten()
            chosen = video[torch.randperm(video.numel(), generator=gen)[: video.numel() // (head + layer + 2)]]
            keeps.append(torch.sort(torch.cat([torch.nonzero(~is_video).flatten(), chosen])).values)
        cache.evict_heads(layer, keeps)


def ragged_reference_logits(session: StreamingSession, question: str) -> torch.Tensor:
    """The stock model with eager attention over each layer's heads padded to one length, padding masked."""
    adapter, cache = session.adapter, session.cache
    group = adapter.num_heads // adapter.num_kv_heads
    plain = cache.recurrent_copy()  # a hybrid's recurrent state, no keys yet
    _REFERENCE_MASKS.clear()
    for layer, model_layer in enumerate(cache.kv_layers):
        lengths = cache.head_lengths(layer)
        width = max(lengths)
        keys = torch.zeros(1, len(lengths), width, adapter.head_dim)
        values = torch.zeros_like(keys)
        pad = torch.zeros(len(lengths), width)
        for h, n in enumerate(lengths):
            keys[0, h, :n], values[0, h, :n] = cache.head_keys(layer, h), cache.head_values(layer, h)
            pad[h, n:] = float("-inf")
        plain.update(keys.to(adapter.model.dtype), values.to(adapter.model.dtype), model_layer)
        _REFERENCE_MASKS[model_layer] = pad.repeat_interleave(group, 0)[None, :, None, :]
    text = session.template.question_text(format_question(question, None))
    chunk = adapter.encode_question(text, session.next_position)
    adapter.set_attention("eager-ragged-reference")
    try:
        with torch.no_grad():
            for t in range(len(chunk)):
                out = adapter.model(inputs_embeds=chunk.embeds[None, t : t + 1],
                                    position_ids=adapter.position_ids(chunk.positions[:, t : t + 1]),
                                    past_key_values=plain, use_cache=True)
    finally:
        adapter.set_attention("hermes")
    return out.logits[0, -1].float()


def test_unlimited_budget_per_head_equals_one_full_forward(tiny, frames):
    for policy in (make_policy("full", granularity="head"), make_policy("hermes-head", budget=10**6)):
        session = head_session(tiny, frames[:10], policy)
        assert isinstance(session.cache, HeadCache)
        streamed = session.question_logits("What is happening?")
        seq, n_question = full_sequence(tiny, session, frames[:10], "What is happening?")
        reference = reference_logits(tiny, seq, "eager")
        assert close(streamed, reference, atol=1e-4), (policy.name, (streamed - reference).abs().max())
        assert session.cache.all_head_lengths() == [[len(seq) - n_question] * tiny.num_kv_heads] * tiny.num_layers


def test_equal_selections_in_every_head_equal_the_per_layer_cache(tiny, frames):
    layered = StreamingSession(tiny, make_policy("full"), SessionConfig(chunk_frames=2))
    layered.ingest(frames)
    heads = head_session(tiny, frames)
    gen = torch.Generator().manual_seed(1)
    for layer in range(tiny.num_layers):
        n = layered.cache.layer_len(layer)
        keep = torch.sort(torch.randperm(n, generator=gen)[: n // 2 + layer]).values
        layered.cache.evict(layer, keep)
        heads.cache.evict_heads(layer, [keep] * tiny.num_kv_heads)
    assert heads.cache.kv_bytes == layered.cache.kv_bytes
    a = layered.question_logits("Which shape came first?")
    b = heads.question_logits("Which shape came first?")
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_ragged_heads_equal_eager_attention_over_masked_padding(tiny, frames):
    session = head_session(tiny, frames[:8])
    evict_each_head(session.cache)
    lengths = session.cache.all_head_lengths()
    assert any(len(set(row)) > 1 for row in lengths) or tiny.num_kv_heads == 1, lengths
    streamed = session.question_logits("Which shape came first?")
    reference = ragged_reference_logits(session, "Which shape came first?")
    assert close(streamed, reference, atol=1e-4), (streamed - reference).abs().max()
    assert session.cache.all_head_lengths() == lengths
    # and the oracle can fail: the same question over the unevicted cache differs
    whole = head_session(tiny, frames[:8]).question_logits("Which shape came first?")
    assert not torch.allclose(whole, reference, atol=1e-4)


def _raw_keys(adapter, session, frames, layer: int) -> torch.Tensor:
    """(Hkv, S, D) keys of cache layer ``layer`` before RoPE, captured from a per-layer full stream."""
    attn = adapter.text_model.layers[adapter.kv_layers[layer]].self_attn
    module = getattr(attn, "k_norm", None) or attn.k_proj
    captured = []

    def hook(_module, _inputs, out):
        captured.append(out.reshape(out.shape[1], adapter.num_kv_heads, adapter.head_dim))

    handle = module.register_forward_hook(hook)
    try:
        reference = StreamingSession(adapter, make_policy("full"), SessionConfig(chunk_frames=2))
        reference.ingest(frames)
    finally:
        handle.remove()
    return torch.cat(captured).transpose(0, 1)


def test_reindexed_head_keys_equal_the_models_rope_at_new_positions(tiny, frames):
    session = head_session(tiny, frames[:8], reindex="off")
    raw = _raw_keys(tiny, session, frames[:8], 0)
    all_positions = [session.cache.head_positions(0, h).clone() for h in range(tiny.num_kv_heads)]
    evict_each_head(session.cache, seed=2)
    cache = session.cache
    kept = []
    for h in range(tiny.num_kv_heads):  # which stream rows each head kept, by their (unique) positions
        row_of = {tuple(p.tolist()): i for i, p in enumerate(all_positions[h].T)}
        kept.append(torch.tensor([row_of[tuple(p.tolist())] for p in cache.head_positions(0, h).T]))
    old = [cache.head_positions(0, h).clone() for h in range(tiny.num_kv_heads)]
    assert any(not torch.equal(p, dense_positions(p)) for p in old), "eviction should leave gaps"
    cache.reindex(0)
    for h in range(tiny.num_kv_heads):
        new = cache.head_positions(0, h)
        assert torch.equal(new, dense_positions(old[h]))
        expected = model_rope(tiny, raw[h][kept[h]][None, None].to(tiny.model.dtype), new)[0, 0]
        assert close(cache.head_keys(0, h), expected, atol=1e-4), (cache.head_keys(0, h) - expected).abs().max()
        stale = model_rope(tiny, raw[h][kept[h]][None, None].to(tiny.model.dtype), old[h])[0, 0]
        assert not close(cache.head_keys(0, h), stale, atol=1e-4)


def _state(cache: HeadCache):
    heads = [(cache.head_keys(i, h).clone(), cache.head_values(i, h).clone(), cache.head_positions(i, h).clone())
             for i in range(cache.num_layers) for h in range(cache.num_kv_heads)]
    recurrent = [{k: v.clone() for k, v in cache.layers[m].recurrent_states.items()} for m in cache.recurrent_layers]
    return heads, recurrent


def test_a_question_rolls_back_exactly(tiny, frames):
    budget = 3 * tiny.tokens_per_frame(64, 64)
    session = head_session(tiny, frames, make_policy("hermes-adakv", budget=budget))
    before, recurrent = _state(session.cache)
    kv, lengths = session.kv_bytes, session.cache.all_head_lengths()
    answer = session.ask("What colour is the circle?", max_new_tokens=4)
    assert answer.kv_bytes == kv == session.kv_bytes
    after, recurrent_after = _state(session.cache)
    assert session.cache.all_head_lengths() == lengths
    for (k, v, p), (k2, v2, p2) in zip(before, after):
        assert torch.equal(k, k2) and torch.equal(v, v2) and torch.equal(p, p2)
    for a, b in zip(recurrent, recurrent_after):
        assert all(torch.equal(a[key], b[key]) for key in a)


@pytest.mark.parametrize("policy", ["hermes-head", "hermes-adakv"])
def test_kv_bytes_are_the_rows_each_head_keeps(tiny, frames, policy):
    budget = 3 * tiny.tokens_per_frame(64, 64)
    session = head_session(tiny, frames, make_policy(policy, budget=budget))
    cache = session.cache
    rows = sum(sum(row) for row in cache.all_head_lengths())
    element = cache.head_keys(0, 0).element_size()
    assert cache.kv_bytes == rows * tiny.head_dim * 2 * element
    assert session.timeline[-1]["head_tokens"] == cache.all_head_lengths()
    video = [cache.video_counts(i) for i in range(cache.num_layers)]
    assert all(sum(row) <= tiny.num_kv_heads * budget for row in video), video


def test_per_layer_accessors_and_probes_refuse_a_per_head_cache(frames):
    from conftest import _tiny

    adapter = _tiny("tiny-qwen2-vl")
    session = head_session(adapter, frames[:4])
    for call in (lambda c: c.keys(0), lambda c: c.positions(0), lambda c: c.meta(0),
                 lambda c: c.evict(0, torch.arange(2)), lambda c: c.crop(-1)):
        with pytest.raises(RuntimeError, match="per-head cache"):
            call(session.cache)
    with pytest.raises(SessionError, match="per-head cache"):
        session.observing(object.__new__(type("P", (), {"observe": lambda self, e: None})))


def test_policies_without_a_per_head_mode_refuse_it():
    with pytest.raises(PolicyError, match="keeps one set of rows per layer.*hermes"):
        make_policy("sink-window", budget=8, granularity="head")
    with pytest.raises(PolicyError, match="granularity must be one of"):
        make_policy("hermes", budget=8, granularity="token")
    with pytest.raises(PolicyError, match="needs granularity 'head'"):
        make_policy("hermes", budget=8, head_budget="adaptive")
    with pytest.raises(PolicyError, match="summary_mode 'slot'"):
        make_policy("hermes-head", budget=8, summary_mode="slot")
