"""summary.json and the per-layer table: what the study concludes, from planted recordings and a real run."""

from __future__ import annotations

import json

from analysis.derive import derive_tiers
from analysis.summary import METRICS, format_summary, study_summary, write_study_report
from analysis.synthetic import hermes_like_recording
from hermes_lab.cli import main
from probes.recording import Recording


def test_a_hermes_like_recording_follows_the_picture():
    rec = hermes_like_recording(num_layers=10)
    summary = study_summary(rec, derive_tiers(rec))
    assert summary["follows_hermes"] and all(summary["checks"].values())
    layers = summary["layers"]
    assert [layer["layer"] for layer in layers] == list(range(10))
    assert layers[0]["tier"] == "sensory" and layers[-1]["tier"] == "long-term"
    assert layers[0]["newest10"] > layers[-1]["newest10"], "shallow layers favour the newest frames"
    assert layers[-1]["concentration"] > layers[0]["concentration"], "deep layers concentrate on anchors"
    assert len(layers[0]["heads"]) == rec.num_heads and set(METRICS) <= set(layers[0]["heads"][0])
    json.dumps(summary, allow_nan=False)  # strict JSON: missing values are null, never NaN
    text = format_summary(summary)
    assert text.count("\n") == 10 + 3 and "the layers follow HERMES" in text


def test_a_flat_recording_does_not():
    rec = hermes_like_recording(num_layers=6)
    flat = study_summary(rec, derive_tiers(rec, "hermes-fixed"))
    assert flat["method"] == "hermes-fixed" and flat["tiers"]["sensory"] == [0, 0]


def test_study_writes_summary_and_figures(tmp_path, capsys):
    out = tmp_path / "study"
    code = main(["study", "--model", "tiny-qwen2-vl", "--video", "synthetic:seed=5,frames=8,size=64x64",
                 "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0 and "tier" in stdout and "HERMES's shallow-recency" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_layers"] == len(summary["layers"]) == 4
    assert {p.name for p in (out / "figures").iterdir()} >= {"age_heatmap.pdf", "recency_depth.html"}
    again = write_study_report(Recording.load(out), tmp_path / "again", figures=False)
    assert "layer" in again and not (tmp_path / "again" / "figures").exists()
