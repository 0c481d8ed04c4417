"""Figures of results: ``eval`` folders (accuracy and fidelity against memory) and ``bench`` folders (cost).

Each figure is drawn from one tidy table, in the study figures' style and formats
(:func:`analysis.figures.write_figure`: matplotlib PDF/PNG/SVG, plotly HTML, the
table as parquet + CSV beside it). Several eval folders can share one figure,
say two models: every row carries the model it came from, and lines are labelled
``model · policy`` when more than one model is present.

* ``accuracy_budget``: accuracy (95% CI band, bootstrapped over videos) against the kept fraction of
  video tokens, one line per policy, one panel per category plus overall, the full cache as a
  dashed horizontal reference;
* ``accuracy_kv``: the same against peak KV MiB;
* ``fidelity_budget``: agreement with the full cache and KL(full || run) against the kept fraction;
* ``pareto``: overall accuracy against peak KV MiB, every run a labelled point;
* ``bench_ttft``, ``bench_kv``, ``bench_ingest``: TTFT, KV MiB and ingest ms/frame against stream length.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pandas as pd
import plotly.graph_objects as go
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from plotly.subplots import make_subplots

from analysis import style
from analysis.errors import StudyError
from analysis.figures import parse_formats, write_figure
from hermes_policy.jsonfile import read_json

EVAL_FIGURES = ("accuracy_budget", "accuracy_kv", "fidelity_budget", "pareto")
BENCH_FIGURES = ("bench_ttft", "bench_kv", "bench_ingest")
BENCH_ROWS = "rows.parquet"
MIB = 2**20


# ------------------------------------------------------------------ reading
@dataclass
class EvalFolder:
    """An ``eval --out`` folder: its results document and the model it ran."""

    path: Path
    results: dict
    model: str


def read_eval(path: str | Path) -> EvalFolder:
    """Read ``results.json`` of an eval folder; StudyError (one line) if it is not a finished evaluation."""
    path = Path(path)
    file = path / "results.json"
    if not file.is_file():
        raise StudyError(f"{path} holds no finished evaluation (no results.json); run hermes-lab eval --out {path}")
    results = read_json(file, StudyError, "eval results")
    if not isinstance(results, dict) or results.get("format") != "hermes-lab/eval-results":
        raise StudyError(f"{file} is not an eval results document")
    problem = _results_problem(results)
    if problem:
        raise StudyError(f"{file} is damaged: {problem}")
    return EvalFolder(path, results, str(results.get("model") or path.name))


def _number(x) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _interval(x) -> bool:
    return x is None or (isinstance(x, list) and len(x) == 2 and all(_number(v) and v is not None for v in x))


def _results_problem(doc: dict) -> str | None:
    """What in a results document the figures cannot read (None: nothing); only the fields they use."""
    runs, results = doc.get("runs"), doc.get("results")
    if not isinstance(runs, list) or not all(isinstance(r, str) for r in runs):
        return "'runs' must be a list of run labels"
    if not isinstance(results, list) or len(results) != len(runs) or not all(isinstance(r, dict) for r in results):
        return "'results' must hold one object per run"
    for label, r in zip(runs, results):
        fidelity = r.get("fidelity")
        checks = {
            "policy": isinstance(r.get("policy"), str),
            "budget / kept_fraction / peak_kv_bytes / accuracy": all(
                _number(r.get(k)) for k in ("budget", "kept_fraction", "peak_kv_bytes", "accuracy")),
            "accuracy_ci": _interval(r.get("accuracy_ci")),
            "by_category": isinstance(r.get("by_category"), dict) and all(
                isinstance(c, str) and _number(a) for c, a in r["by_category"].items()),
            "by_category_ci": r.get("by_category_ci") is None or (isinstance(r["by_category_ci"], dict) and all(
                _interval(ci) for ci in r["by_category_ci"].values())),
            "fidelity": isinstance(fidelity, dict) and all(_number(fidelity.get(k)) for k in ("agreement", "kl"))
            and all(_interval(fidelity.get(k)) for k in ("agreement_ci", "kl_ci")),
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            return f"run {label!r}: {', '.join(bad)} of the wrong type"
    summary = doc.get("summary", [])
    if not isinstance(summary, list) or not all(isinstance(c, dict) and isinstance(c.get("run"), str)
                                                and isinstance(c.get("category"), str) for c in summary):
        return "'summary' must be a list of per-run, per-category objects"
    comparisons = doc.get("comparisons", [])
    if not isinstance(comparisons, list) or not all(isinstance(c, dict) for c in comparisons):
        return "'comparisons' must be a list of objects"
    return None


def read_bench(path: str | Path) -> pd.DataFrame:
    """The rows ``bench --out`` wrote; StudyError (one line) if there are none."""
    path = Path(path)
    file = path / BENCH_ROWS
    if not file.is_file():
        raise StudyError(f"{path} holds no bench rows ({BENCH_ROWS}); run hermes-lab bench --out {path}")
    try:
        df = pd.read_parquet(file)
    except Exception as e:  # noqa: BLE001  (pyarrow raises several types for a damaged file)
        raise StudyError(f"{file} is not a readable parquet table: {e}") from None
    missing = {"policy", "frames", "ttft_ms", "ingest_ms_per_frame", "kv_bytes"} - set(df.columns)
    if missing:
        raise StudyError(f"{file} lacks bench columns {sorted(missing)}")
    return df


def read_benches(paths: Sequence[str | Path]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) of each bench folder; the label is the model the rows measured (else the folder's name)."""
    out = []
    for path in paths:
        df = read_bench(path)
        out.append((str(df["model"].iloc[0]) if "model" in df and len(df) else Path(path).name, df))
    return out


