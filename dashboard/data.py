"""Everything the pages show, loaded or computed once and cached.

* models: ``st.cache_resource`` (one shared instance per name; never copied);
* recordings, arrays, tables and figures: ``st.cache_data``, keyed by plain
  hashable arguments. A recording is named by a :class:`RecordingRef` (its path
  plus the files' modification stamps), so an edited or re-recorded study is
  read again while a rerun that changes nothing computes nothing.

The computations themselves are ``analysis`` and ``hermes_policy`` functions;
this module only calls them and converts results for plotting.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from PIL import Image

from analysis import explore
from analysis import occupancy as occ
from analysis.derive import ROLE_METHOD, TierAssignment, derive, derive_tiers, layer_list, measured_method, out_of_order
from analysis.errors import StudyError
from analysis.export import export_figures
from analysis.figures import plotly_age_heatmap, plotly_anchor_profile, plotly_head_tiers, plotly_recency_depth
from analysis.recordings import load_study
from analysis.tidy import age_heatmap_data, anchor_profile_data, head_tier_data
from dashboard import plots
from dashboard.settings import from_environment
from hermes_policy.atomic import atomic_write_bytes
from hermes_policy.models.base import ModelAdapter
from hermes_policy.models.planted import PLANTED_PREFIX, ROLE_TIER, parse_planted_name
from hermes_policy.models.registry import load_model
from hermes_policy.policies.spec import PolicySpec, policy_from_args
from hermes_policy.video import Frame, VideoSource, open_video
from probes.capture import StudyConfig, capture
from probes.recording import META_FILE, TENSORS_FILE, Recording

THUMB_HEIGHT = 48
APP = Path(__file__).with_name("app.py")


# --------------------------------------------------------------------------- models
@st.cache_resource(show_spinner="Loading the model…", max_entries=3)
def model(name: str) -> ModelAdapter:
    """A model by built-in name, HF id or path (``trust_remote_code`` stays off), placed as the app was launched."""
    settings = from_environment(APP)
    return load_model(name, placement=settings.placement(), allow_pickle=settings.allow_pickle_weights)


@st.cache_data(show_spinner=False, max_entries=32)
def tokens_per_frame(model_name: str, video: str) -> int:
    """Patch tokens per frame of ``video``'s first frame for the model."""
    first = next(iter(open_video(video, max_frames=1).frames()))
    h, w = first.image.shape[:2]
    return int(model(model_name).tokens_per_frame(h, w))


@st.cache_data(show_spinner=False, max_entries=32)
def video_length(video: str, fps: float | None = None, max_frames: int | None = None) -> int | None:
    """Frames the video will yield (None when its container does not say); opening it checks it decodes."""
    return open_video(video, fps=fps, max_frames=max_frames).num_frames


# --------------------------------------------------------------------------- recordings
class RecordingRef(NamedTuple):
    """A recording on disk, as a cache key: its directory and the stamps of its two files."""

    path: str
    stamp: tuple[int, int]


def recording_ref(path: str | Path) -> RecordingRef:
    """The ref of the recording in ``path``; :class:`StudyError` when there is none."""
    p = Path(path)
    files = [p / META_FILE, p / TENSORS_FILE]
    if not p.is_dir() or not all(f.is_file() for f in files):
        load_study(p)  # raises the same readable error the CLI gives
    stats = [f.stat() for f in files]
    return RecordingRef(str(p), (stats[0].st_mtime_ns ^ stats[0].st_size, stats[1].st_mtime_ns ^ stats[1].st_size))


@st.cache_data(show_spinner="Reading the recording…", max_entries=8)
def recording(ref: RecordingRef) -> Recording:
    return load_study(Path(ref.path))


@st.cache_data(show_spinner=False, max_entries=64)
def recording_summary(ref: RecordingRef) -> dict:
    """The recording's metadata, with its step table, for captions and widget ranges."""
    rec = recording(ref)
    steps = explore.steps_table(rec)
    return {
        "model": rec.meta.get("model", "?"),
        "video": rec.meta.get("video"),
        "fps": rec.meta.get("fps"),
        "layers": rec.num_layers,
        "heads": rec.num_heads,
        "queries": rec.queries,
        "tokens_per_frame": int(rec.meta.get("tokens_per_frame") or 0),
        "frames": int(rec["frame_mass", 0].shape[-1]),
        "steps": steps.to_dict("list"),
        "raw_steps": explore.raw_steps(rec),
    }


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", text).strip("_")[:60]


