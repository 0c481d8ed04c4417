"""Qwen3-VL and Qwen3.5 against the stock transformers models: positions, DeepStack, timestamps as frame units,
the hybrid's recurrent state.

The oracle here is stronger than the shared one: the stock model is fed *token ids and pixels*, as its own
processor would lay out the stream, so its own vision pass, its own DeepStack injection and its own
``get_rope_index`` (interleaved M-RoPE, timestamps between frame groups) produce the reference.
"""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny, assert_whole_units, close
from oracles import full_sequence, qwen3_prompt, qwen3_reference_logits

from hermes_policy import SessionConfig, StreamingSession, make_policy
from hermes_policy.attention import ATTENTION_NAME
from hermes_policy.embedding_probe import _project, decoder_layers
from hermes_policy.models.base import EncodedChunk
from hermes_policy.rope import RotarySpec

QWEN3 = ["tiny-qwen3-vl", "tiny-qwen3.5"]
QUESTION = "What is happening?"


@pytest.mark.parametrize("name", QWEN3)
@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_streaming_equals_the_stock_model_fed_ids_and_pixels(name, implementation, frames):
    adapter = _tiny(name)
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=4))
    session.ingest(frames[:10])
    streamed = session.question_logits(QUESTION)
    prompt = qwen3_prompt(adapter, session, frames[:10], QUESTION)
    reference, positions = qwen3_reference_logits(adapter, prompt, implementation)
    ours, _ = full_sequence(adapter, session, frames[:10], QUESTION)
    assert torch.equal(ours.positions, positions), "positions differ from the model's own get_rope_index"
    assert close(streamed, reference, atol=1e-4), (streamed - reference).abs().max()


def test_deepstack_is_what_makes_them_equal(frames):
    """Without its DeepStack features a chunk would not match the stock model: the test above can fail."""
    adapter = _tiny("tiny-qwen3-vl")
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=4))
    original = adapter.forward_kwargs
    adapter.forward_kwargs = lambda chunk: {}
    try:
        session.ingest(frames[:8])
        streamed = session.question_logits(QUESTION)
    finally:
        adapter.forward_kwargs = original
    reference, _ = qwen3_reference_logits(adapter, qwen3_prompt(adapter, session, frames[:8], QUESTION), "eager")
    assert not close(streamed, reference, atol=1e-3)


def test_timestamps_are_text_before_each_frame_group(frames):
    adapter = _tiny("tiny-qwen3-vl")
    chunk = adapter.encode_frames(frames[:4], 0)
    # two groups, each: "<t seconds><|vision_start|>", 4 patches, <|vision_end|>; every row tagged with the group
    sizes = []
    for g, seconds in enumerate(adapter.group_times(frames[:4])):
        assert seconds == (frames[2 * g].time + frames[2 * g + 1].time) / 2
        opener = adapter.tokenizer(f"<{seconds:.1f} seconds><|vision_start|>", add_special_tokens=False).input_ids
        sizes.append(len(opener) + 4 + 1)
    assert len(chunk) == sum(sizes)
    assert chunk.meta.frame.tolist() == [frames[0].index] * sizes[0] + [frames[2].index] * sizes[1]
    assert chunk.meta.patch.tolist()[: sizes[0]] == [-1] * (sizes[0] - 5) + [0, 1, 2, 3] + [-1]
    # tokens_per_frame counts a group an hour in: never fewer than an early group's
    assert adapter.tokens_per_frame(64, 64) >= max(sizes)


@pytest.mark.parametrize("name", QWEN3)
@pytest.mark.parametrize("policy", ["sink-window", "hermes", "snapkv"])
def test_a_timestamp_is_never_kept_without_its_frame(name, policy, frames):
    adapter = _tiny(name)
    unit = adapter.tokens_per_frame(64, 64)
    session = StreamingSession(adapter, make_policy(policy, budget=3 * unit + 2), SessionConfig(chunk_frames=2))
    session.ingest(frames)
    for layer in range(adapter.num_layers):
        meta = session.cache.meta(layer)
        assert int(meta.is_video.sum()) <= 3 * unit + 2
        assert_whole_units(meta, adapter, frames)


