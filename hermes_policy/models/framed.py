"""InternVL3.5 and SmolVLM2: 1-D RoPE decoders whose video frames are wrapped in text.

Both families' processors tile *images* into crops plus a thumbnail; their *video* processors do not:
every frame is resized to the vision tower's square input, encoded as one image and compressed by a
pixel shuffle (InternVL: 2 x 2 patches into one token, ``downsample_ratio`` 0.5; SmolVLM:
``scale_factor`` squared patches into one), so tokens per frame are fixed by the vision config. A
stream is video, so frames go the video processor's way. What each processor writes around a frame,
and what is kept of it here:

* **InternVL**: frames joined by newlines, ``Frame{n}: <img>`` + patches + ``</img>``, ``n`` counting from 1.
* **SmolVLM**: ``\\nFrame from MM:SS:<fake_token_around_image><global-img>`` + patches +
  ``<fake_token_around_image>``. Its processor also opens a video with "You are provided the following
  series of N frames from a H:MM:SS video"; a stream has no frame count or duration when it starts, so
  that sentence is left out.

The frame's text rows carry the frame in their metadata, so a policy keeps or evicts them with its
patches (:func:`~hermes_policy.policies.scoring.top_units`). Positions are consecutive on the one axis.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hermes_policy.models.base import FRAME_TEXT_HORIZON, ConditionalGenerationAdapter, EncodedChunk
from hermes_policy.models.frontend_lm import one_d_rotary
from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import Frame

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FramedVideoAdapter(ConditionalGenerationAdapter):
    """A frame is ``frame_text(frame)[0]`` + its patch embeddings + ``frame_text(frame)[1]``."""

    def __init__(self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 image_mean=IMAGENET_MEAN, image_std=IMAGENET_STD) -> None:
        self.image_mean = np.asarray(image_mean, dtype=np.float32)
        self.image_std = np.asarray(image_std, dtype=np.float32)
        super().__init__(name, model, tokenizer)

    def _rotary_spec(self) -> RotarySpec:
        return one_d_rotary(self.text_model, self.text_config)

    @property
    def image_size(self) -> int:
        size = self.model.config.vision_config.image_size
        return int(size[0] if isinstance(size, (list, tuple)) else size)

    def frame_text(self, frame: Frame) -> tuple[str, str]:
        """The text before and after a frame's patches."""
        raise NotImplementedError

    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        """(F, 3, S, S) normalised pixels -> (F, n, hidden) language-model embeddings."""
        raise NotImplementedError

    def patches_per_frame(self, height: int = 0, width: int = 0) -> int:
        raise NotImplementedError

    def _ids(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]

    def tokens_per_frame(self, height: int, width: int) -> int:
        """Patches plus the frame's text, as written for a frame an hour in (:data:`FRAME_TEXT_HORIZON`):
        the first frames' shorter numbers and times take a token or two less."""
        late = Frame(FRAME_TEXT_HORIZON, float(FRAME_TEXT_HORIZON), np.zeros((1, 1, 3), np.uint8))
        before, after = self.frame_text(late)
        return self.patches_per_frame() + self._ids(before).numel() + self._ids(after).numel()

    def pixel_values(self, frames: list[Frame]) -> torch.Tensor:
        """(F, 3, S, S) pixels: each frame resized (bicubic) to the tower's square input and normalised."""
        size = self.image_size
        arrays = [np.asarray(Image.fromarray(f.image).resize((size, size), Image.Resampling.BICUBIC), np.float32)
                  for f in frames]
        x = (np.stack(arrays) / 255.0 - self.image_mean) / self.image_std
        return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()

    def encode_frames(self, frames: list[Frame], start: int) -> EncodedChunk:
        if not frames:
            raise ValueError("encode_frames needs at least one frame")
        with torch.no_grad():
            patches = self.patch_embeddings(self.pixel_values(frames).to(self.device)).to(self.dtype)
        embed = self.text_model.get_input_embeddings()
        parts, position = [], start
        for frame, frame_patches in zip(frames, patches):
            before, after = (self._ids(t) for t in self.frame_text(frame))
            with torch.no_grad():
                embeds = torch.cat([embed(before.to(self.device)).to(self.dtype), frame_patches,
                                    embed(after.to(self.device)).to(self.dtype)])
            n = embeds.shape[0]
            meta = TokenMeta.cat([TokenMeta.frame_tokens(frame.index, frame.time, before.numel(), len(frame_patches)),
                                  TokenMeta.frame_tokens(frame.index, frame.time, after.numel(), 0)])
            parts.append(EncodedChunk(embeds, torch.arange(position, position + n)[None], meta))
            position += n
        return EncodedChunk.cat(parts)


