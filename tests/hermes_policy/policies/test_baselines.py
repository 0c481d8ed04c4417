"""The baselines: ``uniform`` frame sampling, ``snapkv`` window scores, ``rekv`` retrieval."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import _tiny, assert_whole_units, has_frame_text, unit_sizes

from hermes_policy import BudgetError, PolicyError, SessionConfig, StreamingSession, make_policy
from hermes_policy.policies import snapkv as snapkv_module
from hermes_policy.policies.rekv import (
    ReKVPolicy,
    block_mean_key,
    offloaded_bytes,
    rekv_state,
    score_blocks,
    select_blocks,
    unrotate,
)
from hermes_policy.policies.scoring import top_units
from hermes_policy.policies.snapkv import SnapKVPolicy, pool_votes
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import SyntheticVideo

QUESTION = "What happened in the video?"


def per_frame(adapter, frames) -> int:
    """Video tokens of one frame unit (a Qwen-VL temporal group counts as one unit): the largest unit of the
    test stream, for families whose units carry a frame number or time as text and differ by a token."""
    if has_frame_text(adapter):
        return max(unit_sizes(adapter, frames).values())
    h, w = frames[0].image.shape[:2]
    return adapter.tokens_per_frame(h, w)


def per_row_bytes(adapter) -> int:
    return 2 * adapter.num_kv_heads * adapter.head_dim * 4  # float32 key + value


def snapshot(session: StreamingSession):
    c = session.cache
    return [
        (c.keys(i).clone(), c.values(i).clone(), c.positions(i).clone(), c.meta(i).frame.clone())
        for i in range(c.num_layers)
    ]


def assert_identical(session: StreamingSession, snap) -> None:
    for i, (k, v, p, f) in enumerate(snap):
        assert torch.equal(session.cache.keys(i), k), f"layer {i} keys changed"
        assert torch.equal(session.cache.values(i), v), f"layer {i} values changed"
        assert torch.equal(session.cache.positions(i), p), f"layer {i} positions changed"
        assert torch.equal(session.cache.meta(i).frame, f), f"layer {i} metadata changed"


# ---------------------------------------------------------------- configuration
@pytest.mark.parametrize(
    "name,params,error",
    [
        ("uniform", {}, BudgetError),
        ("uniform", {"budget": 0}, BudgetError),
        ("uniform", {"budget": -4}, BudgetError),
        ("snapkv", {}, BudgetError),
        ("snapkv", {"budget": 8, "window": 0}, PolicyError),
        ("snapkv", {"budget": 8, "pool": 0}, PolicyError),
        ("snapkv", {"budget": 8, "pooling": "median"}, PolicyError),
        ("snapkv", {"budget": 8, "observe": 3}, PolicyError),
        ("rekv", {}, BudgetError),
        ("rekv", {"budget": 8, "retrieve_frames": 0}, PolicyError),
        ("rekv", {"budget": 8, "retrieve_frames": True}, PolicyError),
        ("rekv", {"budget": 8, "retrieve_frames": 2.5}, PolicyError),
        ("rekv", {"budget": 8, "window": 8}, PolicyError),
    ],
)
def test_bad_configs_are_rejected(name, params, error):
    with pytest.raises(error):
        make_policy(name, **params)


@pytest.mark.parametrize("name", ["uniform", "snapkv", "rekv"])
def test_budget_below_one_frame_is_rejected_before_any_write(name, frames):
    adapter = _tiny("tiny-qwen2-vl")
    session = StreamingSession(adapter, make_policy(name, budget=per_frame(adapter, frames) - 1))
    with pytest.raises(BudgetError, match="cannot hold one frame"):
        session.ingest(frames[:4])
    assert session.frames_seen == 0 and not session.cache.layers


def test_configs_round_trip():
    assert make_policy("snapkv", budget=8).config() == {
        "policy": "snapkv", "budget": 8, "window": 16, "pool": 5, "pooling": "avg", "votes": "sum",
        "keep_window": False, "accumulate": True,
    }
    assert make_policy("rekv", budget=8).config() == {"policy": "rekv", "budget": 8, "retrieve_frames": 8,
                                                      "window_at_question": True}
    assert make_policy("uniform", budget=8).config() == {"policy": "uniform", "budget": 8}


# --------------------------------------------------------------------- budgets
@pytest.mark.parametrize("name", ["snapkv", "rekv"])
def test_token_budgets_are_held_exactly_per_layer(name, tiny, frames):
    """Not a whole number of frames on purpose: these policies count tokens, not frames."""
    unit = per_frame(tiny, frames)
    budget = 2 * unit + 1
    session = StreamingSession(tiny, make_policy(name, budget=budget), SessionConfig(chunk_frames=2))
    session.ingest(frames)
    if has_frame_text(tiny):
        # a frame's text goes with its patches (kept together, dropped together): never over the budget,
        # whole units only, so the odd token and any patch whose frame's text does not fit stay out
        for layer in range(tiny.num_layers):
            meta = session.cache.meta(layer)
            assert 0 < int(meta.is_video.sum()) <= budget
            assert int((~meta.is_video).sum()) == session.sink_len
            assert_whole_units(meta, tiny, frames)
        assert session.kv_bytes == per_row_bytes(tiny) * sum(session.cache.lengths())
        return
    streamed = 0
    for n_chunks, entry in enumerate(session.timeline, start=1):
        streamed = n_chunks * (2 // tiny.frames_per_group) * unit
        assert entry["tokens"] == [session.sink_len + min(budget, streamed)] * tiny.num_layers
    assert streamed > budget
    for layer in range(tiny.num_layers):
        meta = session.cache.meta(layer)
        assert int(meta.is_video.sum()) == budget
        assert int((~meta.is_video).sum()) == session.sink_len
        pos = session.cache.positions(layer)
        assert torch.all(pos[0, 1:] >= pos[0, :-1]), "kept rows stay in time order"
    assert session.kv_bytes == per_row_bytes(tiny) * tiny.num_layers * (session.sink_len + budget)


# --------------------------------------------------------------------- uniform
def expected_uniform(n_units: int, fit: int) -> list[int]:
    """The smallest power-of-two stride whose lattice 0, s, 2s, ... < n fits ``fit`` units."""
    stride = 1
    while math.ceil(n_units / stride) > fit:
        stride *= 2
    return list(range(0, n_units, stride))


@pytest.mark.parametrize("chunk", [2, 4])
def test_uniform_keeps_whole_frames_evenly_spread_over_the_stream(tiny, frames, chunk):
    unit = per_frame(tiny, frames)
    budget = 3 * unit + unit // 2  # room for 3 whole units, not 4
    session = StreamingSession(tiny, make_policy("uniform", budget=budget), SessionConfig(chunk_frames=chunk))
    group = tiny.frames_per_group
    seen = 0
    for start in range(0, len(frames), session.chunk_frames):
        session.ingest(frames[start : start + session.chunk_frames])
        seen += session.chunk_frames // group
        want = expected_uniform(seen, 3)
        for layer in range(tiny.num_layers):
            meta = session.cache.meta(layer)
            units = torch.unique_consecutive(meta.frame[meta.is_video]) // group
            assert units.tolist() == want, f"layer {layer} after {seen} units"
            kept, counts = torch.unique(meta.frame[meta.is_video], return_counts=True)
            sizes = unit_sizes(tiny, frames)
            assert counts.tolist() == [sizes[f] for f in kept.tolist()], "whole frames only"
            assert int(meta.is_video.sum()) <= budget
            assert int((~meta.is_video).sum()) == session.sink_len
    # the end state covers the whole stream evenly: the first unit, one within a stride of now
    meta = session.cache.meta(0)
    final = (torch.unique_consecutive(meta.frame[meta.is_video]) // group).tolist()
    strides = {b - a for a, b in zip(final, final[1:])}
    assert len(final) >= 2 and len(strides) == 1
    assert final[0] == 0 and final[-1] >= seen - strides.pop()
    held = sum(unit_sizes(tiny, frames)[f] for f in torch.unique(meta.frame[meta.is_video]).tolist())
    assert session.kv_bytes == per_row_bytes(tiny) * tiny.num_layers * (session.sink_len + held)


def test_uniform_with_room_for_everything_equals_full(tiny, frames):
    full, roomy = StreamingSession(tiny), StreamingSession(tiny, make_policy("uniform", budget=10_000))
    for s in (full, roomy):
        s.ingest(frames[:8])
    assert torch.equal(full.question_logits(QUESTION), roomy.question_logits(QUESTION))


# ---------------------------------------------------------------------- snapkv
class _Recorder:
    """Keeps the inputs of every ingest attention call, per layer, in order."""

    def __init__(self) -> None:
        self.events: dict[int, list] = {}

    def observe(self, event) -> None:
        if event.phase == "ingest":
            entry = (event.query[0].clone(), event.key[0].clone(), event.scaling)
            self.events.setdefault(event.layer, []).append(entry)


def direct_votes(query, key, scaling, window, kernel) -> torch.Tensor:
    """Independent reference: plain softmax of the last rows, summed, then a naive centred average."""
    hq, q, _ = query.shape
    hkv, s, _ = key.shape
    k = key.repeat_interleave(hq // hkv, dim=0)  # GQA: query head h reads KV head h // G
    rows = list(range(max(0, q - window), q))
    logits = (query[:, rows].float() @ k.float().transpose(-1, -2)) * scaling
    for i, r in enumerate(rows):
        logits[:, i, s - q + r + 1 :] = float("-inf")  # a new row sees the cache and earlier new rows
    votes = torch.softmax(logits, dim=-1).sum(dim=(0, 1))
    half = kernel // 2
    return torch.tensor([float(votes[max(0, i - half) : i + half + 1].sum()) / kernel for i in range(s)])


def test_snapkv_scores_match_a_direct_computation(tiny, frames):
    recorder = _Recorder()
    policy = make_policy("snapkv", budget=10_000, window=3, pool=3)
    session = StreamingSession(tiny, policy, SessionConfig(chunk_frames=2))
    session.observing(recorder)
    session.ingest(frames[:4])  # two chunks, nothing evicted
    scores = SnapKVPolicy.scores(session.cache)
    for layer in range(tiny.num_layers):
        (q1, k1, sc1), (q2, k2, sc2) = recorder.events[layer]
        v1 = direct_votes(q1, k1, sc1, 3, 3)
        v2 = direct_votes(q2, k2, sc2, 3, 3)
        n1 = v1.numel()
        expected = torch.cat([v1 + v2[:n1], v2[n1:]])  # H2O-style running sum, new rows appended
        assert scores[layer].shape == (session.cache.layer_len(layer),)
        assert torch.allclose(scores[layer], expected, atol=1e-5), (scores[layer] - expected).abs().max()
        # the chunk's own rows are scored by its window (causal: only the rows after them can look)
        assert float(scores[layer][-1]) > 0


def test_pool_votes():
    v = torch.tensor([0.0, 3.0, 0.0, 0.0, 6.0])
    assert torch.allclose(pool_votes(v, 3, "avg"), torch.tensor([1.0, 1.0, 1.0, 2.0, 2.0]))
    assert torch.equal(pool_votes(v, 3, "max"), torch.tensor([3.0, 3.0, 3.0, 6.0, 6.0]))
    assert torch.equal(pool_votes(v, 1, "max"), v)
    assert pool_votes(v, 4, "avg").shape == v.shape


def test_snapkv_keeps_planted_tokens_and_scores_stay_row_aligned(tiny, frames, monkeypatch):
    unit = per_frame(tiny, frames)
    budget = 2 * unit
    session = StreamingSession(tiny, make_policy("snapkv", budget=budget), SessionConfig(chunk_frames=2))
    cache = session.cache
    # plant: in layer `target` only, the first frame of the 3rd chunk receives huge attention
    # from that chunk's observation window (a frame the age bias would otherwise drop)
    target = tiny.num_layers - 1
    planted_frame = frames[4].index
    real_votes = snapkv_module.window_votes

    def planted_votes(event, window, kernel, pooling, *options):
        votes = real_votes(event, window, kernel, pooling, *options)
        if event.layer == target:
            votes = votes + 1e3 * (event.meta.frame == planted_frame).float()
        return votes

    monkeypatch.setattr(snapkv_module, "window_votes", planted_votes)

    seen: dict[int, tuple] = {}
    frames_of: dict[int, torch.Tensor] = {}
    patches_of: dict[int, torch.Tensor] = {}
    evict = cache.evict

    def spy(layer, keep):
        # called before the policy re-aligns its scores: these are the merged, pre-eviction ones
        seen[layer] = (SnapKVPolicy.scores(cache)[layer].clone(), cache.positions(layer).clone(),
                       cache.meta(layer).is_video.clone(), keep.clone())
        frames_of[layer], patches_of[layer] = cache.meta(layer).frame.clone(), cache.meta(layer).patch.clone()
        evict(layer, keep)

    monkeypatch.setattr(cache, "evict", spy)
    for start in range(0, len(frames), 2):
        seen.clear()
        session.ingest(frames[start : start + 2])
        for layer in range(tiny.num_layers):
            assert SnapKVPolicy.scores(cache)[layer].numel() == cache.layer_len(layer)
        if (start + 2) // tiny.frames_per_group * unit <= budget:
            assert not seen, "within budget: nothing evicted"
            continue
        assert sorted(seen) == list(range(tiny.num_layers)), "every layer was over budget and pruned"
        for layer, (pre, pos, is_video, keep) in seen.items():
            now = SnapKVPolicy.scores(cache)[layer]
            assert torch.equal(now, pre[keep]), "scores follow their rows through eviction"
            assert torch.equal(cache.positions(layer), pos[:, keep])
            video = torch.nonzero(is_video).flatten()
            top = set(video[top_units(pre[video], frames_of[layer][video], patches_of[layer][video],
                                      budget)].tolist())
            assert set(keep[is_video[keep]].tolist()) == top, "kept video rows are the top-budget scores"
            assert torch.all(keep[1:] > keep[:-1]), "time order"
        if start >= 4:
            planted_size = unit_sizes(tiny, frames)[planted_frame]
            assert int((cache.meta(target).frame == planted_frame).sum()) == planted_size, "the planted frame survives"
    planted_size = unit_sizes(tiny, frames)[planted_frame]
    dropped_elsewhere = [int((cache.meta(layer).frame == planted_frame).sum()) < planted_size
                         for layer in range(target)]
    assert any(dropped_elsewhere), "without the plant the frame is evicted (the plant is what keeps it)"


# ------------------------------------------------------------------------ rekv
def rekv_session(adapter, frames, budget_units=2, retrieve=2, n_frames=None, chunk=2):
    unit = per_frame(adapter, frames)
    policy = make_policy("rekv", budget=budget_units * unit, retrieve_frames=retrieve)
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=chunk))
    session.ingest(frames[: n_frames or len(frames)])
    return session


def test_rekv_offloads_whole_frames_and_kv_bytes_counts_sink_and_window(tiny, frames, monkeypatch):
    unit = per_frame(tiny, frames)
    budget = 2 * unit
    session = rekv_session(tiny, frames)
    # reference: sink-window makes the same eviction decisions, so it computes the same keys;
    # what it drops is exactly what rekv must have offloaded
    window = StreamingSession(tiny, make_policy("sink-window", budget=budget), SessionConfig(chunk_frames=2))
    dropped: dict[int, list] = {}
    evict = window.cache.evict

    def spy(layer, keep):
        c = window.cache
        gone = torch.ones(c.layer_len(layer), dtype=torch.bool)
        gone[keep] = False
        part = (c.keys(layer)[:, :, gone], c.values(layer)[:, :, gone], c.positions(layer)[:, gone])
        dropped.setdefault(layer, []).append((*part, c.meta(layer).frame[gone]))
        evict(layer, keep)

    monkeypatch.setattr(window.cache, "evict", spy)
    window.ingest(frames)
    assert_identical(session, snapshot(window))
    assert session.kv_bytes == window.kv_bytes
    rows = sum(session.cache.lengths()) if has_frame_text(tiny) else tiny.num_layers * (session.sink_len + budget)
    assert session.kv_bytes == per_row_bytes(tiny) * rows
    blocks = rekv_state(session.cache)["blocks"]
    for layer in range(tiny.num_layers):
        keys, values, positions, frame = (torch.cat(x, dim=d) for x, d in zip(zip(*dropped[layer]), (2, 2, 1, 0)))
        assert [b.frame for b in blocks[layer]] == torch.unique_consecutive(frame).tolist()
        for block in blocks[layer]:
            rows = frame == block.frame
            assert torch.equal(block.keys, keys[:, :, rows])
            assert torch.equal(block.values, values[:, :, rows])
            assert torch.equal(block.positions, positions[:, rows])
            assert block.keys.device.type == "cpu" and block.keys.shape[-2] == unit_sizes(tiny, frames)[block.frame]
            expected = unrotate(tiny.rotary, block.keys, block.positions)[0].mean(dim=-2)
            assert torch.allclose(block.mean_key, expected)
    assert offloaded_bytes(session.cache) == per_row_bytes(tiny) * sum(
        b.keys.shape[-2] for layer in blocks for b in layer
    )


def test_rekv_partial_frames_join_their_block():
    """A window that is not a whole number of frames offloads a frame in pieces, into one block."""
    adapter = _tiny("tiny-embedded")
    frames = list(SyntheticVideo(seed=3, frames=6, width=64, height=64).frames())
    unit = per_frame(adapter, frames)
    session = StreamingSession(adapter, make_policy("rekv", budget=unit + 1), SessionConfig(chunk_frames=1))
    session.ingest(frames)
    blocks = rekv_state(session.cache)["blocks"][0]
    assert [b.frame for b in blocks] == [0, 1, 2, 3, 4]
    assert [b.keys.shape[-2] for b in blocks] == [unit] * 4 + [unit - 1]
    assert session.cache.video_count(0) == unit + 1


def test_unrotate_inverts_rotation(tiny):
    keys = torch.randn(1, 2, 5, tiny.head_dim)
    positions = torch.randint(0, 50, (tiny.rotary.n_axes, 5))
    moved = tiny.rotary.rotate(keys, positions)
    assert torch.allclose(unrotate(tiny.rotary, moved, positions), keys, atol=1e-5)
    # position-free means: the same content at two positions gives the same block key
    assert torch.allclose(block_mean_key(tiny.rotary, moved, positions), keys[0].mean(dim=-2), atol=1e-5)


def planted_query(mean_keys: torch.Tensor, target: int) -> torch.Tensor:
    """A (Hkv, D) query orthogonal to every block key but ``target``'s (its residual): only it scores > 0."""
    flat = mean_keys.reshape(mean_keys.shape[0], -1).double()
    others = torch.cat([flat[:target], flat[target + 1 :]])
    basis = torch.linalg.qr(others.T).Q  # orthonormal basis of the other blocks' span
    residual = flat[target] - basis @ (basis.T @ flat[target])
    return residual.reshape(mean_keys.shape[1:]).float()


