"""``hermes-lab study`` and ``hermes-lab bench-capture``: capture attention over a stream, and what it costs."""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from hermes_policy.cli_options import (
    AllowPickleOption,
    DeviceMapOption,
    DistTimeoutOption,
    FrameSizeOption,
    GpusPerRankOption,
    MaxMemoryOption,
    OffloadFolderOption,
    TrustRemoteCodeOption,
    fps_option,
)
from hermes_policy.models import load_model
from hermes_policy.models.placement import Placement, placement_from_options
from hermes_policy.outputs import hold_output_lock
from hermes_policy.policies import FullPolicy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import open_video, parse_frame_size
from probes.capture import (
    DEFAULT_VIDEO,
    PSEUDO_PROMPTS,
    StudyConfig,
    StudyDir,
    StudyRunError,
    open_study_video,
    record_video,
    resolve_videos,
    run_study,
    study_settings,
    video_frames,
)
from probes.observer import AttentionProbe
from probes.recording import Recording


def _summary(recording: Recording) -> str:
    """``12 steps x 4 layers x 2 heads (local, global, mixed) over 48 frames in 3.1s``."""
    meta = recording.meta
    return (f"{meta['steps']} steps x {recording.num_layers} layers x {recording.num_heads} heads "
            f"({', '.join(recording.queries)}) over {meta['frames']} frames in {meta['seconds']:.1f}s")


#: ``report(recording, out, figures) -> text``: summary.json and figures beside a recording (analysis's
#: :func:`analysis.summary.write_study_report`, handed in by ``hermes_lab.cli``: probes never import analysis)
StudyReport = Callable[[Recording, Path, bool], str]


def _study_one(target: StudyDir, config: StudyConfig, placement: Placement, trust_remote_code: bool,
               allow_pickle: bool) -> Recording:
    """One video: the folder is its recording, as it always was (kept as is when a rerun finds it complete)."""
    if target.is_done(0):
        recording = Recording.load(target.path)
        print(f"{target.path} already holds this recording; remove it to record again", file=sys.stderr)
        typer.echo(f"recorded {_summary(recording)} -> {target.path}")
        return recording
    open_study_video(target, 0)  # a bad video fails before the model loads
    adapter = load_model(target.settings["model"], trust_remote_code=trust_remote_code, placement=placement,
                         allow_pickle=allow_pickle)
    recording = record_video(adapter, target, 0, config)
    typer.echo(f"recorded {_summary(recording)} -> {target.path}")
    return recording


