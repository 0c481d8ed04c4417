"""Models over several devices: accelerate device maps (CPU + disk offload here) stream to the same logits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hermes_policy.errors import ModelError
from hermes_policy.models.placement import Placement, devices_of, parse_device_map, parse_max_memory
from hermes_policy.models.registry import load_model
from hermes_policy.models.tiny import TINY_MODELS
from hermes_policy.policies import make_policy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import SyntheticVideo


def _logits(adapter, policy: str) -> tuple[torch.Tensor, StreamingSession]:
    session = StreamingSession(
        adapter, None if policy == "full" else make_policy(policy, budget=2 * adapter.tokens_per_frame(64, 64)),
        SessionConfig(chunk_frames=2, reindex="eager"))
    session.ingest(SyntheticVideo(seed=3, frames=8, width=64, height=64).frames())
    return session.question_logits("What colour is the circle?", ["red", "blue"]), session


@pytest.mark.parametrize("name", [*TINY_MODELS, "embedded"])
def test_cpu_and_disk_offload_streams_to_the_same_logits(name: str, tmp_path: Path) -> None:
    plain = load_model(name)
    size = sum(p.numel() * p.element_size() for p in plain.model.parameters())
    # CPU memory for about half the weights: accelerate puts the rest on disk
    placement = Placement(device_map="sequential", max_memory={"cpu": int(size * 0.6)},
                          offload_folder=str(tmp_path))
    mapped = load_model(name, placement=placement)
    assert devices_of(mapped.model) == ["cpu", "meta"], "some weights must really be offloaded to disk"
    assert any(tmp_path.iterdir())
    for policy in ("full", "hermes", "rekv"):  # cross-layer smoothing, summary slots, offloaded blocks
        expected, _ = _logits(plain, policy)
        got, session = _logits(mapped, policy)
        assert torch.equal(got, expected), policy
        if policy != "full":  # the budget holds two frames: the policy really evicted
            assert max(session.cache.video_count(i) for i in range(mapped.num_layers)) < session.video_tokens_seen
        assert session.cache.kv_bytes_by_device == {"cpu": session.cache.kv_bytes}


def test_a_device_map_file_and_its_errors(tmp_path: Path) -> None:
    good = tmp_path / "map.json"
    good.write_text(json.dumps({"": "cpu"}))
    assert parse_device_map(str(good)) == {"": "cpu"}
    assert devices_of(load_model("tiny-llava-ov", placement=Placement(device_map={"": "cpu"})).model) == ["cpu"]
    assert parse_device_map("balanced") == "balanced" and parse_device_map(None) is None
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    for text, match in [("everywhere", "neither"), (str(bad), "not valid JSON")]:
        with pytest.raises(ModelError, match=match):
            parse_device_map(text)
    with pytest.raises(ModelError, match="one of"):
        Placement(device_map="everywhere")
    with pytest.raises(ModelError, match="give one too"):
        Placement(max_memory={"cpu": "1GiB"})
    with pytest.raises(ModelError, match="offload folder"):
        load_model("tiny-llava-ov", placement=Placement(device_map={"": "disk"}))


def test_max_memory_parses_devices_and_sizes() -> None:
    assert parse_max_memory("0=20GiB, 1=20GiB,cpu=64GiB") == {0: "20GiB", 1: "20GiB", "cpu": "64GiB"}
    assert parse_max_memory(None) is None
    for bad in ("20GiB", "cpu=lots", "=1GiB"):
        with pytest.raises(ModelError, match="DEVICE=SIZE"):
            parse_max_memory(bad)


def test_kv_bytes_are_counted_per_layer_device() -> None:
    """The accounting reads each layer's own tensors: a layer held elsewhere is counted there."""
    adapter = load_model("tiny-qwen2-vl")
    _, session = _logits(adapter, "full")
    cache = session.cache
    total = cache.kv_bytes
    layer = cache.layers[1]
    moved = layer.keys.untyped_storage().nbytes() + layer.values.untyped_storage().nbytes()
    layer.keys, layer.values = layer.keys.to("meta"), layer.values.to("meta")
    assert cache.kv_bytes_by_device == {"cpu": total - moved, "meta": moved}
    assert cache.kv_bytes == total
