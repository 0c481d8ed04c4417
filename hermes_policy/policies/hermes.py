"""``hermes``: hierarchical KV memory, pruned per layer as the video streams (HERMES, arXiv 2601.14724).

The defaults are the authors' released behaviour (their LLaVA-OneVision online inference; see
docs/conformance.md for the file, commit and the fixtures the tests hold it to). Each layer belongs to a
tier, by integer depth bounds ``s = int(0.1 L)`` and ``l = int(0.7 L)``: sensory below ``s``,
long-term from ``l``, working between. Each layer keeps its own top-``budget`` candidate rows under

    score = (1 - alpha) * minmax(attn) + alpha * minmax(exp(-k * d)),   d = (T-1-i)/(T-1)
    minmax(x) = (x - min x) / (max x - min x + 1e-6)

with i a row's index among the layer's T candidates (its video tokens and any summary rows, oldest
first). ``attn`` is the attention each cached row receives from the ``global`` pseudo-query
(long-term layers) or the ``mixed`` one (working layers), averaged over the prompt's tokens and the
heads; sensory layers are pure recency (alpha = 1). In the working band ``p = (i - s) / (l - s)``.
Scores are smoothed across depth from the second-to-last layer down,
``s_l <- (1 - gamma) s_l + gamma s_{l+1}`` (linearly resampled, ``align_corners=False``, when the layers
hold different counts). Ties go as ``torch.topk(sorted=False)`` breaks them; kept rows stay in time
order; the system prefix is always kept; a layer is pruned only when it holds more candidates than its
budget.

**Summary rows** (long-term layers): such a layer keeps ``budget - 1`` candidates, and the rows it drops
are folded into one new row appended after them: its value is their mean, its key the mean of their
keys each rotated to the new row's position, one past the layer's last kept row. Later prunes score it
like any other row (an older summary may itself be folded into a newer one).

**Positions**: each layer places new tokens one past its own last row (``positions="layer"``), so a
layer whose newest rows were evicted leaves no gap before the next chunk; gaps between kept rows stay
until a re-index (the session's ``reindex``).

**Pseudo-queries** are fixed prompts in our own words (``local``, ``global``, and ``mixed`` = local +
"; " + global), tokenised bare (no chat template), with the last question and answer the session
answered put in front (``history``); on the embedding path (the release's sdpa / flash path) a
prompt's tokens see each other without a causal mask.

Named options reproduce hermes-lab's own variants, all off by default: ``summary_mode="slot"`` (one
never-evicted running-mean slot at the oldest evicted position, outside the budget),
``positions="stream"`` (new tokens at the stream's positions in every layer), ``templated_prompts``,
``causal_prompts``, ``history=False`` and ``prompts`` (other wording).

Per-layer settings (tier, alpha, k, budget share) come from a PolicySpec
(``hermes-lab derive``); without one, HERMES's fixed split and parameters are used.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from hermes_policy.attention import AttentionEvent, Subscription
from hermes_policy.embedding_probe import PSEUDO_QUERY_DEPTHS
from hermes_policy.errors import PolicyError
from hermes_policy.policies.base import register_policy
from hermes_policy.policies.hermes_heads import HEAD_BUDGETS, HeadPruning
from hermes_policy.policies.hermes_scores import (  # noqa: F401  (re-exported: imported from here before)
    MINMAX_EPS,
    SUMMARY_FRAME,
    TIER_QUERY,
    WORKING_PARAMS,
    minmax,
    raw_score,
    resample,
    smooth,
)
from hermes_policy.policies.scoring import ScoringPolicy, top_units
from hermes_policy.policies.spec import PARAM_RULES, check_layers, check_layers_fit, show
from hermes_policy.tokens import NOT_A_PATCH

DEFAULT_GAMMA = {"sensory": 0.1, "working": 0.3, "long-term": 0.4}
#: the tier bounds, as shares of the depth: sensory below int(0.1 L), long-term from int((1 - 0.3) L)
SENSORY_SHARE = 0.1
LONG_TERM_SHARE = 0.3
#: The pseudo-queries HERMES scores with, in our words; ``mixed`` is built from these two (:func:`prompt_texts`).
PROMPTS = {
    "local": "Describe the current scene in detail: the objects, the fine actions and where things are.",
    "global": "Summarise everything that has happened in the video so far: who, what, and how it changed.",
}
#: what the last answered question adds in front of each prompt (``history``), in our words
HISTORY = {
    "local": "Recent details about ({exchange}). ",
    "global": "Earlier in this session ({exchange}). ",
}
SUMMARY_MODES = ("release", "slot")
POSITION_MODES = ("layer", "stream")


def tier_bounds(num_layers: int) -> tuple[int, int]:
    """(s, l): layers below ``s`` are sensory, from ``l`` on long-term. Integer truncation of the float
    products, exactly as the release computes them (e.g. 28 layers: s = 2, l = 19)."""
    return int(num_layers * SENSORY_SHARE), int(num_layers * (1 - LONG_TERM_SHARE))


def fixed_layers(num_layers: int, family: str = "llava-ov") -> list[dict[str, Any]]:
    """HERMES's fixed split and parameters: sensory (alpha 1, k 20), working (``WORKING_PARAMS`` at
    ``p = (i - s) / (l - s)``, which never reaches 1), long-term (alpha 0)."""
    if family not in WORKING_PARAMS:
        raise PolicyError(f"unknown family {family!r} for HERMES parameters; use one of {sorted(WORKING_PARAMS)}")
    short, long = tier_bounds(num_layers)
    layers = []
    for i in range(num_layers):
        if i < short:
            tier, alpha, k = "sensory", 1.0, 20.0
        elif i >= long:
            tier, alpha, k = "long-term", 0.0, None
        else:
            tier = "working"
            alpha, k = WORKING_PARAMS[family]((i - short) / (long - short))
        layers.append({"layer": i, "tier": tier, "alpha": alpha, "k": k, "budget_share": 1 / num_layers})
    return layers


def history_text(question: str, answer: str, options) -> str:
    """The last exchange as the pseudo-queries quote it: a bare option letter is replaced by its option's
    text (when the options are known), and ``X) `` option labels are dropped from the answer."""
    letter = re.fullmatch(r"\s*\(?([A-Z])\)?\.?\s*", answer)
    if letter and options:
        i = ord(letter.group(1)) - ord("A")
        if 0 <= i < len(options):
            answer = str(options[i])
    answer = re.sub(r"[A-Z]\) ", "", answer)
    return f"Q: {question} A: {answer}"


def prompt_texts(base: Mapping[str, str], exchange: str | None) -> dict[str, str]:
    """The three pseudo-queries: ``local``, ``global`` and ``mixed`` = local + "; " + global, each after the
    last exchange when there is one."""
    local, glob = base["local"], base["global"]
    if exchange:
        local = HISTORY["local"].format(exchange=exchange) + local
        glob = HISTORY["global"].format(exchange=exchange) + glob
    return {"local": local, "global": glob, "mixed": local + "; " + glob}


class _PseudoQueryScores:
    """Observer: per layer and pseudo-query, the mean attention each cached row receives."""

    def __init__(self) -> None:
        self.scores: dict[tuple[int, str], torch.Tensor] = {}

    def observe(self, event: AttentionEvent) -> None:
        if event.phase != "probe" or not event.segments:
            return
        if event.heads is not None:
            self._observe_heads(event)
            return
        rows = event.attention()  # (H, q, S): the cached rows come first
        n_cached = event.n_key - event.n_query
        for seg in event.segments:
            if seg.tag in TIER_QUERY.values():
                # heads first, then the prompt's rows, as the release reduces; on the CPU: layers may live
                # on different devices, and smoothing mixes them
                mean = rows[:, seg.start : seg.stop, :n_cached].mean(dim=0).mean(dim=0)
                self.scores[(event.layer, seg.tag)] = mean.cpu()

    def _observe_heads(self, event: AttentionEvent) -> None:
        """A per-head cache's event: per KV head, the mean over its query group, then the prompt's rows."""
        hkv = len(event.heads)
        for seg in event.segments:
            if seg.tag in TIER_QUERY.values() and event.head_probs is not None:  # ragged: each head's own rows
                self.scores[(event.layer, seg.tag)] = [
                    p[:, seg.start : seg.stop, :c].mean(dim=1).mean(dim=0).cpu()
                    for p, c in zip(event.head_probs, event.heads)]
            elif seg.tag in TIER_QUERY.values():
                rows = event.attention()  # (Hq, q, P), padded per head
                # the prompt's rows first, then the group's heads: one pass over the rows (the means commute)
                per_head = rows[:, seg.start : seg.stop].mean(dim=1).view(hkv, -1, rows.shape[-1]).mean(dim=1).cpu()
                self.scores[(event.layer, seg.tag)] = [per_head[h, :c] for h, c in enumerate(event.heads)]


@register_policy
@dataclass
class HermesPolicy(HeadPruning, ScoringPolicy):
    """HERMES hierarchical memory; the defaults are the authors' release (see the module docstring).

    Attributes:
        budget: candidate rows per layer (with budget shares: the mean per layer); a long-term layer's
            summary row counts against it.
        layers: per-layer dicts ``{tier, alpha, k, budget_share}`` (from a PolicySpec); None = fixed split.
        gamma: cross-layer smoothing weight per tier.
        family: which published working-band parameters the fixed split uses (``llava-ov`` or ``qwen2.5-vl``).
        summary: fold the rows a long-term layer drops into a summary row.
        summary_mode: ``"release"`` (a new summary row per prune, appended and scored like any row, inside
            the budget) or ``"slot"`` (hermes-lab's variant: one never-evicted running-mean slot at the
            oldest evicted position, outside the budget).
        positions: ``"layer"`` (the release: new tokens one past each layer's own last row) or
            ``"stream"`` (hermes-lab's variant: the stream's positions in every layer).
        pseudo_query: how the pseudo-queries' attention is obtained, as in HERMES's release:
            ``"embedding"`` (its sdpa / flash path) projects the prompts' input embeddings at
            each layer, with no forward; ``"forward"`` (its eager path) runs the prompts through
            the model and reads the real attention. See :mod:`hermes_policy.embedding_probe`.
        prompts: ``{"local": ..., "global": ...}`` wording of the pseudo-queries (None: :data:`PROMPTS`).
        history: put the last question the session answered, and its answer, in front of the prompts.
        templated_prompts: wrap each prompt in the chat template as a question (hermes-lab's variant).
        causal_prompts: on the embedding path, mask a prompt's later tokens from its earlier ones
            (hermes-lab's variant; the release's sdpa path uses no mask there).
        granularity: ``"layer"`` (the release: every KV head of a layer keeps the same rows) or ``"head"``
            (each KV head scored and pruned on its own; :mod:`hermes_policy.policies.hermes_heads`).
        head_budget: with ``granularity="head"``, ``"equal"`` (each head keeps the layer's budget) or
            ``"adaptive"`` (AdaKV-style: the layer's total split by how concentrated each head's score is).
        head_floor: with ``head_budget="adaptive"``, the share of an equal split every head keeps at least.
    """

    name = "hermes"
    exact_under_budget = True
    granularities = ("layer", "head")
    #: the option values that reproduce the authors' release (all of them the defaults)
    RELEASE: ClassVar[dict[str, Any]] = {
        "layers": None, "gamma": dict(DEFAULT_GAMMA), "family": "llava-ov", "summary": True,
        "summary_mode": "release", "positions": "layer", "pseudo_query": "embedding", "prompts": None,
        "history": True, "templated_prompts": False, "causal_prompts": False, "granularity": "layer",
    }
    layers: list[dict[str, Any]] | None = None
    gamma: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_GAMMA))
    family: str = "llava-ov"
    summary: bool = True
    summary_mode: Literal["release", "slot"] = "release"
    positions: Literal["layer", "stream"] = "layer"
    pseudo_query: str = "embedding"
    prompts: dict[str, str] | None = None
    history: bool = True
    templated_prompts: bool = False
    causal_prompts: bool = False
    head_budget: Literal["equal", "adaptive"] = "equal"
    head_floor: float = 0.2

    def __post_init__(self) -> None:
        super().__post_init__()
        # the same checks a PolicySpec file gets, so a policy made from Python fails as clearly
        who = self.name
        is_gamma, must = PARAM_RULES["gamma"]
        if not is_gamma(self.gamma):
            raise PolicyError(f"{who}: gamma must be {must}, got {show(self.gamma)}")
        if not isinstance(self.family, str) or self.family not in WORKING_PARAMS:
            raise PolicyError(f"{who}: family must be one of {sorted(WORKING_PARAMS)}, got {show(self.family)}")
        for flag in ("summary", "history", "templated_prompts", "causal_prompts"):
            if not isinstance(getattr(self, flag), bool):
                raise PolicyError(f"{who}: {flag} must be true or false, got {show(getattr(self, flag))}")
        if self.summary_mode not in SUMMARY_MODES:
            raise PolicyError(f"{who}: summary_mode must be one of {SUMMARY_MODES}, got {show(self.summary_mode)}")
        if self.positions not in POSITION_MODES:
            raise PolicyError(f"{who}: positions must be one of {POSITION_MODES}, got {show(self.positions)}")
        if not isinstance(self.pseudo_query, str) or self.pseudo_query not in PSEUDO_QUERY_DEPTHS:
            raise PolicyError(f"{who}: pseudo_query must be one of {PSEUDO_QUERY_DEPTHS}, "
                              f"got {show(self.pseudo_query)}")
        if self.prompts is not None and not (
            isinstance(self.prompts, dict) and set(self.prompts) == set(PROMPTS)
            and all(isinstance(v, str) and v.strip() for v in self.prompts.values())
        ):
            raise PolicyError(f"{who}: prompts must be an object with non-empty \"local\" and \"global\" "
                              f"texts, or null; got {show(self.prompts)}")
        if self.layers is not None:
            check_layers(self.layers, who)
        if self.head_budget not in HEAD_BUDGETS:
            raise PolicyError(f"{who}: head_budget must be one of {HEAD_BUDGETS}, got {show(self.head_budget)}")
        if isinstance(self.head_floor, bool) or not isinstance(self.head_floor, (int, float)) or \
                not 0 <= self.head_floor <= 1:
            raise PolicyError(f"{who}: head_floor must be a number in [0, 1], got {show(self.head_floor)}")
        if self.granularity == "head" and self.summary and self.summary_mode == "slot":
            raise PolicyError(f"{who}: summary_mode 'slot' keeps one slot per layer; with granularity 'head' use "
                              "summary_mode 'release' or summary false")
        if self.head_budget == "adaptive" and self.granularity != "head":
            raise PolicyError(f"{who}: head_budget 'adaptive' splits a layer's budget between its KV heads; it "
                              "needs granularity 'head'")
        #: (depth, family) -> the fixed split's settings, made once (they are read per layer, several times a chunk)
        self._fixed_memo: dict[tuple[int, str], list[dict[str, Any]]] = {}
        self._scorer = _PseudoQueryScores()
        #: the scorer watches only probes, and only the layers that mix in attention (set per chunk)
        self._watch = Subscription(self._scorer, phases=frozenset({"probe"}))
        #: the latest prune's per-layer (T_l,) smoothed scores
        self._scores: list[torch.Tensor] = []
        #: summary rows made by before_evict, appended by on_evict: layer -> (key, value, positions)
        self._pending_summary: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    @property
    def _release_summary(self) -> bool:
        return self.summary and self.summary_mode == "release"

    # ------------------------------------------------------------- settings
    def check_model(self, adapter) -> None:
        if self.layers is not None:
            check_layers_fit(self.layers, adapter, "hermes")

    def layer_settings(self, num_layers: int) -> list[dict[str, Any]]:
        if self.layers is not None:
            layers = self.layers
        else:
            # asked per layer several times a chunk: made once per (depth, family); callers only read it
            key = (num_layers, self.family)
            if key not in self._fixed_memo:
                self._fixed_memo[key] = fixed_layers(num_layers, self.family)
            layers = self._fixed_memo[key]
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

    def candidates(self, meta) -> torch.Tensor:
        """(S,) bool: the rows a layer scores and may drop: video tokens, and (release) summary rows."""
        if self._release_summary:
            return meta.is_video | (meta.frame == SUMMARY_FRAME)
        return meta.is_video

    def kept_candidates(self, budget: int, tier: str) -> int:
        """How many candidates a layer keeps: one fewer in a long-term layer, whose new summary row takes
        the last place."""
        return max(0, budget - 1) if self._release_summary and tier == "long-term" else budget

    def needs_prune(self, cache, layer: int, budget: int) -> bool:
        tier = self.layer_settings(cache.num_layers)[layer]["tier"]
        return int(self.candidates(cache.meta(layer)).sum()) > self.kept_candidates(budget, tier)

    # -------------------------------------------------------------- prompts
    def prompt_texts(self, session) -> dict[str, str]:
        """This chunk's pseudo-queries (``local``, ``global``, ``mixed``), the session's last exchange first."""
        exchange = None
        past = getattr(session, "exchanges", None)
        if self.history and past:
            exchange = history_text(*past[-1])
        return prompt_texts(self.prompts or PROMPTS, exchange)

    def pseudo_query_attention(self, session, settings: list[dict[str, Any]]) -> dict[tuple[int, str], torch.Tensor]:
        """Run the pseudo-queries the scored layers need; per (layer, query), the (S_l,) mean attention."""
        scored = [i for i, s in enumerate(settings) if float(s["alpha"]) < 1]
        needed = [q for q in ("global", "mixed") if q in {TIER_QUERY[settings[i]["tier"]] for i in scored}]
        texts = self.prompt_texts(session)
        self._scorer.scores.clear()
        options = {"templated": self.templated_prompts}
        if self.pseudo_query == "forward":
            # one forward for every prompt: the forward's cost is per token, whichever layers read it
            if needed:
                self._watch = Subscription(self._scorer, layers=frozenset(scored), phases=frozenset({"probe"}))
                session.pseudo_queries({q: texts[q] for q in needed}, depth="forward", **options)
        else:
            # each layer reads one prompt, and an embedding probe costs per layer: probe each prompt only
            # in the layers that read it (a segment sees the cache and itself alone, packed or not)
            for query in needed:
                layers = frozenset(i for i in scored if TIER_QUERY[settings[i]["tier"]] == query)
                self._watch = Subscription(self._scorer, layers=layers, phases=frozenset({"probe"}))
                session.pseudo_queries({query: texts[query]}, depth="embedding", causal=self.causal_prompts,
                                       **options)
        return dict(self._scorer.scores)

    # ---------------------------------------------------------------- prune
    def _subscription(self, layers: frozenset[int]) -> Subscription:
        return Subscription(self._scorer, layers=layers, phases=frozenset({"probe"}))

    def after_chunk(self, session) -> None:
        if self.granularity == "head":
            self.after_chunk_heads(session)
            return
        cache = session.cache
        cache.layer_tails = self.positions == "layer"
        budgets = self.layer_budgets(cache.num_layers)
        if not any(self.needs_prune(cache, i, b) for i, b in enumerate(budgets)):
            return
        settings = self.layer_settings(cache.num_layers)
        self.prune(cache, self.pseudo_query_attention(session, settings))

    def prune(self, cache, attention: Mapping[tuple[int, str], torch.Tensor]) -> list[torch.Tensor]:
        """Score every layer, then prune those over budget: the whole step after the pseudo-queries.

        Args:
            attention: per (layer, ``"global"`` / ``"mixed"``), the (S_l,) mean attention each of the
                layer's rows receives from that pseudo-query (needed for the layers with alpha < 1).

        Returns:
            per layer, the (T_l,) smoothed scores of its candidates.
        """
        cache.layer_tails = self.positions == "layer"
        settings = self.layer_settings(cache.num_layers)
        self._scores = self.layer_scores(cache, settings, attention)
        for layer, budget in enumerate(self.layer_budgets(cache.num_layers)):
            if not self.needs_prune(cache, layer, budget):
                continue
            keep, dropped = self.choose_rows(cache, layer, self.kept_candidates(budget, settings[layer]["tier"]))
            keep = self._before_evict(cache, layer, keep, dropped, settings[layer]["tier"])
            cache.evict(layer, keep)
            self._on_evict(cache, layer)
        return self._scores

    def score(self, session, layer: int) -> torch.Tensor:
        """The latest prune's (T_l,) smoothed scores of the layer's candidates."""
        return self._scores[layer]

    def layer_scores(
        self, cache, settings: list[dict[str, Any]], attention: Mapping[tuple[int, str], torch.Tensor]
    ) -> list[torch.Tensor]:
        """Per layer, a (T_l,) score over its candidates, smoothed across depth."""
        raw = []
        for layer, s in enumerate(settings):
            rows = torch.nonzero(self.candidates(cache.meta(layer))).flatten()
            alpha = float(s["alpha"])
            attn = None
            if alpha < 1:
                key = (layer, TIER_QUERY[s["tier"]])
                if key not in attention:
                    raise PolicyError(f"hermes: no {key[1]!r} pseudo-query attention for layer {layer}")
                attn = attention[key][rows]
            raw.append(raw_score(attn, rows.numel(), alpha, s["k"]))
        return smooth(raw, [s["tier"] for s in settings], self.gamma)

    def choose_rows(self, cache, layer: int, n_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows kept, candidate rows dropped), both ascending: the top ``n_keep`` candidates by score plus
        every other row. Ties go as ``torch.topk(sorted=False)`` breaks them, as in the release."""
        meta = cache.meta(layer)
        is_candidate = self.candidates(meta)
        rows = torch.nonzero(is_candidate).flatten()
        score = self._scores[layer]
        if score.shape != rows.shape:
            raise RuntimeError(f"hermes: score of layer {layer} has shape {tuple(score.shape)}, expected "
                               f"({rows.numel()},), one per candidate row")
        frame, patch = meta.frame[rows], meta.patch[rows]
        if bool(((patch < 0) & (frame >= 0)).any()):
            # a frame's text (Qwen3-VL timestamps) stays with its patches; a summary row counts as a patch
            chosen = top_units(score, frame, torch.where(frame == SUMMARY_FRAME, 0, patch), n_keep)
        else:
            chosen = torch.zeros(rows.numel(), dtype=torch.bool)
            chosen[torch.topk(score, min(n_keep, rows.numel()), sorted=False).indices] = True
        keep = torch.sort(torch.cat([torch.nonzero(~is_candidate).flatten(), rows[chosen]])).values
        return keep, rows[~chosen]

    # ------------------------------------------------------------ summaries
    def _before_evict(self, cache, layer: int, keep: torch.Tensor, dropped: torch.Tensor, tier: str) -> torch.Tensor:
        if not (self.summary and tier == "long-term" and dropped.numel()):
            return keep
        if self.summary_mode == "release":
            self._pending_summary[layer] = self._summary_row(cache, layer, keep, dropped)
            return keep
        if self._fold_into_slot(cache, layer, dropped):
            # the new slot is the oldest dropped row, so that row stays
            keep = torch.sort(torch.cat([keep, dropped[:1]])).values
        return keep

    def _on_evict(self, cache, layer: int) -> None:
        row = self._pending_summary.pop(layer, None)
        if row is None:
            return
        key, value, position = row
        meta = cache.meta(layer)
        summary_meta = type(meta)(
            frame=torch.tensor([SUMMARY_FRAME], dtype=meta.frame.dtype),
            patch=torch.tensor([NOT_A_PATCH], dtype=meta.patch.dtype),
            time=torch.tensor([math.nan], dtype=meta.time.dtype),
        )
        cache.replace_layer(
            layer,
            torch.cat([cache.keys(layer), key], dim=-2),
            torch.cat([cache.values(layer), value], dim=-2),
            torch.cat([cache.positions(layer), position], dim=1),
            type(meta).cat([meta, summary_meta]),
        )

    def _summary_row(self, cache, layer: int, keep: torch.Tensor, dropped: torch.Tensor):
        """(key (1, Hkv, 1, D), value (1, Hkv, 1, D), position (A, 1)) of the row folding ``dropped``.

        Its position is one past the largest position kept (on every axis, as the release's M-RoPE path
        does); each dropped key is rotated there before the mean.
        """
        positions = cache.positions(layer)
        target = int(positions[:, keep].max()) + 1 if keep.numel() else int(positions.max()) + 1
        delta = target - positions[:, dropped]  # (A, n)
        keys = cache.rotary.rotate(cache.keys(layer)[:, :, dropped], delta)
        values = cache.values(layer)[:, :, dropped]
        key = keys.float().mean(dim=2, keepdim=True).to(keys.dtype)
        value = values.float().mean(dim=2, keepdim=True).to(values.dtype)
        counts = cache.policy_state.setdefault("summary_count", {})
        counts[layer] = counts.get(layer, 0) + int(cache.meta(layer).is_video[dropped].sum())
        return key, value, torch.full((cache.rotary.n_axes, 1), target, dtype=torch.long)

    def _fold_into_slot(self, cache, layer: int, dropped: torch.Tensor) -> bool:
        """``summary_mode="slot"``: fold the (D,) ``dropped`` rows into the layer's one running-mean slot;
        True if the slot is new (it is then ``dropped[0]``, at its own position)."""
        meta = cache.meta(layer)
        slots = torch.nonzero(meta.frame == SUMMARY_FRAME).flatten()
        counts = cache.policy_state.setdefault("summary_count", {})
        new_slot = slots.numel() == 0
        if not new_slot:
            slot, count = int(slots[0]), counts[layer]
        else:
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


@register_policy
@dataclass
class HermesHeadPolicy(HermesPolicy):
    """``hermes`` with ``granularity="head"``: each KV head pruned by its own tier and scores, the layer's
    budget per head (so the bytes equal per-layer ``hermes`` at the same budget)."""

    name = "hermes-head"
    granularity: str = "head"


@register_policy
@dataclass
class HermesAdaKVPolicy(HermesPolicy):
    """``hermes`` per KV head with the adaptive (AdaKV-style) split of each layer's budget between its heads."""

    name = "hermes-adakv"
    granularity: str = "head"
    head_budget: Literal["equal", "adaptive"] = "adaptive"
