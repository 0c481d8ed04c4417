"""Page 2, Study & tiers: recency and anchors vs depth, derived vs HERMES-fixed specs, spec and figure export."""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from analysis.derive import format_ranges
from analysis.figures import FORMATS
from analysis.occupancy import suggested_budget
from dashboard import data, ui

METHODS = {"measured (change points)": "changepoint", "HERMES fixed (10% / 70%)": "hermes-fixed"}
SPEC_NAMES = ("measured", "hermes-fixed")


def render() -> None:
    st.title("Study & tiers")
    ref = ui.recording_picker()
    if ref is None:
        return
    info = data.recording_summary(ref)
    runs = ui.settings().runs_dir

    c1, c2, c3 = st.columns([2, 2, 1])
    queries = tuple(c1.multiselect("Query kinds", info["queries"], default=info["queries"], key="study_queries"))
    method_label = c2.radio("Tier bands", list(METHODS), key="study_method", horizontal=True)
    default_budget = suggested_budget(max(info["tokens_per_frame"], 1), max(info["frames"], 1))
    budget = int(c3.number_input("Budget (video tokens / layer)", min_value=1, value=default_budget,
                                 key="study_budget", help="written into both specs; stream --spec needs one"))
    if not queries:
        st.warning("Pick at least one query kind.")
        return
    method = METHODS[method_label]

    spec_dicts: dict[str, dict] | None = None
    with ui.guard("Deriving the specs"):
        spec_dicts = data.specs(ref, queries, budget)
    if spec_dicts is not None:
        cols = st.columns(2)
        for col, name in zip(cols, SPEC_NAMES):
            src = spec_dicts[name]["source"]
            col.markdown(f"**{name} tiers**: {format_ranges(src['tiers'])}")
            failed = [k for k, ok in src.get("checks", {}).items() if not ok]
            if failed:
                col.caption("contradicts HERMES's picture: " + ", ".join(failed))
            elif src.get("checks"):
                col.caption("agrees with HERMES's picture (recency falls, anchors rise with depth)")

    with ui.guard("Study figures") as g:
        figures = data.study_figures(ref, method, queries)
    if g.ok:
        st.plotly_chart(figures["depth_profile"], theme=None, key="study_depth")
        left, right = st.columns(2)
        with left:
            st.plotly_chart(figures["head_tiers"], theme=None, key="study_head_tiers")
        with right:
            if "anchor_profile" in figures:
                st.plotly_chart(figures["anchor_profile"], theme=None, key="study_anchor")
            st.plotly_chart(figures["age_heatmap"], theme=None, key="study_age")

    if spec_dicts is not None:
        st.subheader("Specs side by side")
        with ui.guard("Comparing specs"):
            table = data.spec_table(spec_dicts)
            st.dataframe(table, hide_index=True, key="study_spec_table")
            st.caption(f"{int(table['tiers agree'].sum())} of {len(table)} layers in the same tier.")
        _write_spec(spec_dicts, runs)
    _export(ref, method, queries, runs)


def _write_spec(spec_dicts: dict[str, dict], runs: Path) -> None:
    st.subheader("Write a PolicySpec")
    c1, c2 = st.columns([1, 2])
    name = c1.radio("Spec", SPEC_NAMES, key="study_spec_choice", horizontal=True)
    path = c2.text_input("Path", value=str(runs / f"policy-{name}.json"), key=f"study_spec_path_{name}")
    text = json.dumps(spec_dicts[name], indent=2) + "\n"
    b1, b2 = st.columns(2)
    if b1.button("Write PolicySpec JSON", key="study_write_spec", type="primary"):
        with ui.guard("Writing the spec"):
            out = data.write_spec(spec_dicts[name], path)
            st.success(f"Wrote {out}. Run it with `hermes-lab stream --spec {out}`.")
    b2.download_button("Download JSON", text, file_name=Path(path).name or "policy.json",
                       mime="application/json", key="study_download_spec")


def _export(ref: data.RecordingRef, method: str, queries: tuple[str, ...], runs: Path) -> None:
    st.subheader("Export the figures on screen")
    c1, c2 = st.columns([1, 2])
    formats = c1.multiselect("Formats", list(FORMATS), default=["pdf", "png", "svg", "html"], key="study_formats")
    out_dir = c2.text_input("Folder", value=str(runs / "figures"), key="study_fig_dir")
    if st.button("Export figures", key="study_export"):
        with ui.guard("Exporting figures"):
            paths = data.export_study(ref, method, queries, out_dir, tuple(formats))
            st.success(f"Wrote {len(paths)} files to {out_dir}: " + ", ".join(sorted({p.name for p in paths})))


__all__ = ["render"]
