"""Tiny random-init instances of every supported family, built from configs.

They exist so that tests and CPU demos exercise the real transformers model
classes (real vision towers, real M-RoPE, real GQA) without downloading a
single weight. They are seeded, so a tiny model is the same on every machine.
Their text side uses the self-contained byte tokenizer.
"""

from __future__ import annotations

import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
)

from hermes_policy.models.base import ModelAdapter
from hermes_policy.models.byte_tokenizer import byte_tokenizer
from hermes_policy.models.frontend import FrontendConfig, PatchProjector
from hermes_policy.models.frontend_lm import FrontendLMAdapter
from hermes_policy.models.llava_ov import LlavaOneVisionAdapter
from hermes_policy.models.qwen_vl import QwenVLAdapter

QWEN_SPECIALS = ("<|vision_start|>", "<|vision_end|>", "<|video_pad|>", "<|image_pad|>")
LLAVA_SPECIALS = ("<image>", "<video>")

# Shared text-side shape: 4 layers, 4 query heads over 2 KV heads (GQA), head_dim 16.
_TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=4096,
    tie_word_embeddings=False,
)


def _special_ids(tok) -> dict[str, int]:
    """bos/eos/pad ids inside the byte vocabulary (the families' defaults point past it)."""
    return dict(
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )


def _seeded(build, seed: int):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build().eval()


def tiny_embedded(dtype: torch.dtype = torch.float32) -> FrontendLMAdapter:
    """A 4-layer Llama with an untrained patch projector: the embedded family, in miniature."""
    tok = byte_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), **_TEXT, **_special_ids(tok))
    model = _seeded(lambda: LlamaForCausalLM(cfg), 0).to(dtype)
    norm = float(model.get_input_embeddings().weight.detach().norm(dim=-1).mean())
    frontend = PatchProjector(FrontendConfig(hidden_size=cfg.hidden_size, grid=2, cell_pixels=4, target_norm=norm))
    return FrontendLMAdapter("tiny-embedded", model, tok, frontend.to(dtype))


def _qwen_config(config_cls, tok, vision: dict) -> object:
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in zip(
        ("vision_start_token_id", "vision_end_token_id", "video_token_id", "image_token_id"), QWEN_SPECIALS
    )}
    text = dict(
        _TEXT,
        **_special_ids(tok),
        vocab_size=len(tok),
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
    )
    return config_cls(text_config=text, vision_config=vision, **ids)


def tiny_qwen2_vl(dtype: torch.dtype = torch.float32) -> QwenVLAdapter:
    tok = byte_tokenizer(QWEN_SPECIALS)
    vision = dict(depth=2, embed_dim=32, hidden_size=_TEXT["hidden_size"], num_heads=2, mlp_ratio=2)
    cfg = _qwen_config(Qwen2VLConfig, tok, vision)
    model = _seeded(lambda: Qwen2VLForConditionalGeneration(cfg), 0).to(dtype)
    return QwenVLAdapter("tiny-qwen2-vl", model, tok, Qwen2VLImageProcessorPil(), max_pixels=56 * 56)


def tiny_qwen2_5_vl(dtype: torch.dtype = torch.float32) -> QwenVLAdapter:
    tok = byte_tokenizer(QWEN_SPECIALS)
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        out_hidden_size=_TEXT["hidden_size"],
        num_heads=2,
        window_size=56,
        fullatt_block_indexes=[1],
        tokens_per_second=2,
    )
    cfg = _qwen_config(Qwen2_5_VLConfig, tok, vision)
    model = _seeded(lambda: Qwen2_5_VLForConditionalGeneration(cfg), 0).to(dtype)
    return QwenVLAdapter("tiny-qwen2.5-vl", model, tok, Qwen2VLImageProcessorPil(), max_pixels=56 * 56)


def tiny_llava_ov(dtype: torch.dtype = torch.float32) -> LlavaOneVisionAdapter:
    tok = byte_tokenizer(LLAVA_SPECIALS)
    cfg = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=56,
            patch_size=14,
        ),
        text_config=dict(_TEXT, **_special_ids(tok), model_type="qwen2", vocab_size=len(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"),
        video_token_id=tok.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-1,
    )
    model = _seeded(lambda: LlavaOnevisionForConditionalGeneration(cfg), 0).to(dtype)
    return LlavaOneVisionAdapter("tiny-llava-ov", model, tok)


TINY_MODELS = {
    "tiny-embedded": tiny_embedded,
    "tiny-qwen2-vl": tiny_qwen2_vl,
    "tiny-qwen2.5-vl": tiny_qwen2_5_vl,
    "tiny-llava-ov": tiny_llava_ov,
}


def build_tiny(name: str, dtype: torch.dtype = torch.float32) -> ModelAdapter:
    return TINY_MODELS[name](dtype)
