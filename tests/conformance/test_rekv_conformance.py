"""hermes-lab's ``rekv`` policy against ReKV as released: block vectors, retrieval scores, the frames
retrieved, and (with ``window_at_question=False``) the question-time layout.

``fixtures/rekv_release.json`` holds what ReKV's own ``_append_global`` and ``_calc_block_topk`` returned
on random keys and questions (run), and the layout ``get_retrieved_kv`` builds (read). ReKV keeps keys
before RoPE; hermes-lab caches them after RoPE and un-rotates, so here the fixture's keys are first
rotated to stream positions, as a model would have cached them.
"""

from __future__ import annotations

import pytest
import torch
from conformance_fixtures import load, qwen2_rotary, write

from hermes_policy.cache import CompactCache
from hermes_policy.policies import make_policy
from hermes_policy.policies.rekv import ReKVPolicy, block_mean_key, question_vector, score_blocks, select_blocks
from hermes_policy.tokens import TokenMeta

pytestmark = pytest.mark.conformance

DOC, T = load("rekv_release")
CASES = {c["case"]: c for c in DOC["cases"]}
ROTARY = qwen2_rotary(1e6, 8, 32768)


def rotated(case: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(keys, their (1, N) positions, question queries, their positions), after RoPE at stream positions."""
    keys, query = T[f"{case['case']}.keys"], T[f"{case['case']}.query"]
    n, q = keys.shape[-2], query.shape[-2]
    kpos, qpos = torch.arange(n)[None], torch.arange(n, n + q)[None]
    return ROTARY.rotate(keys, kpos), kpos, ROTARY.rotate(query, qpos), qpos


def blocks(case: dict, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(frames, Hkv, D): hermes-lab's mean key of each frame."""
    p, b = case["n_init"], case["block_size"]
    return torch.stack([block_mean_key(ROTARY, keys[:, :, p + f * b : p + (f + 1) * b],
                                       positions[:, p + f * b : p + (f + 1) * b])
                        for f in range(case["frames"])])


@pytest.mark.parametrize("name", sorted(CASES))
def test_block_scores_and_retrieval_are_rekvs(name):
    case = CASES[name]
    keys, kpos, query, qpos = rotated(case)
    means = blocks(case, keys, kpos)
    group = case["heads"] // case["kv_heads"]
    if f"{name}.block_vectors" in T:  # ReKV's block vector repeats each KV head's mean key for its query heads
        theirs = T[f"{name}.block_vectors"].view(case["frames"], case["heads"], case["head_dim"])
        torch.testing.assert_close(means.repeat_interleave(group, dim=1), theirs, atol=1e-5, rtol=1e-5)
    scores = score_blocks(question_vector(ROTARY, query, qpos, case["kv_heads"]), means)
    if f"{name}.similarity" in T:
        torch.testing.assert_close(scores, T[f"{name}.similarity"], atol=1e-4, rtol=1e-4)
    chosen = select_blocks(scores, case["topk"]).tolist()
    if case["ties"]:
        # exactly equal blocks score equal in ReKV, which keeps keys before RoPE; here each key is un-rotated
        # from its own position, and the float noise of that breaks the tie (a documented difference)
        assert len(chosen) == case["topk"]
    else:
        assert chosen == case["retrieved"]


def _window_cache(case: dict) -> CompactCache:
    """ReKV's stream in a one-layer cache: the init rows as the sink, every frame still in the window."""
    keys = T[f"{case['case']}.keys"]
    p, b, n = case["n_init"], case["block_size"], keys.shape[-2]
    meta = TokenMeta.cat([TokenMeta.text(p)]
                         + [TokenMeta.frame_tokens(f, float(f), 0, b) for f in range(case["frames"])])
    cache = CompactCache(1, ROTARY)
    write(cache, torch.arange(n)[None], meta, [keys], [torch.randn(keys.shape)])
    return cache


@pytest.mark.parametrize("name", ["gqa", "mha", "window_not_full"])
def test_release_mode_retrieves_among_every_frame_and_drops_the_window(name):
    case = CASES[name]
    cache = _window_cache(case)
    policy = make_policy("rekv", budget=10_000, **{**ReKVPolicy.RELEASE, "retrieve_frames": case["topk"]})
    query = T[f"{name}.query"]
    qpos = torch.arange(cache.next_position, cache.next_position + query.shape[-2])[None]
    vector = question_vector(ROTARY, ROTARY.rotate(query, qpos), qpos, case["kv_heads"])
    chosen = policy.retrieve(cache, 0, vector)
    assert [b.frame for b in chosen] == case["retrieved"]
    keys_before, positions_before = cache.keys(0).clone(), cache.positions(0).clone()
    end = policy._load(cache, 0, chosen, window_too=False)
    p, b = case["n_init"], case["block_size"]
    layout = DOC["read_not_run"]["example"] if name == "gqa" else None
    assert cache.positions(0)[0].tolist() == list(range(p + b * len(chosen))), "[init][frames], contiguous from 0"
    assert end == p + b * len(chosen)
    if layout is not None:
        assert layout["retrieved"] == case["retrieved"] and end == layout["question_starts_at"]
    rows = torch.cat([torch.arange(p)] + [torch.arange(p + f * b, p + (f + 1) * b) for f in case["retrieved"]])
    moved = ROTARY.rotate(keys_before[:, :, rows], cache.positions(0) - positions_before[:, rows])
    torch.testing.assert_close(cache.keys(0), moved, atol=1e-5, rtol=1e-5)
    assert cache.meta(0).frame[p:].unique().tolist() == case["retrieved"]


def test_default_keeps_the_window_and_retrieves_only_what_left_it():
    case = CASES["gqa"]
    cache = _window_cache(case)
    policy = make_policy("rekv", budget=10_000, retrieve_frames=case["topk"])
    assert policy.candidate_blocks(cache, 0) == [], "nothing has left the window"
