"""``build_planted``: a planted configuration written into its family's real model classes."""

from __future__ import annotations

import torch

from hermes_policy.models.base import ModelAdapter
from hermes_policy.models.planted.config import PlantedConfig
from hermes_policy.models.planted.early import build_embedded, build_llava, build_qwen
from hermes_policy.models.planted.recent import build_internvl, build_qwen3, build_smolvlm
from hermes_policy.models.planted.weights import RECENCY_PAIR, Scales, plant_lm

#: family -> (builder, rotary layout of its decoder)
BUILDERS = {
    "embedded": (build_embedded, "1d"),
    "qwen2-vl": (build_qwen, "mrope"),
    "qwen2.5-vl": (build_qwen, "mrope"),
    "llava-ov": (build_llava, "1d"),
    "qwen3-vl": (build_qwen3, "interleaved"),
    "qwen3.5": (build_qwen3, "interleaved"),
    "internvl": (build_internvl, "1d"),
    "smolvlm": (build_smolvlm, "1d"),
}
#: the first frame of the chunk that measures positions per frame: 12 s into a 2-fps stream, where a frame's
#: text (a frame number, a timestamp) has the length it keeps for most of a study
PROBE_FRAME = 24


def positions_per_frame(adapter: ModelAdapter) -> float:
    """How far the recency axis advances per frame: a 4-frame chunk's span of positions, over 4."""
    import numpy as np

    from hermes_policy.video import Frame

    frames = [Frame(i, i / 2.0, np.zeros((128, 128, 3), dtype=np.uint8)) for i in range(PROBE_FRAME, PROBE_FRAME + 4)]
    chunk = adapter.encode_frames(frames, 0)
    return chunk.end_position / len(frames)


def build_planted(cfg: PlantedConfig, dtype: torch.dtype = torch.float32) -> ModelAdapter:
    """The planted model of ``cfg`` as an adapter (weights built in float64 arithmetic, stored in ``dtype``)."""
    builder, rope = BUILDERS[cfg.family]
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        adapter, text_model, basis = builder(cfg, gen)
    scales = Scales(text_model.rotary_emb.inv_freq.double(), positions_per_frame(adapter), RECENCY_PAIR[rope], basis,
                    basis.normalised())
    plant_lm(text_model, cfg, scales, gen)
    adapter.model.to(dtype)
    if hasattr(adapter, "frontend"):
        adapter.frontend.to(dtype)
    adapter.weights = "planted"
    adapter.planted = cfg  # for validate's scoring and the dashboard; the study never reads it
    return adapter


__all__ = ["BUILDERS", "build_planted", "positions_per_frame"]
