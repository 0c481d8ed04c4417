"""The decoder side of a planted model: indicator embeddings and per-head q/k rows that carry the roles.

See :mod:`hermes_policy.models.planted` for the construction. This module holds the constants, the
hidden-space basis, and :func:`plant_lm`, which writes every attention layer's query and key
projections (through per-head q/k RMSNorms where the family has them) and makes every other
part of the decoder transparent: the residual stream stays the input embedding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from hermes_policy.models.planted.config import MARKER_PAIRS, TOKENS_PER_FRAME, PlantedConfig, PlantedHead

HEAD_DIM = 32
ROPE_THETA = 1e7
#: (pair index in a 32-dim head): the bias pair keeps text keys out; marker pairs hold anchor slots
BIAS_PAIR = 15
#: recency pair per rotary layout: a slow pair in 1-D RoPE; the temporal section's slowest free pair under
#: M-RoPE (contiguous sections, :data:`MROPE_SECTION`) and interleaved M-RoPE (:data:`INTERLEAVED_SECTION`)
RECENCY_PAIR = {"1d": 11, "mrope": 7, "interleaved": 11}
MROPE_SECTION = [8, 4, 4]
#: interleaved M-RoPE (Qwen3-VL, Qwen3.5): height takes pairs 1, 4, 7, width 2, 5, 8, time the rest,
#: so pairs 9-15 (the slowest) all follow time, as in a 1-D layout
INTERLEAVED_SECTION = [10, 3, 3]
#: (query pad pair, key pad pair) of q/k-normed attention: a constant component that fixes each head
#: vector's RMS; the other side leaves the pair zero, so it never reaches a score
PAD_PAIRS = (9, 10)

#: logit margin of video over text keys (the reducer reads video mass only; this keeps it from underflowing)
TEXT_MARGIN = 12.0
#: |q| and |k| scale of the planted pairs (their product is what matters)
KEY_SCALE = 8.0
MARKER = 0.5  # marker coefficient in a video embedding, against 1 for the video direction
CONTENT = 0.25  # norm of the content part of an embedding, against the indicator part
#: smallest gain of a q/k RMSNorm; the planted rows are divided by it (see :func:`_through_norm`)
MIN_NORM_GAIN = 1e3


# --------------------------------------------------------------------------- embeddings
def unit_rows(gen: torch.Generator, n: int, dim: int) -> torch.Tensor:
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64)
    return x / x.norm(dim=-1, keepdim=True)


class Basis:
    """Where each indicator lives in the hidden space: 0 text, 1 video, 2.. marker slots, the rest content."""

    def __init__(self, hidden: int) -> None:
        self.hidden = hidden
        self.text, self.video = 0, 1
        self.markers = [2 + j for j in range(len(MARKER_PAIRS))]
        self.content = slice(2 + len(MARKER_PAIRS), hidden)

    @property
    def indicators(self) -> list[int]:
        """The video direction then the marker directions: the indicator part of a video token."""
        return [self.video, *self.markers]

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


def content_projection(gen: torch.Generator, basis: Basis, in_features: int) -> torch.Tensor:
    """(hidden, in) weights into the content dims only, scaled by 1/in: a frame of uniform colour (all
    features alike, |x| <= 1) gets content of norm <= CONTENT, small beside the indicators."""
    w = torch.zeros(basis.hidden, in_features, dtype=torch.float64)
    c = basis.hidden - basis.content.start
    w[basis.content] = torch.randn(c, in_features, generator=gen, dtype=torch.float64) * CONTENT / (
        math.sqrt(c) * in_features)
    return w


# --------------------------------------------------------------------------- LM weights
@dataclass
class Scales:
    """Per-model constants of the planted q/k rows."""

    inv_freq: torch.Tensor
    positions_per_frame: float
    recency_pair: int
    basis: Basis
    norm: dict[str, float] = field(default_factory=dict)

    @property
    def noise_pairs(self) -> list[int]:
        """The pairs that carry noise: those turning at least half a radian per frame, so that their
        pattern changes from frame to frame. A slower random pair would plant a smooth trend over the
        stream, i.e. recency (or its reverse) of random strength in every head; at least pair 0."""
        fast = [j for j, theta in enumerate(self.inv_freq.tolist()) if theta * self.positions_per_frame >= 0.5]
        return [j for j in fast if j not in (BIAS_PAIR, self.recency_pair, *MARKER_PAIRS, *PAD_PAIRS)] or [0]


def _noise(gen: torch.Generator, rows: int, basis: Basis, sigma: float) -> torch.Tensor:
    """(rows, hidden) random q/k weights, blind to the marker dimensions: reading the per-position
    markers would plant anchors of random strength in every head."""
    w = torch.randn(rows, basis.hidden, generator=gen, dtype=torch.float64) * sigma / math.sqrt(basis.hidden)
    w[:, basis.markers] = 0.0
    return w


def planted_rows(heads: tuple[PlantedHead, ...], cfg: PlantedConfig, s: Scales,
                 gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's (H·dh, hidden) query and (kv·dh, hidden) key rows, as maps of ``RMSNorm(embedding)``."""
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
            q[base + MARKER_PAIRS[head.anchor_slot], s.basis.text] = (
                cfg.strength * head.anchor_gap * scale / (2 * b) / t_hat)
        rows = torch.tensor([base + j for j in noise_dims])
        q[rows] = _noise(gen, len(rows), s.basis, sigma)
    return q, k


