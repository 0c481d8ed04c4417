"""``full``: keep everything. The oracle every compact policy is compared to."""

from __future__ import annotations

from dataclasses import dataclass

from hermes_policy.policies.base import Policy, register_policy


@register_policy
@dataclass
class FullPolicy(Policy):
    name = "full"
    requires_budget = False
    exact_under_budget = True
    granularities = ("layer", "head")

    def after_chunk(self, session) -> None:
        return None
