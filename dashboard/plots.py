"""Plotly figures for the dashboard, in the paper's colours (:mod:`analysis.style`).

Pure functions from arrays or tidy tables to ``go.Figure``; they draw, they do
not compute. Heatmaps use the shared sequential map, tiers the shared tier
palette, and lines/bars colours sampled from the same map, so a screenshot
reads like the paper figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.colors import to_hex
from plotly.subplots import make_subplots

from analysis import style

#: the map's darkest colour, used for single series (as analysis.figures does)
LINE = to_hex(style.cmap()(0.0))
#: a bright colour of the same map for what is selected
HIGHLIGHT = to_hex(style.cmap()(0.85))


def layout(height_in: float, title: str | None = None) -> dict:
    """The paper layout at screen size, with the width left to the page (charts stretch)."""
    out = style.plotly_layout(height_in, title=title)
    out.pop("width")
    out["autosize"] = True
    return out


def fit_width(fig: go.Figure) -> go.Figure:
    """Let a figure built for a fixed paper width stretch to its column."""
    fig.update_layout(width=None, autosize=True)
    return fig


def palette(n: int) -> list[str]:
    """``n`` distinct colours sampled from the shared map (the bright yellow end left out: unreadable on white)."""
    return [to_hex(style.cmap()(0.85 * i / max(n - 1, 1))) for i in range(n)]


def _counts(n: int) -> dict:
    """Axis settings for a count axis (layers, frames, positions): whole-number ticks only."""
    return {"dtick": 1} if n <= 24 else {"tickformat": "d"}


def _heatmap(z: np.ndarray, x, y, title: str, hover: str, zmin=None, zmax=None) -> go.Heatmap:
    return go.Heatmap(z=z, x=x, y=y, colorscale=style.plotly_colorscale(), zmin=zmin, zmax=zmax,
                      colorbar={"title": {"text": title}}, hovertemplate=hover + "<extra></extra>")


# --------------------------------------------------------------------------- explorer
def age_heatmap(grid: np.ndarray, layer: int | None = None) -> go.Figure:
    """Layers × frame ages (0 = newest) of attention mass; ``layer`` is outlined.

    Args:
        grid: (L, A) mass, NaN where an age never occurs.
    """
    L, A = grid.shape
    fig = go.Figure(_heatmap(grid, list(range(A)), list(range(L)), "mass",
                             "layer %{y}<br>age %{x}<br>mass %{z:.4f}"))
    fig.update_layout(**layout(2.6, "Attention mass by frame age"))
    fig.update_xaxes(title_text="frame age (0 = newest)", **_counts(A))
    fig.update_yaxes(title_text="layer", autorange="reversed", **_counts(L))
    if layer is not None:
        # outline plus a marked tick: a single colour cannot stand out on both ends of the map
        fig.add_shape(type="rect", x0=-0.5, x1=A - 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line={"color": "black", "width": 2}, fillcolor="rgba(0,0,0,0)")
        step = max(1, L // 12)
        # every step-th layer, the chosen one always, and none crowding it
        ticks = list(range(L)) if L <= 24 else \
            sorted({t for t in range(0, L, step) if abs(t - layer) >= max(step // 2, 1) + 1} | {layer})
        fig.update_yaxes(tickvals=ticks, ticktext=[f"<b>▶ {t}</b>" if t == layer else str(t) for t in ticks])
    return fig


def thumbnail_strip(thumbs: np.ndarray) -> np.ndarray:
    """(N, h, w, 3) -> one (h, N·w, 3) strip, frame i at columns [i·w, (i+1)·w)."""
    return np.concatenate(list(thumbs), axis=1)


def frame_strip(mass: np.ndarray, thumbs: np.ndarray | None, selected: int | None = None) -> go.Figure:
    """Attention mass per frame (bars) above the video's own frames, on one frame axis.

    Args:
        mass: (F,) mass per frame, NaN for frames not streamed yet.
        thumbs: (N, h, w, 3) uint8 thumbnails of the first N frames, or None.
        selected: the frame to highlight.
    """
    F = mass.shape[0]
    colors = [HIGHLIGHT if f == selected else LINE for f in range(F)]
    bar = go.Bar(x=list(range(F)), y=mass, marker={"color": colors}, name="mass",
                 hovertemplate="frame %{x}<br>mass %{y:.4f}<extra></extra>")
    if thumbs is None or len(thumbs) == 0:
        fig = go.Figure(bar)
        fig.update_layout(**layout(2.0, "Attention per frame"))
        fig.update_xaxes(title_text="frame", range=[-0.5, F - 0.5])
        fig.update_yaxes(title_text="attention mass")
        return fig
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.72, 0.28], vertical_spacing=0.04)
    fig.add_trace(bar, row=1, col=1)
    n, h, w, _ = thumbs.shape
    # each thumbnail spans one unit of the frame axis, centred on its frame index
    fig.add_trace(go.Image(z=thumbnail_strip(thumbs[:F]), x0=-0.5 + 0.5 / w, dx=1 / w, y0=0.5 / w, dy=1 / w,
                           hovertemplate="frame %{x:.0f}<extra></extra>", name="frames"), row=2, col=1)
    fig.update_layout(**layout(2.6, "Attention per frame, over the video's frames"))
    fig.update_xaxes(range=[-0.5, F - 0.5])
    fig.update_xaxes(title_text="frame", row=2, col=1)
    fig.update_yaxes(title_text="attention mass", row=1, col=1)
    # free aspect: the strip must follow the shared frame axis, not keep square pixels
    fig.update_yaxes(scaleanchor=False, showticklabels=False, showgrid=False, range=[h / w, 0], row=2, col=1)
    return fig


def position_profile(profile: np.ndarray, layer: int, tier: str | None) -> go.Figure:
    """Within-frame attention of one layer (a step line per slot) with the uniform level dashed.

    Args:
        profile: (P,) mass per in-frame position, summing to 1.
    """
    P = profile.shape[0]
    color = style.TIER_COLORS.get(tier or "", LINE)
    label = f"layer {layer}" + (f" ({tier})" if tier else "")
    fig = go.Figure(go.Scatter(x=list(range(P)), y=profile, mode="lines+markers", name=label,
                               line={"color": color, "shape": "hvh"},
                               hovertemplate="position %{x}<br>mass %{y:.4f}<extra></extra>"))
    fig.add_hline(y=1 / P, line_dash="dash", line_color="gray", annotation_text="uniform")
    fig.update_layout(**layout(2.0, f"Within-frame attention, {label}"))
    fig.update_xaxes(title_text="position inside frame", **_counts(P))
    # from zero: a near-uniform profile must look flat, not magnified noise
    fig.update_yaxes(title_text="attention mass", rangemode="tozero")
    return fig


def raw_heatmap(rows: np.ndarray, frames: Sequence[int], log: bool = False) -> go.Figure:
    """Raw attention of the first W steps over every cached key.

    Args:
        rows: (W, S) attention per key, NaN where a step had fewer keys.
        frames: frames streamed at each of the W steps (row labels).
        log: colour by log10 of the attention, so keys far below an attention sink stay visible.
    """
    W, S = rows.shape
    labels = [f"step {i} ({n} fr)" for i, n in enumerate(frames)]
    if log:
        with np.errstate(divide="ignore"):
            z = np.log10(rows)
        z[np.isneginf(z)] = np.nan  # exactly zero (masked) keys have no colour, as missing ones
        trace = _heatmap(z, list(range(S)), labels, "log10 attention", "%{y}<br>key %{x}<br>log10 %{z:.2f}")
    else:
        trace = _heatmap(rows, list(range(S)), labels, "attention", "%{y}<br>key %{x}<br>%{z:.5f}")
    fig = go.Figure(trace)
    fig.update_layout(**layout(max(1.4, 0.35 * W + 0.9), "Raw attention, first steps"))
    fig.update_xaxes(title_text="key (cache order: system prefix, frames old → new, query)")
    fig.update_yaxes(autorange="reversed")
    return fig


def frame_by_layer(df: pd.DataFrame, frame: int) -> go.Figure:
    """Mass on one frame per layer (bars in layer order); the three strongest layers highlighted.

    Args:
        df: :func:`analysis.explore.frame_by_layer` output (``layer, mass, relative, rank``).
    """
    d = df.sort_values("layer")
    colors = [HIGHLIGHT if r <= 3 else LINE for r in d["rank"]]
    fig = go.Figure(go.Bar(x=d["layer"], y=d["mass"], marker={"color": colors}, customdata=d[["relative", "rank"]],
                           hovertemplate="layer %{x}<br>mass %{y:.4f}<br>×uniform %{customdata[0]:.2f}"
                                         "<br>rank %{customdata[1]}<extra></extra>"))
    fig.update_layout(**layout(2.0, f"Which layers attend to frame {frame}"))
    fig.update_xaxes(title_text="layer", **_counts(len(d)))
    fig.update_yaxes(title_text="attention mass on the frame")
    return fig


# --------------------------------------------------------------------------- planted ground truth
#: colour of "no memory role" (a planted diffuse layer or head): neutral, apart from the tier palette
NO_ROLE_COLOR = "#D9D9D9"
TRUTH_CLASSES = (*style.TIER_COLORS, "no role")
ROLE_MARK = {"recency": "R", "mixed": "M", "anchor": "A", "diffuse": ""}
MISMATCH = "✗"


def truth_vs_measured(layers: pd.DataFrame, heads: pd.DataFrame, method: str) -> go.Figure:
    """Planted truth (left) next to measured tiers (right): a layer column, then one column per head.

    Cells take the tier colours (a planted diffuse layer or head: grey); truth heads are lettered by role
    (R recency, M mixed, A anchor), and a measured cell that disagrees with a truth that has a role is
    marked ✗.

    Args:
        layers: ``layer, truth, measured, match`` per layer (:func:`dashboard.data.compare_truth`).
        heads: ``layer, head, role, truth, measured, match`` per head.
        method: the tier method of the measured side (for its title).
    """
    L, H = len(layers), int(heads["head"].max()) + 1
    cols = ["layer", *(f"h{h}" for h in range(H))]
    index = {c: i for i, c in enumerate(TRUTH_CLASSES)}

    def missed(match) -> bool:  # True / False / None (not scored), whatever pandas made of the column
        return match is not None and not pd.isna(match) and not bool(match)

    def verdict(measured: str, match, planted: str | None) -> str:
        scored = match is not None and not pd.isna(match)
        return f"measured {measured}" + ("" if not scored else f" ✗ (planted {planted})" if missed(match) else " ✓")

    grid_truth, grid_meas, text_truth, text_meas, hover_truth, hover_meas = ([] for _ in range(6))
    by_layer = dict(list(heads.sort_values(["layer", "head"]).groupby("layer")))
    for lay in layers.sort_values("layer").itertuples(index=False):
        hs = list(by_layer[lay.layer].itertuples(index=False))
        planted = lay.truth if lay.truth != "diffuse" else "no role"
        grid_truth.append([index[planted], *(index[x.truth if isinstance(x.truth, str) else "no role"] for x in hs)])
        grid_meas.append([index[lay.measured], *(index[x.measured] for x in hs)])
        text_truth.append(["", *(ROLE_MARK.get(x.role, "") for x in hs)])
        text_meas.append([MISMATCH if missed(lay.match) else "", *(MISMATCH if missed(x.match) else "" for x in hs)])
        hover_truth.append([f"planted {lay.truth}", *(f"{x.role} head" + (
            f" (plants {x.truth})" if isinstance(x.truth, str) else " (no role)") for x in hs)])
        hover_meas.append([verdict(lay.measured, lay.match, lay.truth),
                           *(verdict(x.measured, x.match, x.truth) for x in hs)])
    n = len(TRUTH_CLASSES)
    colors = [*style.TIER_COLORS.values(), NO_ROLE_COLOR]
    scale = [[edge / n, c] for i, c in enumerate(colors) for edge in (i, i + 1)]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("planted truth", f"measured ({method})"))
    ys = sorted(layers["layer"])
    for col, (z, text, hover) in enumerate(((grid_truth, text_truth, hover_truth),
                                            (grid_meas, text_meas, hover_meas)), start=1):
        fig.add_trace(go.Heatmap(z=z, x=cols, y=ys, zmin=-0.5, zmax=n - 0.5, colorscale=scale, text=text,
                                 texttemplate="%{text}", customdata=hover, xgap=2, ygap=1, showscale=col == 2,
                                 colorbar={"tickvals": list(range(n)), "ticktext": list(TRUTH_CLASSES)},
                                 hovertemplate="layer %{y} · %{x}<br>%{customdata}<extra></extra>"),
                      row=1, col=col)
    fig.update_layout(**layout(max(1.6, 0.16 * L + 0.8), "Planted truth vs measured tiers"))
    fig.update_layout(margin={"t": 70})  # room for the panel titles under the figure's
    fig.update_xaxes(type="category", side="bottom")
    fig.update_yaxes(autorange="reversed", **_counts(L))
    fig.update_yaxes(title_text="layer", row=1, col=1)
    return fig


# --------------------------------------------------------------------------- occupancy
def occupancy_heatmap(held: np.ndarray, title: str) -> go.Figure:
    """Layers × frames: share of each frame's tokens a layer holds (1 all, 0 evicted, blank not yet streamed).

    Args:
        held: (L, F) shares in [0, 1], NaN where there is nothing to hold.
    """
    L, F = held.shape
    fig = go.Figure(_heatmap(held, list(range(F)), list(range(L)), "held",
                             "layer %{y}<br>frame %{x}<br>held %{z:.2f}", zmin=0, zmax=1))
    fig.update_layout(**layout(2.4, title))
    fig.update_xaxes(title_text="frame", **_counts(F))
    fig.update_yaxes(title_text="layer", autorange="reversed", **_counts(L))
    return fig


def head_lengths_heatmap(lengths: np.ndarray, title: str) -> go.Figure:
    """(L, Hkv) rows each KV head holds after one step, for a run with a per-head cache."""
    L, H = lengths.shape
    fig = go.Figure(_heatmap(lengths.astype(float), list(range(H)), list(range(L)), "rows",
                             "layer %{y}<br>KV head %{x}<br>%{z:.0f} rows"))
    fig.update_layout(**layout(2.4, f"{title}: rows per KV head"))
    fig.update_xaxes(title_text="KV head", **_counts(H))
    fig.update_yaxes(title_text="layer", autorange="reversed", **_counts(L))
    return fig


def lines(series: Mapping[str, tuple[Sequence[float], Sequence[float]]], title: str, x_title: str, y_title: str,
          marker_x: float | None = None) -> go.Figure:
    """One line per named series (``name -> (x, y)``), coloured from the shared map; an optional vertical marker."""
    fig = go.Figure()
    xs: set = set()
    for color, (name, (x, y)) in zip(palette(len(series)), series.items()):
        fig.add_trace(go.Scatter(x=list(x), y=list(y), mode="lines+markers", name=name, line={"color": color}))
        xs.update(float(v) for v in x)
    if marker_x is not None:
        fig.add_vline(x=marker_x, line_dash="dot", line_color="gray")
    fig.update_layout(**layout(2.0, title))
    # ticks where the data are (chunk boundaries), not at fractions of a frame
    fig.update_xaxes(title_text=x_title, **({"tickvals": sorted(xs)} if 0 < len(xs) <= 16 else {}))
    # from zero: two policies a few bytes apart must not look twice as far apart
    fig.update_yaxes(title_text=y_title, rangemode="tozero")
    return fig


__all__ = [
    "age_heatmap", "fit_width", "frame_by_layer", "frame_strip", "head_lengths_heatmap", "layout", "lines",
    "occupancy_heatmap", "palette",
    "position_profile", "raw_heatmap", "thumbnail_strip", "truth_vs_measured",
]
