"""Errors that hermes-lab reports to users.

Every error a user can cause (bad video, unknown model, impossible budget, a
question before any frame) is a :class:`HermesError`. The CLI prints its
message on one line and exits with status 2; nothing else is caught.
"""

from __future__ import annotations


class HermesError(Exception):
    """Base class for user-facing errors: the message alone must explain the fix."""


class VideoError(HermesError):
    """A video could not be opened, decoded or parsed (names the file or spec)."""


class ModelError(HermesError):
    """An unknown model name or an unsupported architecture."""


class BudgetError(HermesError):
    """A memory budget that cannot be honoured."""


class SessionError(HermesError):
    """A streaming-session call made in the wrong state or with bad arguments."""


class PolicyError(HermesError):
    """An unknown policy, or a policy configuration that does not validate."""


class OptionError(HermesError):
    """A command-line option's value outside the range it takes (the message states the range)."""
