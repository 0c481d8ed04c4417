"""``hermes-lab data synth|convert`` and ``hermes-lab eval``.

:func:`register` adds both to the ``hermes-lab`` app: ``data`` as a typer
sub-app (``app.add_typer``), ``eval`` as a top-level command.
"""

from __future__ import annotations

import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from hermes_policy.data.dataset import (
    DATASET_FILE,
    DatasetError,
    VideoItem,
    atomic_write_text,
    summarize,
    synthesize,
    write_dataset,
)
from hermes_policy.data.loaders import FORMATS, detect_format, load_annotations
from hermes_policy.errors import PolicyError

DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")


def parse_size(text: str) -> tuple[int, int]:
    """``"128x96"`` -> (128, 96)."""
    w, sep, h = text.lower().partition("x")
    try:
        size = (int(w), int(h))
    except ValueError:
        size = (0, 0)
    if not sep or min(size) < 1:
        raise DatasetError(f"--size takes WIDTHxHEIGHT, e.g. 128x128; got {text!r}")
    return size


def _summary_line(path: Path, items: list[VideoItem]) -> str:
    s = summarize(items)
    cats = ", ".join(f"{c} {n}" for c, n in s["categories"].items()) or "none"
    return f"wrote {path}: {s['videos']} videos, {s['questions']} questions ({cats})"


