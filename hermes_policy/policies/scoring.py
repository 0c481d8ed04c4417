"""Scoring policies: a per-layer score over video tokens, and one shared prune loop (kvpress's scorer/press split).

A :class:`ScoringPolicy` only says how much each cached video token of a layer
is worth (:meth:`ScoringPolicy.score`, higher = keep); the base class does the
rest after every chunk, the same way for every such policy:

1. pick the layers to prune (:meth:`~ScoringPolicy.needs_prune`: by default
   those holding more video tokens than their budget from ``layer_budgets``);
2. :meth:`~ScoringPolicy.prepare` once, for pre-passes shared by all layers
   (SnapKV merges its pending votes, HERMES runs its pseudo-queries and smooths
   scores across depth, ReKV makes sure its block store exists);
3. per pruned layer: keep the top-``budget`` video tokens by score (ties go as
   ``torch.topk`` breaks them), back in time order, plus every non-video row
   (the system prefix, summary slots) unless :attr:`~ScoringPolicy.keep_other`
   is False; a frame's text rows (Qwen3-VL's timestamps) go with its patches
   (:func:`top_units`); :meth:`~ScoringPolicy.before_evict` may still add rows or act on
   the dropped ones (HERMES folds them into a summary slot, ReKV offloads
   them), then ``cache.evict``, then :meth:`~ScoringPolicy.on_evict` re-aligns
   any row-aligned state (SnapKV's running scores).
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch

from hermes_policy.policies.base import Policy, keep_rows

if TYPE_CHECKING:
    from hermes_policy.cache import CompactCache
    from hermes_policy.session import StreamingSession


def recency(n: int) -> torch.Tensor:
    """(n,) long score of n video tokens by age: the newest (last) scores highest, no ties."""
    return torch.arange(n)


def top_units(score: torch.Tensor, frame: torch.Tensor, patch: torch.Tensor, budget: int) -> torch.Tensor:
    """Which of T video tokens to keep when frames carry text (Qwen3-VL's ``<t seconds>`` timestamps and
    vision delimiters): a frame's text rows are kept exactly when at least one of its patches is, and they
    count against the budget.

    Patches are taken best first; the first patch of a frame also pays for that frame's text; taking stops
    at the first patch that would pass the budget. Without text rows this is ``torch.topk``.

    Args:
        score: (T,) scores of the video tokens (the text rows' own scores are not used).
        frame, patch: (T,) their frame index and in-frame patch index (``NOT_A_PATCH`` for text).

    Returns:
        (T,) bool, the tokens kept: at most ``budget`` of them.
    """
    chosen = torch.zeros(score.numel(), dtype=torch.bool)
    is_text = patch < 0
    if not bool(is_text.any()):
        chosen[torch.topk(score, min(budget, score.numel())).indices] = True
        return chosen
    patches = torch.nonzero(~is_text).flatten()
    order = patches[torch.sort(score[patches], descending=True, stable=True).indices]
    frames, first_seen = torch.unique(frame[order], return_inverse=True)
    rank = torch.arange(order.numel())
    first = torch.full((frames.numel(),), order.numel(), dtype=torch.long).scatter_reduce(0, first_seen, rank, "amin")
    text_of = (frame[is_text][:, None] == frames[None, :]).sum(0)  # text rows per frame
    cost = torch.cumsum(1 + torch.where(rank == first[first_seen], text_of[first_seen], 0), 0)
    taken = order[cost <= budget]
    chosen[taken] = True
    chosen |= is_text & torch.isin(frame, frame[taken])
    return chosen


@dataclass
class ScoringPolicy(Policy):
    """A policy that scores each layer's video tokens and keeps the top ``budget`` of them."""

    #: keep the non-video rows (system prefix, policy slots) of a pruned layer
    keep_other: ClassVar[bool] = True

    # ----------------------------------------------------------------- hooks
    @abstractmethod
    def score(self, session: StreamingSession, layer: int) -> torch.Tensor:
        """(T_l,) scores of the layer's video tokens in time order (oldest first); higher = keep.

        Called only for layers being pruned that hold more than ``budget`` video tokens.
        """

    def needs_prune(self, cache: CompactCache, layer: int, budget: int) -> bool:
        """Whether ``layer`` is pruned after this chunk: by default, when it is over its budget."""
        return cache.video_count(layer) > budget

    def prepare(self, session: StreamingSession, layers: list[int]) -> None:
        """Once per chunk, before any :meth:`score`; ``layers`` are those about to be pruned (maybe none)."""

    def before_evict(
        self, session: StreamingSession, layer: int, keep: torch.Tensor, dropped: torch.Tensor
    ) -> torch.Tensor:
        """Last word on the rows kept, while the dropped ones are still cached.

        Args:
            keep: (K,) ascending row indices the base chose to keep.
            dropped: (D,) ascending rows of the *video* tokens not kept.

        Returns:
            (K',) ascending row indices to keep (by default ``keep``).
        """
        return keep

    def on_evict(self, session: StreamingSession, layer: int, keep: torch.Tensor) -> None:
        """After ``cache.evict(layer, keep)``: re-align row-aligned state with the (K,) kept rows."""

    # ------------------------------------------------------------ the prune
    def after_chunk(self, session: StreamingSession) -> None:
        cache = session.cache
        budgets = self.layer_budgets(cache.num_layers)
        layers = [i for i, b in enumerate(budgets) if b is not None and self.needs_prune(cache, i, b)]
        self.prepare(session, layers)
        for layer in layers:
            keep, dropped = self.choose(session, layer, budgets[layer])
            keep = self.before_evict(session, layer, keep, dropped)
            cache.evict(layer, keep)
            self.on_evict(session, layer, keep)

    def choose(self, session: StreamingSession, layer: int, budget: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer's rows to keep and its video rows to drop, both (·,) ascending.

        At most ``budget`` video tokens are kept: all of them when they fit (no
        scoring), else the top ``budget`` by :meth:`score`.
        """
        meta = session.cache.meta(layer)
        is_video = meta.is_video
        video = torch.nonzero(is_video).flatten()
        chosen = torch.ones(video.numel(), dtype=torch.bool)
        if video.numel() > budget:
            score = self.score(session, layer)
            if score.shape != video.shape:
                raise RuntimeError(f"{self.name}: score of layer {layer} has shape {tuple(score.shape)}, "
                                   f"expected ({video.numel()},), one per video token")
            # a frame's text (timestamp, delimiters) stays with its patches: kept with them, dropped with them
            chosen = top_units(score, meta.frame[video], meta.patch[video], budget)
        return keep_rows(is_video, torch.nonzero(chosen).flatten(), self.keep_other), video[~chosen]
