"""Write any VideoSource to an H.264 mp4 file."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from hermes_policy.atomic import atomic_path
from hermes_policy.errors import VideoError
from hermes_policy.video.frames import VideoSource, check_fps


def write_mp4(
    source: VideoSource,
    path: str | os.PathLike[str],
    fps: float | None = None,
    *,
    crf: int = 18,
) -> Path:
    """Encode every frame of ``source`` to ``path`` (H.264, yuv420p) and return the path.

    Frames are re-timed at a constant ``fps`` (default ``source.fps``); their own
    timestamps are not kept. All frames must share one even width and height,
    because yuv420p stores colour at half resolution. ``crf`` is x264's quality
    knob (lower is better; 18 is visually near-lossless).

    The file appears atomically: it is written to a temporary file in the same
    directory and renamed into place, so readers never see a half-written mp4
    and a failed write leaves any existing file untouched.
    """
    path = Path(path)
    rate = check_fps(fps if fps is not None else source.fps, str(path))
    with atomic_path(path, VideoError) as tmp:
        _encode(source, str(tmp), rate, crf, label=str(path))
    return path


def _encode(source: VideoSource, tmp_name: str, rate: float, crf: int, label: str) -> None:
    # format= is required: the temporary name does not end in .mp4.
    # faststart puts the index first, so truncated copies still decode up to the cut.
    with av.open(
        tmp_name, mode="w", format="mp4", container_options={"movflags": "+faststart"}
    ) as out:
        stream = None
        for frame in source.frames():
            image = frame.image
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise VideoError(
                    f"cannot write {label}: frame {frame.index} of {source.name} is "
                    f"{image.dtype} {image.shape}, expected (H, W, 3) uint8"
                )
            height, width = image.shape[:2]
            if stream is None:
                if width % 2 or height % 2:
                    raise VideoError(
                        f"cannot write {label}: H.264/yuv420p needs even width and height, "
                        f"got {width}x{height}"
                    )
                # 29.97 must become 30000/1001 exactly, not a float's 53-bit fraction.
                stream = out.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
                stream.width, stream.height = width, height
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            elif (height, width) != (stream.height, stream.width):
                raise VideoError(
                    f"cannot write {label}: frame {frame.index} is {width}x{height}, "
                    f"earlier frames are {stream.width}x{stream.height}"
                )
            out.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        if stream is None:
            raise VideoError(f"cannot write {label}: {source.name} yielded no frames")
        out.mux(stream.encode(None))  # flush frames the encoder is still holding
