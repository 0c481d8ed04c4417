"""Session fuzz (hypothesis): random interleavings of ingest, ask, evict and re-index under every policy.

Whatever the order, the cache keeps its invariants:

* positions keep time order along each layer's rows (eviction keeps order; re-indexing keeps it dense);
* token metadata has one entry per cached key, in every layer (every KV head of a per-head cache);
* after every ingest, no layer holds more video tokens than its budget;
* a question rolls back bit-identically: keys, values, positions, metadata and the next position.

Fixed seed (``derandomize``) and a small example budget, so CI runs the same cases in a few seconds.
"""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hermes_policy import StreamingSession
from hermes_policy.head_cache import HeadCache
from hermes_policy.policies import POLICIES, keep_rows, make_policy
from hermes_policy.session import SessionConfig
from hermes_policy.video import SyntheticVideo

#: parameters beyond the budget, as the contract test gives them
POLICY_KWARGS = {"rekv": {"retrieve_frames": 2}, "memstream": {"retrieve_frames": 2}}
FAMILIES = ("tiny-embedded", "tiny-qwen2-vl")
FRAMES = list(SyntheticVideo(seed=7, frames=24, width=64, height=64).frames())
OPS = ("ingest 1", "ingest 3", "ingest 5", "ask", "evict", "reindex", "flush")
EXAMPLES = 40


def _row_sets(cache):
    """Every set of rows the cache keeps: a (keys, values, positions, meta) per layer, or per (layer, KV head)
    of a per-head cache."""
    if isinstance(cache, HeadCache):
        return [(cache.head_keys(i, h), cache.head_values(i, h), cache.head_positions(i, h), cache.head_meta(i, h))
                for i in range(cache.num_layers) for h in range(cache.num_kv_heads)]
    empty = torch.empty(0, 0)  # a layer nothing was written to yet has no key tensor
    return [(cache.keys(i) if cache.layer_len(i) else empty, cache.values(i) if cache.layer_len(i) else empty,
             cache.positions(i), cache.meta(i)) for i in range(cache.num_layers)]


def _state(session: StreamingSession) -> list:
    return [session.next_position] + [(k.clone(), v.clone(), p.clone(), m.frame.clone())
                                      for k, v, p, m in _row_sets(session.cache)]


def _same(a: list, b: list) -> bool:
    if a[0] != b[0]:
        return False
    return all(all(torch.equal(x, y) for x, y in zip(la, lb)) for la, lb in zip(a[1:], b[1:]))


def _check_invariants(session: StreamingSession, budgets) -> None:
    for layer, (keys, _, positions, meta) in enumerate(_row_sets(session.cache)):
        n = keys.shape[-2]
        assert positions.shape[-1] == n == len(meta.frame), "metadata out of step with the keys"
        # time order along the first axis (M-RoPE's temporal one: its spatial axes repeat within each frame);
        # a summary slot takes the place (and position) of the oldest row it replaced, so order still holds
        first = positions[0]
        assert bool((first[1:] >= first[:-1]).all()), f"positions not in time order in row set {layer}"


def _random_keep(is_video: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n_video = int(is_video.sum())
    return keep_rows(is_video, torch.randperm(n_video, generator=gen)[: max(1, n_video // 2)].sort().values)


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(policy=st.sampled_from(sorted(POLICIES)), family=st.sampled_from(FAMILIES),
       ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=10), budget_units=st.integers(2, 6))
def test_any_interleaving_keeps_the_cache_invariants(policy, family, ops, budget_units):
    tiny = _tiny(family)
    unit = tiny.tokens_per_frame(64, 64)
    params = dict(POLICY_KWARGS.get(policy, {}))
    if POLICIES[policy].requires_budget:
        params["budget"] = budget_units * unit + 8  # room for one frame unit plus sink tokens
    built = make_policy(policy, **params)
    session = StreamingSession(tiny, built, SessionConfig(chunk_frames=2, reindex="off"))
    budgets = built.layer_budgets(tiny.num_layers)
    fed = 0
    gen = torch.Generator().manual_seed(len(ops))
    for op in ops:
        if op.startswith("ingest") and fed < len(FRAMES):
            n = int(op.split()[1])
            session.ingest(FRAMES[fed : fed + n])
            fed += n
            for layer, b in enumerate(budgets):
                if b is not None:
                    assert session.cache.video_count(layer) <= b, f"layer {layer} over its budget"
        elif op == "flush":
            session.flush()
        elif op == "ask" and session.frames_seen + session.pending_frames > 0:
            session.flush()  # ask flushes first; compare what it must leave untouched
            before = _state(session)
            session.ask("What is there?", max_new_tokens=2)
            assert _same(before, _state(session)), "a question changed the cache"
        elif op == "evict" and session.frames_seen:
            # an outside eviction of random video rows (as a probe or a user might): invariants must hold
            cache = session.cache
            for layer in range(cache.num_layers):
                if isinstance(cache, HeadCache):  # each head its own random rows
                    cache.evict_heads(layer, [_random_keep(cache.head_meta(layer, h).is_video, gen)
                                              for h in range(cache.num_kv_heads)])
                else:
                    cache.evict(layer, _random_keep(cache.meta(layer).is_video, gen))
        elif op == "reindex" and session.frames_seen:
            session.cache.reindex_all()
            session.next_position = max(session.next_position, session.cache.next_position)
        _check_invariants(session, budgets)


@pytest.mark.parametrize("family", FAMILIES)
def test_the_fuzz_reaches_every_operation(family):
    """Not a vacuous fuzz: one fixed sequence with every op runs through on each family."""
    tiny = _tiny(family)
    session = StreamingSession(tiny, make_policy("hermes", budget=3 * tiny.tokens_per_frame(64, 64)),
                               SessionConfig(chunk_frames=2, reindex="off"))
    session.ingest(FRAMES[:5])
    session.flush()
    session.cache.reindex_all()
    before = _state(session)
    session.ask("What is there?", max_new_tokens=1)
    assert _same(before, _state(session))
    assert not _same(before, [before[0] + 1, *before[1:]]), "the comparison can tell states apart"
    _check_invariants(session, [None] * tiny.num_layers)