def test_rekv_block_scoring_retrieves_the_planted_block(frames):
    session = rekv_session(_tiny("tiny-embedded"), frames)
    blocks = rekv_state(session.cache)["blocks"][1]
    mean_keys = torch.stack([b.mean_key for b in blocks])
    assert len(blocks) == 10
    for target in (0, 4, 9):
        query = planted_query(mean_keys, target)
        scores = score_blocks(query, mean_keys)
        assert torch.allclose(scores, (query[None] * mean_keys).sum(dim=(1, 2)))  # dot, summed over heads
        assert select_blocks(scores, 1).tolist() == [target]
        assert target in select_blocks(scores, 3).tolist()
    assert select_blocks(torch.tensor([0.1, 5.0, -1.0, 3.0]), 2).tolist() == [1, 3], "time order"
    assert select_blocks(torch.tensor([0.1, 5.0]), 8).tolist() == [0, 1]


def test_rekv_loads_planted_frames_contiguously_and_restores(tiny, frames, monkeypatch):
    session = rekv_session(tiny, frames, retrieve=2)
    cache, policy = session.cache, session.policy
    blocks = rekv_state(cache)["blocks"]
    targets = [(3 * layer + 1) % len(blocks[layer]) for layer in range(tiny.num_layers)]
    planted = [planted_query(torch.stack([b.mean_key for b in blocks[layer]]), targets[layer])
               for layer in range(tiny.num_layers)]
    calls = []

    def fake_queries(s, text):
        calls.append(text)
        return planted

    monkeypatch.setattr(policy, "question_queries", fake_queries)
    before, next_position = snapshot(session), session.next_position
    window_frames = [torch.unique_consecutive(cache.meta(i).frame[cache.meta(i).is_video]).tolist()
                     for i in range(tiny.num_layers)]
    policy.before_ask(session, "question")
    assert calls == ["question"]
    top = 0
    for layer in range(tiny.num_layers):
        meta, pos, keys = cache.meta(layer), cache.positions(layer), cache.keys(layer)
        retrieved = rekv_state(cache)["retrieved"][layer]
        assert blocks[layer][targets[layer]].frame in retrieved and len(retrieved) == 2
        order = torch.unique_consecutive(meta.frame).tolist()
        assert order == [-1, *retrieved, *window_frames[layer]], "sink, retrieved in time order, window"
        # contiguity: each part starts one past the previous part's largest position
        parts = [meta.frame == -1] + [meta.frame == f for f in retrieved]
        parts.append(torch.isin(meta.frame, torch.tensor(window_frames[layer], dtype=meta.frame.dtype)))
        for prev, part in zip(parts, parts[1:]):
            assert int(pos[:, part].min()) == int(pos[:, prev].max()) + 1
        # keys agree with their new positions
        for frame in retrieved:
            block = next(b for b in blocks[layer] if b.frame == frame)
            rows = meta.frame == frame
            rotated = tiny.rotary.rotate(block.keys, pos[:, rows] - block.positions)
            assert torch.allclose(keys[:, :, rows], rotated, atol=1e-5)
            assert torch.equal(cache.values(layer)[:, :, rows], block.values)
        if tiny.rotary.n_axes == 1:
            assert pos[0].tolist() == list(range(pos.shape[1])), "1-D: one contiguous run"
        top = max(top, int(pos.max()) + 1)
        sizes = unit_sizes(tiny, frames)  # window + 2 retrieved frames
        assert int(meta.is_video.sum()) == sum(sizes[f] for f in torch.unique(meta.frame[meta.is_video]).tolist())
        assert len(torch.unique(meta.frame[meta.is_video])) == 2 + 2
    assert session.next_position == top, "the question starts right after everything cached"
    policy.after_ask(session)
    assert_identical(session, before)
    assert session.next_position == next_position and "saved" not in rekv_state(cache)


