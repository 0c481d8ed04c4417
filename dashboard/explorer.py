"""Page 1, Attention explorer: one recording, sliced by layer, head, query kind and chunk step."""

from __future__ import annotations

import streamlit as st

from dashboard import data, ui

MEAN = "mean of heads"
ALL_STEPS, ONE_STEP = "mean over all steps", "this step only"
FRAME_KEY, CHART_KEY, LAST_CLICK_KEY = "explore_frame", "explore_frame_chart", "explore_last_click"


def _step_label(info: dict, step: int) -> str:
    s = info["steps"]
    return f"step {step}: {s['frames'][step]} frames, t = {s['time'][step]:.1f} s"


def _clicked_frame() -> int | None:
    """The frame of the last bar clicked in the per-frame chart (once per click), or None."""
    event = st.session_state.get(CHART_KEY)
    points = (event or {}).get("selection", {}).get("points", []) if isinstance(event, dict) else \
        getattr(getattr(event, "selection", None), "points", []) or []
    if not points:
        return None
    x = points[0].get("x")
    if x is None or x == st.session_state.get(LAST_CLICK_KEY):
        return None
    st.session_state[LAST_CLICK_KEY] = x
    return int(round(float(x)))


def render() -> None:
    st.title("Attention explorer")
    ref = ui.recording_picker()
    if ref is None:
        return
    info = data.recording_summary(ref)
    T, L, F = len(info["steps"]["step"]), info["layers"], info["frames"]

    c1, c2, c3 = st.columns(3)
    layer = c1.slider("Layer", 0, max(L - 1, 0), min(L // 2, L - 1), key="explore_layer") if L > 1 else 0
    head_choice = c2.selectbox("Head", [MEAN, *range(info["heads"])], key="explore_head")
    head = None if head_choice == MEAN else int(head_choice)
    query = c3.selectbox("Query kind", info["queries"], key="explore_query",
                         help="local / global / mixed: HERMES pseudo-queries; newest-frame: the ingest forward's "
                              "rows for the frame just streamed")
    c4, c5 = st.columns([2, 1])
    step = c4.select_slider("Chunk step", options=list(range(T)), value=T - 1, key="explore_step",
                            format_func=lambda t: _step_label(info, t)) if T > 1 else 0
    heat_steps = c5.radio("Heatmap over", [ALL_STEPS, ONE_STEP], key="explore_heat_steps", horizontal=True)

    with ui.guard("Layer × frame-age heatmap"):
        st.plotly_chart(data.age_heatmap_figure(ref, query, None if heat_steps == ALL_STEPS else step, head, layer),
                        theme=None, key="explore_age_heatmap")

    # a click on a bar picks the frame (applied before the frame widget is drawn, as Streamlit requires)
    streamed = int(info["steps"]["frames"][step])
    clicked = _clicked_frame()
    if clicked is not None:
        st.session_state[FRAME_KEY] = min(max(clicked, 0), F - 1)
    if st.session_state.get(FRAME_KEY, 0) >= streamed:
        st.session_state[FRAME_KEY] = streamed - 1
    thumbs = st.toggle("Frame thumbnails", value=True, key="explore_thumbs")
    frame = int(st.number_input("Frame (or click a bar)", 0, max(F - 1, 0), key=FRAME_KEY,
                                help=f"frames 0–{streamed - 1} are streamed by this step"))

    with ui.guard("Per-frame attention") as g:
        fig, note = data.frame_strip_figure(ref, layer, query, step, head, frame, thumbs)
    if g.ok:
        st.plotly_chart(fig, theme=None, key=CHART_KEY, on_select="rerun", selection_mode="points")
        if note:
            st.warning(note)

    left, right = st.columns(2)
    with left, ui.guard(f"Layers attending to frame {frame}"):
        st.plotly_chart(data.frame_by_layer_figure(ref, frame, query, step, head), theme=None,
                        key="explore_frame_layers")
        top = data.frame_by_layer(ref, frame, query, step, head).head(3)
        st.caption("Strongest: " + ", ".join(f"layer {int(r.layer)} ({r.mass:.3f}, {r.relative:.2f}× uniform)"
                                             for r in top.itertuples()))
    with right, ui.guard("Within-frame anchor profile"):
        st.plotly_chart(data.position_profile_figure(ref, layer, query, None if heat_steps == ALL_STEPS else step,
                                                     head), theme=None, key="explore_position")

    st.subheader("Raw attention (bounded window)")
    if info["raw_steps"] == 0:
        st.info("This recording kept no raw attention rows. Record one with **Raw steps** > 0 (sidebar) "
                "or `hermes-lab study --raw-steps N`.")
    else:
        log = st.toggle("Log colour scale", value=False, key="explore_raw_log",
                        help="an attention sink can take nearly all the mass; log10 shows the rest")
        with ui.guard("Raw attention heatmap"):
            st.plotly_chart(data.raw_window_figure(ref, layer, query, head, log), theme=None, key="explore_raw")
            st.caption(f"The first {info['raw_steps']} steps, layer {layer}, {query}, "
                       f"{'mean of heads' if head is None else f'head {head}'}.")


__all__ = ["render"]
