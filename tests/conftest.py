"""Shared fixtures: tiny models are cached per test session (they are deterministic)."""

from __future__ import annotations

import functools

import pytest
import torch

from hermes_policy.models.tiny import TINY_MODELS, build_tiny
from hermes_policy.video import SyntheticVideo

torch.set_num_threads(2)

TINY_NAMES = tuple(TINY_MODELS)


@functools.cache
def _tiny(name: str):
    return build_tiny(name)


@pytest.fixture(params=TINY_NAMES)
def tiny(request):
    """Each tiny model family in turn (float32)."""
    return _tiny(request.param)


@pytest.fixture
def frames():
    """12 synthetic 64x64 frames at 2 fps."""
    return list(SyntheticVideo(seed=3, frames=12, width=64, height=64).frames())
