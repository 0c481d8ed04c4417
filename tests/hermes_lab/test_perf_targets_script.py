"""scripts/perf_targets.py runs end to end on a tiny model and reports ratios to the first policy."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "perf_targets.py"


def run_script(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), *args])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    return exit_info.value.code, capsys.readouterr().out


def test_ratios_are_to_the_first_policy(monkeypatch, capsys):
    code, out = run_script(monkeypatch, capsys, "--model", "tiny-embedded", "--frames", "16", "--budget", "8",
                           "--policies", "sink-window,hermes:pseudo_query=forward", "--repeats", "1",
                           "--rounds", "1", "--json")
    assert code == 0
    result = json.loads(out)
    assert [r["policy"] for r in result["rows"]] == ["sink-window", "hermes:pseudo_query=forward"]
    first = result["rows"][0]
    assert first["ingest_ratio"] == 1.0 and first["ttft_ratio"] == 1.0
    assert all(r["ingest_full_ms_per_frame"] > 0 and r["ttft_ms"] > 0 for r in result["rows"])


def test_a_budget_the_stream_never_fills_is_refused(monkeypatch, capsys):
    code, _ = run_script(monkeypatch, capsys, "--model", "tiny-embedded", "--frames", "2", "--budget", "100000",
                         "--policies", "sink-window", "--repeats", "1", "--rounds", "1")
    assert isinstance(code, str) and "never filled" in code
