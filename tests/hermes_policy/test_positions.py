"""Chunk positions agree with what the model families expect."""

from __future__ import annotations

import torch
from conftest import _tiny

from hermes_policy import SessionConfig, StreamingSession


def test_qwen_video_positions_match_get_rope_index(frames):
    """One chunk laid out after a text prefix equals HF's 3-D rope index for [text][video]."""
    adapter = _tiny("tiny-qwen2-vl")
    prefix = adapter.encode_text("<|im_start|>user\n<|vision_start|>", 0)
    chunk = adapter.encode_frames(frames[:4], prefix.end_position)
    n_video = len(chunk)
    _, grid = adapter.pixel_values(frames[:4])
    video_id = adapter.model.config.video_token_id
    ids = torch.cat([torch.zeros(len(prefix), dtype=torch.long), torch.full((n_video,), video_id)])[None]
    types = torch.cat([torch.zeros(len(prefix), dtype=torch.long), torch.full((n_video,), 2)])[None]
    hf, _ = adapter.model.model.get_rope_index(ids, mm_token_type_ids=types, video_grid_thw=grid)
    ours = torch.cat([prefix.positions, chunk.positions], dim=1)
    assert torch.equal(hf[:, 0], ours)


def test_text_after_video_starts_past_every_axis(frames):
    adapter = _tiny("tiny-qwen2.5-vl")
    session = StreamingSession(adapter, config=SessionConfig(chunk_frames=8))
    session.ingest(frames[:8])
    top = max(int(session.cache.positions(0).max()), 0)
    assert session.next_position == top + 1
    question = adapter.encode_question("hi", session.next_position)
    assert int(question.positions.min()) > top
    # Qwen2.5-VL spaces temporal positions by time: 4 groups, 1 s apart at 2 fps, 2 positions per second
    video = session.cache.meta(0).is_video
    t_axis = session.cache.positions(0)[0, video]
    assert sorted(set((t_axis - t_axis.min()).tolist())) == [0, 2, 4, 6]


def test_one_d_positions_are_consecutive(frames):
    adapter = _tiny("tiny-llava-ov")
    session = StreamingSession(adapter)
    session.ingest(frames[:8])
    pos = session.cache.positions(0)[0]
    assert torch.equal(pos, torch.arange(len(pos)))
