"""Planted Qwen3-VL, Qwen3.5, InternVL3.5 and SmolVLM2 models: the 2025-26 families.

Each builder returns ``(adapter, decoder stack, basis)`` with the family's real transformers class,
its real adapter (:mod:`~hermes_policy.models.qwen3_vl`, :mod:`~hermes_policy.models.framed`) and a
marked vision tower (:mod:`~hermes_policy.models.planted.towers`); the decoder's roles are written
afterwards by :func:`~hermes_policy.models.planted.build_planted`, through the per-head q/k norms
all four decoders but SmolVLM's Llama have.

Where the planted shapes deviate from the published ones, and why:

* **Qwen3-VL / Qwen3.5** use ``mrope_section = [10, 3, 3]`` (interleaved): height takes pairs 1, 4, 7 and
  width 2, 5, 8, so the seven slowest pairs (9-15: pads, recency, markers, bias) all follow *time*,
  as in a 1-D layout; the published sections give height and width every third pair up to near the
  end. Frames are 128 x 128 (16-px patches merged 2 x 2: a 4 x 4 grid per frame group).
* **Qwen3-VL** keeps three DeepStack layers, fed zero features by its marked tower.
* **Qwen3.5** uses ``partial_rotary_factor = 1.0`` (published: 0.25), so every pair of a head rotates
  and the layout above applies; ``full_attention_interval = 2`` (published: 4), so its ``2L`` decoder
  layers alternate Gated DeltaNet and full attention. The planted config's L layers are the attention
  layers; the DeltaNet layers are transparent (zero ``out_proj`` and MLP ``down_proj``).
* **InternVL3.5** (a Qwen3 decoder) and **SmolVLM2** (Llama) see 112 x 112 frames, 14-px patches,
  pixel-shuffled 2 x 2 into 16 tokens; InternVL's projector (LayerNorm, GELU MLP) is set to pass the
  shuffled code and content through, SmolVLM's linear connector to map them.
"""

from __future__ import annotations

import torch

from hermes_policy.models.planted.config import TOKENS_PER_FRAME, PlantedConfig
from hermes_policy.models.planted.towers import MarkedGridTower, MarkedPatchTower, grid_projection, shuffle_layout
from hermes_policy.models.planted.weights import (
    CONTENT,
    INTERLEAVED_SECTION,
    ROPE_THETA,
    Basis,
    content_projection,
    text_dims,
)

QWEN3_FRAME_PIXELS = 128  # 16-px patches merged 2 x 2: 4 x 4 tokens
GRID_PIXELS, GRID_PATCH = 112, 14  # InternVL / SmolVLM: 8 x 8 patches shuffled into 4 x 4 tokens
GRID_CHANNELS = 16  # the marked ViT's width: [code, content] and its mirror (InternVL), or zero-padded
DEEPSTACK_LAYERS = 3


def build_qwen3(cfg: PlantedConfig, gen: torch.Generator):
    """Qwen3-VL (``Qwen3VLForConditionalGeneration``) or Qwen3.5 (``Qwen3_5ForConditionalGeneration``)."""
    from transformers import (
        Qwen3_5Config,
        Qwen3_5ForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
    )

    from hermes_policy.models.byte_tokenizer import byte_tokenizer
    from hermes_policy.models.qwen3_vl import Qwen3VLAdapter
    from hermes_policy.models.tiny import QWEN_SPECIALS, _qwen3_processor, _special_ids

    tok = byte_tokenizer(QWEN_SPECIALS)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in zip(
        ("vision_start_token_id", "vision_end_token_id", "video_token_id", "image_token_id"), QWEN_SPECIALS)}
    rope = {"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": INTERLEAVED_SECTION,
            "mrope_interleaved": True}
    hybrid = cfg.family == "qwen3.5"
    text = dict(text_dims(cfg, tok, 2 * cfg.num_layers if hybrid else None), **_special_ids(tok),
                rope_parameters=rope)
    hidden = text["hidden_size"]
    vision = dict(depth=1, hidden_size=16, intermediate_size=32, num_heads=2, out_hidden_size=hidden,
                  num_position_embeddings=64)
    if hybrid:
        rope["partial_rotary_factor"] = 1.0
        text.update(full_attention_interval=2, linear_conv_kernel_dim=4, linear_key_head_dim=16,
                    linear_value_head_dim=16, linear_num_key_heads=1, linear_num_value_heads=2)
        config_cls, model_cls, deepstack = Qwen3_5Config, Qwen3_5ForConditionalGeneration, 0
    else:
        vision.update(depth=DEEPSTACK_LAYERS, deepstack_visual_indexes=list(range(DEEPSTACK_LAYERS)))
        config_cls, model_cls, deepstack = Qwen3VLConfig, Qwen3VLForConditionalGeneration, DEEPSTACK_LAYERS
    model = model_cls(config_cls(text_config=text, vision_config=vision, **ids)).eval()
    vcfg = model.config.vision_config
    basis = Basis(hidden)
    tower = MarkedPatchTower(3 * vcfg.temporal_patch_size * vcfg.patch_size ** 2, hidden, vcfg.spatial_merge_size,
                             deepstack)
    with torch.no_grad():
        tower.proj.weight.copy_(content_projection(gen, basis, tower.proj.in_features))
        tower.cell_embed.copy_(basis.video_code(cfg.anchor_positions))
    model.model.visual = tower
    pixels = QWEN3_FRAME_PIXELS ** 2
    adapter = Qwen3VLAdapter(cfg.name, model, tok, _qwen3_processor(), max_pixels=pixels, min_pixels=pixels)
    return adapter, model.model.language_model, basis