def made_recording_dir(runs: Path, model_name: str, video: str, config: StudyConfig) -> Path:
    """Where the app stores a recording it made: one folder per (model, video, capture settings)."""
    key = json.dumps([model_name, video, config.queries, config.chunk_frames, config.raw_steps])
    digest = hashlib.sha256(key.encode()).hexdigest()[:8]
    return runs / "recordings" / f"{slug(model_name)}-{slug(video)}-{digest}"


def list_recordings(studies: tuple[str, ...], runs: Path) -> list[str]:
    """``--study`` directories first (even broken ones: picking one shows why), then recordings the app made."""
    made = sorted((str(p.parent) for p in (runs / "recordings").glob(f"*/{META_FILE}")), reverse=True)
    return list(dict.fromkeys([*studies, *made]))


class ProgressSource:
    """A :class:`VideoSource` that reports each frame it hands out: ``callback(frames_done, total or None)``.

    The capture loop pulls frames as it ingests them, so this is its progress
    without touching the loop.
    """

    def __init__(self, source: VideoSource, callback: Callable[[int, int | None], None]) -> None:
        self._source, self._callback = source, callback
        self.name, self.fps, self.num_frames, self.events = source.name, source.fps, source.num_frames, source.events

    def frames(self) -> Iterator[Frame]:
        for i, frame in enumerate(self._source.frames(), start=1):
            self._callback(i, self.num_frames)
            yield frame


def make_recording(
    runs: Path, model_name: str, video: str, config: StudyConfig, progress: Callable[[int, int | None], None]
) -> Path:
    """Record a study (as ``hermes-lab study`` does) into the runs folder; returns its directory."""
    source = open_video(video)  # a bad spec or file fails before the model loads
    adapter = model(model_name)
    rec = capture(adapter, ProgressSource(source, progress), config, progress=False)
    out = made_recording_dir(runs, model_name, video, config)
    rec.save(out)
    return out


# --------------------------------------------------------------------------- explorer
@st.cache_data(show_spinner=False, max_entries=64)
def age_heatmap_figure(ref: RecordingRef, query: str, step: int | None, head: int | None, layer: int) -> go.Figure:
    grid = explore.age_heatmap(recording(ref), query, step, head).numpy()
    return plots.age_heatmap(grid, layer)


@st.cache_data(show_spinner=False, max_entries=32)
def thumbnails(video: str, fps: float | None, count: int, height: int = THUMB_HEIGHT) -> np.ndarray:
    """(N, height, w, 3) uint8 thumbnails of the first ``count`` frames of ``video`` (N <= count).

    Synthetic specs carry their own rate; files are sampled at the recording's ``fps``.
    """
    source = open_video(video, max_frames=count) if video.startswith("synthetic:") else \
        open_video(video, fps=fps, max_frames=count)
    thumbs = []
    for frame in source.frames():
        img = Image.fromarray(frame.image)
        width = max(1, round(img.width * height / img.height))
        thumbs.append(np.asarray(img.resize((width, height), Image.Resampling.BILINEAR)))
    if not thumbs:
        raise StudyError(f"the video {video} yielded no frames")
    return np.stack(thumbs)


@st.cache_data(show_spinner=False, max_entries=64)
def frame_mass(ref: RecordingRef, layer: int, query: str, step: int, head: int | None) -> np.ndarray:
    return explore.frame_mass(recording(ref), layer, query, step, head).numpy()


