"""Planted memory models: real model classes whose heads have memory roles set in their weights.

A study (``study`` -> ``derive``) is an instrument; to calibrate it we need models
whose memory roles are known by construction, the way Tracr and InterpBench build
transformers with a known mechanism. :func:`draw_planted` draws a random
configuration (layer count, tier boundaries anywhere, per-head roles, decay rates,
anchor positions, sometimes a diffuse first layer or a layer out of depth order) and
:func:`build_planted` writes it into the weights of the family's own transformers
classes (``LlamaForCausalLM`` + patch front end, ``Qwen2VLForConditionalGeneration``,
``Qwen2_5_VLForConditionalGeneration``, ``LlavaOnevisionForConditionalGeneration``).
Nothing in the study reads the ground truth; it only streams video through the model.

How a role lives in the weights (every layer alike):

* **The residual stream is the input embedding.** Attention output projections and
  MLP down projections are zero, so each layer's queries and keys are linear maps of
  ``RMSNorm(embedding)``; each head's role is then set by its own q/k rows alone.
* **Embeddings carry indicator directions**: text tokens a "text" direction, video
  tokens a "video" direction and, per anchor slot, a ±1 marker that is +1 only at that
  slot's in-frame position (so every video token has the same norm). A little content
  (random projections of token ids / pixels) rides along.
* **Low-frequency rotary pairs carry the roles.** With ``Δ = query position - key
  position`` a pair with q = (0, a) and k = (b, 0) scores ``-a·b·sin(θΔ) ≈ -a·b·θ·Δ``:
  attention decays exponentially with age (a *recency* head, rate set by ``a``). Under
  M-RoPE that pair sits in the temporal section, so the decay follows frame time. A
  pair with q = (a, 0) and k = (±b, 0) scores ``±a·b`` (cos θΔ ≈ 1): an *anchor* head
  concentrated on one in-frame position of every frame. A *mixed* head has both at
  reduced strength; a *diffuse* head neither. One more pair keeps text keys out.
* **The remaining (high-frequency) pairs carry random q/k weights**: position- and
  content-dependent noise every head has, against which ``strength`` sets the signal.

The front end marks in-frame positions where the family allows it in weights: the
embedded projector's per-cell embedding, and SigLIP's absolute position embedding for
LLaVA-OneVision (encoder layers zeroed, projector linear in its working range). Qwen's
vision tower has no absolute position signal at all (its only position input is a 2-D
rotary inside attention, blind to where a patch sits when every patch looks alike), so
planted Qwen models swap ``model.model.visual`` for :class:`MarkedPatchTower`, a pixel
projection plus a per-position embedding with the tower's call signature. The LM, its
M-RoPE and the adapter are the real ones.

Planted Qwen configs give the temporal M-RoPE section half the rotary pairs (the
published split gives it the fastest quarter), so that it holds a pair slow enough for
a linear decay over a long stream. Every planted model uses ``rope_theta = 1e7``.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from hermes_policy.errors import ModelError
from hermes_policy.models.base import ModelAdapter

PLANTED_PREFIX = "planted:"
FAMILIES = ("embedded", "qwen2-vl", "qwen2.5-vl", "llava-ov")
TIER_KINDS = ("sensory", "working", "long-term", "diffuse")
ROLES = ("recency", "mixed", "anchor", "diffuse")
#: the memory tier whose signature each head role plants
ROLE_TIER = {"recency": "sensory", "mixed": "working", "anchor": "long-term"}

HEAD_DIM = 32
ROPE_THETA = 1e7
#: (pair index in a 32-dim head): the bias pair keeps text keys out; marker pairs hold anchor slots
BIAS_PAIR = 15
MARKER_PAIRS = (12, 13, 14)
#: recency pair: the temporal section's slowest pair under M-RoPE, a slow pair in 1-D RoPE
RECENCY_PAIR = {"1d": 11, "mrope": 7}
MROPE_SECTION = [8, 4, 4]
FRAME_PIXELS = 112  # every family sees a 4 x 4 grid of video tokens per frame at this size
TOKENS_PER_FRAME = 16

#: logit margin of video over text keys (the reducer reads video mass only; this keeps it from underflowing)
TEXT_MARGIN = 12.0
#: |q| and |k| scale of the planted pairs (their product is what matters)
KEY_SCALE = 8.0
MARKER = 0.5  # marker coefficient in a video embedding, against 1 for the video direction
CONTENT = 0.25  # norm of the content part of an embedding, against the indicator part
#: 100x the generator's signals (or noise) puts logits in the thousands, past which float32 softmax saturates
MAX_STRENGTH = 100.0
MAX_SEED = 2 ** 31 - 1  # torch.manual_seed's range


@dataclass(frozen=True)
class PlantedHead:
    """One query head's planted role.

    Attributes:
        role: ``recency``, ``mixed``, ``anchor`` or ``diffuse``.
        decay: recency rate per frame of age (attention ∝ exp(-decay · age)); 0 unless recency/mixed.
        anchor_gap: logit of the anchor position over the rest of a frame; 0 unless anchor/mixed.
        anchor_slot: which marker slot it reads (index into ``PlantedConfig.anchor_positions``), or -1.
    """

    role: str
    decay: float = 0.0
    anchor_gap: float = 0.0
    anchor_slot: int = -1

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {self.role!r}")
        if self.decay < 0 or self.anchor_gap < 0:
            raise ValueError("decay and anchor_gap must be >= 0")
        has_anchor = self.role in ("anchor", "mixed")
        if has_anchor != (self.anchor_slot >= 0):
            raise ValueError(f"a {self.role} head {'needs' if has_anchor else 'has no'} anchor slot")


@dataclass(frozen=True)
class PlantedConfig:
    """A planted model: family, shape, and the ground truth written into its weights.

    Attributes:
        family: one of :data:`FAMILIES`.
        seed: the draw's seed (also seeds the noise weights).
        layers: per layer, its kind (:data:`TIER_KINDS`; ``diffuse`` = no memory role).
        heads: per layer, one :class:`PlantedHead` per query head.
        num_kv_heads: key/value heads (query heads share keys in groups; keys carry every signal).
        anchor_positions: in-frame token index of each marker slot (distinct, < 16).
        noise: std, in logits, of the random part of every head's scores (fast rotary pairs only).
        strength: multiplies every planted rate and gap (signal-to-noise knob).
    """

    family: str
    seed: int
    layers: tuple[str, ...]
    heads: tuple[tuple[PlantedHead, ...], ...]
    num_kv_heads: int
    anchor_positions: tuple[int, ...]
    noise: float = 1.0
    strength: float = 1.0

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ModelError(f"unknown planted family {self.family!r}; use one of {', '.join(FAMILIES)}")
        if len(self.layers) < 3 or len(self.layers) != len(self.heads):
            raise ValueError("need at least 3 layers and one head list per layer")
        if any(t not in TIER_KINDS for t in self.layers):
            raise ValueError(f"layer kinds must be among {TIER_KINDS}")
        num_heads = len(self.heads[0])
        if num_heads < 1 or any(len(h) != num_heads for h in self.heads):
            raise ValueError("every layer needs the same number of heads")
        if num_heads % self.num_kv_heads:
            raise ValueError("num_kv_heads must divide the number of heads")
        if not 1 <= len(self.anchor_positions) <= len(MARKER_PAIRS) or len(set(self.anchor_positions)) != len(
                self.anchor_positions) or not all(0 <= p < TOKENS_PER_FRAME for p in self.anchor_positions):
            raise ValueError(f"anchor positions: 1-{len(MARKER_PAIRS)} distinct in-frame indices < {TOKENS_PER_FRAME}")
        if any(h.anchor_slot >= len(self.anchor_positions) for row in self.heads for h in row):
            raise ValueError("a head reads an anchor slot the config does not have")
        if not 0 <= self.seed <= MAX_SEED:
            raise ModelError(f"a planted seed must be between 0 and {MAX_SEED}, got {self.seed}")
        if not (0 <= self.noise <= MAX_STRENGTH and 0 <= self.strength <= MAX_STRENGTH):
            raise ModelError(f"planted strength and noise must be between 0 and {MAX_STRENGTH:g}, "
                             f"got {self.strength} and {self.noise}")

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_heads(self) -> int:
        return len(self.heads[0])

    @property
    def name(self) -> str:
        extra = "" if self.strength == 1.0 else f",strength={self.strength!r}"
        extra += "" if self.noise == 1.0 else f",noise={self.noise!r}"
        return f"{PLANTED_PREFIX}{self.seed},family={self.family}{extra}"  # parse_planted_name(name) == self

    def ground_truth(self) -> dict[str, Any]:
        """What the study should find: tier per layer, role / decay / anchor position per head (JSON-ready)."""
        return {
            "family": self.family, "seed": self.seed, "strength": self.strength, "noise": self.noise,
            "layers": list(self.layers),
            "roles": [[h.role for h in row] for row in self.heads],
            "decay": [[h.decay for h in row] for row in self.heads],
            "anchor_gap": [[h.anchor_gap for h in row] for row in self.heads],
            "anchor_position": [[self.anchor_positions[h.anchor_slot] if h.anchor_slot >= 0 else None
                                 for h in row] for row in self.heads],
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- the generator
@dataclass(frozen=True)
class PlantedRanges:
    """What :func:`draw_planted` draws from.

    Attributes:
        layers: (min, max) layer count.
        heads: head counts to pick from.
        decay: (min, max) recency rate per frame, drawn log-uniformly.
        anchor_gap: (min, max) anchor logit gap.
        mix: (min, max) share of recency in a mixed head (the rest is anchor).
        diffuse_first: probability that layer 0 is diffuse.
        out_of_order: probability that one layer takes another tier than its depth block.
        diffuse_head: probability that a head of a memory layer is a diffuse distractor.
    """

    layers: tuple[int, int] = (6, 14)
    heads: tuple[int, ...] = (2, 4)
    decay: tuple[float, float] = (0.04, 0.5)
    anchor_gap: tuple[float, float] = (3.0, 6.0)
    mix: tuple[float, float] = (0.35, 0.65)
    diffuse_first: float = 0.25
    out_of_order: float = 0.25
    diffuse_head: float = 0.15

    def __post_init__(self) -> None:
        if not 3 <= self.layers[0] <= self.layers[1]:
            raise ValueError("layers: need 3 <= min <= max")
        if not self.heads or any(h < 1 for h in self.heads):
            raise ValueError("heads: positive counts")
        if not 0 < self.decay[0] <= self.decay[1] or not 0 < self.anchor_gap[0] <= self.anchor_gap[1]:
            raise ValueError("decay and anchor_gap ranges must be positive and ordered")


def _head(rng: random.Random, role: str, ranges: PlantedRanges, slots: int) -> PlantedHead:
    if role == "diffuse":
        return PlantedHead("diffuse")
    decay = math.exp(rng.uniform(math.log(ranges.decay[0]), math.log(ranges.decay[1])))
    gap = rng.uniform(*ranges.anchor_gap)
    slot = rng.randrange(slots)
    if role == "recency":
        return PlantedHead("recency", decay=decay)
    if role == "anchor":
        return PlantedHead("anchor", anchor_gap=gap, anchor_slot=slot)
    w = rng.uniform(*ranges.mix)
    return PlantedHead("mixed", decay=w * decay, anchor_gap=(1 - w) * gap, anchor_slot=slot)


def _layer_heads(rng: random.Random, kind: str, num_heads: int, ranges: PlantedRanges,
                 slots: int) -> tuple[PlantedHead, ...]:
    if kind == "diffuse":
        return tuple(PlantedHead("diffuse") for _ in range(num_heads))
    main = {"sensory": "recency", "working": "mixed", "long-term": "anchor"}[kind]
    roles = []
    for _ in range(num_heads):
        if rng.random() < ranges.diffuse_head:
            roles.append("diffuse")
        elif kind == "working" and rng.random() < 0.3:
            roles.append(rng.choice(["recency", "anchor"]))  # working layers mix head kinds, too
        else:
            roles.append(main)
    # the layer's own role holds a strict majority, so its tier is well defined
    need = num_heads // 2 + 1
    idx = [i for i, r in enumerate(roles) if r != main]
    rng.shuffle(idx)
    for i in idx[: max(0, need - roles.count(main))]:
        roles[i] = main
    return tuple(_head(rng, r, ranges, slots) for r in roles)


def draw_planted(seed: int, family: str, ranges: PlantedRanges | None = None, strength: float = 1.0,
                 noise: float = 1.0) -> PlantedConfig:
    """A random planted configuration; the same (seed, family, ranges) always gives the same one."""
    if not 0 <= seed <= MAX_SEED:
        raise ModelError(f"a planted seed must be between 0 and {MAX_SEED}, got {seed}")
    if family not in FAMILIES:
        raise ModelError(f"unknown planted family {family!r}; use one of {', '.join(FAMILIES)}")
    ranges = ranges or PlantedRanges()
    rng = random.Random(f"planted/{family}/{seed}")
    L = rng.randint(*ranges.layers)
    H = rng.choice(ranges.heads)
    kv = rng.choice([d for d in range(1, H + 1) if H % d == 0 and d >= max(1, H // 2)])
    a = rng.randint(1, L - 2)  # first working layer
    b = rng.randint(a + 1, L - 1)  # first long-term layer
    kinds = ["sensory" if i < a else "working" if i < b else "long-term" for i in range(L)]
    if a >= 2 and rng.random() < ranges.diffuse_first:
        kinds[0] = "diffuse"
    if rng.random() < ranges.out_of_order:
        # one layer out of depth order, inside a block of at least three, so every tier keeps >= 2 layers
        blocks = [(t, [i for i, k in enumerate(kinds) if k == t]) for t in ("sensory", "working", "long-term")]
        blocks = [(t, idx) for t, idx in blocks if len(idx) >= 3]
        if blocks:
            tier, idx = rng.choice(blocks)
            i = rng.choice(idx[1:-1])
            kinds[i] = rng.choice([t for t in ("sensory", "working", "long-term") if t != tier])
    slots = rng.randint(1, len(MARKER_PAIRS))
    positions = tuple(rng.sample(range(TOKENS_PER_FRAME), slots))
    heads = tuple(_layer_heads(rng, k, H, ranges, slots) for k in kinds)
    cfg = PlantedConfig(family, seed, tuple(kinds), heads, kv, positions, noise, 1.0)
    return scaled(cfg, strength)


def scaled(cfg: PlantedConfig, strength: float) -> PlantedConfig:
    """The same configuration with every planted signal multiplied by ``strength`` (noise unchanged)."""
    return PlantedConfig(cfg.family, cfg.seed, cfg.layers, cfg.heads, cfg.num_kv_heads, cfg.anchor_positions,
                         cfg.noise, strength)


def parse_planted_name(name: str) -> PlantedConfig:
    """``planted:SEED[,family=F][,strength=S][,noise=N]`` -> its configuration (ModelError if malformed)."""
    form = f"{PLANTED_PREFIX}SEED[,family={'|'.join(FAMILIES)}][,strength=S][,noise=N]"
    parts = name[len(PLANTED_PREFIX):].split(",")
    try:
        seed = int(parts[0])
    except ValueError:
        raise ModelError(f"bad planted model {name!r}: the seed must be an integer ({form})") from None
    opts: dict[str, str] = {}
    for part in parts[1:]:
        key, eq, value = part.partition("=")
        if not eq or key not in ("family", "strength", "noise") or key in opts:
            raise ModelError(f"bad planted model {name!r}: unexpected {part!r} ({form})")
        opts[key] = value
    family = opts.get("family", "embedded")
    try:
        strength, noise = float(opts.get("strength", 1.0)), float(opts.get("noise", 1.0))
    except ValueError:
        raise ModelError(f"bad planted model {name!r}: strength and noise are numbers ({form})") from None
    if not (math.isfinite(strength) and math.isfinite(noise)) or strength < 0 or noise < 0:
        raise ModelError(f"bad planted model {name!r}: strength and noise must be finite and >= 0")
    if not 0 <= seed <= MAX_SEED:
        raise ModelError(f"bad planted model {name!r}: the seed must be between 0 and {MAX_SEED}")
    return draw_planted(seed, family, strength=strength, noise=noise)


# --------------------------------------------------------------------------- embeddings
def _unit_rows(gen: torch.Generator, n: int, dim: int) -> torch.Tensor:
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


class _Basis:
    """Where each indicator lives in the hidden space: 0 text, 1 video, 2.. marker slots, the rest content."""

    def __init__(self, hidden: int) -> None:
        self.hidden = hidden
        self.text, self.video = 0, 1
        self.markers = [2 + j for j in range(len(MARKER_PAIRS))]
        self.content = slice(2 + len(MARKER_PAIRS), hidden)

    def video_code(self, positions: tuple[int, ...]) -> torch.Tensor:
        """(16, hidden): the indicator part of each in-frame position's video embedding."""
        code = torch.zeros(TOKENS_PER_FRAME, self.hidden, dtype=torch.float64)
        code[:, self.video] = 1.0
        for slot, m in enumerate(self.markers):
            sign = torch.full((TOKENS_PER_FRAME,), -1.0, dtype=torch.float64)
            if slot < len(positions):
                sign[positions[slot]] = 1.0
            code[:, m] = MARKER * sign
        return code

    def normalised(self) -> dict[str, float]:
        """Indicator values after RMSNorm, for clean embeddings (content at its nominal norm)."""
        d = math.sqrt(self.hidden)
        text_norm = math.sqrt(1 + CONTENT ** 2)
        video_norm = math.sqrt(1 + len(self.markers) * MARKER ** 2 + CONTENT ** 2)
        return {"text": d / text_norm, "video": d / video_norm, "marker": d * MARKER / video_norm}


