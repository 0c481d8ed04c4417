"""Re-indexed keys equal keys recomputed at the new positions (1-D RoPE and M-RoPE).

The reference applies each model's own rotary module and ``apply_rotary_pos_emb``
at the new positions; ours rotates keys already embedded at the old ones.
"""

from __future__ import annotations

import sys

import pytest
import torch

from hermes_policy import SessionConfig, StreamingSession, make_policy
from hermes_policy.rope import RotarySpec, dense_positions


def model_rope(adapter, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Keys (1, H, S, D) embedded at positions (A, S) by the model's own code."""
    text_model = adapter.text_model
    apply = sys.modules[type(text_model).__module__].apply_rotary_pos_emb
    cos, sin = text_model.rotary_emb(keys, adapter.position_ids(positions))
    _, k = apply(keys, keys, cos, sin)
    return k


def random_positions(n_axes: int, n: int, gen: torch.Generator) -> torch.Tensor:
    steps = torch.randint(0, 40, (n_axes, n), generator=gen)
    return torch.cumsum(steps, dim=1) + 5


def test_rotate_matches_model_rope(tiny):
    gen = torch.Generator().manual_seed(0)
    spec = tiny.rotary
    raw = torch.randn(1, tiny.num_kv_heads, 50, tiny.head_dim, generator=gen)
    old = random_positions(spec.n_axes, 50, gen)
    new = dense_positions(old)
    k_old = model_rope(tiny, raw, old)
    expected = model_rope(tiny, raw, new)
    # float32 angles of positions near 10^3 carry ~1e-5 absolute error in the model's own RoPE
    assert torch.allclose(spec.rotate(k_old, new - old), expected, atol=1e-4)
    # and to arbitrary (non-dense) targets, including larger positions
    far = old + torch.randint(0, 3000, old.shape, generator=gen)
    assert torch.allclose(spec.rotate(k_old, far - old), model_rope(tiny, raw, far), atol=5e-4)
    # and it can fail: one position off everywhere is caught
    wrong = far - old + 1
    assert not torch.allclose(spec.rotate(k_old, wrong), model_rope(tiny, raw, far), atol=5e-4)


def test_mrope_sections_follow_axes():
    spec = RotarySpec.multimodal(torch.ones(8), [2, 3, 3], max_position=100)
    assert spec.axis_of_freq.tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="must sum"):
        RotarySpec.multimodal(torch.ones(8), [2, 2, 2], max_position=100)


def test_dense_positions_keeps_order_and_ties():
    p = torch.tensor([[0, 1, 7, 7, 9, 30], [0, 1, 7, 8, 8, 31], [0, 1, 7, 8, 9, 32]])
    assert dense_positions(p).tolist() == [[0, 1, 2, 2, 3, 4], [0, 1, 2, 3, 3, 4], [0, 1, 2, 3, 4, 5]]


def test_cache_reindex_rotates_kept_keys(tiny, frames):
    """After eviction, eager re-indexing leaves keys equal to a fresh embedding at the compact positions."""
    session = StreamingSession(tiny, make_policy("sink-window", budget=3 * _tpf(tiny, frames)),
                               SessionConfig(chunk_frames=2, reindex="off"))
    session.ingest(frames)
    cache = session.cache
    old_keys, old_pos = cache.keys(1).clone(), cache.positions(1).clone()
    assert not torch.equal(old_pos, dense_positions(old_pos)), "eviction should have left gaps"
    cache.reindex(1)
    new_pos = cache.positions(1)
    assert torch.equal(new_pos, dense_positions(old_pos))
    assert torch.allclose(cache.keys(1), tiny.rotary.rotate(old_keys, new_pos - old_pos), atol=0)
    assert cache.next_position <= session.next_position


def test_eager_reindex_keeps_positions_dense(tiny, frames):
    session = StreamingSession(tiny, make_policy("sink-window", budget=2 * _tpf(tiny, frames)),
                               SessionConfig(chunk_frames=2, reindex="eager"))
    session.ingest(frames)
    for layer in range(tiny.num_layers):
        pos = session.cache.positions(layer)
        assert torch.equal(pos, dense_positions(pos))
    assert session.next_position == session.cache.next_position
    answer = session.ask("What is on screen?", max_new_tokens=3)
    assert answer.kv_bytes == session.kv_bytes


def _tpf(adapter, frames) -> int:
    h, w = frames[0].image.shape[:2]
    return adapter.tokens_per_frame(h, w) * adapter.frames_per_group
