"""Evaluation: streaming multiple-choice QA accuracy, TTFT, memory and fidelity to the full cache, per policy.

* :mod:`~hermes_policy.eval.budgets`: :class:`PolicyRecipe`, a policy sized per video (``budget_ratio``).
* :mod:`~hermes_policy.eval.scoring`: how a question's options are scored against the cache.
* :mod:`~hermes_policy.eval.harness`: :func:`evaluate`, which streams every video under every run and
  asks its questions on time (the module docstring says what the rows measure).
* :mod:`~hermes_policy.eval.results`: :class:`EvalResult`, its rows, summaries and files;
  :mod:`~hermes_policy.eval.report` its table.
* :mod:`~hermes_policy.eval.sweep`: policy x budget sweeps and the resumable output folder;
  :mod:`~hermes_policy.eval.cli` the ``hermes-lab eval`` command.

The names below load on first use (PEP 562), as in :mod:`hermes_policy`, so registering the command
does not load the harness.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

#: public name -> the submodule that defines it
_EXPORTS = {
    **dict.fromkeys(
        ["PolicyFactory", "PolicyRecipe", "StreamInfo", "check_policy", "fit_budget", "format_budget",
         "open_item", "stream_info", "takes_budget"], "budgets"),
    "EvalError": "errors",
    **dict.fromkeys(["REFERENCE_LABEL", "Asked", "EvalPlan", "UnitRows", "evaluate", "plan", "run_video"],
                    "harness"),
    **dict.fromkeys(["eval_table", "format_table"], "report"),
    **dict.fromkeys(["CONFIG_FORMAT", "RESULTS_FORMAT", "VERSION", "EvalResult", "EvalRow", "attach_fidelity",
                     "option_kl", "option_probs"], "results"),
    **dict.fromkeys(["SCORERS", "ClozeScorer", "LetterScorer", "Scored", "Scorer", "WordLetterScorer",
                     "letter_token_ids", "scorer_for"], "scoring"),
    **dict.fromkeys(["CONFIG_FILE", "PARTIAL_FILE", "RESULTS_FILE", "ROWS_FILE", "EvalDir", "build_recipes",
                     "data_fingerprint", "parse_list", "resume_note"], "sweep"),
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hermes_policy.eval' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"hermes_policy.eval.{module}"), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from hermes_policy.eval.budgets import (
        PolicyFactory,
        PolicyRecipe,
        StreamInfo,
        check_policy,
        fit_budget,
        format_budget,
        open_item,
        stream_info,
        takes_budget,
    )
    from hermes_policy.eval.errors import EvalError
    from hermes_policy.eval.harness import REFERENCE_LABEL, Asked, EvalPlan, UnitRows, evaluate, plan, run_video
    from hermes_policy.eval.report import eval_table, format_table
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
        letter_token_ids,
        scorer_for,
    )
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
    "CONFIG_FORMAT",
    "PARTIAL_FILE",
    "REFERENCE_LABEL",
    "RESULTS_FILE",
    "RESULTS_FORMAT",
    "ROWS_FILE",
    "SCORERS",
    "VERSION",
    "Asked",
    "ClozeScorer",
    "EvalDir",
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
    "attach_fidelity",
    "build_recipes",
    "check_policy",
    "data_fingerprint",
    "eval_table",
    "evaluate",
    "fit_budget",
    "format_budget",
    "format_table",
    "letter_token_ids",
    "open_item",
    "option_kl",
    "option_probs",
    "parse_list",
    "plan",
    "resume_note",
    "run_video",
    "scorer_for",
    "stream_info",
    "takes_budget",
]
