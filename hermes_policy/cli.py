"""``hermes-lab stream``: run a video through a model under a memory policy and ask questions."""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from tqdm import tqdm

from hermes_policy.cli_options import (
    AllowPickleOption,
    DeviceMapOption,
    DistTimeoutOption,
    FrameSizeOption,
    GpusPerRankOption,
    GranularityOption,
    MaxMemoryOption,
    OffloadFolderOption,
    OverwriteOption,
    TrustRemoteCodeOption,
    fps_option,
)
from hermes_policy.errors import HermesError, SessionError
from hermes_policy.models import load_model
from hermes_policy.models.configured import RANDOM_WEIGHTS_NOTE
from hermes_policy.models.placement import placement_from_options
from hermes_policy.models.registry import DTYPES, parse_dtype  # noqa: F401  (DTYPES re-exported)
from hermes_policy.outputs import check_output, hold_output_lock
from hermes_policy.policies import POLICIES, policy_from_args
from hermes_policy.session import Answer, SessionConfig, StreamingSession, check_question
from hermes_policy.timeline import TIME_TOLERANCE, interleave
from hermes_policy.video import open_video, parse_frame_size


@dataclass(frozen=True)
class TimedQuestion:
    time: float
    question: str

    @classmethod
    def parse(cls, text: str) -> TimedQuestion:
        """``"T:question"`` with T in seconds of stream time."""
        head, sep, question = text.partition(":")
        try:
            t = float(head)
        except ValueError:
            t = -1.0
        # nan compares false with everything, so it would slip past "t < 0" and be asked at the end
        if not sep or not math.isfinite(t) or t < 0 or not question.strip():
            raise SessionError(f"--ask takes 'SECONDS:question' with SECONDS a finite number >= 0, e.g. "
                               f"'30:What is happening?'; got {text!r}")
        return cls(t, check_question(question).strip())


def run_stream(
    session: StreamingSession, source, questions: list[TimedQuestion], show_progress: bool = True,
    answers: list[Answer] | None = None,
) -> list[Answer]:
    """Stream ``source`` into ``session``, asking each question once stream time reaches it.

    ``answers`` (returned) is filled as questions are answered, so a caller still has the ones
    answered before a failure partway (a video truncated mid-file).
    """
    answers = [] if answers is None else answers
    total = source.num_frames
    bar = tqdm(total=total, unit="frame", file=sys.stderr, disable=not show_progress or (total or 0) <= 8,
               desc="streaming", leave=False)
    with bar:
        for kind, item in interleave(source.frames(), questions, lambda q: q.time):
            if kind == "frame":
                session.ingest([item])
                bar.update(1)
                continue
            session.flush()  # the question sees every frame shown so far (ask would flush too)
            # more than a frame interval past the last frame: only once the stream has ended
            if item.time != float("inf") and item.time > session.stream_time + 1 / source.fps + TIME_TOLERANCE:
                print(f"note: stream ended at {session.stream_time:.1f}s, asking the {item.time:g}s question there",
                      file=sys.stderr)
            answers.append(session.ask(item.question))
    session.flush()
    return answers