def test_rekv_ask_leaves_the_cache_bit_identical(tiny, frames):
    asked = rekv_session(tiny, frames, n_frames=8)
    before, next_position, kv_bytes = snapshot(asked), asked.next_position, asked.kv_bytes
    answer = asked.ask(QUESTION, max_new_tokens=3)
    assert answer.kv_bytes == kv_bytes and answer.ttft_ms > 0
    assert_identical(asked, before)
    asked.question_logits(QUESTION, options=["red", "blue"])
    assert_identical(asked, before)
    assert asked.next_position == next_position and asked.kv_bytes == kv_bytes
    # streaming on after a question is exactly as if it had never been asked
    never = rekv_session(tiny, frames, n_frames=8)
    for s in (asked, never):
        s.ingest(frames[8:])
    assert_identical(asked, snapshot(never))
    for a, b in zip(rekv_state(asked.cache)["blocks"], rekv_state(never.cache)["blocks"]):
        assert [x.frame for x in a] == [x.frame for x in b]
        assert all(torch.equal(x.keys, y.keys) for x, y in zip(a, b))


def test_rekv_retrieval_changes_the_answer_context(tiny, frames):
    """Retrieval is real: the question sees more than sink + window (logits differ from sink-window)."""
    unit = per_frame(tiny, frames)
    rekv = rekv_session(tiny, frames, n_frames=8)
    window = StreamingSession(tiny, make_policy("sink-window", budget=2 * unit), SessionConfig(chunk_frames=2))
    window.ingest(frames[:8])
    assert rekv.kv_bytes == window.kv_bytes
    assert not torch.allclose(rekv.question_logits(QUESTION), window.question_logits(QUESTION), atol=1e-4)


