"""Paper figures of a recording, in matplotlib (pdf/png/svg) and plotly (html).

Four figures, each drawn from its tidy table (:mod:`analysis.tidy`), which is
written beside it as ``NAME.parquet`` and ``NAME.csv``:

* ``age_heatmap``: layer × frame age, mean attention mass;
* ``recency_depth``: recency index (newest-10% share, decay rate) vs depth, tier bands shaded;
* ``anchor_profile``: within-frame position mass for one layer per tier;
* ``head_tiers``: layers × heads coloured by tier.

matplotlib figures are built with the object-oriented :class:`Figure` API (no
pyplot, no global backend), so this module works headless and in Streamlit
alike. HTML embeds plotly.js: the file opens with no network.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import pandas as pd
import plotly.graph_objects as go
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator
from plotly.subplots import make_subplots

from analysis import style
from analysis.derive import TIERS, TierAssignment, measured_tiers
from analysis.errors import StudyError
from analysis.metrics import QuerySelector, has
from analysis.tidy import (
    age_heatmap_data,
    anchor_profile_data,
    head_tier_data,
    recency_depth_data,
)
from probes.recording import Recording

FIGURES = ("age_heatmap", "recency_depth", "anchor_profile", "head_tiers")
MPL_FORMATS = ("pdf", "png", "svg")
FORMATS = (*MPL_FORMATS, "html")
METRIC_LABELS = {"newest10": "mass on newest 10%", "decay": "decay rate k"}


# --------------------------------------------------------------------------- matplotlib
def _tier_legend(ax, tiers: Sequence[str] = TIERS, **kwargs) -> None:
    handles = [Patch(facecolor=style.TIER_COLORS[t], label=t) for t in tiers]
    ax.legend(handles=handles, **kwargs)


def mpl_age_heatmap(df: pd.DataFrame) -> Figure:
    """Heatmap of ``mass`` over (layer rows, age columns) from :func:`analysis.tidy.age_heatmap_data`."""
    grid = df.pivot(index="layer", columns="age", values="mass").sort_index()
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN, 2.4))
    ax = fig.add_subplot()
    im = ax.imshow(grid.to_numpy(), aspect="auto", cmap=style.cmap(), interpolation="nearest",
                   extent=(-0.5, grid.shape[1] - 0.5, grid.shape[0] - 0.5, -0.5))
    ax.set_xlabel("frame age (0 = newest)")
    ax.set_ylabel("layer")
    _integer_ticks(ax)
    fig.colorbar(im, ax=ax, label="attention mass", pad=0.02)
    return fig


def _shade_tiers(ax, tiers: Sequence[str]) -> None:
    """Shade each contiguous run of a tier along the x (layer) axis."""
    start = 0
    for i in range(1, len(tiers) + 1):
        if i == len(tiers) or tiers[i] != tiers[start]:
            ax.axvspan(start - 0.5, i - 0.5, color=style.TIER_COLORS[tiers[start]], alpha=style.TIER_ALPHA, lw=0)
            start = i


def _integer_ticks(ax, x: bool = True, y: bool = True) -> None:
    """Layers, heads, ages and positions are counts: no fractional ticks."""
    if x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if y:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))


def _layer_tiers(df: pd.DataFrame) -> list[str]:
    return df.drop_duplicates("layer").sort_values("layer")["tier"].tolist()


def mpl_recency_depth(df: pd.DataFrame) -> Figure:
    """Recency metrics vs layer (head mean line, head range band) over tier bands."""
    metrics = list(dict.fromkeys(df["metric"]))
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN, 1.3 * len(metrics) + 0.5))
    axes = fig.subplots(len(metrics), 1, sharex=True, squeeze=False)[:, 0]
    tiers = _layer_tiers(df)
    line = to_hex(style.cmap()(0.0))
    for ax, metric in zip(axes, metrics):
        d = df[df["metric"] == metric].sort_values("layer")
        _shade_tiers(ax, tiers)
        ax.fill_between(d["layer"], d["head_min"], d["head_max"], color=line, alpha=0.15, lw=0)
        ax.plot(d["layer"], d["mean"], color=line, marker="o", ms=2.5)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    axes[-1].set_xlabel("layer")
    _integer_ticks(axes[-1], y=False)
    _tier_legend(axes[0], [t for t in TIERS if t in tiers], ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return fig


def mpl_anchor_profile(df: pd.DataFrame) -> Figure:
    """Position mass inside a frame for each chosen layer, coloured by the layer's tier."""
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN, 2.2))
    ax = fig.add_subplot()
    for (layer, tier), d in df.groupby(["layer", "tier"], sort=True):
        # positions are discrete slots: a step line shows each slot's mass without implying a slope
        ax.plot(d["position"], d["mass"], color=style.TIER_COLORS[tier], label=f"layer {layer} ({tier})",
                drawstyle="steps-mid")
    if len(df):
        ax.axhline(1 / (df["position"].max() + 1), color="0.5", lw=0.6, ls="--", label="uniform")
    ax.set_xlabel("position inside frame")
    ax.set_ylabel("attention mass")
    _integer_ticks(ax, y=False)
    ax.legend()
    return fig


