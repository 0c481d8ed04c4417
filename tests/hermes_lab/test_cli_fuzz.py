"""CLI fuzz (hypothesis): every subcommand, one option at a time given a hostile value.

Values: numbers that are zero, negative, NaN, infinite or huge; strings that are empty, not UTF-8, very long
or path-like; paths that are missing, a directory, an empty file, random bytes, a truncated mp4 or
safetensors file, or JSON of the wrong shape. The model is one that does not exist, so no model ever
loads: everything checked before the model load is exercised, and the command then stops at the
"unknown model" line at the latest.

Whatever the input: the exit code is 0 or 2 (never 1), stderr has no traceback, and an ``--out`` that a
refused command was given is not left half-written (absent, as it was).
"""

from __future__ import annotations

import functools
import json
import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.synthetic import hermes_like_recording
from hermes_lab.cli import main
from hermes_policy.data import synthesize, write_dataset
from hermes_policy.video import SyntheticVideo, write_mp4

EXAMPLES = 100
NO_MODEL = "no-such-model"
NUMBERS = ["0", "-1", "-5", "nan", "inf", "-inf", "1e30", "99999999999999", "1.5", "abc", ""]
STRINGS = ["", " ", "\udcff\udcfe", "x" * 5000, "../../etc/passwd", "synthetic:", "synthetic:seed=1",
           "synthetic:seed=-1,frames=4", "a,b,,c", "0x0", "9999999x2", "planted:", "planted:1,family=gpt,strength=nan",
           "planted:99999999999999999999,strength=1e30"]


