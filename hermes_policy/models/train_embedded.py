"""Moved to :mod:`hermes_policy.training`; this module re-exports its names for existing imports.

The learning-curve plot (``read_curve``, ``plot_curve``) moved to :mod:`analysis.training_curves`
and is not re-exported here: the runtime does not import ``analysis``.
"""

from hermes_policy.training import *  # noqa: F403  (the shim re-exports the package)
from hermes_policy.training import __all__  # noqa: F401  (the same public names as the package)
from hermes_policy.training.samples import _branch, _clip  # noqa: F401  (private, but tests import them from here)
