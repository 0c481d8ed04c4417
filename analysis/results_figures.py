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


# -------------------------------------------------------------- matplotlib
def _colours(lines: Sequence[str]) -> dict[str, str]:
    # hex, so plotly takes the same colours (the cycle may hold RGB tuples)
    cycle = [to_hex(c) for c in matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]]
    return {line: cycle[i % len(cycle)] for i, line in enumerate(dict.fromkeys(lines))}


def _panels(categories: Sequence[str]) -> list[str]:
    return ["overall", *[c for c in categories if c != "overall"]]


def _mpl_lines(ax, df: pd.DataFrame, x: str, y: str, lo: str, hi: str, colours: dict[str, str]) -> None:
    """One line per ``line`` of ``df`` along ``x``, with its interval [lo, hi] as a band."""
    for line, g in df.groupby("line", sort=False):
        g = g.sort_values(x)
        ax.plot(g[x], g[y], marker="o", markersize=3, color=colours[line], label=line)
        ax.fill_between(g[x], g[lo], g[hi], color=colours[line], alpha=0.2, linewidth=0)


def _mpl_vs(df: pd.DataFrame, x: str, xlabel: str, y: str = "accuracy", ylabel: str = "accuracy",
            lo: str = "lo", hi: str = "hi") -> Figure:
    panels = _panels(list(dict.fromkeys(df["category"]))) if "category" in df else ["overall"]
    rows, cols = (len(panels) + 1) // 2, min(len(panels), 2)
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN * cols, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).flatten()
    colours = _colours(df.loc[~df["full"], "line"])
    for ax, panel in zip(axes, panels):
        part = df[df["category"] == panel] if "category" in df else df
        _mpl_lines(ax, part[~part["full"]], x, y, lo, hi, colours)
        for _, ref in part[part["full"]].iterrows():
            ax.axhline(ref[y], color="0.3", linestyle="--", linewidth=0.8)
            ax.text(ax.get_xlim()[1], ref[y], f" full ({ref['model']})" if df["model"].nunique() > 1 else " full",
                    va="center", ha="left", fontsize=style.FONT_SIZE - 2, color="0.3")
        ax.set_title(panel)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    axes[0].legend(loc="lower right")
    return fig


def mpl_accuracy_budget(df: pd.DataFrame) -> Figure:
    return _mpl_vs(df, "kept_fraction", "kept fraction of video tokens")


def mpl_accuracy_kv(df: pd.DataFrame) -> Figure:
    return _mpl_vs(df, "peak_kv_mib", "peak KV MiB")


def mpl_fidelity_budget(df: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN * 2, 2.2), layout="constrained")
    axes = fig.subplots(1, 2)
    runs = df[~df["full"]]
    colours = _colours(runs["line"])
    for ax, (y, label) in zip(axes, (("agreement", "agreement with full"), ("kl", "KL(full ‖ run), nats"))):
        _mpl_lines(ax, runs, "kept_fraction", y, f"{y}_lo", f"{y}_hi", colours)
        ax.set_xlabel("kept fraction of video tokens")
        ax.set_ylabel(label)
    axes[0].legend(loc="lower right")
    return fig


def mpl_pareto(df: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN, 2.6))
    ax = fig.subplots()
    colours = _colours(df["policy"])
    for _, r in df.iterrows():
        ax.errorbar(r["peak_kv_mib"], r["accuracy"], yerr=[[r["accuracy"] - r["lo"]], [r["hi"] - r["accuracy"]]],
                    fmt="o", markersize=3, color=colours[r["policy"]], elinewidth=0.6, capsize=1.5)
        ax.annotate(r["label"], (r["peak_kv_mib"], r["accuracy"]), textcoords="offset points", xytext=(3, 3),
                    fontsize=style.FONT_SIZE - 2)
    ax.set_xlabel("peak KV MiB")
    ax.set_ylabel("accuracy (overall)")
    return fig


def _mpl_bench(df: pd.DataFrame, y: str, ylabel: str, extra: Sequence[tuple[str, str]] = ()) -> Figure:
    fig = Figure(figsize=(style.COLUMN_WIDTH_IN, 2.4))
    ax = fig.subplots()
    colours = _colours(df["line"])
    for line, g in df.groupby("line", sort=False):
        g = g.sort_values("frames")
        ax.plot(g["frames"], g[y], marker="o", markersize=3, color=colours[line], label=line)
        for column, dash in extra:
            if column in g and g[column].notna().any():
                ax.plot(g["frames"], g[column], linestyle=dash, linewidth=0.8, color=colours[line])
    ax.set_xscale("log", base=2)
    ax.set_xlabel("stream length (frames)")
    ax.set_ylabel(ylabel)
    ax.legend()
    return fig


def mpl_bench_ttft(df: pd.DataFrame) -> Figure:
    return _mpl_bench(df, "ttft_ms", "TTFT (ms)")


def mpl_bench_kv(df: pd.DataFrame) -> Figure:
    return _mpl_bench(df, "kv_mib", "KV MiB")


def mpl_bench_ingest(df: pd.DataFrame) -> Figure:
    # dotted: the policy's own share of it (pruning, pseudo-queries)
    return _mpl_bench(df, "ingest_ms_per_frame", "ingest ms / frame", extra=[("policy_ms_per_frame", ":")])


