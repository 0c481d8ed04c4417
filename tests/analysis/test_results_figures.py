"""hermes-lab figures --eval / --bench: every figure in every format, from planted results."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from planted_results import eval_dir

from analysis.errors import StudyError
from analysis.results_figures import BENCH_FIGURES, EVAL_FIGURES, eval_tables, read_eval, write_result_figures
from hermes_lab.cli import main


def test_eval_figures_in_every_format_with_their_tables(tmp_path):
    a, b = eval_dir(tmp_path / "a", "model-a", 1), eval_dir(tmp_path / "b", "model-b", 2)
    paths = write_result_figures(tmp_path / "out", [a, b], [], "pdf,png,svg,html")
    names = {p.name for p in paths}
    for fig in EVAL_FIGURES:
        assert {f"{fig}.{ext}" for ext in ("pdf", "png", "svg", "html", "parquet", "csv")} <= names
    acc = pd.read_parquet(tmp_path / "out" / "accuracy_budget.parquet")
    # two models: lines are labelled by model, the full cache is the reference, every point has its interval
    assert set(acc["line"]) >= {"model-a · hermes", "model-b · sink-window"}
    assert acc[acc["full"]]["kept_fraction"].eq(1.0).all()
    assert ((acc["lo"] <= acc["accuracy"]) & (acc["accuracy"] <= acc["hi"])).all()
    assert set(acc["category"]) == {"overall", "real-time", "backward"}
    pareto = pd.read_parquet(tmp_path / "out" / "pareto.parquet")
    assert len(pareto) == 10 and pareto["label"].str.startswith("model-").all()


def test_tables_follow_the_results_exactly(tmp_path):
    folder = read_eval(eval_dir(tmp_path / "a", "m", 3))
    acc = eval_tables([folder])["accuracy_budget"]
    hermes = next(r for r in folder.results["results"] if r["policy"] == "hermes" and r["budget"] == 0.3)
    got = acc[(acc["run"] == "hermes@0.3") & (acc["category"] == "overall")].iloc[0]
    assert got["accuracy"] == hermes["accuracy"] and [got["lo"], got["hi"]] == hermes["accuracy_ci"]
    assert got["line"] == "hermes", "one model: lines are the policies"


def test_bench_out_and_its_figures(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", "--model", "tiny-embedded", "--video", "synthetic:seed=1,frames=4", "--frames", "4,8",
                 "--policies", "full,sink-window", "--budget", "8", "--ttft-repeats", "1", "--out", str(out)])
    assert code == 0
    rows = pd.read_parquet(out / "rows.parquet")
    assert list(rows["model"].unique()) == ["tiny-embedded"] and len(rows) == 4
    assert json.loads((out / "rows.json").read_text())[0]["policy"] == "full"
    paths = write_result_figures(tmp_path / "figs", [], [out], "png,html")
    assert {f"{fig}.png" for fig in BENCH_FIGURES} <= {p.name for p in paths}
    capsys.readouterr()
    code = main(["bench", "--model", "tiny-embedded", "--frames", "4", "--out", str(out)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err


def test_bad_folders_are_one_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(StudyError, match="no finished evaluation"):
        write_result_figures(tmp_path / "o", [tmp_path / "empty"], [])
    with pytest.raises(StudyError, match="nothing to draw"):
        write_result_figures(tmp_path / "o", [], [])
    code = main(["figures", "--bench", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "no bench rows" in err
    assert not (tmp_path / "o").exists(), "nothing is written when an input is bad"


def test_what_the_fuzz_found_a_results_document_of_the_wrong_shape(tmp_path):
    """Found by test_file_fuzz (a TypeError and an AttributeError deep in the tables); one line now."""
    folder = eval_dir(tmp_path / "e", "m", 4)
    for damage in ({"accuracy_ci": [0, None]}, {"by_category": None}, {"fidelity": []}):
        doc = json.loads((folder / "results.json").read_text())
        doc["results"][0].update(damage)
        (folder / "results.json").write_text(json.dumps(doc))
        with pytest.raises(StudyError, match="is damaged"):
            write_result_figures(tmp_path / "o", [folder], [])
    assert not (tmp_path / "o").exists()
