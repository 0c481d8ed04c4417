"""The policy interface: what a memory policy sees and may do.

A policy is a dataclass (its fields are its configuration, validated in
``__post_init__``) registered by name. The session calls it at three points:

* :meth:`Policy.validate` once the tokens per frame are known, before the
  first chunk is written, so an impossible budget fails before any state changes;
* :meth:`Policy.observers` during every forward: scoring policies (HERMES,
  SnapKV) return observers that watch attention through the runtime's seam;
* :meth:`Policy.after_chunk` after each ingested chunk: it decides, per
  layer, which cached rows to keep, and calls ``cache.evict``. Policies that
  keep each layer's top-scoring video tokens derive from
  :class:`~hermes_policy.policies.scoring.ScoringPolicy`, which owns that loop
  and asks them only for scores.

Budgets count *video tokens per layer* (tokens that belong to a frame); the
system prefix and any other non-video rows are not charged against it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

import torch

from hermes_policy.errors import BudgetError, PolicyError
from hermes_policy.policies.registry import POLICIES, make_policy, register_policy  # noqa: F401  (re-exported)

if TYPE_CHECKING:
    from hermes_policy.attention import AttentionObserver
    from hermes_policy.session import StreamingSession

#: cache layouts: one set of kept rows per layer, or per (layer, KV head)
GRANULARITIES = ("layer", "head")


def head_policies() -> list[str]:
    """The registered policies that can keep a per-head cache."""
    return sorted(name for name in POLICIES if "head" in POLICIES[name].granularities)


@dataclass
class Policy(ABC):
    """Base class: a budget in video tokens per layer (None = unlimited)."""

    name: ClassVar[str]
    #: whether the policy evicts to a budget (every one but ``full``); a sweep runs the others once
    requires_budget: ClassVar[bool] = True
    #: what the budget means, for the "needs --budget" message
    budget_help: ClassVar[str] = "video tokens per layer"
    #: with its default parameters and a budget larger than the stream, the policy is
    #: bit-identical to ``full`` (same cache, same answers); the contract test holds it to that
    exact_under_budget: ClassVar[bool] = False
    #: the cache layouts the policy can prune: ``"layer"`` (every KV head of a layer keeps the same rows) and,
    #: for policies that choose rows per KV head, ``"head"`` (:class:`~hermes_policy.head_cache.HeadCache`)
    granularities: ClassVar[tuple[str, ...]] = ("layer",)
    budget: int | None = None
    #: which cache layout the session keeps for this policy (one of :attr:`granularities`)
    granularity: str = "layer"

    def __post_init__(self) -> None:
        if self.granularity not in self.granularities:
            if self.granularity in GRANULARITIES:
                raise PolicyError(f"{self.name}: keeps one set of rows per layer; granularity {self.granularity!r} "
                                  f"works with {', '.join(head_policies())}")
            raise PolicyError(f"{self.name}: granularity must be one of {GRANULARITIES}, got {self.granularity!r}")
        if self.budget is None:
            if self.requires_budget:
                raise BudgetError(f"{self.name}: needs --budget ({self.budget_help})")
        elif not self.requires_budget:
            raise BudgetError(f"{self.name}: keeps every token and takes no budget")
        elif isinstance(self.budget, bool) or not isinstance(self.budget, int) or self.budget <= 0:
            raise BudgetError(f"{self.name}: budget must be a positive number of video tokens, got {self.budget!r}")

    # ---------------------------------------------------------------- hooks
    def validate(self, tokens_per_frame: int, num_layers: int) -> None:
        """Reject a budget that cannot hold one whole frame (plus any reserved tokens)."""
        need = tokens_per_frame + self.reserved_tokens()
        for layer, budget in enumerate(self.layer_budgets(num_layers)):
            if budget is not None and budget < need:
                extra = f" plus {self.reserved_tokens()} reserved sink tokens" if self.reserved_tokens() else ""
                raise BudgetError(
                    f"{self.name}: a budget of {budget} video tokens (layer {layer}) cannot hold one frame "
                    f"({tokens_per_frame} tokens){extra}; use --budget {need} or more"
                )

    def check_model(self, adapter) -> None:
        """Refuse a configuration made for another model (a spec's layer count, decoder layers, head count);
        called when a session is made, before anything streams. Default: nothing to check."""

    def reserved_tokens(self) -> int:
        """Video tokens the policy keeps regardless of the window (e.g. StreamingLLM sinks)."""
        return 0

    def layer_budgets(self, num_layers: int) -> list[int | None]:
        """Budget of each layer; equal unless a subclass says otherwise."""
        return [self.budget] * num_layers

    def observers(self) -> Sequence[AttentionObserver]:
        """Attention observers to attach while the stream is ingested."""
        return ()

    def on_frames(self, session: StreamingSession, frames: list) -> None:
        """The frames of a chunk that was just written (before :meth:`after_chunk`); e.g. to keep thumbnails."""

    @abstractmethod
    def after_chunk(self, session: StreamingSession) -> None:
        """Evict what the policy does not want to keep, now that a chunk is cached."""

    def before_ask(self, session: StreamingSession, question: str) -> None:
        """Question-time work before the prefill (e.g. ReKV retrieval); counted in TTFT.

        Whatever it changes in the cache must be undone by :meth:`after_ask`.
        """

    def after_ask(self, session: StreamingSession) -> None:
        """Undo :meth:`before_ask`; runs even when the question failed."""

    # -------------------------------------------------------------- helpers
    def config(self) -> dict:
        """The policy's resolved configuration, JSON-ready."""
        # a policy with one layout has nothing to say about it (and its configs stay as they were written)
        single = len(self.granularities) == 1
        return {"policy": self.name, **{f.name: getattr(self, f.name) for f in fields(self)
                                        if not (single and f.name == "granularity")}}


def keep_rows(is_video: torch.Tensor, video_keep: torch.Tensor, keep_other: bool = True) -> torch.Tensor:
    """Row indices to keep: chosen video rows plus (optionally) every non-video row.

    Args:
        is_video: (S,) bool over the layer's rows.
        video_keep: (K,) indices into the *video* rows (0 = oldest video row).
        keep_other: keep the non-video rows (system prefix) too.

    Returns:
        (K',) ascending row indices into the layer.
    """
    video_rows = torch.nonzero(is_video).flatten()
    chosen = video_rows[video_keep]
    if keep_other:
        chosen = torch.cat([torch.nonzero(~is_video).flatten(), chosen])
    return torch.sort(chosen).values
