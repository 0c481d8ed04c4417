"""``hermes-lab stream``: run a video through a model under a memory policy and ask questions."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Optional

import typer
from tqdm import tqdm

from hermes_policy.errors import HermesError, PolicyError, SessionError
from hermes_policy.models import load_model
from hermes_policy.models.registry import DTYPES, parse_dtype  # noqa: F401  (DTYPES re-exported)
from hermes_policy.policies import POLICIES, policy_from_args
from hermes_policy.session import Answer, SessionConfig, StreamingSession
from hermes_policy.timeline import TIME_TOLERANCE, interleave
from hermes_policy.video import open_video



@dataclass(frozen=True)
class TimedQuestion:
    time: float
    question: str

    @classmethod
    def parse(cls, text: str) -> "TimedQuestion":
        """``"T:question"`` with T in seconds of stream time."""
        head, sep, question = text.partition(":")
        try:
            t = float(head)
        except ValueError:
            t = -1.0
        if not sep or t < 0 or not question.strip():
            raise SessionError(f"--ask takes 'SECONDS:question', e.g. '30:What is happening?'; got {text!r}")
        return cls(t, question.strip())


def run_stream(
    session: StreamingSession, source, questions: list[TimedQuestion], show_progress: bool = True
) -> list[Answer]:
    """Stream ``source`` into ``session``, asking each question once stream time reaches it."""
    answers: list[Answer] = []
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
        model: Annotated[str, typer.Option(help="embedded, tiny-qwen2-vl, tiny-qwen2.5-vl, tiny-llava-ov, "
                                                 "tiny-embedded, or a HF id/path")] = "embedded",
        video: Annotated[str, typer.Option(help="a video file, or synthetic:seed=S,frames=N[,fps=F,size=WxH]")] =
        "synthetic:seed=1,frames=64",
        policy: Annotated[str, typer.Option(help=f"one of: {', '.join(sorted(POLICIES))}")] = "full",
        budget: Annotated[Optional[int], typer.Option(help="video tokens kept per layer")] = None,
        spec: Annotated[Optional[Path], typer.Option(help="a PolicySpec JSON (overrides --policy; --budget overrides its budget)")] = None,
        fps: Annotated[Optional[float], typer.Option(help="sampling rate in frames per second")] = None,
        ask: Annotated[Optional[list[str]], typer.Option(help="'SECONDS:question', repeatable")] = None,
        chunk_frames: Annotated[int, typer.Option(help="frames prefilled per forward")] = 4,
        max_new_tokens: Annotated[int, typer.Option(help="answer length limit")] = 32,
        reindex: Annotated[str, typer.Option(help="lazy | eager | off")] = "lazy",
        dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
        device: Annotated[str, typer.Option(help="cpu, cuda, cuda:1, ...")] = "cpu",
        trust_remote_code: Annotated[bool, typer.Option(help="allow a checkpoint's own Python code")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="print one JSON object")] = False,
    ) -> None:
        """Stream a video through a model under a memory policy, asking questions along the way."""
        torch_dtype = parse_dtype(dtype)
        # without --ask, one question once the whole stream is in
        questions = [TimedQuestion.parse(a) for a in ask] if ask else [TimedQuestion(float("inf"), "What is happening?")]
        mem_policy = policy_from_args(policy, budget, spec)
        config = SessionConfig(chunk_frames=chunk_frames, max_new_tokens=max_new_tokens, reindex=reindex)
        source = open_video(video, fps=fps)
        adapter = load_model(model, dtype=torch_dtype, device=device, trust_remote_code=trust_remote_code)
        session = StreamingSession(adapter, mem_policy, config)
        answers = run_stream(session, source, questions)
        result = {
            "model": model,
            "policy": mem_policy.name,
            "budget": getattr(mem_policy, "budget", None),
            "frames": session.frames_seen,
            "kv_bytes": session.kv_bytes,
            "answers": [a.to_dict() for a in answers],
        }
        if as_json:
            typer.echo(json.dumps(result))
            return
        typer.echo(f"{model} | policy {mem_policy.name} (budget {result['budget']}) | {session.frames_seen} frames "
                   f"| KV {session.kv_bytes / 2**20:.2f} MiB")
        for a in answers:
            typer.echo(f"[{a.time:7.1f}s] Q: {a.question}\n           A: {a.answer}   "
                       f"(TTFT {a.ttft_ms:.1f} ms, KV {a.kv_bytes / 2**20:.2f} MiB)")


    @app.command()
    def bench(
        model: Annotated[str, typer.Option(help="model name or HF id/path")] = "embedded",
        video: Annotated[str, typer.Option(help="a synthetic spec (re-made per length) or a file (first N frames)")] =
        "synthetic:seed=1,frames=64",
        frames: Annotated[str, typer.Option(help="comma-separated stream lengths")] = "64,256,1024",
        policies: Annotated[str, typer.Option(help="comma-separated policy names")] = "full,sink-window,hermes",
        budget: Annotated[Optional[int], typer.Option(help="video tokens per layer for budgeted policies")] = 512,
        spec: Annotated[Optional[Path], typer.Option(help="PolicySpec JSON; configures the --policies entry it names")] = None,
        chunk_frames: Annotated[int, typer.Option(help="frames per ingest forward")] = 4,
        dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 | float16")] = "auto",
        device: Annotated[str, typer.Option(help="torch device")] = "cpu",
        as_json: Annotated[bool, typer.Option("--json", help="print a JSON list of rows")] = False,
    ) -> None:
        """TTFT, ingest time per frame, KV bytes and peak RSS for each policy and stream length, in one run."""
        from hermes_policy.bench import format_table, parse_int_list, rows_json, run_cell

        torch_dtype = parse_dtype(dtype)
        lengths = parse_int_list(frames, "frames")
        names = [p.strip() for p in policies.split(",") if p.strip()]
        for name in names:  # fail on a bad policy before the (slow) model load
            if name not in POLICIES:
                raise PolicyError(f"unknown policy {name!r}; available: {', '.join(sorted(POLICIES))}")
        adapter = load_model(model, dtype=torch_dtype, device=device)
        rows = []
        for n in lengths:
            for name in names:
                rows.append(run_cell(adapter, video, n, name, None if name == "full" else budget, spec, chunk_frames))
                if not as_json:
                    print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr)
        typer.echo(rows_json(rows) if as_json else format_table(rows))


    @app.command("train-embedded")
    def train_embedded(
        run_dir: Annotated[Path, typer.Option(help="where checkpoints, curve.jsonl and the final model go")] =
        Path("runs/train-embedded"),
        backbone: Annotated[str, typer.Option(help="scratch (the shipped `embedded`) or smollm2 "
                                                   "(`embedded-smollm2`: frozen LM, front end only)")] = "scratch",
        resume: Annotated[bool, typer.Option(help="continue from the run directory's checkpoint")] = False,
        seed: Annotated[int, typer.Option()] = 0,
        vision_steps: Annotated[int, typer.Option(help="stage 0: per-cell colour/shape steps")] = 1200,
        align_steps: Annotated[int, typer.Option(help="stage 1: frame captioning steps")] = 300,
        qa_steps: Annotated[int, typer.Option(help="stage 2: streaming QA steps")] = 2000,
        batch_size: Annotated[int, typer.Option()] = 32,
        max_clip: Annotated[int, typer.Option(help="longest training clip in frames")] = 24,
        min_clip: Annotated[int, typer.Option(help="shortest training clip in frames")] = 2,
        init_from: Annotated[Optional[Path], typer.Option(help="start from this model directory's weights "
                                                               "(a run's checkpoint/ or final/)")] = None,
        branches: Annotated[int, typer.Option(help="questions per training stream (QA stage), asked at random "
                                                   "moments and trained in one packed forward")] = 1,
        gap_share: Annotated[float, typer.Option(help="share of streams whose frame positions are spread by "
                                                      "random gaps (length generalisation)")] = 0.0,
        qa_lr: Annotated[float, typer.Option(help="peak learning rate of the QA stage")] = 1e-3,
        mc_share: Annotated[float, typer.Option(help="share of questions answered by letter")] = 0.5,
        hard_backward: Annotated[float, typer.Option(help="share of backward questions whose answer is nowhere "
                                                          "on screen when asked (no reading-the-frame shortcut)")] = 0.0,
        mc_answer: Annotated[str, typer.Option(help="multiple-choice answers: letter (\"B\") or word-letter "
                                                    "(\"red (B)\": the word, then its letter)")] = "letter",
        match_share: Annotated[float, typer.Option(help="share of questions that drill reading the options: "
                                                        "\"Which option is red?\" -> \"red (B)\" "
                                                        "(word-letter only)")] = 0.0,
        caption_share: Annotated[Optional[float], typer.Option(
            help="share of QA-stage samples that caption the frame, throughout (default 0.3, then 0.1)")] = None,
        category_weights: Annotated[str, typer.Option(help="how often each question category is drawn")] =
        "real-time=1,backward=1,counting=1",
        eval_lengths: Annotated[str, typer.Option(help="clip lengths (frames) of the in-training evaluation")] =
        "24,96",
        eval_every: Annotated[int, typer.Option(help="steps between in-training evaluations")] = 500,
        install: Annotated[bool, typer.Option(help="copy the result into the package as the model it trains")] =
        False,
        mc_scoring: Annotated[Optional[str], typer.Option(help="with --install: how `eval --scoring auto` reads "
                                                               "the installed model (letter, word-letter, cloze; "
                                                               "default: its training format)")] = None,
    ) -> None:
        """Train the embedded model on synthetic streams (one-time; ~1 h on 2 CPU cores, never part of CI)."""
        from hermes_policy.models.embedded import EMBEDDED_DIR, SMOLLM2_FRONTEND_DIR
        from hermes_policy.models.train_embedded import TrainConfig, check_mc_scoring, install_model, train

        try:
            check_mc_scoring(mc_scoring)  # before the training, not after it
            weights = {k.strip(): float(v) for k, v in (kv.split("=") for kv in category_weights.split(","))}
            shares = {} if caption_share is None else {"caption_share": caption_share,
                                                       "late_caption_share": caption_share}
            cfg = TrainConfig(backbone=backbone, seed=seed, vision_steps=vision_steps, align_steps=align_steps,
                              qa_steps=qa_steps, batch_size=batch_size, min_clip=min_clip, max_clip=max_clip,
                              init_from=None if init_from is None else str(init_from), branches=branches,
                              gap_share=gap_share, qa_lr=qa_lr, mc_share=mc_share, hard_backward=hard_backward,
                              mc_answer=mc_answer, match_share=match_share,
                              category_weights=weights,
                              eval_lengths=tuple(int(n) for n in eval_lengths.split(",")), eval_every=eval_every,
                              **shares)
        except ValueError as e:
            raise HermesError(f"train-embedded: {e}") from None
        final = train(cfg, run_dir, resume=resume)
        typer.echo(f"trained -> {final} (learning curve: {run_dir / 'curve.jsonl'})")
        if install:
            target = EMBEDDED_DIR if backbone == "scratch" else SMOLLM2_FRONTEND_DIR
            install_model(final, target, mc_scoring)
            typer.echo(f"installed as `{'embedded' if backbone == 'scratch' else 'embedded-smollm2'}` in {target}")


__all__ = ["HermesError", "TimedQuestion", "register", "run_stream"]
