"""No command overwrites without --overwrite, and the refusal comes before any work."""

from __future__ import annotations

import json

from analysis.synthetic import hermes_like_recording
from hermes_lab.cli import main


def _one_line_refusal(capsys, code: int) -> str:
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--overwrite" in err, err
    return err


def test_data_synth_and_convert(tmp_path, capsys):
    out = tmp_path / "d"
    assert main(["data", "synth", "--seed", "1", "--videos", "1", "--frames", "8", "--out", str(out)]) == 0
    before = (out / "dataset.jsonl").read_bytes()
    _one_line_refusal(capsys, main(["data", "synth", "--seed", "2", "--videos", "1", "--frames", "8",
                                    "--out", str(out)]))
    assert (out / "dataset.jsonl").read_bytes() == before
    assert main(["data", "synth", "--seed", "2", "--videos", "1", "--frames", "8", "--out", str(out),
                 "--overwrite"]) == 0
    assert (out / "dataset.jsonl").read_bytes() != before
    capsys.readouterr()
    _one_line_refusal(capsys, main(["data", "convert", str(out / "dataset.jsonl"), "--out", str(out)]))


def test_derive_and_figures(tmp_path, capsys):
    study = tmp_path / "study"
    hermes_like_recording(num_layers=6).save(study)
    spec = tmp_path / "p.json"
    assert main(["derive", "--study", str(study), "--out", str(spec), "--budget", "64"]) == 0
    before = spec.read_text()
    capsys.readouterr()
    _one_line_refusal(capsys, main(["derive", "--study", str(study), "--out", str(spec), "--method", "hermes-fixed"]))
    assert spec.read_text() == before
    assert main(["derive", "--study", str(study), "--out", str(spec), "--method", "hermes-fixed", "--overwrite"]) == 0
    assert json.loads(spec.read_text())["source"]["method"] == "hermes-fixed"
    figs = tmp_path / "figs"
    assert main(["figures", "--study", str(study), "--out", str(figs), "--format", "png"]) == 0
    capsys.readouterr()
    _one_line_refusal(capsys, main(["figures", "--study", str(study), "--out", str(figs), "--format", "png"]))
    assert main(["figures", "--study", str(study), "--out", str(figs), "--format", "png", "--overwrite"]) == 0
