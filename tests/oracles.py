"""Oracles shared by tests: the stream as one sequence, and the unmodified HF model's logits on it."""

from __future__ import annotations

import torch

from hermes_policy import StreamingSession
from hermes_policy.mc_format import format_question
from hermes_policy.models.base import EncodedChunk


def full_sequence(adapter, session: StreamingSession, frames, question: str) -> tuple[EncodedChunk, int]:
    """The same tokens at the same positions, built without the session's cache; and the question's length."""
    parts = [adapter.encode_text(session.template.prefix, 0)]
    step = session.chunk_frames
    for i in range(0, len(frames), step):
        parts.append(adapter.encode_frames(frames[i : i + step], parts[-1].end_position if i else len(parts[0])))
    text = session.template.question_text(format_question(question, None))
    parts.append(adapter.encode_question(text, max(p.end_position for p in parts)))
    return EncodedChunk.cat(parts), len(parts[-1])


def reference_logits(adapter, seq: EncodedChunk, implementation: str) -> torch.Tensor:
    adapter.set_attention(implementation)
    try:
        with torch.no_grad():
            out = adapter.model(
                inputs_embeds=seq.embeds[None], position_ids=adapter.position_ids(seq.positions), use_cache=False
            )
    finally:
        adapter.set_attention("hermes")
    return out.logits[0, -1].float()
