"""Planted memory models: real model classes whose heads have memory roles set in their weights.

A study (``study`` -> ``derive``) is an instrument; to calibrate it we need models
whose memory roles are known by construction, the way Tracr and InterpBench build
transformers with a known mechanism. :func:`draw_planted` draws a random
configuration (layer count, tier boundaries anywhere, per-head roles, decay rates,
anchor positions, sometimes a diffuse first layer or a layer out of depth order) and
:func:`build_planted` writes it into the weights of the family's own transformers
classes (``LlamaForCausalLM`` + patch front end, ``Qwen2VLForConditionalGeneration``,
``Qwen2_5_VLForConditionalGeneration``, ``LlavaOnevisionForConditionalGeneration``,
``Qwen3VLForConditionalGeneration``, ``Qwen3_5ForConditionalGeneration``,
``InternVLForConditionalGeneration``, ``SmolVLMForConditionalGeneration``).
Nothing in the study reads the ground truth; it only streams video through the model.

How a role lives in the weights (every attention layer alike; :mod:`.weights`):

* **The residual stream is the input embedding.** Attention output projections and
  MLP down projections are zero, so each layer's queries and keys are linear maps of
  ``RMSNorm(embedding)``; each head's role is then set by its own q/k rows alone. A
  hybrid decoder's linear-attention layers (Qwen3.5's Gated DeltaNet) are made
  transparent the same way; the planted layers are its attention (cache) layers.
* **Embeddings carry indicator directions**: text tokens a "text" direction, video
  tokens a "video" direction and, per anchor slot, a ±1 marker that is +1 only at that
  slot's in-frame position (so every video token has the same norm). A little content
  (random projections of token ids / pixels) rides along. A frame's text (Qwen3's
  timestamps, InternVL's and SmolVLM's frame labels) is text: the bias pair keeps it out.
* **Low-frequency rotary pairs carry the roles.** With ``Δ = query position - key
  position`` a pair with q = (0, a) and k = (b, 0) scores ``-a·b·sin(θΔ) ≈ -a·b·θ·Δ``:
  attention decays exponentially with age (a *recency* head, rate set by ``a``). Under
  M-RoPE that pair follows the temporal axis, so the decay follows frame time. A
  pair with q = (a, 0) and k = (±b, 0) scores ``±a·b`` (cos θΔ ≈ 1): an *anchor* head
  concentrated on one in-frame position of every frame. A *mixed* head has both at
  reduced strength; a *diffuse* head neither. One more pair keeps text keys out.
* **The remaining (high-frequency) pairs carry random q/k weights**: position- and
  content-dependent noise every head has, against which ``strength`` sets the signal.
* **Per-head q/k RMSNorm** (Qwen3-VL, Qwen3.5, InternVL3.5's Qwen3) would rescale each
  head's query and key per token. Each head vector gets a *pad*: a component in a pair
  the other side leaves zero, read from the text and video directions and sized per
  token kind so that the vector's RMS is exactly 1 with the planted rows divided by a
  large gain W; the norm's weight is W, so its output is the planted vector itself.

The front end marks in-frame positions where the family allows it in weights: the
embedded projector's per-cell embedding, and SigLIP's absolute position embedding for
LLaVA-OneVision (encoder layers zeroed, projector linear in its working range). Qwen's
vision towers get no usable absolute position signal from patches that look alike, so
planted Qwen models swap ``model.model.visual`` for :class:`MarkedPatchTower`, a pixel
projection plus a per-position embedding with the tower's call signature (for Qwen3-VL
also zero DeepStack features, so the real DeepStack path runs and adds nothing).
InternVL and SmolVLM swap their ViT for :class:`MarkedGridTower`, whose patches carry
the code of the token the family's own pixel shuffle merges them into; the real shuffle
and projector follow. The LM, its RoPE and the adapter are the real ones.

Planted Qwen2 configs give the temporal M-RoPE section half the rotary pairs (the
published split gives it the fastest quarter), so that it holds a pair slow enough for
a linear decay over a long stream; the deviations of the 2025-26 families are listed in
:mod:`.recent`. Every planted model uses ``rope_theta = 1e7``.

The package: :mod:`.config` (heads, configurations, the generator, names), :mod:`.weights`
(the basis and the q/k rows), :mod:`.towers`, :mod:`.early` and :mod:`.recent` (the
families), :mod:`.build` (:func:`build_planted`).
"""

from __future__ import annotations

from hermes_policy.models.planted.build import BUILDERS, build_planted, positions_per_frame
from hermes_policy.models.planted.config import (
    FAMILIES,
    MARKER_PAIRS,
    MAX_SEED,
    MAX_STRENGTH,
    PLANTED_PREFIX,
    ROLE_TIER,
    ROLES,
    TIER_KINDS,
    TOKENS_PER_FRAME,
    PlantedConfig,
    PlantedHead,
    PlantedRanges,
    draw_planted,
    parse_planted_name,
    scaled,
)
from hermes_policy.models.planted.early import FRAME_PIXELS
from hermes_policy.models.planted.towers import MarkedGridTower, MarkedPatchTower
from hermes_policy.models.planted.weights import (
    BIAS_PAIR,
    CONTENT,
    HEAD_DIM,
    INTERLEAVED_SECTION,
    KEY_SCALE,
    MARKER,
    MROPE_SECTION,
    PAD_PAIRS,
    RECENCY_PAIR,
    ROPE_THETA,
    TEXT_MARGIN,
)

__all__ = ["BIAS_PAIR", "BUILDERS", "CONTENT", "FAMILIES", "FRAME_PIXELS", "HEAD_DIM", "INTERLEAVED_SECTION",
           "KEY_SCALE", "MARKER", "MARKER_PAIRS", "MAX_SEED", "MAX_STRENGTH", "MROPE_SECTION", "PAD_PAIRS",
           "PLANTED_PREFIX", "RECENCY_PAIR", "ROLES", "ROLE_TIER", "ROPE_THETA", "TEXT_MARGIN", "TIER_KINDS",
           "TOKENS_PER_FRAME", "MarkedGridTower", "MarkedPatchTower", "PlantedConfig", "PlantedHead",
           "PlantedRanges", "build_planted", "draw_planted", "parse_planted_name", "positions_per_frame", "scaled"]
