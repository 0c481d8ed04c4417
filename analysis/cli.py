"""``hermes-lab derive``, ``figures`` and ``validate``: recordings in, a policy spec or paper figures out,
and the instrument's calibration on planted models.

Both read a study directory written by :meth:`probes.recording.Recording.save`.
Every mistake a user can make (no recording there, a corrupt one, an unknown
method, query kind or format) raises :class:`analysis.errors.StudyError`, which
the top-level CLI prints as one line.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from analysis.causal_cli import MinDirectOption, MinDropOption
from analysis.errors import StudyError
from analysis.recordings import load_study
from hermes_policy.cli_options import OverwriteOption, bounded
from hermes_policy.outputs import check_output, hold_output_lock, output_folder


def parse_budget_weights(items: list[str] | None) -> dict[str, float] | None:
    """``["long-term=2", ...]`` -> {"long-term": 2.0}."""
    from analysis.derive import TIERS

    if not items:
        return None
    out: dict[str, float] = {}
    for item in items:
        tier, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or tier not in TIERS or not weight >= 0:
            raise StudyError(f"--budget-weight takes TIER=WEIGHT with TIER one of {', '.join(TIERS)}, got {item!r}")
        out[tier] = weight
    return out


def _query(value: str | None) -> list[str] | None:
    return None if not value else [q.strip() for q in value.split(",") if q.strip()]


#: the role thresholds' defaults, as options show them (kept in step with analysis.derive, without importing torch)
ROLE_DEFAULTS = (1.0, 0.2)
MinDecayOption = Annotated[float, bounded(
    "--min-decay",
    "tiers by role: a head has recency when its fitted decay k (e-folds over the stream) is at least this; in",
    0, 1000)]
MinConcentrationOption = Annotated[float, bounded(
    "--min-concentration",
    "tiers by role: a head has anchors when its in-frame position concentration is at least this; in", 0, 1)]


def register(app: typer.Typer) -> None:
    """Add this package's subcommands to the ``hermes-lab`` app."""
    from analysis import causal_cli

    causal_cli.register(app)  # ``causal``: the causal memory map

    @app.command()
    def derive(
        study: Annotated[Path | None, typer.Option(help="directory holding a probe recording")] = None,
        out: Annotated[Path, typer.Option(help="where to write the policy spec (JSON)")] = Path("policy.json"),
        method: Annotated[str, typer.Option(
            help="measured (tiers by measured head roles) | changepoint (depth-ordered segments) | hermes-fixed")] =
        "measured",
        query: Annotated[str | None, typer.Option(help="query kind(s) to use, comma-separated (default: all)")] =
        None,
        budget: Annotated[int | None, typer.Option(
            help="video tokens kept per layer (mean); needed to run the spec with `stream --spec`")] = None,
        budget_weight: Annotated[list[str] | None, typer.Option(
            help="TIER=WEIGHT, repeatable: relative per-layer budget of a tier (default: equal)")] = None,
        min_decay: MinDecayOption = ROLE_DEFAULTS[0],
        min_concentration: MinConcentrationOption = ROLE_DEFAULTS[1],
        causal: Annotated[Path | None, typer.Option(
            help="a `hermes-lab causal --out` folder: tiers from the causal map instead of a study's attention")] =
        None,
        effect: Annotated[str, typer.Option(help="with --causal: answer (layer groups by the answer's change) | "
                                                 "direct (heads by their output's change)")] = "answer",
        min_drop: MinDropOption = 0.01,
        min_direct: MinDirectOption = 0.0,
        overwrite: OverwriteOption = False,
    ) -> None:
        """Derive a HERMES memory policy (tiers, scores, budgets) from a recorded study, or from a causal map
        (--causal)."""
        from analysis.derive import RoleThresholds, format_ranges, layer_list
        from analysis.derive import derive as derive_spec

        thresholds = RoleThresholds(min_decay, min_concentration)
        if (study is None) == (causal is None):
            raise StudyError("derive takes --study DIR (attention) or --causal DIR (a causal map), one of the two")
        if causal is not None and (method != "measured" or query is not None):
            raise StudyError("--method and --query choose among a study's attention; a causal map has its own "
                             "tiers (choose them with --effect)")

        check_output(out, overwrite, StudyError, kind="file")
        hold_output_lock(out, StudyError)
        if causal is not None:
            from analysis.causal_cli import derive_causal

            spec = derive_causal(causal, effect, min_decay, min_concentration, min_drop, min_direct, budget,
                                 parse_budget_weights(budget_weight))
        else:
            rec = load_study(study)
            spec = derive_spec(rec, method, _query(query), parse_budget_weights(budget_weight),  # type: ignore[arg-type]
                               budget, thresholds)
        out.parent.mkdir(parents=True, exist_ok=True)
        spec.save(out)
        ranges = format_ranges(spec.source["tiers"])
        how = f"causal, {effect} effect" if causal is not None else method
        typer.echo(f"{spec.source.get('model')} ({how}, {len(spec.layers or [])} layers): {ranges} -> {out}")
        if budget is None:
            print("note: the spec has no budget; pass --budget N to run it with `stream --spec`", file=sys.stderr)
        if spec.source.get("out_of_order_layers"):
            print("note: out of depth order (sensory, working, long-term from shallow to deep), their tiers "
                  f"following their measured roles: {layer_list(spec.source['out_of_order_layers'])}", file=sys.stderr)
        if spec.source.get("no_role_layers"):
            print("note: neither recency nor anchors (given the working tier): "
                  f"{layer_list(spec.source['no_role_layers'])}", file=sys.stderr)
        failed = [name for name, ok in spec.source.get("checks", {}).items() if not ok]
        if failed:
            # not an error: a model may genuinely differ from HERMES's picture, but the user should look
            print(f"note: these tiers contradict HERMES's picture ({', '.join(failed)}: false); "
                  "check the recency_depth figure", file=sys.stderr)

    @app.command()
    def figures(
        study: Annotated[Path | None, typer.Option(help="directory holding a probe recording")] = None,
        eval_dirs: Annotated[list[Path] | None, typer.Option(
            "--eval", help="an eval --out folder; repeat to compare several (e.g. two models) in one figure")] = None,
        bench_dirs: Annotated[list[Path] | None, typer.Option(
            "--bench", help="a bench --out folder; repeat for several")] = None,
        out: Annotated[Path, typer.Option(help="directory for the figures and their data")] = Path("figures"),
        overwrite: OverwriteOption = False,
        fmt: Annotated[str, typer.Option("--format", help="comma-separated: pdf,png,svg,html")] =
        "pdf,png,svg,html",
        method: Annotated[str, typer.Option(help="tiers to show: measured | changepoint | hermes-fixed")] =
        "measured",
        query: Annotated[str | None, typer.Option(help="query kind(s) to use, comma-separated (default: all)")] =
        None,
        mixed_protocols: Annotated[bool, typer.Option(
            "--mixed-protocols", help="draw --eval folders whose streaming protocols (protocol.json) differ on one "
                                      "plot; without it they are refused, naming what differs")] = False,
    ) -> None:
        """Write paper figures (and their tidy data as parquet + csv): of a recorded study (--study), of
        evaluations (--eval: accuracy and fidelity against memory, with 95% intervals) and of benchmarks
        (--bench: TTFT, KV and ingest against stream length)."""
        from analysis.derive import derive_tiers, measured_tiers
        from analysis.figures import parse_formats, write_figures
        from analysis.results_figures import write_result_figures
        from hermes_policy.eval.protocol import check_comparable

        formats = parse_formats(fmt)  # fail on a bad format before any work
        check_comparable(eval_dirs or (), allow_mixed=mixed_protocols)  # runs of other protocols: before any output
        check_output(out, overwrite, StudyError)
        hold_output_lock(out, StudyError)
        if study is None:
            if not eval_dirs and not bench_dirs:
                raise StudyError("figures needs --study DIR, --eval DIR or --bench DIR")
            with output_folder(out, StudyError, "figures") as staging:  # all the figures, or none (and no stale ones)
                paths = [out / p.relative_to(staging) for p in
                         write_result_figures(staging, eval_dirs or (), bench_dirs or (), formats)]
            figs = sorted({p.stem for p in paths})
            typer.echo(f"wrote {len(paths)} files for {len(figs)} figures ({', '.join(figs)}) to {out}")
            return
        if eval_dirs or bench_dirs:
            raise StudyError("draw a study and results in separate runs: --study, or --eval/--bench")
        if method not in ("measured", "changepoint", "hermes-fixed"):
            raise StudyError(f"unknown --method {method!r}; use 'measured', 'changepoint' or 'hermes-fixed'")
        rec = load_study(study)
        queries = _query(query)
        tiers = measured_tiers(rec, queries) if method == "measured" else derive_tiers(rec, method, queries)
        with output_folder(out, StudyError, "figures") as staging:
            paths = [out / p.relative_to(staging) for p in
                     write_figures(rec, staging, formats, tiers=tiers, query=queries)]
        figs = sorted({p.stem for p in paths})
        typer.echo(f"wrote {len(paths)} files for {len(figs)} figures ({', '.join(figs)}) to {out}")

    @app.command()
    def validate(
        family: Annotated[str, typer.Option(
            help="planted families, a comma list: embedded | qwen2-vl | qwen2.5-vl | llava-ov | qwen3-vl | qwen3.5 | "
                 "internvl | smolvlm | all")] = "all",
        configs: Annotated[int, typer.Option(help="random planted configurations per family")] = 5,
        seed: Annotated[int, typer.Option(
            help="seed of the first configuration (configuration i uses SEED+i); the README's numbers use 1000")] = 0,
        frames: Annotated[str, typer.Option(
            help="frames per study video; a comma list sweeps it (the first is the main run)")] = "64",
        strength: Annotated[str, typer.Option(
            help="planted signal strength (1 = the generator's ranges); a comma list sweeps it")] = "1",
        chunk: Annotated[int, typer.Option(help="frames per study step")] = 4,
        min_decay: MinDecayOption = ROLE_DEFAULTS[0],
        min_concentration: MinConcentrationOption = ROLE_DEFAULTS[1],
        out: Annotated[Path | None, typer.Option(
            help="folder for rows/heads/layers parquet, validation.json and figures/")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="print the scores as JSON instead of a table")] = False,
        fmt: Annotated[str, typer.Option("--format", help="figure formats: pdf,png,svg,html")] = "pdf,png,svg,html",
        causal: Annotated[bool, typer.Option(
            "--causal", help="also map each planted model causally (`hermes-lab causal`, direct effects) and score "
                             "both instruments side by side")] = False,
        overwrite: OverwriteOption = False,
    ) -> None:
        """Calibrate the study: run study -> derive on planted models with known memory tiers and score
        how much of the truth comes back (layer tiers, head roles, anchor AUROC, recency Spearman),
        against HERMES's fixed 10% / 70% split; with --causal, the causal map's scores beside them."""
        import json

        from analysis.derive import RoleThresholds
        from analysis.figures import parse_formats
        from analysis.validate import ValidateConfig, format_report, report, run_sweep, sweep_configs
        from analysis.validate_figures import write_validation
        from hermes_policy.eval.sweep import parse_list
        from hermes_policy.models.planted import FAMILIES

        families = FAMILIES if family == "all" else tuple(f.strip() for f in family.split(",") if f.strip())
        frame_counts = parse_list(frames, "--frames", int)
        strengths = parse_list(strength, "--strength", float)
        thresholds = RoleThresholds(min_decay, min_concentration)
        base = ValidateConfig(tuple(families), configs, seed, frame_counts[0], chunk, strengths[0],
                              thresholds=thresholds)
        runs_config = sweep_configs(base, strengths, frame_counts)  # each point checked as it is built
        formats = parse_formats(fmt) if out is not None else ()
        if causal and len(runs_config) > 1:
            raise StudyError("--causal scores one run; give one --frames and one --strength")
        if out is not None:
            check_output(out, overwrite, StudyError)
            hold_output_lock(out, StudyError)
        if causal:
            from analysis.causal_cli import validate_causal

            typer.echo(validate_causal(base, out, as_json, sys.stderr.isatty() or not as_json))
            return
        runs = run_sweep(runs_config, progress=sys.stderr.isatty() or not as_json)
        doc = report(runs)
        if out is not None:
            with output_folder(out, StudyError, "validate") as staging:
                written = write_validation(staging, runs, formats)
            print(f"wrote {len(written)} files to {out}", file=sys.stderr)
        typer.echo(json.dumps(doc) if as_json else format_report(doc))


__all__ = ["load_study", "parse_budget_weights", "register"]
