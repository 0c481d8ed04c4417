"""``sink-window``: StreamingLLM for video.

The system prefix is the attention sink and is always kept; optionally the
first ``sink_tokens`` video tokens are kept as extra sinks. The rest of the
budget is a window over the most recent video tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hermes_policy.errors import BudgetError
from hermes_policy.policies.base import register_policy
from hermes_policy.policies.scoring import ScoringPolicy, recency


@register_policy
@dataclass
class SinkWindowPolicy(ScoringPolicy):
    name = "sink-window"
    exact_under_budget = True
    sink_tokens: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sink_tokens < 0:
            raise BudgetError(f"sink-window: sink_tokens must be >= 0, got {self.sink_tokens}")

    def reserved_tokens(self) -> int:
        return self.sink_tokens

    def score(self, session, layer: int) -> torch.Tensor:
        """Recency, with the first ``sink_tokens`` video tokens pinned above every other token."""
        n = session.cache.video_count(layer)
        score = recency(n)
        # validate() made the budget hold the sinks plus a frame, so all pinned rows fit
        score[: self.sink_tokens] = n
        return score