# ------------------------------------------------------------------ plotly
def _band(fig: go.Figure, g: pd.DataFrame, x: str, lo: str, hi: str, colour: str, row=None, col=None) -> None:
    kwargs = {} if row is None else {"row": row, "col": col}
    fig.add_trace(go.Scatter(x=list(g[x]) + list(g[x])[::-1], y=list(g[hi]) + list(g[lo])[::-1], fill="toself",
                             fillcolor=colour, opacity=0.2, line={"width": 0}, hoverinfo="skip",
                             showlegend=False), **kwargs)


def _plotly_vs(df: pd.DataFrame, x: str, xlabel: str) -> go.Figure:
    panels = _panels(list(dict.fromkeys(df["category"])))
    cols = min(len(panels), 2)
    fig = make_subplots(rows=(len(panels) + 1) // 2, cols=cols, subplot_titles=panels)
    colours = _colours(df.loc[~df["full"], "line"])
    for i, panel in enumerate(panels):
        row, col = i // cols + 1, i % cols + 1
        part = df[df["category"] == panel]
        for line, g in part[~part["full"]].groupby("line", sort=False):
            g = g.sort_values(x)
            _band(fig, g, x, "lo", "hi", colours[line], row, col)
            fig.add_trace(go.Scatter(x=g[x], y=g["accuracy"], mode="lines+markers", name=line, legendgroup=line,
                                     showlegend=i == 0, line={"color": colours[line]},
                                     customdata=g[["run", "n"]], hovertemplate="%{customdata[0]}: %{y:.3f} "
                                     "(n=%{customdata[1]})<extra></extra>"), row=row, col=col)
        for _, ref in part[part["full"]].iterrows():
            fig.add_hline(y=ref["accuracy"], line_dash="dash", line_color="gray", row=row, col=col)
        fig.update_xaxes(title_text=xlabel, row=row, col=col)
        fig.update_yaxes(title_text="accuracy", row=row, col=col)
    fig.update_layout(**style.plotly_layout(2.2 * ((len(panels) + 1) // 2), style.COLUMN_WIDTH_IN * cols))
    return fig


def plotly_accuracy_budget(df: pd.DataFrame) -> go.Figure:
    return _plotly_vs(df, "kept_fraction", "kept fraction of video tokens")


def plotly_accuracy_kv(df: pd.DataFrame) -> go.Figure:
    return _plotly_vs(df, "peak_kv_mib", "peak KV MiB")


def plotly_fidelity_budget(df: pd.DataFrame) -> go.Figure:
    fig = make_subplots(rows=1, cols=2, subplot_titles=("agreement with full", "KL(full ‖ run)"))
    runs = df[~df["full"]]
    colours = _colours(runs["line"])
    for col, y in ((1, "agreement"), (2, "kl")):
        for line, g in runs.groupby("line", sort=False):
            g = g.sort_values("kept_fraction")
            _band(fig, g, "kept_fraction", f"{y}_lo", f"{y}_hi", colours[line], 1, col)
            fig.add_trace(go.Scatter(x=g["kept_fraction"], y=g[y], mode="lines+markers", name=line,
                                     legendgroup=line, showlegend=col == 1, line={"color": colours[line]}),
                          row=1, col=col)
        fig.update_xaxes(title_text="kept fraction of video tokens", row=1, col=col)
    fig.update_layout(**style.plotly_layout(2.2, style.COLUMN_WIDTH_IN * 2))
    return fig


def plotly_pareto(df: pd.DataFrame) -> go.Figure:
    fig = go.Figure()
    colours = _colours(df["policy"])
    for policy, g in df.groupby("policy", sort=False):
        fig.add_trace(go.Scatter(x=g["peak_kv_mib"], y=g["accuracy"], mode="markers+text", text=g["label"],
                                 textposition="top right", name=policy, marker={"color": colours[policy]},
                                 error_y={"type": "data", "symmetric": False, "array": g["hi"] - g["accuracy"],
                                          "arrayminus": g["accuracy"] - g["lo"]}))
    fig.update_layout(xaxis_title="peak KV MiB", yaxis_title="accuracy (overall)",
                      **style.plotly_layout(2.6))
    return fig


def _plotly_bench(df: pd.DataFrame, y: str, ylabel: str) -> go.Figure:
    fig = go.Figure()
    colours = _colours(df["line"])
    for line, g in df.groupby("line", sort=False):
        g = g.sort_values("frames")
        fig.add_trace(go.Scatter(x=g["frames"], y=g[y], mode="lines+markers", name=line,
                                 line={"color": colours[line]}))
    fig.update_layout(xaxis_title="stream length (frames)", yaxis_title=ylabel, xaxis_type="log",
                      **style.plotly_layout(2.4))
    return fig


def plotly_bench_ttft(df: pd.DataFrame) -> go.Figure:
    return _plotly_bench(df, "ttft_ms", "TTFT (ms)")


def plotly_bench_kv(df: pd.DataFrame) -> go.Figure:
    return _plotly_bench(df, "kv_mib", "KV MiB")


def plotly_bench_ingest(df: pd.DataFrame) -> go.Figure:
    return _plotly_bench(df, "ingest_ms_per_frame", "ingest ms / frame")


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
