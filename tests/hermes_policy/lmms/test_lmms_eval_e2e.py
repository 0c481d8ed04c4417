"""lmms-eval end to end: ``lmms-eval --model hermes_lab`` on the bundled tiny tasks and a local task over mp4 files.

Needs the ``lmms`` extra. The main install has no lmms-eval, so there these tests skip; ``make test-lmms``
(which ``make test`` runs) builds ``.venv-lmms`` with the extra and runs them there, offline: the tasks are
local JSON and synthetic videos, the model is the bundled ``embedded``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from hermes_policy.lmms import tasks_path
from hermes_policy.video import SyntheticVideo, write_mp4

pytestmark = [
    pytest.mark.lmms,
    pytest.mark.skipif(importlib.util.find_spec("lmms_eval") is None,
                       reason="lmms-eval is not installed (the [lmms] extra); `make test-lmms` builds .venv-lmms "
                              "with it and runs these tests there"),
]

TASKS = "hermes_tiny,hermes_tiny_mc,hermes_tiny_rounds,hermes_files"
FILES_UTILS = '''
def doc_to_visual(doc, lmms_eval_specific_kwargs=None):
    return [doc["path"]]


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    return doc["question"]


def process_results(doc, results):
    return {"answered": float(bool(str(results[0]).strip()))}
'''
FILES_YAML = """
task: hermes_files
dataset_path: json
dataset_kwargs:
  data_files:
    test: files.jsonl
test_split: test
output_type: generate_until
doc_to_visual: !function utils.doc_to_visual
doc_to_text: !function utils.doc_to_text
doc_to_target: answer
process_results: !function utils.process_results
generation_kwargs:
  max_new_tokens: 3
metric_list:
  - metric: answered
    aggregation: mean
    higher_is_better: true
"""


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    """The bundled tasks, plus ``hermes_files``: two questions over each of three synthetic mp4 files."""
    root = tmp_path_factory.mktemp("lmms_tasks")
    shutil.copytree(tasks_path() / "hermes_tiny", root / "hermes_tiny")
    files = root / "hermes_files"
    files.mkdir()
    docs = []
    for seed in range(3):
        path = write_mp4(SyntheticVideo(seed=seed, frames=8, width=64, height=64, fps=2), files / f"v{seed}.mp4")
        for question in ("What colour is the circle now?", "How many shapes are on screen now?"):
            docs.append({"path": str(path), "question": question, "answer": "red"})
    (files / "files.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (files / "utils.py").write_text(FILES_UTILS)
    (files / "hermes_files.yaml").write_text(textwrap.dedent(FILES_YAML))
    return root


def lmms_eval(task_dir: Path, out: Path, model_args: str, tasks: str = TASKS) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(out / "hf"),
           "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    command = [sys.executable, "-m", "lmms_eval", "--model", "hermes_lab", "--model_args", model_args,
               "--tasks", tasks, "--include_path", str(task_dir), "--output_path", str(out), "--log_samples"]
    return subprocess.run(command, check=False, env=env, capture_output=True, text=True, timeout=600)


def results_of(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    (results_file,) = out.rglob("*_results.json")
    samples = {p.name.split("_samples_")[1][: -len(".jsonl")]: [json.loads(line) for line in p.read_text().splitlines()]
               for p in out.rglob("*_samples_*.jsonl")}
    return json.loads(results_file.read_text()), samples


@pytest.fixture(scope="module")
def two_runs(task_dir, tmp_path_factory):
    """The same tasks under two policies with different budgets (video tokens per layer)."""
    runs = {}
    for policy, budget in (("sink-window", 18), ("hermes", 36)):
        out = tmp_path_factory.mktemp(f"lmms_{policy}")
        done = lmms_eval(task_dir, out,
                         f"model=embedded,policy={policy},budget={budget},stream_log={out}/streams.jsonl")
        assert done.returncode == 0 and "Error during evaluation" not in done.stderr, done.stderr[-4000:]
        runs[policy] = (budget, out, *results_of(out))
    return runs


def test_every_task_runs_and_reports_its_budget(two_runs):
    seen = {}
    for policy, (budget, out, results, _samples) in two_runs.items():
        assert set(results["results"]) >= set(TASKS.split(","))
        assert 0.0 <= results["results"]["hermes_tiny_mc"]["acc,none"] <= 1.0
        assert results["results"]["hermes_files"]["answered,none"] >= 0.0
        throughput = results["throughput"]
        assert throughput["avg_hermes_budget_tokens"] == budget
        assert throughput["avg_hermes_video_tokens_kept"] <= budget
        assert f"policy={policy}" in results["config"]["model_args"]
        records = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
        assert {r["policy"] for r in records} == {f"{policy}@{budget}"} and {r["budget"] for r in records} == {budget}
        # 9 + 9 x 4 options + 3 streams x 3 rounds + 6 file questions
        assert len(records) == 9 + 36 + 9 + 6
        file_records = [r for r in records if r["key"].endswith(".mp4")]
        # 8 frames at 2 fps, sampled at the plugin's default 1 fps: 4 frames streamed
        assert len(file_records) == 6 and all(r["frames"] == 4 for r in file_records)
        seen[policy] = throughput
    assert seen["hermes"]["avg_hermes_kv_bytes"] > seen["sink-window"]["avg_hermes_kv_bytes"]


def test_multi_round_answers_every_round_on_one_growing_stream(two_runs):
    _, out, _, samples = two_runs["hermes"]
    rounds = samples["hermes_tiny_rounds"]
    assert len(rounds) == 3
    for sample in rounds:
        answers = sample["filtered_resps"]
        answers = answers[0] if answers and isinstance(answers[0], list) else answers
        assert len(answers) == 3 and all(isinstance(a, str) for a in answers)
    records = [json.loads(line) for line in (out / "streams.jsonl").read_text().splitlines()]
    per_doc: dict[str, list[dict]] = {}
    for r in records:
        if r["kind"] == "round":
            per_doc.setdefault(str(r["doc_id"]), []).append(r)
    for doc_rounds in per_doc.values():
        frames = [r["frames"] for r in doc_rounds]
        assert [r["round"] for r in doc_rounds] == [0, 1, 2] and frames == sorted(frames) and frames[0] < frames[-1]


def error_line(done: subprocess.CompletedProcess) -> str:
    """lmms-eval's own one-line report of a failed evaluation (it prints the traceback too, and exits 0)."""
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "Error during evaluation:" in line]
    assert lines, (done.stdout + done.stderr)[-3000:]
    return lines[-1].split("Error during evaluation:", 1)[1]


def test_bad_input_is_one_clear_error(task_dir, tmp_path):
    line = error_line(lmms_eval(task_dir, tmp_path, "model=no-such-model,policy=hermes,budget=36", "hermes_tiny"))
    assert "no-such-model" in line
    line = error_line(lmms_eval(task_dir, tmp_path, "model=embedded,policy=sink-window,budget=1", "hermes_tiny"))
    assert "hermes_lab:" in line and "budget=9 or more" in line
    line = error_line(lmms_eval(task_dir, tmp_path, "model=embedded,policy=hermes,budgit=36", "hermes_tiny"))
    assert "unknown model_args ['budgit']" in line
    assert not list(tmp_path.rglob("*_results.json"))
