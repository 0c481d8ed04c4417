"""Planted embedded, Qwen2-VL, Qwen2.5-VL and LLaVA-OneVision models (the families before the 2025-26 ones).

Each builder returns ``(adapter, decoder stack, basis)`` with the vision side marked; the decoder's
roles are written afterwards by :func:`~hermes_policy.models.planted.build_planted`.
"""

from __future__ import annotations

import math

import torch

from hermes_policy.models.planted.config import PlantedConfig
from hermes_policy.models.planted.towers import MarkedPatchTower
from hermes_policy.models.planted.weights import (
    CONTENT,
    MROPE_SECTION,
    ROPE_THETA,
    Basis,
    content_projection,
    text_dims,
)

FRAME_PIXELS = 112  # every family before Qwen3 sees a 4 x 4 grid of video tokens per frame at this size


def build_embedded(cfg: PlantedConfig, gen: torch.Generator):
    from transformers import LlamaConfig, LlamaForCausalLM

    from hermes_policy.models.byte_tokenizer import byte_tokenizer
    from hermes_policy.models.frontend import FrontendConfig, PatchProjector
    from hermes_policy.models.frontend_lm import FrontendLMAdapter
    from hermes_policy.models.tiny import _special_ids

    tok = byte_tokenizer()
    lm = LlamaConfig(**text_dims(cfg, tok), **_special_ids(tok),
                     rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA})
    model = LlamaForCausalLM(lm).eval()
    basis = Basis(lm.hidden_size)
    frontend = PatchProjector(FrontendConfig(hidden_size=lm.hidden_size, grid=4, cell_pixels=4))
    with torch.no_grad():
        frontend.proj.weight.copy_(content_projection(gen, basis, frontend.config.in_features))
        frontend.proj.bias.zero_()
        frontend.cell_embed.copy_(basis.video_code(cfg.anchor_positions))
    return FrontendLMAdapter(cfg.name, model, tok, frontend), model.model, basis


def build_qwen(cfg: PlantedConfig, gen: torch.Generator):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
        Qwen2VLImageProcessorPil,
    )

    from hermes_policy.models.byte_tokenizer import byte_tokenizer
    from hermes_policy.models.qwen_vl import QwenVLAdapter
    from hermes_policy.models.tiny import QWEN_SPECIALS, _special_ids

    tok = byte_tokenizer(QWEN_SPECIALS)
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in zip(
        ("vision_start_token_id", "vision_end_token_id", "video_token_id", "image_token_id"), QWEN_SPECIALS)}
    text = dict(text_dims(cfg, tok), **_special_ids(tok),
                rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA, "mrope_section": MROPE_SECTION})
    hidden = text["hidden_size"]
    if cfg.family == "qwen2-vl":
        vision = dict(depth=1, embed_dim=16, hidden_size=hidden, num_heads=2, mlp_ratio=2)
        config_cls, model_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration
    else:
        vision = dict(depth=1, hidden_size=16, intermediate_size=32, out_hidden_size=hidden, num_heads=2,
                      window_size=56, fullatt_block_indexes=[0], tokens_per_second=2)
        config_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    model = model_cls(config_cls(text_config=text, vision_config=vision, **ids)).eval()
    vcfg = model.config.vision_config
    basis = Basis(hidden)
    tower = MarkedPatchTower(3 * vcfg.temporal_patch_size * vcfg.patch_size ** 2, hidden, vcfg.spatial_merge_size)
    with torch.no_grad():
        tower.proj.weight.copy_(content_projection(gen, basis, tower.proj.in_features))
        tower.cell_embed.copy_(basis.video_code(cfg.anchor_positions))
    model.model.visual = tower
    pixels = FRAME_PIXELS * FRAME_PIXELS
    adapter = QwenVLAdapter(cfg.name, model, tok, Qwen2VLImageProcessorPil(), max_pixels=pixels, min_pixels=pixels)
    return adapter, model.model.language_model, basis


def build_llava(cfg: PlantedConfig, gen: torch.Generator):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from hermes_policy.models.byte_tokenizer import byte_tokenizer
    from hermes_policy.models.llava_ov import LlavaOneVisionAdapter
    from hermes_policy.models.tiny import LLAVA_SPECIALS, _special_ids

    tok = byte_tokenizer(LLAVA_SPECIALS)
    text = dict(text_dims(cfg, tok), **_special_ids(tok), model_type="qwen2",
                rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA})
    patch = 14
    side = FRAME_PIXELS // patch  # 8 x 8 patches, pooled 2 x 2 into the 4 x 4 token grid
    vision_hidden = 32
    config = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=vision_hidden, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2, image_size=FRAME_PIXELS, patch_size=patch),
        text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"), vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )
    model = LlavaOnevisionForConditionalGeneration(config).eval()
    hidden = text["hidden_size"]
    basis = Basis(hidden)
    tower = model.model.vision_tower
    # vision space: dims 0-3 the position code (video, 3 markers), the rest pixel content
    code = basis.video_code(cfg.anchor_positions)[:, basis.indicators]  # (16, 4)
    r, c = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    pooled = ((r // 2) * (side // 2) + c // 2).flatten()  # patch -> the pooled token it averages into
    pos = torch.zeros(side * side, vision_hidden, dtype=torch.float64)
    pos[:, :4] = code[pooled]
    conv = tower.embeddings.patch_embedding
    lift = 20.0  # keeps GELU in its linear range: gelu(x + 20) - 20 = x to float precision for |x| < 10
    w1 = torch.zeros(hidden, vision_hidden, dtype=torch.float64)
    w1[basis.indicators, list(range(4))] = 1.0
    n_content = hidden - basis.content.start
    w1[basis.content, 4:] = torch.randn(n_content, vision_hidden - 4, generator=gen,
                                        dtype=torch.float64) * CONTENT / math.sqrt(n_content * (vision_hidden - 4))
    with torch.no_grad():
        w = torch.zeros_like(conv.weight, dtype=torch.float64)
        w[4:] = torch.randn(w[4:].shape, generator=gen, dtype=torch.float64) / w[0].numel()
        conv.weight.copy_(w)
        conv.bias.zero_()
        tower.embeddings.position_embedding.weight.copy_(pos)
        for layer in tower.encoder.layers:  # identity blocks: the residual passes through untouched
            for lin in (layer.self_attn.out_proj, layer.mlp.fc2):
                lin.weight.zero_()
                lin.bias.zero_()
        proj = model.model.multi_modal_projector
        proj.linear_1.weight.copy_(w1)
        proj.linear_1.bias.fill_(lift)
        proj.linear_2.weight.copy_(torch.eye(hidden, dtype=torch.float64))
        proj.linear_2.bias.fill_(-lift)
        newline = torch.zeros(hidden, dtype=torch.float64)
        newline[basis.text] = 1.0  # a text-like token: it stands at the start of every question
        model.model.image_newline.copy_(newline)
    return LlavaOneVisionAdapter(cfg.name, model, tok), model.model.language_model, basis


__all__ = ["FRAME_PIXELS", "build_embedded", "build_llava", "build_qwen"]
