"""User-facing errors of the analysis package.

Everything a user can get wrong here (a directory that holds no recording, a
recording that lacks a quantity a metric needs, an unknown query kind or
figure format) is a :class:`StudyError`, a :class:`HermesError`, so the
``hermes-lab`` CLI prints it as one line instead of a traceback.
"""

from __future__ import annotations

from hermes_policy.errors import HermesError


class StudyError(HermesError):
    """A study (recording) that cannot be analysed as asked; the message says why and what to do."""
