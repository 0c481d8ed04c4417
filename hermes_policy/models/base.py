"""What the runtime needs from a model family, and nothing more.

A :class:`ModelAdapter` wraps one loaded HF model. It never re-implements the
forward: it only turns frames and text into input embeddings with explicit
positions (so streaming chunks get the positions a full forward would), and
exposes the decoder stack, the LM head and the rotary layout the cache needs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import Frame

#: Stands in for the video while rendering a chat template, then split on.
VIDEO_PLACEHOLDER = "\u2063HERMES_VIDEO\u2063"

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant watching a live video stream. Answer briefly."

#: families that write a frame's number or time as text count a frame's tokens for a frame this far into the
#: stream (in seconds, or frames): an upper bound for streams of up to an hour; each further digit adds a token
FRAME_TEXT_HORIZON = 3599


@dataclass
class EncodedChunk:
    """Input embeddings for n new tokens, ready to prefill.

    Attributes:
        embeds: (n, hidden) input embeddings in the model dtype.
        positions: (A, n) long positions (A = 1 for 1-D RoPE, 3 for M-RoPE).
        meta: per-token metadata.
        deepstack: (K, n, hidden) features added to the hidden states of the image-patch tokens after each
            of the first K decoder layers (Qwen3-VL's DeepStack: merged features of deeper vision-encoder
            layers), zero rows for the other tokens; None when the chunk has none (text, most families).
    """

    embeds: torch.Tensor
    positions: torch.Tensor
    meta: TokenMeta
    deepstack: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n = self.embeds.shape[0]
        if self.positions.shape[1] != n or len(self.meta) != n:
            raise ValueError(
                f"chunk parts disagree: {n} embeddings, {self.positions.shape[1]} positions, {len(self.meta)} meta rows"
            )
        if self.deepstack is not None and (self.deepstack.ndim != 3 or self.deepstack.shape[1] != n):
            raise ValueError(f"deepstack must be (K, {n}, hidden), got {tuple(self.deepstack.shape)}")

    def __len__(self) -> int:
        return self.embeds.shape[0]

    @property
    def end_position(self) -> int:
        """One past the largest position in the chunk."""
        return int(self.positions.max()) + 1 if len(self) else 0

    @classmethod
    def cat(cls, parts: list[EncodedChunk]) -> EncodedChunk:
        stacks = [p.deepstack for p in parts if p.deepstack is not None]
        deepstack = None
        if stacks:
            k, hidden = stacks[0].shape[0], stacks[0].shape[2]
            if any(s.shape[0] != k for s in stacks):
                raise ValueError("parts with different numbers of DeepStack layers cannot be joined")
            deepstack = torch.cat([p.deepstack if p.deepstack is not None else
                                   stacks[0].new_zeros(k, len(p), hidden) for p in parts], dim=1)
        return cls(
            torch.cat([p.embeds for p in parts]),
            torch.cat([p.positions for p in parts], dim=1),
            TokenMeta.cat([p.meta for p in parts]),
            deepstack,
        )


@dataclass(frozen=True)
class PromptTemplate:
    """The chat template cut around the video: prefix + video + between + question + suffix."""

    prefix: str
    suffix: str

    @classmethod
    def from_tokenizer(
        cls, tokenizer: PreTrainedTokenizerBase, system: str, video_open: str = "", video_close: str = ""
    ) -> PromptTemplate:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": VIDEO_PLACEHOLDER}]
        rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        if not isinstance(rendered, str) or rendered.count(VIDEO_PLACEHOLDER) != 1:
            raise ValueError("the tokenizer's chat template did not render the user message verbatim")
        before, after = rendered.split(VIDEO_PLACEHOLDER)
        return cls(prefix=before + video_open, suffix=video_close + "{question}" + after)

    def question_text(self, question: str) -> str:
        return self.suffix.replace("{question}", "\n" + question, 1)


class ModelAdapter(ABC):
    """One architecture family, wrapped for streaming.

    Attributes:
        name: the name it was loaded by.
        model: the whole HF model (vision + language).
        tokenizer: its tokenizer (with a chat template).
        rotary: rotary layout of the language model.
        frames_per_group: frames the vision encoder fuses into one temporal step
            (2 for Qwen-VL's temporal patches, else 1). Ingest chunks are multiples of it.
        video_open, video_close: text around the video in the prompt.
        mc_scoring: ``letter``, ``word-letter`` or ``cloze``: how its multiple-choice answers are read.
    """

    frames_per_group: int = 1
    #: how evaluation reads its multiple-choice answers by default (``hermes_policy.eval.scoring.SCORERS``):
    #: hub models answer by the letter; a model trained here says how in its ``frontend.json``.
    mc_scoring: str = "letter"
    #: ``trained`` or ``random`` (a ``config:`` model: its answers are noise; only time and memory are real)
    weights: str = "trained"
    video_open: str = ""
    video_close: str = ""

    def __init__(self, name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
        self.name = name
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.rotary = self._rotary_spec()

    # -------------------------------------------------------------- structure
    @property
    @abstractmethod
    def text_model(self) -> nn.Module:
        """The decoder stack: takes ``inputs_embeds``, ``position_ids``, ``past_key_values``."""

    @property
    @abstractmethod
    def lm_head(self) -> nn.Module:
        """Maps final hidden states (..., hidden) to vocabulary logits."""

    @abstractmethod
    def _rotary_spec(self) -> RotarySpec: ...

    @property
    def text_config(self):
        return self.model.config.get_text_config(decoder=True)

    @property
    def layer_types(self) -> list[str] | None:
        """A hybrid model's per-decoder-layer types (``full_attention`` / ``linear_attention``); None: all attention."""
        types = getattr(self.text_config, "layer_types", None)
        return list(types) if types and "linear_attention" in types else None

    @property
    def kv_layers(self) -> tuple[int, ...]:
        """The decoder layers with attention and a KV cache: every one, unless the model is hybrid."""
        types = self.layer_types
        if types is None:
            return tuple(range(self.text_config.num_hidden_layers))
        return tuple(i for i, t in enumerate(types) if t != "linear_attention")

    @property
    def num_layers(self) -> int:
        """Layers the runtime sees: decoder layers with attention (all of them but a hybrid's linear ones)."""
        return len(self.kv_layers)

    @property
    def num_model_layers(self) -> int:
        """Every decoder layer, with attention or not."""
        return self.text_config.num_hidden_layers

    @property
    def num_kv_heads(self) -> int:
        return self.text_config.num_key_value_heads

    @property
    def num_heads(self) -> int:
        return self.text_config.num_attention_heads

    @property
    def head_dim(self) -> int:
        cfg = self.text_config
        return getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads

    @property
    def dtype(self) -> torch.dtype:
        return self.text_model.get_input_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        """Where inputs go: the embeddings' device (where accelerate runs them, if it offloaded them to disk)."""
        embeddings = self.text_model.get_input_embeddings()
        device = embeddings.weight.device
        if device.type == "meta":
            device = torch.device(getattr(getattr(embeddings, "_hf_hook", None), "execution_device", None) or "cpu")
        return device

    def set_attention(self, implementation: str) -> None:
        """Switch the language model's attention; the vision encoder keeps its own."""
        if "text_config" in getattr(self.model.config, "sub_configs", {}):
            self.model.set_attn_implementation({"text_config": implementation})
        else:
            self.model.set_attn_implementation(implementation)

    # ------------------------------------------------------------------ text
    def template(self, system: str) -> PromptTemplate:
        return PromptTemplate.from_tokenizer(self.tokenizer, system, self.video_open, self.video_close)

    def encode_text(self, text: str, start: int) -> EncodedChunk:
        """Embed text tokens at consecutive positions ``start, start+1, ...`` on every axis."""
        ids = self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
        return self.encode_ids(ids, start)

    def encode_ids(self, ids: torch.Tensor, start: int) -> EncodedChunk:
        """Embed (n,) token ids at consecutive positions from ``start``."""
        ids = ids.to(self.device)
        with torch.no_grad():
            embeds = self.text_model.get_input_embeddings()(ids)
        n = ids.shape[0]
        positions = torch.arange(start, start + n).expand(self.rotary.n_axes, n).clone()
        return EncodedChunk(embeds, positions, TokenMeta.text(n))

    def encode_question(self, text: str, start: int) -> EncodedChunk:
        """The tokens that close the video and ask; a family may prepend special embeddings."""
        return self.encode_text(text, start)

    def forward_kwargs(self, chunk: EncodedChunk) -> dict:
        """What the decoder stack takes for ``chunk`` besides embeddings, positions and the cache.

        Qwen3-VL's DeepStack features go in here, so a streamed chunk gets exactly what a full
        forward gives those tokens. Default: nothing.
        """
        return {}

    def position_ids(self, positions: torch.Tensor) -> torch.Tensor:
        """Positions as the model's forward wants them: (1, n) for 1-D, (3, 1, n) for M-RoPE."""
        p = positions.to(self.device)
        return p[:, None, :] if self.rotary.n_axes > 1 else p

    # ----------------------------------------------------------------- video
    @abstractmethod
    def encode_frames(self, frames: list[Frame], start: int) -> EncodedChunk:
        """Embed frames (a multiple of ``frames_per_group``) starting at position ``start``.

        Frame-level text the family uses (timestamps, delimiters) is included;
        every returned token carries the frame it belongs to in its metadata.
        """

    @abstractmethod
    def tokens_per_frame(self, height: int, width: int) -> int:
        """Video tokens one frame group of this size adds to the cache (frame text included)."""

    @property
    def family(self) -> str:
        """The family's short name from the family table (``qwen3-vl``, ``llava-ov``, ...); ``embedded`` for
        the models trained here."""
        from hermes_policy.models.families import family_of

        found = family_of(getattr(self.model.config, "model_type", None))
        return found.name if found is not None else "embedded"

    def patches_per_frame(self, height: int, width: int) -> int:
        """Image patches of one frame unit: :meth:`tokens_per_frame` without the frame's text (same by default)."""
        return self.tokens_per_frame(height, width)

    def describe(self) -> dict:
        info = {
            "name": self.name,
            "family": self.family,
            "adapter": type(self).__name__,
            "layers": self.num_layers,
            "heads": self.num_heads,
            "kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "rope_axes": self.rotary.n_axes,
            "frames_per_group": self.frames_per_group,
            "mc_scoring": self.mc_scoring,
            "dtype": str(self.dtype).removeprefix("torch."),
            "weights": self.weights,
        }
        if self.layer_types is not None:  # a hybrid: which decoder layers have attention (the others recur)
            info["model_layers"] = self.num_model_layers
            info["kv_layers"] = list(self.kv_layers)
        return info


class ConditionalGenerationAdapter(ModelAdapter):
    """HF ``*ForConditionalGeneration`` VLMs: ``model.model.language_model`` plus ``model.lm_head``."""

    @property
    def text_model(self) -> nn.Module:
        return self.model.model.language_model

    @property
    def lm_head(self) -> nn.Module:
        return self.model.lm_head
