"""``window``: only the most recent ``budget`` video tokens, nothing else.

This drops the system prefix too. It is the naive sliding window whose
failure (losing the attention sink) motivated StreamingLLM; keep it as the
baseline that shows why ``sink-window`` exists.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hermes_policy.policies.base import register_policy
from hermes_policy.policies.scoring import ScoringPolicy, recency


@register_policy
@dataclass
class WindowPolicy(ScoringPolicy):
    name = "window"
    keep_other = False

    def needs_prune(self, cache, layer: int, budget: int) -> bool:
        # the prefix goes even while the video fits: a layer holding any non-video row is pruned
        return cache.video_count(layer) > budget or cache.layer_len(layer) > cache.video_count(layer)

    def score(self, session, layer: int) -> torch.Tensor:
        return recency(session.cache.video_count(layer))