# ------------------------------------------------------------- tidy tables
def _ci(ci, i: int) -> float:
    return float("nan") if ci is None else float(ci[i])


def eval_tables(folders: Sequence[EvalFolder]) -> dict[str, pd.DataFrame]:
    """The eval figures' tidy tables, one row per (model, run[, category])."""
    accuracy, fidelity = [], []
    for folder in folders:
        summary = {(s["run"], s["category"]): s for s in folder.results.get("summary", [])}
        for run, result in zip(folder.results["runs"], folder.results["results"]):
            base = {
                "model": folder.model,
                "run": run,
                "policy": result["policy"],
                "budget": result["budget"],
                "full": result["budget"] is None and result["policy"] == "full",
                "kept_fraction": result["kept_fraction"],
                "peak_kv_mib": None if result["peak_kv_bytes"] is None else result["peak_kv_bytes"] / MIB,
            }
            cats = {"overall": (result["accuracy"], result.get("accuracy_ci"))}
            cats.update({c: (a, (result.get("by_category_ci") or {}).get(c))
                         for c, a in result["by_category"].items() if a is not None})
            for category, (acc, ci) in cats.items():
                n = summary.get((run, category), {}).get("n")
                accuracy.append({**base, "category": category, "n": n, "accuracy": acc,
                                 "lo": _ci(ci, 0), "hi": _ci(ci, 1)})
            fid = result.get("fidelity", {})
            fidelity.append({**base, "agreement": fid.get("agreement"),
                             "agreement_lo": _ci(fid.get("agreement_ci"), 0),
                             "agreement_hi": _ci(fid.get("agreement_ci"), 1),
                             "kl": fid.get("kl"), "kl_lo": _ci(fid.get("kl_ci"), 0), "kl_hi": _ci(fid.get("kl_ci"), 1)})
    acc, fidelity_df = pd.DataFrame(accuracy), pd.DataFrame(fidelity)
    if acc.empty:
        raise StudyError("the eval folders hold no runs")
    many = acc["model"].nunique() > 1
    for df in (acc, fidelity_df):
        df["line"] = [f"{m} · {p}" if many else p for m, p in zip(df["model"], df["policy"])]
    overall = acc[acc["category"] == "overall"].copy()
    overall["label"] = [f"{m} · {r}" if many else r for m, r in zip(overall["model"], overall["run"])]
    return {
        "accuracy_budget": acc,
        "accuracy_kv": acc.copy(),
        "fidelity_budget": fidelity_df,
        "pareto": overall[["model", "run", "label", "policy", "peak_kv_mib", "accuracy", "lo", "hi"]],
    }


