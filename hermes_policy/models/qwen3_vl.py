"""Qwen3-VL and Qwen3.5: Qwen's 2025-26 vision-language models, streamed frame group by frame group.

What changes from Qwen2.5-VL (:mod:`hermes_policy.models.qwen_vl`), read from transformers 5.23:

* **Interleaved M-RoPE.** Frequency ``j`` of a head follows height for ``j % 3 == 1``
  (the first ``3 s_h``), width for ``j % 3 == 2`` (the first ``3 s_w``), time otherwise
  (:meth:`~hermes_policy.rope.RotarySpec.interleaved`), so a re-index rotates each
  frequency by its own axis's shift.
* **Timestamps as text.** Each frame group (two frames fused by the temporal patch) is
  ``<{t:.1f} seconds><|vision_start|>`` + its patches + ``<|vision_end|>``, ``t`` the mean
  time of the group's frames, as Qwen3-VL's processor writes it. The text gets consecutive
  positions on every axis; the patches start one past it, ``(p, p + row, p + column)``; the
  position after the group is ``p + max(rows, columns)``. Every token of the group carries the
  group's frame in its metadata, so eviction keeps or drops the group's text with its patches
  (:func:`~hermes_policy.policies.scoring.top_units`).
* **DeepStack** (Qwen3-VL): merged features of some vision-encoder layers are added to the
  patch tokens' hidden states after the first decoder layers. A chunk carries them
  (:attr:`EncodedChunk.deepstack`) and :meth:`forward_kwargs` hands them to the decoder, so a
  streamed chunk gets what a full forward gives it.
* **Qwen3.5** is natively multimodal with the same vision layout (no DeepStack), and a hybrid
  decoder: Gated DeltaNet linear attention in most layers, full attention in every
  ``full_attention_interval``-th, whose heads are gated and rotate only part of their
  dimensions (``partial_rotary_factor``). Only the full-attention layers hold a KV cache
  (:attr:`~hermes_policy.models.base.ModelAdapter.kv_layers`); the session's cache carries
  the linear layers' recurrent state and rolls it back with everything else.
"""

from __future__ import annotations

import torch

from hermes_policy.models.base import FRAME_TEXT_HORIZON, EncodedChunk
from hermes_policy.models.qwen_vl import QwenVLAdapter
from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import Frame


def timestamp_text(seconds: float) -> str:
    """How Qwen3-VL's processor writes a frame group's time before its patches."""
    return f"<{seconds:.1f} seconds>"


