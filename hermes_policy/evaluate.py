"""Moved to :mod:`hermes_policy.eval`; this module re-exports its names for existing imports."""

from __future__ import annotations

from hermes_policy.eval import *  # noqa: F403  (the shim re-exports the package)
from hermes_policy.eval import __all__ as _package_names
from hermes_policy.timeline import TIME_TOLERANCE  # noqa: F401  (was importable from here)

__all__ = [*_package_names, "TIME_TOLERANCE"]
