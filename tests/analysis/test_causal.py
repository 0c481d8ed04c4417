"""The causal memory map (analysis.causal, causal_stats, causal_figures, causal_validate) and its commands."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from conftest import _tiny

from analysis.causal import CausalConfig, age_bins, map_streams, parse_layer_groups, position_groups
from analysis.causal_stats import (
    CausalMap,
    CausalThresholds,
    causal_spec,
    causal_tiers,
    necessity_map,
)
from analysis.errors import StudyError
from hermes_lab.cli import main as cli_main
from hermes_policy.data.dataset import synthesize, write_dataset

MODEL = "tiny-embedded"


@pytest.fixture(scope="module")
def items():
    """Two 8-frame streams, two questions each (tiny models read bytes: questions are long)."""
    out = synthesize(5, 2, 8, size=(64, 64), per_category=1, progress=False)
    for item in out:
        item.questions = item.questions[-2:]
    return out


@pytest.fixture(scope="module")
def run(items):
    return map_streams(_tiny(MODEL), items, CausalConfig(bins=3, layers="2", scoring="cloze"), progress=False,
                       model=MODEL)


def test_bins_groups_and_layer_ranges():
    assert age_bins(list(range(8)), 4) == [(6, 7), (4, 5), (2, 3), (0, 1)]  # bin 0 holds the newest
    assert age_bins([5], 3) == [(5,), (), ()]
    assert position_groups(3) == [(0,), (1,), (2,)] and len(position_groups(196)) == 16
    assert sum(len(g) for g in position_groups(196)) == 196
    assert parse_layer_groups("each", 3) == ((0,), (1,), (2,))
    assert parse_layer_groups("2", 5) == ((0, 1, 2), (3, 4)) or parse_layer_groups("2", 5) == ((0, 1), (2, 3, 4))
    assert parse_layer_groups("0-1,3", 4) == ((0, 1), (3,))
    for bad in ("0-1,1", "x", "3-1", "0"):
        with pytest.raises(StudyError):
            parse_layer_groups(bad, 4)
    with pytest.raises(StudyError, match="has 4 layers"):
        parse_layer_groups("2-7", 4)
    with pytest.raises(StudyError, match="--bins"):
        CausalConfig(bins=0)
    with pytest.raises(StudyError, match="--mode"):
        CausalConfig(mode="swap")


def test_map_rows_agree_with_naive_asking_and_survive_disk(run, tmp_path):
    adapter = _tiny(MODEL)
    L, H = adapter.num_layers, adapter.num_heads
    questions, P = run.meta["questions"], len(run.meta["position_groups"])
    e = pd.DataFrame(run.effects)
    assert questions == 4 and len(e) == questions * 2 * (3 + P)  # every group x (age bins + positions)
    assert set(e["kind"]) == {"age", "position"} and e["flip"].dtype == bool
    assert np.allclose(e["drop"], -e["delta"])
    assert len(run.heads) == questions * L * (3 + P) * H  # direct effects: every layer, not group
    cost = run.report.to_dict()
    # per question: one clean pass and one pack per group, where naive asking takes one forward per knockout
    assert cost["forwards"] == questions * 3 and cost["naive_forwards"] == questions * (1 + 2 * (3 + P))
    assert cost["row_layer_ratio"] > 1
    cmap = CausalMap.from_run(run)
    cmap.save(tmp_path / "map")
    back = CausalMap.load(tmp_path / "map")
    pd.testing.assert_frame_equal(back.effects, cmap.effects)
    doc = json.loads((tmp_path / "map" / "causal.json").read_text())
    assert {"age_map", "position_map", "correlation", "tiers", "bootstrap"} <= set(doc["summary"])
    for cell in doc["summary"]["age_map"]:
        assert cell["drop_lo"] - 1e-12 <= cell["drop"] <= cell["drop_hi"] + 1e-12
    assert len(doc["summary"]["correlation"]) == L


def _handmade(groups=3, bins=4, positions=4, questions=6) -> CausalMap:
    """Group 0 needs recent frames (drop halves per bin, flat over positions), group 1 one position at every
    age, group 2 nothing; heads likewise, head 0 of each layer mirrors its group and head 1 reads nothing."""
    rng = np.random.default_rng(0)
    effects, heads = [], []
    for q in range(questions):
        base = {"stream": q % 3, "question_index": q}
        for g in range(groups):
            for b in range(bins):
                drop = [0.8 * 0.3 ** b, 0.2, 0.0][g] * (1 + 0.1 * rng.random())
                effects.append({**base, "kind": "age", "group": g, "bin": b, "drop": drop, "flip": False})
            for p in range(positions):
                drop = [0.1, 0.6 if p == 2 else 0.01, 0.0][g] * (1 + 0.1 * rng.random())
                effects.append({**base, "kind": "position", "group": g, "bin": p, "drop": drop, "flip": False})
            for h in range(2):
                for kind, n in (("age", bins), ("position", positions)):
                    for b in range(n):
                        d = [e for e in effects if e["kind"] == kind and e["group"] == g and e["bin"] == b][-1]
                        heads.append({**base, "layer": g, "kind": kind, "bin": b, "head": h, "attention": 0.1,
                                      "direct": d["drop"] + 1e-3 if h == 0 else 1e-3, "direct_null": 1e-3 * 5})
    meta = {"num_layers": groups, "num_heads": 2, "groups": [[g] for g in range(groups)], "family": "embedded",
            "model_layers": list(range(groups)), "settings": {"bins": bins, "mode": "knockout"}, "model": "x",
            "position_groups": [[p] for p in range(positions)]}
    return CausalMap(pd.DataFrame(effects), pd.DataFrame(heads), meta)


def test_tiers_from_the_map_follow_the_role_rule():
    cmap = _handmade()
    t = causal_tiers(cmap, "answer")
    assert t.layers == ("sensory", "long-term", "working") and t.no_role == (2,)
    assert t.features["decay"][0] > 1 and t.features["concentration"][1] > 0.2
    d = causal_tiers(cmap, "direct")
    assert d.heads[0][0] == "sensory" and d.heads[1][0] == "long-term"
    # a higher floor takes the role away
    assert causal_tiers(cmap, "answer", CausalThresholds(min_drop=10)).no_role == (0, 1, 2)
    spec = causal_spec(cmap, "answer", budget=8)
    assert [x["tier"] for x in spec.layers] == ["sensory", "long-term", "working"]
    assert spec.source["method"] == "causal" and spec.params["budget"] == 8
    with pytest.raises(StudyError, match="--effect"):
        causal_tiers(cmap, "attention")
    m = necessity_map(cmap, "age")
    assert list(m.columns[:3]) == ["group", "layers", "layer_first"] and len(m) == 12
    assert (m["drop_lo"] <= m["drop"]).all() and (m["drop"] <= m["drop_hi"]).all()
    # need that rises with age (the oldest frames, flat over positions) is long-term memory
    e = cmap.effects
    old = e[(e["kind"] == "age") & (e["group"] == 0)]
    e.loc[old.index, "drop"] = old["drop"].to_numpy()[::-1]
    assert causal_tiers(cmap, "answer").layers[0] == "long-term"


def test_causal_command_writes_the_map_and_derive_reads_it(items, tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    write_dataset(items[:1], data / "dataset.jsonl", home=data)
    out = tmp_path / "map"
    code = cli_main(["causal", "--data", str(data), "--out", str(out), "--model", MODEL, "--bins", "3",
                     "--layers", "1", "--no-positions", "--format", "svg", "--naive-check", "1", "--scoring", "cloze"])
    assert code == 0, capsys.readouterr().err
    said = capsys.readouterr().out
    assert "tiers by answer effect" in said and "fewer" in said
    check = json.loads((out / "causal.json").read_text())["cost"]["naive_check"]
    assert check["knockouts"] == 3 and check["max_abs_diff"] < 1e-4  # packed and naive scores agree
    for name in ("causal.json", "effects.parquet", "heads.parquet", "figures/necessity_heatmap.svg",
                 "figures/necessity_heatmap.csv", "figures/attention_causal.svg", "figures/correlation.csv"):
        assert (out / name).is_file(), name
    spec = tmp_path / "causal.json"
    assert cli_main(["derive", "--causal", str(out), "--out", str(spec), "--budget", "9"]) == 0
    doc = json.loads(spec.read_text())
    assert doc["source"]["method"] == "causal" and len(doc["layers"]) == _tiny(MODEL).num_layers
    capsys.readouterr()
    for argv, message in (
            (["causal", "--data", str(data), "--out", str(tmp_path / "b"), "--bins", "0"], "--bins"),
            (["causal", "--data", str(data), "--out", str(tmp_path / "c"), "--layers", "0-1,1"], "twice"),
            (["causal", "--data", str(data), "--out", str(out)], "exists"),
            (["derive", "--out", str(tmp_path / "s.json")], "one of the two"),
            (["derive", "--causal", str(data), "--out", str(tmp_path / "s.json")], "no causal map"),
            (["derive", "--causal", str(out), "--method", "changepoint", "--out", str(tmp_path / "s.json")],
             "--method")):
        assert cli_main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err, (argv, err)


def test_a_planted_model_is_scored_by_both_instruments():
    """validate --causal: the study's and the map's scores of one planted model, from one build."""
    from analysis.causal_validate import format_report, report, run_causal_validation
    from analysis.validate import ValidateConfig

    result = run_causal_validation(ValidateConfig(("embedded",), 1, 1000, frames=16), progress=False)
    (row,) = result.rows
    assert row["layer_total"] > 0 and 0 <= row["causal.layer_correct"] <= row["layer_total"]
    assert {"causal_concentration", "concentration", "attention_predicted"} <= set(result.heads[0])
    doc = report(result)
    scores = doc["families"]["embedded"]
    assert set(scores["attention"]) == set(scores["causal"])
    assert scores["causal"]["anchor_auroc"] > 0.5 and not math.isnan(scores["causal"]["recency_spearman"])
    assert "attention | causal" in format_report(doc)


def test_patching_swaps_rows_in_from_the_next_stream(items):
    """--mode patch: stream i's rows of a bin come from stream i + 1, row for row (same frames and size)."""
    run = map_streams(_tiny(MODEL), items, CausalConfig(bins=2, layers="1", positions=False, mode="patch",
                                                        scoring="cloze"), progress=False)
    e = pd.DataFrame(run.effects)
    assert len(e) == 4 * 2 and np.isfinite(e["delta"]).all() and (e["delta"].abs() > 0).any()
    with pytest.raises(StudyError, match="second stream"):
        map_streams(_tiny(MODEL), items[:1], CausalConfig(mode="patch"), progress=False)
