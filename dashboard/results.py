"""Page 5, Results: evaluations and benchmarks as interactive figures, with their intervals and comparisons.

Folders come from ``hermes-lab dashboard --eval DIR --bench DIR``, from the runs folder (any folder under
it holding an eval ``results.json`` or bench ``rows.parquet``) and from the sidebar's path box. The
figures are :mod:`analysis.results_figures`'s, drawn from the same tidy tables ``hermes-lab figures``
writes, filtered by category, model and policy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from analysis.errors import StudyError
from analysis.results_figures import (
    BENCH_ROWS,
    bench_tables,
    eval_tables,
    plotly_accuracy_budget,
    plotly_accuracy_kv,
    plotly_bench_ingest,
    plotly_bench_kv,
    plotly_bench_ttft,
    plotly_fidelity_budget,
    plotly_pareto,
    read_benches,
    read_eval,
)
from dashboard import data, plots, ui
from hermes_policy.jsonfile import read_json
from hermes_policy.video import open_video

EXTRA_KEY = "results_extra"


def discover(root: Path) -> tuple[list[str], list[str]]:
    """Eval and bench folders under ``root`` (three levels deep at most), sorted."""
    evals, benches = set(), set()
    if root.is_dir():
        for depth in ("*", "*/*", "*/*/*"):
            evals |= {str(p.parent) for p in root.glob(f"{depth}/results.json")}
            benches |= {str(p.parent) for p in root.glob(f"{depth}/{BENCH_ROWS}")}
    return sorted(evals), sorted(benches - evals)


def _pick(kind: str, given: tuple[str, ...], found: list[str], key: str) -> list[str]:
    options = list(dict.fromkeys([*given, *found, *st.session_state.get(f"{EXTRA_KEY}_{kind}", [])]))
    return st.multiselect(f"{kind.capitalize()} folders", options, default=list(given) or options[:1], key=key)


def _filter(df: pd.DataFrame, models: list[str], policies: list[str]) -> pd.DataFrame:
    # the full cache stays: it is every accuracy figure's reference line
    keep = df["model"].isin(models) & (df["policy"].isin(policies) | df.get("full", False))
    return df[keep]


def render() -> None:
    st.title("Results")
    s = ui.settings()
    found_evals, found_benches = discover(s.runs_dir)
    with st.sidebar:
        extra = st.text_input("Add an eval or bench folder", key="results_add",
                              help="a folder eval --out or bench --out wrote").strip()
        if extra:
            kind = "bench" if (Path(extra) / BENCH_ROWS).is_file() else "eval"
            st.session_state.setdefault(f"{EXTRA_KEY}_{kind}", [])
            if extra not in st.session_state[f"{EXTRA_KEY}_{kind}"]:
                st.session_state[f"{EXTRA_KEY}_{kind}"].append(extra)
    evals = _pick("eval", s.evals, found_evals, "results_evals")
    benches = _pick("bench", s.benches, found_benches, "results_benches")
    if not evals and not benches:
        st.info(f"No results yet: run `hermes-lab eval --out DIR` or `hermes-lab bench --out DIR` (folders under "
                f"{s.runs_dir} are found by themselves), or open one with `hermes-lab dashboard --eval DIR`.")
        return
    if evals:
        _eval_section(evals)
    if benches:
        _bench_section(benches)
    if evals:
        _drilldown(evals)


def _show(fig, key: str) -> None:
    """A figure drawn at the page's width: the print size of ``hermes-lab figures`` is for paper, not screens."""
    fig.update_layout(width=None, autosize=True)
    st.plotly_chart(fig, theme=None, key=key)


