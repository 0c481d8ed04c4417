"""Moved to :mod:`hermes_policy.eval`; this module re-exports its names for existing imports."""

from __future__ import annotations

from hermes_policy.eval.budgets import (
    PolicyFactory,
    PolicyRecipe,
    StreamInfo,
    fit_budget,
    format_budget,
    open_item,
    stream_info,
    takes_budget,
)
from hermes_policy.eval.errors import EvalError
from hermes_policy.eval.harness import REFERENCE_LABEL, Asked, EvalPlan, UnitRows, evaluate, plan, run_video
from hermes_policy.eval.results import (
    CONFIG_FORMAT,
    RESULTS_FORMAT,
    VERSION,
    EvalResult,
    EvalRow,
    attach_fidelity,
    option_kl,
    option_probs,
)
from hermes_policy.eval.scoring import (
    SCORERS,
    ClozeScorer,
    LetterScorer,
    Scored,
    Scorer,
    WordLetterScorer,
    score_letters,
    letter_token_ids,
    scorer_for,
)
from hermes_policy.timeline import TIME_TOLERANCE

__all__ = [
    "CONFIG_FORMAT",
    "REFERENCE_LABEL",
    "RESULTS_FORMAT",
    "SCORERS",
    "TIME_TOLERANCE",
    "VERSION",
    "Asked",
    "ClozeScorer",
    "EvalError",
    "EvalPlan",
    "EvalResult",
    "EvalRow",
    "LetterScorer",
    "PolicyFactory",
    "PolicyRecipe",
    "Scored",
    "Scorer",
    "StreamInfo",
    "UnitRows",
    "WordLetterScorer",
    "score_letters",
    "attach_fidelity",
    "evaluate",
    "fit_budget",
    "format_budget",
    "letter_token_ids",
    "open_item",
    "option_kl",
    "option_probs",
    "plan",
    "run_video",
    "scorer_for",
    "stream_info",
    "takes_budget",
]
