"""Page 2, Study & tiers: recency and anchors vs depth, derived vs HERMES-fixed specs, spec and figure export,
and a causal memory map of the same model beside the study (:mod:`dashboard.causal`).

For a study of a planted model (``planted:SEED[,family=...]``) the page also shows the model's
ground truth next to the measured tiers, and how much of it the study recovered. Only this page
reads the truth; the study and derive never do.
"""

from __future__ import annotations

import json
from pathlib import Path

import streamlit as st

from analysis.derive import format_ranges
from analysis.errors import StudyError
from analysis.figures import FORMATS
from analysis.occupancy import suggested_budget
from dashboard import causal, data, ui

#: radio label -> tier method (the first is the default)
METHODS = {"measured (roles)": "roles", "change points (depth-ordered)": "changepoint",
           "HERMES fixed (10% / 70%)": "hermes-fixed"}
#: tier method -> how the page names it
METHOD_NAMES = {"roles": "measured head roles", "changepoint": "change points (depth-ordered)",
                "hermes-fixed": "HERMES's fixed 10% / 70% split"}
SHORT_NAMES = {"roles": "roles", "changepoint": "change points", "hermes-fixed": "HERMES fixed"}
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
    method_label = c2.radio("Tier method", list(METHODS), key="study_method", horizontal=True,
                            help="roles: each layer by its heads' measured recency and anchors, in any depth order; "
                                 "change points: three depth-ordered segments; HERMES fixed: by relative depth")
    default_budget = suggested_budget(max(info["tokens_per_frame"], 1), max(info["frames"], 1))
    budget = int(c3.number_input("Budget (video tokens / layer)", min_value=1, value=default_budget,
                                 key="study_budget", help="written into both specs; stream --spec needs one"))
    if not queries:
        st.warning("Pick at least one query kind.")
        return
    chosen = METHODS[method_label]
    method = data.tier_method(ref, chosen)
    if method != chosen:
        st.caption(f"Tiers by **{METHOD_NAMES[method]}**: this recording has no in-frame position mass, which "
                   "tiers by role need (re-record the study to measure roles).")
    else:
        st.caption(f"Tiers by **{METHOD_NAMES[method]}**.")

    spec_dicts: dict[str, dict] | None = None
    with ui.guard("Deriving the specs"):
        spec_dicts = data.specs(ref, queries, budget)
    if spec_dicts is not None:
        cols = st.columns(2)
        for col, name in zip(cols, SPEC_NAMES):
            src = spec_dicts[name]["source"]
            how = src.get("tier_method", src["method"])
            col.markdown(f"**{name} tiers**{f' ({how})' if how != name else ''}: {format_ranges(src['tiers'])}")
            notes = _source_notes(src)
            failed = [k for k, ok in src.get("checks", {}).items() if not ok]
            if failed:
                notes.append("contradicts HERMES's picture: " + ", ".join(failed))
            elif src.get("checks"):
                notes.append("agrees with HERMES's picture (recency falls, anchors rise with depth)")
            if notes:
                col.caption("; ".join(notes))

    with ui.guard("Study figures") as g:
        figures = data.study_figures(ref, method, queries)
        notes = data.tier_notes(data.tiers(ref, method, queries))
    if g.ok:
        st.plotly_chart(figures["depth_profile"], theme=None, key="study_depth")
        left, right = st.columns(2)
        with left:
            st.plotly_chart(figures["head_tiers"], theme=None, key="study_head_tiers")
            if notes:
                st.caption("Tier map: " + "; ".join(notes) + ".")
        with right:
            if "anchor_profile" in figures:
                st.plotly_chart(figures["anchor_profile"], theme=None, key="study_anchor")
            st.plotly_chart(figures["age_heatmap"], theme=None, key="study_age")

    if data.is_planted(info["model"]):
        _planted_truth(ref, info["model"], method, queries)

    study_tiers = None
    with ui.guard("Measuring the study's tiers"):
        study_tiers = data.tiers(ref, method, queries)
    causal.render(ref.path, study_tiers)

    if spec_dicts is not None:
        st.subheader("Specs side by side")
        with ui.guard("Comparing specs"):
            table = data.spec_table(spec_dicts)
            st.dataframe(table, hide_index=True, key="study_spec_table")
            st.caption(f"{int(table['tiers agree'].sum())} of {len(table)} layers in the same tier.")
        _write_spec(spec_dicts, runs)
    _export(ref, method, queries, runs)


def _source_notes(src: dict) -> list[str]:
    """A derived spec's own notes on its tier map: layers with no role, layers out of depth order."""
    notes = []
    if src.get("no_role_layers"):
        notes.append("no role measured in " + data.layer_list(src["no_role_layers"]))
    if src.get("out_of_order_layers"):
        notes.append("out of depth order: " + data.layer_list(src["out_of_order_layers"]))
    return notes


def _share(hit: int, total: int) -> str:
    return f"{hit / total:.0%}" if total else "n/a"


def _planted_truth(ref: data.RecordingRef, model_name: str, method: str, queries: tuple[str, ...]) -> None:
    """The planted model's ground truth next to the measured tiers, with how much of it was recovered."""
    st.subheader("Planted ground truth")
    with ui.guard("Comparing with the planted truth") as g:
        cmp = data.truth_comparison(ref, method, queries)
        fig = data.truth_figure(ref, method, queries)
    if not g.ok:
        return
    (lh, lt), (hh, ht) = cmp.layer_agreement, cmp.head_agreement
    c1, c2, c3 = st.columns([1, 1, 2])
    c1.metric("Layer tiers recovered", _share(lh, lt), help=f"{lh} of {lt} layers with a planted role are in "
                                                             "their planted tier")
    c2.metric("Head roles recovered", _share(hh, ht), help=f"{hh} of {ht} heads with a planted role are in the "
                                                           "tier their role plants")
    others = []
    for m in METHODS.values():
        if m == method or data.tier_method(ref, m) != m:
            continue
        try:
            hit, total = data.truth_comparison(ref, m, queries).layer_agreement
        except StudyError:  # another method failing (e.g. too few layers) must not hide this one's comparison
            continue
        others.append(f"{SHORT_NAMES[m]} {_share(hit, total)}")
    c3.caption(f"`{model_name}` was built with these memory roles; the study did not read them. "
               f"By **{METHOD_NAMES[method]}**: {lh} of {lt} layers with a role in their planted tier, "
               f"{hh} of {ht} heads with a role in the tier it plants (recency: sensory, mixed: working, "
               "anchor: long-term); diffuse layers and heads are not scored."
               + (f" Layer tiers recovered by the other methods: {', '.join(others)}." if others else ""))
    st.plotly_chart(fig, theme=None, key="study_truth")
    st.caption("Left: planted layer kind and head roles (R recency, M mixed, A anchor; grey: diffuse, no role). "
               "Right: the measured tiers; ✗ marks a layer or head outside its planted tier.")


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
