"""A small Llama video LM trained from scratch: the embedded model's fallback recipe.

SmolLM2-135M with a trained front end is the preferred embedded model (its
attention heads are real), but on 2 CPU cores a frozen 135M LM did not learn to
read frames well enough to reach the accuracy bar (see the model card). This
module builds the alternative the issue allows: a few-million-parameter
``LlamaForCausalLM`` (so 1-D RoPE, GQA, the same attention seam and re-indexing
as every other model) with its own byte-level BPE tokenizer, trained jointly with
a :class:`ConvFrontend` on the same synthetic streams.

Choices that matter for streaming:

* ``rope_theta`` is small (64), so every rotary frequency completes full turns
  within a training clip: no rotation angle at a long distance is wholly new.
* Training streams may spread their frames' positions with random gaps
  (``TrainConfig.gap_share``), so relative distances several times longer than
  a clip are seen in training while the number of tokens stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from hermes_policy.models.frontend import ConvFrontend, ConvFrontendConfig, load_frontend, mc_scoring, save_frontend
from hermes_policy.models.frontend_lm import FrontendLMAdapter


@dataclass(frozen=True)
class ScratchConfig:
    """Shape of the from-scratch LM and its front end.

    Attributes:
        hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads: the Llama decoder.
        rope_theta: rotary base (small on purpose; see the module docstring).
        vocab_size: BPE vocabulary size, bytes and ChatML specials included.
        grid: frames become grid x grid tokens.
        input_size: frames are resized to input_size x input_size before the conv stages.
        channels: conv widths, one stride-2 stage each down to the grid.
        concepts: size of the front end's concept bottleneck (colours + shapes of the synthetic
            world: 10); 0 projects the conv features directly.
    """

    hidden_size: int = 256
    intermediate_size: int = 768
    num_layers: int = 6
    num_heads: int = 8
    num_kv_heads: int = 4
    rope_theta: float = 64.0
    vocab_size: int = 1024
    grid: int = 3
    input_size: int = 96
    channels: tuple[int, ...] = (24, 48, 64, 96, 128)
    concepts: int = 10
    max_position_embeddings: int = 65536

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide into num_heads, and num_heads into num_kv_heads")
        if self.rope_theta <= 1:
            raise ValueError("rope_theta must be > 1")

    def llama(self, tokenizer: PreTrainedTokenizerBase) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_position_embeddings,
            rope_parameters={"rope_type": "default", "rope_theta": self.rope_theta},
            tie_word_embeddings=True,
            bos_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
            eos_token_id=tokenizer.convert_tokens_to_ids("<|im_end|>"),
            pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        )


def build_scratch(cfg: ScratchConfig, tokenizer: PreTrainedTokenizerBase, seed: int) -> tuple[LlamaForCausalLM,
                                                                                            ConvFrontend]:
    """A seeded, untrained LM + front end pair of the given shape."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg.llama(tokenizer))
    norm = float(model.get_input_embeddings().weight.detach().norm(dim=-1).mean())
    frontend = ConvFrontend(ConvFrontendConfig(hidden_size=cfg.hidden_size, input_size=cfg.input_size,
                                               grid=cfg.grid, channels=cfg.channels, target_norm=norm, seed=seed,
                                               concepts=cfg.concepts))
    return model, frontend


def save_scratch(model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase, frontend: ConvFrontend,
                 directory: str | Path, extra: dict | None = None, dtype: torch.dtype = torch.bfloat16) -> None:
    """LM (safetensors; bf16 by default: half the bytes to ship), tokenizer and front end.

    Checkpoints pass ``dtype=torch.float32``, so a resumed run continues from its exact masters.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    # a converted copy: converting the model in place would round a training run's fp32 masters
    weights = {k: v.detach().to(dtype) for k, v in model.state_dict().items()}
    model.save_pretrained(directory, state_dict=weights)
    tokenizer.save_pretrained(directory)
    save_frontend(frontend, directory, extra=extra)


def is_scratch_dir(directory: str | Path) -> bool:
    directory = Path(directory)
    return (directory / "config.json").exists() and (directory / "frontend.json").exists()


def load_scratch(directory: str | Path, name: str, dtype: torch.dtype = torch.float32) -> FrontendLMAdapter:
    """Inverse of :func:`save_scratch`, as a streaming adapter."""
    directory = Path(directory)
    model = LlamaForCausalLM.from_pretrained(directory, dtype=dtype, attn_implementation="sdpa")
    tokenizer = PreTrainedTokenizerFast.from_pretrained(directory)
    adapter = FrontendLMAdapter(name, model, tokenizer, load_frontend(directory).to(dtype))
    adapter.mc_scoring = mc_scoring(directory)
    return adapter


__all__ = ["ScratchConfig", "build_scratch", "is_scratch_dir", "load_scratch", "save_scratch"]
