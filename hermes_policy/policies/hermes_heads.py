"""HERMES per KV head (``granularity="head"``): each head of a layer pruned by its own tier, in its own rows.

The per-layer policy gives every KV head of a layer the same rows. Here the cache is a
:class:`~hermes_policy.head_cache.HeadCache` and each (layer, KV head) is scored and pruned on its own:

* **Tier per head.** A spec's ``heads`` list (``derive`` writes one tier per *query* head) gives each KV
  head the tier most of its query group has (a tie goes to the layer's tier when it is among the tied,
  else to the deepest); without one, every head takes its layer's tier. A head of the layer's tier takes
  the layer's ``alpha`` and ``k``; a head of another tier takes that tier's fixed parameters (sensory
  ``alpha = 1, k = 20``; long-term ``alpha = 0``; working the family's band at ``p = 0.5``).
* **Score per head.** The release's score (:func:`~hermes_policy.policies.hermes_scores.raw_score`) over
  the head's own candidates, with ``attn`` the pseudo-query attention the head's query group gives its
  rows (mean over the group's query heads, then the prompt's tokens). Smoothed across depth as the
  release does, ``s_lh <- (1 - g) s_lh + g * mean_h' resample(s_{l+1,h'})``: the next layer's heads are
  averaged, because head ``h`` of two layers are unrelated parameters.
* **Budget per head.** ``head_budget="equal"``: each head keeps the layer's budget, so the bytes equal the
  per-layer policy's. ``head_budget="adaptive"`` (AdaKV, Feng et al. 2024, in our words): the layer's total,
  ``Hkv x budget``, is split by concentration: every head keeps at least ``head_floor`` of an equal share,
  and the rest goes to the heads' best remaining candidates ranked together, each head's scores normalised
  to sum to one. A head whose score is concentrated on a few rows reaches its mass with few of them and
  gives budget to heads whose score is spread.
* **Summary rows** (release mode) are made per long-term head: its dropped rows fold into one row after
  its kept ones, at one past its own last kept position.

Probes cannot observe a per-head session (the session refuses), and ``summary_mode="slot"`` works per
layer only.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import Any

import torch

from hermes_policy.errors import PolicyError
from hermes_policy.policies.hermes_scores import SUMMARY_FRAME, TIER_QUERY, WORKING_PARAMS, raw_score, resample
from hermes_policy.policies.scoring import top_units
from hermes_policy.tokens import NOT_A_PATCH, TokenMeta

#: tiers from shallow to deep (ties in a query group go deepest)
TIERS = ("sensory", "working", "long-term")
HEAD_BUDGETS = ("equal", "adaptive")
#: per-head (alpha, k) of a head whose tier differs from its layer's (working: see head_params)
TIER_PARAMS = {"sensory": (1.0, 20.0), "long-term": (0.0, None)}


def kv_head_tier(query_tiers: list[str], layer_tier: str) -> str:
    """The tier of one KV head from its query group's tiers: the most common one (see the module docstring)."""
    counts = Counter(query_tiers)
    best = max(counts.values())
    tied = [t for t in TIERS if counts.get(t) == best]
    return layer_tier if layer_tier in tied else tied[-1]


def head_params(tier: str, layer: Mapping[str, Any], family: str) -> tuple[float, float | None]:
    """(alpha, k) of a head of ``tier`` in a layer set up as ``layer``."""
    if tier == layer["tier"]:
        return float(layer["alpha"]), layer["k"]
    if tier in TIER_PARAMS:
        return TIER_PARAMS[tier]
    return WORKING_PARAMS[family](0.5)


def split_budget(scores: list[torch.Tensor], total: int, floor: int) -> list[int]:
    """How many candidates each head keeps: at least ``floor`` (or all it has), ``total`` in all.

    Args:
        scores: per head, (T_h,) non-negative scores of its candidates.
        total: rows the layer keeps over all heads.
        floor: the least any head keeps (capped at its candidates).

    Returns:
        per head, its count; the sum is ``min(total, sum T_h)``.
    """
    sizes = [s.numel() for s in scores]
    if sum(sizes) <= total:
        return sizes
    base = [min(floor, n) for n in sizes]
    rest = total - sum(base)
    if rest < 0:
        raise PolicyError(f"hermes: a per-head floor of {floor} rows x {len(sizes)} heads passes the layer's "
                          f"{total}; lower head_floor")
    values, owner, rank = [], [], []
    for h, s in enumerate(scores):
        w = s.float().clamp_min(0)
        w = w / w.sum() if float(w.sum()) > 0 else torch.full_like(w, 1 / max(w.numel(), 1))
        tail = torch.sort(w, descending=True).values[base[h]:]
        values.append(tail)
        owner.append(torch.full((tail.numel(),), h, dtype=torch.long))
        rank.append(torch.arange(tail.numel()))
    pool, heads, ranks = torch.cat(values), torch.cat(owner), torch.cat(rank)
    # equal values go to the heads in turn (each head's best remaining first), not all to one head
    by_rank = torch.sort(ranks, stable=True).indices
    order = by_rank[torch.sort(pool[by_rank], descending=True, stable=True).indices]
    taken = heads[order[:rest]]
    counts = torch.bincount(taken, minlength=len(sizes)).tolist()
    return [b + c for b, c in zip(base, counts)]