def synth_command(
    out: Annotated[Path, typer.Option(help="folder to write dataset.jsonl into (created if needed)")],
    seed: Annotated[int, typer.Option(help="dataset seed; each video's seed is derived from it")] = 0,
    videos: Annotated[int, typer.Option(help="number of videos")] = 8,
    frames: Annotated[int, typer.Option(help="frames per video")] = 64,
    fps: Annotated[float, typer.Option(help="frame rate of the synthetic videos")] = 2.0,
    size: Annotated[str, typer.Option(help="frame size WIDTHxHEIGHT")] = "128x128",
    per_category: Annotated[int, typer.Option(help="questions per category and video")] = 2,
    mp4: Annotated[bool, typer.Option(help="also write the videos as mp4 under OUT/videos and point at them")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
) -> None:
    """Write a synthetic streaming-QA dataset (exact answers from the simulator's event log)."""
    items = synthesize(seed, videos, frames, fps=fps, size=parse_size(size), per_category=per_category)
    out.mkdir(parents=True, exist_ok=True)
    if mp4:
        from hermes_policy.video import open_video, write_mp4

        (out / "videos").mkdir(exist_ok=True)
        for i, item in enumerate(items):
            path = write_mp4(open_video(item.video), out / "videos" / f"video_{i:04d}.mp4")
            item.video = str(path.resolve())
    path = write_dataset(items, out / DATASET_FILE)
    if as_json:
        typer.echo(json.dumps({"path": str(path), **summarize(items)}))
    else:
        typer.echo(_summary_line(path, items))


def convert_command(
    annotations: Annotated[Path, typer.Argument(help="a StreamingBench- or OVO-Bench-style JSON file")],
    out: Annotated[Path, typer.Option(help="folder (gets dataset.jsonl) or .jsonl file to write")],
    format: Annotated[str, typer.Option(help=f"one of: {', '.join(FORMATS)}")] = "auto",
    video_root: Annotated[Optional[Path], typer.Option(help="folder relative video paths resolve against "
                                                             "(default: the annotation file's folder)")] = None,
) -> None:
    """Convert benchmark annotations (local videos only) into the streaming-QA JSONL format."""
    items = load_annotations(annotations, format=format, video_root=video_root)
    if out.suffix != ".jsonl":
        out.mkdir(parents=True, exist_ok=True)
    path = write_dataset(items, out)
    typer.echo(_summary_line(path, items))


def _policy_recipes(policy: str, budget: int | None, budget_ratio: float | None, spec: Path | None) -> list:
    """``--policy`` names (+ ``--spec``) as recipes; the spec configures the entry of its own policy name."""
    from hermes_policy.evaluate import PolicyRecipe
    from hermes_policy.policies import PolicySpec

    names = [p.strip() for p in policy.split(",") if p.strip()]
    if len(set(names)) != len(names):
        raise PolicyError(f"--policy names a policy twice: {policy!r}")
    recipes = [PolicyRecipe(n, budget=budget, budget_ratio=None if budget is not None else budget_ratio)
               for n in names]
    if spec is not None:
        loaded = PolicySpec.load(spec)
        from_spec = PolicyRecipe.from_spec(loaded, budget, None if budget is not None else budget_ratio,
                                           source=str(spec))
        recipes = [from_spec if r.name == loaded.policy else r for r in recipes]
        if loaded.policy not in names:
            recipes.append(from_spec)
    if not recipes:
        raise PolicyError("--policy names no policy; e.g. --policy full,sink-window")
    return recipes


def _resolve_data(data: Path, format: str, video_root: Path | None, max_videos: int | None) -> tuple[list, str]:
    if not data.exists():
        raise DatasetError(f"--data {data} does not exist")
    fmt = detect_format(data) if format == "auto" else format
    items = load_annotations(data, format=fmt, video_root=video_root)
    if max_videos is not None:
        if max_videos < 1:
            raise DatasetError(f"--max-videos must be >= 1, got {max_videos}")
        items = items[:max_videos]
    return items, fmt


def _versions() -> dict[str, str]:
    import torch
    import transformers

    from hermes_policy import __version__

    return {"hermes_lab": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def eval_command(
    data: Annotated[Path, typer.Option(help="dataset .jsonl, a folder holding dataset.jsonl, or a "
                                            "StreamingBench/OVO-Bench annotation JSON")],
    model: Annotated[str, typer.Option(help="embedded, tiny-*, or a HF id/path")] = "embedded",
    policy: Annotated[str, typer.Option(help="comma-separated policy names")] = "full,sink-window",
    budget_ratio: Annotated[Optional[float], typer.Option(help="per video: budget = round(R x its video tokens), "
                                                                "at least one frame")] = None,
    budget: Annotated[Optional[int], typer.Option(help="absolute video tokens per layer (overrides "
                                                       "--budget-ratio)")] = None,
    spec: Annotated[Optional[Path], typer.Option(help="PolicySpec JSON: configures the --policy entry of its "
                                                      "policy, or is added")] = None,
    format: Annotated[str, typer.Option(help=f"data format: {', '.join(FORMATS)}")] = "auto",
    video_root: Annotated[Optional[Path], typer.Option(help="folder relative video paths resolve against")] = None,
    max_videos: Annotated[Optional[int], typer.Option(help="evaluate only the first N videos")] = None,
    chunk_frames: Annotated[int, typer.Option(help="frames prefilled per forward")] = 4,
    fps: Annotated[Optional[float], typer.Option(help="sampling rate of video files (synthetic specs keep "
                                                      "theirs)")] = None,
    reindex: Annotated[str, typer.Option(help="lazy | eager | off")] = "lazy",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
    trust_remote_code: Annotated[bool, typer.Option(help="allow a checkpoint's own Python code")] = False,
    out: Annotated[Optional[Path], typer.Option(help="results JSON; OUT.config.json and OUT.rows.jsonl go "
                                                     "beside it")] = None,
    rows: Annotated[Optional[Path], typer.Option(help="per-question rows (.jsonl or .parquet); default "
                                                      "beside --out")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object {config, results}")] = False,
) -> None:
    """Streaming multiple-choice QA accuracy, TTFT and KV memory per policy and question category."""
    from hermes_policy.cli import DTYPES
    from hermes_policy.evaluate import CONFIG_FORMAT, VERSION, evaluate
    from hermes_policy.models import load_model

    if dtype not in DTYPES:
        raise PolicyError(f"--dtype must be one of {', '.join(DTYPE_NAMES)}, got {dtype!r}")
    if rows is not None and rows.suffix not in (".jsonl", ".parquet"):
        raise DatasetError(f"--rows takes a .jsonl or .parquet path, got {rows}")
    # everything that can be wrong with the arguments fails before the (slow) model load
    recipes = _policy_recipes(policy, budget, budget_ratio, spec)
    items, fmt = _resolve_data(data, format, video_root, max_videos)
    adapter = load_model(model, dtype=DTYPES[dtype], device=device, trust_remote_code=trust_remote_code)
    result = evaluate(adapter, items, recipes, chunk_frames=chunk_frames, progress=not as_json, fps=fps,
                      reindex=reindex)
    config: dict[str, Any] = {
        "format": CONFIG_FORMAT,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model": model,
        "model_info": adapter.describe(),
        "data": str(data.resolve()),
        "data_format": fmt,
        "video_root": None if video_root is None else str(video_root.resolve()),
        "videos": len(items),
        "questions": sum(len(it.questions) for it in items),
        "policies": [r.to_dict() for r in recipes],
        "budget": budget,
        "budget_ratio": budget_ratio,
        "chunk_frames": chunk_frames,
        "fps": fps,
        "reindex": reindex,
        "dtype": dtype,
        "device": device,
        "scoring": "letter-logits (first answer token; see hermes_policy.evaluate)",
        "versions": _versions(),
        "argv": sys.argv[1:],
    }
    results = result.to_dict()
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        stem = out.with_suffix("") if out.suffix == ".json" else out
        config_path = stem.with_name(stem.name + ".config.json")
        rows_path = rows if rows is not None else stem.with_name(stem.name + ".rows.jsonl")
        results["config_file"], results["rows_file"] = config_path.name, str(rows_path)
        atomic_write_text(config_path, json.dumps(config, indent=2) + "\n")
        result.write_rows(rows_path)
        atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    elif rows is not None:
        result.write_rows(rows)
    if as_json:
        typer.echo(json.dumps({"config": config, "results": results}))
        return
    typer.echo(f"{model} | {fmt} data {data} | {len(items)} videos, {config['questions']} questions")
    typer.echo(result.format_table())
    if out is not None:
        typer.echo(f"wrote {out} (+ {results['config_file']}, {rows_path.name})")


def register(app: typer.Typer) -> None:
    """Add ``data synth``, ``data convert`` and ``eval`` to the ``hermes-lab`` app."""
    data_app = typer.Typer(help="Streaming-QA datasets: synthesize, convert benchmark annotations.",
                           no_args_is_help=True, add_completion=False)
    data_app.command("synth")(synth_command)
    data_app.command("convert")(convert_command)
    app.add_typer(data_app, name="data")
    app.command("eval")(eval_command)


__all__ = ["convert_command", "eval_command", "parse_size", "register", "synth_command"]
