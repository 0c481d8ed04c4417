"""The study page's causal section: a causal memory map (``hermes-lab causal --out DIR``) beside the study.

Shown under the study's figures: the necessity heat map (layer group x frame age, 95% intervals on hover),
the direct-effect heat map, attention against causal effect per tier, the per-layer correlation, and
the tiers the map gives (by the answer's and by the heads' change) next to the study's measured tiers.
A map is found in the study folder (``DIR/causal``), anywhere under the runs folder, or typed in.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from analysis.causal_figures import plotly_direct, plotly_necessity, plotly_scatter
from analysis.causal_stats import (
    EFFECTS,
    CausalMap,
    causal_tiers,
    correlations,
    direct_map,
    necessity_map,
    scatter_data,
)
from analysis.derive import TierAssignment
from analysis.errors import StudyError
from dashboard import plots, ui

MAP_FILE = "causal.json"


def _stamp(path: Path) -> tuple:
    return tuple((f.name, f.stat().st_mtime_ns) for f in sorted(path.glob("*")) if f.is_file())


def find_maps(study: str | None, runs: Path) -> list[str]:
    """Causal map folders: the study's own ``causal/`` first, then any under the runs folder (newest first)."""
    found: list[Path] = []
    if study:
        own = Path(study) / "causal"
        if (own / MAP_FILE).is_file():
            found.append(own)
    if runs.is_dir():
        found += sorted((p.parent for p in runs.rglob(MAP_FILE)), key=lambda p: -p.stat().st_mtime)
    return list(dict.fromkeys(str(p) for p in found))


@st.cache_data(show_spinner="Reading the causal map…", max_entries=8)
def load(path: str, stamp: tuple) -> CausalMap:
    return CausalMap.load(path)


@st.cache_data(show_spinner=False, max_entries=8)
def figures(path: str, stamp: tuple, tiers: tuple[str, ...]) -> dict[str, go.Figure]:
    cmap = load(path, stamp)
    split = TierAssignment(tiers, method="roles")
    out = {"direct": plotly_direct(direct_map(cmap, "age")), "scatter": plotly_scatter(scatter_data(cmap, split))}
    if not cmap.effects.empty:
        out["necessity"] = plotly_necessity(necessity_map(cmap, "age"))
    return {k: plots.fit_width(v) for k, v in out.items()}


@st.cache_data(show_spinner=False, max_entries=8)
def tier_table(path: str, stamp: tuple, tiers: tuple[str, ...]) -> pd.DataFrame:
    """Per layer: the study's tier and the map's, by each effect it has, and the attention-causal rho."""
    cmap = load(path, stamp)
    table = pd.DataFrame({"layer": range(len(tiers)), "study": list(tiers)})
    for effect in EFFECTS:
        try:
            table[f"causal ({effect})"] = list(causal_tiers(cmap, effect).layers)
        except StudyError:  # a map without answer knockouts has no answer tiers: the column is left out
            continue
    rho = correlations(cmap, TierAssignment(tiers, method="roles"))
    for col in ("rho_drop", "rho_direct"):
        if col in rho:
            table[f"{col} (attention vs effect)"] = rho[col].round(3).tolist()
    return table


def render(study: str | None, tiers: TierAssignment | None) -> None:
    """The causal section of the study page; ``tiers``: the study's measured tiers (None: no study tiers)."""
    st.subheader("Causal memory map")
    runs = ui.settings().runs_dir
    maps = find_maps(study, runs)
    c1, c2 = st.columns([2, 3])
    pick = c1.selectbox("Causal map", maps or ["(none found)"], key="causal_pick",
                        help="a `hermes-lab causal --out` folder in the study folder (causal/) or under --runs")
    typed = c2.text_input("or a folder", value="", key="causal_path")
    path = typed.strip() or (pick if maps else "")
    if not path:
        st.caption(f"No causal map yet. Make one with `hermes-lab causal --data DATA --out {study or 'DIR'}/causal` "
                   "(on the same model) and it shows here.")
        return
    with ui.guard("Reading the causal map") as g:
        stamp = _stamp(Path(path))
        cmap = load(path, stamp)
    if not g.ok:
        return
    L = cmap.num_layers
    if tiers is not None and tiers.num_layers != L:
        st.warning(f"The map has {L} layers and the study {tiers.num_layers}: they are of different models; "
                   "the study's tiers are not compared.")
        tiers = None
    split = tuple(tiers.layers) if tiers is not None else tuple(cmap.meta.get("scatter_tiers", {}).get(
        "layers") or ["working"] * L)
    cost = cmap.meta.get("cost", {})
    st.caption(f"`{cmap.meta.get('model')}`, {cmap.meta.get('questions')} questions of "
               f"{len(cmap.meta.get('streams') or [])} streams, {cmap.meta['settings'].get('mode')}; "
               f"{cost.get('forwards', '?')} forwards where asking once per knockout takes "
               f"{cost.get('naive_forwards', '?')}.")
    with ui.guard("Drawing the causal map") as g:
        figs = figures(path, stamp, split)
        table = tier_table(path, stamp, split)
    if not g.ok:
        return
    if "necessity" in figs:
        st.plotly_chart(figs["necessity"], theme=None, key="causal_necessity")
        st.caption("Drop in the correct option's log-probability when a layer group loses a frame-age bin "
                   "(0 = newest); hover for the 95% interval over streams.")
    st.plotly_chart(figs["direct"], theme=None, key="causal_direct")
    st.plotly_chart(figs["scatter"], theme=None, key="causal_scatter")
    st.dataframe(table, hide_index=True, key="causal_tiers")
    compared = [c for c in table.columns if c.startswith("causal (")]
    if tiers is not None and compared:
        agree = {c: int((table[c] == table["study"]).sum()) for c in compared}
        st.caption("Layers in the same tier as the study's: " + ", ".join(f"{c} {n} of {L}" for c, n in agree.items())
                   + ". Derive a spec from the map with `hermes-lab derive --causal " + path + "`.")


__all__ = ["find_maps", "render"]
