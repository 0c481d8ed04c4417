"""``sink-window``: StreamingLLM for video.

The system prefix is the attention sink and is always kept; optionally the
first ``sink_tokens`` video tokens are kept as extra sinks. The rest of the
budget is a window over the most recent video tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hermes_policy.errors import BudgetError
from hermes_policy.policies.base import Policy, keep_rows, register_policy


@register_policy
@dataclass
class SinkWindowPolicy(Policy):
    name = "sink-window"
    sink_tokens: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sink_tokens < 0:
            raise BudgetError(f"sink-window: sink_tokens must be >= 0, got {self.sink_tokens}")

    def reserved_tokens(self) -> int:
        return self.sink_tokens

    def after_chunk(self, session) -> None:
        cache = session.cache
        for layer, budget in enumerate(self.layer_budgets(cache.num_layers)):
            is_video = cache.meta(layer).is_video
            n_video = int(is_video.sum())
            if n_video <= budget:
                continue
            window = budget - self.sink_tokens
            keep = torch.cat([torch.arange(self.sink_tokens), torch.arange(n_video - window, n_video)])
            cache.evict(layer, keep_rows(is_video, keep))
