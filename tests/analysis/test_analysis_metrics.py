"""analysis.metrics on recordings with known answers (hand-built or planted by analysis.synthetic)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from analysis.errors import StudyError
from analysis.metrics import (
    age_profile,
    anchor_structure,
    decay_rate_from_mass,
    entropy_summary,
    frames_streamed,
    gini,
    rank,
    recency_index,
    spearman,
    stacked,
    temporal_bias,
    temporal_bias_from_mass,
    topk_concentration,
)
from analysis.synthetic import LONG_TERM, SENSORY, WORKING, Pattern, hermes_like_recording, synthetic_recording
from probes.recording import Recording, layer_name

NAN = math.nan


def make_rec(frame_mass: list, frames: list[int], queries=("q",), extra: dict | None = None,
             tokens_per_frame: int = 4) -> Recording:
    """A one-layer recording from a literal (T, Q, H, F) frame-mass list; entropy is filled with zeros."""
    fm = torch.tensor(frame_mass, dtype=torch.float32)
    T, Q, H, F = fm.shape
    tensors = {layer_name(0, "frame_mass"): fm, layer_name(0, "entropy"): torch.zeros(T, Q, H),
               "steps.frames": torch.tensor(frames)}
    for name, x in (extra or {}).items():
        tensors[layer_name(0, name)] = x
    meta = {"num_layers": 1, "num_heads": H, "queries": list(queries), "tokens_per_frame": tokens_per_frame}
    rec = Recording(tensors, meta)
    rec.validate()
    return rec


@pytest.fixture(scope="module")
def study() -> Recording:
    """8 layers: 0-1 sensory (k=8), 2-4 working (k=2, some anchor), 5-7 long-term (flat, anchored, periodic)."""
    return hermes_like_recording(8)


# ----------------------------------------------------------------------------- age profile
def test_age_profile_averages_each_age_over_the_steps_where_it_exists():
    # step 0: one frame (all mass at age 0); step 1: frame 0 is age 1, frame 1 is age 0
    rec = make_rec([[[[1.0, NAN]]], [[[0.25, 0.75]]]], frames=[1, 2])
    prof = age_profile(rec)
    assert prof.shape == (1, 1, 2)
    torch.testing.assert_close(prof[0, 0], torch.tensor([0.875, 0.25], dtype=torch.float64))
    assert age_profile(rec, max_age=0).shape == (1, 1, 1)
    # an age that never occurs is NaN, not zero
    assert torch.isnan(age_profile(rec, max_age=3)[0, 0, 2:]).all()


def test_age_profile_selects_query_kinds():
    rec = make_rec([[[[0.2, 0.8]], [[0.6, 0.4]]]], frames=[2], queries=("local", "global"))
    torch.testing.assert_close(age_profile(rec, "global")[0, 0], torch.tensor([0.4, 0.6], dtype=torch.float64))
    torch.testing.assert_close(age_profile(rec)[0, 0], torch.tensor([0.6, 0.4], dtype=torch.float64))
    with pytest.raises(StudyError, match="no query kind 'mixed'"):
        age_profile(rec, "mixed")


def test_age_profile_is_decreasing_for_recency_layers_and_flat_for_uniform(study):
    prof = age_profile(study).nanmean(dim=1)  # (L, A)
    assert (prof[0, :-1] > prof[0, 1:]).all()
    # uniform layers: mass at age a is the mean of 1/n over the steps that have age a; ages 0 and 1
    # exist at every step (n = 2, 4, ..., 20), so they are equal
    n = torch.arange(2, 21, 2, dtype=torch.float64)
    torch.testing.assert_close(prof[7, 0], (1 / n).mean())
    torch.testing.assert_close(prof[7, 1], prof[7, 0])


def test_frames_streamed_falls_back_to_the_nan_pattern(study):
    stripped = Recording({k: v for k, v in study.tensors.items() if k != "steps.frames"}, study.meta)
    assert torch.equal(frames_streamed(stripped), study["steps.frames"].long())


def test_missing_quantity_is_a_study_error():
    rec = make_rec([[[[1.0]]]], frames=[1])
    with pytest.raises(StudyError, match="sink_mass"):
        stacked(rec, "sink_mass")


# ----------------------------------------------------------------------------- recency
def test_decay_rate_recovers_planted_exponents(study):
    decay = recency_index(study)["decay"]
    planted = torch.tensor([8.0, 8.0, 2.0, 2.0, 2.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    torch.testing.assert_close(decay, planted[:, None].expand(8, 4), atol=1e-3, rtol=1e-4)


def test_decay_rate_is_negative_when_old_frames_get_more():
    rec = synthetic_recording([Pattern(recency_k=-3.0), Pattern(rise=2.0)], heads=2, frames=12)
    decay = recency_index(rec)["decay"]
    torch.testing.assert_close(decay[0], torch.full((2,), -3.0, dtype=torch.float64), atol=1e-3, rtol=1e-4)
    assert (decay[1] > 0).all()  # mass rising with index is recency too


def test_decay_rate_ignores_one_frame_steps_and_nan():
    # frame_mass (L=1, T=2, Q=1, H=1, F=3): the first step has one frame, the second an evicted frame
    fm = torch.tensor([[[[[1.0, NAN, NAN]]], [[[0.1, NAN, 0.9]]]]], dtype=torch.float64)
    k = decay_rate_from_mass(fm, torch.tensor([1, 3]))
    # only frames 0 (d=1) and 2 (d=0) count: k = log(0.9/0.1)
    torch.testing.assert_close(k, torch.tensor([[math.log(9.0)]], dtype=torch.float64))
    assert torch.isnan(decay_rate_from_mass(fm[:, :1], torch.tensor([1]))).all()


def test_newest10_orders_tiers_and_matches_uniform_share(study):
    new = recency_index(study)["newest10"]
    assert (new[0:2].min() > new[2:5].max()) and (new[2:5].min() > new[5:8].max())
    n = torch.arange(2, 21, 2, dtype=torch.float64)
    uniform = (torch.ceil(n * 0.1) / n).mean()  # ceil(0.1 n) newest frames of n equal ones
    torch.testing.assert_close(new[7], uniform.expand(4))


# ----------------------------------------------------------------------------- anchors
def test_topk_concentration_is_zero_for_uniform_and_one_for_all_on_k_positions():
    P = 16  # k = 2
    uniform = torch.full((P,), 1 / P)
    two = torch.zeros(P)
    two[[3, 9]] = 0.5
    one = torch.zeros(P)
    one[0] = 1.0
    out = topk_concentration(torch.stack([uniform, two, one]))
    torch.testing.assert_close(out, torch.tensor([0.0, 1.0, 1.0], dtype=torch.float64))
    assert torch.isnan(topk_concentration(torch.zeros(1, P))).all()
    assert topk_concentration(torch.ones(1, 1)).item() == 0.0  # P = 1: nothing to concentrate


def test_anchor_structure_orders_tiers(study):
    anchors = anchor_structure(study)
    conc, per = anchors["concentration"], anchors["periodicity"]
    assert conc.shape == per.shape == (8, 4)
    # a planted share s on position 0 (rest uniform, k=2 of 16) gives concentration s
    torch.testing.assert_close(conc[:, 0], torch.tensor([0, 0, 0.3, 0.3, 0.3, 0.7, 0.7, 0.7], dtype=torch.float64),
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(per[:, 0], torch.tensor([0.1, 0.1, 0.5, 0.5, 0.5, 0.9, 0.9, 0.9], dtype=torch.float64),
                               atol=1e-6, rtol=0)


def test_anchor_structure_is_nan_without_the_quantities():
    rec = make_rec([[[[1.0]]]], frames=[1])
    anchors = anchor_structure(rec)
    assert torch.isnan(anchors["concentration"]).all() and torch.isnan(anchors["periodicity"]).all()


# ----------------------------------------------------------------------------- entropy and sparsity
def test_gini_known_values():
    x = torch.tensor([[1.0, 0, 0, 0], [1, 1, 1, 1], [1, 0, NAN, NAN], [2, NAN, NAN, NAN]])
    out = gini(x)
    torch.testing.assert_close(out[:3], torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64))
    assert torch.isnan(out[3])


def test_entropy_is_normalised_by_log_video_tokens():
    # uniform over 2 frames of 4 tokens: entropy log 8 -> 1; all on one token: 0
    fm = [[[[0.5, 0.5]], [[1.0, 0.0]]]]
    rec = make_rec(fm, frames=[2], queries=("a", "b"))
    rec.tensors[layer_name(0, "entropy")] = torch.tensor([[[math.log(8)], [0.0]]])
    out = entropy_summary(rec, "a")
    torch.testing.assert_close(out["entropy"], torch.ones(1, 1, dtype=torch.float64))
    torch.testing.assert_close(out["sparsity"], torch.zeros(1, 1, dtype=torch.float64))
    out_b = entropy_summary(rec, "b")
    assert out_b["entropy"].item() == 0.0 and out_b["sparsity"].item() == 1.0
    # without tokens_per_frame the raw entropy comes back
    rec.meta["tokens_per_frame"] = 0
    torch.testing.assert_close(entropy_summary(rec, "a")["entropy"], torch.tensor([[math.log(8)]], dtype=torch.float64))


def test_entropy_summary_orders_tiers(study):
    sparsity = entropy_summary(study)["sparsity"]
    assert sparsity[0].min() > sparsity[3].max() > sparsity[7].max()
    torch.testing.assert_close(sparsity[7], torch.zeros(4, dtype=torch.float64), atol=1e-6, rtol=0)


# ----------------------------------------------------------------------------- temporal bias
def test_rank_and_spearman_match_pandas():
    x = torch.tensor([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0])
    y = torch.tensor([2.0, 7.0, 1.0, 8.0, 2.0, 8.0, 1.0, 8.0])
    torch.testing.assert_close(rank(x), torch.tensor(pd.Series(x.numpy()).rank().to_numpy()))
    # Spearman = Pearson correlation of average ranks (pandas' own spearman needs scipy)
    expected = pd.Series(x.numpy()).rank().corr(pd.Series(y.numpy()).rank())
    assert spearman(x, y) == pytest.approx(expected)
    assert spearman(x, torch.ones(8)) == 0.0  # constant side: no trend
    assert math.isnan(spearman(x[:2], y[:2]))


def test_temporal_bias_sign_on_rising_flat_and_falling_patterns():
    rec = synthetic_recording([Pattern(rise=3.0), Pattern(), Pattern(rise=-0.9)], heads=2, frames=20)
    bias = temporal_bias(rec)
    torch.testing.assert_close(bias["rho"], torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64))
    assert bias["slope"][0] > 0 and bias["slope"][1] == 0 and bias["slope"][2] < 0
    assert bias["rho_heads"].shape == (3, 2) and (bias["rho_heads"][0] == 1).all()


def test_temporal_bias_excludes_the_newest_frames():
    # old frames fall gently with index, the newest 10% (2 of 20) take most of the mass
    n = 20
    mass = torch.cat([torch.linspace(0.02, 0.01, n - 2), torch.tensor([0.35, 0.35])])[None, None]  # (1, 1, F)
    with_excl = temporal_bias_from_mass(mass, n, exclude_recent=0.1)
    without = temporal_bias_from_mass(mass, n, exclude_recent=0.0)
    assert with_excl["rho"].item() == pytest.approx(-1.0)
    assert with_excl["slope"].item() < 0 < without["slope"].item()


def test_temporal_bias_reads_the_final_step_by_default():
    # rising at the first step, falling at the last
    fm = [[[[0.2, 0.3, 0.5, NAN]]], [[[0.4, 0.3, 0.2, 0.1]]]]
    rec = make_rec(fm, frames=[3, 4])
    assert temporal_bias(rec, exclude_recent=0)["rho"].item() == pytest.approx(-1.0)
    assert temporal_bias(rec, exclude_recent=0, step=0)["rho"].item() == pytest.approx(1.0)
    with pytest.raises(StudyError, match="step 5"):
        temporal_bias(rec, step=5)


def test_synthetic_recording_is_a_valid_distribution():
    rec = synthetic_recording([SENSORY, WORKING, LONG_TERM], heads=2, frames=10, chunk=3, noise=0.3, seed=1)
    assert rec["steps.frames"].tolist() == [3, 6, 9, 10]  # a last partial chunk
    fm = rec.stack("frame_mass")
    torch.testing.assert_close(fm.nansum(-1), torch.ones(fm.shape[:-1]))
    torch.testing.assert_close(rec.stack("position_mass").sum(-1), torch.ones(fm.shape[:-1]))


def _interleave_empty_slots(rec: Recording) -> Recording:
    """The same attention as Qwen-VL records it: each fused frame pair tagged with its first frame (odd slots NaN)."""
    tensors = dict(rec.tensors)
    for layer in rec.layers():
        fm = rec["frame_mass", layer]
        wide = torch.full((*fm.shape[:-1], 2 * fm.shape[-1]), NAN)
        wide[..., 0::2] = fm
        tensors[layer_name(layer, "frame_mass")] = wide
    tensors["steps.frames"] = 2 * rec["steps.frames"]
    return Recording(tensors, rec.meta)


def test_frame_slots_that_never_hold_tokens_do_not_count(study):
    pairs = _interleave_empty_slots(study)
    for key, value in recency_index(study).items():
        torch.testing.assert_close(recency_index(pairs)[key], value, msg=key)
    torch.testing.assert_close(age_profile(pairs), age_profile(study))
    torch.testing.assert_close(temporal_bias(pairs)["slope"], temporal_bias(study)["slope"])
    torch.testing.assert_close(entropy_summary(pairs)["sparsity"], entropy_summary(study)["sparsity"])


def test_an_evicted_frame_keeps_its_age():
    # frame 1 is evicted at the last step: frame 0 is still age 2 there, not age 1
    rec = make_rec([[[[0.5, 0.5, NAN]]], [[[0.3, NAN, 0.7]]]], frames=[2, 3])
    torch.testing.assert_close(age_profile(rec)[0, 0], torch.tensor([0.6, 0.5, 0.3], dtype=torch.float64))
