"""analysis.derive: change points, the fixed HERMES split, and the hermes PolicySpec."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch

from analysis.derive import (
    TierAssignment,
    best_two_changepoints,
    budget_shares,
    derive,
    derive_tiers,
    hermes_fixed_tiers,
    policy_spec,
    standardise,
    tier_checks,
)
from analysis.errors import StudyError
from analysis.synthetic import LONG_TERM, SENSORY, WORKING, hermes_like_recording, synthetic_recording
from hermes_policy.policies.spec import PolicySpec
from probes.recording import Recording


def naive_best_split(x: np.ndarray) -> tuple[int, int, float]:
    """Reference: recompute every segment's squared error from scratch for every (a, b)."""
    L = len(x)
    best = (0, 0, float("inf"))
    for a in range(1, L - 1):
        for b in range(a + 1, L):
            cost = sum(((seg - seg.mean(0)) ** 2).sum() for seg in (x[:a], x[a:b], x[b:]))
            if cost < best[2] - 1e-12:
                best = (a, b, cost)
    return best


# ----------------------------------------------------------------------------- change points
def test_change_points_recover_a_planted_three_segment_profile():
    gen = torch.Generator().manual_seed(0)
    means = torch.tensor([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [-2.0, 1.5, -0.5]])
    x = torch.cat([means[0].expand(3, 3), means[1].expand(5, 3), means[2].expand(4, 3)])
    x = x + 0.1 * torch.randn(x.shape, generator=gen)
    a, b, cost = best_two_changepoints(x)
    assert (a, b) == (3, 8)
    assert cost == pytest.approx(naive_best_split(x.numpy().astype(np.float64))[2], rel=1e-9)


@pytest.mark.parametrize("L", [3, 4, 7])
def test_change_points_recover_every_planted_split(L):
    for a, b in itertools.combinations(range(1, L), 2):
        x = torch.tensor([[0.0]] * a + [[5.0]] * (b - a) + [[-3.0]] * (L - b))
        found_a, found_b, cost = best_two_changepoints(x)
        assert (found_a, found_b, cost) == (a, b, 0.0)


def test_change_points_match_a_naive_search_on_random_data():
    rng = np.random.default_rng(7)
    for _ in range(5):
        x = rng.normal(size=(11, 4))
        a, b, cost = best_two_changepoints(torch.tensor(x))
        ref = naive_best_split(x)
        assert (a, b) == ref[:2] and cost == pytest.approx(ref[2], rel=1e-9)


def test_change_points_need_three_layers():
    with pytest.raises(StudyError, match="at least 3 layers"):
        best_two_changepoints(torch.zeros(2, 1))


def test_standardise_zeroes_constant_and_missing_features():
    x = torch.tensor([[1.0, 5.0, 1.0], [3.0, 5.0, float("nan")], [5.0, 5.0, 3.0]])
    z = standardise(x)
    torch.testing.assert_close(z[:, 0], torch.tensor([-1.0, 0.0, 1.0]) * (1.5 ** 0.5))
    assert (z[:, 1] == 0).all() and z[1, 2] == 0


# ----------------------------------------------------------------------------- measured tiers
def test_changepoint_tiers_find_the_planted_boundaries():
    tiers = derive_tiers(hermes_like_recording(8, noise=0.2, seed=3), "changepoint")
    assert tiers.boundaries == (2, 5)
    assert tiers.summary() == "sensory 0-1 | working 2-4 | long-term 5-7"
    assert set(tiers.features) == {"newest10", "decay", "concentration", "periodicity"}
    assert all(tier_checks(tiers).values())
    tiers16 = derive_tiers(hermes_like_recording(16, heads=2), "changepoint")
    assert tiers16.boundaries == (4, 10)


def test_heads_go_to_the_nearest_tier_centroid():
    # layer 6 is long-term, but its head 2 behaves like a sensory head and head 0 like a working one
    patterns = [SENSORY] * 2 + [WORKING] * 3 + [LONG_TERM] * 3
    rec = synthetic_recording(patterns, heads=4, head_patterns={(6, 2): SENSORY, (6, 0): WORKING})
    tiers = derive_tiers(rec, "changepoint")
    assert tiers.boundaries == (2, 5)
    assert tiers.heads[6] == ("working", "long-term", "sensory", "long-term")
    assert all(h == "sensory" for h in tiers.heads[0])


