"""``hermes-lab study`` and ``hermes-lab bench-capture``: capture attention over a stream, and what it costs."""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer

from hermes_policy.models import load_model
from hermes_policy.policies import FullPolicy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import open_video
from probes.capture import PSEUDO_PROMPTS, StudyConfig, capture
from probes.observer import AttentionProbe


def register(app: typer.Typer) -> None:
    """Add this package's subcommands to the ``hermes-lab`` app."""

    @app.command()
    def study(
        model: Annotated[str, typer.Option(help="model name or HF id/path")] = "embedded",
        video: Annotated[str, typer.Option(help="a video file or synthetic:seed=S,frames=N")] =
        "synthetic:seed=1,frames=64",
        out: Annotated[Path, typer.Option(help="directory to write the recording into")] = Path("runs/study"),
        fps: Annotated[Optional[float], typer.Option(help="sampling rate (frames per second)")] = None,
        queries: Annotated[str, typer.Option(help="pseudo | newest-frame | both")] = "pseudo",
        chunk_frames: Annotated[int, typer.Option(help="frames per ingest chunk (one step each)")] = 4,
        raw_steps: Annotated[int, typer.Option(help="keep raw attention rows for this many first steps")] = 0,
        device: Annotated[str, typer.Option(help="torch device")] = "cpu",
        trust_remote_code: Annotated[bool, typer.Option(help="allow a checkpoint's own Python code")] = False,
    ) -> None:
        """Stream a video with the full cache and record per-layer, per-head attention after every chunk."""
        config = StudyConfig(queries=queries, chunk_frames=chunk_frames, raw_steps=raw_steps)  # type: ignore[arg-type]
        source = open_video(video, fps=fps)
        adapter = load_model(model, device=device, trust_remote_code=trust_remote_code)
        recording = capture(adapter, source, config)
        recording.save(out)
        typer.echo(
            f"recorded {recording.meta['steps']} steps x {recording.num_layers} layers x {recording.num_heads} heads "
            f"({', '.join(recording.queries)}) over {recording.meta['frames']} frames in "
            f"{recording.meta['seconds']:.1f}s -> {out}"
        )

    @app.command("bench-capture")
    def bench_capture(
        model: Annotated[str, typer.Option()] = "embedded",
        video: Annotated[str, typer.Option()] = "synthetic:seed=1,frames=64",
        chunk_frames: Annotated[int, typer.Option()] = 4,
        repeats: Annotated[int, typer.Option(help="runs of each variant; the median is reported")] = 3,
        as_json: Annotated[bool, typer.Option("--json")] = False,
    ) -> None:
        """Ingest time with and without capture, measured in one run (pseudo-queries every chunk)."""
        adapter = load_model(model)
        source = open_video(video)
        frames = list(source.frames())
        h, w = frames[0].image.shape[:2]
        kinds = list(PSEUDO_PROMPTS)

        def run(pseudo: bool, observe: bool) -> float:
            session = StreamingSession(adapter, FullPolicy(), SessionConfig(chunk_frames=chunk_frames))
            probe = AttentionProbe(kinds, adapter.num_layers, adapter.num_heads, adapter.tokens_per_frame(h, w))
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
            f"capture overhead on top of the pseudo-query forwards: {100 * (med['+ capture'] / med['+ pseudo-queries'] - 1):.1f}%",
            file=sys.stderr,
        )