@st.cache_data(show_spinner=False, max_entries=64)
def frame_strip_figure(
    ref: RecordingRef, layer: int, query: str, step: int, head: int | None, frame: int, with_thumbnails: bool
) -> tuple[go.Figure, str | None]:
    """The per-frame mass bar over the video's thumbnails; also a note when thumbnails are unavailable."""
    mass = frame_mass(ref, layer, query, step, head)
    thumbs, note = None, None
    if with_thumbnails:
        meta = recording_summary(ref)
        try:
            thumbs = thumbnails(str(meta["video"]), meta["fps"], meta["frames"])
        except Exception as e:  # a moved or unreadable video must not hide the attention itself
            note = f"no thumbnails: the recording's video {meta['video']!r} cannot be read here ({e})"
    return plots.frame_strip(mass, thumbs, frame), note


@st.cache_data(show_spinner=False, max_entries=64)
def frame_by_layer(ref: RecordingRef, frame: int, query: str, step: int, head: int | None) -> pd.DataFrame:
    return explore.frame_by_layer(recording(ref), frame, query, step, head)


@st.cache_data(show_spinner=False, max_entries=64)
def frame_by_layer_figure(ref: RecordingRef, frame: int, query: str, step: int, head: int | None) -> go.Figure:
    return plots.frame_by_layer(frame_by_layer(ref, frame, query, step, head), frame)


def tier_method(ref: RecordingRef, method: str | None = None) -> str:
    """The tier method a page will use for ``method`` (None: the measured one).

    Measured tiers are by role (``roles``), which needs the in-frame position mass; a recording
    made without it gets change points instead, as :func:`analysis.derive.measured_tiers` does.
    """
    return measured_method(recording(ref)) if method in (None, ROLE_METHOD) else method


@st.cache_data(show_spinner=False, max_entries=16)
def tiers(ref: RecordingRef, method: str | None = None, queries: tuple[str, ...] | None = None) -> TierAssignment:
    """Tiers by ``method`` (None or ``roles``: measured, falling back to change points, see :func:`tier_method`)."""
    return derive_tiers(recording(ref), tier_method(ref, method), list(queries) if queries else None)


def tier_notes(t: TierAssignment) -> list[str]:
    """Short notes for a tier map: layers where no head showed a role, layers out of depth order."""
    notes = []
    if t.no_role:
        notes.append(f"no head role measured in {layer_list(t.no_role)} (given the working tier)")
    if not t.in_depth_order:
        late = out_of_order(t.layers)
        notes.append(f"out of depth order: {layer_list(late)} ({', '.join(t.layers[i] for i in late)})")
    return notes


def layer_tier(ref: RecordingRef, layer: int) -> str | None:
    """The measured tier of a layer (None when the recording cannot be split, e.g. under 3 layers)."""
    try:
        return tiers(ref).layers[layer]
    except StudyError:
        return None


@st.cache_data(show_spinner=False, max_entries=64)
def position_profile_figure(ref: RecordingRef, layer: int, query: str, step: int | None, head: int | None) -> go.Figure:
    profile = explore.position_profile(recording(ref), layer, query, step, head).numpy()
    return plots.position_profile(profile, layer, layer_tier(ref, layer))


@st.cache_data(show_spinner=False, max_entries=64)
def raw_window_figure(ref: RecordingRef, layer: int, query: str, head: int | None, log: bool = False) -> go.Figure:
    rec = recording(ref)
    rows = explore.raw_window(rec, layer, query, head).numpy()
    return plots.raw_heatmap(rows, explore.steps_table(rec)["frames"].tolist()[: rows.shape[0]], log)


# --------------------------------------------------------------------------- study
#: on-screen figure name -> the analysis.figures renderer that draws it (for export)
STUDY_RENDERERS = {"depth_profile": "recency_depth"}


@st.cache_data(show_spinner="Measuring tiers and drawing figures…", max_entries=16)
def study_tables(ref: RecordingRef, method: str, queries: tuple[str, ...]) -> dict[str, pd.DataFrame]:
    """The tidy tables behind every figure of the study page (what export writes)."""
    rec = recording(ref)
    q = list(queries)
    t = tiers(ref, method, queries)
    tables = {
        "depth_profile": explore.depth_profile_data(rec, t, q),
        "head_tiers": head_tier_data(t, rec.num_heads),
        "age_heatmap": age_heatmap_data(rec, q),
    }
    if all(("position_mass", layer) in rec for layer in rec.layers()):
        tables["anchor_profile"] = anchor_profile_data(rec, t, None, q)
    return tables


