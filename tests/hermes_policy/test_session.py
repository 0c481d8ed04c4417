"""StreamingSession behaviour: policies, budgets, bad input, atomicity."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import _tiny, assert_whole_units, has_frame_text, unit_sizes

from hermes_policy import BudgetError, PolicyError, SessionConfig, SessionError, StreamingSession, make_policy
from hermes_policy.policies import PolicySpec
from hermes_policy.video import Frame


def tokens_per_frame(adapter, frames) -> int:
    h, w = frames[0].image.shape[:2]
    return adapter.tokens_per_frame(h, w)


def snapshot(session: StreamingSession):
    c = session.cache
    return [(c.keys(i).clone(), c.values(i).clone(), c.positions(i).clone()) for i in range(c.num_layers)]


def assert_same(session: StreamingSession, snap) -> None:
    for i, (k, v, p) in enumerate(snap):
        assert torch.equal(session.cache.keys(i), k)
        assert torch.equal(session.cache.values(i), v)
        assert torch.equal(session.cache.positions(i), p)


def test_ask_before_any_frame_is_a_clear_error(tiny):
    session = StreamingSession(tiny)
    with pytest.raises(SessionError, match="no frame has been streamed"):
        session.ask("What is happening?")


@pytest.mark.parametrize("question", ["", "   ", None])
def test_empty_question_is_a_clear_error(question, frames):
    session = StreamingSession(_tiny("tiny-embedded"))
    session.ingest(frames[:4])
    snap = snapshot(session)
    with pytest.raises(SessionError, match="empty"):
        session.ask(question)
    assert_same(session, snap)


def test_budget_below_one_frame_is_rejected_before_any_write(tiny, frames):
    per_frame = tokens_per_frame(tiny, frames)
    session = StreamingSession(tiny, make_policy("sink-window", budget=per_frame - 1))
    with pytest.raises(BudgetError, match=f"cannot hold one frame \\({per_frame} tokens\\)"):
        session.ingest(frames[:4])
    assert session.frames_seen == 0 and session.pending_frames == 0 and session.cache.is_empty


def test_sink_tokens_count_against_the_budget(frames):
    adapter = _tiny("tiny-embedded")
    per_frame = tokens_per_frame(adapter, frames)
    with pytest.raises(BudgetError, match="plus 2 reserved sink tokens"):
        StreamingSession(adapter, make_policy("sink-window", budget=per_frame + 1, sink_tokens=2)).ingest(frames[:4])


@pytest.mark.parametrize(
    "name,params,error",
    [
        ("nope", {}, PolicyError),
        ("sink-window", {}, BudgetError),
        ("sink-window", {"budget": 0}, BudgetError),
        ("sink-window", {"budget": -5}, BudgetError),
        ("window", {"budget": 10, "colour": 1}, PolicyError),
        ("full", {"budget": 10}, BudgetError),
    ],
)
def test_bad_policy_configs(name, params, error):
    with pytest.raises(error):
        make_policy(name, **params)


def test_sink_window_keeps_prefix_and_recent_tokens(tiny, frames):
    per_frame = tokens_per_frame(tiny, frames) * tiny.frames_per_group
    budget = 2 * per_frame + 1
    session = StreamingSession(tiny, make_policy("sink-window", budget=budget), SessionConfig(chunk_frames=2))
    session.ingest(frames)
    for layer in range(tiny.num_layers):
        meta = session.cache.meta(layer)
        if has_frame_text(tiny):  # whole units (a timestamp goes with its patches): the odd token does not fit
            assert budget - max(unit_sizes(tiny, frames).values()) < int(meta.is_video.sum()) <= budget
            assert_whole_units(meta, tiny, frames)
        else:
            assert int(meta.is_video.sum()) == budget
        assert int((~meta.is_video).sum()) == session.sink_len  # the prefix survived
        assert int(meta.frame[-1]) == frames[-1].index - (tiny.frames_per_group - 1)
        assert torch.all(meta.frame[meta.is_video].diff() >= 0), "time order is kept"
    answer = session.ask("What is on screen?", max_new_tokens=2)
    assert answer.kv_bytes == session.kv_bytes


def test_window_drops_the_prefix(frames):
    adapter = _tiny("tiny-embedded")
    session = StreamingSession(adapter, make_policy("window", budget=10))
    session.ingest(frames[:8])
    assert session.cache.lengths() == [10] * adapter.num_layers
    assert bool(session.cache.meta(0).is_video.all())


def test_kv_bytes_flat_under_a_budget_and_growing_without(frames):
    adapter = _tiny("tiny-embedded")
    full, capped = StreamingSession(adapter), StreamingSession(adapter, make_policy("sink-window", budget=12))
    full.ingest(frames[:4])
    capped.ingest(frames[:4])
    small_full, small_capped = full.kv_bytes, capped.kv_bytes
    full.ingest(frames[4:])
    capped.ingest(frames[4:])
    per_row = 2 * adapter.num_layers * adapter.num_kv_heads * adapter.head_dim * 4  # K and V, fp32
    assert full.kv_bytes == per_row * full.cache.layer_len(0) > small_full
    assert capped.kv_bytes == small_capped == per_row * (capped.sink_len + 12)


def test_failed_forward_leaves_cache_exactly_as_it_was(frames, monkeypatch):
    adapter = _tiny("tiny-embedded")
    session = StreamingSession(adapter)
    session.ingest(frames[:4])
    snap, seen, nxt = snapshot(session), session.frames_seen, session.next_position
    layer = adapter.text_model.layers[2]  # fail half-way through the stack, after layers 0-1 appended
    original = layer.forward

    def boom(*args, **kwargs):
        raise RuntimeError("simulated failure mid-forward")

    monkeypatch.setattr(layer, "forward", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        session.ingest(frames[4:8])
    with pytest.raises(RuntimeError, match="simulated"):
        session.ask("What now?")
    monkeypatch.setattr(layer, "forward", original)
    assert_same(session, snap)
    assert (session.frames_seen, session.next_position, session.pending_frames) == (seen, nxt, 0)
    session.ingest(frames[4:8])  # and the session still works
    assert session.frames_seen == 8


def test_frame_size_change_mid_stream_is_rejected(frames):
    session = StreamingSession(_tiny("tiny-qwen2-vl"), config=SessionConfig(chunk_frames=2))
    session.ingest(frames[:2])
    big = [Frame(index=2 + i, time=1.0 + i / 2, image=np.zeros((200, 300, 3), np.uint8)) for i in range(2)]
    with pytest.raises(SessionError, match="frame size changed"):
        session.ingest(big)
    assert session.frames_seen == 2


def test_multiple_choice_prompt_and_letter(frames):
    session = StreamingSession(_tiny("tiny-embedded"))
    session.ingest(frames[:4])
    answer = session.ask("Which colour?", options=["red", "green", "blue", "yellow"], max_new_tokens=1)
    assert answer.new_tokens <= 1
    with pytest.raises(SessionError, match="2 to"):
        session.ask("Which colour?", options=["red"])


def test_policy_spec_round_trip(tmp_path):
    spec = PolicySpec("sink-window", {"budget": 64, "sink_tokens": 4}, source={"method": "manual"})
    path = tmp_path / "p.json"
    spec.save(path)
    loaded = PolicySpec.load(path)
    assert loaded == spec
    policy = loaded.build()
    assert (policy.name, policy.budget, policy.sink_tokens) == ("sink-window", 64, 4)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PolicyError, match="not valid JSON"):
        PolicySpec.load(tmp_path / "bad.json")
    with pytest.raises(PolicyError, match="does not exist"):
        PolicySpec.load(tmp_path / "missing.json")
