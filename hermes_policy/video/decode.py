"""Decode video files lazily with PyAV, resampled to a target frame rate."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
from av.container import InputContainer
from av.video.stream import VideoStream

from hermes_policy.errors import VideoError
from hermes_policy.video.events import EventLog
from hermes_policy.video.frames import Frame, check_fps, check_max_frames

# Timestamps are rationals rounded to floats; treat anything this close as equal
# so a frame exactly on a target time is not skipped by rounding.
_EPS = 1e-6

# A truncated mp4 often just ends early instead of failing in the decoder, so the
# decoded count is checked against the container's frame count. Edit lists and
# decoder delay can legitimately lose a frame at either end; allow that much.
_TRUNCATION_SLACK = 2


@dataclass(frozen=True)
class _StreamInfo:
    """What probing a file tells us about its first video stream."""

    width: int
    height: int
    native_fps: float | None  # None when the container gives no rate
    duration: float | None  # seconds, None when unknown
    frame_count: int | None  # None when unknown


class FileVideo:
    """A video file decoded lazily and sampled at ``fps``.

    Construction probes the file (opens it, finds a video stream, decodes the
    first frame, closes it again), so a missing, empty, corrupt or audio-only
    file fails here with a VideoError naming it. Each :meth:`frames` call reopens
    the file and decodes frame by frame; nothing is held in memory.

    Sampling: with ``fps`` set, the targets are ``t_k = k / fps`` and each target
    takes the first decoded frame shown at or after it. A decoded frame is never
    yielded twice, so asking for more than the native rate gives native frames.
    With ``fps=None`` every decoded frame is yielded and ``fps`` is the native rate.
    Frame times are the decoded frames' own timestamps, measured from the first
    frame, so they may trail the targets by up to one native frame interval.

    Attributes:
        path, name: the file, as a Path and as given.
        fps: sampling rate of the yielded frames.
        num_frames: expected count from container metadata, None if unknown.
        width, height: size of the yielded frames in pixels (``size`` when given, else the file's).
        native_fps, duration: from the container, None where it does not say.
        events: always None (real videos have no ground truth).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fps: float | None = None,
        max_frames: int | None = None,
        size: tuple[int, int] | None = None,
    ) -> None:
        self.path = Path(path)
        self.name = str(path)
        requested = None if fps is None else check_fps(fps, self.name)
        self.max_frames = check_max_frames(max_frames, self.name)
        info = _probe(self.path)
        self.fps: float
        if requested is not None:
            self.fps = requested
        elif info.native_fps is not None:
            self.fps = info.native_fps
        else:
            raise VideoError(
                f"{self.name}: the file does not state its frame rate; pass fps explicitly"
            )
        self._resample = requested is not None
        #: output size when frames are scaled (PyAV's swscale, bilinear), else None
        self.size = size
        self.width, self.height = size if size is not None else (info.width, info.height)
        self.native_fps = info.native_fps
        self.duration = info.duration
        self._frame_count = info.frame_count
        self.num_frames: int | None = _expected_count(info, requested, self.max_frames)
        self.events: EventLog | None = None

    def frames(self) -> Iterator[Frame]:
        """Yield sampled frames; raises VideoError if the file breaks mid-way."""
        with _open(self.path) as container:
            stream = _video_stream(container, self.path)
            # Frame-threaded decoding: several times faster on multi-core machines.
            stream.thread_type = "AUTO"
            yield from self._sample(container, stream)

    def _sample(self, container: InputContainer, stream: VideoStream) -> Iterator[Frame]:
        decoder = container.decode(stream)
        decoded = 0  # frames decoded so far (the file's own frame numbers)
        emitted = 0  # frames yielded so far (Frame.index)
        origin: float | None = None
        next_target = 0.0
        last_time = 0.0
        while self.max_frames is None or emitted < self.max_frames:
            try:
                av_frame = next(decoder)
            except StopIteration:
                self._check_complete(decoded, last_time)
                return
            except (av.FFmpegError, OSError) as exc:
                # Do not end the stream quietly: a short video would look complete.
                raise VideoError(
                    f"{self.name}: decoding failed at frame {decoded} (after t={last_time:.2f}s); "
                    f"the file is truncated or corrupt: {exc}"
                ) from exc
            raw_time = self._frame_time(av_frame, decoded)
            decoded += 1
            if origin is None:
                origin = raw_time  # streams may start at t > 0; ours start at 0
            last_time = raw_time - origin
            if self._resample:
                if last_time + _EPS < next_target:
                    continue
                # Jump past every target this frame satisfied (computed from k,
                # not accumulated, so float error cannot drift over long videos).
                next_target = (math.floor(last_time * self.fps + _EPS) + 1) / self.fps
            # Only converted once chosen: the RGB conversion costs more than decoding.
            if self.size is None:
                image = av_frame.to_ndarray(format="rgb24")
            else:
                image = av_frame.to_ndarray(format="rgb24", width=self.size[0], height=self.size[1])
            yield Frame(index=emitted, time=last_time, image=image)
            emitted += 1

    def _check_complete(self, decoded: int, last_time: float) -> None:
        """Raise if decoding ended well before the frame count the container promised."""
        if self._frame_count is not None and decoded < self._frame_count - _TRUNCATION_SLACK:
            raise VideoError(
                f"{self.name}: decoding stopped at frame {decoded} (t={last_time:.2f}s) but the "
                f"container lists {self._frame_count} frames; the file is truncated or corrupt"
            )

    def _frame_time(self, av_frame: av.VideoFrame, decoded: int) -> float:
        if av_frame.time is not None:
            return float(av_frame.time)
        # No timestamp (e.g. raw elementary streams): assume a constant native rate.
        if self.native_fps is None:
            raise VideoError(
                f"{self.name}: frame {decoded} has no timestamp and the frame rate is unknown"
            )
        return decoded / self.native_fps

    def __repr__(self) -> str:
        return f"FileVideo({self.name!r}, fps={self.fps:g}, max_frames={self.max_frames})"