def test_changepoint_tiers_use_recency_alone_without_anchor_quantities():
    rec = hermes_like_recording(8)
    stripped = Recording({k: v for k, v in rec.tensors.items()
                          if not k.endswith(("position_mass", "periodicity"))}, rec.meta)
    tiers = derive_tiers(stripped, "changepoint")
    assert list(tiers.features) == ["newest10", "decay"]
    assert tiers.boundaries == (2, 5)
    with pytest.raises(StudyError, match="position mass.*--method changepoint"):
        derive_tiers(stripped)  # roles cannot tell long-term from no role without anchors


def test_checks_flag_a_model_that_contradicts_hermes():
    rec = synthetic_recording([LONG_TERM] * 3 + [WORKING] * 2 + [SENSORY] * 3, heads=2)
    checks = tier_checks(derive_tiers(rec, "changepoint"))
    assert checks["newest10_falls_with_depth"] is False and checks["periodicity_rises_with_depth"] is False
    roles = derive_tiers(rec)
    assert roles.layers == ("long-term",) * 3 + ("working",) * 2 + ("sensory",) * 3
    assert tier_checks(roles)["tiers_follow_depth"] is False


def test_unknown_method_and_too_few_layers_are_study_errors():
    with pytest.raises(StudyError, match="unknown tier method"):
        derive_tiers(hermes_like_recording(8, heads=1), "kmeans")
    with pytest.raises(StudyError, match="unknown derive method"):
        derive(hermes_like_recording(8, heads=1), "magic")  # type: ignore[arg-type]
    with pytest.raises(StudyError, match="at least 3 layers"):
        derive_tiers(synthetic_recording([SENSORY, LONG_TERM], heads=1), "changepoint")
    # roles need no minimum: each layer stands on its own
    assert derive_tiers(synthetic_recording([SENSORY, LONG_TERM], heads=1)).layers == ("sensory", "long-term")


def test_tier_assignment_rejects_tiers_out_of_depth_order():
    with pytest.raises(ValueError, match="ordered by depth"):
        TierAssignment(("sensory", "long-term", "working"))


# ----------------------------------------------------------------------------- fixed split
@pytest.mark.parametrize(("L", "sensory", "working", "long_term"), [
    (28, (0, 2), (3, 19), (20, 27)),  # 0.1·28 = 2.8, 0.7·28 = 19.6
    (30, (0, 2), (3, 20), (21, 29)),  # 0.1·30 = 3 (layer 3 is not sensory), 0.7·30 = 21 (layer 21 is long-term)
    (10, (0, 0), (1, 6), (7, 9)),
])
def test_hermes_fixed_boundaries(L, sensory, working, long_term):
    ranges = hermes_fixed_tiers(L).ranges()
    assert (ranges["sensory"], ranges["working"], ranges["long-term"]) == (sensory, working, long_term)


def test_hermes_fixed_small_models():
    assert hermes_fixed_tiers(1).layers == ("sensory",)
    assert hermes_fixed_tiers(2).layers == ("sensory", "working")
    with pytest.raises(StudyError):
        hermes_fixed_tiers(0)


# ----------------------------------------------------------------------------- policy spec
def _by_layer(spec: PolicySpec) -> dict[int, dict]:
    return {entry["layer"]: entry for entry in spec.layers}


def test_scores_at_working_band_edges_for_each_family():
    tiers = hermes_fixed_tiers(28)  # working 3..19
    llava = _by_layer(policy_spec(tiers, "LlavaOneVisionAdapter", "hermes-fixed"))
    assert (llava[0]["alpha"], llava[0]["k"]) == (1.0, 20.0) and llava[2]["tier"] == "sensory"
    assert (llava[3]["alpha"], llava[3]["k"]) == (1.0, 20.0)  # p = 0
    assert (llava[19]["alpha"], llava[19]["k"]) == (0.1, 0.5)  # p = 1
    assert llava[11]["alpha"] == pytest.approx(0.55) and llava[11]["k"] == pytest.approx(10.25)  # p = 1/2
    assert (llava[20]["alpha"], llava[20]["k"]) == (0.0, None) and llava[20]["tier"] == "long-term"
    qwen = _by_layer(policy_spec(tiers, "QwenVLAdapter", "hermes-fixed"))
    assert (qwen[3]["alpha"], qwen[3]["k"]) == (0.75, 20.0)
    assert (qwen[19]["alpha"], qwen[19]["k"]) == (0.15, 8.0)
    assert (qwen[0]["alpha"], qwen[27]["alpha"]) == (1.0, 0.0)