def bench_tables(frames: Sequence[tuple[str, pd.DataFrame]]) -> dict[str, pd.DataFrame]:
    """The bench figures' tidy tables from (label, rows) pairs (label: the folder's model)."""
    parts = []
    for label, df in frames:
        part = df.copy()
        part["model"] = label
        parts.append(part)
    rows = pd.concat(parts, ignore_index=True)
    many = rows["model"].nunique() > 1
    rows["line"] = [f"{m} · {p}" if many else p for m, p in zip(rows["model"], rows["policy"])]
    rows["kv_mib"] = rows["kv_bytes"] / MIB
    keep = ["model", "line", "policy", "frames", "budget"]
    ingest_cols = [c for c in ("ingest_ms_per_frame", "ingest_full_ms_per_frame", "vision_ms_per_frame",
                               "lm_ms_per_frame", "policy_ms_per_frame") if c in rows.columns]
    return {
        "bench_ttft": rows[keep + ["ttft_ms"]],
        "bench_kv": rows[keep + ["kv_mib"]],
        "bench_ingest": rows[keep + ingest_cols],
    }


# ------------------------------------------------------------ shared style
#: axis titles, each with its unit, so a figure read out of its paper still says what it measures
KEPT = "kept video tokens (fraction)"
PEAK_KV = "peak KV cache (MiB)"
ACCURACY = "accuracy (fraction correct)"
AGREEMENT = "agreement with full (fraction)"
KL = "KL(full ‖ run) (nats)"
FRAMES = "stream length (frames)"
TTFT = "TTFT (ms)"
KV = "KV cache (MiB)"
INGEST = "ingest (ms / frame)"
#: markers and dashes per line, so two lines that coincide (two policies equally right on a category)
#: both stay visible: the later one dashed over the earlier, with its own markers
MPL_MARKERS = ("o", "s", "^", "D", "v", "P", "X")
MPL_DASHES = ("-", "--", ":", "-.")
PLOTLY_SYMBOLS = ("circle", "square", "triangle-up", "diamond", "triangle-down", "cross", "x")
PLOTLY_DASHES = ("solid", "dash", "dot", "dashdot")
DODGE = 0.012  # share of the x range between neighbouring lines' points, so equal points do not hide each other


def _colours(lines: Sequence[str]) -> dict[str, str]:
    # hex, so plotly takes the same colours (the cycle may hold RGB tuples)
    cycle = [to_hex(c) for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]]
    return {line: cycle[i % len(cycle)] for i, line in enumerate(dict.fromkeys(lines))}


def _panels(categories: Sequence[str]) -> list[str]:
    return ["overall", *[c for c in categories if c != "overall"]]


def _dodged(df: pd.DataFrame, x: str, order: Sequence[str]) -> dict[str, float]:
    """x offset of each line: neighbours ``DODGE`` of the x range apart, centred on the true value."""
    span = float(df[x].max() - df[x].min()) if len(df) else 0.0
    step = DODGE * (span if span > 0 else 1.0)
    return {line: (i - (len(order) - 1) / 2) * step for i, line in enumerate(order)}


def _dodged_lines(df: pd.DataFrame, x: str, colours: dict[str, str]):
    """(line, its index among the lines, its rows sorted by ``x``, its dodged x values), line by line."""
    order = list(colours)
    shift = _dodged(df, x, order)
    for line, g in df.groupby("line", sort=False):
        g = g.sort_values(x)
        yield line, order.index(line), g, g[x] + shift[line]


