"""hermes-lab's ``snapkv`` policy, in its kvpress options (``SnapKVPolicy.RELEASE``), against kvpress's SnapKVPress.

The fixture holds what kvpress's own ``score`` and ``compress`` returned on random queries and keys
(``fixtures/snapkv_kvpress.json`` names the commit and functions). With one KV head the policy must keep
the same tokens; with more, kvpress keeps each head's own tokens, which one cache row list per layer
cannot, so there the policy's score must be the mean of kvpress's per-head scores.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from conformance_fixtures import load, qwen2_rotary, write

from hermes_policy.attention import AttentionEvent
from hermes_policy.cache import CompactCache
from hermes_policy.policies import make_policy
from hermes_policy.policies.snapkv import SnapKVPolicy, window_votes
from hermes_policy.tokens import TokenMeta

pytestmark = pytest.mark.conformance

DOC, T = load("snapkv_kvpress")
CASES = {c["case"]: c for c in DOC["cases"]}


def event(case: dict) -> AttentionEvent:
    """The chunk's forward as the policy's observer sees it: every row is a new query (no earlier cache)."""
    q, k = T[f"{case['case']}.query"], T[f"{case['case']}.key"]
    return AttentionEvent(layer=0, phase="ingest", query=q, key=k, value=None, cache=None,
                          scaling=case["head_dim"] ** -0.5)


def options(case: dict) -> dict:
    return {**SnapKVPolicy.RELEASE, "window": case["window_size"], "pool": case["kernel_size"]}


@pytest.mark.parametrize("name", sorted(CASES))
def test_scores_are_kvpress_scores(name):
    case = CASES[name]
    o = options(case)
    votes = window_votes(event(case), o["window"], o["pool"], o["pooling"], o["votes"], o["keep_window"])
    theirs = T[f"{name}.scores"][0]  # (Hkv, S)
    w = case["window_size"]
    torch.testing.assert_close(votes[:-w], theirs.mean(dim=0)[:-w], atol=1e-7, rtol=1e-5)
    assert bool((votes[-w:] > votes[:-w].max()).all()), "the observation window is always kept"
    if case["kv_heads"] == 1:
        torch.testing.assert_close(votes, theirs[0], atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name", sorted(n for n, c in CASES.items() if c["kv_heads"] == 1))
def test_one_kv_head_keeps_the_tokens_kvpress_keeps(name):
    case = CASES[name]
    s, d = case["seq_len"], case["head_dim"]
    cache = CompactCache(1, qwen2_rotary(1e6, d, 4096))
    meta = TokenMeta.cat([TokenMeta.frame_tokens(f, float(f), 0, 4) for f in range(s // 4)])
    write(cache, torch.arange(s)[None], meta, [torch.randn(1, 1, s, d)], [torch.zeros(1, 1, s, d)])
    policy = make_policy("snapkv", budget=case["n_kept"], **options(case))
    policy.observers()[0].observe(event(case))  # the forward's votes, as the session's observer gets them
    policy.after_chunk(SimpleNamespace(cache=cache))
    assert cache.positions(0)[0].tolist() == sorted(case["kept_per_head"][0])


def test_hermes_lab_defaults_are_not_kvpress():
    case = CASES["one_head_half"]
    ours = window_votes(event(case), 16, 5, "avg")  # sum of votes, window not kept: hermes-lab's streaming variant
    assert not torch.allclose(ours, T["one_head_half.scores"][0], atol=1e-3)
