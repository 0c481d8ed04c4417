"""Shared fixtures: tiny models are cached per test session (they are deterministic)."""

from __future__ import annotations

import functools
import os

import pytest
import torch

from hermes_policy.models.tiny import TINY_MODELS, build_tiny
from hermes_policy.video import SyntheticVideo

torch.set_num_threads(2)

TINY_NAMES = tuple(TINY_MODELS)

#: where and in what dtype the tiny models run: float32 on the CPU unless scripts/gpu-check.sh runs the
#: oracle tests on CUDA (HERMES_TEST_DEVICE=cuda, HERMES_TEST_DTYPE=bfloat16|float32)
TEST_DEVICE = os.environ.get("HERMES_TEST_DEVICE", "cpu")
TEST_DTYPE = {"float32": torch.float32, "bfloat16": torch.bfloat16}[os.environ.get("HERMES_TEST_DTYPE", "float32")]


def close(got: torch.Tensor, expected: torch.Tensor, atol: float) -> bool:
    """An oracle comparison at ``atol`` in float32. bfloat16 keeps 8 mantissa bits, and two correct
    computations of the same logits in it differ by rounding at every layer, so there the tolerance is
    relative to the values' scale (3% of the largest), never looser than ``atol``."""
    got, expected = got.float().cpu(), expected.float().cpu()
    if TEST_DTYPE == torch.float32:
        return torch.allclose(got, expected, atol=atol, rtol=0)
    return bool((got - expected).abs().max() <= max(atol, 0.03 * float(expected.abs().max())))


@functools.cache
def _tiny(name: str):
    adapter = build_tiny(name, TEST_DTYPE)
    if TEST_DEVICE != "cpu":
        adapter.model.to(TEST_DEVICE)
    return adapter


@pytest.fixture(params=TINY_NAMES)
def tiny(request):
    """Each tiny model family in turn (float32)."""
    return _tiny(request.param)


@pytest.fixture
def frames():
    """12 synthetic 64x64 frames at 2 fps."""
    return list(SyntheticVideo(seed=3, frames=12, width=64, height=64).frames())


def has_frame_text(adapter) -> bool:
    """Whether the family writes text into every frame unit (Qwen3-VL's ``<t seconds>`` and delimiters): its
    policies keep whole units, so a token budget may be filled to within one unit rather than exactly."""
    from hermes_policy.video import SyntheticVideo

    frames = list(SyntheticVideo(seed=0, frames=adapter.frames_per_group, width=64, height=64).frames())
    return bool((adapter.encode_frames(frames, 0).meta.patch < 0).any())


def assert_whole_units(meta, adapter, frames) -> None:
    """Every frame a layer keeps has at least one patch and all of its text rows (as ``adapter`` encodes
    ``frames``), and no frame is kept as text alone."""
    reference = adapter.encode_frames(list(frames), 0).meta
    video = meta.is_video
    for frame in torch.unique(meta.frame[video]).tolist():
        rows = meta.frame == frame
        assert bool((meta.patch[rows] >= 0).any()), f"frame {frame}: text kept without a patch"
        want = int(((reference.frame == frame) & (reference.patch < 0)).sum())
        assert int((rows & (meta.patch < 0)).sum()) == want, f"frame {frame}: part of its text was dropped"


def unit_sizes(adapter, frames) -> dict[int, int]:
    """Rows of each frame unit as ``adapter`` encodes ``frames`` (a frame's number or time as text can make
    later units a token or two longer than early ones)."""
    meta = adapter.encode_frames(list(frames), 0).meta
    frame_ids, counts = torch.unique(meta.frame, return_counts=True)
    return dict(zip(frame_ids.tolist(), counts.tolist()))