def _mpl_lines(ax, df: pd.DataFrame, x: str, y: str, lo: str, hi: str, colours: dict[str, str]) -> None:
    """One line per ``line`` of ``df`` along ``x``, its interval [lo, hi] as a band, its points dodged."""
    for line, i, g, xs in _dodged_lines(df, x, colours):
        if len(g) > 1:
            ax.fill_between(xs, g[lo], g[hi], color=colours[line], alpha=0.15, linewidth=0)
        else:  # one budget: a band of one point is a line no one sees, so its interval is an error bar
            ax.errorbar(xs, g[y], yerr=[g[y] - g[lo], g[hi] - g[y]], fmt="none", ecolor=colours[line],
                        elinewidth=0.7, capsize=2)
        ax.plot(xs, g[y], marker=MPL_MARKERS[i % len(MPL_MARKERS)], markersize=3.5,
                linestyle=MPL_DASHES[i % len(MPL_DASHES)], color=colours[line], label=line, zorder=3 + i)


def _legend_right(fig: Figure, ax) -> None:
    handles, labels = ax.get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="outside right upper")


def _mpl_vs(df: pd.DataFrame, x: str, xlabel: str, y: str = "accuracy", ylabel: str = ACCURACY,
            lo: str = "lo", hi: str = "hi") -> Figure:
    panels = _panels(list(dict.fromkeys(df["category"]))) if "category" in df else ["overall"]
    rows, cols = (len(panels) + 1) // 2, min(len(panels), 2)
    fig = Figure(figsize=(style.DOUBLE_WIDTH_IN, 2.3 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    colours = _colours(df.loc[~df["full"], "line"])
    for ax, panel in zip(axes, panels):
        part = df[df["category"] == panel] if "category" in df else df
        _mpl_lines(ax, part[~part["full"]], x, y, lo, hi, colours)
        for _, ref in part[part["full"]].iterrows():
            label = f"full ({ref['model']})" if df["model"].nunique() > 1 else "full"
            ax.axhline(ref[y], color="0.3", linestyle=(0, (4, 2)), linewidth=0.8, label=label)
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    _legend_right(fig, axes[0])
    return fig


def mpl_accuracy_budget(df: pd.DataFrame) -> Figure:
    return _mpl_vs(df, "kept_fraction", KEPT)


def mpl_accuracy_kv(df: pd.DataFrame) -> Figure:
    return _mpl_vs(df, "peak_kv_mib", PEAK_KV)


def mpl_fidelity_budget(df: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(style.DOUBLE_WIDTH_IN, 2.4), layout="constrained")
    axes = fig.subplots(1, 2)
    runs = df[~df["full"]]
    colours = _colours(runs["line"])
    for ax, (y, label) in zip(axes, (("agreement", AGREEMENT), ("kl", KL))):
        _mpl_lines(ax, runs, "kept_fraction", y, f"{y}_lo", f"{y}_hi", colours)
        ax.set_xlabel(KEPT)
        ax.set_ylabel(label)
    _legend_right(fig, axes[0])
    return fig


def _pareto_marks(df: pd.DataFrame) -> list[tuple[str, str, int]]:
    """(label, colour, symbol index) per run: colour by policy, symbol by the run's place within it."""
    colours = _colours(df["policy"])
    seen: dict[str, int] = {}
    marks = []
    for _, r in df.iterrows():
        i = seen.get(r["policy"], 0)
        seen[r["policy"]] = i + 1
        marks.append((r["label"], colours[r["policy"]], i))
    return marks


def mpl_pareto(df: pd.DataFrame) -> Figure:
    # every run is a legend entry rather than a label beside its point: labels of runs at similar memory
    # and accuracy overlap, and a label near the edge runs off the plot
    fig = Figure(figsize=(style.DOUBLE_WIDTH_IN * 0.75, 2.8), layout="constrained")
    ax = fig.subplots()
    for (_, r), (label, colour, i) in zip(df.iterrows(), _pareto_marks(df)):
        ax.errorbar(r["peak_kv_mib"], r["accuracy"], yerr=[[r["accuracy"] - r["lo"]], [r["hi"] - r["accuracy"]]],
                    fmt=MPL_MARKERS[i % len(MPL_MARKERS)], markersize=4, color=colour, elinewidth=0.7,
                    capsize=2, label=label)
    ax.set_xlabel(PEAK_KV)
    ax.set_ylabel("overall " + ACCURACY)
    _legend_right(fig, ax)
    return fig


def _mpl_bench(df: pd.DataFrame, y: str, ylabel: str, extra: Sequence[tuple[str, str, str]] = ()) -> Figure:
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN * 1.3, 2.4), layout="constrained")
    ax = fig.subplots()
    colours = _colours(df["line"])
    order = list(colours)
    for line, g in df.groupby("line", sort=False):
        g = g.sort_values("frames")
        i = order.index(line)
        ax.plot(g["frames"], g[y], marker=MPL_MARKERS[i % len(MPL_MARKERS)], markersize=3.5,
                linestyle=MPL_DASHES[i % len(MPL_DASHES)], color=colours[line], label=line)
        for column, dash, _ in extra:
            if column in g and g[column].notna().any():
                ax.plot(g["frames"], g[column], linestyle=dash, linewidth=0.8, color=colours[line])
    for column, dash, label in extra:
        if column in df and df[column].notna().any():
            ax.plot([], [], linestyle=dash, linewidth=0.8, color="0.3", label=label)
    ax.set_xscale("log", base=2)
    lengths = sorted(df["frames"].unique())
    ax.set_xticks(lengths, [str(n) for n in lengths])  # the lengths measured, not powers of two
    ax.minorticks_off()
    ax.set_xlabel(FRAMES)
    ax.set_ylabel(ylabel)
    _legend_right(fig, ax)
    return fig


