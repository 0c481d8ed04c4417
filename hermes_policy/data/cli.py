"""``hermes-lab data synth|convert``.

:func:`register` adds ``data`` to the ``hermes-lab`` app as a typer sub-app
(``app.add_typer``); ``eval`` lives in :mod:`hermes_policy.eval.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from hermes_policy.atomic import refuse_existing
from hermes_policy.cli_options import OverwriteOption
from hermes_policy.data.dataset import (
    DATASET_FILE,
    DatasetError,
    VideoItem,
    summarize,
    synthesize,
    write_dataset,
)
from hermes_policy.data.loaders import FORMATS, load_annotations


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
    overwrite: OverwriteOption = False,
) -> None:
    """Write a synthetic streaming-QA dataset (exact answers from the simulator's event log)."""
    refuse_existing(out, overwrite, DatasetError)
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
    overwrite: OverwriteOption = False,
) -> None:
    """Convert benchmark annotations (local videos only) into the streaming-QA JSONL format."""
    refuse_existing(out, overwrite, DatasetError)
    items = load_annotations(annotations, format=format, video_root=video_root)
    if out.suffix != ".jsonl":
        out.mkdir(parents=True, exist_ok=True)
    path = write_dataset(items, out)
    typer.echo(_summary_line(path, items))


def register(app: typer.Typer) -> None:
    """Add ``data synth`` and ``data convert`` to the ``hermes-lab`` app."""
    data_app = typer.Typer(help="Streaming-QA datasets: synthesize, convert benchmark annotations.",
                           no_args_is_help=True, add_completion=False)
    data_app.command("synth")(synth_command)
    data_app.command("convert")(convert_command)
    app.add_typer(data_app, name="data")


__all__ = ["convert_command", "parse_size", "register", "synth_command"]
