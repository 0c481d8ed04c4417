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
    """The last token's logits of one uncached forward of the stock model with stock attention.

    A chunk with DeepStack features (Qwen3-VL) goes through the decoder stack with them, as the full
    model would add them; :func:`qwen3_reference_logits` checks that path against the model fed pixels.
    """
    adapter.set_attention(implementation)
    try:
        with torch.no_grad():
            if seq.deepstack is not None:
                hidden = adapter.text_model(inputs_embeds=seq.embeds[None],
                                            position_ids=adapter.position_ids(seq.positions),
                                            use_cache=False, **adapter.forward_kwargs(seq)).last_hidden_state
                return adapter.lm_head(hidden[0, -1]).float()
            out = adapter.model(
                inputs_embeds=seq.embeds[None], position_ids=adapter.position_ids(seq.positions), use_cache=False
            )
    finally:
        adapter.set_attention("hermes")
    return out.logits[0, -1].float()


def qwen3_prompt(adapter, session: StreamingSession, frames, question: str) -> dict:
    """The stream as Qwen3-VL's processor lays out a video: ``<t seconds><|vision_start|>`` + video pads +
    ``<|vision_end|>`` per frame group, with the pixels, grid and token types the stock model takes."""
    tok, cfg = adapter.tokenizer, adapter.model.config
    from hermes_policy.models.qwen3_vl import timestamp_text

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    pixels, grid = adapter.pixel_values(frames)
    per_group = int(grid[0, 1] * grid[0, 2]) // adapter.merge_size**2
    seq = ids(session.template.prefix)
    start = tok.convert_ids_to_tokens(cfg.vision_start_token_id)
    for seconds in adapter.group_times(frames):
        seq += ids(timestamp_text(seconds) + start) + [cfg.video_token_id] * per_group + [cfg.vision_end_token_id]
    seq += ids(session.template.question_text(format_question(question, None)))
    input_ids = torch.tensor([seq])
    return {"input_ids": input_ids, "pixel_values_videos": pixels, "video_grid_thw": grid,
            "mm_token_type_ids": (input_ids == cfg.video_token_id).long() * 2}


def qwen3_reference_logits(adapter, prompt: dict, implementation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The stock model on token ids and pixels (its own vision pass, DeepStack and ``get_rope_index``): the
    last token's logits, and the (3, n) positions it computed."""
    adapter.set_attention(implementation)
    try:
        with torch.no_grad():
            inner = adapter.model.model
            positions, _ = inner.get_rope_index(prompt["input_ids"], prompt["mm_token_type_ids"],
                                                video_grid_thw=prompt["video_grid_thw"])
            out = adapter.model(**prompt, use_cache=False)
    finally:
        adapter.set_attention("hermes")
    return out.logits[0, -1].float(), positions[:, 0]
