"""Loading the conformance fixtures (facts recorded from the authors' released code; see docs/conformance.md)."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from hermes_policy.cache import CompactCache
from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta

FIXTURES = Path(__file__).parent / "fixtures"


def load(name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(the JSON document, its tensors) of fixture ``name`` (``fixtures/<name>.json`` + ``.safetensors``)."""
    doc = json.loads((FIXTURES / f"{name}.json").read_text())
    return doc, load_file(FIXTURES / f"{name}.safetensors")


def qwen2_rotary(base: float, head_dim: int, max_position: int) -> RotarySpec:
    """1-D RoPE with Qwen2's inverse frequencies ``base ** -(2j / D)`` (what the releases rotate with)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    return RotarySpec.one_d(inv_freq, max_position)


def write(cache: CompactCache, positions: torch.Tensor, meta: TokenMeta, keys: list[torch.Tensor],
          values: list[torch.Tensor]) -> None:
    """Append rows to every layer as a model's forward does: stage them, hand each layer its keys rotated to
    the staged (1, n) ``positions`` (pre-RoPE ``keys[l]``: (1, Hkv, n, D)), commit."""
    with cache.transaction(positions, meta):
        for layer, (k, v) in enumerate(zip(keys, values)):
            cache.update(cache.rotary.rotate(k, positions), v, layer)
