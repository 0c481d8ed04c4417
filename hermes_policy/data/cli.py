"""``hermes-lab data synth|convert``.

:func:`register` adds ``data`` to the ``hermes-lab`` app as a typer sub-app
(``app.add_typer``); ``eval`` lives in :mod:`hermes_policy.eval.cli`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from hermes_policy.atomic import atomic_dir
from hermes_policy.cli_options import OverwriteOption, fps_option
from hermes_policy.data.dataset import (
    DATASET_FILE,
    DatasetError,
    VideoItem,
    summarize,
    synthesize,
    write_dataset,
)
from hermes_policy.data.loaders import FORMATS, load_annotations
from hermes_policy.outputs import check_output, hold_output_lock, output_folder


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
    fps: Annotated[float, fps_option("frame rate of the synthetic videos")] = 2.0,
    size: Annotated[str, typer.Option(help="frame size WIDTHxHEIGHT")] = "128x128",
    per_category: Annotated[int, typer.Option(help="questions per category and video")] = 2,
    mp4: Annotated[bool, typer.Option(help="also write the videos as mp4 under OUT/videos and point at them")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="print the summary as JSON")] = False,
    overwrite: OverwriteOption = False,
) -> None:
    """Write a synthetic streaming-QA dataset (exact answers from the simulator's event log)."""
    check_output(out, overwrite, DatasetError)
    hold_output_lock(out, DatasetError)
    items = synthesize(seed, videos, frames, fps=fps, size=parse_size(size), per_category=per_category)
    # staged and moved into place whole: a run that fails (a full disk) leaves the old folder, or none
    with output_folder(out, DatasetError, "data synth") as staging:
        if mp4:
            from hermes_policy.video import open_video, write_mp4

            (staging / "videos").mkdir()
            for i, item in enumerate(items):
                name = f"video_{i:04d}.mp4"
                write_mp4(open_video(item.video), staging / "videos" / name)
                item.video = str(out.resolve() / "videos" / name)  # where it will be once moved
        write_dataset(items, staging / DATASET_FILE, home=out)
    path = out / DATASET_FILE
    if as_json:
        typer.echo(json.dumps({"path": str(path), **summarize(items)}))
    else:
        typer.echo(_summary_line(path, items))


def convert_command(
    annotations: Annotated[Path, typer.Argument(help="a StreamingBench- or OVO-Bench-style JSON file")],
    out: Annotated[Path, typer.Option(help="folder (gets dataset.jsonl) or .jsonl file to write")],
    format: Annotated[str, typer.Option(help=f"one of: {', '.join(FORMATS)}")] = "auto",
    video_root: Annotated[Path | None, typer.Option(help="folder relative video paths resolve against "
                                                             "(default: the annotation file's folder)")] = None,
    overwrite: OverwriteOption = False,
) -> None:
    """Convert benchmark annotations (local videos only) into the streaming-QA JSONL format."""
    as_file = out.suffix == ".jsonl"
    # a folder may be the one the videos are in: only dataset.jsonl is ever replaced there
    check_output(out, overwrite, DatasetError, kind="file" if as_file else "dir", whole=False)
    hold_output_lock(out, DatasetError, clean=False)
    items = load_annotations(annotations, format=format, video_root=video_root)
    if as_file or out.is_dir():
        path = write_dataset(items, out)
    else:  # a new folder appears with its file, or not at all
        with atomic_dir(out, DatasetError) as staging:
            write_dataset(items, staging, home=out)
        path = out / DATASET_FILE
    typer.echo(_summary_line(path, items))


def register(app: typer.Typer) -> None:
    """Add ``data synth`` and ``data convert`` to the ``hermes-lab`` app."""
    data_app = typer.Typer(help="Streaming-QA datasets: synthesize, convert benchmark annotations.",
                           no_args_is_help=True, add_completion=False)
    data_app.command("synth")(synth_command)
    data_app.command("convert")(convert_command)
    app.add_typer(data_app, name="data")


__all__ = ["convert_command", "parse_size", "register", "synth_command"]
