"""``hermes-lab train-embedded``: train the embedded model, optionally installing it as the one that ships."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hermes_policy.cli_options import bounded, share_option
from hermes_policy.errors import HermesError
from hermes_policy.models.embedded import EMBEDDED_DIR, SMOLLM2_FRONTEND_DIR
from hermes_policy.outputs import check_output, hold_output_lock
from hermes_policy.training.config import TrainConfig
from hermes_policy.training.install import check_mc_scoring, install_model
from hermes_policy.training.loop import CurvePlotter, train


def register(app: typer.Typer, plot_curve: CurvePlotter | None = None) -> None:
    """Add ``train-embedded`` to the ``hermes-lab`` app.

    ``plot_curve`` draws the run's ``curve.png`` at the end (``analysis.training_curves.plot_curve``);
    the composition passes it because the runtime may not import ``analysis``. None: no picture.
    """

    @app.command("train-embedded")
    def train_embedded(
        run_dir: Annotated[Path, typer.Option(help="where checkpoints, curve.jsonl and the final model go")] =
        Path("runs/train-embedded"),
        backbone: Annotated[str, typer.Option(help="scratch (the shipped `embedded`) or smollm2 "
                                                   "(`embedded-smollm2`: frozen LM, front end only)")] = "scratch",
        resume: Annotated[bool, typer.Option(help="continue from the run directory's checkpoint")] = False,
        seed: Annotated[int, typer.Option(help="seed of the weights and of the training streams")] = 0,
        vision_steps: Annotated[int, typer.Option(help="stage 0: per-cell colour/shape steps")] = 1200,
        align_steps: Annotated[int, typer.Option(help="stage 1: frame captioning steps")] = 300,
        qa_steps: Annotated[int, typer.Option(help="stage 2: streaming QA steps")] = 2000,
        batch_size: Annotated[int, typer.Option(help="streams per optimiser step")] = 32,
        max_clip: Annotated[int, typer.Option(help="longest training clip in frames")] = 24,
        min_clip: Annotated[int, typer.Option(help="shortest training clip in frames")] = 2,
        init_from: Annotated[Path | None, typer.Option(help="start from this model directory's weights "
                                                               "(a run's checkpoint/ or final/)")] = None,
        branches: Annotated[int, typer.Option(help="questions per training stream (QA stage), asked at random "
                                                   "moments and trained in one packed forward")] = 1,
        gap_share: Annotated[float, share_option("--gap-share", "share of streams whose frame positions are spread by "
                                                 "random gaps (length generalisation)")] = 0.0,
        qa_lr: Annotated[float, bounded("--qa-lr", "peak learning rate of the QA stage, in", 0, 1,
                                        low_open=True)] = 1e-3,
        mc_share: Annotated[float, share_option("--mc-share", "share of questions answered by letter")] = 0.5,
        hard_backward: Annotated[float, share_option(
            "--hard-backward", "share of backward questions whose answer is nowhere on screen when asked (no "
            "reading-the-frame shortcut)")] = 0.0,
        mc_answer: Annotated[str, typer.Option(help="multiple-choice answers: letter (\"B\") or word-letter "
                                                    "(\"red (B)\": the word, then its letter)")] = "letter",
        match_share: Annotated[float, share_option(
            "--match-share", "share of questions that drill reading the options: \"Which option is red?\" -> "
            "\"red (B)\" (word-letter only)")] = 0.0,
        caption_share: Annotated[float | None, share_option(
            "--caption-share",
            "share of QA-stage samples that caption the frame, throughout (default 0.3, then 0.1)")] = None,
        category_weights: Annotated[str, typer.Option(help="how often each question category is drawn")] =
        "real-time=1,backward=1,counting=1",
        eval_lengths: Annotated[str, typer.Option(help="clip lengths (frames) of the in-training evaluation")] =
        "24,96",
        eval_every: Annotated[int, typer.Option(help="steps between in-training evaluations")] = 500,
        install: Annotated[bool, typer.Option(help="copy the result into the package as the model it trains")] =
        False,
        mc_scoring: Annotated[str | None, typer.Option(help="with --install: how `eval --scoring auto` reads "
                                                               "the installed model (letter, word-letter, cloze; "
                                                               "default: its training format)")] = None,
    ) -> None:
        """Train the embedded model on synthetic streams (one-time; ~1 h on 2 CPU cores, never part of CI)."""
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
        check_output(run_dir, False, HermesError, what="--run-dir", resumable=True)  # resume has its own rule
        hold_output_lock(run_dir, HermesError, what="--run-dir")
        final = train(cfg, run_dir, resume=resume, plot=plot_curve)
        typer.echo(f"trained -> {final} (learning curve: {run_dir / 'curve.jsonl'})")
        if install:
            target = EMBEDDED_DIR if backbone == "scratch" else SMOLLM2_FRONTEND_DIR
            install_model(final, target, mc_scoring)
            typer.echo(f"installed as `{'embedded' if backbone == 'scratch' else 'embedded-smollm2'}` in {target}")


__all__ = ["register"]
