"""MemStream additions: adaptive key selection, patch compression, the retrieval mixture of experts."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from conftest import _tiny

from hermes_policy import BudgetError, ModelError, PolicyError, SessionConfig, StreamingSession, make_policy
from hermes_policy.memstream import (
    ClipRanker,
    KeyReference,
    SyntheticRanker,
    detrend,
    fuse_scores,
    greedy_merge,
    memstream_state,
    normalise,
    patch_coords,
    redundant_mask,
    row_sizes,
    select_fused,
    temporal_bias,
    theil_sen_slope,
)
from hermes_policy.policies.hermes import SUMMARY_FRAME
from hermes_policy.policies.memstream import HermesMemStreamPolicy, MemStreamPolicy, thumbnail_bytes
from hermes_policy.policies.rekv import rekv_state
from hermes_policy.video import Frame, SyntheticVideo
from hermes_policy.video.synthetic import COLOURS

QUESTION = "What happened in the video?"
RED, GREEN, BLUE = COLOURS["red"], COLOURS["green"], COLOURS["blue"]
CYCLE = [COLOURS[c] for c in ("orange", "white", "purple", "yellow", "green", "blue", "red")]


def per_row_bytes(adapter) -> int:
    return 2 * adapter.num_kv_heads * adapter.head_dim * 4  # float32 key + value


def quadrant_frames(n: int, changing: bool = True) -> list[Frame]:
    """64x64 frames made of four flat quadrants (the tiny-embedded model's 2x2 patches, row-major).

    Top-left red, bottom-left green, bottom-right blue in every frame; the top-right
    quadrant (patch 1) takes a new colour each frame when ``changing``.
    """
    out = []
    for i in range(n):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:32, :32], img[32:, :32], img[32:, 32:] = RED, GREEN, BLUE
        img[:32, 32:] = CYCLE[i % len(CYCLE)] if changing else CYCLE[0]
        out.append(Frame(index=i, time=i / 2, image=img))
    return out


def video_patches(session, layer: int) -> dict[int, list[int]]:
    meta = session.cache.meta(layer)
    out: dict[int, list[int]] = {}
    for f, p in zip(meta.frame.tolist(), meta.patch.tolist()):
        if f >= 0:
            out.setdefault(f, []).append(p)
    return out


def snapshot(session):
    c = session.cache
    return [(c.keys(i).clone(), c.values(i).clone(), c.positions(i).clone(), c.meta(i).frame.clone(),
             c.meta(i).patch.clone()) for i in range(c.num_layers)]


def assert_identical(session, snap) -> None:
    for i, (k, v, p, f, q) in enumerate(snap):
        c = session.cache
        assert torch.equal(c.keys(i), k) and torch.equal(c.values(i), v), f"layer {i} tensors changed"
        assert torch.equal(c.positions(i), p) and torch.equal(c.meta(i).frame, f) and torch.equal(c.meta(i).patch, q)


# ------------------------------------------------------------ configuration
@pytest.mark.parametrize(
    "name,params,error",
    [
        ("memstream", {}, BudgetError),
        ("memstream", {"budget": 8, "beta": 1.5}, PolicyError),
        ("memstream", {"budget": 8, "beta": True}, PolicyError),
        ("memstream", {"budget": 8, "norm": "l2"}, PolicyError),
        ("memstream", {"budget": 8, "ranker": "bogus"}, PolicyError),
        ("memstream", {"budget": 8, "ranker": "none", "beta": 0.5}, PolicyError),
        ("memstream", {"budget": 8, "ranker": "clip:/no/such/clip-dir"}, PolicyError),
        ("memstream", {"budget": 8, "thumb_size": 4}, PolicyError),
        ("memstream", {"budget": 8, "detrend": "yes"}, PolicyError),
        ("memstream", {"budget": 8, "detrend": 1}, PolicyError),
        ("memstream", {"budget": 8, "tau": 1.5}, PolicyError),
        ("memstream", {"budget": 8, "retrieve_frames": 0}, PolicyError),
        ("memstream", {"budget": 8, "window_at_question": False}, PolicyError),
        ("hermes-memstream", {}, BudgetError),
        ("hermes-memstream", {"budget": 8, "tau": 2}, PolicyError),
        ("hermes-memstream", {"budget": 8, "min_keep": 0}, PolicyError),
        ("hermes-memstream", {"budget": 8, "patch_budget": 0}, PolicyError),
        ("hermes-memstream", {"budget": 8, "patch_budget": 1, "min_keep": 2}, PolicyError),
        ("hermes-memstream", {"budget": 8, "merge_tau": -3.0}, PolicyError),
        ("hermes-memstream", {"budget": 8, "reference": "oldest"}, PolicyError),
    ],
)
def test_bad_configs_are_rejected(name, params, error):
    with pytest.raises(error):
        make_policy(name, **params)


def test_policies_are_registered_and_configs_round_trip():
    ms = make_policy("memstream", budget=8, beta=0.25, ranker="synthetic")
    assert isinstance(ms, MemStreamPolicy)
    assert ms.config() == {"policy": "memstream", "budget": 8, "retrieve_frames": 8, "beta": 0.25, "detrend": True,
                           "ranker": "synthetic", "norm": "zscore", "thumb_size": 64, "tau": None, "min_keep": 1,
                           "patch_budget": None, "merge_tau": None, "reference": "previous",
                           "window_at_question": True}
    assert make_policy("memstream", budget=8, ranker=SyntheticRanker()).config()["ranker"] == "synthetic"
    hm = make_policy("hermes-memstream", budget=8, patch_budget=2)
    assert isinstance(hm, HermesMemStreamPolicy) and hm.config()["tau"] == 0.95 and hm.config()["patch_budget"] == 2


def test_a_budget_must_hold_one_compressed_frame():
    adapter = _tiny("tiny-embedded")
    frames = quadrant_frames(4)
    ok = StreamingSession(adapter, make_policy("hermes-memstream", budget=2, patch_budget=2, tau=None))
    ok.ingest(frames)  # 4 tokens per frame, 2 after compression: a budget of 2 holds one frame
    # a long-term layer's summary row takes one of its places (HERMES's release)
    held = [int(ok.cache.meta(i).is_video.sum() + (ok.cache.meta(i).frame == SUMMARY_FRAME).sum())
            for i in range(adapter.num_layers)]
    assert held == [2] * adapter.num_layers
    bad = StreamingSession(adapter, make_policy("hermes-memstream", budget=1, patch_budget=2, tau=None))
    with pytest.raises(BudgetError, match="cannot hold one frame"):
        bad.ingest(frames)
    assert bad.frames_seen == 0 and not bad.cache.layers


# ---------------------------------------------------------- key selection
def test_redundant_mask_and_min_keep():
    sim = torch.tensor([0.99, 0.2, 0.97, math.nan, 0.96])
    assert redundant_mask(sim, 0.95, 1).tolist() == [True, False, True, False, True]
    everything = torch.tensor([0.99, 0.999, 0.97, 0.98])
    assert redundant_mask(everything, 0.95, 1).tolist() == [True, True, False, True], "the most novel stays"
    assert redundant_mask(everything, 0.95, 2).tolist() == [True, True, False, False]
    assert redundant_mask(everything, 0.95, 9).tolist() == [False] * 4


def test_reference_previous_misses_a_slow_drift_that_kept_catches():
    """A patch turning 10 degrees per frame: every step is redundant with its predecessor (tau = cos 15),
    but the anchored reference ("kept") re-keeps it once it has drifted more than 15 degrees from memory."""
    tau = math.cos(math.radians(15))
    ref_prev, ref_kept, prev_keeps, kept_keeps = KeyReference(), KeyReference(), [], []
    for step in range(7):
        angles = [math.radians(10 * step), 0.0]
        key = torch.tensor([[math.cos(a), math.sin(a)] for a in angles])
        patch = torch.tensor([0, 1])
        kp = ~redundant_mask(ref_prev.similarity(patch, key), tau, 0)
        ref_prev.update(patch, key)
        kk = ~redundant_mask(ref_kept.similarity(patch, key), tau, 0)
        ref_kept.update(patch[kk], key[kk])
        prev_keeps.append(bool(kp[0]))
        kept_keeps.append(bool(kk[0]))
    assert prev_keeps == [True] + [False] * 6, "each 10-degree step looks redundant"
    assert kept_keeps == [True, False, True, False, True, False, True], "20 degrees from the anchor is novel"


def test_key_selection_drops_static_patches_keeps_the_changing_one_and_frees_memory():
    adapter = _tiny("tiny-embedded")
    frames = quadrant_frames(6)
    full = StreamingSession(adapter, config=SessionConfig(chunk_frames=2))
    full.ingest(frames)
    policy = make_policy("hermes-memstream", budget=10_000, tau=0.95, min_keep=1)
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=2))
    session.ingest(frames)
    for layer in range(adapter.num_layers):
        patches = video_patches(session, layer)
        assert patches[0] == [0, 1, 2, 3], "the first frame has nothing to be redundant with"
        for f in range(1, 6):
            assert patches[f] == [1], f"layer {layer} frame {f}: only the changing patch is novel"
        assert memstream_state(session.cache)["removed"][layer] == {"selected": 15, "merged": 0}
    rows = sum(session.cache.lengths())
    assert session.kv_bytes == per_row_bytes(adapter) * rows
    assert full.kv_bytes - session.kv_bytes == per_row_bytes(adapter) * adapter.num_layers * 15


@pytest.mark.parametrize("min_keep", [1, 2])
def test_a_static_stream_keeps_min_keep_per_frame(min_keep):
    adapter = _tiny("tiny-embedded")
    policy = make_policy("hermes-memstream", budget=10_000, tau=0.95, min_keep=min_keep)
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=2))
    session.ingest(quadrant_frames(6, changing=False))
    for layer in range(adapter.num_layers):
        counts = {f: len(p) for f, p in video_patches(session, layer).items()}
        assert counts == {0: 4, **{f: min_keep for f in range(1, 6)}}


# ------------------------------------------------------- patch compression
def test_greedy_merge_follows_similarity_adjacency_and_budget():
    a, b, c = torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    strip = lambda n: patch_coords(torch.arange(n), None, None)  # noqa: E731 - 1-D: not a square count
    assert greedy_merge(torch.stack([a, a, b, b, c]), strip(5), budget=3) == [[0, 1], [2, 3], [4]]
    # 0 and 2 are identical but not neighbours: the budget is met through the middle token instead
    near_a = torch.tensor([0.9, 0.1, 0.0])
    assert greedy_merge(torch.stack([a, near_a, a]), strip(3), budget=2) in ([[0, 1], [2]], [[0], [1, 2]])
    # 2x2 grid (row-major): 0-3 and 1-2 are diagonal, so the identical pairs (0, 3) cannot merge directly
    grid = patch_coords(torch.arange(4), None, 4)
    assert grid.tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]]
    assert greedy_merge(torch.stack([a, b, a, b]), grid, budget=2) == [[0, 2], [1, 3]]
    # dynamic: merge_tau collapses a static frame to min_keep but leaves a busy one alone
    static = torch.stack([a, a, a, a]) + 1e-3 * torch.randn(4, 3)
    assert len(greedy_merge(static, grid, budget=None, merge_tau=0.9, min_keep=1)) == 1
    assert len(greedy_merge(static, grid, budget=None, merge_tau=0.9, min_keep=2)) == 2
    busy = torch.stack([a, b, c, -a])
    assert greedy_merge(busy, grid, budget=None, merge_tau=0.9) == [[0], [1], [2], [3]]
    assert len(greedy_merge(busy, grid, budget=3, merge_tau=0.9)) == 3, "the budget is a hard cap"
    # M-RoPE: the (h, w) position axes are the grid
    pos = torch.tensor([[5, 5, 5, 5], [7, 7, 8, 8], [7, 8, 7, 8]])
    assert patch_coords(torch.arange(4), pos, 4).tolist() == [[7, 7], [7, 8], [8, 7], [8, 8]]


def test_patch_compression_merges_to_the_budget_with_hand_computed_means():
    """Left half one colour, right half another: each frame's 2x2 patches merge by column,
    and each merged row is the mean of its members' keys rotated to the representative's position."""
    adapter = _tiny("tiny-embedded")
    frames = []
    for i, (left, right) in enumerate([(RED, BLUE), (GREEN, COLOURS["yellow"])]):
        img = np.zeros((64, 64, 3), np.uint8)
        img[:, :32], img[:, 32:] = left, right
        frames.append(Frame(index=i, time=i / 2, image=img))
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=2))
    session.ingest(frames)
    before = snapshot(session)
    full_bytes = session.kv_bytes
    policy = make_policy("hermes-memstream", budget=10_000, tau=None, patch_budget=2)
    session.policy = policy
    policy.after_chunk(session)
    cache, rotary = session.cache, adapter.rotary
    for layer in range(adapter.num_layers):
        k0, v0, p0, f0, q0 = before[layer]
        # representatives: the first patch of each column
        assert video_patches(session, layer) == {0: [0, 1], 1: [0, 1]}
        merged = memstream_state(cache)["reduced"][layer]["merged"]
        assert sorted(merged) == [(0, [0, 2]), (0, [1, 3]), (1, [0, 2]), (1, [1, 3])]
        meta, pos = cache.meta(layer), cache.positions(layer)
        assert row_sizes(cache, layer)[meta.is_video].tolist() == [2, 2, 2, 2]
        for frame, members in merged:
            old = [int(torch.nonzero((f0 == frame) & (q0 == p)).flatten()[0]) for p in members]
            new = int(torch.nonzero((meta.frame == frame) & (meta.patch == members[0])).flatten()[0])
            assert torch.equal(pos[:, new], p0[:, old[0]]), "the merged row keeps the representative's position"
            rotated = [rotary.rotate(k0[:, :, i : i + 1], p0[:, old[0] : old[0] + 1] - p0[:, i : i + 1]) for i in old]
            want_k = torch.cat(rotated, dim=2).mean(dim=2)
            assert torch.allclose(cache.keys(layer)[:, :, new], want_k, atol=1e-5)
            assert torch.allclose(cache.values(layer)[:, :, new], v0[:, :, old].mean(dim=2), atol=1e-6)
        # rows that were not video are untouched
        assert torch.equal(cache.keys(layer)[:, :, ~meta.is_video], k0[:, :, f0 < 0])
    assert full_bytes - session.kv_bytes == per_row_bytes(adapter) * adapter.num_layers * 4


@pytest.mark.parametrize("name", ["tiny-embedded", "tiny-qwen2-vl"])
def test_hermes_memstream_holds_its_budget_and_the_per_frame_budget(name):
    adapter = _tiny(name)
    frames = list(SyntheticVideo(seed=3, frames=12, width=64, height=64).frames())
    budget = 7
    policy = make_policy("hermes-memstream", budget=budget, tau=0.99, patch_budget=3)
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=2))
    per_chunk_max = []
    for start in range(0, 12, 2):
        session.ingest(frames[start : start + 2])
        for layer in range(adapter.num_layers):
            assert session.cache.video_count(layer) <= budget
            for frame, patches in video_patches(session, layer).items():
                assert len(patches) <= 3, f"frame {frame} exceeds the per-frame budget"
        per_chunk_max.append(max(session.cache.video_count(i) for i in range(adapter.num_layers)))
    assert per_chunk_max[-1] == budget, "later chunks fill the budget and HERMES prunes to it"
    summary = sum(int((session.cache.meta(i).frame == -2).sum()) for i in range(adapter.num_layers))
    assert session.kv_bytes == per_row_bytes(adapter) * sum(session.cache.lengths())
    assert sum(session.cache.lengths()) <= adapter.num_layers * (session.sink_len + budget) + summary
    answer = session.ask(QUESTION, max_new_tokens=2)
    assert answer.kv_bytes == session.kv_bytes


# --------------------------------------------------------------- the rankers
def test_synthetic_ranker_ranks_frames_showing_the_named_colour_or_shape_first():
    video = SyntheticVideo(seed=5, frames=24, width=64, height=64)
    images = [f.image for f in video.frames()]
    log = video.events  # only the test peeks at the ground truth
    ranker = SyntheticRanker()
    checked = 0
    for colour in COLOURS:
        has = torch.tensor([log.state_at(i).find(colour=colour) is not None for i in range(24)])
        if not has.any() or has.all():
            continue
        scores = ranker.score(images, f"When did the {colour} object appear?")
        assert scores.shape == (24,) and scores.dtype == torch.float32
        assert float(scores[has].min()) > float(scores[~has].max()), colour
        checked += 1
    assert checked >= 3
    circle = torch.tensor([log.state_at(i).find(shape="circle") is not None for i in range(24)])
    assert circle.any() and not circle.all()
    scores = ranker.score(images, "Where is the circle?")
    assert float(scores[circle].min()) > float(scores[~circle].max())
    assert torch.equal(ranker.score(images, "What happened?"), torch.zeros(24)), "no colour or shape: no opinion"


def test_clip_ranker_with_a_missing_path_fails_clearly_without_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="no model directory at /no/such/clip-dir"):
        ClipRanker("/no/such/clip-dir")
    with pytest.raises(PolicyError, match="no model directory"):
        make_policy("memstream", budget=8, ranker="clip:/no/such/clip-dir")


def test_clip_ranker_scores_are_image_text_cosines():
    """A tiny random CLIP (built from a config, no download) through the ranker's scoring path."""
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(
        text_config=dict(vocab_size=260, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=77, eos_token_id=2, bos_token_id=1,
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16,
    )
    torch.manual_seed(0)
    model = CLIPModel(cfg).eval()

    class Processor:  # bytes as token ids; images resized to 32 and scaled to [-1, 1]
        def __call__(self, text=None, images=None, return_tensors="pt", **kwargs):
            if text is not None:
                ids = [1, *[3 + (b % 250) for b in text[0].encode()][:70], 2]
                return {"input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long)}
            x = torch.stack([torch.as_tensor(np.asarray(i)).permute(2, 0, 1).float() for i in images]) / 127.5 - 1
            return {"pixel_values": torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear")}

    processor = Processor()
    ranker = ClipRanker("tiny-clip", model=model, processor=processor, batch_size=2)
    images = [f.image for f in SyntheticVideo(seed=1, frames=3, width=64, height=64).frames()]
    query = "<|im_start|>user\nWhere is the red circle?<|im_end|>"
    scores = ranker.score(images, query)
    with torch.no_grad():
        t = processor(text=["Where is the red circle?"])
        text = ranker._features(model.get_text_features(**t))
        img = ranker._features(model.get_image_features(**processor(images=images)))
    want = torch.nn.functional.cosine_similarity(img, text, dim=-1)
    assert scores.shape == (3,) and torch.allclose(scores, want, atol=1e-5)


# ------------------------------------------------------------ fusion and bias
def test_temporal_bias_and_detrending_remove_a_planted_trend():
    t = torch.arange(30, dtype=torch.float32)
    gen = torch.Generator().manual_seed(0)
    bump = torch.zeros(30)
    bump[3] = 3.0  # the truly relevant frame, early in the stream
    scores = 0.3 * t + 0.5 * torch.randn(30, generator=gen) + bump  # similarity rising over the stream
    before = temporal_bias(scores, t)
    assert before["slope"] == pytest.approx(float(np.polyfit(t.numpy(), scores.numpy(), 1)[0]), rel=1e-5)
    ranks = np.argsort(np.argsort(scores.numpy()))  # no ties here
    assert before["rho"] == pytest.approx(float(np.corrcoef(ranks, t.numpy())[0, 1]), rel=1e-6)
    assert before["rho"] > 0.95
    for method in ("ls", "theil-sen"):
        flat = detrend(scores, t, method)
        after = temporal_bias(flat, t)
        assert abs(after["rho"]) < 0.3, method
        assert float(flat.mean()) == pytest.approx(float(scores.mean()), abs=1e-4), "detrending keeps the mean"
    assert abs(temporal_bias(detrend(scores, t, "ls"), t)["slope"]) < 1e-5, "least squares leaves no slope"
    assert theil_sen_slope(scores, t) == pytest.approx(0.3, abs=0.05), "the outlier does not tilt Theil-Sen"
    # retrieval: the raw scores pick late frames, the detrended fusion picks the planted one first
    assert select_fused(scores, scores, 1).tolist() == [int(torch.argmax(scores))] and int(torch.argmax(scores)) > 20
    for method in (True, "theil-sen"):
        fused = fuse_scores(scores, None, t, beta=0.0, detrend_internal=method)
        assert select_fused(fused, scores, 1).tolist() == [3]
        assert temporal_bias(fused, t)["rho"] < before["rho"] - 0.6


def test_least_squares_detrending_leaves_a_rank_trend_behind_an_outlier():
    """Why Theil-Sen is offered: one very relevant early frame tilts the least-squares fit."""
    t = torch.arange(20, dtype=torch.float32)
    scores = 0.3 * t + 0.05 * torch.sin(7 * t)
    scores[3] += 8.0
    assert temporal_bias(detrend(scores, t, "ls"), t)["rho"] > 0.5
    assert abs(temporal_bias(detrend(scores, t, "theil-sen"), t)["rho"]) < 0.3
    with pytest.raises(ValueError, match="detrend method"):
        detrend(scores, t, "quadratic")


def test_temporal_bias_edge_cases_and_normalise():
    assert temporal_bias(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0, 1, 2]))["rho"] == pytest.approx(1.0)
    tied = temporal_bias(torch.tensor([3.0, 2.0, 2.0, 1.0]), torch.arange(4))
    assert tied["rho"] == pytest.approx(-0.9486833, abs=1e-6)  # average ranks for the tie
    assert math.isnan(temporal_bias(torch.ones(4), torch.arange(4))["rho"])
    assert math.isnan(temporal_bias(torch.ones(1), torch.arange(1))["slope"])
    z = normalise(torch.tensor([1.0, 3.0, math.nan]))
    assert torch.allclose(z, torch.tensor([-1.0, 1.0, 0.0])), "no opinion = the mean"
    assert torch.equal(normalise(torch.tensor([2.0, 4.0, 3.0]), "minmax"), torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(normalise(torch.ones(3)), torch.zeros(3))
    # beta = 1: the external expert decides; ties are broken by the cache score
    internal, external = torch.tensor([5.0, 1.0, 3.0, 0.0]), torch.tensor([0.0, 1.0, 1.0, 0.0])
    fused = fuse_scores(internal, external, torch.arange(4), beta=1.0, detrend_internal=False)
    assert select_fused(fused, internal, 1).tolist() == [2]
    assert select_fused(fused, internal, 3).tolist() == [0, 1, 2]


# ----------------------------------------------------------- the policy
def memstream_session(adapter, frames, chunk=2, **params):
    unit = adapter.tokens_per_frame(64, 64)
    params.setdefault("budget", 2 * unit)
    params.setdefault("retrieve_frames", 2)
    policy = make_policy("memstream", **params)
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=chunk))
    session.ingest(frames)
    return session


def test_beta_zero_without_detrending_is_rekv():
    adapter = _tiny("tiny-embedded")
    frames = list(SyntheticVideo(seed=3, frames=12, width=64, height=64).frames())
    ms = memstream_session(adapter, frames, beta=0.0, detrend=False)
    unit = adapter.tokens_per_frame(64, 64)
    rekv_policy = make_policy("rekv", budget=2 * unit, retrieve_frames=2)
    rekv = StreamingSession(adapter, rekv_policy, SessionConfig(chunk_frames=2))
    rekv.ingest(frames)
    assert ms.kv_bytes == rekv.kv_bytes
    got, want = ms.question_logits(QUESTION), rekv.question_logits(QUESTION)
    assert rekv_state(ms.cache)["retrieved"] == rekv_state(rekv.cache)["retrieved"]
    assert torch.equal(got, want)
    last = memstream_state(ms.cache)["last"]
    assert [last[i]["chosen"] for i in range(adapter.num_layers)] == rekv_state(ms.cache)["retrieved"]


def test_beta_one_retrieves_what_the_ranker_prefers():
    adapter = _tiny("tiny-embedded")
    video = SyntheticVideo(seed=5, frames=16, width=64, height=64)
    frames = list(video.frames())
    log = video.events
    ms = memstream_session(adapter, frames, beta=1.0, detrend=False, retrieve_frames=3)
    offloaded = sorted({b.frame for layer in rekv_state(ms.cache)["blocks"] for b in layer})
    assert len(offloaded) == 14
    # a colour shown in some offloaded frames (at least 3) but not in all of them
    colour = next(c for c in COLOURS
                  if 3 <= sum(log.state_at(f).find(colour=c) is not None for f in offloaded) < len(offloaded))
    showing = {f for f in offloaded if log.state_at(f).find(colour=colour) is not None}
    question = f"When was the {colour} object visible?"
    rekv = StreamingSession(adapter, make_policy("rekv", budget=8, retrieve_frames=3), SessionConfig(chunk_frames=2))
    rekv.ingest(frames)
    rekv.question_logits(question)
    ms.question_logits(question)
    retrieved = rekv_state(ms.cache)["retrieved"]
    thumbs = memstream_state(ms.cache)["thumbs"]
    ext = SyntheticRanker().score([thumbs[f] for f in offloaded], ms.template.question_text(question))
    for layer in range(adapter.num_layers):
        assert set(retrieved[layer]) <= showing, f"layer {layer} retrieved a frame without {colour}"
        last = memstream_state(ms.cache)["last"][layer]
        assert torch.allclose(last["external"], ext), "the ranker scored the offloaded thumbnails"
        third = float(torch.sort(ext, descending=True).values[2])
        assert len(retrieved[layer]) == 3
        assert all(float(ext[offloaded.index(f)]) >= third for f in retrieved[layer]), "the ranker's top 3"
    assert any(not set(r) <= showing for r in rekv_state(rekv.cache)["retrieved"]), "the cache alone would not"


def test_memstream_ask_leaves_the_cache_bit_identical_and_holds_the_window():
    adapter = _tiny("tiny-qwen2-vl")
    frames = list(SyntheticVideo(seed=3, frames=12, width=64, height=64).frames())
    unit = adapter.tokens_per_frame(64, 64)
    session = memstream_session(adapter, frames, budget=unit + 1, tau=0.99, patch_budget=3)
    cache = session.cache
    for layer in range(adapter.num_layers):
        assert cache.video_count(layer) == unit + 1, "the window is exact in (reduced) tokens"
        for block in rekv_state(cache)["blocks"][layer]:
            assert block.keys.shape[-2] <= 3, "offloaded blocks are compressed frames"
    assert session.kv_bytes == per_row_bytes(adapter) * adapter.num_layers * (session.sink_len + unit + 1)
    assert thumbnail_bytes(cache) == 12 * 64 * 64 * 3
    before, next_position, kv_bytes = snapshot(session), session.next_position, session.kv_bytes
    answer = session.ask("Where was the red circle?", max_new_tokens=3)
    assert answer.kv_bytes == kv_bytes and answer.ttft_ms > 0
    assert_identical(session, before)
    session.question_logits("Which colour?", options=["red", "blue"])
    assert_identical(session, before)
    assert session.next_position == next_position and "saved" not in rekv_state(cache)
    last = memstream_state(cache)["last"]
    assert set(last) == set(range(adapter.num_layers))
    assert all({"rho", "slope"} <= set(last[i]["bias_fused"]) for i in last)


def test_every_chunk_is_seen_and_frames_without_thumbnails_get_no_opinion():
    adapter = _tiny("tiny-embedded")
    frames = list(SyntheticVideo(seed=3, frames=8, width=64, height=64).frames())
    session = memstream_session(adapter, frames, beta=1.0)
    thumbs = memstream_state(session.cache)["thumbs"]
    assert sorted(thumbs) == list(range(8)), "the session hands every chunk's frames to the policy"
    assert np.array_equal(thumbs[5], frames[5].image)
    del thumbs[0], thumbs[1]  # as if those frames had never been shown to the policy
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session.question_logits("Where is the red object?")
    assert any("no thumbnail" in str(w.message) for w in caught)
    last = memstream_state(session.cache)["last"][0]
    missing = [i for i, f in enumerate(last["frames"].tolist()) if f < 2]
    assert missing and torch.isnan(last["external"][missing]).all()

