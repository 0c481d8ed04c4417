"""The study capture loop: stream a video with the full cache and record attention after every chunk.

The study measures the model's own attention, so it streams under the
``full`` policy (nothing evicted) and, after each chunk, runs the HERMES
pseudo-queries against the cache (phase ``probe``). With ``newest-frame`` it
also records the ingest forward's rows for the newest frame.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from tqdm import tqdm

import hermes_policy
from hermes_policy.errors import SessionError
from hermes_policy.models.base import ModelAdapter
from hermes_policy.policies import FullPolicy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import Frame, VideoSource
from probes.observer import PSEUDO_QUERIES, AttentionProbe, attached
from probes.recording import Recording

#: The HERMES pseudo-queries, in our words: one about now, one about the whole stream, one both.
PSEUDO_PROMPTS = {
    "local": "Describe the current scene in detail.",
    "global": "Summarise everything that has happened in the video so far.",
    "mixed": "Describe the current scene in detail and summarise what has happened so far.",
}

QuerySelection = Literal["pseudo", "newest-frame", "both"]


@dataclass
class StudyConfig:
    """What to capture.

    Attributes:
        queries: ``pseudo`` (local/global/mixed), ``newest-frame``, or ``both``.
        chunk_frames: frames per ingest chunk (one recording step per chunk).
        raw_steps: keep raw attention rows for the first this-many steps (bounded heatmaps).
    """

    queries: QuerySelection = "pseudo"
    chunk_frames: int = 4
    raw_steps: int = 0

    def __post_init__(self) -> None:
        if self.queries not in ("pseudo", "newest-frame", "both"):
            raise SessionError(f"queries must be pseudo, newest-frame or both, got {self.queries!r}")
        if self.chunk_frames < 1:
            raise SessionError("chunk_frames must be >= 1")
        if not 0 <= self.raw_steps <= 64:
            raise SessionError("raw_steps must be between 0 and 64 (raw rows are kept in memory)")

    @property
    def query_kinds(self) -> list[str]:
        kinds: list[str] = []
        if self.queries in ("pseudo", "both"):
            kinds += PSEUDO_QUERIES
        if self.queries in ("newest-frame", "both"):
            kinds.append("newest-frame")
        return kinds


def _chunks(frames: Iterable[Frame], size: int) -> Iterable[list[Frame]]:
    chunk: list[Frame] = []
    for frame in frames:
        chunk.append(frame)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def capture(
    adapter: ModelAdapter, source: VideoSource, config: StudyConfig | None = None, progress: bool = True
) -> Recording:
    """Stream ``source`` into ``adapter`` and return the recording of its attention."""
    config = config or StudyConfig()
    session = StreamingSession(adapter, FullPolicy(), SessionConfig(chunk_frames=config.chunk_frames))
    probe: AttentionProbe | None = None
    pseudo = [q for q in config.query_kinds if q in PSEUDO_PROMPTS]
    started = time.perf_counter()
    bar = tqdm(total=source.num_frames, unit="frame", desc="study", file=sys.stderr, disable=not progress)
    with bar:
        for chunk in _chunks(source.frames(), session.chunk_frames):
            if probe is None:
                h, w = chunk[0].image.shape[:2]
                probe = AttentionProbe(
                    config.query_kinds, adapter.num_layers, adapter.num_heads, adapter.tokens_per_frame(h, w),
                    raw_steps=config.raw_steps,
                )
                observation = session.observing(probe, phases=probe.phases)
            probe.begin_step(session.frames_seen + len(chunk), chunk[-1].time)
            session.ingest(chunk)
            session.flush()
            if pseudo:
                session.pseudo_queries({name: PSEUDO_PROMPTS[name] for name in pseudo})
            bar.update(len(chunk))
    if probe is None:
        raise SessionError(f"the video {source.name} yielded no frames")
    observation.detach()
    return probe.recording(
        {
            "model": adapter.name,
            "model_info": adapter.describe(),
            "video": source.name,
            "fps": source.fps,
            "chunk_frames": session.chunk_frames,
            "query_kind": config.queries,
            "prompts": {q: PSEUDO_PROMPTS[q] for q in pseudo},
            "seconds": round(time.perf_counter() - started, 3),
            "hermes_lab_version": hermes_policy.__version__,
        }
    )


__all__ = ["PSEUDO_PROMPTS", "StudyConfig", "attached", "capture"]