def _eval_section(paths: list[str]) -> None:
    with ui.guard("Reading the evaluations") as g:
        folders = [read_eval(p) for p in paths]
        tables = eval_tables(folders)
    if not g.ok:
        return
    acc = tables["accuracy_budget"]
    c1, c2, c3 = st.columns(3)
    categories = c1.multiselect("Categories", list(dict.fromkeys(acc["category"])),
                                default=list(dict.fromkeys(acc["category"])), key="results_categories")
    models = c2.multiselect("Models", sorted(acc["model"].unique()), default=sorted(acc["model"].unique()),
                            key="results_models")
    policies_all = sorted(acc.loc[~acc["full"], "policy"].unique())
    policies = c3.multiselect("Policies", policies_all, default=policies_all, key="results_policies")
    acc = _filter(acc, models, policies)
    acc = acc[acc["category"].isin(categories)]
    if acc.empty:
        st.info("Nothing left after the filters.")
        return
    _show(plotly_accuracy_budget(acc), "results_accuracy_budget")
    _show(plotly_accuracy_kv(acc), "results_accuracy_kv")
    # full width each: side by side, the two fidelity panels' axis titles and the Pareto legend collide
    _show(plotly_fidelity_budget(_filter(tables["fidelity_budget"], models, policies)), "results_fidelity")
    pareto = tables["pareto"]
    pareto = pareto[pareto["model"].isin(models) & pareto["policy"].isin([*policies, "full"])]
    _show(plotly_pareto(pareto), "results_pareto")
    st.subheader("Accuracy with 95% intervals (bootstrapped over videos)")
    st.dataframe(acc[["model", "run", "category", "n", "accuracy", "lo", "hi", "kept_fraction", "peak_kv_mib"]],
                 hide_index=True, key="results_accuracy_table")
    comparisons = [dict(c, model=f.model) for f in folders for c in f.results.get("comparisons", [])]
    if comparisons:
        st.subheader("Paired comparisons (accuracy difference, paired bootstrap 95% CI, exact McNemar p)")
        table = pd.DataFrame(comparisons)
        table = table[table["model"].isin(models) & table["category"].isin(categories)]
        st.dataframe(table[["model", "run", "reference", "category", "n", "delta", "ci", "p_value"]],
                     hide_index=True, key="results_comparisons")


def _bench_section(paths: list[str]) -> None:
    with ui.guard("Reading the benchmarks") as g:
        tables = bench_tables(read_benches(paths))
    if not g.ok:
        return
    st.subheader("Cost against stream length")
    policies_all = sorted(tables["bench_ttft"]["policy"].unique())
    policies = st.multiselect("Bench policies", policies_all, default=policies_all, key="results_bench_policies")
    cols = st.columns(3)
    for col, (name, draw) in zip(cols, (("bench_ttft", plotly_bench_ttft), ("bench_kv", plotly_bench_kv),
                                        ("bench_ingest", plotly_bench_ingest))):
        df = tables[name]
        with col:
            _show(draw(df[df["policy"].isin(policies)]), f"results_{name}")


# ------------------------------------------------------------------ per question
@st.cache_data(show_spinner=False, max_entries=8)
def _rows(folder: str, stamp: int) -> pd.DataFrame:
    """An eval folder's per-question rows (``stamp``: the file's mtime, so a rerun's rows are re-read)."""
    return pd.read_parquet(Path(folder) / "rows.parquet")


def _config(folder: str) -> dict:
    path = Path(folder) / "config.json"
    return read_json(path, StudyError, "eval config", expect=dict) if path.is_file() else {}


