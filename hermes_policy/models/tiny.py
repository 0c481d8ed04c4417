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
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from hermes_policy.models.base import ModelAdapter
from hermes_policy.models.byte_tokenizer import byte_tokenizer
from hermes_policy.models.families import FAMILIES, INTERNVL_SPECIALS, LLAVA_SPECIALS, QWEN_SPECIALS, SMOLVLM_SPECIALS
from hermes_policy.models.framed import InternVLAdapter, SmolVLMAdapter
from hermes_policy.models.frontend import FrontendConfig, PatchProjector
from hermes_policy.models.frontend_lm import FrontendLMAdapter
from hermes_policy.models.llava_ov import LlavaOneVisionAdapter
from hermes_policy.models.qwen3_vl import Qwen3VLAdapter
from hermes_policy.models.qwen_vl import QwenVLAdapter

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


def _qwen_config(config_cls, tok, vision: dict, text: dict | None = None) -> object:
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in zip(
        ("vision_start_token_id", "vision_end_token_id", "video_token_id", "image_token_id"), QWEN_SPECIALS
    )}
    text = dict(
        text or dict(_TEXT, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                             "mrope_section": [2, 3, 3]}),
        **_special_ids(tok),
        vocab_size=len(tok),
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


#: Qwen3-VL / Qwen3.5 patches are 16 px (merged 2 x 2): a 64 x 64 frame group is 2 x 2 = 4 video tokens
_QWEN3_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=_TEXT["hidden_size"],
                     num_position_embeddings=64)


def _qwen3_processor() -> Qwen2VLImageProcessorPil:
    """Qwen3-VL's image processing: 16-px patches, merged 2 x 2, two frames per temporal patch, mean/std 0.5."""
    return Qwen2VLImageProcessorPil(patch_size=16, temporal_patch_size=2, merge_size=2,
                                    image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])


def tiny_qwen3_vl(dtype: torch.dtype = torch.float32) -> Qwen3VLAdapter:
    """Qwen3-VL in miniature: interleaved M-RoPE, q/k norms, DeepStack into the first two decoder layers."""
    tok = byte_tokenizer(QWEN_SPECIALS)
    vision = dict(_QWEN3_VISION, deepstack_visual_indexes=[0, 1])
    text = dict(_TEXT, head_dim=16, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                     "mrope_section": [4, 2, 2], "mrope_interleaved": True})
    cfg = _qwen_config(Qwen3VLConfig, tok, vision, text)
    model = _seeded(lambda: Qwen3VLForConditionalGeneration(cfg), 0).to(dtype)
    return Qwen3VLAdapter("tiny-qwen3-vl", model, tok, _qwen3_processor(), max_pixels=64 * 64)


def tiny_qwen3_5(dtype: torch.dtype = torch.float32) -> Qwen3VLAdapter:
    """Qwen3.5 in miniature: Gated DeltaNet layers 0 and 2, gated full attention (half its dimensions rotated)
    in layers 1 and 3, the Qwen3-VL vision layout without DeepStack."""
    tok = byte_tokenizer(QWEN_SPECIALS)
    text = dict(_TEXT, head_dim=16, full_attention_interval=2, linear_conv_kernel_dim=4, linear_key_head_dim=16,
                linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5,
                                 "mrope_section": [2, 1, 1], "mrope_interleaved": True})
    cfg = _qwen_config(Qwen3_5Config, tok, dict(_QWEN3_VISION), text)
    model = _seeded(lambda: Qwen3_5ForConditionalGeneration(cfg), 0).to(dtype)
    return Qwen3VLAdapter("tiny-qwen3.5", model, tok, _qwen3_processor(), max_pixels=64 * 64)


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


def tiny_internvl(dtype: torch.dtype = torch.float32) -> InternVLAdapter:
    """InternVL3.5 in miniature: an InternViT tower (56-px frames, 14-px patches), pixel shuffle 2 x 2 -> 4 tokens
    per frame, and a Qwen3 decoder (q/k norms) as InternVL3.5 has."""
    from transformers import InternVLConfig, InternVLForConditionalGeneration

    tok = byte_tokenizer(INTERNVL_SPECIALS)
    cfg = InternVLConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=[56, 56], patch_size=[14, 14]),
        text_config=dict(_TEXT, **_special_ids(tok), model_type="qwen3", head_dim=16, vocab_size=len(tok)),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4, downsample_ratio=0.5,
    )
    model = _seeded(lambda: InternVLForConditionalGeneration(cfg), 0).to(dtype)
    return InternVLAdapter("tiny-internvl", model, tok)


def tiny_smolvlm(dtype: torch.dtype = torch.float32) -> SmolVLMAdapter:
    """SmolVLM2 in miniature: a SigLIP-style tower (64-px frames, 16-px patches), pixel shuffle by 2 -> 4 tokens
    per frame, and a Llama decoder."""
    from transformers import SmolVLMConfig, SmolVLMForConditionalGeneration

    tok = byte_tokenizer(SMOLVLM_SPECIALS)
    cfg = SmolVLMConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=64, patch_size=16),
        text_config=dict(_TEXT, **_special_ids(tok), model_type="llama", vocab_size=len(tok)),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
    )
    model = _seeded(lambda: SmolVLMForConditionalGeneration(cfg), 0).to(dtype)
    return SmolVLMAdapter("tiny-smolvlm", model, tok, image_mean=(0.5,) * 3, image_std=(0.5,) * 3)


_BUILDERS = {
    "tiny-qwen2-vl": tiny_qwen2_vl,
    "tiny-qwen2.5-vl": tiny_qwen2_5_vl,
    "tiny-llava-ov": tiny_llava_ov,
    "tiny-qwen3-vl": tiny_qwen3_vl,
    "tiny-qwen3.5": tiny_qwen3_5,
    "tiny-internvl": tiny_internvl,
    "tiny-smolvlm": tiny_smolvlm,
}
#: every family's miniature, in the family table's order (the table names them; this module builds them)
TINY_MODELS = {"tiny-embedded": tiny_embedded, **{f.tiny: _BUILDERS[f.tiny] for f in FAMILIES if f.tiny}}


def build_tiny(name: str, dtype: torch.dtype = torch.float32) -> ModelAdapter:
    adapter = TINY_MODELS[name](dtype)
    adapter.weights = "random"  # seeded, never trained: whatever they say is noise
    return adapter
