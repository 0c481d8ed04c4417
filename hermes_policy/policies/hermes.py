"""``hermes``: hierarchical KV memory, pruned per layer as the video streams (HERMES, arXiv 2601.14724).

Each layer belongs to a tier (sensory / working / long-term) and keeps its own
top-``budget`` video tokens under a score that mixes recency and attention from
a pseudo-query:

    score = (1 - alpha) * minmax(attn) + alpha * minmax(exp(-k * d)),   d = (T-1-i)/(T-1)

with i the token's index among the layer's T video tokens (oldest first).
``attn`` is the attention mass each cached token receives from the ``global``
pseudo-query (long-term layers) or the ``mixed`` one (working layers), averaged
over the prompt's tokens and the heads; sensory layers are pure recency
(alpha = 1). Scores are smoothed across depth from the second-to-last layer
down, ``s_l <- (1 - gamma) s_l + gamma s_{l+1}`` (linearly resampled when the
layers hold different counts). Kept tokens stay in time order; the system
prefix is always kept; pruning fires only when a layer is over its budget.

In long-term layers the evicted tokens are folded into one **summary slot**:
its value is the mean of the evicted values and its key the mean of the evicted
keys, each first rotated to the slot's position. The slot takes the place (and
position) of the oldest token ever evicted from that layer, and later folds
update it as a running mean.

Per-layer settings (tier, alpha, k, budget share) come from a PolicySpec
(``hermes-lab derive``); without one, HERMES's fixed split and parameters are used.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from hermes_policy.attention import AttentionEvent, Subscription
from hermes_policy.embedding_probe import PSEUDO_QUERY_DEPTHS
from hermes_policy.errors import PolicyError
from hermes_policy.policies.base import register_policy
from hermes_policy.policies.scoring import ScoringPolicy
from hermes_policy.tokens import NOT_A_PATCH

TIERS = ("sensory", "working", "long-term")
DEFAULT_GAMMA = {"sensory": 0.1, "working": 0.3, "long-term": 0.4}
#: frame value that marks a long-term layer's summary slot (not a frame, never evicted)
SUMMARY_FRAME = -2

#: The pseudo-queries HERMES scores with, in our words.
PROMPTS = {
    "global": "Summarise everything that has happened in the video so far.",
    "mixed": "Describe the current scene in detail and summarise what has happened so far.",
}
TIER_QUERY = {"working": "mixed", "long-term": "global"}

#: working-band parameters as functions of the relative depth p inside the band
WORKING_PARAMS = {
    "llava-ov": lambda p: (1 - 0.9 * p, 20 - 19.5 * p),
    "qwen2.5-vl": lambda p: (0.75 - 0.6 * p, 20 - 12 * p),
}


def fixed_layers(num_layers: int, family: str = "llava-ov") -> list[dict[str, Any]]:
    """HERMES's fixed split: sensory below 0.1 L, long-term from 0.7 L, working between."""
    if family not in WORKING_PARAMS:
        raise PolicyError(f"unknown family {family!r} for HERMES parameters; use one of {sorted(WORKING_PARAMS)}")
    tiers = ["sensory" if i < 0.1 * num_layers else "long-term" if i >= 0.7 * num_layers else "working"
             for i in range(num_layers)]
    working = [i for i, t in enumerate(tiers) if t == "working"]
    layers = []
    for i, tier in enumerate(tiers):
        if tier == "sensory":
            alpha, k = 1.0, 20.0
        elif tier == "long-term":
            alpha, k = 0.0, None
        else:
            p = (working.index(i) / (len(working) - 1)) if len(working) > 1 else 0.0
            alpha, k = WORKING_PARAMS[family](p)
        layers.append({"layer": i, "tier": tier, "alpha": alpha, "k": k, "budget_share": 1 / num_layers})
    return layers


def minmax(x: torch.Tensor) -> torch.Tensor:
    span = x.max() - x.min()
    return (x - x.min()) / span if span > 0 else torch.zeros_like(x)


def resample(x: torch.Tensor, n: int) -> torch.Tensor:
    """Linear interpolation of a (m,) profile onto n points (same start and end)."""
    if x.numel() == n:
        return x
    if x.numel() == 1 or n == 1:
        return x.mean().expand(n).clone()
    return torch.nn.functional.interpolate(x[None, None], size=n, mode="linear", align_corners=True)[0, 0]


