"""The frame type every video source yields, and the source protocol itself."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from hermes_policy.errors import VideoError
from hermes_policy.video.events import EventLog


# eq=False: the dataclass-generated __eq__ would compare ndarrays with ``==``,
# whose element-wise result has no truth value. Compare ``image`` explicitly.
@dataclass(frozen=True, eq=False)
class Frame:
    """One sampled frame of a video stream.

    Attributes:
        index: 0-based position in the *sampled* stream (not the file's frame number).
        time: seconds from the start of the stream at which this image was shown.
        image: ``(H, W, 3)`` uint8 RGB array.
    """

    index: int
    time: float
    image: np.ndarray


@runtime_checkable
class VideoSource(Protocol):
    """Anything that yields :class:`Frame` objects at a known sampling rate.

    Attributes:
        name: the file path or spec string the source was opened from.
        fps: sampling rate of the yielded frames, in frames per second.
        num_frames: how many frames :meth:`frames` is expected to yield, or None
            when the container does not say.
        events: ground truth for synthetic sources; None for real videos.
    """

    name: str
    fps: float
    num_frames: int | None
    events: EventLog | None

    def frames(self) -> Iterator[Frame]:
        """Yield frames lazily, in time order; each call restarts from the beginning."""
        ...


#: sampling rates accepted, in frames per second: one frame in 1000 s up to high-speed footage; beyond them
#: frame times overflow or underflow the float32 tensors positions are computed in
FPS_RANGE = (1e-3, 1e3)


def check_fps(fps: float, context: str) -> float:
    """Return ``fps`` as a float, or raise VideoError naming ``context`` if it is not in :data:`FPS_RANGE`."""
    low, high = FPS_RANGE
    # bool is an int subclass; fps=True is always a mistake.
    if isinstance(fps, bool) or not isinstance(fps, (int, float)):
        raise VideoError(f"{context}: fps must be a number in [{low:g}, {high:g}], got {fps!r}")
    if not (math.isfinite(fps) and low <= fps <= high):
        raise VideoError(f"{context}: fps must be a number in [{low:g}, {high:g}] frames per second, got {fps!r}")
    return float(fps)


def check_max_frames(max_frames: int | None, context: str) -> int | None:
    """Return ``max_frames`` unchanged, or raise VideoError if it is not None or an int >= 1."""
    if max_frames is None:
        return None
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise VideoError(f"{context}: max_frames must be an integer >= 1, got {max_frames!r}")
    return max_frames