@st.cache_data(show_spinner=False, max_entries=16)
def study_figures(ref: RecordingRef, method: str, queries: tuple[str, ...]) -> dict[str, go.Figure]:
    """The study page's figures, drawn by the same plotly renderers that export uses."""
    renderers = {"depth_profile": plotly_recency_depth, "head_tiers": plotly_head_tiers,
                 "age_heatmap": plotly_age_heatmap, "anchor_profile": plotly_anchor_profile}
    return {name: plots.fit_width(renderers[name](df)) for name, df in study_tables(ref, method, queries).items()}


@st.cache_data(show_spinner=False, max_entries=16)
def specs(ref: RecordingRef, queries: tuple[str, ...], budget: int | None) -> dict[str, dict]:
    """The measured and the HERMES-fixed PolicySpec, as JSON-ready dicts.

    ``measured`` is derive's ``measured`` (tiers by role); a recording without position mass gets
    derive's ``changepoint`` under the same name (its ``source.method`` says so).
    """
    rec = recording(ref)
    measured = "measured" if tier_method(ref) == ROLE_METHOD else "changepoint"
    return {name: derive(rec, method, list(queries), None, budget).to_dict()  # type: ignore[arg-type]
            for name, method in (("measured", measured), ("hermes-fixed", "hermes-fixed"))}


def spec_table(spec_dicts: dict[str, dict]) -> pd.DataFrame:
    return explore.compare_specs({name: PolicySpec.from_dict(d) for name, d in spec_dicts.items()})


