"""The study capture loop: stream a video with the full cache and record attention after every chunk.

The study measures the model's own attention, so it streams under the
``full`` policy (nothing evicted) and, after each chunk, runs the HERMES
pseudo-queries against the cache (phase ``probe``). With ``newest-frame`` it
also records the ingest forward's rows for the newest frame.

A study over several videos (:class:`StudyDir`, :func:`run_study`) records each
video into ``OUT/videos/NNN/`` and then their aggregate into ``OUT/``
(:mod:`probes.aggregate`). Under ``torchrun`` the videos are split over the ranks
the way ``eval`` splits its units (:func:`hermes_policy.distributed.run_share`): balanced
by frames, failures recorded per rank, rank 0 waiting on the store's counters.
A rerun with the same videos and settings records only what is missing.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

import hermes_policy
from hermes_policy.atomic import atomic_write_json
from hermes_policy.distributed import LaunchEnv, Progress, collect_failures, run_share
from hermes_policy.errors import HermesError, SessionError
from hermes_policy.inputs import check_regular_file
from hermes_policy.jsonfile import read_json
from hermes_policy.models.base import ModelAdapter
from hermes_policy.outputs import check_output
from hermes_policy.policies import FullPolicy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import Frame, VideoSource, open_video, open_videos
from probes.aggregate import aggregate_dirs
from probes.observer import PSEUDO_QUERIES, AttentionProbe, attached
from probes.recording import META_FILE, Recording, RecordingError

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
                    raw_steps=config.raw_steps, patches_per_frame=adapter.patches_per_frame(h, w),
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
            "frame_size": [int(w), int(h)],
            "chunk_frames": session.chunk_frames,
            "query_kind": config.queries,
            "prompts": {q: PSEUDO_PROMPTS[q] for q in pseudo},
            "seconds": round(time.perf_counter() - started, 3),
            "hermes_lab_version": hermes_policy.__version__,
        }
    )


# --------------------------------------------------------------------------- many videos
DEFAULT_VIDEO = "synthetic:seed=1,frames=64"
STUDY_FILE = "study.json"
STUDY_FORMAT = "hermes-lab/study"


class StudyRunError(HermesError):
    """A study that cannot start or finish as asked (its video list, its output folder, failed videos)."""


def read_video_list(path: Path) -> list[str]:
    """Videos named in a text file: one path or ``synthetic:`` spec per line; blank lines and ``#`` lines skipped.

    Relative paths resolve against the file's own folder, so a list travels with its videos.
    """
    check_regular_file(path, StudyRunError, "--videos")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise StudyRunError(f"--videos {path} is not a UTF-8 text file") from None
    entries = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not entries:
        raise StudyRunError(f"--videos {path} lists no videos (one path or synthetic: spec per line)")
    return [e if e.startswith("synthetic:") or Path(e).is_absolute() else str(path.parent / e) for e in entries]


def resolve_videos(video: Sequence[str] | None, videos_file: Path | None) -> list[str]:
    """The study's videos, in order: the ``--video`` options or the ``--videos`` file (default: one synthetic)."""
    if video and videos_file is not None:
        raise StudyRunError("pass --video (repeatable) or --videos FILE, not both")
    if videos_file is not None:
        return read_video_list(videos_file)
    return list(video) if video else [DEFAULT_VIDEO]


def video_frames(videos: Sequence[str], fps: float | None) -> list[float]:
    """Open every video (a bad one fails here, before any model loads); each one's frames, for balancing.

    A container that does not say its frame count weighs 1.
    """
    return [float(source.num_frames or 1) for source in open_videos(videos, fps)]


def _as_json(value: Any) -> Any:
    """``value`` as it reads back from JSON (tuples become lists), so settings compare equal after a save."""
    return json.loads(json.dumps(value))


