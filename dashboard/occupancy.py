"""Page 3, Cache occupancy: which frames survive in which layer over time, under each chosen policy."""

from __future__ import annotations

import streamlit as st

from analysis.occupancy import compare, suggested_budget
from dashboard import data, plots, ui
from hermes_policy.policies import POLICIES

DEFAULT_POLICIES = ("sink-window", "hermes")
PER_ROW = 3


def render() -> None:
    st.title("Cache occupancy")
    model_name = ui.current_model()
    s = ui.settings()

    c1, c2 = st.columns([3, 2])
    video = c1.text_input("Video", value=s.video, key="occ_video",
                          help="a file, or synthetic:seed=S,frames=N[,fps=F,size=WxH]")
    chunk = int(c2.number_input("Frames per chunk", 1, 64, 4, key="occ_chunk"))
    default_budget = None
    with ui.guard(f"Reading {video} with {model_name}"):
        total = data.video_length(video) or 16
        default_budget = suggested_budget(data.tokens_per_frame(model_name, video), total)
    if default_budget is None:
        return
    c3, c4, c5 = st.columns([3, 1, 2])
    names = sorted(POLICIES)
    policies = c3.multiselect("Policies", names, default=[p for p in DEFAULT_POLICIES if p in names],
                              key="occ_policies")
    budget = int(c4.number_input("Budget", min_value=1, value=default_budget, key="occ_budget",
                                 help="video tokens kept per layer (ignored by full)"))
    spec = c5.text_input("PolicySpec JSON (optional, adds a run)", value="", key="occ_spec").strip() or None

    runs_wanted = [(p, p) for p in policies] + ([(f"spec: {spec}", "spec")] if spec else [])
    if not runs_wanted:
        st.info("Pick at least one policy.")
        return
    runs = {}
    for label, policy in runs_wanted:
        with ui.guard(f"Streaming under {label}"), st.spinner(f"Streaming {video} under {label}…"):
            runs[label] = data.occupancy(model_name, video, policy, None if policy == "full" else budget,
                                         spec if policy == "spec" else None,
                                         data.spec_stamp(spec) if policy == "spec" else None, chunk)
    if not runs:
        return

    first = next(iter(runs.values()))
    steps = list(range(first.num_steps))
    step = st.select_slider("Time", options=steps, value=steps[-1], key="occ_step",
                            format_func=lambda t: f"after {first.frames[t]} frames (t = {first.time[t]:.1f} s)") \
        if len(steps) > 1 else 0

    labels = list(runs)
    for row in range(0, len(labels), PER_ROW):
        cols = st.columns(PER_ROW)
        for col, label in zip(cols, labels[row : row + PER_ROW]):
            run = runs[label]
            with col:
                st.plotly_chart(plots.occupancy_heatmap(run.held[step], label), theme=None, key=f"occ_map_{label}")
                st.caption(f"{run.kv_bytes[step] / 2**20:.2f} MiB KV · rows per layer "
                           f"{run.tokens[step].min()}–{run.tokens[step].max()}")
                if run.head_tokens is not None:  # a per-head cache: each KV head's own count
                    heads = run.head_tokens[step]
                    st.plotly_chart(plots.head_lengths_heatmap(heads, label), theme=None, key=f"occ_heads_{label}")
                    st.caption(f"per-head cache · rows per KV head {heads.min()}–{heads.max()} "
                               "(shares above are averaged over each layer's heads)")

    st.subheader("Side by side")
    table = compare(runs, step)
    st.dataframe(table.assign(kv_mib=table["kv_bytes"] / 2**20), hide_index=True, key="occ_table")

    x = first.frames[step]
    st.plotly_chart(plots.lines({k: (r.frames, r.kv_bytes / 2**20) for k, r in runs.items()},
                                "KV bytes over time", "frames streamed", "KV MiB", marker_x=x),
                    theme=None, key="occ_kv")
    slots = {f"{k} · layer {layer}": (r.frames, r.summary[:, layer])
             for k, r in runs.items() for layer in range(r.num_layers) if r.summary[:, layer].any()}
    st.subheader("Summary-token slot")
    if slots:
        st.plotly_chart(plots.lines(slots, "Evicted tokens folded into each summary slot", "frames streamed",
                                    "tokens folded", marker_x=x), theme=None, key="occ_summary")
        st.caption("HERMES's long-term layers fold what they evict into one slot (mean key and value); "
                   "each line is one layer's slot.")
    else:
        st.info("No run has a summary slot yet (only hermes long-term layers fold evicted tokens, once they evict).")


__all__ = ["render"]