def mpl_bench_ttft(df: pd.DataFrame) -> Figure:
    return _mpl_bench(df, "ttft_ms", TTFT)


def mpl_bench_kv(df: pd.DataFrame) -> Figure:
    return _mpl_bench(df, "kv_mib", KV)


def mpl_bench_ingest(df: pd.DataFrame) -> Figure:
    # thin dotted: the policy's own share of it (pruning, pseudo-queries)
    return _mpl_bench(df, "ingest_ms_per_frame", INGEST, extra=[("policy_ms_per_frame", ":", "policy's own time")])


# ------------------------------------------------------------------ plotly
#: screen sizes: the dashboard and the HTML files are read at a browser's width, not a paper column's
PANEL_HEIGHT_PX = 380
ROW_GAP_PX = 120
LEGEND = {"orientation": "v", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"}


def _screen(fig: go.Figure, height: int, width: int = 1000) -> go.Figure:
    fig.update_layout(**style.plotly_layout(1.0), legend=LEGEND)
    fig.update_layout(height=height, width=width, margin={"l": 70, "r": 20, "t": 50, "b": 60})
    return fig


def _band(fig: go.Figure, xs: Sequence[float], lo: Sequence[float], hi: Sequence[float], colour: str,
          row=None, col=None) -> None:
    kwargs = {} if row is None else {"row": row, "col": col}
    fig.add_trace(go.Scatter(x=list(xs) + list(xs)[::-1], y=list(hi) + list(lo)[::-1], fill="toself",
                             fillcolor=colour, opacity=0.15, line={"width": 0}, hoverinfo="skip",
                             showlegend=False), **kwargs)


def _plotly_lines(fig: go.Figure, df: pd.DataFrame, x: str, y: str, lo: str, hi: str, colours: dict[str, str],
                  row: int, col: int, legend: bool) -> None:
    for line, i, g, xs in _dodged_lines(df, x, colours):
        single = len(g) == 1  # one budget: its interval as an error bar (a band of one point is invisible)
        if not single:
            _band(fig, xs, g[lo], g[hi], colours[line], row, col)
        error = {"type": "data", "symmetric": False, "array": g[hi] - g[y], "arrayminus": g[y] - g[lo]}
        fig.add_trace(go.Scatter(
            x=xs, y=g[y], mode="lines+markers", name=line, legendgroup=line, showlegend=legend,
            error_y=error if single else None,
            line={"color": colours[line], "dash": PLOTLY_DASHES[i % len(PLOTLY_DASHES)]},
            marker={"symbol": PLOTLY_SYMBOLS[i % len(PLOTLY_SYMBOLS)], "size": 7},
            customdata=g[["run", x, lo, hi]].to_numpy(),
            hovertemplate="%{customdata[0]} at %{customdata[1]:.3g}: %{y:.3f} "
                          "[%{customdata[2]:.3f}, %{customdata[3]:.3f}]<extra></extra>"), row=row, col=col)


def _plotly_vs(df: pd.DataFrame, x: str, xlabel: str) -> go.Figure:
    panels = _panels(list(dict.fromkeys(df["category"])))
    cols = min(len(panels), 2)
    rows = (len(panels) + 1) // 2
    # spacing in pixels, not shares of the height: room for one row's x title above the next row's titles
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=panels, horizontal_spacing=0.14,
                        vertical_spacing=min(0.5, ROW_GAP_PX / (PANEL_HEIGHT_PX * rows)) if rows > 1 else 0.1)
    colours = _colours(df.loc[~df["full"], "line"])
    for i, panel in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        part = df[df["category"] == panel]
        _plotly_lines(fig, part[~part["full"]], x, "accuracy", "lo", "hi", colours, row, col, legend=i == 0)
        for _, ref in part[part["full"]].iterrows():
            fig.add_hline(y=ref["accuracy"], line_dash="dash", line_color="gray", row=row, col=col)
        fig.update_xaxes(title_text=xlabel, row=row, col=col)
        fig.update_yaxes(title_text=ACCURACY, row=row, col=col)
    if df["full"].any():  # the dashed reference, named once in the legend
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", name="full",
                                 line={"color": "gray", "dash": "dash"}))
    return _screen(fig, PANEL_HEIGHT_PX * rows)


