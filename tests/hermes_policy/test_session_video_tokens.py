"""StreamingSession.video_tokens_seen / video_tokens_kept(): what eval's kept fraction is made of."""

from __future__ import annotations

import pytest
from conftest import _tiny

from hermes_policy.policies import make_policy
from hermes_policy.session import SessionConfig, StreamingSession


@pytest.mark.parametrize("name", ["tiny-embedded", "tiny-qwen2-vl"])
def test_video_tokens_seen_and_kept(frames, name):
    adapter = _tiny(name)
    tpf = adapter.tokens_per_frame(64, 64)
    groups = -(-len(frames) // adapter.frames_per_group)  # Qwen-VL fuses frame pairs into one group
    full = StreamingSession(adapter, make_policy("full"), SessionConfig(chunk_frames=4))
    assert full.video_tokens_seen == 0 and full.video_tokens_kept() == 0.0
    full.ingest(frames[:4])
    assert full.video_tokens_seen == 4 // adapter.frames_per_group * tpf == full.video_tokens_kept()
    full.ingest(frames[4:])
    full.flush()
    assert full.video_tokens_seen == groups * tpf == full.video_tokens_kept()
    # a flushed partial chunk is counted as written (3 frames: 2 Qwen-VL groups, the last one short)
    odd = StreamingSession(adapter, make_policy("full"), SessionConfig(chunk_frames=4))
    odd.ingest(frames[:3])
    odd.flush()
    assert odd.video_tokens_seen == -(-3 // adapter.frames_per_group) * tpf == odd.video_tokens_kept()
    # the system prefix is cached too, but it is not video
    assert full.cache.layer_len(0) == full.sink_len + groups * tpf

    window = StreamingSession(adapter, make_policy("window", budget=2 * tpf), SessionConfig(chunk_frames=4))
    window.ingest(frames)
    window.flush()
    assert window.video_tokens_seen == groups * tpf  # counted before eviction
    assert window.video_tokens_kept() == 2 * tpf


def test_video_tokens_kept_averages_unequal_layers(frames):
    adapter = _tiny("tiny-embedded")
    tpf = adapter.tokens_per_frame(64, 64)
    session = StreamingSession(adapter, make_policy("window", budget=3 * tpf), SessionConfig(chunk_frames=4))
    session.ingest(frames)
    session.flush()
    # drop one more frame from layer 0 only: the mean over layers follows
    meta = session.cache.meta(0)
    keep = (~meta.is_video | (meta.frame != int(meta.frame[meta.is_video].min()))).nonzero().flatten()
    session.cache.evict(0, keep)
    layers = adapter.num_layers
    assert session.video_tokens_kept() == pytest.approx((3 * tpf * layers - tpf) / layers)
