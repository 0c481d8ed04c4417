"""Integrity by class of bad input (hypothesis, fixed seed and example budget): concurrent runs on one output,
symbolic links, hostile timestamps and OVO tasks, pipes and other non-files, sizes past their limits, values a
spec or dataset must not repeat, and the network.

Each class is generated, not only its first example; every case ends in exit 0 or in one
``hermes-lab: error:`` line and exit 2, and what was on disk before is there after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.synthetic import hermes_like_recording
from hermes_lab.cli import main
from hermes_policy.data import synthesize, write_dataset
from hermes_policy.errors import HermesError
from hermes_policy.inputs import MAX_QUESTION_CHARS, MAX_STREAM_FRAMES, MAX_STREAM_SECONDS
from hermes_policy.outputs import output_lock

NO_MODEL = "no-such-model"
VIDEO = "synthetic:seed=1,frames=4"
FUZZ = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])


def one_error_line(code: int, err: str) -> str:
    assert code == 2 and "Traceback" not in err, err[-2000:]
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines[-1].startswith("hermes-lab: error: "), err[-2000:]
    return lines[-1]


# ----------------------------------------------------------------------------- concurrent runs
def test_two_evals_on_one_fresh_folder_one_is_refused(tmp_path):
    """The issue's case: two evals started together (budgets 18 and 27) on one new --out."""
    data = tmp_path / "data"
    data.mkdir()
    write_dataset(synthesize(3, 3, 24), data / "dataset.jsonl")
    out = tmp_path / "out"
    cli = [sys.executable, "-m", "hermes_lab", "eval", "--model", "tiny-embedded", "--data", str(data),
           "--policy", "sink-window", "--out", str(out), "--json"]
    runs = [subprocess.Popen([*cli, "--budget", b], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for b in ("18", "27")]
    results = [(r.wait(timeout=600), *r.communicate()) for r in runs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], [r[2][-500:] for r in results]
    (won,) = [i for i, (code, _, _) in enumerate(results) if code == 0]
    lost = results[1 - won][2]
    assert "is being written by another hermes-lab run" in lost and "Traceback" not in lost
    # the folder is the winner's alone: its config, its rows
    config = json.loads((out / "config.json").read_text())
    assert config["budget"] == ("18", "27")[won]


SPELLINGS = st.sampled_from(["{p}", "{p}/", "{p}/.", "{d}/./{n}", "{d}/../{b}/{n}", "{d}//{n}"])


@settings(max_examples=30, **FUZZ)
@given(first=SPELLINGS, second=SPELLINGS, same=st.booleans())
def test_one_output_is_locked_under_any_spelling_and_others_are_free(tmp_path_factory, first, second, same):
    root = tmp_path_factory.mktemp("lock")
    (root / "d").mkdir()
    fill = {"p": str(root / "d" / "out"), "d": str(root / "d"), "n": "out", "b": "d"}
    a = Path(first.format(**fill))
    b = Path(second.format(**fill)) if same else root / "d" / "other"
    with output_lock(a, HermesError):
        if same:
            with pytest.raises(HermesError, match="being written by another hermes-lab run"):
                with output_lock(b, HermesError):
                    pass
        else:
            with output_lock(b, HermesError):
                pass
    with output_lock(a, HermesError):  # released: free again
        pass


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    out = tmp_path / "out"
    script = ("import os, sys\nfrom hermes_policy.outputs import output_lock\n"
              f"with output_lock({str(out)!r}):\n    print('held', flush=True)\n    os._exit(9)\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 9 and "held" in proc.stdout
    with output_lock(out, HermesError):  # the kernel dropped the dead process's lock
        pass


# ----------------------------------------------------------------------------- symbolic links
WRITERS = {
    "derive": lambda out, rec: ["derive", "--study", rec, "--out", out],
    "figures": lambda out, rec: ["figures", "--study", rec, "--out", out, "--format", "png"],
    "bench": lambda out, rec: ["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", "4", "--out", out],
    "data synth": lambda out, rec: ["data", "synth", "--frames", "8", "--videos", "1", "--out", out],
    "eval": lambda out, rec: ["eval", "--model", NO_MODEL, "--data", rec + "/../data.jsonl", "--policy", "full",
                              "--out", out],
    "study": lambda out, rec: ["study", "--model", NO_MODEL, "--video", VIDEO, "--out", out],
}
LINKS = ["dangling", "loop", "to a file", "to a folder", "to an empty folder"]


@settings(max_examples=40, **FUZZ)
@given(command=st.sampled_from(sorted(WRITERS)), link=st.sampled_from(LINKS), overwrite=st.booleans())
def test_a_link_as_output_is_refused_and_left_as_it_was(tmp_path_factory, capsys, command, link, overwrite):
    root = tmp_path_factory.mktemp("links")
    hermes_like_recording(num_layers=4).save(root / "rec")
    write_dataset(synthesize(1, 1, 8), root / "data.jsonl")
    target = root / "target"
    out = root / "out"
    if link == "to a file":
        target.write_text("precious")
    elif link in ("to a folder", "to an empty folder"):
        target.mkdir()
        if link == "to a folder":
            (target / "precious.txt").write_text("precious")
    if link == "loop":
        os.symlink(root / "out2", out)
        os.symlink(out, root / "out2")
    else:
        os.symlink(target, out)
    before = os.readlink(out)
    args = WRITERS[command](str(out), str(root / "rec")) + (["--overwrite"] if overwrite and command not in
                                                            ("eval", "study") else [])
    code = main(args)
    line = one_error_line(code, capsys.readouterr().err)
    assert "symbolic link" in line, line
    assert out.is_symlink() and os.readlink(out) == before, "the link itself was replaced"
    if link == "to a file":
        assert target.read_text() == "precious"
    if link == "to a folder":
        assert sorted(p.name for p in target.iterdir()) == ["precious.txt"]
    if link == "to an empty folder":
        assert not any(target.iterdir())


def test_links_inside_a_resumed_folder_are_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    os.symlink("/etc/passwd", out / "rows.partial.jsonl")
    data = tmp_path / "data.jsonl"
    write_dataset(synthesize(1, 1, 8), data)
    line = one_error_line(main(["eval", "--model", NO_MODEL, "--data", str(data), "--policy", "full", "--out",
                                str(out)]), capsys.readouterr().err)
    assert "symbolic links" in line and os.readlink(out / "rows.partial.jsonl") == "/etc/passwd"


# ----------------------------------------------------------------------------- timestamps and tasks
def _bad_clock():
    part = st.integers(0, 99).map(lambda n: f"{n:02d}")
    return st.one_of(
        st.builds(lambda a, b: f"-{a}:{b}", part, part),  # a sign
        st.builds(lambda a, b: f"{a}:{b}", part, st.integers(60, 99).map(str)),  # seconds past 59
        st.builds(lambda a, b, c: f"{a}:{b}:{c}", part, st.integers(60, 99).map(str), part),  # minutes past 59
        st.sampled_from(["1e308", "1e3", "inf", "nan", "-1", "1:2:3:4", "::", "a:b", "", " ", "00:00:-1",
                         "99:99:99", "00:60", "+5", "0x10"]),
        st.floats(min_value=MAX_STREAM_SECONDS + 1, allow_infinity=True),
        st.just(float("nan")),
        st.floats(max_value=-1e-9, allow_infinity=True),
    )


@settings(max_examples=60, **FUZZ)
@given(stamp=_bad_clock(), kind=st.sampled_from(["streamingbench", "ovobench"]))
def test_a_bad_timestamp_is_refused_with_file_item_and_reason(tmp_path_factory, capsys, stamp, kind):
    root = tmp_path_factory.mktemp("stamps")
    (root / "v.mp4").write_bytes(b"")
    if kind == "streamingbench":
        doc = [{"video_path": "v.mp4", "questions": [{"time_stamp": stamp, "question": "What?",
                                                      "options": ["a", "b"], "answer": "A"}]}]
    else:
        doc = [{"id": 1, "video": "v.mp4", "task": "EPM", "realtime": stamp, "question": "What?",
                "options": ["a", "b"], "gt": 0}]
    ann = root / "ann.json"
    ann.write_text(json.dumps(doc))
    line = one_error_line(main(["data", "convert", str(ann), "--out", str(root / "out"), "--format", kind]),
                          capsys.readouterr().err)
    assert str(ann) in line and "entry 0" in line and ("time" in line or "second" in line), line
    assert not (root / "out").exists()


@settings(max_examples=20, **FUZZ)
@given(task=st.text(min_size=1, max_size=6).filter(lambda t: t.strip() and t not in
                                                   ("EPM", "ASI", "HLD", "STU", "OJR", "ATR", "ACR", "OCR", "FPD",
                                                    "REC", "SSR", "CRR")))
def test_an_unknown_ovo_task_is_refused_not_taken_as_forward(tmp_path_factory, capsys, task):
    root = tmp_path_factory.mktemp("ovo")
    ann = root / "ann.json"
    ann.write_text(json.dumps([{"id": 1, "video": "v.mp4", "task": task, "realtime": 3, "question": "What?",
                                "options": ["a", "b"], "gt": 0}]))
    line = one_error_line(main(["data", "convert", str(ann), "--out", str(root / "out"), "--format", "ovobench"]),
                          capsys.readouterr().err)
    assert "unknown OVO-Bench task" in line and "entry 0" in line


# ----------------------------------------------------------------------------- pipes, devices, sizes
PIPE_OPTIONS = {
    "stream --spec": lambda p: ["stream", "--model", NO_MODEL, "--video", VIDEO, "--spec", p],
    "stream --device-map": lambda p: ["stream", "--model", NO_MODEL, "--video", VIDEO, "--device-map", p],
    "stream --video": lambda p: ["stream", "--model", NO_MODEL, "--video", p],
    "eval --data": lambda p: ["eval", "--model", NO_MODEL, "--data", p, "--format", "jsonl", "--policy", "full",
                              "--out", p + ".out"],
    "data convert": lambda p: ["data", "convert", p, "--out", p + ".out", "--format", "streamingbench"],
    "study --videos": lambda p: ["study", "--model", NO_MODEL, "--videos", p, "--out", p + ".out"],
    "bench --spec": lambda p: ["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", "4", "--spec", p,
                               "--policies", "hermes"],
}


@pytest.mark.timeout(120)  # a pipe that were opened for reading would block here until this fires
@settings(max_examples=20, **FUZZ)
@given(option=st.sampled_from(sorted(PIPE_OPTIONS)), kind=st.sampled_from(["fifo", "/dev/zero", "/dev/null"]))
def test_a_pipe_or_device_is_refused_before_it_is_read(tmp_path_factory, capsys, option, kind):
    root = tmp_path_factory.mktemp("fifo")
    if kind == "fifo":
        path = root / "pipe"
        os.mkfifo(path)
    else:
        path = Path(kind)
    line = one_error_line(main(PIPE_OPTIONS[option](str(path))), capsys.readouterr().err)
    assert "FIFO" in line or "device" in line or "regular file" in line, line


@settings(max_examples=30, **FUZZ)
@given(case=st.sampled_from(["synthetic frames", "bench frames", "ask length", "dataset question length",
                             "dataset option length", "dataset time"]),
       excess=st.integers(1, 10**12))
def test_sizes_past_their_limits_are_refused_with_the_limit(tmp_path_factory, capsys, case, excess):
    root = tmp_path_factory.mktemp("limits")
    if case == "synthetic frames":
        args = ["stream", "--model", NO_MODEL, "--video", f"synthetic:seed=1,frames={MAX_STREAM_FRAMES + excess}"]
        limit = f"{MAX_STREAM_FRAMES:,}"
    elif case == "bench frames":
        args = ["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", str(MAX_STREAM_FRAMES + excess)]
        limit = f"{MAX_STREAM_FRAMES:,}"
    elif case == "ask length":
        args = ["stream", "--model", NO_MODEL, "--video", VIDEO,
                "--ask", "1:" + "x" * (MAX_QUESTION_CHARS + 1 + excess % 5000)]
        limit = f"{MAX_QUESTION_CHARS:,}"
    else:
        q = {"time": 1.0, "question": "What?", "options": ["a", "b"], "answer": "A"}
        if case == "dataset question length":
            q["question"] = "x" * (MAX_QUESTION_CHARS + 1 + excess % 5000)
            limit = f"{MAX_QUESTION_CHARS:,}"
        elif case == "dataset option length":
            q["options"] = ["a", "y" * (MAX_QUESTION_CHARS + 1 + excess % 5000)]
            limit = f"{MAX_QUESTION_CHARS:,}"
        else:
            q["time"] = float(MAX_STREAM_SECONDS + excess)
            limit = str(MAX_STREAM_SECONDS)
        data = root / "data.jsonl"
        data.write_text(json.dumps({"video": "synthetic:seed=1,frames=8", "questions": [q]}) + "\n")
        args = ["eval", "--model", NO_MODEL, "--data", str(data), "--policy", "full", "--out", str(root / "out")]
    line = one_error_line(main(args), capsys.readouterr().err)
    assert limit in line, line
    assert not (root / "out").exists()


# ----------------------------------------------------------------------------- values that must not repeat
@settings(max_examples=30, **FUZZ)
@given(case=st.sampled_from(["layer 99", "duplicate layer", "layers out of order", "too many layers",
                             "wrong head count"]))
def test_a_spec_made_for_another_model_is_refused(tmp_path_factory, capsys, case):
    root = tmp_path_factory.mktemp("spec")
    layers = [{"layer": i, "tier": "sensory", "alpha": 1.0, "k": 20.0, "heads": ["sensory"] * 4} for i in range(4)]
    if case == "layer 99":
        layers[2]["layer"] = 99
    elif case == "duplicate layer":
        layers[2]["layer"] = 1
    elif case == "layers out of order":
        layers[1]["layer"], layers[2]["layer"] = 2, 1
    elif case == "too many layers":
        layers.append({"layer": 4, "tier": "sensory", "alpha": 1.0, "k": 20.0})
    else:
        layers[0]["heads"] = ["sensory"] * 3
    spec = root / "spec.json"
    spec.write_text(json.dumps({"format": "hermes-lab/policy-spec", "version": 1, "policy": "hermes",
                                "params": {"budget": 64}, "layers": layers}))
    line = one_error_line(main(["stream", "--model", "tiny-embedded", "--video", VIDEO, "--spec", str(spec)]),
                          capsys.readouterr().err)
    assert "layer" in line or "heads" in line, line


@settings(max_examples=20, **FUZZ)
@given(case=st.sampled_from(["same option", "same option, other case", "same qid"]))
def test_a_dataset_repeating_what_must_be_unique_is_refused(tmp_path_factory, capsys, case):
    root = tmp_path_factory.mktemp("dup")
    q = {"time": 1.0, "question": "What?", "options": ["red", "blue"], "answer": "A", "qid": "q1"}
    lines = [{"video": "synthetic:seed=1,frames=8", "questions": [q]}]
    if case == "same option":
        q["options"] = ["red", "red"]
    elif case == "same option, other case":
        q["options"] = ["Red", "red "]
    else:
        lines.append({"video": "synthetic:seed=2,frames=8", "questions": [dict(q)]})
    data = root / "data.jsonl"
    data.write_text("".join(json.dumps(line) + "\n" for line in lines))
    line = one_error_line(main(["eval", "--model", NO_MODEL, "--data", str(data), "--policy", "full",
                                "--out", str(root / "out")]), capsys.readouterr().err)
    assert ("same" in line) or ("used twice" in line), line


def test_gpus_per_rank_without_a_launcher_is_refused(capsys, tmp_path):
    line = one_error_line(main(["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", "4",
                                "--gpus-per-rank", "2"]), capsys.readouterr().err)
    assert "no launch" in line


# ----------------------------------------------------------------------------- the network
def test_an_unknown_hub_id_fails_at_once_when_offline_or_unreachable(monkeypatch):
    import socket

    import huggingface_hub.constants as hub
    import transformers

    from hermes_policy.errors import ModelError
    from hermes_policy.models import load_model

    online = []
    real = transformers.AutoConfig.from_pretrained

    def watch(name, **kwargs):
        if not kwargs.get("local_files_only"):
            online.append(name)  # would go to the hub
        return real(name, **kwargs)

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", watch)
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        load_model("no-org/no-model")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)

    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    with pytest.raises(ModelError, match="cannot be reached"):
        load_model("no-org/no-model")
    assert online == [], "the hub client was called although the hub could not be used"


def test_the_output_lock_is_per_process_held_and_released_by_main(tmp_path, capsys):
    out = tmp_path / "synth"
    assert main(["data", "synth", "--frames", "8", "--videos", "1", "--out", str(out)]) == 0
    held = threading.Event()

    def other_process_holds():  # the lock is not re-entrant across threads' own opens either
        with output_lock(out, HermesError):
            held.set()

    thread = threading.Thread(target=other_process_holds)
    thread.start()
    thread.join()
    assert held.is_set(), "main released the lock when the command ended"
