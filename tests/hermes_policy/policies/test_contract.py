"""The contract every registered memory policy keeps, on every tiny model family (kvpress's press x model matrix).

Policies are taken from the registry, so a newly registered one is covered
without touching this file; it is built with ``make_policy(name, budget=...)``
plus, for the few listed in ``POLICY_KWARGS``, parameters that make the run
exercise more of it. For each (policy, family):

* after every chunk, no layer holds more video tokens than its budget;
* a question leaves the cache (and the session's next position, and the
  policy's state) exactly as it was;
* an impossible budget fails on the first ingest, before anything is written;
* a policy that claims ``exact_under_budget`` equals ``full`` under a budget
  larger than the stream: same cache, same logits.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from hermes_policy import StreamingSession
from hermes_policy.errors import BudgetError
from hermes_policy.head_cache import HeadCache
from hermes_policy.policies import POLICIES, Policy, make_policy
from hermes_policy.session import SessionConfig

#: frames per chunk (Qwen-VL rounds it up to whole temporal groups; 4 already is)
CHUNK = 4
QUESTION = "What colour is the square?"
#: the budget of the pruning runs, in frame units: the 12-frame stream overflows it from the second chunk on
BUDGET_UNITS = 2.5
UNLIMITED = 10**6
#: parameters beyond the budget, only where the defaults would leave part of a policy idle
POLICY_KWARGS: dict[str, dict] = {
    "rekv": {"retrieve_frames": 2},  # the default (8) would bring back almost every offloaded frame
    "memstream": {"retrieve_frames": 2},
}
#: policy_state entries a question writes on purpose: diagnostics of the latest question
QUESTION_DIAGNOSTICS = {("rekv", "retrieved"), ("memstream", "last")}

NAMES = sorted(POLICIES)
EXACT = [n for n in NAMES if POLICIES[n].exact_under_budget and POLICIES[n].requires_budget]


def build(name: str, budget: int | None) -> Policy:
    params = dict(POLICY_KWARGS.get(name, {}))
    if budget is not None:
        params["budget"] = budget
    return make_policy(name, **params)


def unit(adapter, frames) -> int:
    """Video tokens of one frame unit (a Qwen-VL temporal group counts as one)."""
    h, w = frames[0].image.shape[:2]
    return adapter.tokens_per_frame(h, w)


def stream(adapter, policy: Policy, frames, each_chunk=None) -> StreamingSession:
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=CHUNK, max_new_tokens=3))
    for start in range(0, len(frames), session.chunk_frames):
        session.ingest(frames[start : start + session.chunk_frames])
        if each_chunk is not None:
            each_chunk(session)
    assert session.pending_frames == 0, "the stream fills whole chunks, so asking flushes nothing"
    return session


def layers_of(session: StreamingSession) -> list[tuple]:
    """Copies of what every layer holds: keys, values, positions, metadata columns."""
    c = session.cache
    if isinstance(c, HeadCache):  # a per-head cache: per layer, each KV head's own rows
        return [[(c.head_keys(i, h).clone(), c.head_values(i, h).clone(), c.head_positions(i, h).clone(),
                  copy.deepcopy(c.head_meta(i, h))) for h in range(c.num_kv_heads)] for i in range(c.num_layers)]
    return [
        (c.keys(i).clone(), c.values(i).clone(), c.positions(i).clone(), copy.deepcopy(c.meta(i)))
        for i in range(c.num_layers)
    ]


def per_head(layers: list[tuple]) -> list[list[tuple]]:
    """A per-layer cache's :func:`layers_of`, split by KV head as a per-head cache's reads."""
    return [[(k[0, h], v[0, h], p, m) for h in range(k.shape[1])] for k, v, p, m in layers]


def without_diagnostics(state: dict) -> dict:
    state = dict(state)
    for outer, inner in QUESTION_DIAGNOSTICS:
        if isinstance(state.get(outer), dict):
            state[outer] = {k: v for k, v in state[outer].items() if k != inner}
    return state


def assert_same(a, b, where: str) -> None:
    """Exact, NaN-aware equality of nested tensors, arrays, containers and plain objects."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(b, a, rtol=0, atol=0, equal_nan=True, msg=f"{where} changed")
    elif isinstance(a, np.ndarray):
        assert a.shape == b.shape and np.array_equal(a, b), f"{where} changed"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{where}: keys {sorted(map(str, a))} became {sorted(map(str, b))}"
        for k in a:
            assert_same(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: length {len(a)} became {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    elif hasattr(a, "__dict__"):
        assert_same(vars(a), vars(b), where)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{where} changed"
    else:
        assert a == b, f"{where}: {a!r} became {b!r}"


# ------------------------------------------------------------------- contract
@pytest.mark.parametrize("name", NAMES)
def test_budget_holds_and_a_question_changes_nothing(name, tiny, frames):
    cls = POLICIES[name]
    policy = build(name, int(BUDGET_UNITS * unit(tiny, frames)) if cls.requires_budget else None)
    budgets = policy.layer_budgets(tiny.num_layers)

    def budget_holds(session):
        for layer, budget in enumerate(budgets):
            if budget is not None:
                held = session.cache.video_count(layer)
                assert held <= budget, f"layer {layer} holds {held} video tokens over a budget of {budget}"

    session = stream(tiny, policy, frames, budget_holds)
    before = (layers_of(session), session.next_position, copy.deepcopy(without_diagnostics(session.cache.policy_state)))
    session.ask(QUESTION)
    after = (layers_of(session), session.next_position, without_diagnostics(session.cache.policy_state))
    assert_same(before, after, f"{name}: (layers, next_position, policy_state)")


@pytest.mark.parametrize("name", NAMES)
def test_an_impossible_budget_fails_before_the_first_write(name, tiny, frames):
    if not POLICIES[name].requires_budget:
        with pytest.raises(BudgetError):
            build(name, 1)  # it takes no budget at all, and says so when built
        return
    session = StreamingSession(tiny, build(name, unit(tiny, frames) - 1), SessionConfig(chunk_frames=CHUNK))
    with pytest.raises(BudgetError):
        session.ingest(frames[: session.chunk_frames])
    assert session.cache.lengths() == [0] * tiny.num_layers, "no layer has any row"
    assert session.cache.kv_bytes == 0 and session.frames_seen == 0 and session.pending_frames == 0


_FULL: dict[str, tuple] = {}


def full_reference(adapter, frames) -> tuple:
    """``full``'s layers and question logits on this family (computed once per family)."""
    if adapter.name not in _FULL:
        session = stream(adapter, build("full", None), frames)
        _FULL[adapter.name] = (layers_of(session), session.question_logits(QUESTION))
    return _FULL[adapter.name]


@pytest.mark.parametrize("name", EXACT)
def test_exact_under_budget_equals_full(name, tiny, frames):
    layers, logits = full_reference(tiny, frames)
    session = stream(tiny, build(name, UNLIMITED), frames)
    if isinstance(session.cache, HeadCache):
        layers = per_head(layers)
    assert_same(layers, layers_of(session), f"{name}: layers under an unlimited budget")
    assert torch.equal(session.question_logits(QUESTION), logits), f"{name}: logits differ from full's"
