"""Opening a study's recording from a user-given directory, with one readable error."""

from __future__ import annotations

from pathlib import Path

from analysis.errors import StudyError
from probes.recording import Recording, RecordingError


def load_study(directory: Path) -> Recording:
    """The recording in ``directory``, with format problems turned into :class:`StudyError`."""
    if not directory.exists():
        raise StudyError(f"study directory {directory} does not exist; pass the directory a probe recorded into")
    if not directory.is_dir():
        raise StudyError(f"--study takes the directory a probe recorded into, not a file: {directory}")
    try:
        return Recording.load(directory)
    except RecordingError as e:
        raise StudyError(str(e)) from None
