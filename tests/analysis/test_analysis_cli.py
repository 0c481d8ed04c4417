"""``derive`` and ``figures`` commands, registered on a fresh typer app and run with CliRunner."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from analysis.cli import register
from analysis.errors import StudyError
from analysis.synthetic import hermes_like_recording
from hermes_policy.errors import HermesError
from hermes_policy.policies.spec import PolicySpec

runner = CliRunner()


@pytest.fixture(scope="module")
def app() -> typer.Typer:
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    register(app)
    return app


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    directory = tmp_path_factory.mktemp("study") / "rec"
    hermes_like_recording(8, heads=2, frames=10, positions=8, noise=0.1).save(directory)
    return directory


def test_derive_measured_writes_a_spec_and_prints_the_tiers(app, study, tmp_path):
    out = tmp_path / "specs" / "policy.json"
    result = runner.invoke(app, ["derive", "--study", str(study), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines() == [
        f"synthetic (measured, 8 layers): sensory 0-1 | working 2-4 | long-term 5-7 -> {out}"]
    spec = PolicySpec.load(out)
    assert spec.policy == "hermes" and spec.source["method"] == "measured" and len(spec.layers) == 8


def test_derive_fixed_with_budget_weights(app, study, tmp_path):
    out = tmp_path / "policy.json"
    result = runner.invoke(app, ["derive", "--study", str(study), "--out", str(out), "--method", "hermes-fixed",
                                 "--budget-weight", "long-term=3", "--budget", "32"])
    assert result.exit_code == 0, result.output
    assert PolicySpec.load(out).build().layer_budgets(8)[7] > 32  # long-term layers get more than the mean
    assert "sensory 0 | working 1-5 | long-term 6-7" in result.stdout
    shares = [e["budget_share"] for e in json.loads(out.read_text())["layers"]]
    assert shares[7] == pytest.approx(3 * shares[0]) and sum(shares) == pytest.approx(1)


@pytest.mark.parametrize(("args", "message"), [
    (["--study", "{missing}"], "does not exist"),
    (["--study", "{empty}"], "is not a recording"),
    (["--study", "{corrupt}"], "not valid JSON"),
    (["--study", "{study}", "--method", "magic"], "unknown derive method"),
    (["--study", "{study}", "--query", "nope"], "no query kind 'nope'"),
    (["--study", "{study}", "--budget-weight", "deep=2"], "TIER=WEIGHT"),
])
def test_derive_user_errors_are_hermes_errors(app, study, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    hermes_like_recording(3, heads=1, frames=4).save(corrupt)
    (corrupt / "recording.json").write_text("{not json")
    paths = {"missing": tmp_path / "missing", "empty": tmp_path / "empty", "corrupt": corrupt, "study": study}
    args = [a.format(**paths) for a in args]
    result = runner.invoke(app, ["derive", *args, "--out", str(tmp_path / "p.json")])
    assert result.exit_code != 0
    assert isinstance(result.exception, StudyError) and isinstance(result.exception, HermesError)
    assert message in str(result.exception)
    assert not (tmp_path / "p.json").exists()


def test_figures_command_writes_requested_formats(app, study, tmp_path):
    out = tmp_path / "figs"
    result = runner.invoke(app, ["figures", "--study", str(study), "--out", str(out), "--format", "png,html"])
    assert result.exit_code == 0, result.output
    assert "wrote 16 files for 4 figures" in result.stdout
    assert sorted(p.suffix for p in out.iterdir() if p.stem == "head_tiers") == [".csv", ".html", ".parquet", ".png"]


def test_figures_command_rejects_a_bad_format_before_writing(app, study, tmp_path):
    out = tmp_path / "figs"
    result = runner.invoke(app, ["figures", "--study", str(study), "--out", str(out), "--format", "gif"])
    assert isinstance(result.exception, StudyError) and "unknown figure format gif" in str(result.exception)
    assert not out.exists()


def test_package_exports_and_dependency_direction():
    import ast
    from pathlib import Path

    import analysis
    from analysis.figures import write_figures

    assert analysis.write_figures is write_figures  # lazily exported
    assert all(hasattr(analysis, name) for name in analysis.__all__)
    # dashboard -> analysis -> probes -> hermes_policy: nothing here may import the dashboard
    for path in Path(analysis.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "dashboard" for n in names), path
