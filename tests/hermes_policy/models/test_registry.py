"""Loading models by name and by path; unknown and unsupported models fail clearly."""

from __future__ import annotations

import json

import huggingface_hub.constants
import pytest
import torch
from conftest import _tiny
from transformers import LlamaConfig, Qwen2_5_VLConfig

from hermes_policy import ModelError, StreamingSession
from hermes_policy.models import load_model
from hermes_policy.models.qwen_vl import QwenVLAdapter
from hermes_policy.models.registry import BUILTIN_MODELS


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def test_unknown_name_lists_what_is_supported():
    with pytest.raises(ModelError) as e:
        load_model("gpt-imaginary")
    for name in BUILTIN_MODELS:
        assert name in str(e.value)
    assert "Qwen2.5-VL" in str(e.value)


def test_unreachable_hub_id_is_a_clear_error(offline):
    with pytest.raises(ModelError, match="cannot load model 'Qwen/Qwen2.5-VL-7B-Instruct'"):
        load_model("Qwen/Qwen2.5-VL-7B-Instruct")


def test_unsupported_architecture_fails_before_loading_weights(tmp_path):
    LlamaConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                num_attention_heads=2).save_pretrained(tmp_path)
    with pytest.raises(ModelError, match="architecture 'llama'.*not supported"):
        load_model(str(tmp_path))


def test_real_checkpoint_config_is_read_up_to_the_weights(tmp_path, offline):
    """A full-size Qwen2.5-VL-7B config (no weights here): dispatch works, then the missing weights are reported."""
    Qwen2_5_VLConfig().save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "qwen2_5_vl"
    with pytest.raises(ModelError, match="weights"):
        load_model(str(tmp_path))


def test_trust_remote_code_is_off_by_default(monkeypatch, tmp_path):
    seen = {}
    import transformers

    def fake(name, **kwargs):
        seen.update(kwargs)
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", fake)
    with pytest.raises(ModelError):
        load_model(str(tmp_path))
    assert seen["trust_remote_code"] is False
    with pytest.raises(ModelError):
        load_model(str(tmp_path), trust_remote_code=True)
    assert seen["trust_remote_code"] is True


@pytest.mark.parametrize("name", ["tiny-qwen2-vl", "tiny-llava-ov"])
def test_saved_checkpoint_loads_by_path_and_streams_identically(name, tmp_path, frames):
    builtin = _tiny(name)
    builtin.model.save_pretrained(tmp_path)
    builtin.tokenizer.save_pretrained(tmp_path)
    if isinstance(builtin, QwenVLAdapter):
        builtin.image_processor.save_pretrained(tmp_path)
    else:
        from transformers import LlavaOnevisionImageProcessorPil

        LlavaOnevisionImageProcessorPil().save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype=torch.float32)
    assert type(loaded) is type(builtin)
    if isinstance(loaded, QwenVLAdapter):  # same pixels budget as the built-in tiny one
        loaded.max_pixels = builtin.max_pixels
    a, b = StreamingSession(builtin), StreamingSession(loaded)
    a.ingest(frames[:4])
    b.ingest(frames[:4])
    assert torch.allclose(a.question_logits("What?"), b.question_logits("What?"), atol=1e-5)


def _pickle_checkpoint(folder, weights: bytes | None = None) -> QwenVLAdapter:
    """A tiny Qwen2-VL checkpoint whose weights are a pickle (``pytorch_model.bin``), not safetensors."""
    builtin = _tiny("tiny-qwen2-vl")
    builtin.model.config.save_pretrained(folder)
    builtin.tokenizer.save_pretrained(folder)
    builtin.image_processor.save_pretrained(folder)
    if weights is None:
        torch.save(builtin.model.state_dict(), folder / "pytorch_model.bin")
    else:
        (folder / "pytorch_model.bin").write_bytes(weights)
    return builtin


def test_pickle_weights_load_only_when_asked(tmp_path, frames, capsys):
    from hermes_lab.cli import main

    builtin = _pickle_checkpoint(tmp_path)
    with pytest.raises(ModelError, match=r"pickle weights only \(pytorch_model.bin\).*--allow-pickle-weights"):
        load_model(str(tmp_path))
    assert main(["stream", "--model", str(tmp_path), "--video", "synthetic:seed=1,frames=4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allow-pickle-weights" in err and "pytorch_model.bin" in err, err
    loaded = load_model(str(tmp_path), dtype=torch.float32, allow_pickle=True)
    loaded.max_pixels = builtin.max_pixels
    a, b = StreamingSession(builtin), StreamingSession(loaded)
    a.ingest(frames[:4])
    b.ingest(frames[:4])
    assert torch.allclose(a.question_logits("What?"), b.question_logits("What?"), atol=1e-5)


def test_a_pickle_that_is_not_plain_tensors_is_one_line_even_when_allowed(tmp_path, capsys):
    import pickle

    from hermes_lab.cli import main

    _pickle_checkpoint(tmp_path, pickle.dumps(print))  # a global, which the weights-only unpickler refuses
    assert main(["stream", "--model", str(tmp_path), "--allow-pickle-weights"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "weights-only loader refused" in err, err


def test_safetensors_only_is_asked_of_from_pretrained(monkeypatch, tmp_path):
    """A hub repo (no local folder to look into) must fail rather than unpickle: use_safetensors=True."""
    import transformers

    Qwen2_5_VLConfig().save_pretrained(tmp_path)
    seen = {}

    def fake(name, **kwargs):
        seen.update(kwargs)
        raise OSError("no file named model.safetensors")

    monkeypatch.setattr(transformers.AutoModelForImageTextToText, "from_pretrained", fake)
    with pytest.raises(ModelError, match="load only with --allow-pickle-weights"):
        load_model(str(tmp_path))
    assert seen["use_safetensors"] is True
    with pytest.raises(ModelError):
        load_model(str(tmp_path), allow_pickle=True)
    assert seen["use_safetensors"] is None
