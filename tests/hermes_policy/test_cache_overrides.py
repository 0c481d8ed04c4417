"""CompactCache overrides transformers' crop and get_seq_length so positions and metadata never desynchronise."""

from __future__ import annotations

import pytest
import torch

from hermes_policy.models.tiny import build_tiny
from hermes_policy.policies import make_policy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import SyntheticVideo


@pytest.fixture(scope="module")
def adapter():
    return build_tiny("tiny-qwen2-vl")


def _session(adapter, policy=None) -> StreamingSession:
    session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=2))
    session.ingest(SyntheticVideo(seed=4, frames=8, width=64, height=64).frames())
    return session


def test_get_seq_length_is_per_layer_rows(adapter) -> None:
    session = _session(adapter)
    cache = session.cache
    cache.evict(1, torch.arange(cache.layer_len(1) - 5))  # layers now differ
    for layer in range(cache.num_layers):
        assert cache.get_seq_length(layer) == cache.layer_len(layer) == cache.keys(layer).shape[-2]
    assert cache.get_seq_length(0) != cache.get_seq_length(1)
    with pytest.raises(IndexError):
        cache.get_seq_length(cache.num_layers)


def test_crop_keeps_keys_positions_and_meta_in_step(adapter) -> None:
    session = _session(adapter)
    cache = session.cache
    before = [(cache.keys(i).clone(), cache.positions(i).clone(), cache.meta(i).frame.clone())
              for i in range(cache.num_layers)]
    cache.crop(-3)
    for i, (keys, positions, frames) in enumerate(before):
        n = keys.shape[-2] - 3
        assert cache.layer_len(i) == n == cache.layers[i].keys.shape[-2]
        assert torch.equal(cache.keys(i), keys[..., :n, :])
        assert torch.equal(cache.positions(i), positions[:, :n])
        assert torch.equal(cache.meta(i).frame, frames[:n])
    cache.crop(0)
    assert cache.layer_len(0) == before[0][0].shape[-2] - 3


@pytest.mark.parametrize("bad", [3, 1.5, True])
def test_crop_refuses_what_transformers_would_do_wrong(adapter, bad) -> None:
    cache = _session(adapter).cache
    lengths = cache.lengths()
    with pytest.raises(ValueError, match="negative"):
        cache.crop(bad)
    with pytest.raises(ValueError, match="hold fewer"):
        cache.crop(-(max(lengths) + 1))
    assert cache.lengths() == lengths


def test_crop_refuses_a_cache_with_policy_state(adapter) -> None:
    session = _session(adapter, make_policy("snapkv", budget=10_000))
    lengths = session.cache.lengths()
    with pytest.raises(ValueError, match="policy state"):
        session.cache.crop(-1)
    assert session.cache.lengths() == lengths
