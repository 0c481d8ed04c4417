"""Bounds on what a user can hand hermes-lab, stated once: a value past them is a typo, not an experiment.

Each limit is checked where the value enters (a CLI option, a spec, a dataset line) and its message
states the limit, so a bad input ends in one line instead of a process that blocks forever (a FIFO
given as a file), runs for days (a hundred million frames) or grows until the machine kills it (a
question of two megabytes tokenised into attention over millions of positions).
"""

from __future__ import annotations

import stat
from pathlib import Path

from hermes_policy.errors import HermesError

#: frames of one stream (a synthetic spec, a bench length): about six days at 2 fps
MAX_STREAM_FRAMES = 1_000_000
#: a question's (or an option's, or a prompt's) length in characters: about 2,500 tokens
MAX_QUESTION_CHARS = 10_000
#: a question's time in a stream, in seconds: one week
MAX_STREAM_SECONDS = 7 * 24 * 3600
#: a JSON or text file a user hands in (spec, device map, annotations, dataset, video list)
MAX_INPUT_BYTES = 1 << 30


def check_regular_file(path: str | Path, error: type[HermesError], what: str) -> Path:
    """``path`` if it is a regular file (links followed) of at most :data:`MAX_INPUT_BYTES`.

    A FIFO, socket or device is refused before it is opened: reading one blocks forever or never ends.
    """
    path = Path(path)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as e:
        raise error(f"{what} {path} cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(info.st_mode):
        raise error(f"{what} {path} is a folder, not a file")
    if not stat.S_ISREG(info.st_mode):
        kind = "a FIFO (named pipe)" if stat.S_ISFIFO(info.st_mode) else "a socket" if stat.S_ISSOCK(
            info.st_mode) else "a device" if stat.S_ISCHR(info.st_mode) or stat.S_ISBLK(info.st_mode) else \
            "not a regular file"
        raise error(f"{what} {path} is {kind}; give a regular file (hermes-lab does not read from pipes or devices)")
    if info.st_size > MAX_INPUT_BYTES:
        raise error(f"{what} {path} is {info.st_size / 2**30:.1f} GiB; at most {MAX_INPUT_BYTES >> 30} GiB is read")
    return path


def check_text_length(text: str, error: type[HermesError], what: str) -> str:
    """``text`` if it has at most :data:`MAX_QUESTION_CHARS` characters."""
    if len(text) > MAX_QUESTION_CHARS:
        raise error(f"{what} has {len(text):,} characters; at most {MAX_QUESTION_CHARS:,} are accepted")
    return text


def check_frame_count(frames: int, error: type[HermesError], what: str) -> int:
    """``frames`` if it is at most :data:`MAX_STREAM_FRAMES`."""
    if frames > MAX_STREAM_FRAMES:
        raise error(f"{what}: {frames:,} frames is past the limit of {MAX_STREAM_FRAMES:,} frames per stream "
                    f"(about {MAX_STREAM_FRAMES / 2 / 86400:.0f} days at 2 fps)")
    return frames


__all__ = ["MAX_INPUT_BYTES", "MAX_QUESTION_CHARS", "MAX_STREAM_FRAMES", "MAX_STREAM_SECONDS", "check_frame_count",
           "check_regular_file", "check_text_length"]
