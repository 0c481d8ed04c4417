"""``hermes-lab eval``: the command that runs :mod:`hermes_policy.eval` sweeps into an output folder.

:func:`register` adds it to the ``hermes-lab`` app as a top-level command.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from hermes_policy.cli_options import (
    AllowPickleOption,
    DeviceMapOption,
    DistTimeoutOption,
    GpusPerRankOption,
    GranularityOption,
    MaxMemoryOption,
    OffloadFolderOption,
    TrustRemoteCodeOption,
    fps_option,
)
from hermes_policy.data.dataset import DatasetError, missing_videos
from hermes_policy.data.loaders import FORMATS, detect_format, load_annotations
from hermes_policy.models.configured import RANDOM_WEIGHTS_NOTE
from hermes_policy.models.placement import placement_from_options
from hermes_policy.outputs import hold_output_lock
from hermes_policy.session import SessionConfig
from hermes_policy.video import open_videos
from hermes_policy.video.frames import check_fps


def _resolve_data(data: Path, format: str, video_root: Path | None,
                  skip_missing: bool = False) -> tuple[list, str, dict[str, int] | None]:
    """The dataset's items, its format, and what ``--skip-missing`` left out (None: nothing was)."""
    if not data.exists():
        raise DatasetError(f"--data {data} does not exist")
    fmt = detect_format(data) if format == "auto" else format
    items = load_annotations(data, format=fmt, video_root=video_root, check_videos=not skip_missing)
    missing = set(missing_videos(items)) if skip_missing else set()
    if not missing:
        return items, fmt, None
    kept = [it for it in items if it.video not in missing]
    skipped = {"videos": len(items) - len(kept),
               "questions": sum(len(it.questions) for it in items if it.video in missing)}
    if not kept:
        raise DatasetError(f"--skip-missing: none of the {len(items)} videos of {data} exists; nothing to evaluate")
    print(f"warning: --skip-missing: {skipped['videos']} of {len(items)} videos ({skipped['questions']} questions) "
          f"have no file and are left out", file=sys.stderr)
    return kept, fmt, skipped