def _grid_tower(cfg: PlantedConfig, basis: Basis, shuffle, mirror: bool, cls: bool,
                gen: torch.Generator) -> tuple[MarkedGridTower, torch.Tensor]:
    """The marked ViT for a pixel-shuffling family, and the (hidden, r·channels) map of its shuffled tokens."""
    side = GRID_PIXELS // GRID_PATCH
    token_of_patch, _, channel_of = shuffle_layout(shuffle, side * side, GRID_CHANNELS)
    if int(token_of_patch.max()) + 1 != TOKENS_PER_FRAME:
        raise ValueError(f"the shuffle makes {int(token_of_patch.max()) + 1} tokens, not {TOKENS_PER_FRAME}")
    per_token = side * side // TOKENS_PER_FRAME
    code = basis.video_code(cfg.anchor_positions)[:, basis.indicators]  # (16, CODE)
    tower = MarkedGridTower(GRID_PATCH, side, GRID_CHANNELS, code, token_of_patch,
                            CONTENT / per_token ** 0.5, mirror=mirror, cls=cls)
    with torch.no_grad():
        tower.proj.weight.copy_(torch.randn(tower.proj.weight.shape, generator=gen, dtype=torch.float64))
    return tower, grid_projection(basis, channel_of, tower.content_dims, gen)


def build_internvl(cfg: PlantedConfig, gen: torch.Generator):
    """InternVL3.5 (``InternVLForConditionalGeneration``, a Qwen3 decoder)."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    from hermes_policy.models.byte_tokenizer import byte_tokenizer
    from hermes_policy.models.families import INTERNVL_SPECIALS
    from hermes_policy.models.framed import InternVLAdapter
    from hermes_policy.models.tiny import _special_ids

    tok = byte_tokenizer(INTERNVL_SPECIALS)
    text = dict(text_dims(cfg, tok), **_special_ids(tok), model_type="qwen3",
                rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA})
    config = InternVLConfig(
        vision_config=dict(hidden_size=GRID_CHANNELS, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=[GRID_PIXELS] * 2, patch_size=[GRID_PATCH] * 2),
        text_config=text, image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=TOKENS_PER_FRAME, downsample_ratio=0.5,
    )
    model = InternVLForConditionalGeneration(config).eval()
    hidden = text["hidden_size"]
    basis = Basis(hidden)
    side = GRID_PIXELS // GRID_PATCH
    inner = model.model

    def shuffle(x: torch.Tensor) -> torch.Tensor:  # what get_image_features does between tower and projector
        y = inner.pixel_shuffle(x.reshape(1, side, side, -1), scale_factor=config.downsample_ratio)
        return y.reshape(1, -1, y.shape[-1])

    tower, w = _grid_tower(cfg, basis, shuffle, mirror=True, cls=config.vision_feature_select_strategy == "default",
                           gen=gen)
    proj = inner.multi_modal_projector
    # the shuffled [z, -z] channels have zero mean and a fixed norm, so the LayerNorm only scales them by κ
    per_token = side * side // TOKENS_PER_FRAME
    norm2 = per_token * 2 * (float(tower.cell_code[0].detach().double().pow(2).sum()) + tower.content_norm ** 2)
    variance = norm2 / (per_token * GRID_CHANNELS) + proj.layer_norm.eps
    lift = 20.0  # keeps GELU in its linear range: gelu(x + 20) - 20 = x to float precision for |x| < 10
    with torch.no_grad():
        proj.layer_norm.weight.fill_(1.0)
        proj.layer_norm.bias.zero_()
        proj.linear_1.weight.copy_(w * variance ** 0.5)
        proj.linear_1.bias.fill_(lift)
        proj.linear_2.weight.copy_(torch.eye(hidden, dtype=torch.float64))
        proj.linear_2.bias.fill_(-lift)
    inner.vision_tower = tower
    return InternVLAdapter(cfg.name, model, tok), inner.language_model, basis


def build_smolvlm(cfg: PlantedConfig, gen: torch.Generator):
    """SmolVLM2 (``SmolVLMForConditionalGeneration``, a Llama decoder)."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    from hermes_policy.models.byte_tokenizer import byte_tokenizer
    from hermes_policy.models.families import SMOLVLM_SPECIALS
    from hermes_policy.models.framed import SmolVLMAdapter
    from hermes_policy.models.tiny import _special_ids

    tok = byte_tokenizer(SMOLVLM_SPECIALS)
    text = dict(text_dims(cfg, tok), **_special_ids(tok), model_type="llama",
                rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA})
    config = SmolVLMConfig(
        vision_config=dict(hidden_size=GRID_CHANNELS, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, image_size=GRID_PIXELS, patch_size=GRID_PATCH),
        text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
    )
    model = SmolVLMForConditionalGeneration(config).eval()
    basis = Basis(text["hidden_size"])
    inner = model.model
    connector = inner.connector
    tower, w = _grid_tower(cfg, basis, lambda x: connector.pixel_shuffle(x, connector.scale_factor), mirror=False,
                           cls=False, gen=gen)
    with torch.no_grad():
        connector.modality_projection.proj.weight.copy_(w)
    inner.vision_model = tower
    return SmolVLMAdapter(cfg.name, model, tok, image_mean=(0.5,) * 3, image_std=(0.5,) * 3), inner.text_model, basis


__all__ = ["QWEN3_FRAME_PIXELS", "build_internvl", "build_qwen3", "build_smolvlm"]
