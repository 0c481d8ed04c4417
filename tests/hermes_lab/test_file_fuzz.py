"""File fuzz (hypothesis): mutated datasets, recordings and eval partial files either load or fail with the
project's error (a HermesError: one line on the command line), never anything else.

Mutations: a flipped bit, a cut at any byte, a byte replaced by an arbitrary one, and JSON values swapped for
values of the wrong type. Fixed seed and example budget.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.synthetic import hermes_like_recording
from hermes_policy.data import read_dataset, synthesize, write_dataset
from hermes_policy.errors import HermesError
from probes.recording import META_FILE, TENSORS_FILE, Recording, RecordingError

EXAMPLES = 60
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
WRONG_TYPES = st.sampled_from([None, True, -1, 0, 1e308, float("nan"), "", "x" * 300, [], {}, [1, "a"], {"a": 1}])


@st.composite
def mutated(draw, data: bytes) -> bytes:
    kind = draw(st.sampled_from(["flip", "cut", "byte"]))
    at = draw(st.integers(0, len(data) - 1))
    if kind == "cut":
        return data[:at]
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ (1 << draw(st.integers(0, 7)))]) + data[at + 1 :]
    return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]


def _retyped(draw, value):
    """``value`` with one leaf (or the whole) replaced by a value of another type."""
    if isinstance(value, dict) and value and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(value)))
        return {**value, key: _retyped(draw, value[key])}
    if isinstance(value, list) and value and draw(st.booleans()):
        i = draw(st.integers(0, len(value) - 1))
        return [*value[:i], _retyped(draw, value[i]), *value[i + 1 :]]
    return draw(WRONG_TYPES)


@functools.cache
def dataset_bytes() -> bytes:
    """A valid dataset (not a fixture: hypothesis would print the bytes of every argument it was given)."""
    with tempfile.TemporaryDirectory() as tmp:
        return write_dataset(synthesize(1, 2, 16), Path(tmp) / "dataset.jsonl").read_bytes()


@functools.cache
def recording_files() -> tuple[bytes, bytes]:
    with tempfile.TemporaryDirectory() as tmp:
        hermes_like_recording(num_layers=4).save(tmp)
        return (Path(tmp) / META_FILE).read_bytes(), (Path(tmp) / TENSORS_FILE).read_bytes()


def _loads_or_project_error(load) -> None:
    try:
        load()
    except HermesError:
        pass  # the one-line error the CLI prints


@FUZZ
@given(data=st.data())
def test_mutated_datasets(tmp_path, data):
    path = tmp_path / "dataset.jsonl"
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(mutated(dataset_bytes())))
    else:
        lines = dataset_bytes().decode().splitlines()
        i = data.draw(st.integers(0, len(lines) - 1))
        lines[i] = json.dumps(_retyped(data.draw, json.loads(lines[i])))
        path.write_text("\n".join(lines) + "\n")
    _loads_or_project_error(lambda: read_dataset(path))


@FUZZ
@given(data=st.data())
def test_mutated_recordings(tmp_path, data):
    meta, tensors = recording_files()
    folder = tmp_path / "rec"
    folder.mkdir(exist_ok=True)
    which = data.draw(st.sampled_from(["meta", "tensors", "retyped"]))
    if which == "meta":
        meta = data.draw(mutated(meta))
    elif which == "tensors":
        tensors = data.draw(mutated(tensors))
    else:
        meta = json.dumps(_retyped(data.draw, json.loads(meta))).encode()
    (folder / META_FILE).write_bytes(meta)
    (folder / TENSORS_FILE).write_bytes(tensors)

    def load():
        rec = Recording.load(folder)
        assert rec.num_layers > 0 and rec.num_heads > 0  # what every reader asks first

    try:
        load()
    except (HermesError, RecordingError):
        pass


@pytest.mark.parametrize("key,value", [("num_heads", None), ("num_layers", "4"), ("queries", "local"),
                                       ("tokens_per_frame", True), ("num_layers", 0)])
def test_what_the_fuzz_found_recording_metadata_of_the_wrong_type(tmp_path, key, value):
    """Found by test_mutated_recordings (a TypeError from int(None)); kept as a plain regression test."""
    meta, tensors = recording_files()
    doc = json.loads(meta)
    doc[key] = value
    (tmp_path / META_FILE).write_text(json.dumps(doc))
    (tmp_path / TENSORS_FILE).write_bytes(tensors)
    with pytest.raises(RecordingError, match=key):
        Recording.load(tmp_path)


@functools.cache
def spec_bytes() -> bytes:
    from hermes_policy.policies.hermes import fixed_layers

    spec = {"format": "hermes-lab/policy-spec", "version": 1, "policy": "hermes",
            "params": {"budget": 64, "gamma": {"sensory": 0.1, "working": 0.3, "long-term": 0.4}},
            "layers": fixed_layers(6), "source": {"method": "manual"}}
    return json.dumps(spec, indent=2).encode()


@FUZZ
@given(data=st.data())
def test_mutated_specs(tmp_path, data):
    from hermes_policy.policies import PolicySpec

    path = tmp_path / "spec.json"
    if data.draw(st.booleans()):
        path.write_bytes(data.draw(mutated(spec_bytes())))
    else:
        path.write_text(json.dumps(_retyped(data.draw, json.loads(spec_bytes()))))
    _loads_or_project_error(lambda: PolicySpec.load(path).build())


@functools.cache
def partial_bytes() -> tuple[bytes, dict, list]:
    """An eval folder's partial file after two finished units, with the settings and units of its config."""
    import pyarrow.parquet as pq

    from hermes_lab.cli import main
    from hermes_policy.eval.results import EvalRow
    from hermes_policy.eval.sweep import PARTIAL_FILE, EvalDir

    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "d", Path(tmp) / "out"
        main(["data", "synth", "--seed", "1", "--videos", "2", "--frames", "8", "--out", str(data)])
        main(["eval", "--model", "tiny-embedded", "--data", str(data), "--policy", "full", "--out", str(out),
              "--json"])
        config = json.loads((out / "config.json").read_text())
        rows = [EvalRow.from_dict(r) for r in pq.read_table(out / "rows.parquet").to_pylist()]
        partial = Path(tmp) / "partial"
        partial.mkdir()
        (partial / "config.json").write_text(json.dumps(config))
        outdir = EvalDir(partial)
        units = sorted({(r.run, r.video_index) for r in rows})
        for run, video in units:
            outdir.append(run, video, [r for r in rows if (r.run, r.video_index) == (run, video)])
        return (partial / PARTIAL_FILE).read_bytes(), config, units