def write_spec(spec_dict: dict, path: str | Path) -> Path:
    """Write a PolicySpec JSON (atomically); its folder is created."""
    out = Path(path)
    if out.is_dir():
        raise StudyError(f"{out} is a directory; give a file path for the spec, e.g. {out / 'policy.json'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    PolicySpec.from_dict(spec_dict).save(out)
    return out


def export_study(ref: RecordingRef, method: str, queries: tuple[str, ...], out_dir: str | Path,
                 formats: tuple[str, ...]) -> list[Path]:
    """Export the study page's figures exactly as shown (same tables), in the chosen formats."""
    return export_figures(study_tables(ref, method, queries), out_dir, formats, STUDY_RENDERERS)


# --------------------------------------------------------------------------- planted ground truth
def is_planted(model_name: str | None) -> bool:
    return str(model_name or "").startswith(PLANTED_PREFIX)


@st.cache_data(show_spinner=False, max_entries=32)
def planted_truth(model_name: str) -> dict:
    """The ground truth of a planted model (what its weights were built to do); ModelError for a bad name."""
    return parse_planted_name(model_name).ground_truth()


class TruthComparison(NamedTuple):
    """Planted truth vs measured tiers.

    Attributes:
        layers: one row per layer: ``layer, truth, measured, match`` (match None for a diffuse truth layer).
        heads: one row per head: ``layer, head, role, truth, measured, match`` (truth: the tier the role
            plants, :data:`ROLE_TIER`, or None for a diffuse head; match None then).
        layer_agreement: (matching, scored) over layers with a planted role.
        head_agreement: (matching, scored) over heads with a planted role.
    """

    layers: pd.DataFrame
    heads: pd.DataFrame
    layer_agreement: tuple[int, int]
    head_agreement: tuple[int, int]


def compare_truth(truth: dict, t: TierAssignment) -> TruthComparison:
    """Score tiers against a planted truth (:meth:`PlantedConfig.ground_truth`), as ``hermes-lab validate`` does:
    a layer with a role should be in its planted tier, a head with a role in the tier its role plants."""
    from analysis.validate import count_matches, truth_matches

    layer_ok, head_ok = truth_matches(truth, t)  # checks the truth and the tiers have one shape
    kinds, roles = list(truth["layers"]), [list(r) for r in truth["roles"]]
    measured_heads = t.head_tiers(len(roles[0]))
    layer_rows = [{"layer": i, "truth": k, "measured": t.layers[i], "match": layer_ok[i]} for i, k in enumerate(kinds)]
    head_rows = [{"layer": i, "head": h, "role": role, "truth": ROLE_TIER.get(role), "measured": measured_heads[i][h],
                  "match": head_ok[i][h]} for i, row in enumerate(roles) for h, role in enumerate(row)]
    return TruthComparison(pd.DataFrame(layer_rows), pd.DataFrame(head_rows), count_matches(layer_ok),
                           count_matches([x for row in head_ok for x in row]))


@st.cache_data(show_spinner=False, max_entries=16)
def truth_comparison(ref: RecordingRef, method: str | None, queries: tuple[str, ...]) -> TruthComparison:
    """The recording's tiers (``method``, as the page shows them) against its planted model's ground truth."""
    model_name = str(recording(ref).meta.get("model"))
    return compare_truth(planted_truth(model_name), tiers(ref, method, queries))


@st.cache_data(show_spinner=False, max_entries=16)
def truth_figure(ref: RecordingRef, method: str | None, queries: tuple[str, ...]) -> go.Figure:
    cmp = truth_comparison(ref, method, queries)
    return plots.truth_vs_measured(cmp.layers, cmp.heads, tier_method(ref, method))


# --------------------------------------------------------------------------- occupancy
def spec_stamp(spec: str | None) -> int | None:
    """A cache key part for a spec file: changes when the file does (None: no spec)."""
    if not spec:
        return None
    p = Path(spec)
    return p.stat().st_mtime_ns if p.is_file() else -1


@st.cache_data(show_spinner=False, max_entries=32)
def occupancy(
    model_name: str, video: str, policy: str, budget: int | None, spec: str | None, stamp: int | None,
    chunk_frames: int, flush_after: tuple[int, ...] = (),
) -> occ.Occupancy:
    """Stream ``video`` under one policy and record the cache after each chunk (``stamp``: see :func:`spec_stamp`;
    ``flush_after``: see :func:`analysis.occupancy.run_occupancy`)."""
    frames = list(open_video(video).frames())
    built = policy_from_args(policy, budget, spec or None)
    return occ.run_occupancy(model(model_name), built, frames, chunk_frames, flush_after=flush_after)


# --------------------------------------------------------------------------- uploads
VIDEO_TYPES = ("mp4", "mkv", "webm", "mov", "avi")


def save_upload(runs: Path, name: str, content: bytes) -> Path:
    """Store an uploaded video under the runs folder by content hash (same bytes, same file)."""
    suffix = Path(name).suffix.lower()
    if suffix.lstrip(".") not in VIDEO_TYPES:
        raise StudyError(f"{name!r} is not a video file this app takes ({', '.join(VIDEO_TYPES)})")
    if not content:
        raise StudyError(f"{name!r} is empty (0 bytes)")
    out = runs / "uploads" / f"{hashlib.sha256(content).hexdigest()[:16]}{suffix}"
    out.parent.mkdir(parents=True, exist_ok=True)
    if not out.exists():  # content-addressed: a file that exists is complete, because it appears atomically
        atomic_write_bytes(out, content)
    return out


def video_frames(video: str, fps: float | None, max_frames: int) -> list[Frame]:
    """Decoded frames of a spec or file (VideoError for a bad one, with the file named).

    Not cached here: the live page keeps them in its session state for as long
    as the stream runs, and decoded frames are too large to unpickle per rerun.
    """
    source = open_video(video, fps=fps, max_frames=max_frames)
    frames = list(source.frames())
    if not frames:
        raise StudyError(f"the video {video} yielded no frames")
    return frames


__all__ = [
    "ProgressSource", "RecordingRef", "TruthComparison", "age_heatmap_figure", "compare_truth", "export_study",
    "frame_by_layer", "frame_by_layer_figure", "frame_mass", "frame_strip_figure", "is_planted", "layer_list",
    "list_recordings", "made_recording_dir", "make_recording", "model", "occupancy", "planted_truth",
    "position_profile_figure", "raw_window_figure", "recording", "recording_ref", "recording_summary", "save_upload",
    "spec_stamp", "spec_table", "specs", "study_figures", "study_tables", "thumbnails", "tier_method", "tier_notes",
    "tiers", "tokens_per_frame", "truth_comparison", "truth_figure", "video_frames", "video_length", "write_spec",
]
