"""Planted configurations: heads, layers, the random generator and the ``planted:...`` names.

Nothing here touches torch: a configuration is the ground truth alone, which
:func:`~hermes_policy.models.planted.build_planted` then writes into a model's weights.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass
from typing import Any

from hermes_policy.errors import ModelError
from hermes_policy.models.families import FAMILIES as _FAMILY_TABLE

PLANTED_PREFIX = "planted:"
#: the families built before the family table (embedded: the model trained here, no table row)
_FIRST_FAMILIES = ("embedded", "qwen2-vl", "qwen2.5-vl", "llava-ov")
#: every family with a planted builder (:mod:`hermes_policy.models.planted.builders`)
_BUILT = frozenset({*_FIRST_FAMILIES, "qwen3-vl", "qwen3.5", "internvl", "smolvlm"})
#: planted families: the first four, then every other row of the family table that has ``planted`` set
FAMILIES = (*_FIRST_FAMILIES, *(f.name for f in _FAMILY_TABLE
                                if f.planted and f.name in _BUILT and f.name not in _FIRST_FAMILIES))
TIER_KINDS = ("sensory", "working", "long-term", "diffuse")
ROLES = ("recency", "mixed", "anchor", "diffuse")
#: the memory tier whose signature each head role plants
ROLE_TIER = {"recency": "sensory", "mixed": "working", "anchor": "long-term"}

#: rotary pairs (of a 32-dim head) that hold anchor slots; one marker direction per slot in the embeddings
MARKER_PAIRS = (12, 13, 14)
TOKENS_PER_FRAME = 16  # every family sees a 4 x 4 grid of patch tokens per frame (frame text comes on top)
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


__all__ = ["FAMILIES", "MARKER_PAIRS", "MAX_SEED", "MAX_STRENGTH", "PLANTED_PREFIX", "ROLES", "ROLE_TIER",
           "TIER_KINDS", "TOKENS_PER_FRAME", "PlantedConfig", "PlantedHead", "PlantedRanges", "draw_planted",
           "parse_planted_name", "scaled"]