@FUZZ
@given(data=st.data())
def test_mutated_partial_files(tmp_path, data, capsys):
    from hermes_policy.eval.sweep import PARTIAL_FILE, EvalDir

    content, config, units = partial_bytes()
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / PARTIAL_FILE).write_bytes(data.draw(mutated(content)))
    try:
        done = EvalDir(tmp_path).resume(config["settings"], units)
    except HermesError:
        return
    assert set(done) <= set(units), "a damaged line was read as a unit that was never planned"


@functools.cache
def results_files() -> tuple[bytes, bytes]:
    """What hermes-lab figures --eval / --bench read: an eval results.json and a bench rows.parquet."""
    import pandas as pd
    from planted_results import eval_dir

    with tempfile.TemporaryDirectory() as tmp:
        results = (eval_dir(Path(tmp) / "eval", "m", 1) / "results.json").read_bytes()
        rows = [{"model": "m", "policy": p, "frames": n, "budget": 8, "ttft_ms": 1.0, "kv_bytes": n,
                 "ingest_ms_per_frame": 2.0} for p in ("full", "hermes") for n in (8, 32)]
        pd.DataFrame(rows).to_parquet(Path(tmp) / "rows.parquet")
        return results, (Path(tmp) / "rows.parquet").read_bytes()


@FUZZ
@given(data=st.data())
def test_mutated_results_for_figures(tmp_path, data):
    from analysis.results_figures import write_result_figures

    results, rows = results_files()
    (tmp_path / "eval").mkdir(exist_ok=True)
    (tmp_path / "bench").mkdir(exist_ok=True)
    if data.draw(st.booleans()):
        results = data.draw(mutated(results)) if data.draw(st.booleans()) else \
            json.dumps(_retyped(data.draw, json.loads(results))).encode()
    else:
        rows = data.draw(mutated(rows))
    (tmp_path / "eval" / "results.json").write_bytes(results)
    (tmp_path / "bench" / "rows.parquet").write_bytes(rows)
    _loads_or_project_error(lambda: write_result_figures(tmp_path / "out", [tmp_path / "eval"],
                                                         [tmp_path / "bench"], "html"))