def plotly_accuracy_budget(df: pd.DataFrame) -> go.Figure:
    return _plotly_vs(df, "kept_fraction", KEPT)


def plotly_accuracy_kv(df: pd.DataFrame) -> go.Figure:
    return _plotly_vs(df, "peak_kv_mib", PEAK_KV)


def plotly_fidelity_budget(df: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("agreement with full", "KL(full ‖ run)"),
                        horizontal_spacing=0.14)
    runs = df[~df["full"]]
    colours = _colours(runs["line"])
    for col, (y, label) in ((1, ("agreement", AGREEMENT)), (2, ("kl", KL))):
        _plotly_lines(fig, runs, "kept_fraction", y, f"{y}_lo", f"{y}_hi", colours, 1, col, legend=col == 1)
        fig.update_xaxes(title_text=KEPT, row=1, col=col)
        fig.update_yaxes(title_text=label, row=1, col=col)
    return _screen(fig, PANEL_HEIGHT_PX)


def plotly_pareto(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    for (_, r), (label, colour, i) in zip(df.iterrows(), _pareto_marks(df)):
        fig.add_trace(go.Scatter(
            x=[r["peak_kv_mib"]], y=[r["accuracy"]], mode="markers", name=label, legendgroup=r["policy"],
            marker={"color": colour, "symbol": PLOTLY_SYMBOLS[i % len(PLOTLY_SYMBOLS)], "size": 9},
            error_y={"type": "data", "symmetric": False, "array": [r["hi"] - r["accuracy"]],
                     "arrayminus": [r["accuracy"] - r["lo"]]},
            hovertemplate=f"{label}: %{{y:.3f}} at %{{x:.3g}} MiB<extra></extra>"))
    fig.update_xaxes(title_text=PEAK_KV)
    fig.update_yaxes(title_text="overall " + ACCURACY)
    return _screen(fig, PANEL_HEIGHT_PX + 40)


def _plotly_bench(df: pd.DataFrame, y: str, ylabel: str) -> go.Figure:
    fig = go.Figure()
    colours = _colours(df["line"])
    order = list(colours)
    for line, g in df.groupby("line", sort=False):
        g = g.sort_values("frames")
        i = order.index(line)
        fig.add_trace(go.Scatter(x=g["frames"], y=g[y], mode="lines+markers", name=line,
                                 line={"color": colours[line], "dash": PLOTLY_DASHES[i % len(PLOTLY_DASHES)]},
                                 marker={"symbol": PLOTLY_SYMBOLS[i % len(PLOTLY_SYMBOLS)], "size": 7}))
    fig.update_xaxes(title_text=FRAMES, type="log")
    fig.update_yaxes(title_text=ylabel)
    fig = _screen(fig, PANEL_HEIGHT_PX, width=700)
    # three of these sit side by side on the Results page: the legend goes above, not beside
    fig.update_layout(legend={"orientation": "h", "x": 0, "y": 1.02, "yanchor": "bottom"},
                      margin={"l": 70, "r": 20, "t": 60, "b": 60})
    return fig


def plotly_bench_ttft(df: pd.DataFrame) -> go.Figure:
    return _plotly_bench(df, "ttft_ms", TTFT)


def plotly_bench_kv(df: pd.DataFrame) -> go.Figure:
    return _plotly_bench(df, "kv_mib", KV)


def plotly_bench_ingest(df: pd.DataFrame) -> go.Figure:
    return _plotly_bench(df, "ingest_ms_per_frame", INGEST)


RESULT_RENDERERS = {
    "accuracy_budget": (mpl_accuracy_budget, plotly_accuracy_budget),
    "accuracy_kv": (mpl_accuracy_kv, plotly_accuracy_kv),
    "fidelity_budget": (mpl_fidelity_budget, plotly_fidelity_budget),
    "pareto": (mpl_pareto, plotly_pareto),
    "bench_ttft": (mpl_bench_ttft, plotly_bench_ttft),
    "bench_kv": (mpl_bench_kv, plotly_bench_kv),
    "bench_ingest": (mpl_bench_ingest, plotly_bench_ingest),
}


def write_result_figures(
    out_dir: str | Path,
    evals: Sequence[str | Path] = (),
    benches: Sequence[str | Path] = (),
    formats: str | Sequence[str] = ("pdf", "png", "svg", "html"),
) -> list[Path]:
    """Every eval and bench figure of the given folders, in every format, with its tidy table; the paths."""
    fmts = parse_formats(formats)
    if not evals and not benches:
        raise StudyError("nothing to draw: pass --eval DIR and/or --bench DIR")
    folders = [read_eval(p) for p in evals]  # every folder is read before anything is written
    bench_rows = read_benches(benches)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise StudyError(f"{out} exists and is not a directory; pass a directory for the figures")
    out.mkdir(parents=True, exist_ok=True)
    tables = {**(eval_tables(folders) if folders else {}), **(bench_tables(bench_rows) if bench_rows else {})}
    written: list[Path] = []
    for name, df in tables.items():
        written += write_figure(name, df, RESULT_RENDERERS[name], fmts, out)
    return written


__all__ = [
    "BENCH_FIGURES", "EVAL_FIGURES", "EvalFolder", "bench_tables", "eval_tables", "read_bench", "read_benches",
    "read_eval",
    "write_result_figures",
]
