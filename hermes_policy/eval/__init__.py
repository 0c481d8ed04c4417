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

from hermes_policy.lazy import exports_from, lazy_exports

_EXPORTS = exports_from({
    "hermes_policy.eval.budgets": ["PolicyFactory", "PolicyRecipe", "StreamInfo", "check_policy", "fit_budget",
                                   "format_budget", "open_item", "stream_info", "takes_budget"],
    "hermes_policy.eval.errors": ["EvalError"],
    "hermes_policy.eval.harness": ["REFERENCE_LABEL", "Asked", "EvalPlan", "UnitRows", "evaluate", "plan",
                                   "run_video"],
    "hermes_policy.eval.report": ["eval_table", "format_table"],
    "hermes_policy.eval.results": ["CONFIG_FORMAT", "RESULTS_FORMAT", "VERSION", "EvalResult", "EvalRow",
                                   "attach_fidelity", "option_kl", "option_probs"],
    "hermes_policy.eval.scoring": ["SCORERS", "ClozeScorer", "LetterScorer", "Scored", "Scorer",
                                   "WordLetterScorer", "letter_token_ids", "score_letters", "scorer_for"],
    "hermes_policy.eval.sweep": ["CONFIG_FILE", "PARTIAL_FILE", "RESULTS_FILE", "ROWS_FILE", "EvalDir",
                                 "build_recipes", "data_fingerprint", "parse_list", "resume_note"],
})
__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
__all__ = sorted(_EXPORTS)
