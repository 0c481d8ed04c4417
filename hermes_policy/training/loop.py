"""The training loop: what a run learns per backbone (:class:`TrainingRun`), :func:`train`, and the
held-out letter accuracy it logs as it goes (:func:`quick_eval`)."""

from __future__ import annotations

import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hermes_policy.data.questions import Question, questions_at
from hermes_policy.errors import HermesError
from hermes_policy.eval.scoring import letter_token_ids, score_letters
from hermes_policy.mc_format import OPTION_LETTERS, decode_to_opener, format_question
from hermes_policy.models.byte_tokenizer import bpe_tokenizer
from hermes_policy.models.frontend import ConvFrontend, ConvFrontendConfig, load_frontend, save_frontend
from hermes_policy.models.scratch import build_scratch, load_scratch, save_scratch
from hermes_policy.models.smollm2 import load_smollm2
from hermes_policy.training.batching import Batch, Batcher
from hermes_policy.training.checkpoint import has_checkpoint, missing_parts, restore_checkpoint, write_checkpoint
from hermes_policy.training.config import TrainConfig
from hermes_policy.training.samples import Sample, align_sample, qa_sample, tokenizer_corpus, vision_batch
from hermes_policy.video.synthetic import COLOURS, SHAPES, SyntheticVideo

CurvePlotter = Callable[[Path, Path, str], Path]
"""``plot(curve.jsonl, out.png, title) -> out.png``, e.g. ``analysis.training_curves.plot_curve``."""


# ------------------------------------------------------------------ evaluate
def _letter_read(model, batcher: Batcher, batch: Batch, mc_answer: str) -> tuple[str, torch.Tensor]:
    """What the model wrote before its answer letter ("" for ``letter``, "red (" for ``word-letter``) and the
    (vocab,) logits of the letter, for a one-question batch (:meth:`Sample.single`), greedy."""
    first = int((batch.labels[0] != -100).nonzero()[0])
    embeds, positions = batch.embeds[:, :first], batch.positions[:, :first]
    logits = model(**batch.model_inputs(first)).logits[0, -1]
    if mc_answer == "letter":
        return "", logits

    def feed(ids: list[int]) -> torch.Tensor:
        # one stream, one question: the mask is plain causal, which the model builds itself
        nonlocal embeds, positions
        new = torch.tensor(ids)
        embeds = torch.cat([embeds, batcher.embed(new)[None].to(embeds.dtype)], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1 + torch.arange(len(ids))[None]], dim=1)
        return model(inputs_embeds=embeds, position_ids=positions).logits[0, -1]

    ids, logits = decode_to_opener(logits, feed, batcher.tokenizer, stop_ids=batcher.end_ids.tolist())
    return batcher.tokenizer.decode(ids), logits


def answer_logits(model, batcher: Batcher, batch: Batch, mc_answer: str) -> torch.Tensor:
    """(vocab,) logits of the answer letter of a one-question batch (:meth:`Sample.single`), greedy.

    ``letter``: at the first answer token; ``word-letter``: after the model's own word and the opener.
    """
    return _letter_read(model, batcher, batch, mc_answer)[1]


@torch.no_grad()
def quick_eval(model, batcher: Batcher, cfg: TrainConfig, n: int, length: int, seed: int) -> dict[str, float]:
    """Letter accuracy per category on held-out clips of ``length`` frames (one full forward each).

    The letter is read as the evaluation reads it (:class:`hermes_policy.eval.scoring.LetterScorer`): the same
    token ids per option letter, resolved in the context the letter follows, so the curve and ``eval`` agree.
    """
    rng = random.Random(seed)
    correct: dict[str, list[int]] = {}
    for _ in range(n):
        video = SyntheticVideo(seed=10**9 + rng.randrange(10**6), frames=length, fps=cfg.fps,
                               width=cfg.frame_size, height=cfg.frame_size)
        frames = [f.image for f in video.frames()]
        candidates = questions_at(video.events, length - 1, rng)
        q: Question = rng.choice(candidates)
        question = format_question(q.question, q.options)
        batch = batcher([Sample.single(frames, question, q.answer, q.category)])
        written, logits = _letter_read(model, batcher, batch, cfg.mc_answer)
        groups = letter_token_ids(batcher.tokenizer, batcher.template.question_text(question) + written,
                                  len(q.options))
        scores = score_letters(logits, groups, batcher.tokenizer, ttft_ms=0.0).scores
        correct.setdefault(q.category, []).append(int(OPTION_LETTERS[int(scores.argmax())] == q.answer))
    return {c: sum(v) / len(v) for c, v in correct.items()} | {"n": n, "frames": length}


