"""The docs against the code: the CLI reference is what the CLI says, every option the pages use exists."""

from __future__ import annotations

from pathlib import Path

import pytest

from hermes_lab.clidoc import command_options, documented_options, render
from hermes_policy.models.families import FAMILIES

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted((ROOT / "docs").rglob("*.md")) + [ROOT / "README.md"]


def test_the_cli_reference_page_is_what_the_cli_says_now():
    committed = (ROOT / "docs" / "cli-reference.md").read_text()
    assert committed == render(), "docs/cli-reference.md is stale: python -m hermes_lab.clidoc > docs/cli-reference.md"


def test_every_command_and_option_written_in_the_docs_exists():
    commands = command_options()
    assert {"stream", "bench", "study", "derive", "eval", "data synth", "validate", "dashboard"} <= set(commands)
    seen, wrong = 0, []
    for page in PAGES:
        for command, option in documented_options(page.read_text(), commands):
            seen += 1
            if option not in commands[command]:
                wrong.append(f"{page.relative_to(ROOT)}: hermes-lab {command} {option}")
    assert not wrong, "options the CLI does not have:\n" + "\n".join(wrong)
    assert seen > 100  # the pages do use the CLI: the check reads something


@pytest.mark.parametrize("text, found", [
    ("hermes-lab data synth --out X --seed 1", [("data synth", "--out"), ("data synth", "--seed")]),
    ("hermes-lab eval --data D \\\n    --policy full", [("eval", "--data"), ("eval", "--policy")]),
    ("`hermes-lab stream --no-such`, then hermes-lab bench --frames 64", [("stream", "--no-such"),
                                                                         ("bench", "--frames")]),
    ("hermes-lab nothing --out", []),
])
def test_the_reader_of_command_lines(text, found):
    commands = {"data synth": set(), "eval": set(), "stream": set(), "bench": set()}
    assert list(documented_options(text, commands)) == found


def test_a_missing_option_is_caught():
    commands = command_options()
    assert list(documented_options("hermes-lab derive --no-such-option", commands)) == [("derive", "--no-such-option")]
    assert "--no-such-option" not in commands["derive"]


def test_the_families_page_names_every_family():
    text = (ROOT / "docs" / "models.md").read_text()
    for family in FAMILIES:
        assert family.label in text and f"`{family.tiny}`" in text, family.name
        for model_type in family.model_types:
            assert f"`{model_type}`" in text, model_type
