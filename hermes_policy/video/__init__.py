"""Video input: decoded files, synthetic scenes with ground truth, and mp4 output.

Every source yields :class:`Frame` objects (``(H, W, 3)`` uint8 RGB plus index
and time) through the :class:`VideoSource` protocol; :func:`open_video` picks
the right source for a path or a ``synthetic:seed=S,frames=N`` spec.
"""

from hermes_policy.video.decode import FileVideo
from hermes_policy.video.encode import write_mp4
from hermes_policy.video.events import Event, EventLog, FrameState, ObjectState
from hermes_policy.video.frames import Frame, VideoSource
from hermes_policy.video.samples import sample_video_path
from hermes_policy.video.spec import SYNTHETIC_FORM, open_video, open_videos, parse_frame_size, parse_synthetic_spec
from hermes_policy.video.synthetic import SceneParams, SyntheticVideo

__all__ = [
    "SYNTHETIC_FORM",
    "Event",
    "EventLog",
    "FileVideo",
    "Frame",
    "FrameState",
    "ObjectState",
    "SceneParams",
    "SyntheticVideo",
    "VideoSource",
    "open_video",
    "open_videos",
    "parse_frame_size",
    "parse_synthetic_spec",
    "sample_video_path",
    "write_mp4",
]