class HeadPruning:
    """The per-KV-head half of :class:`~hermes_policy.policies.hermes.HermesPolicy` (a mixin: it reads the
    policy's ``gamma``, ``family``, ``summary``, ``head_budget``, ``head_floor`` and its hooks)."""

    # ------------------------------------------------------------- settings
    def head_settings(self, cache) -> list[list[dict[str, Any]]]:
        """Per layer, per KV head, ``{tier, alpha, k}``."""
        layers = self.layer_settings(cache.num_layers)
        n_kv = cache.num_kv_heads
        out = []
        for layer in layers:
            query_tiers = layer.get("heads")
            group = len(query_tiers) // n_kv if query_tiers else 0
            row = []
            for h in range(n_kv):
                tier = kv_head_tier(query_tiers[h * group : (h + 1) * group], layer["tier"]) if group else layer["tier"]
                alpha, k = head_params(tier, layer, self.family)
                row.append({"tier": tier, "alpha": alpha, "k": k})
            out.append(row)
        return out

    def head_kept(self, budget: int, tiers: list[str], scores: list[torch.Tensor] | None = None) -> list[int]:
        """Candidates each head of a layer (its heads' ``tiers``) keeps; a long-term head's new summary row
        takes one more place.

        ``adaptive`` needs the heads' smoothed ``scores``; without them it answers the layer's total split
        equally, which is what decides whether the layer prunes at all.
        """
        equal = [self.kept_candidates(budget, t) for t in tiers]
        if self.head_budget == "equal" or scores is None:
            return equal
        floor = int(self.head_floor * sum(equal) / len(equal))
        return split_budget(scores, sum(equal), floor)

    def head_needs_prune(self, cache, layer: int, budget: int, tiers: list[str]) -> bool:
        counts = [int(self.candidates(cache.head_meta(layer, h)).sum()) for h in range(len(tiers))]
        kept = self.head_kept(budget, tiers)
        if self.head_budget == "adaptive":
            return sum(counts) > sum(kept)
        return any(c > k for c, k in zip(counts, kept))

    # ---------------------------------------------------------------- prune
    def after_chunk_heads(self, session) -> None:
        cache = session.cache
        cache.layer_tails = self.positions == "layer"
        if cache.num_kv_heads == 0:
            return
        settings = self.head_settings(cache)
        tiers = [[h["tier"] for h in row] for row in settings]
        budgets = self.layer_budgets(cache.num_layers)
        if not any(self.head_needs_prune(cache, i, b, tiers[i]) for i, b in enumerate(budgets)):
            return
        self.prune_heads(cache, self.head_pseudo_query_attention(session, settings))

    def head_pseudo_query_attention(self, session, settings) -> dict[tuple[int, str], list[torch.Tensor]]:
        """Per (layer, query), each KV head's (S_lh,) mean attention, for the queries its heads read."""
        reads: dict[str, set[int]] = {}
        for layer, row in enumerate(settings):
            for head in row:
                if head["alpha"] < 1:
                    reads.setdefault(TIER_QUERY[head["tier"]], set()).add(layer)
        texts = self.prompt_texts(session)
        self._scorer.scores.clear()
        for query in ("global", "mixed"):
            if query in reads:
                self._watch = self._subscription(frozenset(reads[query]))
                session.pseudo_queries({query: texts[query]}, depth=self.pseudo_query, causal=self.causal_prompts,
                                       templated=self.templated_prompts)
        return dict(self._scorer.scores)

    def prune_heads(self, cache, attention: Mapping[tuple[int, str], list[torch.Tensor]]) -> list[list[torch.Tensor]]:
        """Score every head, then prune the layers over budget, head by head.

        Returns:
            per layer, per head, the (T_lh,) smoothed scores of its candidates.
        """
        cache.layer_tails = self.positions == "layer"
        settings = self.head_settings(cache)
        tiers = [[h["tier"] for h in row] for row in settings]
        self._scores = self.head_scores(cache, settings, attention)
        for layer, budget in enumerate(self.layer_budgets(cache.num_layers)):
            if not self.head_needs_prune(cache, layer, budget, tiers[layer]):
                continue
            kept = self.head_kept(budget, tiers[layer], self._scores[layer])
            keeps, appended = [], {}
            for h, n_keep in enumerate(kept):
                keep, dropped = self.choose_head_rows(cache, layer, h, n_keep)
                keeps.append(keep)
                if self._release_summary and tiers[layer][h] == "long-term" and dropped.numel():
                    appended[h] = self._head_summary_row(cache, layer, h, keep, dropped)
            cache.evict_heads(layer, keeps, appended)
        return self._scores

    def head_scores(self, cache, settings, attention) -> list[list[torch.Tensor]]:
        """Per layer, per head, a (T_lh,) score over the head's candidates, smoothed across depth."""
        raw = []
        for layer, row in enumerate(settings):
            scores = []
            for h, s in enumerate(row):
                rows = torch.nonzero(self.candidates(cache.head_meta(layer, h))).flatten()
                attn = None
                if s["alpha"] < 1:
                    key = (layer, TIER_QUERY[s["tier"]])
                    if key not in attention:
                        raise PolicyError(f"hermes: no {key[1]!r} pseudo-query attention for layer {layer}")
                    attn = attention[key][h][rows]
                scores.append(raw_score(attn, rows.numel(), s["alpha"], s["k"]))
            raw.append(scores)
        out = [list(row) for row in raw]
        for layer in range(len(raw) - 2, -1, -1):
            below = out[layer + 1]
            for h, score in enumerate(raw[layer]):
                g = float(self.gamma[settings[layer][h]["tier"]])
                deeper = torch.stack([resample(s, score.numel()) for s in below]).mean(dim=0)
                out[layer][h] = (1 - g) * score + g * deeper
        return out

    def choose_head_rows(self, cache, layer: int, head: int, n_keep: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(rows kept, candidate rows dropped) of one head, as the per-layer choice makes them for a layer."""
        meta = cache.head_meta(layer, head)
        is_candidate = self.candidates(meta)
        rows = torch.nonzero(is_candidate).flatten()
        if rows.numel() <= n_keep:
            return torch.arange(len(meta)), rows[:0]
        score = self._scores[layer][head]
        frame, patch = meta.frame[rows], meta.patch[rows]
        if bool(((patch < 0) & (frame >= 0)).any()):
            chosen = top_units(score, frame, torch.where(frame == SUMMARY_FRAME, 0, patch), n_keep)
        else:
            chosen = torch.zeros(rows.numel(), dtype=torch.bool)
            chosen[torch.topk(score, n_keep, sorted=False).indices] = True
        keep = torch.sort(torch.cat([torch.nonzero(~is_candidate).flatten(), rows[chosen]])).values
        return keep, rows[~chosen]

    def _head_summary_row(self, cache, layer: int, head: int, keep: torch.Tensor, dropped: torch.Tensor):
        """(key (1, D), value (1, D), position (A, 1), meta) of the row folding one head's ``dropped`` rows."""
        positions = cache.head_positions(layer, head)
        target = int(positions[:, keep].max()) + 1 if keep.numel() else int(positions.max()) + 1
        keys = cache.rotary.rotate(cache.head_keys(layer, head)[dropped], target - positions[:, dropped])
        values = cache.head_values(layer, head)[dropped]
        key = keys.float().mean(dim=0, keepdim=True).to(keys.dtype)
        value = values.float().mean(dim=0, keepdim=True).to(values.dtype)
        meta = cache.head_meta(layer, head)
        counts = cache.policy_state.setdefault("head_summary_count", {})
        counts[f"{layer}:{head}"] = counts.get(f"{layer}:{head}", 0) + int(meta.is_video[dropped].sum())
        row = TokenMeta(frame=torch.tensor([SUMMARY_FRAME], dtype=meta.frame.dtype),
                        patch=torch.tensor([NOT_A_PATCH], dtype=meta.patch.dtype),
                        time=torch.tensor([math.nan], dtype=meta.time.dtype))
        return key, value, torch.full((cache.rotary.n_axes, 1), target, dtype=torch.long), row
