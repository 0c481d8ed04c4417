"""Figures of a causal memory map, each drawn from its tidy table (written beside it as parquet and csv).

* ``necessity_heatmap``: layer group x frame-age bin, the mean drop of the correct option's log-probability
  when the bin is knocked out there, with its 95% interval: in print each cell of a small map reads
  ``mean ± half-width`` (``*``: the interval excludes 0; larger maps mark those cells with a dot), in HTML
  the hover gives the interval;
* ``position_necessity``: the same over in-frame positions (anchors are positions);
* ``direct_heatmap``: layer x age bin, the direct effect (relative change of a head's output at the answer
  row, head mean) with its interval;
* ``attention_causal``: per tier, the answer row's attention mass on a bin against the causal effect of
  removing it (answer drop, direct effect), one point per question, layer and bin; the per-layer Spearman
  rho with its interval is the ``correlation`` table beside it.

The drop is signed (a knockout can help the answer), so the heat maps use a diverging map centred at 0;
direct effects are >= 0 and use the project's sequential map.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from analysis import style
from analysis.causal_stats import CausalMap, correlations, direct_map, necessity_map, scatter_data
from analysis.derive import TIERS, TierAssignment
from analysis.figures import parse_formats, write_figure, write_table

FIGURES = ("necessity_heatmap", "position_necessity", "direct_heatmap", "attention_causal")
DIVERGING = "RdBu_r"
#: maps with at most this many cells get their interval written into each cell
ANNOTATE_CELLS = 64


def _grid(df: pd.DataFrame, value: str, index: str = "layers", columns: str = "bin") -> pd.DataFrame:
    order = df.drop_duplicates(index).sort_values("layer_first" if "layer_first" in df else index)[index].tolist()
    return df.pivot(index=index, columns=columns, values=value).reindex(order)


def _excludes_zero(lo: pd.DataFrame, hi: pd.DataFrame) -> np.ndarray:
    return ((lo.to_numpy() > 0) | (hi.to_numpy() < 0)) & np.isfinite(lo.to_numpy())


def _mpl_map(df: pd.DataFrame, value: str, label: str, xlabel: str, signed: bool, index: str) -> Figure:
    grid, lo, hi = (_grid(df, c, index) for c in (value, f"{value}_lo", f"{value}_hi"))
    z = grid.to_numpy(dtype=float)
    wide = z.size <= ANNOTATE_CELLS and z.shape[1] > 4  # written cells need room
    fig = Figure(figsize=(style.DOUBLE_WIDTH_IN if wide else style.COLUMN_WIDTH_IN, 0.9 + 0.32 * max(len(grid), 3)))
    ax = fig.add_subplot()
    finite = z[np.isfinite(z)]
    if signed:
        bound = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-9)
        im = ax.imshow(z, aspect="auto", cmap=DIVERGING, norm=TwoSlopeNorm(0.0, -bound, bound), interpolation="nearest")
    else:
        im = ax.imshow(z, aspect="auto", cmap=style.cmap(), interpolation="nearest")
    sig = _excludes_zero(lo, hi)
    annotate = z.size <= ANNOTATE_CELLS
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            if not math.isfinite(z[i, j]):
                continue
            if annotate:  # the mean, and half the 95% interval; * where the interval excludes 0
                half = (hi.iat[i, j] - lo.iat[i, j]) / 2
                ax.text(j, i, f"{z[i, j]:.2f}{'*' if sig[i, j] else ''}\n±{half:.2f}", ha="center", va="center",
                        fontsize=5, color="black")
            elif sig[i, j]:
                ax.plot(j, i, marker=".", color="black", ms=2)
    ax.set_xticks(range(grid.shape[1]), [str(c) for c in grid.columns])
    ax.set_yticks(range(grid.shape[0]), list(grid.index))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("layer" if index == "layer" else "layer group")
    fig.colorbar(im, ax=ax, label=label, pad=0.02)
    return fig


def _plotly_map(df: pd.DataFrame, value: str, label: str, xlabel: str, signed: bool, index: str,
                title: str) -> go.Figure:
    grid, lo, hi = (_grid(df, c, index) for c in (value, f"{value}_lo", f"{value}_hi"))
    text = np.vectorize(lambda a, b: f"[{a:.3f}, {b:.3f}]")(lo.to_numpy(float), hi.to_numpy(float))
    z = grid.to_numpy(float)
    finite = z[np.isfinite(z)]
    bound = max(float(np.abs(finite).max()) if finite.size else 1.0, 1e-9)
    scale = "RdBu" if signed else style.plotly_colorscale()
    heat = go.Heatmap(z=z, x=[str(c) for c in grid.columns], y=[str(i) for i in grid.index], customdata=text,
                      colorscale=scale, reversescale=signed, zmid=0 if signed else None,
                      zmin=-bound if signed else None, zmax=bound if signed else None,
                      colorbar={"title": {"text": label}},
                      hovertemplate=f"layer %{{y}}<br>{xlabel} %{{x}}<br>{label} %{{z:.4f}}<br>95% CI %{{customdata}}"
                                    "<extra></extra>")
    fig = go.Figure(heat)
    fig.update_layout(**style.plotly_layout(0.9 + 0.28 * max(len(grid), 3), title=title))
    fig.update_xaxes(title_text=xlabel, type="category")
    fig.update_yaxes(title_text="layer" if index == "layer" else "layer group", autorange="reversed", type="category")
    return fig


AGE_LABEL = "frame-age bin (0 = newest)"


def mpl_necessity(df):
    return _mpl_map(df, "drop", "drop in log P(correct)", AGE_LABEL, True, "layers")


def plotly_necessity(df):
    return _plotly_map(df, "drop", "drop", AGE_LABEL, True, "layers", "Necessity by layer and frame age")


def mpl_position(df):
    return _mpl_map(df, "drop", "drop in log P(correct)", "in-frame position (group)", True, "layers")


def plotly_position(df):
    return _plotly_map(df, "drop", "drop", "position", True, "layers", "Necessity by in-frame position")


def mpl_direct(df):
    return _mpl_map(df.rename(columns={"layer": "layers"}).assign(layer_first=df["layer"]), "direct",
                    "direct effect (relative)", AGE_LABEL, False, "layers")


def plotly_direct(df):
    return _plotly_map(df.rename(columns={"layer": "layers"}).assign(layer_first=df["layer"]), "direct", "direct",
                       AGE_LABEL, False, "layers", "Direct effect by layer and frame age")


SCATTER_EFFECTS = (("drop", "answer drop"), ("direct", "direct effect"))


def mpl_scatter(df: pd.DataFrame) -> Figure:
    tiers = [t for t in TIERS if t in set(df["tier"])]
    fig = Figure(figsize=(style.DOUBLE_WIDTH_IN, 3.6))
    axes = fig.subplots(len(SCATTER_EFFECTS), max(len(tiers), 1), squeeze=False, sharex=True)
    for r, (col, label) in enumerate(SCATTER_EFFECTS):
        for c, tier in enumerate(tiers):
            ax, d = axes[r, c], df[df["tier"] == tier]
            ax.scatter(d["attention"], d[col], s=3, alpha=0.5, color=style.TIER_COLORS[tier], lw=0)
            if col == "drop":
                ax.axhline(0, color="0.5", lw=0.5)
            if r == 0:
                ax.set_title(tier)
            if c == 0:
                ax.set_ylabel(label)
            if r == len(SCATTER_EFFECTS) - 1:
                ax.set_xlabel("attention mass on the bin")
    return fig


def plotly_scatter(df: pd.DataFrame) -> go.Figure:
    tiers = [t for t in TIERS if t in set(df["tier"])]
    fig = make_subplots(rows=len(SCATTER_EFFECTS), cols=max(len(tiers), 1), shared_xaxes=True,
                        column_titles=tiers or None)
    for r, (col, label) in enumerate(SCATTER_EFFECTS, start=1):
        for c, tier in enumerate(tiers, start=1):
            d = df[df["tier"] == tier]
            fig.add_trace(go.Scattergl(x=d["attention"], y=d[col], mode="markers", name=tier, showlegend=r == 1,
                                       marker={"color": style.TIER_COLORS[tier], "size": 4, "opacity": 0.5},
                                       customdata=np.stack([d["layer"], d["bin"]], axis=-1),
                                       hovertemplate="layer %{customdata[0]}, bin %{customdata[1]}<br>attention "
                                                     f"%{{x:.4f}}<br>{label} %{{y:.4f}}<extra></extra>"),
                          row=r, col=c)
            if c == 1:
                fig.update_yaxes(title_text=label, row=r, col=c)
    fig.update_xaxes(title_text="attention mass on the bin", row=len(SCATTER_EFFECTS))
    fig.update_layout(**style.plotly_layout(3.6, style.DOUBLE_WIDTH_IN, title="Attention against causal effect"))
    return fig


RENDERERS = {"necessity_heatmap": (mpl_necessity, plotly_necessity),
             "position_necessity": (mpl_position, plotly_position),
             "direct_heatmap": (mpl_direct, plotly_direct),
             "attention_causal": (mpl_scatter, plotly_scatter)}


def figure_data(cmap: CausalMap, tiers: TierAssignment) -> dict[str, pd.DataFrame]:
    """Each figure's tidy table; a map without answer-level knockouts has the direct heat map alone, and
    one without position knockouts no position map."""
    data: dict[str, pd.DataFrame] = {}
    if not cmap.effects.empty:
        data["necessity_heatmap"] = necessity_map(cmap, "age")
        pos = necessity_map(cmap, "position")
        if len(pos):
            data["position_necessity"] = pos
    data["direct_heatmap"] = direct_map(cmap, "age")
    data["attention_causal"] = scatter_data(cmap, tiers)
    return data


def write_causal_figures(cmap: CausalMap, out_dir: str | Path, tiers: TierAssignment,
                         formats: str | Sequence[str] = ("pdf", "png", "svg", "html")) -> list[Path]:
    """Every figure in every format, its tidy table, and the per-layer ``correlation`` table; the paths written.

    Args:
        tiers: the (attention-derived) tiers the scatter is split by.
    """
    fmts = parse_formats(formats)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, df in figure_data(cmap, tiers).items():
        written += write_figure(name, df, RENDERERS[name], fmts, out)
    written += write_table(correlations(cmap, tiers), out / "correlation")
    return written


__all__ = ["FIGURES", "figure_data", "write_causal_figures"]