def test_other_families_take_the_llava_row_and_say_so():
    spec = policy_spec(hermes_fixed_tiers(10), "FrontendLMAdapter", "hermes-fixed")
    assert spec.source["score_row"] == "llava-ov" and "FrontendLMAdapter" in spec.source["score_note"]
    assert _by_layer(spec)[6]["alpha"] == pytest.approx(0.1)


def test_spec_shape_gamma_and_equal_budget():
    spec = policy_spec(hermes_fixed_tiers(30), "QwenVLAdapter", "hermes-fixed", {"model": "m"})
    assert spec.policy == "hermes"
    assert spec.params == {"gamma": {"sensory": 0.1, "working": 0.3, "long-term": 0.4}, "family": "qwen2.5-vl"}
    assert [e["layer"] for e in spec.layers] == list(range(30))
    assert all("heads" not in e for e in spec.layers)  # fixed split: no per-head tiers
    assert all(e["budget_share"] == pytest.approx(1 / 30) for e in spec.layers)
    assert spec.source["model"] == "m" and spec.source["budget"] == "equal"


def test_budget_weights_favour_a_tier():
    shares = budget_shares(["sensory", "working", "long-term", "long-term"], {"long-term": 2.0})
    assert shares == pytest.approx([1 / 6, 1 / 6, 2 / 6, 2 / 6])
    with pytest.raises(StudyError):
        budget_shares(["sensory"], {"sensory": 0.0})


def test_measured_spec_round_trips_and_records_its_source(tmp_path):
    rec = hermes_like_recording(8, noise=0.1)
    spec = derive(rec, "measured")
    path = tmp_path / "policy.json"
    spec.save(path)
    # strict JSON: no NaN/Infinity constants anywhere
    json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    loaded = PolicySpec.load(path)
    assert loaded.to_dict() == spec.to_dict()
    src = loaded.source
    assert src["method"] == "measured" and src["model"] == "synthetic" and src["video"] == "synthetic:frames=20"
    assert src["features"] == ["newest10", "decay", "concentration", "periodicity"]
    assert src["boundaries"] == {"working": 2, "long-term": 5}
    assert src["tiers"] == {"sensory": [0, 1], "working": [2, 4], "long-term": [5, 7]}
    assert len(src["feature_values"]["decay"]) == 8
    layers = _by_layer(loaded)
    assert layers[0]["heads"] == ["sensory"] * 4 and layers[7]["heads"] == ["long-term"] * 4
    assert (layers[2]["alpha"], layers[4]["alpha"]) == (0.75, 0.15)  # Qwen row across working layers 2..4


def test_fixed_derive_reads_layer_count_and_family():
    rec = hermes_like_recording(10, heads=1, family="LlavaOneVisionAdapter")
    spec = derive(rec, "hermes-fixed")
    assert spec.source["method"] == "hermes-fixed" and spec.source["features"] == []
    assert spec.source["tiers"] == {"sensory": [0, 0], "working": [1, 6], "long-term": [7, 9]}
    assert spec.source["score_row"] == "llava-ov" and "score_note" not in spec.source


def test_a_spec_with_a_budget_builds_the_registered_hermes_policy():
    rec = hermes_like_recording(8, heads=2)
    spec = derive(rec, "measured", budget=64)
    assert spec.params["budget"] == 64
    policy = spec.build()
    assert policy.name == "hermes" and policy.layer_budgets(8) == [64] * 8
    with pytest.raises(StudyError, match="positive integer"):
        derive(rec, "hermes-fixed", budget=0)


