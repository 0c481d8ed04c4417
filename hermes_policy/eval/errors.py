"""The evaluation's own error, apart from the modules that raise it so that none imports another for it."""

from __future__ import annotations

from hermes_policy.errors import HermesError


class EvalError(HermesError):
    """An evaluation that cannot run as configured (no questions, a policy without a budget, ...)."""


__all__ = ["EvalError"]
