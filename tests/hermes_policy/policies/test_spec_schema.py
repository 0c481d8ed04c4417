"""A bad PolicySpec is one clear error naming the file and the field, in every command, before any model loads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hermes_lab.cli import main
from hermes_policy.errors import BudgetError, HermesError, PolicyError
from hermes_policy.eval.budgets import PolicyRecipe, format_budget
from hermes_policy.policies import PolicySpec, make_policy
from hermes_policy.policies.spec import check_spec

GOOD_LAYERS = [
    {"layer": 0, "tier": "sensory", "alpha": 1.0, "k": 20.0, "budget_share": 0.25},
    {"layer": 1, "tier": "working", "alpha": 0.5, "k": 10.0, "budget_share": 0.25},
    {"layer": 2, "tier": "working", "alpha": 0.2, "k": 5.0, "budget_share": 0.25},
    {"layer": 3, "tier": "long-term", "alpha": 0.0, "k": None, "budget_share": 0.25},
]


def _doc(**changes) -> dict:
    """A valid hermes spec (4 layers, as tiny-embedded has) with ``changes``; a value of ``...`` drops the key."""
    doc = {"format": "hermes-lab/policy-spec", "version": 1, "policy": "hermes", "params": {"budget": 64},
           "layers": [dict(x) for x in GOOD_LAYERS], "source": {"method": "manual"}}
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not ...}


def _layers(index: int, **changes) -> list[dict]:
    layers = [dict(x) for x in GOOD_LAYERS]
    layers[index].update(changes)
    return [{k: v for k, v in x.items() if v is not ...} for x in layers]


def _write(tmp_path: Path, doc, name: str = "p.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return path


# the cases first, then more; (document, fragment the message must hold)
BAD_DOCS = {
    "alpha-string": (_doc(layers=_layers(3, alpha="0.5")), 'layers[3].alpha must be a number in [0, 1], got "0.5"'),
    "gamma-number": (_doc(params={"budget": 64, "gamma": 0.3}), "params.gamma must be an object"),
    "no-policy": (_doc(policy=...), '"policy" is missing'),
    "budget-string": (_doc(params={"budget": "576"}), 'params.budget must be a positive integer'),
    "budget-negative": (_doc(params={"budget": -5}),
                        "params.budget must be a positive integer (video tokens per layer), got -5"),
    "budget-zero": (_doc(params={"budget": 0}), "params.budget must be a positive integer"),
    "budget-bool": (_doc(params={"budget": True}), "params.budget must be a positive integer"),
    "budget-float": (_doc(params={"budget": 64.0}), "params.budget must be a positive integer"),
    "policy-number": (_doc(policy=3), "policy must be a non-empty policy name"),
    "policy-empty": (_doc(policy=""), "policy must be a non-empty policy name"),
    "policy-unknown": (_doc(policy="lru"), 'unknown policy "lru"'),
    "params-list": (_doc(params=[64]), "params must be an object"),
    "params-unknown": (_doc(params={"budget": 64, "gama": {}}), 'params has unknown key "gama"'),
    "params-layers": (_doc(params={"budget": 64, "layers": GOOD_LAYERS}), "params.layers"),
    "summary-string": (_doc(params={"budget": 64, "summary": "yes"}), "params.summary must be true or false"),
    "gamma-tier-missing": (_doc(params={"budget": 64, "gamma": {"sensory": 0.1}}), "params.gamma"),
    "gamma-out-of-range": (_doc(params={"budget": 64, "gamma": {"sensory": 0.1, "working": 2, "long-term": 0.4}}),
                           "params.gamma"),
    "layers-object": (_doc(layers={"0": GOOD_LAYERS[0]}), "layers must be a list of objects"),
    "layers-empty": (_doc(layers=[]), "layers is an empty list"),
    "layer-not-object": (_doc(layers=[*GOOD_LAYERS[:3], 5]), "layers[3] must be an object"),
    "layer-tier-unknown": (_doc(layers=_layers(1, tier="deep")),
                           'layers[1].tier must be one of sensory, working, long-term, got "deep"'),
    "layer-tier-missing": (_doc(layers=_layers(1, tier=...)), "layers[1].tier is missing"),
    "layer-alpha-missing": (_doc(layers=_layers(2, alpha=...)), "layers[2].alpha is missing"),
    "layer-alpha-range": (_doc(layers=_layers(2, alpha=1.5)), "layers[2].alpha must be a number in [0, 1], got 1.5"),
    "layer-k-string": (_doc(layers=_layers(1, k="fast")), 'layers[1].k must be a number >= 0'),
    "layer-k-missing": (_doc(layers=_layers(1, k=None)), "layers[1].k must be a number >= 0 since alpha > 0"),
    "layer-share-string": (_doc(layers=_layers(0, budget_share="1/4")), "layers[0].budget_share must be a number"),
    "layer-unknown-key": (_doc(layers=_layers(0, aplha=1.0)), 'layers[0] has unknown key "aplha"'),
    "layers-for-sink-window": (_doc(policy="sink-window"), "takes no per-layer settings"),
    "source-string": (_doc(source="derive"), "source must be an object"),
    "unknown-top-level-key": (_doc(param={}), 'unknown key "param"'),
    "version-bool": (_doc(version=True), "version true is not supported"),
    "wrong-format": (_doc(format="other"), "not a policy spec"),
    "sink-tokens-string": (_doc(policy="sink-window", layers=None, params={"budget": 8, "sink_tokens": "4"}),
                           'params.sink_tokens must be a non-negative integer, got "4"'),
    "snapkv-window-float": (_doc(policy="snapkv", layers=None, params={"budget": 8, "window": 1.5}),
                            "params.window must be a positive integer, got 1.5"),
    "memstream-beta-range": (_doc(policy="memstream", layers=None, params={"budget": 8, "beta": 3}),
                             "params.beta must be a number in [0, 1], got 3"),
}


@pytest.mark.parametrize("case", list(BAD_DOCS))
def test_load_rejects_a_bad_spec_naming_file_and_field(tmp_path, case):
    doc, fragment = BAD_DOCS[case]
    path = _write(tmp_path, doc)
    with pytest.raises(PolicyError) as info:
        PolicySpec.load(path)
    message = str(info.value)
    assert message.startswith(f"spec {path}: "), message
    assert fragment in message, message
    assert "\n" not in message
    # the same validator serves documents that never were files
    with pytest.raises(PolicyError, match=re.escape(fragment)):
        PolicySpec.from_dict(doc)


@pytest.mark.parametrize(
    "content,fragment",
    [
        (b"{not json", "is not valid JSON"),
        (b"", "is not valid JSON"),
        (b"\xff\xfe{\x00}", "is not valid JSON"),  # not UTF-8
        (b"[1, 2]", "must hold a JSON dict, got list"),
        (b'"hermes"', "must hold a JSON dict, got str"),
    ],
)
def test_load_rejects_a_file_that_is_not_a_spec_object(tmp_path, content, fragment):
    path = tmp_path / "p.json"
    path.write_bytes(content)
    with pytest.raises(PolicyError, match=re.escape(fragment)) as info:
        PolicySpec.load(path)
    assert str(path) in str(info.value)


def test_load_rejects_a_directory_and_a_missing_file(tmp_path):
    with pytest.raises(PolicyError, match="is a directory"):
        PolicySpec.load(tmp_path)
    with pytest.raises(PolicyError, match="does not exist"):
        PolicySpec.load(tmp_path / "missing.json")


def test_a_valid_spec_loads_and_round_trips(tmp_path):
    doc = _doc(params={"budget": 64, "gamma": {"sensory": 0, "working": 0.3, "long-term": 1}, "summary": False},
               layers=_layers(0, heads=["sensory", "working"]))
    spec = PolicySpec.load(_write(tmp_path, doc))
    assert spec.build().layer_budgets(4) == [64] * 4
    assert PolicySpec.from_dict(spec.to_dict()) == spec
    for ok in (_doc(params=None, layers=None, source=None), _doc(params={"budget": None}), _doc(policy="full",
               params={}, layers=None)):
        check_spec(ok)
    # a value the policy itself refuses (not in the schema) still names the spec
    with pytest.raises(PolicyError, match=r"^spec .*p2\.json: hermes: family must be one of"):
        PolicySpec.load(_write(tmp_path, _doc(params={"budget": 64, "family": "gpt"}), "p2.json")).build()


def test_a_python_built_spec_gets_the_same_checks():
    with pytest.raises(PolicyError, match=re.escape('spec: layers[3].alpha must be a number in [0, 1], got "0.5"')):
        PolicySpec("hermes", {"budget": 8}, layers=_layers(3, alpha="0.5")).build()
    with pytest.raises(PolicyError, match="params must be an object"):
        PolicySpec("hermes", [8])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "params,fragment",
    [
        ({"gamma": 0.3}, "hermes: gamma must be an object"),
        ({"gamma": {"sensory": "0.1", "working": 0.3, "long-term": 0.4}}, "hermes: gamma must be"),
        ({"layers": _layers(3, alpha="0.5")}, 'hermes: layers[3].alpha must be a number in [0, 1], got "0.5"'),
        ({"layers": _layers(1, k="x")}, "hermes: layers[1].k must be a number >= 0"),
        ({"layers": _layers(1, budget_share="x")}, "hermes: layers[1].budget_share must be a number"),
        ({"layers": {"tier": "working"}}, "hermes: layers must be a list"),
        ({"layers": [None]}, "hermes: layers[0] must be an object"),
        ({"family": ["llava-ov"]}, "hermes: family must be one of"),
        ({"summary": "no"}, "hermes: summary must be true or false"),
        ({"pseudo_query": ["embedding"]}, "hermes: pseudo_query must be one of"),
    ],
)
def test_hermes_policy_rejects_wrong_types_from_python(params, fragment):
    with pytest.raises(PolicyError, match=re.escape(fragment)):
        make_policy("hermes", budget=8, **params)


def test_recipe_budgets_of_the_wrong_type_or_sign():
    assert format_budget("576") == "576" and format_budget(0.3) == "0.3" and format_budget(512) == "512"
    with pytest.raises(BudgetError, match=r"positive integer .*got '576'"):
        PolicyRecipe("sink-window", params={"budget": "576"})
    with pytest.raises(BudgetError, match=r"positive integer .*got -5") as info:
        PolicyRecipe("sink-window", params={"budget": -5})
    assert "needs a budget" not in str(info.value)
    with pytest.raises(BudgetError, match="budget ratio"):
        PolicyRecipe("window", budget_ratio="0.3")  # type: ignore[arg-type]
    with pytest.raises(PolicyError, match=re.escape('spec: params.budget must be a positive integer')):
        PolicyRecipe.from_spec(PolicySpec("sink-window", {"budget": "576"}))
    assert PolicyRecipe("sink-window", params={"budget": 64}).key == "sink-window@64"


# ------------------------------------------------------------------ the CLI
CLI_CASES = ["alpha-string", "gamma-number", "no-policy", "budget-string", "budget-negative", "directory"]


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data")
    assert main(["data", "synth", "--seed", "1", "--videos", "1", "--frames", "8", "--out", str(out)]) == 0
    return out / "dataset.jsonl"


def _spec_path(tmp_path: Path, case: str) -> tuple[Path, str]:
    if case == "directory":
        folder = tmp_path / "spec.json"
        folder.mkdir()
        return folder, "is a directory"
    doc, fragment = BAD_DOCS[case]
    return _write(tmp_path, doc), fragment


def _command(command: str, spec: Path, out: Path, data: Path) -> list[str]:
    common = ["--model", "tiny-embedded", "--spec", str(spec)]
    if command == "stream":
        return ["stream", *common, "--video", "synthetic:seed=1,frames=4", "--policy", "hermes", "--json"]
    if command == "bench":
        return ["bench", *common, "--video", "synthetic:seed=1,frames=4", "--frames", "4",
                "--policies", "full,hermes,sink-window", "--budget", "64", "--out", str(out)]
    return ["eval", *common, "--data", str(data), "--policy", "full", "--out", str(out)]


@pytest.mark.parametrize("case", CLI_CASES)
@pytest.mark.parametrize("command", ["stream", "bench", "eval"])
def test_cli_reports_a_bad_spec_on_one_line(tmp_path, capsys, eval_data, command, case, monkeypatch):
    import hermes_policy.cli as policy_cli
    from hermes_policy import models

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the spec was checked")

    monkeypatch.setattr(models, "load_model", no_model)  # eval imports it when it runs
    monkeypatch.setattr(policy_cli, "load_model", no_model)  # stream, bench
    spec, fragment = _spec_path(tmp_path, case)
    out = tmp_path / "out"
    capsys.readouterr()
    code = main(_command(command, spec, out, eval_data))
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert code == 2, captured.err
    assert "Traceback" not in captured.err + captured.out
    assert len(lines) == 1 and lines[0].startswith("hermes-lab: error: "), captured.err
    assert fragment in lines[0] and str(spec) in lines[0], lines[0]
    assert not out.exists()
    assert captured.out == ""


def test_cli_budget_override_is_reported_as_the_option_not_the_spec(tmp_path, capsys):
    spec = _write(tmp_path, _doc(params={"budget": 64}))
    assert main(["stream", "--model", "tiny-embedded", "--video", "synthetic:seed=1,frames=4", "--spec", str(spec),
                 "--budget", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hermes-lab: error: hermes: budget must be a positive number") and "spec" not in err


def test_every_error_here_is_a_hermes_error():
    assert issubclass(PolicyError, HermesError) and issubclass(BudgetError, HermesError)
