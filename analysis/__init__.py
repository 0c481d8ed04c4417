"""Metrics on attention recordings, tier derivation into a PolicySpec, paper figures, and the
instrument's calibration on planted models (``validate``).

Every name loads on first use, so importing one submodule (say ``analysis.errors``)
pulls in only what that submodule needs.
"""

from __future__ import annotations

from hermes_policy.lazy import exports_from, lazy_exports

# metrics and derivation need torch; figures need matplotlib, plotly and pandas
_EXPORTS = exports_from({
    "analysis.derive": ["TIERS", "TierAssignment", "best_two_changepoints", "derive", "derive_tiers",
                        "hermes_fixed_tiers", "measured_tiers", "policy_spec", "role_tiers"],
    "analysis.errors": ["StudyError"],
    "analysis.metrics": ["age_profile", "anchor_structure", "entropy_summary", "recency_index", "temporal_bias"],
    "analysis.figures": ["figure_data", "write_figures"],
    "analysis.validate": ["ValidateConfig", "run_validation", "score_recording"],
})
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
__all__ = sorted(_EXPORTS)
