"""Page 4, Live stream & ask: play a video through a streaming session and ask at any moment.

The session lives in this browser session's state (it is mutable and
per-user); the model it wraps comes from the shared ``st.cache_resource``.
Playing is a fragment that re-runs on a timer and ingests one chunk per tick,
so a question typed meanwhile interrupts nothing but the wait.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import streamlit as st

from analysis.occupancy import suggested_budget
from dashboard import data, plots, ui
from hermes_policy.models.configured import CONFIG_PREFIX, RANDOM_WEIGHTS_NOTE
from hermes_policy.policies import POLICIES, policy_from_args
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import Frame

LIVE_KEY, PLAY_KEY, FINISHED_KEY = "live_state", "live_play", "live_finished"
SYNTHETIC, UPLOAD = "synthetic or path", "upload a file"
TICK_S = 0.5


@dataclass
class Live:
    """One stream in progress.

    Attributes:
        key: the settings it was made with (a change starts a new stream).
        frames: the decoded stream.
        session: the streaming session under the chosen policy.
        position: frames handed to the session so far.
        history: one dict per answered question.
    """

    key: tuple
    frames: list[Frame]
    session: StreamingSession
    position: int = 0
    history: list[dict] = field(default_factory=list)

    @property
    def done(self) -> bool:
        return self.position >= len(self.frames)

    def advance(self) -> None:
        """Ingest the next chunk (the last one may be short, so it is flushed)."""
        chunk = self.frames[self.position : self.position + self.session.chunk_frames]
        self.session.ingest(chunk)
        self.position += len(chunk)
        if self.done:
            self.session.flush()


def _source() -> tuple[str, float | None, int] | None:
    """The chosen video as (spec or path, fps, max frames); None when there is nothing (valid) yet."""
    s = ui.settings()
    kind = st.radio("Video", [SYNTHETIC, UPLOAD], key="live_kind", horizontal=True)
    c1, c2 = st.columns(2)
    fps = c1.number_input("Sampling rate (fps, files only)", 0.1, 30.0, 2.0, key="live_fps")
    max_frames = int(c2.number_input("Max frames", 1, 1024, 64, key="live_max_frames"))
    if kind == SYNTHETIC:
        video = st.text_input("Spec or file", value=s.video, key="live_video").strip()
        return (video, None if video.startswith("synthetic:") else float(fps), max_frames)
    upload = st.file_uploader("Video file", type=list(data.VIDEO_TYPES), key="live_upload")
    if upload is None:
        st.info("Upload a video file (" + ", ".join(data.VIDEO_TYPES) + ").")
        return None
    with ui.guard(f"The uploaded file {upload.name!r} cannot be used") as g:
        path = data.save_upload(ui.settings().runs_dir, upload.name, upload.getvalue())
        data.video_length(str(path), float(fps))  # probes the container and decodes the first frame
    return (str(path), float(fps), max_frames) if g.ok else None


def _live(model_name: str, source: tuple[str, float | None, int], policy: str, budget: int, chunk: int,
          max_new_tokens: int) -> Live | None:
    key = (model_name, *source, policy, budget, chunk, max_new_tokens)
    live: Live | None = st.session_state.get(LIVE_KEY)
    if live is not None and live.key == key:
        return live
    with ui.guard("Starting the stream") as g, st.spinner("Decoding the video and loading the model…"):
        frames = data.video_frames(*source)
        built = policy_from_args(policy, None if policy == "full" else budget)
        config = SessionConfig(chunk_frames=chunk, max_new_tokens=max_new_tokens)
        live = Live(key, frames, StreamingSession(data.model(model_name), built, config))
    if not g.ok:
        st.session_state.pop(LIVE_KEY, None)
        return None
    st.session_state[LIVE_KEY] = live
    st.session_state[PLAY_KEY] = False
    return live


def _show(live: Live) -> None:
    """The current frame, the stream's state and KV bytes over time."""
    left, right = st.columns([1, 2])
    with left:
        if live.position:
            frame = live.frames[live.position - 1]
            st.image(frame.image, caption=f"frame {frame.index} · t = {frame.time:.1f} s", width=256)
        else:
            st.caption("Nothing streamed yet: press Play or Step.")
    with right:
        session = live.session
        m1, m2, m3 = st.columns(3)
        m1.metric("Frames streamed", f"{live.position} / {len(live.frames)}")
        m2.metric("Stream time", f"{session.stream_time:.1f} s")
        m3.metric("KV bytes", f"{session.kv_bytes / 2**20:.2f} MiB")
        if session.timeline:
            frames = [t["frames"] for t in session.timeline]
            kv = [t["kv_bytes"] / 2**20 for t in session.timeline]
            st.plotly_chart(plots.lines({session.policy.name: (frames, kv)}, "KV bytes over time", "frames streamed",
                                        "KV MiB"), theme=None, key="live_kv")


