"""``eval`` under torchrun (gloo, 2 CPU processes): the same rows as one process, resumable across world sizes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from hermes_lab.cli import main
from hermes_policy.distributed import DistributedError, launch_env, shard
from hermes_policy.errors import VideoError
from hermes_policy.video import SyntheticVideo, open_video, write_mp4

ARGS = ["--model", "embedded", "--policy", "full,hermes", "--budget-ratio", "0.3", "--chunk-frames", "2"]


# ---------------------------------------------------------------- the pieces
def test_shard_is_balanced_deterministic_and_complete() -> None:
    units = [(run, v) for v in range(7) for run in ("full", "hermes@0.3")]
    frames = {0: 100, 1: 10, 2: 10, 3: 40, 4: 60, 5: 10, 6: 30}
    shares = shard(units, lambda u: frames[u[1]], 2)
    assert shares == shard(units, lambda u: frames[u[1]], 2)
    assert sorted(u for s in shares for u in s) == sorted(units)
    loads = [sum(frames[v] for _, v in s) for s in shares]
    assert abs(loads[0] - loads[1]) <= max(frames.values())
    assert all(s == sorted(s, key=units.index) for s in shares)  # each share keeps evaluation order
    assert shard(units, lambda u: 1, 1) == [units]


def test_launch_env_reads_torchrun_variables() -> None:
    env = launch_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size, env.distributed) == (3, 4, 1, 2, True)
    assert not launch_env({}).distributed
    with pytest.raises(DistributedError, match="WORLD_SIZE"):
        launch_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(DistributedError, match="whole number"):
        launch_env({"WORLD_SIZE": "two"})


# --------------------------------------------------------------- end to end
def _torchrun(*args: str, nproc: int = 2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "hermes_lab", "eval", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "TQDM_DISABLE": "1"})


def _rows(out: Path) -> list[dict]:
    return pq.read_table(out / "rows.parquet").to_pylist()


def _assert_same_rows(a: list[dict], b: list[dict]) -> None:
    """Same units, questions and predictions; scores within 1e-5 (ranks run on fewer threads); TTFT aside."""
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for key in x:
            if key == "ttft_ms":
                continue
            if key in ("scores", "option_probs", "kl_vs_full"):
                assert x[key] == pytest.approx(y[key], abs=1e-5), key
            else:
                assert x[key] == y[key], (key, x[key], y[key])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("dist-data")
    assert main(["data", "synth", "--seed", "11", "--videos", "5", "--frames", "24", "--per-category", "1",
                 "--out", str(folder)]) == 0
    return folder


@pytest.fixture(scope="module")
def single(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("single") / "out"
    assert main(["eval", "--data", str(data), "--out", str(out), *ARGS, "--json"]) == 0
    return out


@pytest.mark.slow
def test_two_ranks_write_what_one_process_writes(data, single, tmp_path, capfd) -> None:
    out = tmp_path / "out"
    proc = _torchrun("--data", str(data), "--out", str(out), *ARGS, "--json")
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    _assert_same_rows(_rows(single), _rows(out))
    one, two = (json.loads((d / "results.json").read_text()) for d in (single, out))
    assert [r["accuracy"] for r in one["results"]] == [r["accuracy"] for r in two["results"]]
    assert len(stdout.strip().splitlines()) == 1, "only rank 0 prints"
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "protocol.json", "results.json", "rows.parquet"]
    assert json.loads((out / "config.json").read_text())["world_size"] == 2


@pytest.mark.slow
def test_killed_run_resumes_on_one_process(data, single, tmp_path) -> None:
    out = tmp_path / "out"
    proc = _torchrun("--data", str(data), "--out", str(out), *ARGS)
    deadline = time.monotonic() + 300
    while not any(p.stat().st_size for p in out.glob("rows.partial*.jsonl")):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no unit finished in time"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and both ranks, mid-run
    proc.communicate()
    assert not (out / "rows.parquet").exists()
    assert main(["eval", "--data", str(data), "--out", str(out), *ARGS, "--json"]) == 0
    _assert_same_rows(_rows(single), _rows(out))


@pytest.mark.slow
def test_a_failing_rank_names_its_units_and_a_rerun_finishes(tmp_path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    for seed in range(4):
        write_mp4(SyntheticVideo(seed=seed, frames=12, width=64, height=64, fps=2), videos / f"v{seed}.mp4")
    dataset = tmp_path / "dataset.jsonl"
    question = {"time": 5.0, "question": "What colour is the circle now?", "options": ["red", "blue",
                "green", "white"], "answer": "A", "category": "real-time"}
    dataset.write_text("".join(json.dumps({"video": str(videos / f"v{s}.mp4"), "questions": [question]}) + "\n"
                               for s in range(4)))
    good = (videos / "v2.mp4").read_bytes()
    # cut short: it opens (eval checks every file before it starts) and breaks mid-stream, so its units fail on
    # whichever rank has them (where exactly it breaks depends on the encoder; the precondition says if it moved)
    (videos / "v2.mp4").write_bytes(good[: int(len(good) * 0.85)])
    opened = open_video(videos / "v2.mp4")
    with pytest.raises(VideoError):
        list(opened.frames())
    out = tmp_path / "out"
    proc = _torchrun("--data", str(dataset), "--out", str(out), *ARGS)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode != 0
    assert "unit(s) failed" in stderr and "on video 2" in stderr
    assert list(out.glob("failures.rank*.json"))
    done_before = sum(len(p.read_text().splitlines()) for p in out.glob("rows.partial*.jsonl"))
    assert done_before == 2 * 3  # every other video, under both runs: the other rank finished its share
    (videos / "v2.mp4").write_bytes(good)
    proc = _torchrun("--data", str(dataset), "--out", str(out), *ARGS)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "resuming: 6 of 8 streams already done" in stderr
    assert len(_rows(out)) == 8 and not list(out.glob("failures.rank*.json"))


# ------------------------------------------------------ a model per group of GPUs
def test_each_rank_takes_its_own_group_of_gpus() -> None:
    from hermes_policy.distributed import LaunchEnv, gpu_group

    groups = [gpu_group(LaunchEnv(r, 4, r, 4), 2, visible=8) for r in range(4)]
    assert groups == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(DistributedError, match="at most 4 rank"):
        gpu_group(LaunchEnv(4, 5, 4, 5), 2, visible=8)


def test_a_rank_device_map_is_restricted_to_its_gpus() -> None:
    from hermes_policy.errors import ModelError
    from hermes_policy.models.placement import Placement

    placement = Placement(device_map="auto", max_memory={0: "70GiB", 1: "70GiB", "cuda:2": "70GiB", 3: "70GiB",
                                                         "cpu": "200GiB"})
    mine = placement.restricted_to([2, 3])
    assert mine.max_memory == {"cuda:2": "70GiB", 3: "70GiB", "cpu": "200GiB"}
    assert mine.device == "cuda:2" and mine.device_map == "auto"
    assert placement.max_memory[0] == "70GiB", "the shared placement is not changed"
    with pytest.raises(ModelError, match="none of this rank's GPUs"):
        Placement(device_map="auto", max_memory={0: "1GiB", "cpu": "1GiB"}).restricted_to([4, 5])


@pytest.mark.parametrize(("args", "match"), [
    (["--device-map", "auto"], "needs --gpus-per-rank"),
    (["--device-map", "auto", "--gpus-per-rank", "0"], "positive number of GPUs"),
    (["--dist-timeout", "0"], "--dist-timeout must be a number in [1, 2592000]"),
])
def test_launch_checks_come_before_any_model_loads(args, match, data, tmp_path, monkeypatch, capsys) -> None:
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    out = tmp_path / "out"
    assert main(["eval", "--data", str(data), "--out", str(out), *ARGS, *args]) == 2
    assert match in capsys.readouterr().err and not out.exists()
