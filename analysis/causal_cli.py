"""``hermes-lab causal``: the causal memory map of a model over a dataset's streams (registered by
:func:`analysis.cli.register`), and the pieces ``derive --causal`` and ``validate --causal`` call."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from analysis.errors import StudyError
from hermes_policy.cli_options import AllowPickleOption, OverwriteOption, bounded
from hermes_policy.outputs import check_output, hold_output_lock, output_folder

MinDropOption = Annotated[float, bounded(
    "--min-drop", "causal tiers: a layer group has a role only when removing its rows costs the correct option at "
    "least this many nats on average; in", 0, 100)]
MinDirectOption = Annotated[float, bounded(
    "--min-direct", "causal tiers by --effect direct: a head has a role only when its mean direct effect is at "
    "least this; in", 0, 1)]


def _summary_lines(cmap, thresholds) -> list[str]:
    from analysis.causal_stats import EFFECTS, causal_tiers

    out = []
    for effect in EFFECTS:
        try:
            out.append(f"tiers by {effect} effect: {causal_tiers(cmap, effect, thresholds).summary()}")
        except StudyError as e:
            out.append(f"tiers by {effect} effect: none ({e})")
    cost = cmap.meta["cost"]
    out.append(f"cost: {cost['forwards']} forwards for what {cost['naive_forwards']} naive asks would take "
               f"({cost['forward_ratio']:.1f}x fewer; {cost['row_layer_ratio']:.1f}x fewer layer-rows)")
    check = cost["naive_check"]
    if check["questions"]:
        out.append(f"naive check on {check['questions']} question(s), {check['knockouts']} knockouts: "
                   f"{check['naive_seconds']:.1f}s naive vs {check['packed_seconds']:.1f}s packed "
                   f"({check['time_ratio']:.1f}x); largest score difference {check['max_abs_diff']:.2e}")
    return out


def register(app: typer.Typer) -> None:
    """Add ``causal`` to the ``hermes-lab`` app."""

    @app.command()
    def causal(
        data: Annotated[Path, typer.Option(help="dataset .jsonl or a folder holding dataset.jsonl (`data synth`)")],
        out: Annotated[Path, typer.Option(help="folder for causal.json, effects/heads parquet and figures/")],
        model: Annotated[str, typer.Option(help="embedded, tiny-*, planted:..., or a HF id/path")] = "embedded",
        limit: Annotated[int | None, typer.Option(help="map only the first K streams")] = None,
        bins: Annotated[int, typer.Option(help="frame-age bins over normalised age (0 = the newest)")] = 8,
        layers: Annotated[str, typer.Option(help="layer groups: each | G (contiguous groups) | ranges 0-1,2-5")] =
        "each",
        positions: Annotated[bool, typer.Option(help="also knock out each in-frame position at every group")] = True,
        mode: Annotated[str, typer.Option(help="knockout (remove the rows) | patch (the next stream's same rows)")] =
        "knockout",
        scoring: Annotated[str, typer.Option(help="auto (the model's) | cloze | letter")] = "auto",
        chunk_frames: Annotated[int, typer.Option(help="frames per ingest forward")] = 4,
        study: Annotated[Path | None, typer.Option(
            help="a study of the same model: its anchor heads are knocked out one by one (with a control "
                 "position), and its measured tiers split the attention-vs-causal scatter")] = None,
        anchor_heads: Annotated[int, bounded("--anchor-heads", "at most this many of the study's anchor heads, "
                                             "the most concentrated first; in", 0, 64, kind=int)] = 16,
        naive_check: Annotated[int, typer.Option(
            help="also score the first N questions naively (evict, ask, restore per knockout): checks the "
                 "packed scores and times both")] = 0,
        answer: Annotated[bool, typer.Option(help="answer-level knockouts; --no-answer keeps one clean pass per "
                                                  "question (direct effects and attention only)")] = True,
        figures: Annotated[bool, typer.Option(help="draw the figures into OUT/figures")] = True,
        fmt: Annotated[str, typer.Option("--format", help="figure formats: pdf,png,svg,html")] = "pdf,png,svg,html",
        min_drop: MinDropOption = 0.01,
        min_direct: MinDirectOption = 0.0,
        device: Annotated[str, typer.Option(help="torch device")] = "cpu",
        allow_pickle_weights: AllowPickleOption = False,
        as_json: Annotated[bool, typer.Option("--json", help="print causal.json's summary as JSON")] = False,
        overwrite: OverwriteOption = False,
    ) -> None:
        """Causal memory map: for each question, layer group and frame-age bin (and in-frame position), remove
        (or patch in from another stream) those KV rows and measure the answer's change, with 95% bootstrap
        intervals over streams; plus direct effects per head, attention-vs-causal correlation and tiers."""
        from analysis.causal import CausalConfig, map_streams
        from analysis.causal import anchor_heads as study_anchors
        from analysis.causal_figures import write_causal_figures
        from analysis.causal_stats import CausalMap, CausalThresholds
        from analysis.derive import hermes_fixed_tiers, measured_tiers
        from analysis.figures import parse_formats
        from analysis.recordings import load_study
        from hermes_policy.data.dataset import DatasetError
        from hermes_policy.data.loaders import load_annotations
        from hermes_policy.models import load_model
        from hermes_policy.models.placement import placement_from_options

        thresholds = CausalThresholds(min_drop=min_drop, min_direct=min_direct)
        formats = parse_formats(fmt) if figures else ()
        rec = load_study(study) if study is not None else None
        heads = study_anchors(rec, limit=anchor_heads) if rec is not None and anchor_heads else ()
        config = CausalConfig(bins=bins, layers=layers, positions=positions, mode=mode, scoring=scoring,
                              chunk_frames=chunk_frames, anchor_heads=heads, naive_check=naive_check, answer=answer)
        if limit is not None and limit < 1:
            raise DatasetError(f"--limit must be >= 1, got {limit}")
        placement = placement_from_options(device, None, None, None)
        check_output(out, overwrite, StudyError)
        hold_output_lock(out, StudyError)
        items = load_annotations(data)[:limit]
        adapter = load_model(model, placement=placement, allow_pickle=allow_pickle_weights)
        if rec is not None and rec.num_layers != adapter.num_layers:
            raise StudyError(f"the study has {rec.num_layers} layers, {model} {adapter.num_layers}: record the study "
                             "on the same model")
        tiers = measured_tiers(rec) if rec is not None else hermes_fixed_tiers(adapter.num_layers)
        run = map_streams(adapter, items, config, progress=sys.stderr.isatty() or not as_json, model=model)
        cmap = CausalMap.from_run(run)
        cmap.meta["scatter_tiers"] = {"method": tiers.method, "layers": list(tiers.layers),
                                      "study": str(study) if study is not None else None}
        with output_folder(out, StudyError, "causal") as staging:
            written = cmap.save(staging, thresholds)
            if figures:
                written += write_causal_figures(cmap, staging / "figures", tiers, formats)
        if as_json:
            typer.echo(json.dumps(json.loads((out / "causal.json").read_text())["summary"]))
            return
        typer.echo(f"mapped {run.meta['questions']} questions of {len(run.meta['streams'])} streams "
                   f"({len(run.effects)} knockouts) in {run.meta['seconds']:.1f}s -> {out}")
        for line in _summary_lines(cmap, thresholds):
            typer.echo(line)


def derive_causal(causal: Path, effect: str, min_decay: float, min_concentration: float, min_drop: float,
                  min_direct: float, budget: int | None, budget_weights):
    """``derive --causal DIR``: the spec whose tiers come from a causal map."""
    from analysis.causal_stats import CausalMap, CausalThresholds, causal_spec

    thresholds = CausalThresholds(min_decay, min_concentration, min_drop, min_direct)
    return causal_spec(CausalMap.load(causal), effect, thresholds, budget, budget_weights)


def validate_causal(base, out: Path | None, as_json: bool, progress: bool) -> str:
    """``validate --causal``: attention-based and causal calibration side by side; returns what to print."""
    from analysis.causal_validate import format_report, report, run_causal_validation, write_causal_validation

    result = run_causal_validation(base, progress=progress)
    if out is not None:
        with output_folder(out, StudyError, "validate --causal") as staging:
            written = write_causal_validation(staging, result)
        print(f"wrote {len(written)} files to {out}", file=sys.stderr)
    doc = report(result)
    return json.dumps(doc) if as_json else format_report(doc)


__all__ = ["MinDirectOption", "MinDropOption", "derive_causal", "register", "validate_causal"]