class InternVLAdapter(FramedVideoAdapter):
    """``InternVLForConditionalGeneration`` (InternVL3 / 3.5 in transformers' own format)."""

    def frame_text(self, frame: Frame) -> tuple[str, str]:
        newline = "\n" if frame.index > 0 else ""  # the processor joins frames with newlines
        return f"{newline}Frame{frame.index + 1}: <img>", "</img>"

    def patches_per_frame(self, height: int = 0, width: int = 0) -> int:
        return int(self.model.config.image_seq_length)

    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        cfg = self.model.config
        out = self.model.model.get_image_features(pixels.to(self.model.dtype),
                                                  vision_feature_layer=cfg.vision_feature_layer,
                                                  vision_feature_select_strategy=cfg.vision_feature_select_strategy)
        return out.pooler_output


class SmolVLMAdapter(FramedVideoAdapter):
    """``SmolVLMForConditionalGeneration`` (SmolVLM / SmolVLM2, Idefics3 lineage)."""

    @property
    def text_model(self) -> nn.Module:
        return self.model.model.text_model

    def frame_text(self, frame: Frame) -> tuple[str, str]:
        seconds = int(frame.time)
        return f"\nFrame from {seconds // 60:02d}:{seconds % 60:02d}:<fake_token_around_image><global-img>", \
            "<fake_token_around_image>"

    def patches_per_frame(self, height: int = 0, width: int = 0) -> int:
        vision = self.model.config.vision_config
        return (self.image_size // vision.patch_size) ** 2 // self.model.config.scale_factor ** 2

    def patch_embeddings(self, pixels: torch.Tensor) -> torch.Tensor:
        out = self.model.model.get_image_features(pixels[None].to(self.model.dtype))
        return out.pooler_output[0].reshape(pixels.shape[0], -1, out.pooler_output[0].shape[-1])


def _mean_std(image_processor, default_mean, default_std) -> dict:
    mean = getattr(image_processor, "image_mean", None)
    std = getattr(image_processor, "image_std", None)
    return {"image_mean": mean if mean is not None else default_mean,
            "image_std": std if std is not None else default_std}


def wrap_internvl(name: str, model, tokenizer, image_processor) -> InternVLAdapter:
    return InternVLAdapter(name, model, tokenizer, **_mean_std(image_processor, IMAGENET_MEAN, IMAGENET_STD))


def configure_internvl(name: str, model, tokenizer, settings: dict) -> InternVLAdapter:
    return InternVLAdapter(name, model, tokenizer, settings.get("image_mean", IMAGENET_MEAN),
                           settings.get("image_std", IMAGENET_STD))


def wrap_smolvlm(name: str, model, tokenizer, image_processor) -> SmolVLMAdapter:
    return SmolVLMAdapter(name, model, tokenizer, **_mean_std(image_processor, (0.5,) * 3, (0.5,) * 3))


def configure_smolvlm(name: str, model, tokenizer, settings: dict) -> SmolVLMAdapter:
    return SmolVLMAdapter(name, model, tokenizer, settings.get("image_mean", (0.5,) * 3),
                          settings.get("image_std", (0.5,) * 3))


__all__ = ["FramedVideoAdapter", "InternVLAdapter", "SmolVLMAdapter", "configure_internvl", "configure_smolvlm",
           "wrap_internvl", "wrap_smolvlm"]