# ----------------------------------------------------------------------------- tiers by role
def test_head_roles_read_two_null_referenced_scales():
    from analysis.derive import head_roles, layer_role

    decay = torch.tensor([[5.0, 0.2, 5.0, 0.1, float("nan")]])
    conc = torch.tensor([[0.05, 0.6, 0.4, 0.05, 0.9]])
    assert head_roles(decay, conc) == [["sensory", "long-term", "working", None, "long-term"]]
    assert layer_role(["sensory", "sensory", None]) == "sensory"
    assert layer_role(["sensory", "long-term"]) == "working"  # a split layer mixes both
    assert layer_role([None, None]) is None


def test_out_of_order_names_the_fewest_layers_that_break_depth_order():
    from analysis.derive import out_of_order

    assert out_of_order(["sensory", "working", "long-term"]) == []
    assert out_of_order(["working", "working", "sensory", "sensory", "sensory", "long-term"]) == [0, 1]
    assert out_of_order(["sensory", "long-term", "working", "working"]) == [1]
    assert out_of_order(["long-term", "sensory", "working", "sensory"]) == [0, 2]


def test_role_tiers_out_of_depth_order_make_a_spec_that_streams(tmp_path, capsys):
    from hermes_lab.cli import main

    rec = synthetic_recording([LONG_TERM, SENSORY, WORKING, SENSORY], heads=4)
    tiers = derive_tiers(rec)
    assert tiers.layers == ("long-term", "sensory", "working", "sensory") and not tiers.in_depth_order
    assert tiers.summary() == "sensory 1,3 | working 2 | long-term 0"
    spec = derive(rec, budget=32)
    assert spec.source["out_of_order_layers"] == [0, 2] and "boundaries" not in spec.source
    assert spec.source["tiers"] == {"sensory": [[1, 1], [3, 3]], "working": [[2, 2]], "long-term": [[0, 0]]}
    assert tier_checks(tiers)["tiers_follow_depth"] is False
    path = tmp_path / "spec.json"
    spec.save(path)
    code = main(["stream", "--model", "tiny-embedded", "--video", "synthetic:seed=3,frames=12", "--spec", str(path),
                 "--json", "--max-new-tokens", "1"])
    out = capsys.readouterr().out
    assert code == 0 and json.loads(out)["policy"] == "hermes"


def test_a_layer_with_no_role_is_reported_not_absorbed():
    from analysis.synthetic import Pattern

    flat = Pattern(recency_k=0.0, anchor=0.0)
    tiers = derive_tiers(synthetic_recording([flat, SENSORY, SENSORY, WORKING, LONG_TERM], heads=2))
    assert tiers.no_role == (0,) and tiers.layers[0] == "working"
    assert derive_tiers(synthetic_recording([flat, SENSORY, SENSORY, WORKING, LONG_TERM], heads=2),
                        "changepoint").layers[0] == "sensory"  # change points absorb it into the shallow tier


def test_role_thresholds_move_the_verdict_and_are_recorded(tmp_path, capsys):
    from analysis.cli import ROLE_DEFAULTS
    from analysis.derive import ROLE_CONCENTRATION, ROLE_DECAY, RoleThresholds
    from analysis.synthetic import Pattern
    from hermes_lab.cli import main

    assert ROLE_DEFAULTS == (ROLE_DECAY, ROLE_CONCENTRATION)  # the CLI shows the library's defaults
    weak = Pattern(recency_k=4.0, anchor=0.15)  # concentration 0.15: anchors only under a lower threshold
    rec = synthetic_recording([SENSORY, weak, LONG_TERM], heads=2)
    assert derive_tiers(rec).layers[1] == "sensory"
    assert derive_tiers(rec, thresholds=RoleThresholds(concentration=0.1)).layers[1] == "working"
    study = tmp_path / "study"
    rec.save(study)
    out = tmp_path / "spec.json"
    assert main(["derive", "--study", str(study), "--out", str(out), "--min-concentration", "0.1"]) == 0
    spec = PolicySpec.load(out)
    assert spec.source["thresholds"] == {"decay": 1.0, "concentration": 0.1} and spec.layers[1]["tier"] == "working"
    capsys.readouterr()
    for bad in ("-1", "nan", "inf"):
        assert main(["derive", "--study", str(study), "--out", str(tmp_path / "x.json"), "--min-decay", bad]) == 2
        err = capsys.readouterr().err
        assert "--min-decay must be a number in [0, 1000]" in err and "Traceback" not in err
        assert not (tmp_path / "x.json").exists()
