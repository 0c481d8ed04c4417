"""Stream time: when a timed question is asked relative to the frames around it.

One rule, used by ``stream``, ``eval``, training and the dashboard alike, so a
question at ``t`` sees the same frames whichever command asks it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Literal, TypeVar

if TYPE_CHECKING:
    from hermes_policy.video import Frame

T = TypeVar("T")
#: seconds: a frame this close after a question's time still counts as shown by then
#: (container timestamps are rounded)
TIME_TOLERANCE = 1e-3


def interleave(
    frames: Iterable[Frame], questions: Sequence[T], time: Callable[[T], float]
) -> Iterator[tuple[Literal["frame", "ask"], Frame | T]]:
    """Frames and timed questions in stream order: the one rule every command asks by.

    A question at ``t`` comes before the first frame whose time is later than
    ``t`` (so every frame shown at or before ``t`` is in); questions past the
    end of the stream come after its last frame.
    """
    pending = sorted(questions, key=time)
    for frame in frames:
        while pending and frame.time > time(pending[0]) + TIME_TOLERANCE:
            yield "ask", pending.pop(0)
        yield "frame", frame
    for question in pending:
        yield "ask", question
