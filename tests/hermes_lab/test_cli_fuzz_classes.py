"""CLI fuzz by class of bad input (hypothesis, fixed seed and example budget): outputs that cannot be written,
device strings, hostile JSON wherever JSON is read, and floats across their whole range.

Whatever is generated, a command ends in exit 0 or in one ``hermes-lab: error:`` line and exit 2, never a
traceback, and a refused command changes nothing on disk. No model ever loads: the model is one that does
not exist, so every check that comes before the model load is exercised.

Permissions do not bind root with its usual capabilities, and CI runs as root: there, the unwritable-output
fuzz re-runs itself under ``setpriv`` with ``CAP_DAC_OVERRIDE``, ``CAP_DAC_READ_SEARCH`` and ``CAP_FOWNER``
dropped from the bounding set, so a folder without write permission refuses root too.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from analysis.synthetic import hermes_like_recording
from hermes_lab.cli import main
from hermes_policy.data import synthesize, write_dataset

NO_MODEL = "no-such-model"
VIDEO = "synthetic:seed=1,frames=4"
FUZZ = dict(derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                      HealthCheck.function_scoped_fixture])
IN_SETPRIV = "HERMES_FUZZ_DROPPED_CAPS"


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` (links not followed) with its type, size and mtime: what "unchanged" means."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            st_ = path.lstat()
            out[str(path.relative_to(root))] = (stat.S_IFMT(st_.st_mode), st_.st_size, st_.st_mtime_ns)
    return out


def assert_clean(code: int, err: str, args: list[str]) -> None:
    assert code in (0, 2), f"exit {code} for {args!r}\n{err[-2000:]}"
    assert "Traceback" not in err, f"traceback for {args!r}\n{err[-2000:]}"
    if code == 2:
        last = [line for line in err.replace("\r", "\n").splitlines() if line.strip()][-1]
        assert last.startswith("hermes-lab: error: ") or last.startswith("Error") or "Usage" in err, err


# ----------------------------------------------------------------------------------- unwritable outputs
def permissions_bind() -> bool:
    """Whether a folder without write permission refuses this process (false for root with its capabilities)."""
    folder = Path(tempfile.mkdtemp(prefix="hermes-perm-"))
    folder.chmod(0o555)
    try:
        tempfile.NamedTemporaryFile(dir=folder).close()
        return False
    except PermissionError:
        return True
    finally:
        folder.chmod(0o755)
        shutil.rmtree(folder)


@functools.cache
def places() -> tuple[Path, dict[str, str]]:
    """A tree with every kind of place a command cannot write to, made once."""
    root = Path(tempfile.mkdtemp(prefix="hermes-unwritable-"))
    (root / "inputs").mkdir()
    hermes_like_recording(num_layers=4).save(root / "inputs" / "rec")
    write_dataset(synthesize(1, 1, 8), root / "inputs" / "dataset.jsonl")
    ro = root / "ro"
    (ro / "full").mkdir(parents=True)
    (ro / "full" / "old.txt").write_text("kept")
    (ro / "empty").mkdir()
    for folder in (ro / "full", ro / "empty", ro):
        folder.chmod(0o555)
    (root / "afile").write_text("a regular file")
    return root, {
        "new in a read-only folder": str(ro / "new"),
        "nested under a read-only folder": str(ro / "a" / "b" / "c"),
        "a read-only empty folder": str(ro / "empty"),
        "a read-only folder with files": str(ro / "full"),
        "under a regular file": str(root / "afile" / "x"),
        "deep under a regular file": str(root / "afile" / "x" / "y"),
        "a regular file": str(root / "afile"),
        "where nobody can write": "/proc/hermes-lab-out",
    }


def writers(out: str) -> dict[str, list[str]]:
    """Every command that writes, with valid arguments and ``out`` as its output."""
    p = places()[0] / "inputs"
    return {
        "study": ["study", "--model", NO_MODEL, "--video", VIDEO, "--out", out],
        "eval": ["eval", "--model", NO_MODEL, "--data", str(p / "dataset.jsonl"), "--policy", "full", "--out", out],
        "derive": ["derive", "--study", str(p / "rec"), "--out", out + ".json"],
        "figures": ["figures", "--study", str(p / "rec"), "--out", out, "--format", "png"],
        "bench": ["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", "4", "--policies", "full", "--out", out],
        "validate": ["validate", "--family", "embedded", "--configs", "1", "--frames", "8", "--out", out],
        "data convert": ["data", "convert", str(p / "dataset.jsonl"), "--out", out],
        "data synth": ["data", "synth", "--frames", "8", "--videos", "1", "--out", out],
        "train-embedded": ["train-embedded", "--vision-steps", "1", "--align-steps", "1", "--qa-steps", "1",
                           "--run-dir", out],
    }


#: these add to an existing output themselves (a rerun resumes), so they have no --overwrite
RESUMABLE = ("eval", "study", "train-embedded")


def _unwritable_fuzz() -> None:
    root, where = places()

    @settings(max_examples=60, **FUZZ)
    @given(command=st.sampled_from(sorted(writers("x"))), place=st.sampled_from(sorted(where)),
           overwrite=st.booleans())
    def case(command: str, place: str, overwrite: bool) -> None:
        # derive writes one file: a regular file it may replace, and "afile.json" is beside it, writable
        assume(not (command == "derive" and place == "a regular file"))
        args = writers(where[place])[command] + (["--overwrite"] if overwrite and command not in RESUMABLE else [])
        before = tree(root)
        err_buffer = io.StringIO()
        with contextlib.redirect_stderr(err_buffer):
            code = main(args)
        err = err_buffer.getvalue()
        assert code == 2, f"{command} into {place}: exit {code}\n{err[-2000:]}"
        assert_clean(code, err, args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("hermes-lab: error: "), f"{command} into {place}:\n{err}"
        assert tree(root) == before, f"{command} into {place} changed the disk"

    case()


def test_unwritable_outputs_are_one_line_refusals():
    if permissions_bind():
        _unwritable_fuzz()
        return
    if os.environ.get(IN_SETPRIV):
        pytest.fail("permissions still do not bind under setpriv")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("root without setpriv (util-linux): permissions cannot be made to bind")
    # root in CI: the same test in a process whose capabilities let permissions bind
    result = subprocess.run(
        [setpriv, "--bounding-set", "-dac_override,-dac_read_search,-fowner", sys.executable, "-m", "pytest",
         "-q", "-p", "no:cacheprovider", f"{__file__}::test_unwritable_outputs_are_one_line_refusals"],
        env={**os.environ, IN_SETPRIV: "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "1 passed" in result.stdout, result.stdout[-2000:]


def test_bench_overwrite_of_a_regular_file_says_out_is_a_folder(tmp_path, capsys):
    target = tmp_path / "rows"
    target.write_text("mine")
    code = main(["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", "4", "--out", str(target),
                 "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "is a file; --out takes a folder" in err, err
    assert target.read_text() == "mine"


def test_overwrite_never_replaces_a_folder_of_the_users_own_files(tmp_path, capsys):
    """A folder replaced whole by --overwrite must be one hermes-lab wrote: never a home folder by mistake."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    code = main(["data", "synth", "--frames", "8", "--videos", "1", "--out", str(mine), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "no hermes-lab command wrote" in err, err
    assert (mine / "thesis.tex").read_text() == "years of work"
    # one it wrote is replaced whole: no stale file of the earlier run survives
    out = tmp_path / "data"
    assert main(["data", "synth", "--frames", "8", "--videos", "2", "--out", str(out), "--mp4"]) == 0
    assert main(["data", "synth", "--frames", "8", "--videos", "1", "--out", str(out), "--mp4", "--overwrite"]) == 0
    assert sorted(p.name for p in (out / "videos").iterdir()) == ["video_0000.mp4"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


# ----------------------------------------------------------------------------------- devices
#: stream loads a real (tiny) model, so a device that passes the checks is really moved to
TINY = "tiny-embedded"
DEVICE_COMMANDS = {
    "stream": ["stream", "--model", TINY, "--video", VIDEO, "--max-new-tokens", "2"],
    "bench": ["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", "4", "--policies", "full"],
    "study": ["study", "--model", NO_MODEL, "--video", VIDEO, "--out", "{out}"],
    "eval": ["eval", "--model", NO_MODEL, "--data", "{data}", "--policy", "full", "--out", "{out}"],
}
DEVICE_NAMES = st.one_of(
    st.sampled_from(["banana", "cuda", "cuda:0", "cuda:7", "meta", "mps", "xpu", "xpu:1", "cpu:1", "cpu:-1", "hip",
                     "ipu", "lazy", "CUDA", "cuda:", ":0", "cuda:0:0", "cpu cuda", "", " ", "auto", "cpu"]),
    st.from_regex(r"\A(cpu|cuda|mps|xpu|meta|hip|vulkan|fpga|mtia|banana)(:-?[0-9]{1,5})?\Z"),
    st.text(max_size=12),
)


@settings(max_examples=60, **FUZZ)
@given(command=st.sampled_from(sorted(DEVICE_COMMANDS)), device=DEVICE_NAMES)
def test_any_device_string_is_a_clean_exit(command, device, capsys, tmp_path_factory):
    data = tmp_path_factory.mktemp("data") / "dataset.jsonl"
    write_dataset(synthesize(1, 1, 8), data)
    out = tmp_path_factory.mktemp("out") / "out"
    args = [a.format(out=out, data=data) for a in DEVICE_COMMANDS[command]] + ["--device", device]
    code = main(args)
    err = capsys.readouterr().err
    assert_clean(code, err, args)
    assert not out.exists(), err
    if command != "stream":
        assert code == 2, err  # either the device is refused or the unknown model is
    elif not torch.cuda.is_available():  # this machine has the CPU only
        assert (code == 0) == (device in ("cpu", "auto")), f"--device {device!r}: exit {code}\n{err}"


@settings(max_examples=30, **FUZZ)
@given(value=st.one_of(st.integers(-3, 99), DEVICE_NAMES, st.floats(), st.none(), st.booleans(),
                       st.lists(st.integers(), max_size=2)))
def test_any_device_in_a_device_map_file_is_a_clean_exit(value, capsys, tmp_path_factory):
    path = tmp_path_factory.mktemp("map") / "map.json"
    path.write_text(json.dumps({"model.layers.0": value, "": "cpu"}))
    code = main(["stream", "--model", NO_MODEL, "--video", VIDEO, "--device-map", str(path)])
    assert_clean(code, capsys.readouterr().err, ["--device-map", repr(value)])
    assert code == 2


def test_device_messages_say_what_is_available(capsys):
    for device, words in [("banana", "is not a device"), ("meta", "holds no data"), ("cuda", "no cuda device"),
                          ("cuda:9", "cuda"), ("ipu", "cpu, cuda, mps, xpu devices only")]:
        assert main(["stream", "--model", NO_MODEL, "--device", device]) == 2
        err = capsys.readouterr().err
        assert words in err and "cpu" in err.split(":")[-1], err


# ----------------------------------------------------------------------------------- hostile JSON
def nested(depth: int, kind: str) -> str:
    return "[" * depth + "]" * depth if kind == "array" else '{"a": ' * depth + "1" + "}" * depth


HOSTILE_JSON = st.one_of(
    st.builds(nested, st.sampled_from([65, 999, 1001, 20_000, 200_000]), st.sampled_from(["array", "object"])),
    st.builds(lambda n, wrap: wrap.replace("N", "9" * n), st.sampled_from([41, 4300, 4301, 60_000]),
              st.sampled_from(["N", "[N]", '{"policy": "hermes", "params": {"budget": N}}',
                               '{"policy": "full", "layers": [{"layer": N}]}', '{"video": "x", "questions": N}',
                               '[{"video": "x.mp4", "questions": [{"time": N}]}]'])),
    st.builds(lambda d: '{"policy": "hermes", "params": ' + nested(d, "object") + "}", st.sampled_from([70, 5000])),
)
JSON_PLACES = ["stream --spec", "bench --spec", "eval --spec", "stream --device-map", "eval --data jsonl",
               "eval --data json", "data convert", "derive --study", "figures --eval", "eval resume config",
               "eval resume partial", "study resume", "dashboard --eval"]


def _json_case(place: str, text: str, root: Path) -> list[str]:
    """The command that reads ``text`` as the JSON of ``place``."""
    f = root / "hostile.json"
    f.write_text(text)
    data = root / "data.jsonl"
    write_dataset(synthesize(1, 1, 8), data)
    out = root / "out"
    if place.endswith("--spec"):
        cmd = place.split()[0]
        base = {"stream": ["stream", "--model", NO_MODEL, "--video", VIDEO],
                "bench": ["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", "4", "--policies", "hermes"],
                "eval": ["eval", "--model", NO_MODEL, "--data", str(data), "--out", str(out)]}[cmd]
        return base + ["--spec", str(f)]
    if place == "stream --device-map":
        return ["stream", "--model", NO_MODEL, "--video", VIDEO, "--device-map", str(f)]
    if place == "eval --data jsonl":
        lines = root / "hostile.jsonl"
        lines.write_text(data.read_text() + text + "\n")
        return ["eval", "--model", NO_MODEL, "--data", str(lines), "--policy", "full", "--out", str(out)]
    if place == "eval --data json":
        return ["eval", "--model", NO_MODEL, "--data", str(f), "--policy", "full", "--out", str(out),
                "--format", "streamingbench"]
    if place == "data convert":
        return ["data", "convert", str(f), "--out", str(out)]
    if place == "derive --study":
        rec = root / "rec"
        hermes_like_recording(num_layers=4).save(rec)
        (rec / "recording.json").write_text(text)
        return ["derive", "--study", str(rec), "--out", str(root / "spec.json")]
    if place in ("figures --eval", "dashboard --eval"):
        ev = root / "ev"
        ev.mkdir()
        (ev / "results.json").write_text(text)
        if place == "figures --eval":
            return ["figures", "--eval", str(ev), "--out", str(out), "--format", "png"]
        return ["dashboard", "--model", NO_MODEL, "--eval", str(ev)]
    if place.startswith("eval resume"):
        out.mkdir()
        (out / ("config.json" if place.endswith("config") else "rows.partial.jsonl")).write_text(text + "\n")
        if place.endswith("partial"):
            (out / "config.json").write_text('{"settings": {}}')
        return ["eval", "--model", NO_MODEL, "--data", str(data), "--policy", "full", "--out", str(out)]
    assert place == "study resume"
    out.mkdir()
    (out / "study.json").write_text(text)
    return ["study", "--model", NO_MODEL, "--video", VIDEO, "--video", "synthetic:seed=2,frames=4", "--out", str(out)]


@settings(max_examples=80, **FUZZ)
@given(place=st.sampled_from(JSON_PLACES), text=HOSTILE_JSON)
def test_hostile_json_anywhere_is_a_clean_exit(place, text, capsys, tmp_path_factory):
    root = tmp_path_factory.mktemp("json")
    args = _json_case(place, text, root)
    code = main(args)
    err = capsys.readouterr().err
    assert_clean(code, err, [place, text[:40]])
    assert code == 2, f"{place}: hostile JSON accepted ({text[:60]!r}...)\n{err[-1000:]}"


def test_the_guarded_reader_names_the_file_and_the_reason(tmp_path):
    from hermes_policy.errors import HermesError
    from hermes_policy.jsonfile import MAX_DEPTH, read_json

    f = tmp_path / "x.json"
    for text, reason in [(nested(MAX_DEPTH + 1, "array"), "nested too deeply"), (nested(10**5, "object"), "nested"),
                         ("9" * 5000, "an integer with 5000 digits"), ('{"a": [' + "1" * 50 + "]}", "50 digits")]:
        f.write_text(text)
        with pytest.raises(HermesError, match=reason) as e:
            read_json(f, HermesError, "policy spec")
        assert str(f) in str(e.value)
    f.write_text(nested(MAX_DEPTH, "array"))
    assert read_json(f, HermesError, "policy spec") is not None  # the limit itself is accepted
    f.write_text("9" * 40)
    assert read_json(f, HermesError, "policy spec") == int("9" * 40)


# ----------------------------------------------------------------------------------- floats
FLOAT_OPTIONS = {
    "--fps": [["stream", "--model", TINY, "--video", VIDEO, "--max-new-tokens", "2"],
              ["study", "--model", NO_MODEL, "--video", VIDEO, "--out", "{out}"],
              ["eval", "--model", NO_MODEL, "--data", "{data}", "--policy", "full", "--out", "{out}"],
              ["data", "synth", "--frames", "4", "--videos", "1", "--out", "{out}"]],
    "--dist-timeout": [["eval", "--model", NO_MODEL, "--data", "{data}", "--policy", "full", "--out", "{out}"],
                       ["study", "--model", NO_MODEL, "--video", VIDEO, "--out", "{out}"],
                       ["bench", "--model", NO_MODEL, "--video", VIDEO, "--frames", "4"]],
    "--min-decay": [["derive", "--study", "{missing}", "--out", "{out}.json"], ["validate", "--family", "nope"]],
    "--min-concentration": [["derive", "--study", "{missing}", "--out", "{out}.json"],
                            ["validate", "--family", "nope"]],
    "--budget-ratio": [["eval", "--model", NO_MODEL, "--data", "{data}", "--policy", "hermes", "--out", "{out}"]],
    "--strength": [["validate", "--family", "nope"]],
    "--budget-weight": [["derive", "--study", "{missing}", "--out", "{out}.json"]],
    "--video": [["stream", "--model", TINY, "--max-new-tokens", "2"]],
}
for option in ("--gap-share", "--qa-lr", "--mc-share", "--hard-backward", "--match-share", "--caption-share"):
    FLOAT_OPTIONS[option] = [["train-embedded", "--backbone", "nope", "--run-dir", "{out}"]]
FLOATS = st.one_of(st.floats(), st.floats(min_value=-1e-300, max_value=1e-300), st.sampled_from([0.0, -0.0, 1.0]),
                   st.integers(-10**30, 10**30))


def _float_text(option: str, number) -> str:
    text = repr(number) if not isinstance(number, float) or number == number else "nan"
    if option == "--budget-weight":
        return f"long-term={text}"
    if option == "--video":
        return f"synthetic:seed=1,frames=4,fps={text}"
    return text


@settings(max_examples=100, **FUZZ)
@given(option=st.sampled_from(sorted(FLOAT_OPTIONS)), which=st.integers(0, 3), number=FLOATS)
def test_floats_across_their_whole_range_are_a_clean_exit(option, which, number, capsys, tmp_path_factory):
    root = tmp_path_factory.mktemp("float")
    data = root / "data.jsonl"
    write_dataset(synthesize(1, 1, 8), data)
    base = FLOAT_OPTIONS[option][which % len(FLOAT_OPTIONS[option])]
    base = [a.format(out=root / "out", data=data, missing=root / "missing") for a in base]
    args = base + [option, _float_text(option, number)]
    if option == "--video":
        args = base + ["--video", _float_text(option, number)]
    code = main(args)
    err = capsys.readouterr().err
    assert_clean(code, err, args)
    if code == 2 and base[0] != "data":
        assert not (root / "out").exists(), f"a refused command left its output: {args!r}"


def test_float_refusals_state_the_range(capsys):
    for args, words in [(["stream", "--fps", "1e-300"], "--fps must be a number in [0.001, 1000]"),
                        (["stream", "--fps", "nan"], "--fps must be a number in [0.001, 1000]"),
                        (["train-embedded", "--qa-lr", "0"], "--qa-lr must be a number in (0, 1]"),
                        (["derive", "--study", "x", "--min-concentration", "inf"], "in [0, 1]"),
                        (["stream", "--video", "synthetic:seed=1,frames=4,fps=1e-300"], "[0.001, 1000]")]:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert words in err and err.count("\n") == 1, err


def test_every_bounded_option_names_itself_and_every_float_option_is_bounded():
    """A bounded option's messages name it (the name is written twice: as the parameter and in its range), and
    no float option of any command is left unbounded."""
    import typer.main

    from hermes_lab.cli import app
    from hermes_policy.cli_options import Bounded

    def commands(cmd, path=()):
        if hasattr(cmd, "commands"):  # a group
            for name, sub in cmd.commands.items():
                yield from commands(sub, (*path, name))
        else:
            yield " ".join(path), cmd

    unbounded, seen = [], 0
    for name, cmd in commands(typer.main.get_command(app)):
        for param in cmd.params:
            described = param.type_descriptor
            parse = described.parameter_info.parser
            if isinstance(parse, Bounded):
                seen += 1
                assert parse.option in param.opts, f"{name}: {param.opts} reports itself as {parse.option}"
            elif float in (described.annotation, *getattr(described.annotation, "__args__", ())):
                unbounded.append(f"{name} {param.opts[0]}")
    assert not unbounded, f"float options without a range: {unbounded}"
    assert seen >= 15
