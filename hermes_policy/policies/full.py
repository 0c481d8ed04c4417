"""``full``: keep everything. The oracle every compact policy is compared to."""

from __future__ import annotations

from dataclasses import dataclass

from hermes_policy.errors import BudgetError
from hermes_policy.policies.base import Policy, register_policy


@register_policy
@dataclass
class FullPolicy(Policy):
    name = "full"

    def __post_init__(self) -> None:
        if self.budget is not None:
            raise BudgetError("full: keeps every token and takes no budget")

    def after_chunk(self, session) -> None:
        return None