# --------------------------------------------------------------------------- LM weights
@dataclass
class _Scales:
    """Per-model constants of the planted q/k rows."""

    inv_freq: torch.Tensor
    positions_per_frame: float
    recency_pair: int
    basis: _Basis
    norm: dict[str, float] = field(default_factory=dict)

    @property
    def noise_pairs(self) -> list[int]:
        """The pairs that carry noise: those turning at least half a radian per frame, so that their
        pattern changes from frame to frame. A slower random pair would plant a smooth trend over the
        stream, i.e. recency (or its reverse) of random strength in every head; at least pair 0."""
        fast = [j for j, theta in enumerate(self.inv_freq.tolist()) if theta * self.positions_per_frame >= 0.5]
        return [j for j in fast if j not in (BIAS_PAIR, self.recency_pair, *MARKER_PAIRS)] or [0]


def _noise(gen: torch.Generator, rows: int, basis: _Basis, sigma: float) -> torch.Tensor:
    """(rows, hidden) random q/k weights, blind to the marker dimensions: reading the per-position
    markers would plant anchors of random strength in every head."""
    w = torch.randn(rows, basis.hidden, generator=gen, dtype=torch.float64) * sigma / math.sqrt(basis.hidden)
    w[:, basis.markers] = 0.0
    return w