def test_rekv_with_a_window_covering_the_stream_equals_full(tiny, frames):
    full = StreamingSession(tiny, config=SessionConfig(chunk_frames=2))
    roomy = StreamingSession(tiny, make_policy("rekv", budget=10_000), SessionConfig(chunk_frames=2))
    for s in (full, roomy):
        s.ingest(frames[:8])
    assert not any(rekv_state(roomy.cache)["blocks"])
    assert torch.allclose(full.question_logits(QUESTION), roomy.question_logits(QUESTION), atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-embedded", "tiny-llava-ov"])
def test_rekv_retrieving_every_frame_is_the_stream_at_its_own_positions_on_1d_rope(name, frames):
    """1-D RoPE: sink + every block + window, made contiguous, lands exactly on the original positions.

    The reference rebuilds that cache by hand from the stored tensors (no rotation at
    all) and answers under ``full``; ReKV's retrieval path must give the same logits.
    """
    adapter = _tiny(name)
    session = rekv_session(adapter, frames, retrieve=100)
    cache = session.cache
    assert any(rekv_state(cache)["blocks"])
    got = session.question_logits(QUESTION)
    for layer in range(cache.num_layers):
        blocks = rekv_state(cache)["blocks"][layer]
        meta = cache.meta(layer)
        sink, window = torch.nonzero(~meta.is_video).flatten(), torch.nonzero(meta.is_video).flatten()
        keys, values, positions = cache.keys(layer), cache.values(layer), cache.positions(layer)
        cache.replace_layer(
            layer,
            torch.cat([keys[:, :, sink], *[b.keys for b in blocks], keys[:, :, window]], dim=2),
            torch.cat([values[:, :, sink], *[b.values for b in blocks], values[:, :, window]], dim=2),
            torch.cat([positions[:, sink], *[b.positions for b in blocks], positions[:, window]], dim=1),
            TokenMeta.cat([meta.select(sink), *[b.meta for b in blocks], meta.select(window)]),
        )
        assert cache.positions(layer)[0].tolist() == list(range(session.next_position))
    session.policy = make_policy("full")
    want = session.question_logits(QUESTION)
    assert torch.allclose(got, want, atol=1e-5), (got - want).abs().max()


def test_rekv_policy_is_registered():
    assert isinstance(make_policy("rekv", budget=4), ReKVPolicy)
