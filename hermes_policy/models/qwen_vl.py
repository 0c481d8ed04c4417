"""Qwen2-VL and Qwen2.5-VL: vision tower + Qwen2 LM with 3-D M-RoPE.

Frames are fused in pairs (``temporal_patch_size`` = 2) into one temporal
step of the vision encoder. Each ingest chunk is laid out like one video in
Qwen's multi-video prompt layout: it starts at the next free position
``s`` and its merged patch at (group g, row r, column c) gets positions
``(s + round(Δt_g * rate), s + r, s + c)`` (temporal, height, width), where Δt_g is
the group's time since the chunk's first group and ``rate`` is 1 group per
group for Qwen2-VL and ``tokens_per_second`` for Qwen2.5-VL. Text after it
starts at one past the largest position on any axis; transformers 5.23's
``get_rope_index`` ignores the temporal extent there, so we do not call it.

Pixels come from the model's own (PIL) image processor, one frame at a
time; each pair of frames is then interleaved into the temporal slots of
the patch layout, which is exactly what Qwen's video processor produces.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hermes_policy.models.base import ConditionalGenerationAdapter, EncodedChunk
from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import Frame


class QwenVLAdapter(ConditionalGenerationAdapter):
    """Qwen2-VL / Qwen2.5-VL ``*ForConditionalGeneration`` models."""

    video_open = "<|vision_start|>"
    video_close = "<|vision_end|>"

    def __init__(
        self,
        name: str,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor,
        max_pixels: int | None = None,
        min_pixels: int | None = None,
    ) -> None:
        vision = model.config.vision_config
        self.frames_per_group = vision.temporal_patch_size
        self.patch_size = vision.patch_size
        self.merge_size = vision.spatial_merge_size
        # Qwen2.5-VL spaces temporal positions by wall-clock time; Qwen2-VL by group count.
        self.tokens_per_second = getattr(vision, "tokens_per_second", None)
        self.image_processor = image_processor
        factor = self.patch_size * self.merge_size
        self.max_pixels = max_pixels or 360 * 420
        self.min_pixels = min_pixels or factor * factor
        self._grid_cache: dict[tuple[int, int], tuple[int, int]] = {}
        super().__init__(name, model, tokenizer)

    def _rotary_spec(self) -> RotarySpec:
        rotary = self.text_model.rotary_emb
        return RotarySpec.multimodal(rotary.inv_freq, list(rotary.mrope_section),
                                     self.text_config.max_position_embeddings)

    def tokens_per_frame(self, height: int, width: int) -> int:
        gh, gw = self._merged_grid((height, width))
        return gh * gw

    def _merged_grid(self, hw: tuple[int, int]) -> tuple[int, int]:
        if hw not in self._grid_cache:
            dummy = np.zeros((*hw, 3), dtype=np.uint8)
            _, grid = self._patches(dummy)
            self._grid_cache[hw] = (grid[1] // self.merge_size, grid[2] // self.merge_size)
        return self._grid_cache[hw]

    def _patches(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int, int]]:
        """One frame -> ((gh*gw, C*T*P*P) patches with the frame in every temporal slot, (1, gh, gw))."""
        out = self.image_processor(
            images=[image],
            return_tensors="np",
            size={"shortest_edge": self.min_pixels, "longest_edge": self.max_pixels},
        )
        grid = tuple(int(v) for v in out["image_grid_thw"][0])
        return out["pixel_values"], grid  # type: ignore[return-value]

    def pixel_values(self, frames: list[Frame]) -> tuple[torch.Tensor, torch.Tensor]:
        """Frames -> (pixel_values (G*gh*gw, C*T*P*P), video_grid_thw (1, 3)) for the vision tower.

        The last group is padded by repeating its last frame, as Qwen's video processor does.
        """
        t = self.frames_per_group
        images = [f.image for f in frames]
        images += [images[-1]] * (-len(images) % t)
        per_frame = [self._patches(img) for img in images]
        grids = {g for _, g in per_frame}
        if len(grids) != 1:
            raise ValueError(f"all frames of a chunk must have one size, got grids {sorted(grids)}")
        _, gh, gw = grids.pop()
        p = self.patch_size
        groups = []
        for g in range(len(images) // t):
            slots = [per_frame[g * t + k][0].reshape(gh * gw, 3, t, p, p)[:, :, k] for k in range(t)]
            groups.append(np.stack(slots, axis=2).reshape(gh * gw, 3 * t * p * p))
        pixels = torch.from_numpy(np.concatenate(groups))
        return pixels, torch.tensor([[len(groups), gh, gw]])

    def _temporal_offsets(self, group_times: list[float]) -> list[int]:
        if self.tokens_per_second is None:
            return list(range(len(group_times)))
        t0 = group_times[0]
        return [int((t - t0) * self.tokens_per_second) for t in group_times]

    def encode_frames(self, frames: list[Frame], start: int) -> EncodedChunk:
        if not frames:
            raise ValueError("encode_frames needs at least one frame")
        pixels, grid = self.pixel_values(frames)
        visual = self.model.model.visual
        with torch.no_grad():
            embeds = visual(pixels.to(self.device, visual.dtype), grid_thw=grid.to(self.device)).pooler_output
        n_groups, gh, gw = int(grid[0, 0]), int(grid[0, 1]) // self.merge_size, int(grid[0, 2]) // self.merge_size
        per_group = gh * gw
        group_frames = [frames[min(g * self.frames_per_group, len(frames) - 1)] for g in range(n_groups)]
        t_offsets = self._temporal_offsets([f.time for f in group_frames])
        rows = torch.arange(gh).repeat_interleave(gw)
        cols = torch.arange(gw).repeat(gh)
        positions = torch.cat(
            [torch.stack([torch.full((per_group,), t), rows, cols]) for t in t_offsets], dim=1
        ) + start
        meta = TokenMeta.cat([TokenMeta.frame_tokens(f.index, f.time, 0, per_group) for f in group_frames])
        return EncodedChunk(embeds.to(self.dtype), positions.to(torch.long), meta)


def wrap(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, image_processor) -> QwenVLAdapter:
    """A Qwen2-VL / Qwen2.5-VL checkpoint with its own image processor."""
    return QwenVLAdapter(name, model, tokenizer, image_processor)


def configure(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, settings: dict) -> QwenVLAdapter:
    """A ``config:`` Qwen2-VL / Qwen2.5-VL: the stock image processor, pixel bounds from the published settings."""
    from transformers import Qwen2VLImageProcessorPil

    return QwenVLAdapter(name, model, tokenizer, Qwen2VLImageProcessorPil(), max_pixels=settings.get("max_pixels"),
                         min_pixels=settings.get("min_pixels"))
