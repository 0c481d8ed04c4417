"""Per-layer tails (``CompactCache.layer_tails``): each layer continues one past its own last row.

Only relative positions reach attention under RoPE, so a cache with tails must answer exactly as the
same cache with every layer's rows moved so that it ends where the stream's next position begins,
without tails. The second cache is built by re-indexing, the first by the shifts of the forward.
"""

from __future__ import annotations

import pytest
import torch
from conftest import _tiny

from hermes_policy import SessionConfig, StreamingSession


class Rows:
    def __init__(self) -> None:
        self.rows: dict[int, torch.Tensor] = {}

    def observe(self, event) -> None:
        self.rows[event.layer] = event.attention()[..., : event.n_key - event.n_query]


def _session(name, frames) -> StreamingSession:
    """Two frames cached, then each layer loses a different number of its newest rows."""
    session = StreamingSession(_tiny(name), config=SessionConfig(chunk_frames=2))
    session.ingest(frames[:2])
    cache = session.cache
    for layer in range(cache.num_layers):
        cache.evict(layer, torch.arange(cache.layer_len(layer) - 2 * (layer + 1)))
    return session


@pytest.mark.parametrize("name", ["tiny-llava-ov", "tiny-qwen2-vl"])  # 1-D RoPE and M-RoPE
def test_tails_answer_as_a_cache_moved_to_the_stream_end(name, frames):
    tails, moved = _session(name, frames), _session(name, frames)
    tails.cache.layer_tails = True
    tails.next_position = tails.cache.next_position  # what the session does after a policy evicted
    start = moved.cache.next_position
    for layer in range(moved.cache.num_layers):
        positions = moved.cache.positions(layer)
        moved.cache.reindex(layer, positions + (start - 1 - int(positions.max())))
    moved.next_position = start
    assert len({int(tails.cache.positions(i).max()) for i in range(tails.cache.num_layers)}) > 1

    torch.testing.assert_close(tails.question_logits("What?"), moved.question_logits("What?"), atol=1e-4, rtol=1e-4)
    probes = []
    for session in (tails, moved):  # the embedding-level pseudo-query rotates the prompt to each layer's tail
        rows = Rows()
        with session.observing(rows):
            session.pseudo_queries({"global": "What happened?"}, depth="embedding", templated=False, causal=False)
        probes.append(rows.rows)
    for layer in probes[0]:
        torch.testing.assert_close(probes[0][layer], probes[1][layer], atol=1e-5, rtol=1e-4)

    before = [tails.cache.positions(i) for i in range(tails.cache.num_layers)]
    for session in (tails, moved):  # a chunk written on top: each layer's new rows start at its own tail
        session.ingest(frames[2:4])
    for layer, old in enumerate(before):
        new = tails.cache.positions(layer)[:, old.shape[1]:]
        assert int(new.min()) == int(old.max()) + 1, f"layer {layer}: one past its last row"
    torch.testing.assert_close(tails.question_logits("Then?"), moved.question_logits("Then?"), atol=1e-4, rtol=1e-4)


def test_without_tails_new_rows_take_the_stream_positions(frames):
    session = _session("tiny-llava-ov", frames)
    start = session.next_position
    session.ingest(frames[2:4])
    assert int(session.cache.positions(0)[0, -2 * session.tokens_per_frame]) == start
