"""The hermes policy: tiers, scores, per-layer top-k in time order, the summary slot."""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny, assert_whole_units, has_frame_text

from hermes_policy import PolicyError, SessionConfig, StreamingSession, make_policy
from hermes_policy.policies import PolicySpec
from hermes_policy.policies.hermes import SUMMARY_FRAME, fixed_layers, minmax, resample


def per_frame(adapter, frames) -> int:
    h, w = frames[0].image.shape[:2]
    return adapter.tokens_per_frame(h, w)


@pytest.mark.parametrize("n,sensory,longterm", [(28, [0, 1], list(range(19, 28))), (30, [0, 1, 2], list(range(21, 30))),
                                                 (24, [0, 1], list(range(16, 24)))])
def test_fixed_split_boundaries(n, sensory, longterm):
    """The release's integer bounds int(0.1 L) and int(0.7 L), and p = (i - s) / (l - s) in the working band
    (it never reaches 1). The whole split is held to the release's own values in tests/conformance."""
    layers = fixed_layers(n)
    assert [x["layer"] for x in layers if x["tier"] == "sensory"] == sensory
    assert [x["layer"] for x in layers if x["tier"] == "long-term"] == longterm
    working = [x for x in layers if x["tier"] == "working"]
    last = (len(working) - 1) / len(working)
    assert working[0]["alpha"] == pytest.approx(1.0) and working[0]["k"] == pytest.approx(20.0)
    assert working[-1]["alpha"] == pytest.approx(1 - 0.9 * last) and working[-1]["k"] == pytest.approx(20 - 19.5 * last)
    q = fixed_layers(n, "qwen2.5-vl")
    qw = [x for x in q if x["tier"] == "working"]
    assert qw[0]["alpha"] == pytest.approx(0.75) and qw[-1]["k"] == pytest.approx(20 - 12 * last)


def test_unlimited_budget_equals_full(tiny, frames):
    """With a budget above the stream length nothing is evicted: same logits as the full cache."""
    full = StreamingSession(tiny)
    roomy = StreamingSession(tiny, make_policy("hermes", budget=10_000))
    for s in (full, roomy):
        s.ingest(frames[:8])
    assert torch.equal(full.question_logits("What?"), roomy.question_logits("What?"))


def test_budget_is_held_per_layer_in_time_order(tiny, frames):
    budget = 3 * per_frame(tiny, frames)
    session = StreamingSession(tiny, make_policy("hermes", budget=budget), SessionConfig(chunk_frames=2))
    session.ingest(frames)
    tiers = fixed_layers(tiny.num_layers)
    units = has_frame_text(tiny)
    for layer in range(tiny.num_layers):
        meta = session.cache.meta(layer)
        n_summary = int((meta.frame == SUMMARY_FRAME).sum())
        candidates = int(meta.is_video.sum()) + n_summary  # a long-term layer's summary rows count against it
        if units:  # a frame's timestamp goes with its patches: within one unit of the budget, never over
            assert budget - per_frame(tiny, frames) < candidates <= budget
            assert_whole_units(meta, tiny, frames)
        else:
            assert candidates == budget
        pos = session.cache.positions(layer)
        assert torch.all(pos[0, 1:] >= pos[0, :-1]), "kept rows stay in time order"
        if tiers[layer]["tier"] == "long-term":
            assert int(meta.frame[-1]) == SUMMARY_FRAME, "the last prune appended a summary row"
        else:
            assert n_summary == 0
        assert int((meta.frame == -1).sum()) == session.sink_len
    per_row = 2 * tiny.num_kv_heads * tiny.head_dim * 4
    assert session.kv_bytes == per_row * sum(session.cache.lengths())
    if not units:
        assert session.kv_bytes == per_row * tiny.num_layers * (session.sink_len + budget)


def test_pure_recency_keeps_the_newest_tokens(frames):
    adapter = _tiny("tiny-embedded")
    layers = [{"tier": "sensory", "alpha": 1.0, "k": 20.0, "budget_share": 0.25} for _ in range(4)]
    policy = make_policy("hermes", budget=10, layers=layers, gamma={"sensory": 0.0, "working": 0.0, "long-term": 0.0})
    session = StreamingSession(adapter, policy)
    session.ingest(frames[:8])
    for layer in range(4):
        video_pos = session.cache.positions(layer)[0, session.cache.meta(layer).is_video]
        assert video_pos.tolist() == list(range(session.next_position - 10, session.next_position))


def _pruned_by_hand(policy, chunk_frames, frames):
    adapter = _tiny("tiny-embedded")
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=chunk_frames))
    session.ingest(frames[:chunk_frames])  # full cache first, then prune by hand through the policy
    cache = session.cache
    before = (cache.keys(2).clone(), cache.values(2).clone(), cache.positions(2).clone(),
              torch.nonzero(cache.meta(2).is_video).flatten())
    session.policy = policy
    policy.after_chunk(session)
    return adapter, cache, before


