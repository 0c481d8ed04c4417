"""LLaVA-OneVision: SigLIP tower + projector + 2x2 pooling, Qwen2 LM with 1-D RoPE.

Each frame is resized to the tower's square input, encoded, projected and
bilinearly pooled to ceil(n/2)^2 tokens (196 for the 384-px, 14-px-patch
checkpoints), placed at consecutive 1-D positions. HF appends one
``image_newline`` embedding after a whole video; a stream has no end, so we
place it at the start of every question instead, which keeps the question
seeing the same "video, newline, text" layout it was trained on.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hermes_policy.models.base import ConditionalGenerationAdapter, EncodedChunk
from hermes_policy.models.frontend_lm import one_d_rotary
from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import Frame

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class LlavaOneVisionAdapter(ConditionalGenerationAdapter):
    """``LlavaOnevisionForConditionalGeneration`` models."""

    def __init__(
        self,
        name: str,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        image_mean: tuple[float, ...] = OPENAI_CLIP_MEAN,
        image_std: tuple[float, ...] = OPENAI_CLIP_STD,
    ) -> None:
        self.image_mean = np.asarray(image_mean, dtype=np.float32)
        self.image_std = np.asarray(image_std, dtype=np.float32)
        super().__init__(name, model, tokenizer)

    def _rotary_spec(self) -> RotarySpec:
        return one_d_rotary(self.text_model, self.text_config)

    @property
    def image_size(self) -> int:
        return self.model.config.vision_config.image_size

    def tokens_per_frame(self, height: int, width: int) -> int:
        side = math.ceil(self.image_size // self.model.config.vision_config.patch_size / 2)
        return side * side

    def pixel_values(self, frames: list[Frame]) -> torch.Tensor:
        """(1, F, 3, S, S) normalised pixels, S = the tower's input size (bicubic resize)."""
        size = self.image_size
        arrays = [
            np.asarray(Image.fromarray(f.image).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
            for f in frames
        ]
        x = (np.stack(arrays) / 255.0 - self.image_mean) / self.image_std  # (F, S, S, 3)
        return torch.from_numpy(x).permute(0, 3, 1, 2).unsqueeze(0).contiguous()

    def encode_frames(self, frames: list[Frame], start: int) -> EncodedChunk:
        if not frames:
            raise ValueError("encode_frames needs at least one frame")
        cfg = self.model.config
        pixels = self.pixel_values(frames).to(self.device, self.model.dtype)
        with torch.no_grad():
            out = self.model.model.get_video_features(
                pixels,
                vision_feature_layer=cfg.vision_feature_layer,
                vision_feature_select_strategy=cfg.vision_feature_select_strategy,
            )
        embeds = out.pooler_output[0, :-1]  # drop the trailing image_newline; see module docstring
        n = embeds.shape[0]
        per_frame = n // len(frames)
        meta = TokenMeta.cat([TokenMeta.frame_tokens(f.index, f.time, 0, per_frame) for f in frames])
        positions = torch.arange(start, start + n)[None, :]
        return EncodedChunk(embeds.to(self.dtype), positions, meta)

    def encode_question(self, text: str, start: int) -> EncodedChunk:
        """The newline embedding, then the question text."""
        newline = self.model.model.image_newline.detach().to(self.dtype)[None, :]
        rest = super().encode_text(text, start + 1)
        return EncodedChunk(
            torch.cat([newline, rest.embeds]),
            torch.cat([torch.tensor([[start]]), rest.positions], dim=1),
            TokenMeta.cat([TokenMeta.text(1), rest.meta]),
        )


def wrap(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
         image_processor) -> LlavaOneVisionAdapter:
    """A LLaVA-OneVision checkpoint; its image processor gives the normalisation."""
    return LlavaOneVisionAdapter(name, model, tokenizer, image_processor.image_mean, image_processor.image_std)


def configure(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
              settings: dict) -> LlavaOneVisionAdapter:
    """A ``config:`` LLaVA-OneVision, normalised as the published processor does."""
    kwargs = {k: settings[k] for k in ("image_mean", "image_std") if settings.get(k) is not None}
    return LlavaOneVisionAdapter(name, model, tokenizer, **kwargs)
