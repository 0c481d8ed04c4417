"""``window``: only the most recent ``budget`` video tokens, nothing else.

This drops the system prefix too. It is the naive sliding window whose
failure (losing the attention sink) motivated StreamingLLM; keep it as the
baseline that shows why ``sink-window`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hermes_policy.policies.base import Policy, keep_rows, register_policy


@register_policy
@dataclass
class WindowPolicy(Policy):
    name = "window"

    def after_chunk(self, session) -> None:
        cache = session.cache
        for layer, budget in enumerate(self.layer_budgets(cache.num_layers)):
            is_video = cache.meta(layer).is_video
            n_video = int(is_video.sum())
            if n_video > budget or n_video < len(is_video):
                keep = torch.arange(max(0, n_video - budget), n_video)
                cache.evict(layer, keep_rows(is_video, keep, keep_other=False))
