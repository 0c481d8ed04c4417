"""The evaluation's table: one row per run, as ``hermes-lab eval`` prints it (``EvalResult.table``)."""

from __future__ import annotations

import io
import math

from hermes_policy.eval.budgets import format_budget
from hermes_policy.eval.results import EvalResult
from hermes_policy.eval.stats import half_width


def eval_table(result: EvalResult, title: str | None = None):
    """A :class:`rich.table.Table`: one row per run with accuracy per category and overall (± half the
    95% interval, bootstrapped over videos), agreement and KL vs the full cache, median TTFT, peak KV MiB
    and the mean fraction of video tokens kept."""
    from rich.markup import escape
    from rich.table import Table

    def cell(x: float | None, fmt: str) -> str:
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

    def with_ci(x: float | None, ci: list[float] | None) -> str:
        h = half_width(ci)
        return cell(x, ".3f") if h is None or x is None else f"{x:.3f} ± {h:.3f}"

    cats = result.category_columns
    table = Table(title=title, title_justify="left")
    table.add_column("policy")
    table.add_column("budget", justify="right")
    table.add_column("n", justify="right")
    for c in cats:
        table.add_column(c, justify="right")
    for head in ("overall", "agree", "KL", "TTFT ms", "peak KV MiB", "kept %"):
        table.add_column(head, justify="right")
    for run in result.runs:
        s = result.run_summary(run)
        budget = "-" if s["budget"] is None else format_budget(s["budget"])
        n = sum(r.run == run for r in result.rows)
        table.add_row(
            escape(s["policy"]), budget, str(n),  # "hermes[spec]" is not markup
            *(cell(s["by_category"][c], ".3f") for c in cats),
            with_ci(s["accuracy"], s["accuracy_ci"]), cell(s["fidelity"]["agreement"], ".3f"),
            cell(s["fidelity"]["kl"], ".4f"),
            cell(s["ttft_ms_median"], ".1f"),
            cell(None if s["peak_kv_bytes"] is None else s["peak_kv_bytes"] / 2**20, ".2f"),
            cell(None if s["kept_fraction"] is None else 100 * s["kept_fraction"], ".1f"),
        )
    return table


def comparison_table(comparisons: list[dict]):
    """A :class:`rich.table.Table` of paired comparisons (``EvalResult.comparisons`` entries)."""
    from rich.markup import escape
    from rich.table import Table

    reference = comparisons[0]["reference"] if comparisons else ""
    table = Table(title=f"paired with {escape(reference)}, question by question (95% CI over videos; exact McNemar)",
                  title_justify="left")
    for head, justify in (("run", "left"), ("category", "left"), ("n", "right"), ("Δ accuracy", "right"),
                          ("95% CI", "right"), ("wins / losses", "right"), ("p", "right")):
        table.add_column(head, justify=justify)
    for c in comparisons:
        ci = "-" if c["ci"] is None else f"[{c['ci'][0]:+.3f}, {c['ci'][1]:+.3f}]"
        table.add_row(escape(c["run"]), c["category"], str(c["n"]), f"{c['delta']:+.3f}", ci,
                      f"{c['run_only']} / {c['reference_only']}", f"{c['p_value']:.3g}")
    return table


def format_table(result: EvalResult, title: str | None = None, width: int = 200) -> str:
    """:func:`eval_table` rendered as plain text."""
    from rich.console import Console

    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(eval_table(result, title))
    return console.export_text()


__all__ = ["comparison_table", "eval_table", "format_table"]