class Qwen3VLAdapter(QwenVLAdapter):
    """``Qwen3VLForConditionalGeneration`` and ``Qwen3_5ForConditionalGeneration`` models."""

    # every frame group carries its own delimiters; nothing wraps the video as a whole
    video_open = ""
    video_close = ""

    def _rotary_spec(self) -> RotarySpec:
        rotary = self.text_model.rotary_emb
        return RotarySpec.interleaved(rotary.inv_freq, list(rotary.mrope_section),
                                      self.text_config.max_position_embeddings)

    @property
    def _vision_start(self) -> str:
        return self.tokenizer.convert_ids_to_tokens(self.model.config.vision_start_token_id)

    @property
    def _vision_end_id(self) -> int:
        return self.model.config.vision_end_token_id

    def _text_ids(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Patches of one frame group plus its text, for a group an hour in (:data:`FRAME_TEXT_HORIZON`): the
        first groups' shorter timestamps take a token or two less."""
        opener = self._text_ids(timestamp_text(FRAME_TEXT_HORIZON + 0.5) + self._vision_start)
        return super().tokens_per_frame(height, width) + opener.numel() + 1

    def patches_per_frame(self, height: int, width: int) -> int:
        return QwenVLAdapter.tokens_per_frame(self, height, width)

    def group_times(self, frames: list[Frame]) -> list[float]:
        """Each frame group's timestamp: the mean time of its first and last frame (a short last group repeats
        its last frame, as Qwen's processor pads it)."""
        t = self.frames_per_group
        times = [f.time for f in frames] + [frames[-1].time] * (-len(frames) % t)
        return [(times[g] + times[g + t - 1]) / 2 for g in range(0, len(times), t)]

    def encode_frames(self, frames: list[Frame], start: int) -> EncodedChunk:
        if not frames:
            raise ValueError("encode_frames needs at least one frame")
        pixels, grid = self.pixel_values(frames)
        visual = self.model.model.visual
        with torch.no_grad():
            out = visual(pixels.to(self.device, visual.dtype), grid_thw=grid.to(self.device))
        patches = out.pooler_output.to(self.dtype)  # (G * gh * gw, hidden)
        stacked = getattr(out, "deepstack_features", None)  # K x (G * gh * gw, hidden), Qwen3-VL only
        gh, gw = int(grid[0, 1]) // self.merge_size, int(grid[0, 2]) // self.merge_size
        per_group = gh * gw
        embed = self.text_model.get_input_embeddings()
        rows = torch.arange(gh).repeat_interleave(gw)
        cols = torch.arange(gw).repeat(gh)
        parts: list[EncodedChunk] = []
        is_patch: list[torch.Tensor] = []
        position = start
        for g, seconds in enumerate(self.group_times(frames)):
            frame = frames[min(g * self.frames_per_group, len(frames) - 1)]
            opener = self._text_ids(timestamp_text(seconds) + self._vision_start)
            closer = torch.tensor([self._vision_end_id])
            with torch.no_grad():
                open_embeds = embed(opener.to(self.device))
                close_embeds = embed(closer.to(self.device))
            k = opener.numel()
            base = position + k  # the patches' first position on every axis
            step = max(gh, gw)
            group_positions = torch.cat([
                torch.arange(position, base).expand(3, k),
                torch.stack([torch.full((per_group,), base), base + rows, base + cols]),
                torch.full((3, 1), base + step),
            ], dim=1)
            meta = TokenMeta.cat([TokenMeta.frame_tokens(frame.index, frame.time, k, per_group),
                                  TokenMeta.frame_tokens(frame.index, frame.time, 1, 0)])
            embeds = torch.cat([open_embeds.to(self.dtype), patches[g * per_group:(g + 1) * per_group],
                                close_embeds.to(self.dtype)])
            parts.append(EncodedChunk(embeds, group_positions.to(torch.long), meta))
            is_patch.append(torch.cat([torch.zeros(k, dtype=torch.bool), torch.ones(per_group, dtype=torch.bool),
                                       torch.zeros(1, dtype=torch.bool)]))
            position = base + step + 1
        chunk = EncodedChunk.cat(parts)
        if stacked:
            mask = torch.cat(is_patch).to(patches.device)
            deepstack = patches.new_zeros(len(stacked), len(chunk), patches.shape[-1])
            for i, feature in enumerate(stacked):
                deepstack[i, mask] = feature.to(self.dtype)
            chunk.deepstack = deepstack
        return chunk

    def forward_kwargs(self, chunk: EncodedChunk) -> dict:
        """DeepStack: the patch tokens' mask and, per injected layer, their features."""
        if chunk.deepstack is None:
            return {}
        mask = ((chunk.meta.patch >= 0) & (chunk.meta.frame >= 0)).to(self.device)
        return {"visual_pos_masks": mask[None],
                "deepstack_visual_embeds": [layer[mask] for layer in chunk.deepstack.to(self.device)]}


def wrap(name: str, model, tokenizer, image_processor) -> Qwen3VLAdapter:
    """A Qwen3-VL / Qwen3.5 checkpoint with its own image processor (16-px patches, mean/std 0.5)."""
    return Qwen3VLAdapter(name, model, tokenizer, image_processor)


def configure(name: str, model, tokenizer, settings: dict) -> Qwen3VLAdapter:
    """A ``config:`` Qwen3-VL / Qwen3.5, its frames processed with the published settings.

    ``settings`` is the published ``preprocessor_config.json`` with the video processor's under ``video``.
    Frames are resized one at a time, as images, between the video processor's per-frame minimum
    (``video.size.shortest_edge`` pixels) and the image processor's maximum (``size.longest_edge``):
    the video processor's cap on a whole clip's pixels, which shrinks frames as a known video grows,
    has no analogue in a stream whose length is unknown.
    """
    from transformers import Qwen2VLImageProcessorPil

    video = settings.get("video") or settings
    processor = Qwen2VLImageProcessorPil(**{k: video[k] for k in ("patch_size", "temporal_patch_size", "merge_size",
                                                                  "image_mean", "image_std") if k in video})
    size, video_size = settings.get("size") or {}, video.get("size") or {}
    return Qwen3VLAdapter(name, model, tokenizer, processor, max_pixels=size.get("longest_edge"),
                          min_pixels=video_size.get("shortest_edge"))


__all__ = ["Qwen3VLAdapter", "configure", "timestamp_text", "wrap"]