def _manifest(all_items: list, items: list, fmt: str, skipped: dict[str, int] | None, limit: int | None,
              chunk_frames: int, fps: float | None, reindex: str, scoring: str) -> dict[str, Any]:
    """The protocol manifest of this evaluation (:mod:`hermes_policy.eval.protocol`)."""
    from hermes_policy.data.dataset import answer_format
    from hermes_policy.eval.protocol import manifest
    from hermes_policy.eval.sweep import data_fingerprint
    from hermes_policy.models.base import DEFAULT_SYSTEM_PROMPT

    return manifest(chunk_frames=chunk_frames, fps=fps, reindex=reindex, scoring=scoring,
                    system_prompt=DEFAULT_SYSTEM_PROMPT, data_sha256=data_fingerprint(all_items), data_format=fmt,
                    videos=len(items), questions=sum(len(it.questions) for it in items), limit=limit,
                    skipped_missing=skipped,
                    count_questions=sum(answer_format(q) == "count" for it in items for q in it.questions))


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from hermes_policy import __version__

    return {"hermes_lab": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def eval_command(
    data: Annotated[Path, typer.Option(help="dataset .jsonl, a folder holding dataset.jsonl, or a "
                                            "StreamingBench/OVO-Bench annotation JSON")],
    out: Annotated[Path | None, typer.Option(help="output folder: config.json, protocol.json, rows.parquet, "
                                                     "results.json; rerun with the same settings to resume "
                                                     "(required unless --protocol)")] = None,
    model: Annotated[str, typer.Option(help="embedded, tiny-*, or a HF id/path")] = "embedded",
    policy: Annotated[str, typer.Option(help="comma-separated policy names; a list is a sweep")] = "full,sink-window",
    budget_ratio: Annotated[str | None, typer.Option(help="comma-separated fractions in (0, 1]: per video, "
                                                             "budget = round(R x its video tokens), at least "
                                                             "one frame")] = None,
    budget: Annotated[str | None, typer.Option(help="comma-separated absolute video tokens per layer")] = None,
    spec: Annotated[list[Path] | None, typer.Option(
        help="PolicySpec JSON: the entry of its policy (a separate run NAME[stem] if --policy lists it too); "
             "repeat it to compare specs, each its own run NAME\\[stem] (e.g. --spec attn.json --spec "
             "causal.json --compare-to 'hermes\\[attn]@0.1')")] = None,
    granularity: GranularityOption = None,
    limit: Annotated[int | None, typer.Option(help="evaluate only the first K videos")] = None,
    format: Annotated[str, typer.Option(help=f"data format: {', '.join(FORMATS)}")] = "auto",
    video_root: Annotated[Path | None, typer.Option(help="folder relative video paths resolve against")] = None,
    chunk_frames: Annotated[int, typer.Option(help="frames prefilled per forward")] = 4,
    fps: Annotated[float | None, fps_option("sampling rate of video files (synthetic specs keep theirs)")] = None,
    reindex: Annotated[str, typer.Option(help="lazy | eager | off")] = "lazy",
    scoring: Annotated[str, typer.Option(help="auto (the model's trained answer format) | letter (letter "
                                              "logits at the first answer token) | word-letter (the model "
                                              "writes its word, then the letter is scored) | cloze (each option's "
                                              "likelihood as the free-form answer)")] = "auto",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
    device: Annotated[str, typer.Option(help="auto (a GPU when there is one), cpu, cuda, cuda:1, ...; under "
                                             "torchrun / accelerate launch each rank takes cuda:LOCAL_RANK")] = "auto",
    device_map: DeviceMapOption = None,
    max_memory: MaxMemoryOption = None,
    offload_folder: OffloadFolderOption = None,
    gpus_per_rank: GpusPerRankOption = None,
    dist_timeout: DistTimeoutOption = 3600.0,
    skip_missing: Annotated[bool, typer.Option(
        help="evaluate the videos whose files exist, after one warning counting the videos and questions left "
             "out (recorded in config.json and results.json); without it a missing video is refused")] = False,
    compare_to: Annotated[str | None, typer.Option(
        help="the run every other run is compared with, question by question: accuracy difference with its "
             "paired bootstrap 95% interval (clustered by video) and an exact McNemar p-value, overall and per "
             "category, into results.json's comparisons (default: full)")] = None,
    trust_remote_code: TrustRemoteCodeOption = False,
    allow_pickle_weights: AllowPickleOption = False,
    max_videos: Annotated[int | None, typer.Option(hidden=True, help="old name of --limit")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON: one object per run "
                                                         "(a list for a sweep); no table, no progress bar")] = False,
    protocol: Annotated[bool, typer.Option("--protocol", help="print the streaming protocol manifest these settings "
                                                              "give (JSON, as protocol.json records it) and exit: "
                                                              "nothing is evaluated or written; with --scoring "
                                                              "auto the model is loaded to resolve it")] = False,
) -> None:
    """Streaming multiple-choice QA per policy and budget: accuracy by category, TTFT, peak KV, kept video
    tokens and fidelity to the full cache (agreement, KL). Resumable: rerun with the same --out.

    Data parallel when launched by torchrun or accelerate launch (WORLD_SIZE > 1): the (run, video)
    units are split over the ranks, and rank 0 writes the same files one process would."""
    from hermes_policy.distributed import barrier, finalise, initialise, launch_for, place_rank, share_threads
    from hermes_policy.eval.errors import EvalError
    from hermes_policy.eval.harness import evaluate, plan
    from hermes_policy.eval.parallel import evaluate_distributed
    from hermes_policy.eval.protocol import format_manifest, write_manifest
    from hermes_policy.eval.report import comparison_table, eval_table
    from hermes_policy.eval.results import CONFIG_FORMAT, VERSION
    from hermes_policy.eval.scoring import SCORERS, scorer_for
    from hermes_policy.eval.sweep import EvalDir, build_recipes, data_fingerprint, resume_note
    from hermes_policy.models import load_model

    # everything that can be wrong with the arguments fails before the (slow) model load
    from hermes_policy.models.registry import parse_dtype

    torch_dtype = parse_dtype(dtype)
    SessionConfig(chunk_frames=chunk_frames, reindex=reindex)  # type: ignore[arg-type]  (checks both, in one line)
    if fps is not None:
        check_fps(fps, "--fps")
    if scoring != "auto" and scoring not in SCORERS:
        raise EvalError(f"--scoring must be auto, {', '.join(SCORERS)}; got {scoring!r}")
    if max_videos is not None:
        if limit is not None and limit != max_videos:
            raise EvalError("--max-videos is the old name of --limit; pass only --limit")
        limit = max_videos
    if limit is not None and limit < 1:
        raise DatasetError(f"--limit must be >= 1, got {limit}")
    if protocol:
        all_items, fmt, skipped = _resolve_data(data, format, video_root, skip_missing)
        items = all_items[:limit] if limit is not None else all_items
        name = scoring if scoring != "auto" else scorer_for(load_model(
            model, dtype=torch_dtype, trust_remote_code=trust_remote_code, allow_pickle=allow_pickle_weights)).name
        typer.echo(format_manifest(_manifest(all_items, items, fmt, skipped, limit, chunk_frames, fps, reindex, name)))
        return
    if out is None:
        raise EvalError("--out is required: the folder the evaluation writes to (--protocol alone prints the "
                        "protocol manifest)")
    placement = placement_from_options(device, device_map, max_memory, offload_folder)
    env = launch_for(dist_timeout, placement, gpus_per_rank, EvalError)
    outdir = EvalDir(out, rank=env.rank if env.distributed else None)
    if env.is_main:  # one run per folder: a second one would interleave its rows with ours
        hold_output_lock(out, EvalError)
    recipes = build_recipes(policy, budget, budget_ratio, spec, granularity)
    labels = [r.key for r in recipes]
    if compare_to is not None and compare_to not in [*labels, "full"]:
        raise EvalError(f"--compare-to {compare_to!r} is not one of this evaluation's runs: "
                        f"{', '.join(dict.fromkeys([*labels, 'full']))}")
    all_items, fmt, skipped = _resolve_data(data, format, video_root, skip_missing)
    items = all_items[:limit] if limit is not None else all_items
    # a corrupt or unreadable file fails here, before the model loads or anything is written
    open_videos([it.video for it in items if not it.is_synthetic], fps)
    settings: dict[str, Any] = {
        "model": model,
        "data": str(data.resolve()),
        "data_sha256": data_fingerprint(all_items),
        "data_format": fmt,
        "video_root": None if video_root is None else str(video_root.resolve()),
        "policies": [{k: v for k, v in r.to_dict().items() if k != "source"} for r in recipes],
        "chunk_frames": chunk_frames,
        "fps": fps,
        "reindex": reindex,
        "dtype": dtype,
        "scoring": scoring,
    }
    if skipped is not None:  # only then, so folders evaluated before the flag existed still resume
        settings["skipped_missing"] = skipped
    units = plan(items, recipes).units
    done = outdir.resume(settings, units, repair=not env.distributed)
    initialise(env, dist_timeout, gpus_per_rank)
    placement = place_rank(env, placement, device, gpus_per_rank)
    device = placement.device
    share_threads(env)
    adapter = load_model(model, dtype=torch_dtype, trust_remote_code=trust_remote_code, placement=placement,
                         allow_pickle=allow_pickle_weights)
    scorer = scorer_for(adapter, scoring)
    config: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings,
        "model": model,
        "model_info": adapter.describe(),
        "data": settings["data"],
        "data_format": fmt,
        "video_root": settings["video_root"],
        "videos": len(items),
        "questions": sum(len(it.questions) for it in items),
        "limit": limit,
        "policies": [r.to_dict() for r in recipes],
        "budget": budget,
        "budget_ratio": budget_ratio,
        "chunk_frames": chunk_frames,
        "fps": fps,
        "reindex": reindex,
        "dtype": dtype,
        "device": device,
        "device_map": device_map,
        "world_size": env.world_size,
        "scoring": scorer.name,  # resolved: auto is the model's own format (see hermes_policy.eval.scoring)
        "skipped_missing": skipped,
        "versions": _versions(),
        "argv": sys.argv[1:],
        "protocol": _manifest(all_items, items, fmt, skipped, limit, chunk_frames, fps, reindex, scorer.name),
    }
    options = {"chunk_frames": chunk_frames, "fps": fps, "reindex": reindex, "model": model, "scorer": scorer}
    if env.is_main:
        outdir.start(config)
        write_manifest(outdir.path, config["protocol"])  # every eval folder holds its protocol
        resume_note(len(done), len(units))
    barrier()  # no rank writes a partial file before config.json exists (a folder without one is refused)
    if env.distributed:
        try:
            result = evaluate_distributed(env, outdir, settings, adapter, items, recipes, done, units,
                                          dist_timeout, show_progress=not as_json, **options)
        finally:
            finalise()
        if result is None:  # every rank but 0 prints nothing
            return
    else:
        result = evaluate(adapter, items, recipes, progress=not as_json, done=done, on_unit=outdir.append,
                          **options)
    result.compare_to = compare_to
    result.skipped_missing = skipped
    outdir.finish(result)
    if as_json:
        typer.echo(json.dumps(result.to_json()))
        return
    from rich.console import Console

    console = Console(file=sys.stdout, width=None if sys.stdout.isatty() else 200)
    console.print(f"{model} | {fmt} data {data} | {len(items)} videos, {config['questions']} questions "
                  f"| {scorer.name} scoring | fidelity vs {result.reference}", highlight=False, soft_wrap=True)
    if adapter.weights == "random":
        console.print(f"{RANDOM_WEIGHTS_NOTE} (accuracy included)", highlight=False, soft_wrap=True)
    console.print(eval_table(result))
    overall = [c for c in result.comparisons() if c["category"] == "overall"]
    if overall:
        console.print(comparison_table(overall))
    console.print(f"wrote {outdir.path}/: {outdir.results_path.name}, {outdir.rows_path.name}, "
                  f"{outdir.config_path.name}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``eval`` to the ``hermes-lab`` app."""
    app.command("eval")(eval_command)


__all__ = ["eval_command", "register"]