@functools.cache
def files() -> dict[str, str]:
    """Hostile files, made once (hypothesis prints every argument; paths are short)."""
    root = Path(tempfile.mkdtemp(prefix="hermes-cli-fuzz-"))
    (root / "dir").mkdir()
    (root / "empty").write_bytes(b"")
    (root / "random").write_bytes(os.urandom(2048))
    clip = write_mp4(SyntheticVideo(seed=1, frames=20, width=64, height=64), root / "clip.mp4").read_bytes()
    (root / "half.mp4").write_bytes(clip[: len(clip) // 2])
    hermes_like_recording(num_layers=4).save(root / "rec_ok")
    rec = root / "rec"
    hermes_like_recording(num_layers=4).save(rec)
    tensors = (rec / "recording.safetensors").read_bytes()
    (rec / "recording.safetensors").write_bytes(tensors[: len(tensors) // 3])  # truncated
    (root / "list.json").write_text("[1, 2, 3]")
    (root / "spec.json").write_text(json.dumps({"policy": 5, "params": []}))
    data = root / "data"
    data.mkdir()
    write_dataset(synthesize(1, 1, 8), data / "dataset.jsonl")
    return {"missing": str(root / "missing"), "dir": str(root / "dir"), "empty": str(root / "empty"),
            "random": str(root / "random"), "half.mp4": str(root / "half.mp4"), "rec": str(rec),
            "rec_ok": str(root / "rec_ok"),
            "list.json": str(root / "list.json"), "spec.json": str(root / "spec.json"), "data": str(data)}


PATHS = ["missing", "dir", "empty", "random", "half.mp4", "rec", "list.json", "spec.json"]


def commands(out: str) -> dict[str, tuple[list[str], dict[str, str]]]:
    """command -> (valid arguments, option -> kind of value it takes)."""
    f = files()
    video = "synthetic:seed=1,frames=4"
    return {
        "stream": (["stream", "--model", NO_MODEL, "--video", video],
                   {"--budget": "number", "--fps": "number", "--chunk-frames": "number", "--max-new-tokens": "number",
                    "--ask": "string", "--video": "path", "--spec": "path", "--reindex": "string",
                    "--dtype": "string", "--policy": "string", "--model": "string", "--granularity": "string"}),
        "bench": (["bench", "--model", NO_MODEL, "--video", video, "--frames", "4", "--out", out],
                  {"--frames": "string", "--budget": "number", "--chunk-frames": "number", "--frame-size": "string",
                   "--ttft-repeats": "number", "--video": "path", "--spec": "path", "--policies": "string",
                   "--granularity": "string"}),
        "study": (["study", "--model", NO_MODEL, "--video", video, "--out", out],
                  {"--fps": "number", "--frame-size": "string", "--chunk-frames": "number", "--raw-steps": "number",
                   "--queries": "string", "--video": "path", "--videos": "path"}),
        "eval": (["eval", "--model", NO_MODEL, "--data", f["data"], "--policy", "full", "--out", out],
                 {"--data": "path", "--budget": "string", "--budget-ratio": "string", "--chunk-frames": "number",
                  "--fps": "number", "--limit": "number", "--policy": "string", "--compare-to": "string",
                  "--spec": "path", "--granularity": "string"}),
        "derive": (["derive", "--study", f["rec_ok"], "--out", out + ".json"],
                   {"--study": "path", "--budget": "number", "--method": "string", "--query": "string",
                    "--min-decay": "number", "--min-concentration": "number", "--causal": "path",
                    "--effect": "string"}),
        "figures": (["figures", "--study", f["rec_ok"], "--out", out, "--format", "png"],
                    {"--study": "path", "--eval": "path", "--bench": "path", "--format": "string"}),
        "data synth": (["data", "synth", "--frames", "8", "--videos", "1", "--out", out],
                       {"--frames": "number", "--videos": "number", "--fps": "number", "--size": "string",
                        "--per-category": "number", "--seed": "number"}),
        # "#2": the positional annotation file
        "data convert": (["data", "convert", f["data"] + "/dataset.jsonl", "--out", out],
                         {"#2": "path", "--format": "string", "--video-root": "path"}),
        # valid values run one small planted model (about a second)
        "validate": (["validate", "--family", "embedded", "--configs", "1", "--frames", "8", "--out", out],
                     {"--family": "string", "--configs": "number", "--seed": "number", "--frames": "string",
                      "--strength": "string", "--chunk": "number", "--format": "string", "--min-decay": "number",
                      "--min-concentration": "number"}),
        # the causal map (a valid call stops at the missing model, before any work)
        "causal": (["causal", "--model", NO_MODEL, "--data", f["data"], "--out", out],
                   {"--data": "path", "--limit": "number", "--bins": "number", "--layers": "string",
                    "--mode": "string", "--scoring": "string", "--chunk-frames": "number", "--study": "path",
                    "--anchor-heads": "number", "--naive-check": "number", "--format": "string",
                    "--min-drop": "number", "--min-direct": "number"}),
        # only hostile folders: a valid one would start the Streamlit server
        "dashboard": (["dashboard", "--model", NO_MODEL, "--eval", f["dir"]],
                      {"--eval": "path", "--bench": "path", "--device-map": "string", "--max-memory": "string"}),
    }


@st.composite
def invocation(draw) -> tuple[str, list[str], str]:
    out = str(Path(tempfile.mkdtemp(prefix="hermes-cli-fuzz-out-")) / "out")
    name = draw(st.sampled_from(sorted(commands(out))))
    base, options = commands(out)[name]
    option = draw(st.sampled_from(sorted(options)))
    kind = options[option]
    value = draw(st.sampled_from(NUMBERS if kind == "number" else STRINGS if kind == "string" else PATHS))
    value = files().get(value, value) if kind == "path" else value
    if option.startswith("#"):  # a positional argument
        i = int(option[1:])
        args = [*base[:i], value, *base[i + 1 :]]
    elif option in base:  # replace the valid value
        i = base.index(option)
        args = [*base[: i + 1], value, *base[i + 2 :]]
    else:
        args = [*base, option, value]
    return name, args, out


@settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=invocation())
def test_any_hostile_value_is_a_clean_exit(capsys, case):
    name, args, out = case
    code = main(args)
    _, err = capsys.readouterr()
    if os.environ.get("HERMES_FUZZ_LOG"):  # which cases ran, for the note
        with open(os.environ["HERMES_FUZZ_LOG"], "a") as log:
            log.write(f"{code}\t{name}\t{args[-2] if args[-2].startswith('--') else ''}\t{err.strip()[:100]!r}\n")
    assert code in (0, 2), f"{name}: exit {code} for {args!r}\n{err[-2000:]}"
    assert "Traceback" not in err, f"{name}: traceback for {args!r}\n{err[-2000:]}"
    if code == 2 and name not in ("derive", "figures", "data synth", "data convert"):  # may write, then fail
        assert not Path(out).exists(), f"{name}: a refused command left {out} behind"
