"""hermes-lab validate's figures (confusion grid, anchor ROC, knob breakdown) from small hand-made tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from analysis.derive import TIERS
from analysis.errors import StudyError
from analysis.validate import METHODS, TRUTH_KINDS, auroc, roc_points
from analysis.validate_figures import (
    METRICS,
    confusion_matrices,
    mpl_confusion,
    plotly_anchor_roc,
    plotly_confusion,
    roc_table,
    write_validation_figures,
)

FAMILIES = ("embedded", "qwen2-vl")


def confusion_table() -> pd.DataFrame:
    """Every (family, method, truth, predicted) cell; the diagonal 10 + family index, off-diagonal 1."""
    rows = [{"family": f, "method": m, "truth": t, "predicted": p, "count": (10 + i) if t == p else 1}
            for i, f in enumerate(FAMILIES) for m in METHODS for t in TRUTH_KINDS for p in TIERS]
    return pd.DataFrame(rows)


def roc_table_in() -> pd.DataFrame:
    rows = []
    for f, (scores, labels) in zip(FAMILIES, (([0.9, 0.8, 0.8, 0.3, 0.1], [1, 1, 0, 0, 0]),
                                              ([0.7, 0.6, 0.5, 0.4], [1, 0, 1, 0]))):
        a = auroc(scores, [bool(y) for y in labels])
        rows += [{"family": f, "threshold": th, "fpr": x, "tpr": y, "auroc": a}
                 for th, x, y in roc_points(scores, [bool(y) for y in labels])]
    return pd.DataFrame(rows)


def breakdown_table() -> pd.DataFrame:
    rows = [{"family": f, "knob": knob, "value": float(v), "metric": m,
             "score": math.nan if (m == "recency_spearman" and j == 0) else 0.5 + 0.1 * j}
            for f in FAMILIES for knob, values in (("strength", (0.5, 1, 2)), ("frames", (16, 32, 64)))
            for j, v in enumerate(values) for m in METRICS]
    return pd.DataFrame(rows)


def test_every_figure_with_its_table(tmp_path):
    conf = confusion_table()
    tables = {"confusion": conf, "roc": roc_table_in(), "roc_point": pd.DataFrame(
        {"family": list(FAMILIES), "fpr": [0.0, 0.5], "tpr": [1.0, 0.5]}), "breakdown": breakdown_table()}
    paths = write_validation_figures(tmp_path, tables, ("png", "html"))
    names = {p.name for p in paths}
    for fig in ("confusion", "anchor_roc", "breakdown"):
        assert {f"{fig}.{ext}" for ext in ("png", "html", "parquet", "csv")} <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in paths)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "confusion.parquet"), conf)
    roc = pd.read_parquet(tmp_path / "anchor_roc.parquet")
    # derive's calls travel in the figure's table, so the figure can be redrawn from its parquet alone
    assert set(roc["kind"]) == {"curve", "call"} and roc[roc["kind"] == "call"]["auroc"].notna().all()


def test_absent_or_empty_tables_are_skipped(tmp_path):
    paths = write_validation_figures(tmp_path, {"breakdown": breakdown_table(), "roc": pd.DataFrame(),
                                                "rows": pd.DataFrame({"x": [1]})}, ("png",))
    assert {p.stem for p in paths} == {"breakdown"}
    assert write_validation_figures(tmp_path / "none", {}, ("png",)) == []
    assert not (tmp_path / "none").exists()


def test_a_missing_column_is_one_line_naming_it(tmp_path):
    with pytest.raises(StudyError, match="'confusion' lacks column 'count'") as e:
        write_validation_figures(tmp_path, {"breakdown": breakdown_table(),
                                            "confusion": confusion_table().drop(columns="count")}, ("png",))
    assert "\n" not in str(e.value)
    assert not list(tmp_path.iterdir()), "tables are checked before anything is written"
    with pytest.raises(StudyError, match="'roc_point' lacks column 'tpr'"):
        write_validation_figures(tmp_path, {"roc": roc_table_in(),
                                            "roc_point": pd.DataFrame({"family": ["embedded"], "fpr": [0.1]})})
    with pytest.raises(StudyError, match="truth 'episodic'"):
        write_validation_figures(tmp_path, {"confusion": confusion_table().replace({"truth": {"diffuse": "episodic"}})})


def test_confusion_panels_hold_the_counts_and_accuracy_without_diffuse():
    conf = confusion_table()
    panels = confusion_matrices(conf)
    assert [(f, m) for f, m, _, _ in panels] == [(f, m) for f in FAMILIES for m in METHODS]
    _, _, counts, acc = panels[0]
    assert list(counts.index) == list(TRUTH_KINDS) and list(counts.columns) == list(TIERS)
    assert acc == pytest.approx(30 / 36)  # 3 x 10 on the diagonal of 3 x 12; the diffuse row is not scored
    fig = plotly_confusion(conf)
    assert fig.data[0].text.tolist() == counts.to_numpy().tolist()
    assert fig.data[-1].text[1][1] == 11  # qwen2-vl's diagonal
    assert [a.text for a in fig.layout.annotations][:2] == ["embedded · roles (acc 0.83)",
                                                           "embedded · changepoint (acc 0.83)"]
    mpl_titles = [ax.get_title() for ax in mpl_confusion(conf).axes if ax.get_title()]
    assert mpl_titles[-1] == "qwen2-vl · hermes-fixed\n(acc 0.85)"  # 3 x 11 of 3 x 13


def test_roc_legend_carries_each_familys_auroc():
    fig = plotly_anchor_roc(roc_table(roc_table_in()))
    names = [t.name for t in fig.data]
    assert "embedded (AUROC 0.92)" in names and "qwen2-vl (AUROC 0.75)" in names
    curve = next(t for t in fig.data if t.name.startswith("embedded"))
    assert (curve.x[0], curve.y[0]) == (0.0, 0.0) and (curve.x[-1], curve.y[-1]) == (1.0, 1.0)