def _kind_inputs(s: Scales) -> dict[str, torch.Tensor]:
    """``RMSNorm(embedding)`` of a clean text and a clean video token: indicators exact, content left out."""
    text = torch.zeros(s.basis.hidden, dtype=torch.float64)
    text[s.basis.text] = s.norm["text"]
    video = torch.zeros(s.basis.hidden, dtype=torch.float64)
    video[s.basis.video] = s.norm["video"]
    video[s.basis.markers] = -s.norm["marker"]  # a marker's sign never changes a head vector's norm
    return {"text": text, "video": video}


def _content_energy(s: Scales) -> float:
    """|content|² of a normalised token: what content contributes to a row's output, in expectation."""
    d = s.basis.hidden
    return d * CONTENT ** 2 / (1 + CONTENT ** 2)


def _eps(norm: nn.Module) -> float:
    return float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6)))


def set_gain(norm: nn.Module, gain: float) -> None:
    """Give an RMSNorm the scalar gain ``gain``, whether its weight is the gain (Llama, Qwen3) or the gain
    minus one (Qwen3.5's zero-centred norms)."""
    with torch.no_grad():
        norm.weight.zero_()
        probe = norm(torch.ones(1, norm.weight.numel(), dtype=norm.weight.dtype, device=norm.weight.device))
        zero_centred = bool(probe.abs().max() > 0.5)
        norm.weight.fill_(gain - 1.0 if zero_centred else gain)


def _through_norm(rows: torch.Tensor, heads: int, pad_pair: int, s: Scales, eps: float) -> tuple[torch.Tensor, float]:
    """Rows that give the planted head vectors *after* a per-head RMSNorm of gain W (returned with them).

    A head's pre-norm vector is ``u = planted / W`` plus a pad ``p`` in ``pad_pair``'s first dimension,
    read from the text and video directions and sized per token kind so that ``mean(u²) = 1``: the norm
    then returns ``W·u``, the planted vector, and ``W·p`` in a pair the other side leaves zero. W is large
    enough that the per-token part of ``|u|²`` (content through the noise rows) is negligible; what is left
    is the input RMSNorm's epsilon, which :meth:`Basis.normalised` ignores: ``mean(u²)`` is 1 to about 1e-4.
    """
    dh = HEAD_DIM
    rows = rows.clone()
    inputs = _kind_inputs(s)
    content = s.basis.content
    energy: dict[tuple[int, str], float] = {}
    for h in range(heads):
        block = rows[h * dh:(h + 1) * dh]
        for kind, x in inputs.items():
            # exact for the indicators; the content part in expectation (it is isotropic and small)
            e = float((block @ x).pow(2).sum()) + float(block[:, content].pow(2).sum()) * _content_energy(s) / (
                s.basis.hidden - content.start)
            energy[h, kind] = e
    W = max(MIN_NORM_GAIN, 10.0 * math.sqrt(max(energy.values())))
    rows /= W
    for h in range(heads):
        r = h * dh + pad_pair
        for kind, direction, value in (("text", s.basis.text, s.norm["text"]),
                                       ("video", s.basis.video, s.norm["video"])):
            rows[r, direction] = math.sqrt(dh - energy[h, kind] / W ** 2) / value
    return rows, W * math.sqrt(1.0 + eps)  # the gain also undoes the norm's epsilon at mean(u²) = 1


