"""Package imports are light: the errors, data helpers and formats load without torch or transformers."""

from __future__ import annotations

import subprocess
import sys

import pytest

LIGHT = [
    "hermes_policy",
    "hermes_policy.errors",
    "hermes_policy.atomic",
    "hermes_policy.jsonfile",
    "hermes_policy.mc_format",
    "hermes_policy.timeline",
    "hermes_policy.policies",
    "hermes_policy.policies.spec",
    "hermes_policy.policies.registry",
    "hermes_policy.data",
    "hermes_policy.video",
    "analysis",
    "analysis.errors",
]


@pytest.mark.parametrize("module", LIGHT)
def test_module_imports_without_torch(module: str) -> None:
    code = (f"import sys, {module}\n"
            "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
            "assert not heavy, heavy")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_lazy_names_resolve_to_the_defining_objects() -> None:
    import hermes_policy
    from hermes_policy.session import StreamingSession

    assert hermes_policy.StreamingSession is StreamingSession
    assert set(hermes_policy.__all__) <= set(dir(hermes_policy))
    with pytest.raises(AttributeError, match="no attribute"):
        hermes_policy.not_a_name  # noqa: B018


def test_policy_registry_loads_the_builtins_on_first_read() -> None:
    code = ("import sys\n"
            "from hermes_policy.policies import POLICIES, PolicySpec\n"
            "assert 'torch' not in sys.modules\n"
            "names = sorted(POLICIES)\n"
            "assert {'full', 'hermes', 'rekv', 'sink-window', 'snapkv', 'uniform', 'window'} <= set(names), names\n"
            "assert POLICIES['full'].requires_budget is False")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_moved_modules_still_import_from_their_old_paths() -> None:
    """evaluate.py, sweep.py and models/train_embedded.py became rooms of their own; the old names keep working."""
    from hermes_policy import eval as eval_pkg
    from hermes_policy import training
    from hermes_policy.eval import sweep
    from hermes_policy.evaluate import ClozeScorer, EvalResult, PolicyRecipe, evaluate
    from hermes_policy.models.train_embedded import TrainConfig, _branch, install_model, train
    from hermes_policy.session import OPTION_LETTERS, decode_to_opener, format_question, interleave
    from hermes_policy.sweep import EvalDir

    assert evaluate is eval_pkg.evaluate and PolicyRecipe is eval_pkg.PolicyRecipe
    assert ClozeScorer is eval_pkg.ClozeScorer and EvalResult is eval_pkg.EvalResult
    assert EvalDir is sweep.EvalDir
    assert train is training.train and TrainConfig is training.TrainConfig and install_model is training.install_model
    assert callable(_branch) and OPTION_LETTERS.startswith("ABCD")
    assert callable(decode_to_opener) and callable(format_question) and callable(interleave)
