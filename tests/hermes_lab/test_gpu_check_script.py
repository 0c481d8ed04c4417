"""scripts/gpu-check.sh parts (e)-(g) dry-run on the CPU (small shape, tiny model, gloo) so the script cannot rot.

On a machine without CUDA the script picks the dry-run sizes itself; the test checks that it writes its one JSON
and one table, that every check it ran passed, and that each part reported what it measures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu-check.sh"

pytestmark = pytest.mark.slow  # two torchrun launches and a bench: over a minute on two CPU cores


@pytest.mark.skipif(sys.platform != "linux", reason="a bash script for the Linux GPU machines")
def test_parts_e_to_g_dry_run_on_the_cpu_and_write_one_json_and_one_table(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "CHECKS": "efg", "GPU_CHECK_OUT": str(out),
           "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(ROOT)}
    run = subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "DRY RUN" in run.stdout
    doc = json.loads((out / "gpu-check.json").read_text())
    assert doc["dry_run"] is True and doc["gpus"] == 0
    assert [s.split()[0] for s in doc["summary"]] == ["PASS"] * 3, doc["summary"]
    by = {}
    for fragment in doc["checks"]:
        by.setdefault(fragment["check"], []).append(fragment)
    assert sorted(by) == ["bench", "rows", "sweep"]
    assert {f["dtype"] for f in by["rows"]} == {"bfloat16", "float32"}
    assert all(f["ok"] and f["backend"] == "sdpa" for f in by["rows"])
    bench = by["bench"][0]
    assert bench["frames"] == [8, 32]
    assert {"sink-window@8", "sink-window@32", "hermes@8", "hermes@32"} == set(bench["cells"])
    assert all(c["ttft_ms"] > 0 and c["ingest_fps"] > 0 for c in bench["cells"].values())
    assert len(bench["targets"]) == 3 and all(isinstance(t["met"], bool) for t in bench["targets"])
    sweep = by["sweep"][0]
    assert sweep["equal"] and sweep["nproc"] == 2 and set(sweep["wall_s"]) == {"1 process", "torchrun x2"}
    table = (out / "gpu-check.md").read_text()
    assert "| check | measured | compared with | result |" in table and "torchrun x2" in table
    assert not (ROOT / "gpu-check-out").exists() or out != ROOT / "gpu-check-out"
