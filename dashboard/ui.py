"""What every page shares: the error guard, the launch settings, the model and the recording pickers."""

from __future__ import annotations

import traceback
from pathlib import Path
from types import TracebackType

import streamlit as st

from dashboard import data
from dashboard.settings import Settings
from hermes_policy.errors import HermesError
from hermes_policy.models.registry import BUILTIN_MODELS
from probes.capture import StudyConfig
from probes.recording import RecordingError

OTHER_MODEL = "other (HF id or local path)"
#: planted models offered ready in the picker (tiny, with known memory roles; any seed works via "other")
PLANTED_MODELS = ("planted:0,family=embedded", "planted:0,family=qwen2-vl", "planted:0,family=llava-ov",
                  "planted:0,family=qwen3-vl", "planted:0,family=qwen3.5", "planted:0,family=internvl",
                  "planted:0,family=smolvlm")
#: session-state keys that are not widgets (they survive page switches)
SETTINGS_KEY, MODEL_KEY, RECORDING_KEY, AUTO_RECORD_KEY = "settings", "model", "recording", "auto_recorded"
PICK_KEY = "recording_pick"


class guard:
    """``with guard("what"):`` shows a user error as one ``st.error`` and lets the rest of the page run.

    User errors (:class:`HermesError`, :class:`RecordingError`) show their
    message; anything else shows its type and message, with the traceback
    folded away in an expander. Streamlit's own control flow (rerun, stop) passes.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.error: BaseException | None = None

    def __enter__(self) -> guard:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if exc is None or not isinstance(exc, Exception):
            return False  # includes st.rerun()/st.stop(), which are BaseException
        self.error = exc
        if isinstance(exc, (HermesError, RecordingError)):
            st.error(f"{self.what}: {exc}")
        else:
            st.error(f"{self.what} failed unexpectedly: {type(exc).__name__}: {exc}")
            with st.expander("details (please report this)"):
                st.code("".join(traceback.format_exception(kind, exc, tb)))
        return True

    @property
    def ok(self) -> bool:
        return self.error is None


def settings() -> Settings:
    """The launch settings (put in session state by the entry script)."""
    return st.session_state.get(SETTINGS_KEY) or Settings()


def model_picker() -> str:
    """The sidebar's model selector; returns the chosen name (loaded only when a page needs it)."""
    default = settings().model
    ready = [*BUILTIN_MODELS, *PLANTED_MODELS]
    options = [*ready, OTHER_MODEL]
    index = options.index(default) if default in ready else len(options) - 1
    choice = st.selectbox("Model", options, index=index, key="model_choice",
                          help="built-in models need no download; `planted:SEED[,family=embedded|qwen2-vl|"
                               "qwen2.5-vl|llava-ov|qwen3-vl|qwen3.5|internvl|smolvlm][,strength=S]` builds a tiny "
                               "model whose heads have known memory "
                               "roles (the study page compares its tiers with them); an HF id or path loads its "
                               "checkpoint (never with trust_remote_code); `config:NAME` builds a published "
                               "architecture with random weights (time and memory only)")
    name = choice
    if choice == OTHER_MODEL:
        # code spans: a bare "planted:SEED[...]" would read as a Streamlit text directive and vanish
        name = st.text_input("HF id, local path, `planted:SEED[,family=...]` or `config:NAME`",
                             value="" if default in ready else default, key="model_other").strip()
    st.session_state[MODEL_KEY] = name
    return name


def current_model() -> str:
    return st.session_state.get(MODEL_KEY) or settings().model


def _record(model_name: str, video: str, config: StudyConfig) -> Path | None:
    """Record a study with a progress bar; None (and an error shown) if it failed."""
    bar = st.progress(0.0, text=f"Recording {model_name} on {video}…")

    def update(done: int, total: int | None) -> None:
        frac = min(done / total, 1.0) if total else 0.0
        bar.progress(frac, text=f"Recording {model_name} on {video}: frame {done}" + (f" of {total}" if total else ""))

    with guard("Recording a study") as g:
        path = data.make_recording(settings().runs_dir, model_name, video, config, update)
    bar.empty()
    return path if g.ok else None


def recording_picker() -> data.RecordingRef | None:
    """Sidebar: record a new study, or pick one (``--study`` ones first). Returns the chosen ref, or None.

    With nothing to pick (the no-argument launch), a study of the selected model
    on the default video is recorded once, so the page has something to show.
    """
    s = settings()
    with st.sidebar.expander("Record a new study", expanded=False):
        video = st.text_input("Video", value=s.video, key="rec_video",
                              help="a file, or synthetic:seed=S,frames=N[,fps=F,size=WxH]")
        queries = st.selectbox("Query kinds", ["both", "pseudo", "newest-frame"], key="rec_queries",
                               help="HERMES pseudo-queries after each chunk, the newest frame's own rows, or both")
        chunk = st.number_input("Frames per chunk (one step each)", 1, 64, 4, key="rec_chunk")
        raw = st.number_input("Raw steps (bounded raw attention rows)", 0, 64, 4, key="rec_raw")
        start = st.button("Record", key="rec_start", type="primary")
    available = data.list_recordings(s.studies, s.runs_dir)
    target = st.sidebar if start else st.container()
    if start or (not available and not st.session_state.get(AUTO_RECORD_KEY)):
        st.session_state[AUTO_RECORD_KEY] = True
        config = StudyConfig(queries=queries, chunk_frames=int(chunk), raw_steps=int(raw))  # type: ignore[arg-type]
        with target:
            made = _record(current_model(), video, config)
        if made is not None:
            st.session_state[RECORDING_KEY] = str(made)
            available = data.list_recordings(s.studies, s.runs_dir)
    if not available:
        st.info("No recording yet: pick a model and press **Record** in the sidebar, "
                "or launch with `hermes-lab dashboard --study DIR`.")
        return None
    # Each page has its own instance of this widget, so RECORDING_KEY (plain state, updated by the
    # widget's callback before any rerun) carries the choice and seeds whichever instance is drawn.
    chosen = st.session_state.get(RECORDING_KEY)
    st.session_state[PICK_KEY] = chosen if chosen in available else available[0]
    path = st.sidebar.selectbox("Recording", available, key=PICK_KEY, format_func=_label,
                                on_change=lambda: st.session_state.update({RECORDING_KEY: st.session_state[PICK_KEY]}))
    st.session_state[RECORDING_KEY] = path
    with guard(f"Recording {path}") as g:
        ref = data.recording_ref(path)
        info = data.recording_summary(ref)
    if not g.ok:
        return None
    st.sidebar.caption(f"{info['model']} · {info['video']} · {info['layers']} layers × {info['heads']} heads · "
                       f"{info['frames']} frames in {len(info['steps']['step'])} steps")
    return ref


def _label(path: str) -> str:
    return path if len(path) < 60 else "…" + path[-58:]


__all__ = ["current_model", "guard", "model_picker", "recording_picker", "settings"]