def plant_attention(attn: nn.Module, q: torch.Tensor, k: torch.Tensor, num_heads: int, num_kv_heads: int,
                    s: Scales) -> None:
    """Write q/k rows into an attention module: through its q/k norms if it has them, into a gated query
    projection's query half (the gate rows stay zero), with a zero output projection."""
    q_gain = k_gain = None
    if getattr(attn, "q_norm", None) is not None:
        q, q_gain = _through_norm(q, num_heads, PAD_PAIRS[0], s, _eps(attn.q_norm))
        k, k_gain = _through_norm(k, num_kv_heads, PAD_PAIRS[1], s, _eps(attn.k_norm))
    if attn.q_proj.out_features == 2 * q.shape[0]:  # Qwen3.5: per head [query, gate]
        gated = torch.zeros(num_heads, 2, HEAD_DIM, q.shape[1], dtype=q.dtype)
        gated[:, 0] = q.view(num_heads, HEAD_DIM, -1)
        q = gated.reshape(-1, q.shape[1])
    with torch.no_grad():
        attn.q_proj.weight.copy_(q)
        attn.k_proj.weight.copy_(k)
        for proj in (attn.q_proj, attn.k_proj):
            if proj.bias is not None:
                proj.bias.zero_()
        attn.o_proj.weight.zero_()
        if attn.o_proj.bias is not None:
            attn.o_proj.bias.zero_()
    if q_gain is not None:
        set_gain(attn.q_norm, q_gain)
        set_gain(attn.k_norm, k_gain)


def _transparent(layer: nn.Module) -> None:
    """A decoder layer that adds nothing to the residual stream: zero output and MLP down projections."""
    mixer = layer.self_attn if getattr(layer, "self_attn", None) is not None else layer.linear_attn
    out = mixer.o_proj if hasattr(mixer, "o_proj") else mixer.out_proj
    with torch.no_grad():
        out.weight.zero_()
        if out.bias is not None:
            out.bias.zero_()
        layer.mlp.down_proj.weight.zero_()
    set_gain(layer.input_layernorm, 1.0)


def text_dims(cfg: PlantedConfig, tok, layers: int | None = None) -> dict:
    """The decoder shape of a planted model: ``HEAD_DIM``-wide heads, ``layers`` decoder layers (default: one per
    planted layer)."""
    H = cfg.num_heads
    return dict(hidden_size=H * HEAD_DIM, intermediate_size=2 * H * HEAD_DIM,
                num_hidden_layers=layers or cfg.num_layers, num_attention_heads=H,
                num_key_value_heads=cfg.num_kv_heads, head_dim=HEAD_DIM, max_position_embeddings=1 << 17,
                tie_word_embeddings=False, vocab_size=len(tok))


def plant_lm(text_model: nn.Module, cfg: PlantedConfig, s: Scales, gen: torch.Generator) -> None:
    """Write every attention layer's role, make the other layers (a hybrid's linear attention) transparent,
    and give text embeddings the text direction."""
    attention = [layer for layer in text_model.layers if getattr(layer, "self_attn", None) is not None]
    if len(attention) != cfg.num_layers:
        raise ValueError(f"the model has {len(attention)} attention layers; the config plants {cfg.num_layers}")
    for layer in text_model.layers:
        _transparent(layer)
    for layer, heads in zip(attention, cfg.heads):
        q, k = planted_rows(heads, cfg, s, gen)
        plant_attention(layer.self_attn, q, k, cfg.num_heads, cfg.num_kv_heads, s)
    emb = text_model.embed_tokens.weight
    n, D = emb.shape
    x = torch.zeros(n, D, dtype=torch.float64)
    x[:, s.basis.text] = 1.0
    x[:, s.basis.content] = unit_rows(gen, n, D - s.basis.content.start) * CONTENT
    with torch.no_grad():
        emb.copy_(x)


__all__ = ["BIAS_PAIR", "CONTENT", "HEAD_DIM", "INTERLEAVED_SECTION", "KEY_SCALE", "MARKER", "MROPE_SECTION",
           "PAD_PAIRS", "RECENCY_PAIR", "ROPE_THETA", "TEXT_MARGIN", "Basis", "Scales", "content_projection",
           "plant_attention", "plant_lm", "planted_rows", "set_gain", "text_dims", "unit_rows"]