def register(app: typer.Typer, report: StudyReport | None = None) -> None:
    """Add this package's subcommands to the ``hermes-lab`` app; ``report`` writes the summary and figures."""

    @app.command()
    def study(
        model: Annotated[str, typer.Option(help="model name or HF id/path")] = "embedded",
        video: Annotated[list[str] | None, typer.Option(
            help="a video file or synthetic:seed=S,frames=N; repeat for several videos (default: "
                 f"{DEFAULT_VIDEO})")] = None,
        videos: Annotated[Path | None, typer.Option(
            help="a text file naming the videos, one path or synthetic: spec per line (# comments); relative "
                 "paths are relative to the file")] = None,
        out: Annotated[Path, typer.Option(help="folder for the recording; with several videos, videos/NNN/ holds "
                                               "each video's and the folder itself their aggregate")] =
        Path("runs/study"),
        fps: Annotated[float | None, fps_option("sampling rate")] = None,
        frame_size: FrameSizeOption = None,
        queries: Annotated[str, typer.Option(help="pseudo | newest-frame | both")] = "pseudo",
        chunk_frames: Annotated[int, typer.Option(help="frames per ingest chunk (one step each)")] = 4,
        raw_steps: Annotated[int, typer.Option(help="keep raw attention rows for this many first steps")] = 0,
        device: Annotated[str, typer.Option(help="torch device; under torchrun, cuda means cuda:LOCAL_RANK")] =
        "cpu",
        device_map: DeviceMapOption = None,
        max_memory: MaxMemoryOption = None,
        offload_folder: OffloadFolderOption = None,
        gpus_per_rank: GpusPerRankOption = None,
        dist_timeout: DistTimeoutOption = 3600.0,
        figures: Annotated[bool, typer.Option(help="also draw the study figures into OUT/figures (summary.json "
                                                   "and the per-layer table come either way)")] = True,
        trust_remote_code: TrustRemoteCodeOption = False,
        allow_pickle_weights: AllowPickleOption = False,
    ) -> None:
        """Stream videos with the full cache and record per-layer, per-head attention after every chunk.

        Several videos (--video repeated, or --videos FILE) give one recording each plus their aggregate
        (mean and spread over videos), which derive reads like any recording. Data parallel when launched
        by torchrun (WORLD_SIZE > 1); resumable: rerun with the same --out to record only what is missing."""
        from hermes_policy.distributed import (
            barrier,
            device_for,
            finalise,
            initialise,
            launch_for,
            place_rank,
            share_threads,
        )

        def finish(recording: Recording) -> None:
            if report is not None:
                typer.echo(report(recording, out, figures))
                typer.echo(f"wrote {out}/summary.json" + (f" and {out}/figures/" if figures else ""))

        # everything that can be wrong with the arguments fails before the (slow) model load
        config = StudyConfig(queries=queries, chunk_frames=chunk_frames, raw_steps=raw_steps)  # type: ignore[arg-type]
        placement = placement_from_options(device, device_map, max_memory, offload_folder)
        size = None if frame_size is None else parse_frame_size(frame_size)
        target = StudyDir(out, resolve_videos(video, videos), study_settings(model, fps, config, size))
        # one video runs on rank 0 alone, so only several combine a device map with a launch
        env = launch_for(dist_timeout, placement if target.many else None, gpus_per_rank, StudyRunError)
        target.check()
        if env.is_main:  # one run per folder (the ranks of this one write their own videos)
            hold_output_lock(out, StudyRunError)
        if not target.many:
            if env.is_main:  # one video is rank 0's alone; the other ranks of a launch have nothing to do
                placement.device = device_for(env, device)
                finish(_study_one(target, config, placement, trust_remote_code, allow_pickle_weights))
            return
        frames = video_frames(target.videos, fps)
        done = {i for i in range(len(target.videos)) if target.is_done(i)}
        initialise(env, dist_timeout, gpus_per_rank)
        try:
            placement = place_rank(env, placement, device, gpus_per_rank)
            share_threads(env)
            adapter = load_model(model, trust_remote_code=trust_remote_code, placement=placement,
                                 allow_pickle=allow_pickle_weights)
            if env.is_main:
                target.start()
                if done:
                    print(f"resuming: {len(done)} of {len(target.videos)} videos already recorded in {out}",
                          file=sys.stderr)
            barrier()  # no rank records before study.json says what the folder is
            recording = run_study(env, target, adapter, config, frames, done, dist_timeout)
        finally:
            finalise()
        if recording is None:  # every rank but 0 prints nothing
            return
        typer.echo(f"recorded {len(target.videos) - len(done)} of {len(target.videos)} videos "
                   f"({len(done)} already there) into {out}/videos; aggregate: {_summary(recording)} -> {out}")
        finish(recording)

    @app.command("bench-capture")
    def bench_capture(
        model: Annotated[str, typer.Option(help="model name or HF id/path")] = "embedded",
        video: Annotated[str, typer.Option(help="a video file or synthetic:seed=S,frames=N")] =
        "synthetic:seed=1,frames=64",
        chunk_frames: Annotated[int, typer.Option(help="frames per ingest chunk")] = 4,
        repeats: Annotated[int, typer.Option(help="runs of each variant; the median is reported")] = 3,
        allow_pickle_weights: AllowPickleOption = False,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Ingest time with and without capture, measured in one run (pseudo-queries every chunk)."""
        adapter = load_model(model, allow_pickle=allow_pickle_weights)
        source = open_video(video)
        frames = list(source.frames())
        h, w = frames[0].image.shape[:2]
        kinds = list(PSEUDO_PROMPTS)

        def run(pseudo: bool, observe: bool) -> float:
            session = StreamingSession(adapter, FullPolicy(), SessionConfig(chunk_frames=chunk_frames))
            probe = AttentionProbe(kinds, adapter.num_layers, adapter.num_heads, adapter.tokens_per_frame(h, w),
                                   patches_per_frame=adapter.patches_per_frame(h, w))
            if observe:
                session.observing(probe, phases=probe.phases)
            start = time.perf_counter()
            for i in range(0, len(frames), session.chunk_frames):
                chunk = frames[i : i + session.chunk_frames]
                probe.begin_step(i + len(chunk), chunk[-1].time)
                session.ingest(chunk)
                session.flush()
                if pseudo:
                    session.pseudo_queries({name: PSEUDO_PROMPTS[name] for name in kinds})
            if observe:
                probe.recording({})  # stacking into tensors is part of the cost
            return (time.perf_counter() - start) / len(frames) * 1000

        variants = {"ingest only": (False, False), "+ pseudo-queries": (True, False), "+ capture": (True, True)}
        times: dict[str, list[float]] = {k: [] for k in variants}
        run(False, False)  # warm-up
        for _ in range(repeats):  # interleaved, so drift hits every variant alike
            for name, (pseudo, observe) in variants.items():
                times[name].append(run(pseudo, observe))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows = [
            {"variant": k, "ms_per_frame": round(v, 3), "vs_ingest": round(v / med["ingest only"], 3),
             "vs_pseudo": round(v / med["+ pseudo-queries"], 3)}
            for k, v in med.items()
        ]
        if as_json:
            typer.echo(json.dumps(rows))
            return
        typer.echo(f"{model}, {len(frames)} frames, chunk {chunk_frames}, median of {repeats}", err=False)
        typer.echo(f"{'variant':<18} {'ms/frame':>9} {'x ingest':>9} {'x pseudo':>9}")
        for r in rows:
            typer.echo(f"{r['variant']:<18} {r['ms_per_frame']:>9.2f} {r['vs_ingest']:>9.3f} {r['vs_pseudo']:>9.3f}")
        print(
            "capture overhead on top of the pseudo-query forwards: "
            f"{100 * (med['+ capture'] / med['+ pseudo-queries'] - 1):.1f}%",
            file=sys.stderr,
        )