def register(app: typer.Typer) -> None:
    """Add this package's subcommands to the ``hermes-lab`` app."""

    @app.command()
    def stream(
        model: Annotated[str, typer.Option(help="embedded, embedded-smollm2, a tiny-* model (tiny-qwen3-vl, ...), "
                                                 "planted:SEED[,family=F], config:NAME, or a HF id/path")] = "embedded",
        video: Annotated[str, typer.Option(help="a video file, or synthetic:seed=S,frames=N[,fps=F,size=WxH]")] =
        "synthetic:seed=1,frames=64",
        policy: Annotated[str, typer.Option(help=f"one of: {', '.join(sorted(POLICIES))}")] = "full",
        budget: Annotated[int | None, typer.Option(help="video tokens kept per layer")] = None,
        spec: Annotated[Path | None, typer.Option(
            help="a PolicySpec JSON (overrides --policy; --budget overrides its budget)")] = None,
        fps: Annotated[float | None, fps_option("sampling rate")] = None,
        granularity: GranularityOption = None,
        ask: Annotated[list[str] | None, typer.Option(help="'SECONDS:question', repeatable")] = None,
        chunk_frames: Annotated[int, typer.Option(help="frames prefilled per forward")] = 4,
        max_new_tokens: Annotated[int, typer.Option(help="answer length limit")] = 32,
        reindex: Annotated[str, typer.Option(help="lazy | eager | off")] = "lazy",
        dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
        device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
        device_map: DeviceMapOption = None,
        max_memory: MaxMemoryOption = None,
        offload_folder: OffloadFolderOption = None,
        trust_remote_code: TrustRemoteCodeOption = False,
        allow_pickle_weights: AllowPickleOption = False,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Stream a video through a model under a memory policy, asking questions along the way."""
        torch_dtype = parse_dtype(dtype)
        # without --ask, one question once the whole stream is in
        questions = ([TimedQuestion.parse(a) for a in ask] if ask
                     else [TimedQuestion(float("inf"), "What is happening?")])
        mem_policy = policy_from_args(policy, budget, spec, granularity)
        config = SessionConfig(chunk_frames=chunk_frames, max_new_tokens=max_new_tokens, reindex=reindex)
        source = open_video(video, fps=fps)
        placement = placement_from_options(device, device_map, max_memory, offload_folder)
        adapter = load_model(model, dtype=torch_dtype, trust_remote_code=trust_remote_code, placement=placement,
                             allow_pickle=allow_pickle_weights)
        session = StreamingSession(adapter, mem_policy, config)
        answers: list[Answer] = []
        failure: HermesError | None = None
        try:
            run_stream(session, source, questions, answers=answers)
        except HermesError as e:
            if not answers and session.frames_seen == 0:
                raise  # nothing was streamed (an impossible budget, say): the error alone
            failure = e  # the answers given before it are kept and printed, then the error
        result = {
            "model": model,
            "family": adapter.family,
            "policy": mem_policy.name,
            "budget": getattr(mem_policy, "budget", None),
            "granularity": mem_policy.granularity,
            "frames": session.frames_seen,
            "kv_bytes": session.kv_bytes,
            "kv_bytes_by_device": session.cache.kv_bytes_by_device,
            # a hybrid's linear-attention layers hold a fixed-size state instead of keys and values
            "recurrent_bytes": session.cache.recurrent_bytes,
            "weights": adapter.weights,
            "answers": [a.to_dict() for a in answers],
        }
        if session.cache.granularity == "head":
            result["head_tokens"] = session.cache.all_head_lengths()  # per layer, each KV head's rows
        if failure is not None:
            result["error"] = str(failure)
        if as_json:
            typer.echo(json.dumps(result))
            if failure is not None:
                raise failure
            return
        typer.echo(f"{model} | policy {mem_policy.name} (budget {result['budget']}) | {session.frames_seen} frames "
                   f"| KV {session.kv_bytes / 2**20:.2f} MiB")
        if adapter.weights == "random":
            typer.echo(RANDOM_WEIGHTS_NOTE)
        for a in answers:
            typer.echo(f"[{a.time:7.1f}s] Q: {a.question}\n           A: {a.answer}   "
                       f"(TTFT {a.ttft_ms:.1f} ms, KV {a.kv_bytes / 2**20:.2f} MiB)")
        if failure is not None:
            typer.echo(f"the stream stopped after {session.frames_seen} frames; {len(answers)} of {len(questions)} "
                       "questions were answered")
            raise failure


    @app.command()
    def bench(
        model: Annotated[str, typer.Option(help="model name or HF id/path")] = "embedded",
        video: Annotated[str, typer.Option(help="a synthetic spec (re-made per length) or a file (first N frames)")] =
        "synthetic:seed=1,frames=64",
        frames: Annotated[str, typer.Option(help="comma-separated stream lengths")] = "64,256,1024",
        policies: Annotated[str, typer.Option(help="comma-separated policy names")] = "full,sink-window,hermes",
        budget: Annotated[int | None, typer.Option(help="video tokens per layer for budgeted policies")] = 512,
        spec: Annotated[Path | None, typer.Option(
            help="PolicySpec JSON; configures the --policies entry it names")] = None,
        granularity: GranularityOption = None,
        chunk_frames: Annotated[int, typer.Option(help="frames per ingest forward")] = 4,
        frame_size: FrameSizeOption = None,
        ttft_repeats: Annotated[int, typer.Option(help="times each of the questions is asked; TTFT is the "
                                                       "median over all")] = 3,
        dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
        device: Annotated[str, typer.Option(help="cpu, auto, cuda, cuda:1, ...; with --distributed each rank "
                                                 "takes cuda:LOCAL_RANK")] = "cpu",
        device_map: DeviceMapOption = None,
        max_memory: MaxMemoryOption = None,
        offload_folder: OffloadFolderOption = None,
        gpus_per_rank: GpusPerRankOption = None,
        distributed: Annotated[bool, typer.Option(
            help="under torchrun / accelerate launch (WORLD_SIZE > 1), split the cells over the ranks; rank 0 "
                 "prints the whole table. Ranks that share a GPU, or a machine's CPU cores and memory bandwidth, "
                 "slow each other down, so timings are comparable only with one device per rank and nothing "
                 "else on it; a launch without this flag is refused for that reason")] = False,
        dist_timeout: DistTimeoutOption = 3600.0,
        out: Annotated[Path | None, typer.Option(
            help="also write the rows to this new folder (rows.parquet, rows.json) for hermes-lab figures "
                 "--bench")] = None,
        overwrite: OverwriteOption = False,
        trust_remote_code: TrustRemoteCodeOption = False,
        allow_pickle_weights: AllowPickleOption = False,
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list of rows")] = False,
    ) -> None:
        """TTFT, ingest time per frame, KV bytes and peak RSS for each policy and stream length, in one run.

        With --distributed under torchrun / accelerate launch, the cells are split over the ranks."""
        from hermes_policy.bench import (
            BenchError,
            BenchRow,
            Cell,
            bench_distributed,
            check_arguments,
            format_table,
            measure,
            parse_int_list,
            plan_cells,
            rows_json,
            warm_up,
            write_rows,
        )
        from hermes_policy.distributed import finalise, initialise, launch_for, place_rank, share_threads

        # everything that can be wrong with the arguments fails before the (slow) model load
        torch_dtype = parse_dtype(dtype)
        names = [p.strip() for p in policies.split(",") if p.strip()]
        lengths = parse_int_list(frames, "frames")
        size = None if frame_size is None else parse_frame_size(frame_size)
        if ttft_repeats < 1:
            raise BenchError(f"--ttft-repeats must be at least 1, got {ttft_repeats}")
        check_arguments(names, budget, spec, video, lengths, size, granularity)
        if out is not None:
            check_output(out, overwrite, BenchError)
        cells = plan_cells(names, lengths)
        placement = placement_from_options(device, device_map, max_memory, offload_folder)
        env = launch_for(dist_timeout, placement, gpus_per_rank, BenchError)
        if out is not None and env.is_main:  # rank 0 writes the rows
            hold_output_lock(out, BenchError)
        if env.distributed and not distributed:
            # refused rather than run on rank 0 alone: N launched processes of which N-1 silently do nothing
            # would hide a mistake, and N unaware copies would time each other's contention
            if not env.is_main:
                raise typer.Exit(2)  # rank 0 says why, once
            raise BenchError(f"bench was launched on {env.world_size} ranks without --distributed: pass "
                             "--distributed to split the cells over them, or run hermes-lab bench without a "
                             "launcher (ranks timing on shared devices would slow each other down)")
        if distributed and not env.distributed:
            print("note: --distributed without torchrun / accelerate launch (WORLD_SIZE 1): running as one process",
                  file=sys.stderr)
        initialise(env, dist_timeout, gpus_per_rank)
        try:
            share_threads(env)
            adapter = load_model(model, dtype=torch_dtype, placement=place_rank(env, placement, device, gpus_per_rank),
                                 trust_remote_code=trust_remote_code, allow_pickle=allow_pickle_weights)

            warm_up(adapter, video, chunk_frames, size)

            def run(cell: Cell, progress: bool = True) -> BenchRow:
                return measure(adapter, cell, video, budget, spec, chunk_frames, progress=progress, size=size,
                               granularity=granularity,
                               ttft_repeats=ttft_repeats)

            if env.distributed:
                # per-cell bars from several ranks would interleave on one terminal: rank 0 draws one over all
                rows = bench_distributed(env, cells, lambda c: run(c, progress=False), dist_timeout,
                                         show_progress=not as_json)
                if rows is None:  # every rank but 0 prints nothing
                    return
            else:
                rows = []
                for cell in cells:
                    rows.append(run(cell))
                    if not as_json:
                        print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr)
        finally:
            finalise()
        if out is not None:
            write_rows(out, rows, model)
        typer.echo(rows_json(rows) if as_json else format_table(rows))
        if out is not None and not as_json:
            typer.echo(f"wrote {out}/rows.parquet and rows.json")


__all__ = ["HermesError", "TimedQuestion", "register", "run_stream"]
