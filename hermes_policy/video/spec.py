"""Turn a user-supplied video spec (a file path or a synthetic spec) into a VideoSource."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypedDict, TypeVar

from tqdm import tqdm

from hermes_policy.errors import VideoError
from hermes_policy.inputs import check_frame_count, check_regular_file
from hermes_policy.video.decode import FileVideo
from hermes_policy.video.frames import VideoSource, check_fps, check_max_frames
from hermes_policy.video.synthetic import SyntheticVideo

SYNTHETIC_PREFIX = "synthetic:"
SYNTHETIC_FORM = "synthetic:seed=S,frames=N[,fps=F,size=WxH]"
DEFAULT_FPS = 2.0
DEFAULT_SIZE = (128, 128)
_SYNTHETIC_HELP = (
    f"expected {SYNTHETIC_FORM} "
    "(seed: integer >= 0; frames: integer > 0; fps: number > 0, default 2; "
    "size: WIDTHxHEIGHT, default 128x128)"
)
_KEYS = ("seed", "frames", "fps", "size")
#: largest frame side accepted (8K); beyond it a typo, not a video
MAX_FRAME_SIDE = 8192
_REQUIRED = ("seed", "frames")

T = TypeVar("T")


class SyntheticSpec(TypedDict):
    """Parsed synthetic spec; its keys are SyntheticVideo's keyword arguments."""

    seed: int
    frames: int
    fps: float
    width: int
    height: int


def open_video(
    spec: str | os.PathLike[str],
    fps: float | None = None,
    max_frames: int | None = None,
    size: tuple[int, int] | None = None,
) -> VideoSource:
    """Open a file path or a ``synthetic:...`` spec as a VideoSource.

    ``fps`` is the sampling rate: for files it resamples (None = native rate),
    for synthetic specs it overrides the spec's own ``fps``. ``max_frames``
    caps how many frames the source yields. ``size`` (width, height) scales a
    file's frames to that size, or renders a synthetic scene at it (None: the
    video's own size); the model's processor then resizes as it always does.
    """
    text = os.fspath(spec)
    if size is not None:
        size = check_frame_size(size, text)
    if not text.startswith(SYNTHETIC_PREFIX):
        if os.path.exists(text):  # a missing one is FileVideo's to name; a FIFO would block PyAV forever
            check_regular_file(text, VideoError, "video")
        return FileVideo(text, fps=fps, max_frames=max_frames, size=size)
    params = parse_synthetic_spec(text)
    if fps is not None:
        params["fps"] = check_fps(fps, text)
    if size is not None:
        params["width"], params["height"] = size
    cap = check_max_frames(max_frames, text)
    if cap is not None:
        # Safe to truncate: a shorter synthetic video is a prefix of the longer one.
        params["frames"] = min(params["frames"], cap)
    return SyntheticVideo(**params)


def open_videos(specs: Sequence[str | os.PathLike[str]], fps: float | None = None) -> list[VideoSource]:
    """Open every video of a list (a file is probed, a synthetic spec parsed): VideoError names the first that
    cannot be read, so a command checks all of them before it loads a model. A bar when there are many."""
    bar = tqdm(specs, unit="video", desc="opening videos", file=sys.stderr, leave=False, disable=len(specs) < 20)
    return [open_video(spec, fps=fps) for spec in bar]


def parse_synthetic_spec(spec: str) -> SyntheticSpec:
    """Parse ``synthetic:seed=S,frames=N[,fps=F,size=WxH]``; raise VideoError on any mistake."""
    if not spec.startswith(SYNTHETIC_PREFIX):
        raise _bad(spec, f"must start with {SYNTHETIC_PREFIX!r}")
    values: dict[str, str] = {}
    for item in spec[len(SYNTHETIC_PREFIX) :].split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise _bad(spec, f"{item.strip()!r} is not key=value")
        if key not in _KEYS:
            raise _bad(spec, f"unknown key {key!r}")
        if key in values:
            raise _bad(spec, f"key {key!r} given twice")
        values[key] = value
    missing = [key for key in _REQUIRED if key not in values]
    if missing:
        raise _bad(spec, f"missing {', '.join(missing)}")

    def parsed(key: str, parse: Callable[[str], T]) -> T:
        try:
            return parse(values[key])
        except ValueError as exc:  # int('x'), float('abc') and our own range checks
            raise _bad(spec, f"{key}={values[key]!r}: {exc}") from None

    width, height = parsed("size", _parse_size) if "size" in values else DEFAULT_SIZE
    return SyntheticSpec(
        seed=parsed("seed", lambda v: _parse_int(v, minimum=0)),
        frames=parsed("frames", lambda v: check_frame_count(_parse_int(v, minimum=1), ValueError, "frames")),
        fps=parsed("fps", _parse_fps) if "fps" in values else DEFAULT_FPS,
        width=width,
        height=height,
    )


def parse_frame_size(text: str) -> tuple[int, int]:
    """``"448x448"`` -> (448, 448); raise VideoError with the expected form on anything else."""
    try:
        width, height = _parse_size(text.strip())
        if max(width, height) > MAX_FRAME_SIDE:
            raise ValueError(f"each side must be at most {MAX_FRAME_SIDE} pixels")
        return width, height
    except ValueError as exc:
        raise VideoError(f"bad frame size {text!r}: {exc}; expected WIDTHxHEIGHT, e.g. 448x448") from None


def check_frame_size(size: tuple[int, int], context: str) -> tuple[int, int]:
    """A (width, height) in pixels, each in [1, MAX_FRAME_SIDE]; VideoError otherwise."""
    try:
        width, height = (int(v) for v in size)
    except (TypeError, ValueError):
        raise VideoError(f"{context}: frame size must be (width, height), got {size!r}") from None
    if not (0 < width <= MAX_FRAME_SIDE and 0 < height <= MAX_FRAME_SIDE):
        raise VideoError(f"{context}: frame size {width}x{height} is out of range; each side must be "
                         f"1..{MAX_FRAME_SIDE} pixels")
    return width, height


def _bad(spec: str, reason: str) -> VideoError:
    return VideoError(f"bad synthetic spec {spec!r}: {reason}; {_SYNTHETIC_HELP}")


def _parse_int(value: str, minimum: int) -> int:
    number = int(value)  # ValueError for '1.5', 'abc'
    if number < minimum:
        raise ValueError(f"must be >= {minimum}")
    return number


def _parse_fps(value: str) -> float:
    fps = float(value)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError("must be a finite number > 0")
    return fps


def _parse_size(value: str) -> tuple[int, int]:
    width, sep, height = value.lower().partition("x")
    if not sep:
        raise ValueError("must look like 128x128")
    return _parse_int(width, minimum=1), _parse_int(height, minimum=1)
