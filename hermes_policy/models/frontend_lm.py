"""A plain Llama-family language model that sees video through a front end.

This is the family of the embedded model (SmolLM2-135M + :class:`PatchProjector`):
the LM has 1-D RoPE, and each frame becomes ``grid**2`` embeddings placed at
consecutive positions, exactly like text tokens.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hermes_policy.errors import ModelError
from hermes_policy.models.base import EncodedChunk, ModelAdapter
from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import Frame

#: rope types whose inverse frequencies do not depend on the sequence length,
#: so a cached key can be re-rotated exactly.
STATIC_ROPE_TYPES = ("default", "linear", "llama3")


def one_d_rotary(model: nn.Module, config) -> RotarySpec:
    """RotarySpec of a 1-D RoPE decoder whose ``rotary_emb`` holds ``inv_freq``."""
    rope_type = (getattr(config, "rope_parameters", None) or {}).get("rope_type", "default")
    if rope_type not in STATIC_ROPE_TYPES:
        raise ModelError(f"rope type {rope_type!r} is not supported (need one of {', '.join(STATIC_ROPE_TYPES)})")
    return RotarySpec.one_d(model.rotary_emb.inv_freq, config.max_position_embeddings)


class FrontendLMAdapter(ModelAdapter):
    """A ``LlamaForCausalLM``-style model plus a vision front end module.

    The front end maps (F, H, W, 3) uint8 frames to (F, T, hidden) embeddings and
    has ``config.tokens_per_frame`` and ``config.hidden_size`` (see :mod:`frontend`).
    """

    def __init__(
        self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, frontend: nn.Module
    ) -> None:
        self.frontend = frontend.to(model.device).eval()
        super().__init__(name, model, tokenizer)
        if frontend.config.hidden_size != self.text_config.hidden_size:
            raise ModelError(
                f"front end width {frontend.config.hidden_size} != LM hidden size {self.text_config.hidden_size}"
            )

    @property
    def text_model(self) -> nn.Module:
        return self.model.model

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head

    def _rotary_spec(self) -> RotarySpec:
        return one_d_rotary(self.model.model, self.model.config)

    def tokens_per_frame(self, height: int, width: int) -> int:
        return self.frontend.config.tokens_per_frame

    def encode_frames(self, frames: list[Frame], start: int) -> EncodedChunk:
        if not frames:
            raise ValueError("encode_frames needs at least one frame")
        with torch.no_grad():
            embeds = self.frontend(torch.stack([torch.as_tensor(f.image) for f in frames]))  # (F, T, hidden)
        n_frames, per_frame, hidden = embeds.shape
        n = n_frames * per_frame
        meta = TokenMeta.cat([TokenMeta.frame_tokens(f.index, f.time, 0, per_frame) for f in frames])
        positions = torch.arange(start, start + n)[None, :]
        return EncodedChunk(embeds.reshape(n, hidden).to(self.dtype), positions, meta)