def question_index(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per question: its text and answer, and how many different answers the runs gave
    (sorted: the questions the policies disagree on first)."""
    asked = rows[~rows["reference"]] if "reference" in rows else rows
    grouped = asked.groupby(["video_index", "question_index"], sort=True)
    table = grouped.agg(video=("video", "first"), question=("question", "first"), answer=("answer", "first"),
                        time=("asked_at", "first"), answers=("predicted", "nunique"),
                        correct=("correct", "mean")).reset_index()
    return table.sort_values(["answers", "correct", "video_index", "question_index"],
                             ascending=[False, True, True, True]).reset_index(drop=True)


def answer_frame(video: str, answer_text: str | None) -> tuple[int, str] | None:
    """For a synthetic video, the frame where the answer's object first appeared, and what appeared."""
    if not video.startswith("synthetic:") or not answer_text:
        return None
    events = open_video(video).events
    words = set(str(answer_text).lower().split())
    for event in events.events if events is not None else ():
        if event.kind == "appear" and words & {str(event.shape).lower(), str(event.colour).lower()}:
            return event.frame, f"{event.colour} {event.shape} appeared at t = {event.time:.1f} s"
    return None


def _drilldown(paths: list[str]) -> None:
    st.subheader("Per question")
    folder = st.selectbox("Evaluation", paths, key="results_drill_folder") if len(paths) > 1 else paths[0]
    rows_file = Path(folder) / "rows.parquet"
    if not rows_file.is_file():
        st.info(f"{folder} has no rows.parquet to drill into.")
        return
    with ui.guard("Reading the rows") as g:
        rows = _rows(folder, rows_file.stat().st_mtime_ns)
        index = question_index(rows)
    if not g.ok or index.empty:
        return
    pick = st.selectbox(
        "Question (the ones where the runs disagree first)", range(len(index)), key="results_question",
        format_func=lambda i: (f"video {index.loc[i, 'video_index']} · q{index.loc[i, 'question_index']} · "
                               f"{index.loc[i, 'answers']} different answers · {index.loc[i, 'question'][:60]}"))
    q = index.loc[pick]
    these = rows[(rows["video_index"] == q["video_index"]) & (rows["question_index"] == q["question_index"])]
    st.markdown(f"**{q['question']}** (answer {q['answer']}, asked at t = {q['time']:.1f} s of `{q['video']}`)")
    st.dataframe(pd.DataFrame({
        "run": these["run"], "predicted": these["predicted"], "correct": these["correct"],
        "option probabilities": [", ".join(f"{p:.2f}" for p in probs) for probs in these["option_probs"]],
        "kept fraction": these["kept_fraction"], "budget": these["budget"],
    }), hide_index=True, key="results_question_runs")

    config = _config(folder)
    recipes = {p["label"]: p for p in config.get("policies", [])}
    replayable = [r for r in these["run"] if not recipes.get(r, {}).get("params")]
    left, right = st.columns([3, 2])
    with left:
        if replayable:
            default = next((i for i, r in enumerate(replayable) if r != "full"), 0)
            run = st.selectbox("Replay the cache of", replayable, index=default, key="results_replay_run")
            row = these[these["run"] == run].iloc[0]
            budget = None if pd.isna(row["budget"]) else int(row["budget"])
            with ui.guard(f"Replaying {run}"), st.spinner(f"Replaying {q['video']} under {run}…"):
                # the run's own chunks: eval flushed a partial chunk before each question of this video
                asked = rows[(rows["run"] == run) & (rows["video_index"] == q["video_index"])]["frames_seen"]
                occupancy = data.occupancy(config.get("model") or ui.current_model(), q["video"],
                                           str(row["policy_name"]), budget, None, None,
                                           int(config.get("chunk_frames") or 4),
                                           tuple(sorted(int(n) for n in set(asked))))
                step = int(np.searchsorted(occupancy.time, float(row["asked_at"]) + 1e-6, side="right")) - 1
                step = min(max(step, 0), occupancy.num_steps - 1)
                st.plotly_chart(plots.occupancy_heatmap(occupancy.held[step], f"{run}: what each layer held"),
                                theme=None, key="results_replay_map")
                st.caption(f"after {occupancy.frames[step]} frames (the question came at t = {row['asked_at']:.1f} s)")
        else:
            st.info("These runs were configured by a spec; replay them with the Cache occupancy page.")
    with right, ui.guard("Frames around the question"):
        seen = int(these["frames_seen"].iloc[0])
        thumbs = data.thumbnails(q["video"], config.get("fps"), max(seen, 1))
        first = max(0, len(thumbs) - 4)
        st.image(list(thumbs[first:]), caption=[f"frame {i}" for i in range(first, len(thumbs))], width=96)
        found = answer_frame(q["video"], these["answer_text"].iloc[0] if "answer_text" in these else None)
        if found is not None:
            frame, what = found
            st.image(data.thumbnails(q["video"], None, frame + 1)[frame], caption=f"frame {frame}: {what}",
                     width=96)
