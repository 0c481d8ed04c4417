"""Page 5, Results: evaluations and benchmarks as interactive figures, with their intervals and comparisons.

Folders come from ``hermes-lab dashboard --eval DIR --bench DIR``, from the runs folder (any folder under
it holding an eval ``results.json`` or bench ``rows.parquet``) and from the sidebar's path box. The
figures are :mod:`analysis.results_figures`'s, drawn from the same tidy tables ``hermes-lab figures``
writes, filtered by category, model and policy.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import streamlit as st

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
from dashboard import ui

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
    left, right = st.columns(2)
    left.plotly_chart(plotly_accuracy_budget(acc), theme=None, key="results_accuracy_budget")
    right.plotly_chart(plotly_accuracy_kv(acc), theme=None, key="results_accuracy_kv")
    left.plotly_chart(plotly_fidelity_budget(_filter(tables["fidelity_budget"], models, policies)), theme=None,
                      key="results_fidelity")
    pareto = tables["pareto"]
    pareto = pareto[pareto["model"].isin(models) & pareto["policy"].isin([*policies, "full"])]
    right.plotly_chart(plotly_pareto(pareto), theme=None, key="results_pareto")
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
        col.plotly_chart(draw(df[df["policy"].isin(policies)]), theme=None, key=f"results_{name}")
