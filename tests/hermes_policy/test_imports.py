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