def _open(path: Path) -> InputContainer:
    """Open ``path`` for reading, turning every failure into a VideoError naming it."""
    # Checked before PyAV, whose messages for these cases are cryptic.
    if not path.exists():
        raise VideoError(f"video file not found: {path}")
    if path.is_dir():
        raise VideoError(f"{path} is a directory, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(f"{path} is empty (0 bytes)")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError) as exc:
        raise VideoError(
            f"{path} is not a readable video (corrupt, truncated or unsupported): {exc}"
        ) from exc


def _video_stream(container: InputContainer, path: Path) -> VideoStream:
    if not container.streams.video:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "none"
        raise VideoError(f"{path} has no video stream (streams found: {kinds})")
    return container.streams.video[0]


def _probe(path: Path) -> _StreamInfo:
    """Read metadata and decode the first frame, so unusable files fail early."""
    with _open(path) as container:
        stream = _video_stream(container, path)
        try:
            first = next(container.decode(stream), None)
        except (av.FFmpegError, OSError) as exc:
            raise VideoError(
                f"{path}: cannot decode the first frame (corrupt or truncated): {exc}"
            ) from exc
        if first is None:
            raise VideoError(f"{path}: no frame could be decoded (the video is empty or truncated)")
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration is not None and stream.time_base is not None:
            duration: float | None = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base  # microseconds
        else:
            duration = None
        return _StreamInfo(
            width=first.width,
            height=first.height,
            native_fps=float(rate) if rate else None,
            duration=duration,
            frame_count=stream.frames or None,  # 0 means "not recorded"
        )


def _expected_count(info: _StreamInfo, fps: float | None, max_frames: int | None) -> int | None:
    """How many frames sampling should yield, judged from metadata alone."""
    if fps is None:
        count = info.frame_count
        if count is None and info.duration is not None and info.native_fps is not None:
            count = round(info.duration * info.native_fps)
    elif info.duration is None:
        count = None
    else:
        # Targets k / fps inside [0, duration); never more than the decoded frames.
        count = math.ceil(info.duration * fps - _EPS)
        if info.frame_count is not None:
            count = min(count, info.frame_count)
    if count is None or max_frames is None:
        return count
    return min(count, max_frames)
