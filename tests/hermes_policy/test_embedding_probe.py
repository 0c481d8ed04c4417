"""The embedding-level pseudo-query (HERMES's sdpa / flash scoring path) against the deep forward."""

from __future__ import annotations

import pytest
import torch

from hermes_policy import SessionConfig, StreamingSession
from hermes_policy.errors import PolicyError
from hermes_policy.policies import make_policy

PROMPTS = {"global": "What has happened so far?", "mixed": "What is on screen now, and before?"}


class Rows:
    """Every probe event's per-segment attention rows, by (tag, layer)."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, int], torch.Tensor] = {}
        self.layers: list[int] = []

    def observe(self, event) -> None:
        self.layers.append(event.layer)
        for seg in event.segments:
            self.rows[(seg.tag, event.layer)] = event.attention(list(range(seg.start, seg.stop)))


def _session(tiny, frames) -> StreamingSession:
    session = StreamingSession(tiny, config=SessionConfig(chunk_frames=4))
    session.ingest(frames[:8])
    session.flush()
    return session


def test_first_layer_equals_the_forward(tiny, frames):
    """Layer 0's attention input *is* the normed embeddings, so there the two depths must agree exactly."""
    session = _session(tiny, frames)
    deep, shallow = Rows(), Rows()
    with session.observing(deep):
        session.pseudo_queries(PROMPTS, depth="forward")
    with session.observing(shallow):
        session.pseudo_queries(PROMPTS, depth="embedding")
    assert deep.rows.keys() == shallow.rows.keys()
    for tag in PROMPTS:
        if tiny.kv_layers[0] != 0:  # a hybrid's first attention layer reads a linear layer's output
            break
        torch.testing.assert_close(shallow.rows[(tag, 0)], deep.rows[(tag, 0)], atol=1e-5, rtol=1e-4)
    # deeper layers read the embeddings, not the residual stream: a different (valid) distribution
    last = tiny.num_layers - 1
    row = shallow.rows[("global", last)]
    torch.testing.assert_close(row.sum(-1), torch.ones_like(row.sum(-1)))
    n_cache = session.cache.layer_len(last)  # a hybrid's forwards are one per prompt: compare the cache columns
    assert not torch.allclose(row[..., :n_cache], deep.rows[("global", last)][..., :n_cache], atol=1e-4)


def test_nothing_is_written_and_unwanted_layers_are_skipped(tiny, frames):
    session = _session(tiny, frames)
    lengths, keys = session.cache.lengths(), session.cache.keys(0).clone()
    rows = Rows()
    with session.observing(rows, layers=[1]):
        session.pseudo_queries(PROMPTS, depth="embedding")
    assert rows.layers == [1], "a layer no observer wants is not computed"
    assert session.cache.lengths() == lengths
    assert torch.equal(session.cache.keys(0), keys)


def test_bad_depth_is_refused(tiny, frames):
    session = _session(tiny, frames)
    with pytest.raises(ValueError, match="depth must be one of"):
        session.pseudo_queries(PROMPTS, depth="deep")
    with pytest.raises(PolicyError, match="pseudo_query must be one of"):
        make_policy("hermes", budget=64, pseudo_query="deep")


@pytest.mark.parametrize("depth", ["embedding", "forward"])
def test_hermes_streams_to_budget_with_either_depth(tiny, frames, depth):
    policy = make_policy("hermes", budget=3 * _tokens(tiny, frames), pseudo_query=depth)
    session = StreamingSession(tiny, policy, SessionConfig(chunk_frames=2))
    session.ingest(frames)
    session.flush()
    budgets = policy.layer_budgets(tiny.num_layers)
    assert all(session.cache.video_count(i) <= b for i, b in enumerate(budgets))
    assert session.ask("What happened?", max_new_tokens=2).answer is not None


def _tokens(tiny, frames) -> int:
    h, w = frames[0].image.shape[:2]
    return tiny.tokens_per_frame(h, w)