# --------------------------------------------------------------------- train
def _lr(step: int, cfg: TrainConfig) -> float:
    """Warm-up then cosine decay, restarted at each stage."""
    base, start, span = {
        "vision": (cfg.vision_lr, 0, cfg.vision_steps),
        "align": (cfg.align_lr, cfg.vision_steps, cfg.align_steps),
        "qa": (cfg.qa_lr, cfg.vision_steps + cfg.align_steps, cfg.qa_steps),
    }[cfg.stage(step)]
    t = step - start
    warm = min(1.0, (t + 1) / cfg.warmup)
    return base * warm * 0.5 * (1 + math.cos(math.pi * min(1.0, t / max(span, 1))))


class TrainingRun:
    """What a training run learns, per backbone: the LM (frozen or not), tokenizer and front end."""

    def __init__(self, cfg: TrainConfig, checkpoint: Path | None) -> None:
        self.cfg = cfg
        # a resumed run continues its own checkpoint; a fresh one may start from another run's weights
        checkpoint = checkpoint if checkpoint is not None else (Path(cfg.init_from) if cfg.init_from else None)
        if cfg.backbone == "smollm2":
            self.model, self.tokenizer = load_smollm2(dtype=torch.bfloat16)
            self.model.requires_grad_(False)
            if checkpoint is not None:
                self.frontend = load_frontend(checkpoint).train()
            else:
                norm = float(self.model.get_input_embeddings().weight.detach().float().norm(dim=-1).mean())
                self.frontend = ConvFrontend(ConvFrontendConfig(
                    hidden_size=self.model.config.hidden_size, input_size=cfg.frame_size, grid=cfg.grid,
                    target_norm=norm, seed=cfg.seed))
            self.trainable = list(self.frontend.parameters())
        else:
            if checkpoint is not None:
                adapter = load_scratch(checkpoint, "embedded")
                self.model, self.tokenizer, self.frontend = adapter.model, adapter.tokenizer, adapter.frontend
            else:
                self.tokenizer = bpe_tokenizer(tokenizer_corpus(cfg), cfg.scratch.vocab_size)
                self.model, self.frontend = build_scratch(cfg.scratch, self.tokenizer, cfg.seed)
            self.model.train()
            self.frontend.train()
            self.trainable = [*self.model.parameters(), *self.frontend.parameters()]

        self.grid = self.frontend.config.grid
        self.bottleneck = bool(getattr(self.frontend.config, "concepts", 0))
        if self.bottleneck and self.frontend.config.concepts != len(COLOURS) + len(SHAPES):
            raise ValueError(f"the concept bottleneck needs {len(COLOURS) + len(SHAPES)} concepts")
        # without a bottleneck, stage 0 supervises the tokens through a throw-away head
        # (LayerNorm first because front-end tokens are pinned to a small norm)
        torch.manual_seed(cfg.seed)
        self.vision_head = torch.nn.Sequential(torch.nn.LayerNorm(self.frontend.config.hidden_size),
                                               torch.nn.Linear(self.frontend.config.hidden_size,
                                                               len(COLOURS) + len(SHAPES)))

    @property
    def vision_parameters(self) -> list[torch.nn.Parameter]:
        if self.bottleneck:
            return self.frontend.encoder_parameters()
        return [*self.frontend.parameters(), *self.vision_head.parameters()]

    def enter_lm_stages(self) -> None:
        """Freeze what sees pixels (bottleneck only): the concepts keep the meaning stage 0 gave them."""
        if self.bottleneck:
            for p in self.frontend.encoder_parameters():
                p.requires_grad_(False)

    def vision_loss(self, frames: np.ndarray, targets: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            if self.bottleneck:
                logits = self.frontend.concept_logits(frames)
            else:
                logits = self.vision_head(self.frontend(frames))
        return torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), targets)

    def train_mode(self, on: bool) -> None:
        self.frontend.train(on)
        if self.cfg.backbone == "scratch":
            self.model.train(on)

    def save(self, directory: Path, extra: dict | None = None, checkpoint: bool = False) -> None:
        """Write the model as it loads by path; a ``checkpoint`` keeps the fp32 masters (else bf16, as shipped)."""
        if self.cfg.backbone == "smollm2":
            save_frontend(self.frontend, directory, extra=extra)
        else:
            save_scratch(self.model, self.tokenizer, self.frontend, directory, extra=extra,
                         dtype=torch.float32 if checkpoint else torch.bfloat16)