def test_summary_row_is_the_mean_of_evicted_keys_rotated_past_the_last_kept_row(frames):
    layers = [{"tier": "long-term", "alpha": 0.0, "k": None, "budget_share": 0.25} for _ in range(4)]
    adapter, cache, (before_k, before_v, before_p, before_video) = _pruned_by_hand(
        make_policy("hermes", budget=8, layers=layers), 4, frames)
    meta = cache.meta(2)
    assert int(meta.frame[-1]) == SUMMARY_FRAME and int((meta.frame == SUMMARY_FRAME).sum()) == 1
    kept_video = set(cache.positions(2)[0, meta.is_video].tolist())
    assert len(kept_video) == 7, "the summary row takes the budget's last place"
    dropped = torch.tensor([int(i) for i in before_video if int(before_p[0, i]) not in kept_video])
    target = cache.positions(2)[:, -1:]
    assert int(target) == int(cache.positions(2)[0, :-1].max()) + 1, "one past the last kept row"
    rotated = adapter.rotary.rotate(before_k[:, :, dropped], target - before_p[:, dropped])
    assert torch.allclose(cache.keys(2)[:, :, -1], rotated.mean(dim=2), atol=1e-5)
    assert torch.allclose(cache.values(2)[:, :, -1], before_v[:, :, dropped].mean(dim=2), atol=1e-6)
    assert cache.policy_state["summary_count"][2] == dropped.numel()


def test_summary_slot_is_the_mean_of_rotated_evicted_keys_and_values(frames):
    """``summary_mode="slot"``: hermes-lab's running-mean slot at the oldest evicted position, outside the budget."""
    layers = [{"tier": "long-term", "alpha": 0.0, "k": None, "budget_share": 0.25} for _ in range(4)]
    adapter, cache, (before_k, before_v, before_p, before_video) = _pruned_by_hand(
        make_policy("hermes", budget=8, layers=layers, summary_mode="slot"), 4, frames)
    meta = cache.meta(2)
    slot = int(torch.nonzero(meta.frame == SUMMARY_FRAME).flatten()[0])
    kept_video = set(cache.positions(2)[0, meta.is_video].tolist())
    assert len(kept_video) == 8
    dropped = torch.tensor([int(i) for i in before_video if int(before_p[0, i]) not in kept_video])
    assert dropped.numel() == before_video.numel() - 8
    assert int(cache.positions(2)[0, slot]) == int(before_p[0, dropped[0]]), (
        "the slot sits where the oldest evicted was")
    target = cache.positions(2)[:, slot : slot + 1]
    rotated = adapter.rotary.rotate(before_k[:, :, dropped], target - before_p[:, dropped])
    assert torch.allclose(cache.keys(2)[:, :, slot], rotated.mean(dim=2), atol=1e-5)
    assert torch.allclose(cache.values(2)[:, :, slot], before_v[:, :, dropped].mean(dim=2), atol=1e-6)
    assert cache.policy_state["summary_count"][2] == dropped.numel()


def test_spec_drives_tiers_and_budget_shares(frames):
    adapter = _tiny("tiny-embedded")
    layers = [
        {"layer": 0, "tier": "sensory", "alpha": 1.0, "k": 20.0, "budget_share": 0.1},
        {"layer": 1, "tier": "working", "alpha": 0.5, "k": 10.0, "budget_share": 0.2},
        {"layer": 2, "tier": "working", "alpha": 0.2, "k": 5.0, "budget_share": 0.3},
        {"layer": 3, "tier": "long-term", "alpha": 0.0, "k": None, "budget_share": 0.4},
    ]
    policy = PolicySpec("hermes", {"budget": 10}, layers=layers).build()
    assert policy.layer_budgets(4) == [4, 8, 12, 16]
    session = StreamingSession(adapter, policy)
    session.ingest(frames)
    # the long-term layer's summary rows (an older one may stay, scored like any row) count against its 16
    summaries = int((session.cache.meta(3).frame == SUMMARY_FRAME).sum())
    assert summaries >= 1
    assert [session.cache.video_count(i) for i in range(4)] == [4, 8, 12, 16 - summaries]
    with pytest.raises(PolicyError, match="describes 5 layers"):
        unnamed = [{k: v for k, v in e.items() if k != "layer"} for e in layers[:3] + layers[:2]]
        StreamingSession(_tiny("tiny-qwen2-vl"),
                         PolicySpec("hermes", {"budget": 10}, layers=unnamed).build()).ingest(frames[:4])
    with pytest.raises(PolicyError, match="in depth order"):  # a decoder layer named twice
        PolicySpec("hermes", {"budget": 10}, layers=layers[:3] + layers[:2]).build()


@pytest.mark.parametrize("bad", [{"tier": "deep", "alpha": 0.5, "k": 1}, {"tier": "working", "alpha": 2, "k": 1},
                                 {"tier": "working", "alpha": 0.5, "k": None}])
def test_bad_layer_entries_are_rejected(bad):
    with pytest.raises(PolicyError):
        make_policy("hermes", budget=10, layers=[bad])


def test_helpers():
    # the release's min-max adds 1e-6 to the span; its smoothing resamples with align_corners=False
    assert torch.allclose(minmax(torch.tensor([2.0, 4.0, 3.0])), torch.tensor([0.0, 2 / (2 + 1e-6), 1 / (2 + 1e-6)]))
    assert torch.equal(minmax(torch.ones(3)), torch.zeros(3))
    assert torch.allclose(resample(torch.tensor([0.0, 1.0]), 4), torch.tensor([0.0, 0.25, 0.75, 1.0]))
    assert torch.allclose(resample(torch.tensor([0.0, 1.0, 2.0, 3.0]), 2), torch.tensor([0.5, 2.5]))
