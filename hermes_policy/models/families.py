"""Every model family hermes-lab streams, declared once: one row each, read by everything that needs to know.

The registry (which adapter wraps a checkpoint of a given ``model_type``), ``config:``
(building a published architecture with random weights), the tiny miniatures, the help
texts and the README's tables all read :data:`FAMILIES`, as kvpress keeps one registry of
presses. Adding a family is adding a row (and its adapter); the registry-wide contract
tests then cover it. Builders are imported lazily, so reading the table loads no model code.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:

    from hermes_policy.models.base import ModelAdapter

#: special tokens the byte tokenizer needs for each prompt layout
QWEN_SPECIALS = ("<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>")
LLAVA_SPECIALS = ("<image>", "<video>")
INTERNVL_SPECIALS = ("<img>", "</img>", "<IMG_CONTEXT>")
SMOLVLM_SPECIALS = ("<fake_token_around_image>", "<global-img>", "<image>", "<end_of_utterance>")


def _lazy(path: str) -> Callable[..., Any]:
    """``"module:function"`` -> a function that imports it when called."""
    module, name = path.split(":")

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = path
    return call


@dataclass(frozen=True)
class Family:
    """One model family.

    Attributes:
        name: its short name (``planted:...,family=NAME``, ``validate --family``, tables).
        label: how people write it.
        model_types: the ``config.json`` ``model_type`` values it loads.
        tiny: the name of its random-init miniature (``tiny-*``).
        wrap: ``(name, model, tokenizer, image_processor) -> adapter`` for a checkpoint loaded by
            ``from_pretrained``, with its own image processor.
        configure: ``(name, model, tokenizer, settings) -> adapter`` for a ``config:`` model, whose image
            processing comes from the config file's ``hermes_lab_processor`` (the published settings).
        specials: the prompt layout's special tokens (for the byte tokenizer of random-weight models).
        hermes: which HERMES release parameters its working band uses (``llava-ov`` or ``qwen2.5-vl``).
        planted: whether ``planted:`` models of it exist (``validate --family``).
    """

    name: str
    label: str
    model_types: tuple[str, ...]
    tiny: str | None
    wrap: Callable[..., ModelAdapter]
    configure: Callable[..., ModelAdapter]
    specials: tuple[str, ...] = QWEN_SPECIALS
    hermes: str = "qwen2.5-vl"
    planted: bool = True


_QWEN = "hermes_policy.models.qwen_vl"
_QWEN3 = "hermes_policy.models.qwen3_vl"
_LLAVA = "hermes_policy.models.llava_ov"
_FRAMED = "hermes_policy.models.framed"

FAMILIES: tuple[Family, ...] = (
    Family("qwen2-vl", "Qwen2-VL", ("qwen2_vl",), "tiny-qwen2-vl", _lazy(f"{_QWEN}:wrap"), _lazy(f"{_QWEN}:configure")),
    Family("qwen2.5-vl", "Qwen2.5-VL", ("qwen2_5_vl",), "tiny-qwen2.5-vl", _lazy(f"{_QWEN}:wrap"),
           _lazy(f"{_QWEN}:configure")),
    Family("llava-ov", "LLaVA-OneVision", ("llava_onevision",), "tiny-llava-ov", _lazy(f"{_LLAVA}:wrap"),
           _lazy(f"{_LLAVA}:configure"), specials=LLAVA_SPECIALS, hermes="llava-ov"),
    Family("qwen3-vl", "Qwen3-VL", ("qwen3_vl",), "tiny-qwen3-vl", _lazy(f"{_QWEN3}:wrap"),
           _lazy(f"{_QWEN3}:configure")),
    Family("qwen3.5", "Qwen3.5", ("qwen3_5",), "tiny-qwen3.5", _lazy(f"{_QWEN3}:wrap"), _lazy(f"{_QWEN3}:configure")),
    Family("internvl", "InternVL3.5", ("internvl",), "tiny-internvl", _lazy(f"{_FRAMED}:wrap_internvl"),
           _lazy(f"{_FRAMED}:configure_internvl"), specials=INTERNVL_SPECIALS, hermes="llava-ov"),
    Family("smolvlm", "SmolVLM2", ("smolvlm",), "tiny-smolvlm", _lazy(f"{_FRAMED}:wrap_smolvlm"),
           _lazy(f"{_FRAMED}:configure_smolvlm"), specials=SMOLVLM_SPECIALS, hermes="llava-ov"),
)


def family_of(model_type: str | None) -> Family | None:
    """The family that loads checkpoints of ``model_type``; None when no family does."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    return None


def by_name(name: str) -> Family | None:
    return next((f for f in FAMILIES if f.name == name), None)


#: model_type -> the family's label, for messages
SUPPORTED_ARCHITECTURES = {t: f.label for f in FAMILIES for t in f.model_types}


__all__ = ["FAMILIES", "INTERNVL_SPECIALS", "LLAVA_SPECIALS", "QWEN_SPECIALS", "SMOLVLM_SPECIALS",
           "SUPPORTED_ARCHITECTURES", "Family", "by_name", "family_of"]