@dataclass
class StudyDir:
    """The output folder of a study: one recording (one video) or per-video recordings plus their aggregate.

    Layout with several videos: ``study.json`` (the settings and video list a rerun must match),
    ``videos/NNN/`` (one recording per video, NNN = 000, 001, ... in the order given),
    ``recording.*`` (the aggregate) and ``failures.rank{R}.json`` (videos that raised on rank R).
    With one video the folder is that video's recording, as it always was.

    Attributes:
        path: the ``--out`` folder.
        videos: video paths or ``synthetic:`` specs, in order.
        settings: what the recordings depend on besides the video (model, fps, queries, chunking).
    """

    path: Path
    videos: list[str]
    settings: dict[str, Any]

    @property
    def many(self) -> bool:
        return len(self.videos) > 1

    def recording_dir(self, index: int) -> Path:
        return self.path / "videos" / f"{index:03d}" if self.many else self.path

    def video_settings(self, index: int) -> dict[str, Any]:
        """What a video's recording stores as ``meta["study"]``, and what a rerun compares it with."""
        return _as_json({**self.settings, "video": self.videos[index]})

    def manifest(self) -> dict[str, Any]:
        return {"format": STUDY_FORMAT, "version": 1, "settings": _as_json({**self.settings, "videos": self.videos})}

    def failures_path(self, rank: int) -> Path:
        return self.path / f"failures.rank{rank}.json"

    def is_done(self, index: int) -> bool:
        """Whether video ``index`` has a complete recording made with these settings."""
        try:
            return Recording.read_meta(self.recording_dir(index)).get("study") == self.video_settings(index)
        except RecordingError:
            return False

    def _resumable(self) -> bool:
        if not self.many:
            return (self.path / META_FILE).exists() and self.is_done(0)
        try:
            return read_json(self.path / STUDY_FILE, StudyRunError, STUDY_FILE) == self.manifest()
        except StudyRunError:
            return False

    def check(self) -> None:
        """Refuse an ``--out`` that holds anything but a study of these videos with these settings (never
        overwrite it)."""
        check_output(self.path, False, StudyRunError, resumable=True)  # a rerun resumes; the rule is below
        # leftovers of an interrupted atomic write are ours, and harmless
        entries = [p for p in self.path.iterdir() if not p.name.endswith(".tmp")] if self.path.is_dir() else []
        if entries and not self._resumable():
            what = "this video" if not self.many else f"these {len(self.videos)} videos"
            raise StudyRunError(f"--out {self.path} is not empty and is not a study of {what} with these settings "
                                "(model, fps, queries, chunking); pass a new --out or remove it")

    def start(self) -> None:
        """Write ``study.json`` (rank 0, before any recording), so that a rerun can tell what this folder is."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self.many:
            atomic_write_json(self.path / STUDY_FILE, self.manifest(), StudyRunError)


def study_settings(model: str, fps: float | None, config: StudyConfig,
                   frame_size: tuple[int, int] | None = None) -> dict[str, Any]:
    settings = {"model": model, "fps": fps, "queries": config.queries, "chunk_frames": config.chunk_frames,
                "raw_steps": config.raw_steps}
    if frame_size is not None:  # only when given, so that studies recorded before --frame-size still resume
        settings["frame_size"] = list(frame_size)
    return settings


def open_study_video(study: StudyDir, index: int) -> VideoSource:
    """Video ``index`` as the study samples it (its fps and frame size)."""
    size = study.settings.get("frame_size")
    return open_video(study.videos[index], fps=study.settings.get("fps"), size=None if size is None else tuple(size))


def record_video(adapter: ModelAdapter, study: StudyDir, index: int, config: StudyConfig,
                 progress: bool = True) -> Recording:
    """Capture video ``index`` of the study and save it to its recording folder (each file atomically, JSON last)."""
    recording = capture(adapter, open_study_video(study, index), config, progress=progress)
    recording.meta["study"] = study.video_settings(index)
    recording.save(study.recording_dir(index))
    return recording


class _BarCounter:
    """What :func:`~hermes_policy.distributed.run_share` reports to, in one process: a tqdm bar."""

    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def unit_done(self) -> None:
        self.bar.update(1)


def run_study(env: LaunchEnv, study: StudyDir, adapter: ModelAdapter, config: StudyConfig,
              frames: Sequence[float], done: set[int], timeout: float, progress: bool = True) -> Recording | None:
    """Record the videos not yet ``done`` (this rank's share under a launch), then aggregate them on rank 0.

    Returns the aggregate (saved in ``study.path``) on rank 0, None on the other ranks.

    Raises:
        StudyRunError: (rank 0) some videos failed; they are named, the rest is saved for a rerun.
        DistributedError: (rank 0) a rank made no progress for ``timeout`` seconds.
    """
    units = [(video, i) for i, video in enumerate(study.videos)]
    finished = {u for u in units if u[1] in done}
    bar = tqdm(total=len(units), initial=len(finished), unit="video", file=sys.stderr, leave=False,
               desc=f"studying on {env.world_size} ranks" if env.distributed else "studying",
               disable=not (progress and env.is_main))

    def stream(unit: tuple[str, int]) -> None:
        # under a launch only rank 0's overall bar shows; one process also shows each video's frames
        record_video(adapter, study, unit[1], config, progress=progress and not env.distributed)

    def weight(unit: tuple[str, int]) -> float:
        return frames[unit[1]]

    with bar:
        if env.distributed:
            counter = Progress("hermes-lab/study/")
            run_share(env, study, units, finished, stream, weight, counter)
            counter.rank_done()
            if not env.is_main:
                return None
            counter.wait_for_ranks(env.world_size, timeout, on_tick=lambda n: bar.update(len(finished) + n - bar.n))
        else:
            run_share(env, study, units, finished, stream, weight, _BarCounter(bar))
    failures = collect_failures(study, env.world_size)
    if failures:
        named = ", ".join(f"{f['video_index']:03d} {f['run']} ({f['error']})" for f in failures)
        raise StudyRunError(f"{len(failures)} video(s) failed: {named}; the others are saved in {study.path} "
                            "(failures.rank*.json say why): rerun the same command to record only these")
    missing = [i for i in range(len(units)) if not study.is_done(i)]
    if missing:
        raise StudyRunError(f"{len(missing)} video(s) have no recording after every rank finished (first: "
                            f"{missing[0]:03d} {study.videos[missing[0]]}); rerun the same command to finish them")
    recording = aggregate_dirs([study.recording_dir(i) for i in range(len(units))], root=study.path,
                               progress=progress)
    recording.meta["study"] = _as_json({**study.settings, "videos": study.videos})
    recording.save(study.path)
    return recording


__all__ = ["DEFAULT_VIDEO", "PSEUDO_PROMPTS", "StudyConfig", "StudyDir", "StudyRunError", "attached", "capture",
           "read_video_list", "record_video", "resolve_videos", "run_study", "study_settings", "video_frames"]