def _stage_loss(run: TrainingRun, batcher: Batcher, rng: random.Random, step: int) -> torch.Tensor:
    """The loss of one fresh batch of ``step``'s stage (the samples are drawn from ``rng`` here)."""
    cfg = run.cfg
    stage = cfg.stage(step)
    if stage == "vision":
        return run.vision_loss(*vision_batch(rng, cfg, run.grid))
    if stage == "align":
        samples = [align_sample(rng, cfg) for _ in range(cfg.batch_size)]
    else:
        late = step - cfg.vision_steps - cfg.align_steps >= cfg.late_from
        share = cfg.late_caption_share if late else cfg.caption_share
        samples = [qa_sample(rng, cfg, share) for _ in range(cfg.batch_size)]
    batch = batcher(samples)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return run.model(**batch.model_inputs(), labels=batch.labels).loss


def train(cfg: TrainConfig, run_dir: Path, resume: bool = False, progress: bool = True,
          plot: CurvePlotter | None = None) -> Path:
    """Train; returns the directory of the final model (``run_dir/final``).

    ``plot`` draws ``curve.jsonl`` to ``curve.png`` at the end (``hermes-lab train-embedded`` passes
    ``analysis.training_curves.plot_curve``, which the runtime may not import); None: no picture.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    ckpt = run_dir / "checkpoint"
    if resume and ckpt.exists() and not has_checkpoint(ckpt, cfg.backbone):
        # half a checkpoint would fail deep in a load; say what is missing instead
        raise HermesError(f"--resume: {ckpt} is not a complete {cfg.backbone} checkpoint (missing "
                          f"{', '.join(missing_parts(ckpt, cfg.backbone))}); remove it to start over, or restore it")
    if resume and not ckpt.exists():
        print(f"note: --resume: {ckpt} holds no checkpoint; starting from step 0", file=sys.stderr)
    resuming = resume and has_checkpoint(ckpt, cfg.backbone)
    run = TrainingRun(cfg, ckpt if resuming else None)
    optimiser = torch.optim.AdamW(run.trainable, lr=cfg.align_lr, weight_decay=0.01)
    vision_optimiser = torch.optim.AdamW(run.vision_parameters, lr=cfg.vision_lr, weight_decay=0.01)
    step = 0
    rng = random.Random(cfg.seed)
    if resuming:
        step = restore_checkpoint(ckpt, run, (optimiser, vision_optimiser), rng)
        print(f"resumed at step {step}", file=sys.stderr)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    batcher = Batcher(run.model, run.tokenizer, run.frontend)
    bar = tqdm(total=cfg.total_steps, initial=step, desc=f"train-embedded ({cfg.backbone})", file=sys.stderr,
               disable=not progress)
    started = time.perf_counter()
    with open(run_dir / "curve.jsonl", "a") as curve, bar:
        while step < cfg.total_steps:
            stage = cfg.stage(step)
            if stage == "vision":
                opt, params = vision_optimiser, vision_optimiser.param_groups[0]["params"]
            else:
                run.enter_lm_stages()  # idempotent; also right after resuming past stage 0
                opt, params = optimiser, [p for p in run.trainable if p.requires_grad]
            loss = _stage_loss(run, batcher, rng, step)
            for group in opt.param_groups:
                group["lr"] = _lr(step, cfg)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            step += 1
            record = {"step": step, "stage": stage, "loss": round(loss.item(), 4), "lr": _lr(step - 1, cfg),
                      "seconds": round(time.perf_counter() - started, 1)}
            if step % cfg.eval_every == 0 or step == cfg.total_steps:
                run.train_mode(False)
                record["eval"] = [quick_eval(run.model, batcher, cfg, cfg.eval_questions, n, seed=cfg.seed + 1)
                                  for n in cfg.eval_lengths]
                run.train_mode(True)
            curve.write(json.dumps(record) + "\n")
            curve.flush()
            bar.update(1)
            bar.set_postfix(stage=stage, loss=f"{loss.item():.3f}")
            if step % cfg.checkpoint_every == 0 or step == cfg.total_steps:
                write_checkpoint(run, (optimiser, vision_optimiser), step, rng, ckpt)
    final = run_dir / "final"
    run.train_mode(False)
    run.save(final, extra={"training": asdict(cfg), "steps": step})
    if plot is not None:
        plot(run_dir / "curve.jsonl", run_dir / "curve.png", f"{cfg.backbone} backbone")
    return final


__all__ = ["CurvePlotter", "TrainingRun", "answer_logits", "quick_eval", "train"]