def mpl_head_tiers(df: pd.DataFrame) -> Figure:
    """Layers × heads, each cell coloured by its tier."""
    grid = df.pivot(index="layer", columns="head", values="tier_index").sort_index()
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN, 2.6))
    ax = fig.add_subplot()
    ax.imshow(grid.to_numpy(), aspect="auto", cmap=style.tier_cmap(), vmin=-0.5, vmax=len(TIERS) - 0.5,
              interpolation="nearest", extent=(-0.5, grid.shape[1] - 0.5, grid.shape[0] - 0.5, -0.5))
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    _integer_ticks(ax)
    _tier_legend(ax, ncols=3, loc="lower center", bbox_to_anchor=(0.5, 1.0))
    return fig


# --------------------------------------------------------------------------- plotly
def _px_tier_bands(fig: go.Figure, tiers: Sequence[str], **where) -> None:
    start = 0
    for i in range(1, len(tiers) + 1):
        if i == len(tiers) or tiers[i] != tiers[start]:
            fig.add_vrect(x0=start - 0.5, x1=i - 0.5, fillcolor=style.TIER_COLORS[tiers[start]],
                          opacity=style.TIER_ALPHA, line_width=0, layer="below", **where)
            start = i


def plotly_age_heatmap(df: pd.DataFrame) -> go.Figure:
    grid = df.pivot(index="layer", columns="age", values="mass").sort_index()
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=list(grid.index),
                               colorscale=style.plotly_colorscale(), colorbar={"title": {"text": "mass"}},
                               hovertemplate="layer %{y}<br>age %{x}<br>mass %{z:.4f}<extra></extra>"))
    fig.update_layout(**style.plotly_layout(2.4, title="Attention mass by frame age"))
    fig.update_xaxes(title_text="frame age (0 = newest)")
    fig.update_yaxes(title_text="layer", autorange="reversed")
    return fig


def plotly_recency_depth(df: pd.DataFrame) -> go.Figure:
    metrics = list(dict.fromkeys(df["metric"]))
    tiers = _layer_tiers(df)
    fig = make_subplots(rows=len(metrics), cols=1, shared_xaxes=True)
    line = to_hex(style.cmap()(0.0))
    for r, metric in enumerate(metrics, start=1):
        d = df[df["metric"] == metric].sort_values("layer")
        fig.add_trace(go.Scatter(x=d["layer"], y=d["head_max"], mode="lines", line={"width": 0},
                                 showlegend=False, hoverinfo="skip"), row=r, col=1)
        fig.add_trace(go.Scatter(x=d["layer"], y=d["head_min"], mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor="rgba(68,1,84,0.15)", name="head range", showlegend=r == 1), row=r, col=1)
        fig.add_trace(go.Scatter(x=d["layer"], y=d["mean"], mode="lines+markers", line={"color": line},
                                 name="head mean", showlegend=r == 1, customdata=d["tier"],
                                 hovertemplate="layer %{x} (%{customdata})<br>%{y:.4f}<extra></extra>"), row=r, col=1)
        fig.update_yaxes(title_text=METRIC_LABELS.get(metric, metric), row=r, col=1)
        _px_tier_bands(fig, tiers, row=r, col=1)
    for t in TIERS:  # legend entries for the bands
        if t in tiers:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=t,
                                     marker={"color": style.TIER_COLORS[t], "symbol": "square", "size": 10}))
    fig.update_xaxes(title_text="layer", row=len(metrics), col=1)
    fig.update_layout(**style.plotly_layout(1.3 * len(metrics) + 0.5, title="Recency vs depth"))
    return fig


