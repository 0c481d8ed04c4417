"""``eval --spec`` repeated: each spec its own run, so two derivations of one policy are compared in one eval."""

from __future__ import annotations

import json

import pytest

from hermes_policy.eval.errors import EvalError
from hermes_policy.eval.sweep import build_recipes


def _spec(path, tiers):
    layers = [{"layer": i, "tier": t, "alpha": 1.0 if t == "sensory" else 0.5, "k": 20.0, "budget_share": 0.5}
              for i, t in enumerate(tiers)]
    path.write_text(json.dumps({"format": "hermes-lab/policy-spec", "version": 1, "policy": "hermes",
                                "params": {"budget": 32}, "layers": layers}))
    return path


def test_two_specs_of_one_policy_are_two_runs(tmp_path):
    attn, causal = _spec(tmp_path / "attn.json", ["sensory", "working"]), _spec(tmp_path / "causal.json",
                                                                                 ["working", "working"])
    runs = build_recipes("full", budget_ratio="0.1", spec=[attn, causal])
    assert [r.key for r in runs] == ["full", "hermes[attn]@0.1", "hermes[causal]@0.1"]
    assert [x["tier"] for x in runs[2].params["layers"]] == ["working", "working"]
    assert runs[1].source == str(attn)
    listed = build_recipes("full,hermes", budget_ratio="0.1", spec=[attn, causal])  # and the plain policy too
    assert [r.key for r in listed] == ["full", "hermes@0.1", "hermes[attn]@0.1", "hermes[causal]@0.1"]
    one = build_recipes("full", budget_ratio="0.1", spec=[attn])  # one spec: its policy's entry, as before
    assert [r.key for r in one] == ["full", "hermes@0.1"]
    (tmp_path / "b").mkdir()
    twin = _spec(tmp_path / "b" / "attn.json", ["working", "working"])
    with pytest.raises(EvalError, match="rename the spec file"):
        build_recipes("full", budget_ratio="0.1", spec=[attn, twin])