def test_hybrid_cache_holds_attention_layers_only_and_rolls_the_state_back(frames):
    adapter = _tiny("tiny-qwen3.5")
    assert adapter.kv_layers == (1, 3) and adapter.num_layers == 2 and adapter.num_model_layers == 4
    session = StreamingSession(adapter, make_policy("hermes", budget=3 * adapter.tokens_per_frame(64, 64)),
                               SessionConfig(chunk_frames=2))
    session.ingest(frames[:8])
    cache = session.cache
    assert cache.recurrent_layers == (0, 2) and cache.recurrent_bytes > 0
    before = [(cache.keys(i).clone(), cache.values(i).clone(), cache.positions(i).clone()) for i in range(2)]
    states = [{k: v.clone() for k, v in cache.layers[m].recurrent_states.items()} for m in cache.recurrent_layers]
    convs = [{k: v.clone() for k, v in cache.layers[m].conv_states.items()} for m in cache.recurrent_layers]
    logits = session.question_logits(QUESTION)
    session.ask("What colour is the circle?", max_new_tokens=4)
    for i, (k, v, p) in enumerate(before):
        assert torch.equal(cache.keys(i), k) and torch.equal(cache.values(i), v) and torch.equal(cache.positions(i), p)
    for m, state, conv in zip(cache.recurrent_layers, states, convs):
        assert all(torch.equal(cache.layers[m].recurrent_states[j], state[j]) for j in state)
        assert all(torch.equal(cache.layers[m].conv_states[j], conv[j]) for j in conv)
    # so asking again gives the same answer to the last bit
    assert torch.equal(session.question_logits(QUESTION), logits)


def test_a_failed_chunk_restores_the_recurrent_state(frames, monkeypatch):
    adapter = _tiny("tiny-qwen3.5")
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=2))
    session.ingest(frames[:4])
    cache = session.cache
    state = cache.layers[0].recurrent_states[0].clone()
    logits = session.question_logits(QUESTION)
    layer = adapter.text_model.layers[3]
    original = layer.forward

    def fail(*args, **kwargs):  # the last layer breaks after the linear layers below it updated their state
        raise RuntimeError("device lost")

    monkeypatch.setattr(layer, "forward", fail)
    with pytest.raises(RuntimeError, match="device lost"):
        session.ingest(frames[4:6])
    monkeypatch.setattr(layer, "forward", original)
    assert torch.equal(cache.layers[0].recurrent_states[0], state)
    assert torch.equal(session.question_logits(QUESTION), logits)


@pytest.mark.parametrize("name", [*QWEN3, "tiny-qwen2-vl", "tiny-embedded"])
def test_embedding_probe_projects_as_the_attention_module_does(name, frames):
    """q and k from :func:`_project` equal what each layer's own attention computes (q/k norms, Qwen3.5's
    gated query, partial rotary), captured at the registered attention function."""
    adapter = _tiny(name)
    layers = decoder_layers(adapter)
    assert len(layers) == adapter.num_layers
    chunk = adapter.encode_text("Describe the scene.", 3)
    seen = {}

    def capture(module, query, key, value, mask, **kwargs):
        seen["q"], seen["k"] = query, key
        return torch.zeros(query.shape[0], query.shape[2], query.shape[1], query.shape[3]), None

    from transformers import AttentionInterface

    AttentionInterface.register("capture-qk", capture)
    adapter.set_attention("capture-qk")
    try:
        for layer in layers:
            x = layer.input_layernorm(chunk.embeds[None])
            pos = adapter.text_model.rotary_emb(x, adapter.position_ids(chunk.positions))
            with torch.no_grad():
                layer.self_attn(hidden_states=x, position_embeddings=pos, attention_mask=None)
            cos, sin = adapter.rotary.cos_sin(chunk.positions)
            head_dim = adapter.head_dim
            q = RotarySpec.apply(_project(layer.self_attn, layer.self_attn.q_proj, "q_norm", x, head_dim), cos, sin)
            k = RotarySpec.apply(_project(layer.self_attn, layer.self_attn.k_proj, "k_norm", x, head_dim), cos, sin)
            assert torch.allclose(q, seen["q"], atol=1e-5) and torch.allclose(k, seen["k"], atol=1e-5)
    finally:
        adapter.set_attention(ATTENTION_NAME)


def test_cloze_options_get_separate_forwards_on_a_hybrid(frames):
    """A recurrent layer cannot be masked per segment: each option is scored as if asked alone."""
    adapter = _tiny("tiny-qwen3.5")
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=2))
    session.ingest(frames[:4])
    assert not session.packable
    both, _ = session.option_logprobs(QUESTION, ["red", "blue"])
    alone = [session.option_logprobs(QUESTION, [o])[0][0] for o in ("red", "blue")]
    assert torch.allclose(both, torch.stack(alone), atol=1e-5)


def test_deepstack_joins_with_text_chunks():
    a = EncodedChunk(torch.ones(2, 4), torch.zeros(3, 2, dtype=torch.long), _meta(2), torch.ones(2, 2, 4))
    from hermes_policy.tokens import TokenMeta

    b = EncodedChunk(torch.ones(3, 4), torch.zeros(3, 3, dtype=torch.long), TokenMeta.text(3))
    joined = EncodedChunk.cat([b, a])
    assert joined.deepstack.shape == (2, 5, 4) and joined.deepstack[:, :3].abs().sum() == 0
    assert EncodedChunk.cat([b, b]).deepstack is None


def _meta(n):
    from hermes_policy.tokens import TokenMeta

    return TokenMeta.frame_tokens(0, 0.0, 0, n)