def plotly_anchor_profile(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for (layer, tier), d in df.groupby(["layer", "tier"], sort=True):
        fig.add_trace(go.Scatter(x=d["position"], y=d["mass"], mode="lines", name=f"layer {layer} ({tier})",
                                 line={"color": style.TIER_COLORS[tier], "shape": "hvh"}))
    if len(df):
        fig.add_hline(y=1 / (df["position"].max() + 1), line_dash="dash", line_color="gray",
                      annotation_text="uniform")
    fig.update_layout(**style.plotly_layout(2.2, title="Within-frame attention"))
    fig.update_xaxes(title_text="position inside frame")
    fig.update_yaxes(title_text="attention mass")
    return fig


def plotly_head_tiers(df: pd.DataFrame) -> go.Figure:
    grid = df.pivot(index="layer", columns="head", values="tier_index").sort_index()
    names = df.pivot(index="layer", columns="head", values="tier").sort_index()
    n = len(TIERS)
    # a stepped colorscale: tier index i owns [i/n, (i+1)/n) of the range
    scale = [[edge / n, style.TIER_COLORS[t]] for i, t in enumerate(TIERS) for edge in (i, i + 1)]
    fig = go.Figure(go.Heatmap(z=grid.to_numpy(), x=list(grid.columns), y=list(grid.index), zmin=-0.5,
                               zmax=n - 0.5, colorscale=scale, customdata=names.to_numpy(),
                               colorbar={"tickvals": list(range(n)), "ticktext": list(TIERS)},
                               hovertemplate="layer %{y} head %{x}<br>%{customdata}<extra></extra>"))
    fig.update_layout(**style.plotly_layout(2.6, title="Tier per head"))
    fig.update_xaxes(title_text="head")
    fig.update_yaxes(title_text="layer", autorange="reversed")
    return fig


RENDERERS: dict[str, tuple[Callable[[pd.DataFrame], Figure], Callable[[pd.DataFrame], go.Figure]]] = {
    "age_heatmap": (mpl_age_heatmap, plotly_age_heatmap),
    "recency_depth": (mpl_recency_depth, plotly_recency_depth),
    "anchor_profile": (mpl_anchor_profile, plotly_anchor_profile),
    "head_tiers": (mpl_head_tiers, plotly_head_tiers),
}


# --------------------------------------------------------------------------- writing
def figure_data(rec: Recording, tiers: TierAssignment, query: QuerySelector = None,
                anchor_layers: Sequence[int] | None = None) -> dict[str, pd.DataFrame]:
    """Every figure's tidy table; ``anchor_profile`` is left out when the recording has no position mass."""
    data = {
        "age_heatmap": age_heatmap_data(rec, query),
        "recency_depth": recency_depth_data(rec, tiers, query),
        "head_tiers": head_tier_data(tiers, rec.num_heads),
    }
    if has(rec, "position_mass"):
        data["anchor_profile"] = anchor_profile_data(rec, tiers, anchor_layers, query)
    return {name: data[name] for name in FIGURES if name in data}


def parse_formats(formats: str | Sequence[str]) -> tuple[str, ...]:
    """``"pdf,png"`` or a sequence -> validated, de-duplicated format names."""
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out = tuple(dict.fromkeys(f.strip().lower().lstrip(".") for f in items if f.strip()))
    bad = [f for f in out if f not in FORMATS]
    if bad or not out:
        raise StudyError(f"unknown figure format {', '.join(bad) or '(none)'}; choose from {', '.join(FORMATS)}")
    return out


def write_table(df: pd.DataFrame, stem: Path) -> list[Path]:
    """``stem.parquet`` and ``stem.csv`` of one tidy table."""
    parquet, csv = stem.with_suffix(".parquet"), stem.with_suffix(".csv")
    df.to_parquet(parquet, index=False)
    df.to_csv(csv, index=False)
    return [parquet, csv]


def write_figure(name: str, df, renderers: tuple, fmts, out: Path) -> list[Path]:
    """One figure from its tidy table: matplotlib formats, plotly HTML (plotly.js embedded), and the table."""
    mpl_render, plotly_render = renderers
    written: list[Path] = []
    mpl_fmts = [f for f in fmts if f in MPL_FORMATS]
    if mpl_fmts:
        with matplotlib.rc_context(style.mpl_rc()):
            fig = mpl_render(df)
            for fmt in mpl_fmts:
                path = out / f"{name}.{fmt}"
                fig.savefig(path, format=fmt, dpi=style.PNG_DPI if fmt == "png" else None)
                written.append(path)
    if "html" in fmts:
        path = out / f"{name}.html"
        plotly_render(df).write_html(path, include_plotlyjs=True, full_html=True)
        written.append(path)
    return written + write_table(df, out / name)


def write_figures(
    rec: Recording,
    out_dir: str | Path,
    formats: str | Sequence[str] = ("pdf", "png", "svg", "html"),
    tiers: TierAssignment | None = None,
    query: QuerySelector = None,
    anchor_layers: Sequence[int] | None = None,
) -> list[Path]:
    """Write every figure in every format plus its tidy data; returns the paths written.

    Args:
        rec: the recording.
        out_dir: created if missing; files are ``NAME.{fmt}``, ``NAME.parquet``, ``NAME.csv``.
        formats: any of pdf, png, svg (matplotlib) and html (plotly, plotly.js embedded).
        tiers: tiers to shade and map; measured from ``rec`` (:func:`~analysis.derive.measured_tiers`) if None.
        query: query kind(s) to average over (default: all).
        anchor_layers: layers for the anchor profile (default: the middle layer of each tier).
    """
    fmts = parse_formats(formats)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StudyError(f"{out} exists and is not a directory; pass a directory for the figures")
    out.mkdir(parents=True, exist_ok=True)
    tiers = measured_tiers(rec, query) if tiers is None else tiers
    if tiers.num_layers != rec.num_layers:
        raise StudyError(f"tiers cover {tiers.num_layers} layers but the recording has {rec.num_layers}")
    written: list[Path] = []
    for name, df in figure_data(rec, tiers, query, anchor_layers).items():
        written += write_figure(name, df, RENDERERS[name], fmts, out)
    return written


__all__ = [
    "FIGURES", "FORMATS", "figure_data", "parse_formats", "write_figures", "write_table",
    "mpl_age_heatmap", "mpl_recency_depth", "mpl_anchor_profile", "mpl_head_tiers",
    "plotly_age_heatmap", "plotly_recency_depth", "plotly_anchor_profile", "plotly_head_tiers",
]
