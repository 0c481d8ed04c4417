"""``config:`` models: real architectures from published configs, random weights, labelled as such."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hermes_lab.cli import main
from hermes_policy.errors import ModelError
from hermes_policy.models.configured import CONFIG_DIR, config_names, meta_model, read_config
from hermes_policy.models.registry import load_model
from hermes_policy.models.tiny import build_tiny
from hermes_policy.policies import make_policy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import SyntheticVideo


@pytest.mark.parametrize("name", config_names())
def test_every_shipped_config_builds_on_the_meta_device(name: str) -> None:
    model = meta_model(f"config:{name}")
    params = list(model.parameters())
    assert params and all(p.device.type == "meta" for p in params), "no weight may be materialised"
    config, _ = read_config(name)
    assert sum(p.numel() for p in params) > 4e8, "a published model has hundreds of millions of parameters or more"
    assert config.get_text_config().num_hidden_layers >= 24
    if config.model_type.startswith("qwen2"):
        assert config.vision_config.patch_size == 14 and config.vision_config.spatial_merge_size == 2
        assert config.vision_config.temporal_patch_size == 2


@pytest.fixture(params=["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-llava-ov"])
def tiny_config(request, tmp_path: Path) -> Path:
    """A tiny model's own config, written as a config file (what config:PATH reads)."""
    data = build_tiny(request.param).model.config.to_dict()
    if request.param.startswith("tiny-qwen"):
        data["hermes_lab_processor"] = {"max_pixels": 56 * 56}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data, default=str))
    return path


def test_a_config_model_streams_end_to_end_in_its_dtype(tiny_config: Path) -> None:
    adapter = load_model(f"config:{tiny_config}")
    assert adapter.weights == "random" and adapter.describe()["weights"] == "random"
    assert {p.dtype for p in adapter.model.parameters()} == {torch.bfloat16}, "built in bf16, no fp32 copy"
    session = StreamingSession(adapter, make_policy("hermes", budget=2 * adapter.tokens_per_frame(64, 64)),
                               SessionConfig(chunk_frames=2))
    session.ingest(SyntheticVideo(seed=1, frames=8, width=64, height=64).frames())
    answer = session.ask("What is happening?", max_new_tokens=2)
    assert answer.ttft_ms > 0
    assert max(session.cache.video_count(i) for i in range(adapter.num_layers)) < session.video_tokens_seen
    again = load_model(f"config:{tiny_config}")
    first = next(adapter.model.parameters())
    assert torch.equal(first, next(again.model.parameters())), "seeded: the same weights every time"


def test_outputs_of_a_config_model_say_the_weights_are_random(tiny_config: Path, capsys) -> None:
    assert main(["stream", "--model", f"config:{tiny_config}", "--video", "synthetic:seed=1,frames=4",
                 "--max-new-tokens", "2", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "random"
    assert main(["bench", "--model", f"config:{tiny_config}", "--frames", "4", "--policies", "sink-window",
                 "--budget", "8", "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert row["weights"] == "random" and row["tokens_per_frame"] > 0
    assert main(["bench", "--model", f"config:{tiny_config}", "--frames", "4", "--policies", "sink-window",
                 "--budget", "8"]) == 0
    assert "answers are meaningless" in capsys.readouterr().out


def test_unknown_or_unsupported_configs_are_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="unknown config"):
        load_model("config:no-such-model")
    other = tmp_path / "config.json"
    other.write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ModelError, match="model_type 'bert'"):
        load_model(f"config:{other}")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(f"config:{broken}")
    assert CONFIG_DIR.name == "configs"
