"""Moved to :mod:`hermes_policy.eval.sweep`; this module re-exports its names for existing imports."""

from __future__ import annotations

from hermes_policy.eval.sweep import (
    CONFIG_FILE,
    PARTIAL_FILE,
    RESULTS_FILE,
    ROWS_FILE,
    EvalDir,
    build_recipes,
    data_fingerprint,
    parse_list,
    resume_note,
)

__all__ = [
    "CONFIG_FILE",
    "PARTIAL_FILE",
    "RESULTS_FILE",
    "ROWS_FILE",
    "EvalDir",
    "build_recipes",
    "data_fingerprint",
    "parse_list",
    "resume_note",
]
