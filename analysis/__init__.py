"""Metrics on attention recordings, tier derivation into a PolicySpec, and paper figures.

Every name loads on first use, so importing one submodule (say ``analysis.errors``)
pulls in only what that submodule needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the module that defines it. Everything loads on first use (PEP 562):
#: metrics and derivation need torch, figures need matplotlib, plotly and pandas, and a tool
#: that only reads a recording's errors or metadata should pay for none of them.
_EXPORTS = {
    **dict.fromkeys(
        ("TIERS", "TierAssignment", "best_two_changepoints", "derive", "derive_tiers", "hermes_fixed_tiers",
         "policy_spec"), "analysis.derive"),
    "StudyError": "analysis.errors",
    **dict.fromkeys(("age_profile", "anchor_structure", "entropy_summary", "recency_index", "temporal_bias"),
                    "analysis.metrics"),
    **dict.fromkeys(("write_figures", "figure_data"), "analysis.figures"),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
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
    from analysis.figures import figure_data, write_figures
    from analysis.metrics import age_profile, anchor_structure, entropy_summary, recency_index, temporal_bias


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
