"""Moved to :mod:`hermes_policy.eval.sweep`; this module re-exports its names for existing imports."""

from __future__ import annotations

from hermes_policy.eval.sweep import *  # noqa: F403  (the shim re-exports the module)
from hermes_policy.eval.sweep import __all__  # noqa: F401
