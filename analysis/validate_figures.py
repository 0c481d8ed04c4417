"""Figures of ``hermes-lab validate``: how much of a planted memory structure the study instrument recovers.

Each figure is drawn from one tidy table in the study figures' style and formats
(:func:`analysis.figures.write_figure`: matplotlib PDF/PNG/SVG, plotly HTML, the
table as ``NAME.parquet`` + ``NAME.csv`` beside it). The vocabulary (families,
methods, truth kinds, the scores) is :mod:`analysis.validate`'s.

* ``confusion``: a grid of layer-tier confusion matrices, one row per family and one
  column per tier method, truth (sensory, working, long-term, diffuse) down, predicted
  tier across; cells hold counts and are coloured by their share of the truth row;
  each panel's title carries its accuracy over the layers that have a role (diffuse
  rows are shown, never scored);
* ``anchor_roc``: the anchor-head ROC of each family (anchor concentration ranks anchor
  heads against recency and diffuse heads), the chance diagonal dashed, and derive's
  own call (a head assigned long-term) as a marker where given;
* ``breakdown``: each score against a knob of the planted models (signal strength,
  frames per study video), one panel per knob, with the targets as dotted lines
  (layer-tier accuracy and anchor AUROC 0.95, head-role accuracy and recency
  Spearman 0.90; the fixed 10% / 70% split is a baseline and has none).

The tables' columns are the contract; :func:`write_validation_figures` checks them
all before it writes anything, and a table that lacks one is a :class:`StudyError`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedFormatter, FixedLocator, NullLocator
from plotly.subplots import make_subplots

from analysis import style
from analysis.derive import TIERS
from analysis.errors import StudyError
from analysis.figures import parse_formats, write_figure
from analysis.results_figures import _colours
from analysis.validate import METHODS, TRUTH_KINDS, Validation, report, validation_tables
from hermes_policy.atomic import atomic_write_json

VALIDATION_FIGURES = ("confusion", "anchor_roc", "breakdown")

#: required columns of each input table (the key in ``tables``)
COLUMNS: dict[str, tuple[str, ...]] = {
    "confusion": ("family", "method", "truth", "predicted", "count"),
    "roc": ("family", "fpr", "tpr", "auroc", "threshold"),
    "roc_point": ("family", "fpr", "tpr"),
    "breakdown": ("family", "knob", "value", "metric", "score"),
}

METRICS = ("layer_tier_accuracy", "head_role_accuracy", "anchor_auroc", "recency_spearman",
           "fixed_split_layer_accuracy")
METRIC_LABELS = {
    "layer_tier_accuracy": "layer-tier accuracy",
    "head_role_accuracy": "head-role accuracy",
    "anchor_auroc": "anchor AUROC",
    "recency_spearman": "recency Spearman ρ",
    "fixed_split_layer_accuracy": "fixed-split layer accuracy",
}
#: what validate must reach; the fixed split is the baseline it is compared with, so it has none
TARGETS = {"layer_tier_accuracy": 0.95, "head_role_accuracy": 0.90, "anchor_auroc": 0.95, "recency_spearman": 0.90}
KNOBS = ("strength", "frames")
KNOB_LABELS = {"strength": "planted signal strength", "frames": "frames per study video"}
FAMILY_DASHES = ("--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (1, 3)))
PLOTLY_DASHES = ("dash", "dot", "dashdot", "longdashdot", "longdash")
GREY = "#808080"


# --------------------------------------------------------------------------- checking
def check_table(name: str, df: pd.DataFrame) -> None:
    """StudyError (one line, naming the columns) if ``df`` lacks a column :data:`COLUMNS` requires of ``name``."""
    missing = [c for c in COLUMNS[name] if c not in df.columns]
    if missing:
        cols = ", ".join(repr(c) for c in missing)
        raise StudyError(f"validation table {name!r} lacks column{'s' if len(missing) > 1 else ''} {cols}; "
                         f"it needs {', '.join(COLUMNS[name])}")
    if name == "confusion":
        # the matrices have fixed axes; a label off them would silently vanish from the grid
        for col, allowed in (("truth", TRUTH_KINDS), ("predicted", TIERS)):
            bad = sorted(set(map(str, df[col])) - set(allowed))
            if bad:
                raise StudyError(f"validation table 'confusion' has {col} {bad[0]!r}; use one of {', '.join(allowed)}")


def _order(values, first: Sequence[str] = ()) -> list[str]:
    """Known names in their canonical order, then the rest in order of appearance."""
    seen = list(dict.fromkeys(values))
    return [v for v in first if v in seen] + [v for v in seen if v not in first]


# --------------------------------------------------------------------------- confusion
def confusion_matrices(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame, float]]:
    """(family, method, counts, accuracy) per panel, in grid order (row-major: families, then methods).

    ``counts`` is TRUTH_KINDS × TIERS (missing cells 0, repeated rows summed); ``accuracy`` is the
    diagonal over the non-diffuse truth rows (NaN when they are empty).
    """
    out = []
    for family in _order(df["family"]):
        for method in _order(df.loc[df["family"] == family, "method"], METHODS):
            d = df[(df["family"] == family) & (df["method"] == method)]
            counts = (d.pivot_table(index="truth", columns="predicted", values="count", aggfunc="sum")
                      .reindex(index=list(TRUTH_KINDS), columns=list(TIERS)).fillna(0).astype(int))
            scored = counts.loc[list(TIERS)]
            total = int(scored.to_numpy().sum())
            out.append((family, method, counts, np.trace(scored.to_numpy()) / total if total else float("nan")))
    return out


def _shares(counts: pd.DataFrame) -> np.ndarray:
    rows = counts.to_numpy().sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(rows > 0, counts.to_numpy() / np.maximum(rows, 1), np.nan)  # an empty row has no share


def _panel_title(family: str, method: str, acc: float, sep: str = " ") -> str:
    return f"{family} · {method}" + ("" if np.isnan(acc) else f"{sep}(acc {acc:.2f})")


def _grid(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    families = _order(df["family"])
    return families, _order(df["method"], METHODS)


def mpl_confusion(df: pd.DataFrame) -> Figure:
    """Grid of confusion matrices: families down, methods across; text = count, colour = row share (viridis)."""
    families, methods = _grid(df)
    panels = {(f, m): (c, a) for f, m, c, a in confusion_matrices(df)}
    rows, cols = len(families), len(methods)
    width = style.DOUBLE_WIDTH_IN if cols > 1 else style.COLUMN_WIDTH_IN
    fig = Figure(figsize=(width, 1.75 * rows + 0.3), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    cmap = style.cmap()
    im = None
    # predicted labels go under the lowest drawn panel of each column (a family may lack a method)
    bottom = {m: max(r for r, f in enumerate(families) if (f, m) in panels) for m in methods}
    for r, family in enumerate(families):
        for c, method in enumerate(methods):
            ax = axes[r, c]
            if (family, method) not in panels:  # a family validated without this method
                ax.set_visible(False)
                continue
            counts, acc = panels[family, method]
            share = _shares(counts)
            im = ax.imshow(np.ma.masked_invalid(share), cmap=cmap, vmin=0, vmax=1, aspect="auto",
                           interpolation="nearest")
            for i in range(share.shape[0]):
                for j in range(share.shape[1]):
                    # light text on the dark (low) end of viridis, dark text on the bright end
                    dark = np.isnan(share[i, j]) or share[i, j] > 0.55
                    ax.text(j, i, str(counts.iat[i, j]), ha="center", va="center", fontsize=style.FONT_SIZE - 1,
                            color="black" if dark else "white")
            # two lines: three one-line titles of a double-width figure run into each other
            ax.set_title(_panel_title(family, method, acc, "\n"))
            ax.set_xticks(range(len(TIERS)), TIERS if r == bottom[method] else [])
            ax.set_yticks(range(len(TRUTH_KINDS)), TRUTH_KINDS if c == 0 else [])
            ax.tick_params(length=0)
            for spine in ax.spines.values():
                spine.set_visible(False)
            # diffuse is shown, never scored: a rule sets it apart from the rows the accuracy counts
            ax.axhline(len(TIERS) - 0.5, color="white", lw=1.5)
            if r == bottom[method]:
                ax.set_xlabel("predicted")
            if c == 0:
                ax.set_ylabel("truth")
    if im is not None:
        fig.colorbar(im, ax=axes, label="share of truth row", shrink=0.8, aspect=30, pad=0.01)
    return fig


def plotly_confusion(df: pd.DataFrame) -> go.Figure:
    """The same grid in plotly: heatmaps of row share, counts as cell text, one shared colour axis."""
    families, methods = _grid(df)
    panels = {(f, m): (c, a) for f, m, c, a in confusion_matrices(df)}
    titles = [_panel_title(f, m, panels[f, m][1]) if (f, m) in panels else "" for f in families for m in methods]
    fig = make_subplots(rows=len(families), cols=len(methods), subplot_titles=titles,
                        horizontal_spacing=0.06, vertical_spacing=0.12 if len(families) > 1 else 0.1)
    bottom = {m: max(r for r, f in enumerate(families, start=1) if (f, m) in panels) for m in methods}
    for r, family in enumerate(families, start=1):
        for c, method in enumerate(methods, start=1):
            if (family, method) not in panels:
                continue
            counts, _ = panels[family, method]
            fig.add_trace(go.Heatmap(
                z=_shares(counts), x=list(TIERS), y=list(TRUTH_KINDS), text=counts.to_numpy(),
                texttemplate="%{text}", coloraxis="coloraxis", name=f"{family} · {method}",
                hovertemplate="truth %{y}<br>predicted %{x}<br>%{text} layers (%{z:.0%} of row)<extra></extra>"),
                row=r, col=c)
            fig.update_yaxes(autorange="reversed", showticklabels=c == 1, row=r, col=c,
                             title_text="truth" if c == 1 else None)
            fig.update_xaxes(showticklabels=r == bottom[method], row=r, col=c,
                             title_text="predicted" if r == bottom[method] else None)
    width = style.DOUBLE_WIDTH_IN if len(methods) > 1 else style.COLUMN_WIDTH_IN
    fig.update_layout(**style.plotly_layout(1.75 * len(families) + 0.3, width, title="Layer tiers: truth vs predicted"),
                      coloraxis={"colorscale": style.plotly_colorscale(), "cmin": 0, "cmax": 1,
                                 "colorbar": {"title": {"text": "share of row"}}})
    return fig


# --------------------------------------------------------------------------- ROC
def roc_table(roc: pd.DataFrame, roc_point: pd.DataFrame | None = None) -> pd.DataFrame:
    """The ``anchor_roc`` tidy table: the curves (``kind`` "curve") and derive's calls (``kind`` "call").

    Columns: family, kind, threshold, fpr, tpr, auroc; a call row has no threshold and
    carries its family's AUROC. One table, so the figure can be redrawn from its parquet alone.
    """
    curve = roc.assign(kind="curve")
    if roc_point is None or roc_point.empty:
        return curve
    auc = curve.groupby("family", sort=False)["auroc"].first()
    call = roc_point.assign(kind="call", threshold=np.nan, auroc=roc_point["family"].map(auc))
    return pd.concat([curve, call], ignore_index=True)


def _roc_parts(df: pd.DataFrame) -> tuple[list[str], dict[str, pd.DataFrame], pd.DataFrame]:
    kind = df["kind"] if "kind" in df else pd.Series("curve", index=df.index)
    curves, calls = df[kind == "curve"], df[kind == "call"]
    families = _order(curves["family"])
    # threshold order (highest first) is the order the curve is traced in; fpr/tpr break ties so it stays monotone
    by_family = {f: curves[curves["family"] == f].sort_values(["threshold", "fpr", "tpr"],
                                                              ascending=[False, True, True], kind="stable")
                 for f in families}
    return families, by_family, calls


def _roc_label(family: str, d: pd.DataFrame) -> str:
    auc = float(d["auroc"].iloc[0]) if len(d) else float("nan")
    return f"{family} (AUROC {auc:.2f})" if np.isfinite(auc) else f"{family} (AUROC n/a)"


def mpl_anchor_roc(df: pd.DataFrame) -> Figure:
    """One ROC curve per family, chance dashed grey, derive's call (if any) a marker on its family's curve.

    The curve joins the (FPR, TPR) points in threshold order: without tied scores every
    segment is horizontal or vertical (a step); a tie draws the diagonal the AUROC credits half.
    """
    families, curves, calls = _roc_parts(df)
    colours = _colours(families)
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN, style.COLUMN_WIDTH_IN * 0.95))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color=GREY, ls="--", lw=0.6, label="chance")
    for family in families:
        d = curves[family]
        ax.plot(d["fpr"], d["tpr"], color=colours[family], label=_roc_label(family, d))
    for family, d in calls.groupby("family", sort=False):
        ax.plot(d["fpr"], d["tpr"], ls="none", marker="o", ms=4, mfc="white", mec=colours.get(family, GREY), mew=1.2)
    if len(calls):
        ax.plot([], [], ls="none", marker="o", ms=4, mfc="white", mec="0.2", label="derive's call (long-term)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.0)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate (recency, diffuse heads)")
    ax.set_ylabel("true positive rate (anchor heads)")
    ax.legend(loc="lower right")
    return fig


def plotly_anchor_roc(df: pd.DataFrame) -> go.Figure:
    """The same ROC in plotly (threshold in the hover)."""
    families, curves, calls = _roc_parts(df)
    colours = _colours(families)
    fig = go.Figure(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                               line={"color": "gray", "dash": "dash", "width": 1}))
    for family in families:
        d = curves[family]
        fig.add_trace(go.Scatter(x=d["fpr"], y=d["tpr"], mode="lines", name=_roc_label(family, d),
                                 legendgroup=family, line={"color": colours[family]}, customdata=d["threshold"],
                                 hovertemplate="threshold %{customdata:.4g}<br>FPR %{x:.3f}<br>TPR %{y:.3f}"
                                               "<extra>" + family + "</extra>"))
    for i, (family, d) in enumerate(calls.groupby("family", sort=False)):
        fig.add_trace(go.Scatter(x=d["fpr"], y=d["tpr"], mode="markers", legendgroup=family,
                                 name="derive's call (long-term)", showlegend=i == 0,
                                 marker={"color": "white", "size": 9,
                                         "line": {"color": colours.get(family, GREY), "width": 2}},
                                 hovertemplate="derive's call<br>FPR %{x:.3f}<br>TPR %{y:.3f}"
                                               "<extra>" + family + "</extra>"))
    side = style.COLUMN_WIDTH_IN * 0.95
    fig.update_layout(**style.plotly_layout(side, style.COLUMN_WIDTH_IN, title="Anchor heads: ROC"),
                      legend={"x": 0.98, "y": 0.02, "xanchor": "right", "yanchor": "bottom"})
    fig.update_xaxes(title_text="false positive rate (recency, diffuse heads)", range=[0, 1], constrain="domain")
    fig.update_yaxes(title_text="true positive rate (anchor heads)", range=[0, 1], scaleanchor="x", scaleratio=1,
                     constrain="domain")
    return fig


# --------------------------------------------------------------------------- breakdown
def _breakdown_parts(df: pd.DataFrame):
    knobs = _order(df["knob"], KNOBS)
    metrics = _order(df["metric"], METRICS)
    families = _order(df["family"])
    colours = _colours(metrics)
    return knobs, metrics, families, colours


def _log_axis(values: pd.Series) -> bool:
    # a log axis cannot place 0 (strength 0 is a legal "nothing planted" run): fall back to linear then
    return bool(len(values)) and bool((values > 0).all())


def _tick_text(knob: str, v: float) -> str:
    return f"{v:.0f}" if knob == "frames" else f"{v:g}"


def _mean_over_families(d: pd.DataFrame) -> pd.DataFrame:
    """Mean score per (metric, value) over families; NaN scores (a metric a family cannot have) are skipped."""
    return d.groupby(["metric", "value"], sort=True)["score"].mean().reset_index()


def mpl_breakdown(df: pd.DataFrame) -> Figure:
    """Scores against each knob: one panel per knob, colour = metric.

    With several families, the mean over families is the bold line (with markers) and each
    family is a thin, faint line in the metric's colour, one dash pattern per family: the
    mean is what the targets are read against, the thin lines show which family pulls it
    down, and five metrics × several families of equally weighted lines would not read.
    With one family its line is the bold one. Targets are grey dotted lines at 0.95
    (layer-tier accuracy, anchor AUROC) and 0.90 (head-role accuracy, recency Spearman).
    ``strength`` is on a log axis, ``frames`` on a log2 axis with integer ticks at the values run.
    """
    knobs, metrics, families, colours = _breakdown_parts(df)
    many = len(families) > 1
    dashes = {f: FAMILY_DASHES[i % len(FAMILY_DASHES)] for i, f in enumerate(families)}
    fig = Figure(figsize=(style.DOUBLE_WIDTH_IN if len(knobs) > 1 else style.COLUMN_WIDTH_IN, 2.7),
                 layout="constrained")
    axes = fig.subplots(1, len(knobs), squeeze=False, sharey=True)[0]
    for ax, knob in zip(axes, knobs):
        d = df[df["knob"] == knob]
        for target in sorted(set(TARGETS.values())):
            ax.axhline(target, color=GREY, ls=":", lw=0.7, zorder=0)
        for metric in metrics:
            m = d[d["metric"] == metric]
            if many:
                for family in families:
                    g = m[m["family"] == family].sort_values("value")
                    ax.plot(g["value"], g["score"], color=colours[metric], ls=dashes[family], lw=0.6, alpha=0.55)
            mean = _mean_over_families(m)
            ax.plot(mean["value"], mean["score"], color=colours[metric], lw=1.6, marker="o", ms=3)
        values = np.sort(d["value"].unique())
        if _log_axis(d["value"]):
            ax.set_xscale("log", base=2 if knob == "frames" else 10)
            ax.xaxis.set_minor_locator(NullLocator())
        # ticks at the values that were run: they are few, and the in-between values were never measured
        ax.xaxis.set_major_locator(FixedLocator(values))
        ax.xaxis.set_major_formatter(FixedFormatter([_tick_text(knob, v) for v in values]))
        ax.set_xlabel(KNOB_LABELS.get(knob, knob))
        ax.set_ylim(0, 1.05)
    axes[0].set_ylabel("score")
    handles = [Line2D([], [], color=colours[m], lw=1.6, marker="o", ms=3,
                      label=METRIC_LABELS.get(m, m) + (f" (target {TARGETS[m]:.2f})" if m in TARGETS else ""))
               for m in metrics]
    if many:
        handles.append(Line2D([], [], color="0.2", lw=1.6, label="mean over families"))
        handles += [Line2D([], [], color="0.2", lw=0.6, ls=dashes[f], label=f) for f in families]
    fig.legend(handles=handles, loc="outside lower center", ncols=3 if len(knobs) > 1 else 2)
    return fig


def plotly_breakdown(df: pd.DataFrame) -> go.Figure:
    """The same breakdown in plotly: bold mean per metric, thin dashed line per family (when several)."""
    knobs, metrics, families, colours = _breakdown_parts(df)
    many = len(families) > 1
    dashes = {f: PLOTLY_DASHES[i % len(PLOTLY_DASHES)] for i, f in enumerate(families)}
    fig = make_subplots(rows=1, cols=len(knobs), shared_yaxes=True,
                        subplot_titles=[KNOB_LABELS.get(k, k) for k in knobs])
    for c, knob in enumerate(knobs, start=1):
        d = df[df["knob"] == knob]
        for metric in metrics:
            m = d[d["metric"] == metric]
            label = METRIC_LABELS.get(metric, metric)
            if many:
                for family in families:
                    g = m[m["family"] == family].sort_values("value")
                    fig.add_trace(go.Scatter(x=g["value"], y=g["score"], mode="lines", name=f"{label} · {family}",
                                             legendgroup=metric, showlegend=False, opacity=0.55,
                                             line={"color": colours[metric], "width": 1, "dash": dashes[family]},
                                             hovertemplate=f"{family}<br>{knob} %{{x:g}}<br>{label} %{{y:.3f}}"
                                                           "<extra></extra>"), row=1, col=c)
            mean = _mean_over_families(m)
            fig.add_trace(go.Scatter(x=mean["value"], y=mean["score"], mode="lines+markers", name=label,
                                     legendgroup=metric, showlegend=c == 1, line={"color": colours[metric], "width": 3},
                                     hovertemplate=("mean over families<br>" if many else "")
                                     + f"{knob} %{{x:g}}<br>{label} %{{y:.3f}}<extra></extra>"), row=1, col=c)
        for target in sorted(set(TARGETS.values())):
            fig.add_hline(y=target, line_dash="dot", line_color="gray", line_width=1, row=1, col=c)
        values = np.sort(d["value"].unique())
        fig.update_xaxes(title_text=KNOB_LABELS.get(knob, knob), type="log" if _log_axis(d["value"]) else "linear",
                         tickvals=list(values), ticktext=[_tick_text(knob, v) for v in values], row=1, col=c)
    if many:  # legend keys for the family dash patterns
        for family in families:
            fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name=family,
                                     line={"color": "#333333", "width": 1, "dash": dashes[family]}))
    fig.update_yaxes(range=[0, 1.05])
    fig.update_yaxes(title_text="score", row=1, col=1)
    fig.update_layout(**style.plotly_layout(2.7, style.DOUBLE_WIDTH_IN if len(knobs) > 1 else style.COLUMN_WIDTH_IN,
                                            title="Scores by knob (targets dotted: 0.95, 0.90)"))
    return fig


# --------------------------------------------------------------------------- writing
VALIDATION_RENDERERS: dict[str, tuple[Callable[[pd.DataFrame], Figure], Callable[[pd.DataFrame], go.Figure]]] = {
    "confusion": (mpl_confusion, plotly_confusion),
    "anchor_roc": (mpl_anchor_roc, plotly_anchor_roc),
    "breakdown": (mpl_breakdown, plotly_breakdown),
}


def write_validation_figures(
    out: Path,
    tables: Mapping[str, pd.DataFrame],
    formats: str | Sequence[str] = ("pdf", "png", "svg", "html"),
) -> list[Path]:
    """Draw every validation figure whose table is present and non-empty; the paths written.

    Args:
        out: folder, created if missing; files are ``NAME.{fmt}``, ``NAME.parquet``, ``NAME.csv``.
        tables: tidy tables by name (other names are ignored, so a caller may pass everything it has):

            * ``"confusion"`` → figure ``confusion``: family, method, truth (:data:`~analysis.validate.TRUTH_KINDS`),
              predicted (:data:`~analysis.derive.TIERS`), count; one row per cell (missing cells are 0);
            * ``"roc"`` → figure ``anchor_roc``: family, fpr, tpr, auroc (one value per family), threshold;
              one row per ROC point (:func:`~analysis.validate.roc_points`);
            * ``"roc_point"`` (optional, drawn on ``anchor_roc``): family, fpr, tpr of derive's own call;
            * ``"breakdown"`` → figure ``breakdown``: family, knob ("strength" | "frames"), value, metric
              (:data:`METRICS`), score (NaN allowed); one row per (family, knob, value, metric).
        formats: any of pdf, png, svg (matplotlib) and html (plotly, plotly.js embedded).

    Raises:
        StudyError: a present table lacks a required column (checked for all tables before anything is
            written), a confusion label is off its axes, an unknown format, or ``out`` is a file.
    """
    fmts = parse_formats(formats)
    present = {k: df for k, df in tables.items() if k in COLUMNS and df is not None and not df.empty}
    for name, df in present.items():
        check_table(name, df)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise StudyError(f"{out} exists and is not a directory; pass a directory for the figures")
    figures: dict[str, pd.DataFrame] = {}
    if "confusion" in present:
        figures["confusion"] = present["confusion"]
    if "roc" in present:
        figures["anchor_roc"] = roc_table(present["roc"], present.get("roc_point"))
    if "breakdown" in present:
        figures["breakdown"] = present["breakdown"]
    if not figures:
        return []
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name, df in figures.items():
        written += write_figure(name, df, VALIDATION_RENDERERS[name], fmts, out)
    return written


def write_validation(out: str | Path, runs: Sequence[Validation], formats: Sequence[str]) -> list[Path]:
    """``validate --out``: rows/heads/layers parquet, ``validation.json`` and the figures (in ``out/figures``)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = validation_tables(runs)
    written = []
    for name in ("rows", "heads", "layers"):
        path = out / f"{name}.parquet"
        tables[name].to_parquet(path, index=False)
        written.append(path)
    atomic_write_json(out / "validation.json", report(runs), StudyError)
    written.append(out / "validation.json")
    figures = {k: v for k, v in tables.items() if k in ("confusion", "roc", "roc_point", "breakdown")}
    (out / "figures").mkdir(exist_ok=True)
    return written + write_validation_figures(out / "figures", figures, formats)


__all__ = [
    "COLUMNS",
    "METRICS",
    "TARGETS",
    "VALIDATION_FIGURES",
    "check_table",
    "confusion_matrices",
    "mpl_anchor_roc",
    "mpl_breakdown",
    "mpl_confusion",
    "plotly_anchor_roc",
    "plotly_breakdown",
    "plotly_confusion",
    "roc_table",
    "write_validation",
    "write_validation_figures",
]