def _plant_layer(layer: nn.Module, heads: tuple[PlantedHead, ...], cfg: PlantedConfig, s: _Scales,
                 gen: torch.Generator) -> None:
    attn = layer.self_attn
    D, dh, half = s.basis.hidden, HEAD_DIM, HEAD_DIM // 2
    H, kv = cfg.num_heads, cfg.num_kv_heads
    q = torch.zeros(H * dh, D, dtype=torch.float64)
    k = torch.zeros(kv * dh, D, dtype=torch.float64)
    noise_dims = [*s.noise_pairs, *(j + half for j in s.noise_pairs)]
    # W ~ N(0, σ²/D) on RMS-normed inputs (|x̂|² = D) gives q, k components ~ N(0, σ²), so the noise
    # logit has std σ²·sqrt(2n/dh) over n pairs: σ is set for a logit std of cfg.noise
    sigma = math.sqrt(cfg.noise * math.sqrt(dh / len(noise_dims)))
    b = KEY_SCALE
    t_hat, v_hat, m_hat = s.norm["text"], s.norm["video"], s.norm["marker"]
    scale = math.sqrt(dh)
    for g in range(kv):
        base = g * dh
        k[base + BIAS_PAIR, s.basis.video] = b / v_hat
        k[base + BIAS_PAIR, s.basis.text] = -b / t_hat
        k[base + s.recency_pair, s.basis.video] = b / v_hat
        for slot, pair in enumerate(MARKER_PAIRS):
            k[base + pair, s.basis.markers[slot]] = b / m_hat
        rows = torch.tensor([base + j for j in noise_dims])
        k[rows] = _noise(gen, len(rows), s.basis, sigma)
    theta = float(s.inv_freq[s.recency_pair])
    for h, head in enumerate(heads):
        base = h * dh
        q[base + BIAS_PAIR, s.basis.text] = TEXT_MARGIN * scale / b / t_hat
        if head.decay > 0:
            per_position = cfg.strength * head.decay / s.positions_per_frame
            # score = -a·b·sin(θΔ) ≈ -(a·b·θ/√dh)·Δ in logits: a sets the per-position rate
            q[base + half + s.recency_pair, s.basis.text] = per_position * scale / (theta * b) / t_hat
        if head.anchor_slot >= 0:
            # ±b on the key, so the gap between the marked position and the rest is 2·a·b/√dh
            q[base + MARKER_PAIRS[head.anchor_slot], s.basis.text] = cfg.strength * head.anchor_gap * scale / (2 * b) / t_hat
        rows = torch.tensor([base + j for j in noise_dims])
        q[rows] = _noise(gen, len(rows), s.basis, sigma)
    with torch.no_grad():
        attn.q_proj.weight.copy_(q)
        attn.k_proj.weight.copy_(k)
        for proj in (attn.q_proj, attn.k_proj):
            if proj.bias is not None:
                proj.bias.zero_()
        attn.o_proj.weight.zero_()
        if attn.o_proj.bias is not None:
            attn.o_proj.bias.zero_()
        layer.mlp.down_proj.weight.zero_()
        layer.input_layernorm.weight.fill_(1.0)


