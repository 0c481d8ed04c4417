"""The oracle: streaming through the compact cache equals one full HF forward.

For every family's tiny model, the stream (system prefix, frames in chunks,
then a question) is fed chunk by chunk through :class:`StreamingSession` with
the ``full`` policy, and separately as one sequence through the unmodified HF
model with its stock eager attention. The question's logits must agree.
"""

from __future__ import annotations

import pytest
import torch
from conftest import close
from oracles import full_sequence, reference_logits

from hermes_policy import SessionConfig, StreamingSession


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_streaming_full_policy_matches_one_forward(tiny, frames, implementation):
    session = StreamingSession(tiny, config=SessionConfig(chunk_frames=4))
    session.ingest(frames[:10])  # 2 full chunks + 2 frames left for the flush at ask time
    streamed = session.question_logits("What is happening?")
    seq, n_question = full_sequence(tiny, session, frames[:10], "What is happening?")
    reference = reference_logits(tiny, seq, implementation)
    assert close(streamed, reference, atol=1e-4), (streamed - reference).abs().max()
    # the question was rolled back: every layer holds the prefix and the frames only
    assert session.cache.lengths() == [len(seq) - n_question] * tiny.num_layers


def test_question_leaves_cache_untouched(tiny, frames):
    session = StreamingSession(tiny)
    session.ingest(frames[:8])
    before = [(session.cache.keys(i).clone(), session.cache.positions(i).clone()) for i in range(tiny.num_layers)]
    kv = session.kv_bytes
    answer = session.ask("What colour is the circle?", max_new_tokens=4)
    assert answer.kv_bytes == kv == session.kv_bytes
    for i, (k, p) in enumerate(before):
        assert torch.equal(session.cache.keys(i), k)
        assert torch.equal(session.cache.positions(i), p)