def _player(live: Live) -> None:
    playing = bool(st.session_state.get(PLAY_KEY)) and not live.done

    @st.fragment(run_every=TICK_S if playing else None)
    def player() -> None:
        if st.session_state.get(PLAY_KEY) and not live.done:
            with ui.guard("Streaming") as g:
                live.advance()
            if live.done or not g.ok:
                st.session_state[FINISHED_KEY] = True
                st.rerun()  # the whole page, so the timer stops and the Play toggle resets
        _show(live)

    player()


def _ask(live: Live) -> None:
    st.subheader("Ask")
    with st.form("live_ask_form", clear_on_submit=True):
        question = st.text_input("Question", key="live_question", placeholder="What colour is the circle now?")
        asked = st.form_submit_button("Ask", type="primary")
    if asked:
        with ui.guard("Asking"):
            answer = live.session.ask(question)
            live.history.append({"time (s)": round(answer.time, 2), "frames": live.session.frames_seen,
                                 "question": answer.question, "answer": answer.answer,
                                 "TTFT (ms)": round(answer.ttft_ms, 1), "KV bytes": answer.kv_bytes})
    if live.history:
        last = live.history[-1]
        st.success(f"**{last['question']}** → {last['answer'] or '(empty answer)'}")
        c1, c2, c3 = st.columns(3)
        c1.metric("TTFT", f"{last['TTFT (ms)']:.1f} ms")
        c2.metric("KV bytes at the question", f"{last['KV bytes']:,}")
        c3.metric("Asked at", f"{last['time (s)']:.1f} s")
        st.dataframe(live.history, hide_index=True, key="live_history")


def render() -> None:
    st.title("Live stream & ask")
    model_name = ui.current_model()
    if model_name.startswith(CONFIG_PREFIX):
        st.warning(RANDOM_WEIGHTS_NOTE)
    source = _source()
    if source is None:
        return
    c1, c2, c3, c4 = st.columns(4)
    names = sorted(POLICIES)
    policy = c1.selectbox("Policy", names, index=names.index("sink-window") if "sink-window" in names else 0,
                          key="live_policy")
    default_budget = 64
    with ui.guard("Reading the video") as g:
        length = data.video_length(*source) or source[2]
        default_budget = suggested_budget(data.tokens_per_frame(model_name, source[0]), length)
    if not g.ok:
        return
    budget = int(c2.number_input("Budget", min_value=1, value=default_budget, key="live_budget",
                                 help="video tokens kept per layer (ignored by full)"))
    chunk = int(c3.number_input("Frames per chunk", 1, 64, 4, key="live_chunk"))
    max_new = int(c4.number_input("Max answer tokens", 1, 256, 24, key="live_max_new"))

    live = _live(model_name, source, policy, budget, chunk, max_new)
    if live is None:
        return
    if st.session_state.pop(FINISHED_KEY, False):
        st.session_state[PLAY_KEY] = False  # before the toggle exists in this run
    b1, b2, b3 = st.columns(3)
    b1.toggle("Play", key=PLAY_KEY, disabled=live.done)
    if b2.button("Step one chunk", key="live_step", disabled=live.done):
        with ui.guard("Streaming"):
            live.advance()
    if b3.button("Restart", key="live_restart"):
        st.session_state.pop(LIVE_KEY, None)
        st.rerun()
    _player(live)
    _ask(live)


__all__ = ["Live", "render"]
