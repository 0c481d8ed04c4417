"""Real architectures at their published sizes, with seeded random weights: ``--model config:NAME``.

No hub is reachable here, but time and memory do not depend on weight values. A
``config:`` model is the real transformers class (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision)
built from a published ``config.json`` shipped in ``models/configs/`` (``config:qwen2-vl-2b``)
or from any config file (``config:PATH/config.json``).

* **Weights** are random (seeded), built directly in the target dtype on the target
  device: the model is constructed under that device and dtype, so a 7B model in
  bf16 never passes through fp32 (it needs ~15 GiB, not ~30). :func:`meta_model`
  builds the same classes on the meta device, allocating nothing.
* **Text** is meaningless: the byte tokenizer stands in for the real one, with the
  family's special tokens (vision start/end, image/video pads, im_start/im_end);
  the config's special-token ids are pointed at the byte tokenizer's. Answers are
  noise; only time and memory are real, and every output says so (``weights: random``).
* **Frames** go through the family's own processing (Qwen: patch 14, merge 2, temporal
  patch 2, min/max pixels from the published ``preprocessor_config.json``, kept in the
  config file under ``hermes_lab_processor``), so tokens per frame are the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hermes_policy.errors import ModelError
from hermes_policy.jsonfile import read_json
from hermes_policy.models.base import ModelAdapter
from hermes_policy.models.families import QWEN_SPECIALS, SUPPORTED_ARCHITECTURES, Family, family_of

CONFIG_PREFIX = "config:"
CONFIG_DIR = Path(__file__).with_name("configs")
#: our own key in a shipped config file: the published image-processor settings
PROCESSOR_KEY = "hermes_lab_processor"
#: the line every table, page and summary of a ``config:`` model carries
RANDOM_WEIGHTS_NOTE = ("weights: random (a config: or tiny- model, seeded, never trained): answers are meaningless; "
                       "only time and memory are real")


def config_names() -> list[str]:
    """The shipped configs, as ``config:NAME`` takes them."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def config_path(spec: str) -> Path:
    """``config:NAME`` or ``config:PATH`` -> the JSON file (ModelError if there is none)."""
    name = spec[len(CONFIG_PREFIX):] if spec.startswith(CONFIG_PREFIX) else spec
    shipped = CONFIG_DIR / f"{name}.json"
    if shipped.is_file():
        return shipped
    path = Path(name).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if path.is_file():
        return path
    raise ModelError(f"unknown config {name!r}: neither a shipped config ({', '.join(config_names()) or 'none'}) "
                     "nor a config.json file")


def read_config(spec: str) -> tuple[Any, dict[str, Any]]:
    """The transformers config of ``spec`` and its processor settings (empty when the file has none)."""
    from transformers import AutoConfig

    path = config_path(spec)
    data = read_json(path, ModelError, "config")
    if not isinstance(data, dict) or family_of(data.get("model_type")) is None:
        kind = data.get("model_type") if isinstance(data, dict) else type(data).__name__
        raise ModelError(f"config {path} has model_type {kind!r}; config: models support "
                         f"{', '.join(SUPPORTED_ARCHITECTURES)}")
    processor = data.pop(PROCESSOR_KEY, {}) or {}
    for key in ("_name_or_path", "transformers_version", "architectures"):
        data.pop(key, None)
    try:
        config = AutoConfig.for_model(data.pop("model_type"), **data)
    except (TypeError, ValueError) as e:
        raise ModelError(f"config {path} does not build a transformers config: {e}") from None
    return config, processor


def _model_class(config):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText._model_mapping[type(config)]


def meta_model(spec: str) -> torch.nn.Module:
    """The architecture of ``spec`` on the meta device: shapes and parameter counts, no memory."""
    config, _ = read_config(spec)
    with torch.device("meta"):
        return _model_class(config)._from_config(config, dtype=torch.bfloat16)


def _byte_tokenizer_for(config, family: Family):
    from hermes_policy.models.byte_tokenizer import byte_tokenizer

    tok = byte_tokenizer(family.specials)
    text = config.get_text_config()
    for key, token in (("bos_token_id", "<|endoftext|>"), ("eos_token_id", "<|im_end|>"),
                       ("pad_token_id", "<|endoftext|>")):
        setattr(text, key, tok.convert_tokens_to_ids(token))
    if family.specials == QWEN_SPECIALS:
        for key, token in zip(("vision_start_token_id", "vision_end_token_id", "video_token_id", "image_token_id"),
                              QWEN_SPECIALS):
            setattr(config, key, tok.convert_tokens_to_ids(token))
    else:
        config.image_token_id = tok.convert_tokens_to_ids("<image>")
        config.video_token_id = tok.convert_tokens_to_ids("<video>")
    return tok


def build_config_model(spec: str, dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
                       seed: int = 0) -> ModelAdapter:
    """``config:NAME`` as an adapter: real architecture, seeded random weights in ``dtype`` on ``device``."""
    config, processor = read_config(spec)
    family = family_of(config.model_type)
    dtype = dtype or torch.bfloat16
    tok = _byte_tokenizer_for(config, family)
    name = spec if spec.startswith(CONFIG_PREFIX) else f"{CONFIG_PREFIX}{spec}"
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        model = _model_class(config)._from_config(config, dtype=dtype).eval()
    adapter: ModelAdapter = family.configure(name, model, tok, processor)
    adapter.weights = "random"
    return adapter


__all__ = ["CONFIG_DIR", "CONFIG_PREFIX", "RANDOM_WEIGHTS_NOTE", "build_config_model", "config_names", "config_path",
           "meta_model", "read_config"]