def _plant_lm(text_model: nn.Module, cfg: PlantedConfig, s: _Scales, gen: torch.Generator) -> None:
    """Write every layer's role, and text embeddings that carry the text direction."""
    for layer, heads in zip(text_model.layers, cfg.heads):
        _plant_layer(layer, heads, cfg, s, gen)
    emb = text_model.embed_tokens.weight
    n, D = emb.shape
    x = torch.zeros(n, D, dtype=torch.float64)
    x[:, s.basis.text] = 1.0
    x[:, s.basis.content] = _unit_rows(gen, n, D - s.basis.content.start) * CONTENT
    with torch.no_grad():
        emb.copy_(x)


def _content_projection(gen: torch.Generator, basis: _Basis, in_features: int) -> torch.Tensor:
    """(hidden, in) weights into the content dims only, scaled by 1/in: a frame of uniform colour (all
    features alike, |x| <= 1) gets content of norm <= CONTENT, small beside the indicators."""
    w = torch.zeros(basis.hidden, in_features, dtype=torch.float64)
    c = basis.hidden - basis.content.start
    w[basis.content] = torch.randn(c, in_features, generator=gen, dtype=torch.float64) * CONTENT / (
        math.sqrt(c) * in_features)
    return w


# --------------------------------------------------------------------------- families
class MarkedPatchTower(nn.Module):
    """Stands in for Qwen's vision tower: per merged patch, a pixel projection (fixed norm) plus a per-position embedding.

    Same call as ``model.model.visual``: ``(pixel_values (N, C·T·P·P), grid_thw (G, 3))`` -> an output whose
    ``pooler_output`` is (N / merge², hidden), merged tokens row-major over each temporal group.
    """

    def __init__(self, in_features: int, hidden: int, merge: int) -> None:
        super().__init__()
        self.merge = merge
        self.proj = nn.Linear(in_features, hidden, bias=False)
        self.cell_embed = nn.Parameter(torch.zeros(TOKENS_PER_FRAME, hidden))

    @property
    def dtype(self) -> torch.dtype:
        return self.proj.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.proj.weight.device

    def forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, **kwargs):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        content = self.proj(hidden_states.to(self.dtype))
        content = content.view(-1, self.merge * self.merge, content.shape[-1]).mean(1)
        # a fixed norm, so that the RMSNorm in front of every layer scales all video tokens alike
        content = CONTENT * content / content.norm(dim=-1, keepdim=True).clamp_min(1e-6)
        index = torch.cat([torch.arange(int(h) * int(w) // self.merge ** 2).repeat(int(t)) for t, h, w in grid_thw])
        cells = self.cell_embed[index.clamp(max=TOKENS_PER_FRAME - 1).to(self.cell_embed.device)]
        return BaseModelOutputWithPooling(last_hidden_state=content, pooler_output=content + cells)


def _text_dims(cfg: PlantedConfig, tok) -> dict[str, Any]:
    H = cfg.num_heads
    return dict(hidden_size=H * HEAD_DIM, intermediate_size=2 * H * HEAD_DIM, num_hidden_layers=cfg.num_layers,
                num_attention_heads=H, num_key_value_heads=cfg.num_kv_heads, head_dim=HEAD_DIM,
                max_position_embeddings=1 << 17, tie_word_embeddings=False, vocab_size=len(tok))


def _build_embedded(cfg: PlantedConfig, gen: torch.Generator):
    from transformers import LlamaConfig, LlamaForCausalLM

    from hermes_policy.models.byte_tokenizer import byte_tokenizer
    from hermes_policy.models.frontend import FrontendConfig, PatchProjector
    from hermes_policy.models.frontend_lm import FrontendLMAdapter
    from hermes_policy.models.tiny import _special_ids

    tok = byte_tokenizer()
    lm = LlamaConfig(**_text_dims(cfg, tok), **_special_ids(tok),
                     rope_parameters={"rope_type": "default", "rope_theta": ROPE_THETA})
    model = LlamaForCausalLM(lm).eval()
    basis = _Basis(lm.hidden_size)
    frontend = PatchProjector(FrontendConfig(hidden_size=lm.hidden_size, grid=4, cell_pixels=4))
    with torch.no_grad():
        frontend.proj.weight.copy_(_content_projection(gen, basis, frontend.config.in_features))
        frontend.proj.bias.zero_()
        frontend.cell_embed.copy_(basis.video_code(cfg.anchor_positions))
    return FrontendLMAdapter(cfg.name, model, tok, frontend), model.model, basis


def _build_qwen(cfg: PlantedConfig, gen: torch.Generator):
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
    text = dict(_text_dims(cfg, tok), **_special_ids(tok),
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
    basis = _Basis(hidden)
    tower = MarkedPatchTower(3 * vcfg.temporal_patch_size * vcfg.patch_size ** 2, hidden, vcfg.spatial_merge_size)
    with torch.no_grad():
        tower.proj.weight.copy_(_content_projection(gen, basis, tower.proj.in_features))
        tower.cell_embed.copy_(basis.video_code(cfg.anchor_positions))
    model.model.visual = tower
    pixels = FRAME_PIXELS * FRAME_PIXELS
    adapter = QwenVLAdapter(cfg.name, model, tok, Qwen2VLImageProcessorPil(), max_pixels=pixels, min_pixels=pixels)
    return adapter, model.model.language_model, basis


def _build_llava(cfg: PlantedConfig, gen: torch.Generator):
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration

    from hermes_policy.models.byte_tokenizer import byte_tokenizer
    from hermes_policy.models.llava_ov import LlavaOneVisionAdapter
    from hermes_policy.models.tiny import LLAVA_SPECIALS, _special_ids

    tok = byte_tokenizer(LLAVA_SPECIALS)
    text = dict(_text_dims(cfg, tok), **_special_ids(tok), model_type="qwen2",
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
    basis = _Basis(hidden)
    tower = model.model.vision_tower
    # vision space: dims 0-3 the position code (video, 3 markers), the rest pixel content
    code = basis.video_code(cfg.anchor_positions)[:, [basis.video, *basis.markers]]  # (16, 4)
    r, c = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    pooled = ((r // 2) * (side // 2) + c // 2).flatten()  # patch -> the pooled token it averages into
    pos = torch.zeros(side * side, vision_hidden, dtype=torch.float64)
    pos[:, :4] = code[pooled]
    conv = tower.embeddings.patch_embedding
    lift = 20.0  # keeps GELU in its linear range: gelu(x + 20) - 20 = x to float precision for |x| < 10
    w1 = torch.zeros(hidden, vision_hidden, dtype=torch.float64)
    w1[[basis.video, *basis.markers], list(range(4))] = 1.0
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


def _positions_per_frame(adapter: ModelAdapter) -> float:
    """How far the recency axis advances per frame: a 4-frame chunk's span of positions, over 4."""
    import numpy as np

    from hermes_policy.video import Frame

    frames = [Frame(i, i / 2.0, np.zeros((FRAME_PIXELS, FRAME_PIXELS, 3), dtype=np.uint8)) for i in range(4)]
    chunk = adapter.encode_frames(frames, 0)
    return chunk.end_position / len(frames)


def build_planted(cfg: PlantedConfig, dtype: torch.dtype = torch.float32) -> ModelAdapter:
    """The planted model of ``cfg`` as an adapter (weights built in float64 arithmetic, stored in ``dtype``)."""
    builders = {"embedded": _build_embedded, "qwen2-vl": _build_qwen, "qwen2.5-vl": _build_qwen,
                "llava-ov": _build_llava}
    gen = torch.Generator().manual_seed(cfg.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        adapter, text_model, basis = builders[cfg.family](cfg, gen)
    mrope = cfg.family.startswith("qwen")
    scales = _Scales(text_model.rotary_emb.inv_freq.double(), _positions_per_frame(adapter),
                     RECENCY_PAIR["mrope" if mrope else "1d"], basis, basis.normalised())
    _plant_lm(text_model, cfg, scales, gen)
    adapter.model.to(dtype)
    if hasattr(adapter, "frontend"):
        adapter.frontend.to(dtype)
    adapter.weights = "planted"
    adapter.planted = cfg  # for validate's scoring and the dashboard; the study never reads it
    return adapter


__all__ = ["FAMILIES", "PLANTED_PREFIX", "ROLES", "ROLE_TIER", "TIER_KINDS", "MarkedPatchTower", "PlantedConfig",
           "PlantedHead", "PlantedRanges", "build_planted", "draw_planted", "parse_planted_name", "scaled"]
