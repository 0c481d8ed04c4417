"""The study page's causal section under Streamlit's AppTest: a map beside the study, or a hint to make one."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from analysis.causal_stats import CausalMap
from dashboard.causal import find_maps
from dashboard.settings import ENV_ARGS
from hermes_policy.models.tiny import build_tiny
from hermes_policy.video import open_video
from probes.capture import StudyConfig, capture

APP = str(Path(__file__).resolve().parents[2] / "dashboard" / "app.py")
MODEL = "tiny-embedded"


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("causal-study") / "study"
    capture(build_tiny(MODEL), open_video("synthetic:seed=2,frames=8,size=64x64"),
            StudyConfig(queries="pseudo", chunk_frames=4), progress=False).save(out)
    return out


def handmade_map(layers: int, heads: int, bins: int = 3, positions: int = 4) -> CausalMap:
    """A small map whose layer 0 needs the newest frames and the rest nothing (no model needed)."""
    effects, rows = [], []
    for q in range(4):
        base = {"stream": q % 2, "question_index": q, "category": "real-time"}
        for g in range(layers):
            for b in range(bins):
                drop = 0.5 * 0.3 ** b if g == 0 else 0.0
                effects.append({**base, "kind": "age", "group": g, "bin": b, "drop": drop, "delta": -drop,
                                "flip": drop > 0.3, "layer_first": g, "layer_last": g, "head": -1})
            for b in range(positions):
                effects.append({**base, "kind": "position", "group": g, "bin": b, "drop": 0.01, "delta": -0.01,
                                "flip": False, "layer_first": g, "layer_last": g, "head": -1})
            for h in range(heads):
                for kind, n in (("age", bins), ("position", positions)):
                    for b in range(n):
                        rows.append({**base, "layer": g, "kind": kind, "bin": b, "head": h,
                                     "attention": 1 / n, "direct": 0.1 / (b + 1), "direct_null": 0.05})
    meta = {"model": MODEL, "family": "embedded", "num_layers": layers, "num_heads": heads,
            "groups": [[g] for g in range(layers)], "model_layers": list(range(layers)), "questions": 4,
            "streams": ["a", "b"], "settings": {"bins": bins, "mode": "knockout"},
            "position_groups": [[p] for p in range(positions)], "cost": {"forwards": 12, "naive_forwards": 96}}
    return CausalMap(pd.DataFrame(effects), pd.DataFrame(rows), meta)


@pytest.fixture(autouse=True)
def fresh_cache():
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def launch(monkeypatch, runs: Path, study: Path) -> AppTest:
    monkeypatch.setenv(ENV_ARGS, f"--study {study} --model {MODEL} --runs {runs}")
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("views/study.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def causal_table(at: AppTest) -> pd.DataFrame:
    """The section's tier table: the page's last dataframe with a causal tier column."""
    return next(d.value for d in reversed(at.dataframe) if any(str(c).startswith("causal (") for c in d.value))


def chart_keys(at: AppTest) -> set[str]:
    return {el.proto.id.rsplit("-", 1)[-1] for el in at.get("plotly_chart")}


def test_a_map_in_the_study_folder_shows_beside_the_study(monkeypatch, tmp_path, study_dir):
    study = tmp_path / "study"
    shutil.copytree(study_dir, study)
    from probes.recording import Recording

    rec = Recording.load(study)
    handmade_map(rec.num_layers, rec.num_heads).save(study / "causal")
    assert find_maps(str(study), tmp_path / "runs") == [str(study / "causal")]
    at = launch(monkeypatch, tmp_path / "runs", study)
    assert {"causal_necessity", "causal_direct", "causal_scatter"} <= chart_keys(at)
    table = causal_table(at)
    assert list(table["layer"]) == list(range(rec.num_layers)) and "causal (answer)" in table
    assert table["causal (answer)"].iloc[0] == "sensory"  # layer 0 needs the newest frames only
    assert any("same tier as the study" in c.value for c in at.caption)
    necessity = next(el for el in at.get("plotly_chart") if el.proto.id.endswith("-causal_necessity"))
    assert "95% CI" in necessity.proto.spec  # the interval is on the hover


def test_no_map_says_how_to_make_one_and_a_map_of_another_model_is_not_compared(monkeypatch, tmp_path, study_dir):
    at = launch(monkeypatch, tmp_path / "runs", study_dir)
    assert any("hermes-lab causal --data" in c.value for c in at.caption)
    assert not {"causal_necessity", "causal_direct"} & chart_keys(at)
    other = tmp_path / "runs" / "other"
    handmade_map(7, 2).save(other)  # found under --runs; a different layer count
    at = launch(monkeypatch, tmp_path / "runs", study_dir)
    assert any("different models" in w.value for w in at.warning)
    assert "causal_direct" in chart_keys(at)
    np.testing.assert_equal(len(causal_table(at)), 7)
