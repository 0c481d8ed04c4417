"""Metrics on attention recordings, tier derivation into a PolicySpec, and paper figures.

Metrics and derivation load eagerly (torch only). The figure functions pull in
matplotlib, plotly and pandas, so they are imported on first use: the CLI and
any tool that only derives policies do not pay for them.
"""

from __future__ import annotations

from typing import Any

from analysis.derive import (
    TIERS,
    TierAssignment,
    best_two_changepoints,
    derive,
    derive_tiers,
    hermes_fixed_tiers,
    policy_spec,
)
from analysis.errors import StudyError
from analysis.metrics import (
    age_profile,
    anchor_structure,
    entropy_summary,
    recency_index,
    temporal_bias,
)

_LAZY = {"write_figures": "analysis.figures", "figure_data": "analysis.figures"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")


__all__ = [
    "TIERS",
    "StudyError",
    "TierAssignment",
    "age_profile",
    "anchor_structure",
    "best_two_changepoints",
    "derive",
    "derive_tiers",
    "entropy_summary",
    "figure_data",
    "hermes_fixed_tiers",
    "policy_spec",
    "recency_index",
    "temporal_bias",
    "write_figures",
]
