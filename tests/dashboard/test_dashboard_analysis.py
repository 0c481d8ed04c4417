"""The analysis functions the dashboard calls: recording slices, cache occupancy, figure export."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.derive import derive, derive_tiers, hermes_fixed_tiers
from analysis.errors import StudyError
from analysis.explore import (
    age_heatmap,
    compare_specs,
    depth_profile_data,
    frame_by_layer,
    frame_mass,
    position_profile,
    raw_steps,
    raw_window,
    steps_table,
    tier_counts,
)
from analysis.export import export_figures
from analysis.metrics import age_profile
from analysis.occupancy import compare, run_occupancy, suggested_budget
from analysis.synthetic import LONG_TERM, SENSORY, Pattern, hermes_like_recording, synthetic_recording
from analysis.tidy import anchor_profile_data
from hermes_policy.errors import BudgetError, SessionError
from hermes_policy.models.tiny import build_tiny
from hermes_policy.policies import make_policy
from hermes_policy.video import open_video
from probes.capture import StudyConfig, capture


@pytest.fixture(scope="module")
def rec():
    return hermes_like_recording(8, frames=12, chunk=3, positions=4, heads=2)


@pytest.fixture(scope="module")
def tiny():
    return build_tiny("tiny-embedded")


@pytest.fixture(scope="module")
def captured(tiny):
    """A real recording of the tiny model: 12 frames, 3 steps, raw rows for the first 2."""
    return capture(tiny, open_video("synthetic:seed=2,frames=12,size=64x64"),
                   StudyConfig(queries="both", chunk_frames=4, raw_steps=2), progress=False)


# --------------------------------------------------------------------------- explore
def test_age_heatmap_mean_over_steps_matches_paper_profile(rec):
    got = age_heatmap(rec, "mixed")
    want = age_profile(rec, "mixed").nanmean(dim=1)
    assert got.shape == (8, 12)
    torch.testing.assert_close(got, want, equal_nan=True)


def test_age_heatmap_one_step_and_head(rec):
    got = age_heatmap(rec, "local", step=0, head=1)  # step 0: 3 frames streamed
    assert got.shape == (8, 12)
    assert torch.isnan(got[:, 3:]).all() and not torch.isnan(got[:, :3]).any()
    # sensory layer 0: exp(-8 d) over 3 frames, the newest (age 0) heaviest
    w = torch.exp(-8 * torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64))
    torch.testing.assert_close(got[0, :3], w / w.sum(), rtol=1e-5, atol=1e-6)
    # long-term layer 7: no recency, uniform over the 3 frames
    torch.testing.assert_close(got[7, :3], torch.full((3,), 1 / 3, dtype=torch.float64), rtol=1e-5, atol=1e-6)


def test_selectors_reject_out_of_range(rec):
    with pytest.raises(StudyError, match="step 9"):
        age_heatmap(rec, "mixed", step=9)
    with pytest.raises(StudyError, match="head 5"):
        frame_mass(rec, 0, "mixed", head=5)
    with pytest.raises(StudyError, match="layer 8"):
        frame_mass(rec, 8, "mixed")
    with pytest.raises(StudyError, match="no query kind 'question'"):
        frame_mass(rec, 0, "question")


def test_frame_mass_at_a_step(rec):
    mass = frame_mass(rec, 0, "mixed", step=1)  # step 1: 6 frames
    assert mass.shape == (12,)
    assert torch.isnan(mass[6:]).all()
    assert float(mass[:6].sum()) == pytest.approx(1.0, abs=1e-5)
    assert int(mass[:6].argmax()) == 5  # recency: the newest frame


def test_frame_by_layer_ranks_long_term_layers_first_for_an_old_frame(rec):
    df = frame_by_layer(rec, 0, "mixed")  # the oldest frame at the last step
    assert list(df.columns) == ["layer", "mass", "relative", "rank"]
    assert len(df) == 8 and list(df["rank"]) == list(range(1, 9))
    assert set(df["layer"].head(3)) == {5, 6, 7}  # no-recency layers keep the oldest frame
    assert df["relative"].iloc[0] == pytest.approx(1.0, abs=1e-4)  # uniform over 12 frames
    assert df["mass"].is_monotonic_decreasing
    with pytest.raises(StudyError, match="not streamed"):
        frame_by_layer(rec, 11, "mixed", step=0)


def test_position_profile_matches_tidy_anchor_profile(rec):
    tiers = hermes_fixed_tiers(8)
    tidy = anchor_profile_data(rec, tiers, [7], "global")
    got = position_profile(rec, 7, "global")
    assert got.shape == (4,)
    assert float(got.sum()) == pytest.approx(1.0)
    np.testing.assert_allclose(got.numpy(), tidy["mass"].to_numpy(), rtol=1e-6)
    # LONG_TERM plants 0.7 on position 0 plus an even share of the rest
    assert float(got[0]) == pytest.approx(0.7 + 0.3 / 4, abs=1e-5)


def test_steps_table(rec):
    df = steps_table(rec)
    assert df["frames"].tolist() == [3, 6, 9, 12]
    assert df["time"].tolist() == [1.5, 3.0, 4.5, 6.0]


def test_raw_window_of_a_real_recording(captured):
    assert raw_steps(captured) == 2
    rows = raw_window(captured, 1, "mixed")
    full = captured["rows", 1][:, captured.query_index("mixed")].double().nanmean(dim=1)
    assert rows.shape[0] == 2 and rows.shape[1] <= full.shape[1]
    torch.testing.assert_close(rows, full[:, : rows.shape[1]], equal_nan=True)
    # each step's row is a distribution over the keys it saw
    for w in range(2):
        assert float(torch.nansum(rows[w])) == pytest.approx(1.0, abs=1e-4)
    assert int((~torch.isnan(rows[0])).sum()) < int((~torch.isnan(rows[1])).sum())  # the cache grew
    one_head = raw_window(captured, 1, "mixed", head=2)
    assert one_head.shape == rows.shape


def test_raw_window_without_rows_says_how_to_get_them(rec):
    assert raw_steps(rec) == 0
    with pytest.raises(StudyError, match="raw steps > 0"):
        raw_window(rec, 0, "mixed")


def test_depth_profile_has_recency_and_anchor_metrics(rec):
    tiers = derive_tiers(rec)
    df = depth_profile_data(rec, tiers)
    assert list(dict.fromkeys(df["metric"])) == ["newest10", "decay", "concentration", "periodicity"]
    assert len(df) == 4 * 8
    per = df[df["metric"] == "periodicity"].set_index("layer")["mean"]
    assert per[0] == pytest.approx(SENSORY.periodicity) and per[7] == pytest.approx(LONG_TERM.periodicity)
    assert (df["head_min"] <= df["mean"] + 1e-12).all() and (df["mean"] <= df["head_max"] + 1e-12).all()
    with pytest.raises(StudyError, match="tiers cover 3 layers"):
        depth_profile_data(rec, hermes_fixed_tiers(3))


def test_compare_specs_side_by_side(rec):
    measured, fixed = derive(rec, "measured", budget=8), derive(rec, "hermes-fixed", budget=8)
    df = compare_specs({"measured": measured, "hermes-fixed": fixed})
    assert len(df) == 8
    assert df["measured tier"].tolist() == [e["tier"] for e in measured.layers]
    assert df["hermes-fixed tier"].tolist() == [e["tier"] for e in fixed.layers]
    assert df["tiers agree"].tolist() == [a == b for a, b in zip(df["measured tier"], df["hermes-fixed tier"])]
    assert tier_counts(fixed) == {"sensory": 1, "working": 5, "long-term": 2}
    with pytest.raises(StudyError, match="same layers"):
        compare_specs({"a": measured, "b": derive(hermes_like_recording(4), "hermes-fixed")})


# --------------------------------------------------------------------------- export
def test_export_writes_every_format_and_the_table(tmp_path, rec):
    tiers = derive_tiers(rec)
    tables = {"depth_profile": depth_profile_data(rec, tiers)}
    paths = export_figures(tables, tmp_path / "figs", "pdf,png,svg,html", {"depth_profile": "recency_depth"})
    names = sorted(p.name for p in paths)
    assert names == sorted(f"depth_profile.{x}" for x in ("pdf", "png", "svg", "html", "parquet", "csv"))
    assert (tmp_path / "figs/depth_profile.pdf").read_bytes().startswith(b"%PDF")
    assert (tmp_path / "figs/depth_profile.png").read_bytes()[:4] == b"\x89PNG"
    assert "<svg" in (tmp_path / "figs/depth_profile.svg").read_text()
    assert "plotly" in (tmp_path / "figs/depth_profile.html").read_text()
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "figs/depth_profile.parquet"), tables["depth_profile"])


def test_export_rejects_bad_input(tmp_path, rec):
    with pytest.raises(StudyError, match="unknown figure format"):
        export_figures({}, tmp_path, "gif")
    with pytest.raises(StudyError, match="no renderer named nope"):
        export_figures({"x": pd.DataFrame()}, tmp_path, "png", {"x": "nope"})
    (tmp_path / "file").write_text("")
    with pytest.raises(StudyError, match="not a directory"):
        export_figures({}, tmp_path / "file", "png")


# --------------------------------------------------------------------------- occupancy
def test_full_policy_holds_every_frame(tiny):
    frames = list(open_video("synthetic:seed=1,frames=10,size=64x64").frames())
    occ = run_occupancy(tiny, make_policy("full"), frames, chunk_frames=4)
    assert occ.frames.tolist() == [4, 8, 10]
    assert occ.held.shape == (3, tiny.num_layers, 10)
    assert np.isnan(occ.held[0, :, 4:]).all()
    np.testing.assert_array_equal(occ.held[-1], np.ones((tiny.num_layers, 10)))
    assert (np.diff(occ.kv_bytes) > 0).all()
    assert (occ.summary == 0).all()
    assert occ.policy["policy"] == "full"


def test_sink_window_keeps_only_the_newest_frames(tiny):
    frames = list(open_video("synthetic:seed=1,frames=12,size=64x64").frames())
    tpf = tiny.tokens_per_frame(64, 64)
    occ = run_occupancy(tiny, make_policy("sink-window", budget=3 * tpf), frames, chunk_frames=4)
    last = occ.held[-1]
    np.testing.assert_array_equal(last[:, 9:], np.ones((tiny.num_layers, 3)))
    np.testing.assert_array_equal(last[:, :9], np.zeros((tiny.num_layers, 9)))
    assert occ.layer_frame_counts().tolist() == [3] * tiny.num_layers
    # the cache stops growing once the window is full
    assert occ.kv_bytes[1] == occ.kv_bytes[2]


def test_hermes_folds_evicted_tokens_into_summary_slots(tiny):
    frames = list(open_video("synthetic:seed=1,frames=12,size=64x64").frames())
    tpf = tiny.tokens_per_frame(64, 64)
    seen = []
    occ = run_occupancy(tiny, make_policy("hermes", budget=2 * tpf), frames, chunk_frames=4,
                        progress=lambda done, total: seen.append((done, total)))
    assert seen == [(4, 12), (8, 12), (12, 12)]
    video_held = np.nansum(occ.held[-1], axis=-1) * tpf
    # fixed split of 4 layers: layers 2 and 3 are long-term (int(0.7 * 4) = 2); their summary rows count
    # against the budget and hold every video token they evicted
    assert video_held[:2].tolist() == [2 * tpf] * 2  # the budget, per layer
    assert (video_held[2:] < 2 * tpf).all()
    assert occ.summary[-1, 2:].tolist() == (12 * tpf - video_held[2:]).tolist()
    assert (occ.summary[:, :2] == 0).all()


def test_compare_runs_side_by_side(tiny):
    frames = list(open_video("synthetic:seed=1,frames=8,size=64x64").frames())
    tpf = tiny.tokens_per_frame(64, 64)
    runs = {"full": run_occupancy(tiny, make_policy("full"), frames),
            "window": run_occupancy(tiny, make_policy("sink-window", budget=2 * tpf), frames)}
    df = compare(runs)
    assert df["run"].tolist() == ["full", "window"]
    assert df["policy"].tolist() == ["full", "sink-window"]
    assert df["frames"].tolist() == [8, 8]
    assert df["frames_held"].tolist() == [8.0, 2.0]
    assert df["kv_bytes"].iloc[0] > df["kv_bytes"].iloc[1]
    assert df["rows_max"].iloc[0] - df["rows_max"].iloc[1] == 6 * tpf  # six frames fewer
    assert compare(runs, step=0)["frames"].tolist() == [4, 4]
    with pytest.raises(SessionError, match="step 5"):
        compare(runs, step=5)


def test_occupancy_errors_are_user_errors(tiny):
    frames = list(open_video("synthetic:seed=1,frames=4,size=64x64").frames())
    with pytest.raises(BudgetError, match="cannot hold one frame"):
        run_occupancy(tiny, make_policy("sink-window", budget=1), frames)
    with pytest.raises(SessionError, match="no frames"):
        run_occupancy(tiny, make_policy("full"), [])


def test_suggested_budget():
    assert suggested_budget(16, 16) == 64
    assert suggested_budget(4, 2) == 4  # at least one frame
    assert suggested_budget(4, 10, share=0.5) == 20
    with pytest.raises(SessionError):
        suggested_budget(0, 4)
    assert not math.isnan(suggested_budget(1, 1))


def test_synthetic_recording_with_one_head_pattern_is_sliceable():
    rec = synthetic_recording([SENSORY, Pattern(recency_k=0.0)], heads=2, frames=6, chunk=2, positions=2,
                              head_patterns={(1, 1): SENSORY})
    uniform, recent = frame_mass(rec, 1, "mixed", head=0), frame_mass(rec, 1, "mixed", head=1)
    assert float(uniform.max() - uniform.min()) < 1e-6
    assert int(recent.argmax()) == 5