class _PseudoQueryScores:
    """Observer: per layer and pseudo-query, the mean attention each cached row receives."""

    def __init__(self) -> None:
        self.scores: dict[tuple[int, str], torch.Tensor] = {}

    def observe(self, event: AttentionEvent) -> None:
        if event.phase != "probe" or not event.segments:
            return
        rows = event.attention()  # (H, q, S): the cached rows come first
        n_cached = event.n_key - event.n_query
        for seg in event.segments:
            if seg.tag in PROMPTS:
                # on the CPU: layers may live on different devices, and smoothing mixes them
                self.scores[(event.layer, seg.tag)] = rows[:, seg.start : seg.stop, :n_cached].mean(dim=(0, 1)).cpu()


@register_policy
@dataclass
class HermesPolicy(ScoringPolicy):
    """HERMES hierarchical memory.

    Attributes:
        budget: video tokens per layer (with budget shares: the mean per layer).
        layers: per-layer dicts ``{tier, alpha, k, budget_share}`` (from a PolicySpec); None = fixed split.
        gamma: cross-layer smoothing weight per tier.
        family: which published working-band parameters the fixed split uses (``llava-ov`` or ``qwen2.5-vl``).
        summary: fold evicted tokens of long-term layers into a summary slot.
        pseudo_query: how the pseudo-queries' attention is obtained, as in HERMES's release:
            ``"embedding"`` (its sdpa / flash path) projects the prompts' input embeddings at
            each layer, with no forward; ``"forward"`` (its eager path) runs the prompts through
            the model and reads the real attention. See :mod:`hermes_policy.embedding_probe`.
    """

    name = "hermes"
    exact_under_budget = True
    layers: list[dict[str, Any]] | None = None
    gamma: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_GAMMA))
    family: str = "llava-ov"
    summary: bool = True
    pseudo_query: str = "embedding"

    def __post_init__(self) -> None:
        super().__post_init__()
        # the same checks a PolicySpec file gets, so a policy made from Python fails as clearly
        from hermes_policy.policies.spec import PARAM_RULES, check_layers, show

        who = self.name
        is_gamma, must = PARAM_RULES["gamma"]
        if not is_gamma(self.gamma):
            raise PolicyError(f"{who}: gamma must be {must}, got {show(self.gamma)}")
        if not isinstance(self.family, str) or self.family not in WORKING_PARAMS:
            raise PolicyError(f"{who}: family must be one of {sorted(WORKING_PARAMS)}, got {show(self.family)}")
        if not isinstance(self.summary, bool):
            raise PolicyError(f"{who}: summary must be true or false, got {show(self.summary)}")
        if not isinstance(self.pseudo_query, str) or self.pseudo_query not in PSEUDO_QUERY_DEPTHS:
            raise PolicyError(f"{who}: pseudo_query must be one of {PSEUDO_QUERY_DEPTHS}, got {show(self.pseudo_query)}")
        if self.layers is not None:
            check_layers(self.layers, who)
        self._scorer = _PseudoQueryScores()
        #: the scorer watches only probes, and only the layers that mix in attention (set by prepare)
        self._watch = Subscription(self._scorer, phases=frozenset({"probe"}))
        #: this chunk's (layer settings, per-layer (T_l,) scores), set by prepare
        self._chunk: tuple[list[dict[str, Any]], list[torch.Tensor]] = ([], [])

    # ------------------------------------------------------------- settings
    def check_model(self, adapter) -> None:
        if self.layers is not None:
            from hermes_policy.policies.spec import check_layers_fit

            check_layers_fit(self.layers, adapter, "hermes")

    def layer_settings(self, num_layers: int) -> list[dict[str, Any]]:
        layers = self.layers if self.layers is not None else fixed_layers(num_layers, self.family)
        if len(layers) != num_layers:
            raise PolicyError(f"hermes: the spec describes {len(layers)} layers but the model has {num_layers}")
        return layers

    def layer_budgets(self, num_layers: int) -> list[int | None]:
        shares = [float(x.get("budget_share", 1 / num_layers)) for x in self.layer_settings(num_layers)]
        total = sum(shares)
        if total <= 0:
            raise PolicyError("hermes: budget shares must sum to a positive number")
        return [max(1, round(self.budget * num_layers * s / total)) for s in shares]

    def observers(self):
        return (self._watch,)

    # ---------------------------------------------------------------- prune
    def prepare(self, session, layers: list[int]) -> None:
        """Pseudo-queries and depth-smoothed scores of every layer, once, when some layer is over budget.

        Every layer is scored (not only the pruned ones): smoothing runs across all of them.
        """
        if not layers:
            return
        settings = self.layer_settings(session.cache.num_layers)
        scored = [i for i, s in enumerate(settings) if float(s["alpha"]) < 1]
        needed = {TIER_QUERY[settings[i]["tier"]] for i in scored}
        self._scorer.scores.clear()
        if self.pseudo_query == "forward":
            # one forward for every prompt: the forward's cost is per token, whichever layers read it
            if needed:
                self._watch = Subscription(self._scorer, layers=frozenset(scored), phases=frozenset({"probe"}))
                session.pseudo_queries({q: PROMPTS[q] for q in PROMPTS if q in needed}, depth="forward")
        else:
            # each layer reads one prompt, and an embedding probe costs per layer: probe each prompt only
            # in the layers that read it (a segment sees the cache and itself alone, packed or not)
            for query in (q for q in PROMPTS if q in needed):
                layers = frozenset(i for i in scored if TIER_QUERY[settings[i]["tier"]] == query)
                self._watch = Subscription(self._scorer, layers=layers, phases=frozenset({"probe"}))
                session.pseudo_queries({query: PROMPTS[query]}, depth="embedding")
        self._chunk = (settings, self.layer_scores(session, settings))

    def score(self, session, layer: int) -> torch.Tensor:
        return self._chunk[1][layer]

    def layer_scores(self, session, settings: list[dict[str, Any]]) -> list[torch.Tensor]:
        """Per layer, a (T_l,) score over its video tokens, smoothed across depth."""
        cache = session.cache
        raw = []
        for layer, s in enumerate(settings):
            video = torch.nonzero(cache.meta(layer).is_video).flatten()
            t = video.numel()
            alpha = float(s["alpha"])
            score = torch.zeros(t)
            if alpha > 0:
                d = (t - 1 - torch.arange(t, dtype=torch.float32)) / max(t - 1, 1)
                score = score + alpha * minmax(torch.exp(-float(s["k"]) * d))
            if alpha < 1:
                attn = self._scorer.scores[(layer, TIER_QUERY[s["tier"]])][video]
                score = score + (1 - alpha) * minmax(attn.float())
            raw.append(score)
        smoothed = list(raw)
        for layer in range(len(raw) - 2, -1, -1):
            g = float(self.gamma[settings[layer]["tier"]])
            smoothed[layer] = (1 - g) * raw[layer] + g * resample(smoothed[layer + 1], raw[layer].numel())
        return smoothed

    def before_evict(self, session, layer: int, keep: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        settings = self._chunk[0]
        if not (self.summary and settings[layer]["tier"] == "long-term" and dropped.numel()):
            return keep
        if self._fold_into_summary(session, layer, dropped):
            # the new slot is the oldest dropped row, so that row stays
            keep = torch.sort(torch.cat([keep, dropped[:1]])).values
        return keep

    def _fold_into_summary(self, session, layer: int, dropped: torch.Tensor) -> bool:
        """Fold the (D,) ``dropped`` rows into the layer's summary slot; True if the slot is new (``dropped[0]``)."""
        cache = session.cache
        meta = cache.meta(layer)
        slots = torch.nonzero(meta.frame == SUMMARY_FRAME).flatten()
        counts = cache.policy_state.setdefault("summary_count", {})
        new_slot = slots.numel() == 0
        if not new_slot:
            slot, count = int(slots[0]), counts[layer]
        else:
            # the oldest dropped row becomes the slot, at its own position
            slot, count = int(dropped[0]), 0
        positions = cache.positions(layer)
        delta = positions[:, slot : slot + 1] - positions[:, dropped]  # (A, n): rotate each to the slot
        keys = cache.rotary.rotate(cache.keys(layer)[:, :, dropped], delta)
        values = cache.values(layer)[:, :, dropped]
        n = dropped.numel()
        old_k = cache.keys(layer)[:, :, slot].float() if count else 0.0
        old_v = cache.values(layer)[:, :, slot].float() if count else 0.0
        new_k = (old_k * count + keys.float().sum(dim=2)) / (count + n)
        new_v = (old_v * count + values.float().sum(dim=2)) / (count + n)
        cache.replace_row(layer, slot, new_k, new_v)
        cache.set_row_meta(layer, slot, frame=SUMMARY_FRAME, patch=NOT_A_PATCH, time=math.nan)
        counts[layer] = count + n
        return new_slot
