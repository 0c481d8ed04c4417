"""Per-KV-head HERMES: tiers from a spec's per-query-head tiers, the adaptive split, per-head pruning."""

from __future__ import annotations

import torch
from conftest import _tiny
from hypothesis import given, settings
from hypothesis import strategies as st

from hermes_policy import SessionConfig, StreamingSession, make_policy
from hermes_policy.policies.hermes import SUMMARY_FRAME, fixed_layers
from hermes_policy.policies.hermes_heads import kv_head_tier, split_budget
from hermes_policy.video import SyntheticVideo


def test_a_kv_head_takes_its_query_groups_majority_tier():
    assert kv_head_tier(["sensory", "sensory", "working"], "long-term") == "sensory"
    assert kv_head_tier(["sensory", "long-term"], "long-term") == "long-term"  # a tie: the layer's tier
    assert kv_head_tier(["sensory", "long-term"], "working") == "long-term"  # a tie without it: the deepest


@settings(max_examples=60, deadline=None, derandomize=True)
@given(sizes=st.lists(st.integers(0, 40), min_size=1, max_size=6), total=st.integers(0, 120),
       floor_share=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_the_adaptive_split_keeps_the_total_and_the_floor(sizes, total, floor_share, seed):
    gen = torch.Generator().manual_seed(seed)
    scores = [torch.rand(n, generator=gen) for n in sizes]
    floor = int(floor_share * total / len(sizes))
    counts = split_budget(scores, total, floor)
    assert sum(counts) == min(total, sum(sizes))
    assert all(min(floor, n) <= c <= n for c, n in zip(counts, sizes))


def test_a_concentrated_head_gives_budget_to_a_spread_one():
    concentrated = torch.cat([torch.ones(4), torch.zeros(36)])
    spread = torch.full((40,), 0.5)
    counts = split_budget([concentrated, spread], 40, floor=4)
    assert counts[0] < 20 < counts[1], counts
    assert split_budget([spread, spread.clone()], 40, floor=4) == [20, 20]


def _stream(policy, frames=12):
    adapter = _tiny("tiny-qwen2-vl")
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=2))
    session.ingest(SyntheticVideo(seed=3, frames=frames, width=64, height=64).frames())
    return adapter, session


def test_spec_head_tiers_prune_each_head_by_its_own_rule():
    adapter = _tiny("tiny-qwen2-vl")
    tpf = adapter.tokens_per_frame(64, 64)
    layers = fixed_layers(adapter.num_layers)
    group = adapter.num_heads // adapter.num_kv_heads
    for layer in layers:  # KV head 0 sensory (pure recency), the others long-term (pure attention, summaries)
        layer["tier"], layer["alpha"], layer["k"] = "long-term", 0.0, None
        layer["heads"] = ["sensory"] * group + ["long-term"] * (adapter.num_heads - group)
    no_smoothing = {"sensory": 0.0, "working": 0.0, "long-term": 0.0}  # each head by its own rule alone
    _, session = _stream(make_policy("hermes-head", budget=3 * tpf, layers=layers, gamma=no_smoothing))
    cache = session.cache
    for layer in range(cache.num_layers):
        recent = cache.head_meta(layer, 0)
        assert not bool((recent.frame == SUMMARY_FRAME).any()), "a sensory head folds nothing"
        for head in range(1, cache.num_kv_heads):
            deep = cache.head_meta(layer, head)
            assert bool((deep.frame == SUMMARY_FRAME).any()), "long-term heads fold what they drop"
        # the recency head holds exactly the newest three frame units (Qwen2-VL fuses frames in pairs)
        assert sorted(set(recent.frame[recent.is_video].tolist())) == [6, 8, 10]


def test_per_head_hermes_with_one_rule_for_every_head_equals_per_layer_hermes():
    """All-sensory tiers score by recency alone, the same in every head: per-head pruning keeps what the
    per-layer policy keeps, so the answer is the same and the bytes too."""
    adapter = _tiny("tiny-qwen2-vl")
    tpf = adapter.tokens_per_frame(64, 64)
    layers = [{"layer": i, "tier": "sensory", "alpha": 1.0, "k": 20.0, "budget_share": 1 / adapter.num_layers}
              for i in range(adapter.num_layers)]
    _, heads = _stream(make_policy("hermes-head", budget=3 * tpf, layers=layers))
    _, layered = _stream(make_policy("hermes", budget=3 * tpf, layers=layers))
    assert heads.cache.kv_bytes == layered.cache.kv_bytes
    assert heads.cache.all_head_lengths() == [[n] * adapter.num_kv_heads for n in layered.cache.lengths()]
    a = heads.question_logits("What colour is the circle?")
    b = layered.question_logits("What colour is the circle?")
    assert torch.allclose(a, b, atol=1e-5), (a - b).abs().max()


def test_ragged_head_probabilities_pad_like_their_keys():
    from hermes_policy.attention import _pad_head_probs, padded_heads

    gen = torch.Generator().manual_seed(0)
    committed, n, group = [3, 5], 2, 2
    keys = [torch.randn(c + n, 4, generator=gen) for c in committed]
    probs = [torch.softmax(torch.randn(group, n, c + n, generator=gen), -1) for c in committed]
    key, valid = padded_heads(keys, committed)
    padded = _pad_head_probs(probs, committed, key.shape[-2], (0, 1))
    assert padded.shape == (4, 2, 7)
    for h in range(len(committed)):
        rows = padded[h * group : (h + 1) * group]
        assert torch.equal(rows[..., valid[h]], probs[h])  # the real columns, in order
        assert not bool(rows[..., ~valid[h]].any())  # zero on padding
        assert torch.equal(key[0, h, valid[h]], keys[h])
    assert torch.equal(_pad_head_probs(probs, committed, 7, (1,)), padded[:, 1:])
