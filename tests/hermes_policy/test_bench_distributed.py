"""``bench --distributed``: cells split over ranks, rank 0 prints the table one process would (timings aside)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from hermes_lab.cli import main
from hermes_policy.bench import BenchError, BenchRow, Cell, bench_distributed, merge_shares, plan_cells
from hermes_policy.distributed import LaunchEnv, shard

TIMINGS = {"ttft_ms", "ingest_ms_per_frame", "peak_rss_bytes", "ingest_full_ms_per_frame", "vision_ms_per_frame",
           "lm_ms_per_frame", "policy_ms_per_frame"}


def _row(cell: Cell) -> BenchRow:
    return BenchRow(cell.policy, cell.frames, None, 1.0, 2.0, cell.frames * 10, 2**20)


# ---------------------------------------------------------------- the pieces
def test_cells_are_in_table_order_and_shards_cover_them_once() -> None:
    cells = plan_cells(["full", "hermes"], [8, 4, 8])  # a repeated length is a separate cell, as in one process
    assert [(c.policy, c.frames) for c in cells] == [("full", 8), ("hermes", 8), ("full", 4), ("hermes", 4),
                                                     ("full", 8), ("hermes", 8)]
    assert [c.index for c in cells] == list(range(6))
    shares = shard(cells, lambda c: c.frames, 2)
    assert sorted(c.index for s in shares for c in s) == list(range(6))
    assert [sum(c.frames for c in s) for s in shares] == [20, 20]


def test_merge_restores_table_order_and_names_failed_or_missing_cells() -> None:
    cells = plan_cells(["full", "sink-window"], [4, 8])
    shares = [{"rows": [[c.index, asdict(_row(c))] for c in part], "failures": []}
              for part in shard(cells, lambda c: c.frames, 2)]
    assert merge_shares(cells, shares) == [_row(c) for c in cells]
    with pytest.raises(BenchError, match="came back from no rank"):
        merge_shares(cells, shares[:1])
    broken = {"rows": [], "failures": [{"policy": "full", "frames": 8, "error": "RuntimeError: out of memory"}]}
    with pytest.raises(BenchError, match=r"1 cell\(s\) failed: full@8 \(RuntimeError: out of memory\)"):
        merge_shares(cells, [*shares, broken])


def test_bench_distributed_round_trips_rows_through_the_store(tmp_path: Path) -> None:
    """One rank in a real gloo group: rows go into the store and come back in order; a failing cell is named."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cells = plan_cells(["full", "hermes"], [4, 2])
        env = LaunchEnv()
        assert bench_distributed(env, cells, _row, timeout=30, show_progress=False) == [_row(c) for c in cells]

        def flaky(cell: Cell) -> BenchRow:
            if cell.policy == "hermes" and cell.frames == 2:
                raise RuntimeError("out of memory")
            return _row(cell)

        os.environ["TORCHELASTIC_RESTART_COUNT"] = "1"  # a fresh namespace: the counters above are not reused
        try:
            with pytest.raises(BenchError, match=r"hermes@2 \(RuntimeError: out of memory\)"):
                bench_distributed(env, cells, flaky, timeout=30, show_progress=False)
        finally:
            del os.environ["TORCHELASTIC_RESTART_COUNT"]
    finally:
        dist.destroy_process_group()


def test_a_launch_without_distributed_is_refused_before_the_model_loads(monkeypatch, capsys) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert main(["bench", "--model", "no-such-model", "--frames", "4", "--policies", "full"]) == 2
    assert "without --distributed" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "1")
    assert main(["bench", "--model", "no-such-model", "--frames", "4", "--policies", "full"]) == 2
    assert capsys.readouterr().err == "", "only rank 0 says why"


@pytest.mark.parametrize("args, message", [
    (["--dist-timeout", "0"], "--dist-timeout must be a number in [1, 2592000]"),
    (["--policies", "full,nope"], "unknown policy 'nope'"),
    (["--frames", "4,x"], "comma-separated integers"),
])
def test_bad_arguments_fail_before_the_model_loads(args: list[str], message: str, capsys) -> None:
    assert main(["bench", "--model", "no-such-model", "--distributed", *args]) == 2
    assert message in capsys.readouterr().err


def test_distributed_without_a_launch_notes_it_and_runs_as_one_process(monkeypatch, capsys) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["bench", "--model", "tiny-embedded", "--video", "synthetic:seed=1,frames=4", "--frames", "3",
                 "--policies", "full", "--distributed", "--json"]) == 0
    out, err = capsys.readouterr()
    assert "running as one process" in err
    assert [(r["policy"], r["frames"]) for r in json.loads(out)] == [("full", 3)]


# --------------------------------------------------------------- end to end
ARGS = ["--model", "tiny-llava-ov", "--video", "synthetic:seed=1,frames=4", "--frames", "6,3",
        "--policies", "full,sink-window", "--budget", "8", "--chunk-frames", "2", "--json"]


@pytest.mark.slow
def test_two_ranks_report_the_cells_one_process_reports(capsys) -> None:
    assert main(["bench", *ARGS]) == 0
    single = json.loads(capsys.readouterr().out)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "hermes_lab", "bench", *ARGS, "--distributed"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, "TQDM_DISABLE": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(proc.stdout.strip().splitlines()) == 1, "only rank 0 prints"
    both = json.loads(proc.stdout)
    assert [(r["policy"], r["frames"]) for r in both] == [(p, n) for n in (6, 3) for p in ("full", "sink-window")]

    def measured(rows: list[dict]) -> list[dict]:
        return [{k: v for k, v in r.items() if k not in TIMINGS} for r in rows]

    assert measured(both) == measured(single)  # policy, frames, budget and KV bytes do not depend on the rank
