"""Training the embedded model (``hermes-lab train-embedded``).

Two backbones, one recipe, on synthetic streams whose ground truth is known:

* ``scratch`` (what ships as ``embedded``): a ~5M-parameter Llama with its own
  BPE tokenizer (:mod:`~hermes_policy.models.scratch`), trained jointly with
  its :class:`ConvFrontend`;
* ``smollm2`` (``embedded-smollm2``): SmolLM2-135M-Instruct frozen (bf16), only
  the front end learns, LLaVA-style.

Three stages, because one answer letter per sample is far too little signal:

0. ``vision``: the front end alone learns which colours and shapes have their
   centre in each grid cell (multi-label, dense: every token is supervised).
   The scratch model's front end is a concept bottleneck, so these logits are
   what the LM reads, and the pixel encoder is frozen after this stage; the
   SmolLM2 front end learns them through a throw-away head. Without this stage
   the front end learned to see only slowly through the LM's loss (after 500
   steps of captioning and QA, captions still named the wrong colours).

1. ``align``: one frame, "Describe the current frame." -> a dense caption
   ("red circle top left, blue square bottom right."), loss on every caption token.
   Single frames make a copy-from-the-previous-frame shortcut impossible.
2. ``qa``: clips of mixed length, a question at the end in the exact prompt
   layout the streaming session uses (system prefix, frames, question), answered
   by the word ("red") or, for multiple choice, by the letter; half the batch
   keeps captioning the current frame so alignment is not forgotten, at a lower
   learning rate.

Everything is seeded; a checkpoint (front end, optimiser, step, RNG states) is
written every ``checkpoint_every`` steps and ``--resume`` continues from the
latest. The learning curve goes to ``curve.jsonl`` (and, at the end, ``curve.png``) in the run directory.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from hermes_policy.atomic import atomic_dir
from hermes_policy.data.questions import CATEGORIES, Question, questions_at
from hermes_policy.models.base import DEFAULT_SYSTEM_PROMPT, PromptTemplate
from hermes_policy.models.frontend import ConvFrontend, ConvFrontendConfig, load_frontend, save_frontend
from hermes_policy.models.byte_tokenizer import bpe_tokenizer
from hermes_policy.models.scratch import ScratchConfig, build_scratch, load_scratch, save_scratch
from hermes_policy.models.smollm2 import load_smollm2
from hermes_policy.mc_format import MC_ANSWERS, OPTION_LETTERS, decode_to_opener, format_question, word_letter
from hermes_policy.video.events import FrameState
from hermes_policy.video.synthetic import COLOURS, SHAPES, SyntheticVideo, render_state

CAPTION_QUESTION = "Describe the current frame."
MATCH_QUESTION = "Which option is {}?"
BACKBONES = ("scratch", "smollm2")


@dataclass
class TrainConfig:
    """Hyper-parameters of all stages (defaults are what produced the shipped ``embedded`` model).

    In the QA stage ``caption_share`` of the samples keep captioning the current
    frame; after ``late_from`` QA steps that drops to ``late_caption_share``:
    a caption has ~10x the target tokens of an answer, so at 0.3 captions took
    most of the gradient and answers learned slowly.

    ``hard_backward`` is the share of backward questions drawn, where possible, from those whose
    answer is nowhere on screen when asked: in short clips the first object is often still visible,
    and the shipped model had learned to answer "what colour was the first shape" from the current
    frame (15 of 20 answers were an on-screen colour, 3 the right one).

    ``mc_answer`` is how multiple-choice questions are answered: ``letter`` ("B") or ``word-letter``
    ("red (B)": the free-form answer, then its option letter). A 6-layer model that has to fetch a colour
    from the first frame and match it against the options within one token's depth named the colour
    (100% in word form) but picked its letter at chance; written out first, the word is in context
    when the letter is chosen. The evaluation reads the letter the same way (:class:`WordLetterScorer`).

    ``match_share`` of the QA questions drill that read on their own: "Which option is purple?" over the
    question's options, answered "purple (D)". Written out, the word still had to be matched against the
    option list; teacher-forced on training clips, the letter after a correct "purple" was right 46% of the
    time for "What colour was the first shape that appeared?", where the answer is not on screen, against
    86-100% for real-time colours, where it is: the model likely matched options against the frame.

    ``eval_lengths`` are the clip lengths (frames) of the held-out evaluation
    logged in the curve; the longest is several times ``max_clip`` on purpose.
    """

    backbone: str = "scratch"
    seed: int = 0
    batch_size: int = 32
    vision_steps: int = 1200
    vision_lr: float = 2e-3
    align_steps: int = 300
    qa_steps: int = 2000
    align_lr: float = 1e-3
    qa_lr: float = 1e-3
    warmup: int = 50
    min_clip: int = 2
    max_clip: int = 24
    caption_share: float = 0.3
    late_caption_share: float = 0.1
    late_from: int = 250
    mc_share: float = 0.5
    hard_backward: float = 0.0
    mc_answer: str = "letter"
    match_share: float = 0.0
    category_weights: dict[str, float] = field(
        default_factory=lambda: {"real-time": 1.0, "backward": 1.0, "counting": 1.0})
    branches: int = 1
    gap_share: float = 0.0
    max_stretch: float = 4.0
    init_from: str | None = None
    eval_every: int = 500
    eval_questions: int = 64
    eval_lengths: tuple[int, ...] = (24, 96)
    checkpoint_every: int = 50
    frame_size: int = 128
    fps: float = 2.0
    grid: int = 4
    scratch: ScratchConfig = field(default_factory=ScratchConfig)
    tokenizer_corpus: int = 4000

    def __post_init__(self) -> None:
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {', '.join(BACKBONES)}, got {self.backbone!r}")
        if not 1 <= self.min_clip <= self.max_clip:
            raise ValueError("need 1 <= min_clip <= max_clip")
        if self.batch_size < 1 or min(self.vision_steps, self.align_steps, self.qa_steps) < 0:
            raise ValueError("batch_size must be >= 1 and step counts >= 0")
        if not 0 <= self.hard_backward <= 1:
            raise ValueError("hard_backward must lie in [0, 1]")
        if self.mc_answer not in MC_ANSWERS:
            raise ValueError(f"mc_answer must be one of {', '.join(MC_ANSWERS)}, got {self.mc_answer!r}")
        if not 0 <= self.match_share <= 1 or (self.match_share and self.mc_answer != "word-letter"):
            raise ValueError("match_share must lie in [0, 1], and is for mc_answer='word-letter' only")
        if self.eval_every < 1:
            raise ValueError("eval_every must be >= 1")
        if self.branches < 1 or not 0 <= self.gap_share <= 1 or self.max_stretch < 1:
            raise ValueError("need branches >= 1, 0 <= gap_share <= 1 and max_stretch >= 1")
        unknown = set(self.category_weights) - set(CATEGORIES)
        if unknown or not any(w > 0 for w in self.category_weights.values()) or "real-time" not in self.category_weights:
            raise ValueError(f"category_weights needs a positive weight for real-time, over {', '.join(CATEGORIES)}")
        if self.init_from is not None and not Path(self.init_from).is_dir():
            raise ValueError(f"init_from {self.init_from!r} is not a model directory")
        if isinstance(self.scratch, dict):  # read back from config.json
            object.__setattr__(self, "scratch", ScratchConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                                 for k, v in self.scratch.items()}))

    @property
    def tokens_per_frame(self) -> int:
        return (cfg_grid := self.scratch.grid if self.backbone == "scratch" else self.grid) * cfg_grid

    @property
    def total_steps(self) -> int:
        return self.vision_steps + self.align_steps + self.qa_steps

    def stage(self, step: int) -> str:
        """``vision``, ``align`` or ``qa``: the stage a (0-based) step belongs to."""
        if step < self.vision_steps:
            return "vision"
        return "align" if step < self.vision_steps + self.align_steps else "qa"


# ------------------------------------------------------------------ captions
def _where(x: float, y: float) -> str:
    row = "top" if y < 1 / 3 else "bottom" if y > 2 / 3 else "middle"
    col = "left" if x < 1 / 3 else "right" if x > 2 / 3 else "centre"
    return "centre" if (row, col) == ("middle", "centre") else f"{row} {col}"


def caption(state: FrameState) -> str:
    """Dense caption of one frame, objects left to right: 'red circle top left, blue square centre.'"""
    if not state.objects:
        return "nothing."
    parts = [f"{o.colour} {o.shape} {_where(o.x, o.y)}" for o in sorted(state.objects, key=lambda o: o.x)]
    return ", ".join(parts) + "."


# ------------------------------------------------------------------- samples
@dataclass
class Branch:
    """One question asked after frame ``frame`` of a stream, and its target answer."""

    frame: int
    question: str
    target: str
    category: str


@dataclass
class Sample:
    """One training stream: frames after the prompt prefix, and the questions asked along it.

    Each branch sees the prefix, the frames up to its own ``frame`` and its own tokens, nothing else,
    at exactly the positions the streaming session would give it; so one forward over the stream
    trains every branch (the frames are paid for once, not once per question).
    ``gaps[f]`` extra positions are skipped before frame ``f`` (None: consecutive, as at inference).
    """

    frames: list[np.ndarray]
    branches: list[Branch]
    gaps: list[int] | None = None

    @classmethod
    def single(cls, frames: list[np.ndarray], question: str, target: str, category: str) -> "Sample":
        """A question at the end of the frames: the layout of one ask."""
        return cls(frames, [Branch(len(frames) - 1, question, target, category)])


def _clip(rng: random.Random, cfg: TrainConfig, length: int) -> SyntheticVideo:
    return SyntheticVideo(seed=rng.randrange(10**9), frames=length, fps=cfg.fps,
                          width=cfg.frame_size, height=cfg.frame_size)


def align_sample(rng: random.Random, cfg: TrainConfig) -> Sample:
    video = _clip(rng, cfg, rng.randint(1, 12))
    state = video.events.state_at(video.events.num_frames - 1)  # a random moment of a random scene
    return Sample.single([render_state(state, cfg.frame_size, cfg.frame_size)], CAPTION_QUESTION, caption(state),
                         "caption")


def on_screen(state: FrameState) -> set[str]:
    """Every colour and shape visible in a frame: the answers reading that frame alone can give."""
    return {v for o in state.objects for v in (o.colour, o.shape)}


def _branch(rng: random.Random, cfg: TrainConfig, log, frame: int, caption_share: float) -> Branch:
    """A caption, or a question of a category drawn by ``cfg.category_weights``, asked after ``frame``."""
    if rng.random() < caption_share:
        return Branch(frame, CAPTION_QUESTION, caption(log.state_at(frame)), "caption")
    pools = {c: questions_at(log, frame, rng, categories=(c,)) for c, w in cfg.category_weights.items() if w > 0}
    available = [c for c, pool in pools.items() if pool]  # real-time always has one: the shape count
    category = rng.choices(available, [cfg.category_weights[c] for c in available])[0]
    candidates = pools[category]
    if category == "backward" and rng.random() < cfg.hard_backward:
        # memory-only: the answer is on screen nowhere at the moment of asking, so reading the
        # current frame (the shortcut a short clip rewards) cannot answer it
        screen = on_screen(log.state_at(frame))
        candidates = [q for q in candidates if q.answer_text not in screen] or candidates
    q = rng.choice(candidates)
    if cfg.match_share and rng.random() < cfg.match_share:
        # the option list read on its own: the word is given, only its letter is asked
        return Branch(frame, format_question(MATCH_QUESTION.format(q.answer_text), q.options),
                      word_letter(q.answer_text, q.answer), "match")
    if rng.random() < cfg.mc_share:
        return Branch(frame, format_question(q.question, q.options), mc_target(q, cfg.mc_answer), q.category)
    return Branch(frame, q.question, q.answer_text, q.category)


def mc_target(q: Question, mc_answer: str) -> str:
    """The trained answer to a multiple-choice question: "B", or "red (B)" for ``word-letter``."""
    return q.answer if mc_answer == "letter" else word_letter(q.answer_text, q.answer)


def qa_sample(rng: random.Random, cfg: TrainConfig, caption_share: float | None = None) -> Sample:
    """A clip of ``min_clip..max_clip`` frames with ``cfg.branches`` questions at random moments.

    With one branch the question comes after the last frame. With several, the moments are drawn
    uniformly, and with probability ``cfg.gap_share`` the frames' positions are spread out by random
    gaps, so relative distances up to ``cfg.max_stretch`` times the clip's span are seen in training
    (randomised positions, for streams longer than any clip).
    """
    share = cfg.caption_share if caption_share is None else caption_share
    video = _clip(rng, cfg, rng.randint(cfg.min_clip, cfg.max_clip))
    frames = [f.image for f in video.frames()]
    log = video.events
    last = log.num_frames - 1
    if cfg.branches == 1:
        return Sample([*frames], [_branch(rng, cfg, log, last, share)])
    moments = sorted(rng.randint(0, last) for _ in range(cfg.branches - 1)) + [last]
    gaps = None
    if rng.random() < cfg.gap_share:
        tokens = cfg.tokens_per_frame
        widest = rng.randint(1, max(1, round((cfg.max_stretch - 1) * tokens)))
        gaps = [0] + [rng.randint(0, widest) for _ in range(last)]
    return Sample(frames, [_branch(rng, cfg, log, t, share) for t in moments], gaps)


def cell_targets(state: FrameState, grid: int) -> torch.Tensor:
    """(grid**2, colours + shapes) multi-hot: what has its centre in each cell, row-major."""
    target = torch.zeros(grid * grid, len(COLOURS) + len(SHAPES))
    for o in state.objects:
        cell = min(int(o.y * grid), grid - 1) * grid + min(int(o.x * grid), grid - 1)
        target[cell, list(COLOURS).index(o.colour)] = 1
        target[cell, len(COLOURS) + SHAPES.index(o.shape)] = 1
    return target


def vision_batch(rng: random.Random, cfg: TrainConfig, grid: int) -> tuple[np.ndarray, torch.Tensor]:
    """(B, H, W, 3) single frames at random moments of random scenes, and their cell targets."""
    frames, targets = [], []
    for _ in range(cfg.batch_size):
        video = _clip(rng, cfg, rng.randint(1, 12))
        state = video.events.state_at(video.events.num_frames - 1)
        frames.append(render_state(state, cfg.frame_size, cfg.frame_size))
        targets.append(cell_targets(state, grid))
    return np.stack(frames), torch.stack(targets)


# ------------------------------------------------------------------- batches
@dataclass
class Batch:
    """A padded batch. Shapes: embeds (B, L, hidden); mask (B, 1, L, L) bool, True where a query row
    may attend to a key column; positions (B, L); labels (B, L), -100 off-target.
    ``spans[i][j]`` is the (start, stop) of sample i's branch j (question and target tokens)."""

    embeds: torch.Tensor
    mask: torch.Tensor
    positions: torch.Tensor
    labels: torch.Tensor
    spans: list[list[tuple[int, int]]]

    def model_inputs(self, end: int | None = None) -> dict:
        """Keyword arguments for the LM, optionally cut to the first ``end`` tokens."""
        end = self.embeds.shape[1] if end is None else end
        return {"inputs_embeds": self.embeds[:, :end], "attention_mask": self.mask[:, :, :end, :end],
                "position_ids": self.positions[:, :end]}


class Batcher:
    """Turns samples into padded ``inputs_embeds`` + labels in the streaming prompt layout."""

    def __init__(self, model, tokenizer, frontend: torch.nn.Module) -> None:
        self.model, self.tokenizer, self.frontend = model, tokenizer, frontend
        self.template = PromptTemplate.from_tokenizer(tokenizer, DEFAULT_SYSTEM_PROMPT)
        self.embed = model.get_input_embeddings()
        self.prefix_ids = self._ids(self.template.prefix)
        self.end_ids = self._ids("<|im_end|>")

    def _ids(self, text: str) -> torch.Tensor:
        return self.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]

    def __call__(self, samples: list[Sample]) -> Batch:
        n_frames = [len(s.frames) for s in samples]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            visual = self.frontend(np.concatenate([np.stack(s.frames) for s in samples]))
        visual = visual.to(self.embed.weight.dtype).split(n_frames)
        rows = [self._row(sample, vis) for sample, vis in zip(samples, visual)]
        length = max(r[0].shape[0] for r in rows)
        batch = Batch(embeds=torch.zeros(len(rows), length, rows[0][0].shape[1], dtype=rows[0][0].dtype),
                      mask=torch.eye(length, dtype=torch.bool).repeat(len(rows), 1, 1, 1),  # pads see themselves
                      positions=torch.zeros(len(rows), length, dtype=torch.long),
                      labels=torch.full((len(rows), length), -100), spans=[r[4] for r in rows])
        for i, (embeds, mask, positions, labels, _) in enumerate(rows):
            n = embeds.shape[0]
            batch.embeds[i, :n], batch.mask[i, 0, :n, :n] = embeds, mask
            batch.positions[i, :n], batch.labels[i, :n] = positions, labels
        return batch

    def _row(self, sample: Sample, vis: torch.Tensor) -> tuple:
        """One stream: embeds (n, hidden), mask (n, n), positions (n,), labels (n,) and the branch spans.

        vis: (frames, tokens per frame, hidden)."""
        n_frames, per_frame = vis.shape[:2]
        gaps = sample.gaps or [0] * n_frames
        prefix = self.prefix_ids.numel()
        # stream part: prefix then frames, causal, positions shifted by the cumulative gaps
        frame_pos = torch.tensor([prefix + f * per_frame + sum(gaps[: f + 1]) for f in range(n_frames)])
        positions = [torch.arange(prefix), (frame_pos[:, None] + torch.arange(per_frame)).flatten()]
        pieces, labels, spans = [self.embed(self.prefix_ids), vis.flatten(0, 1)], [], []
        stream = prefix + n_frames * per_frame
        labels.append(torch.full((stream,), -100))
        start = stream
        for b in sample.branches:
            question = self._ids(self.template.question_text(b.question))
            target = torch.cat([self._ids(b.target), self.end_ids])
            ids = torch.cat([question, target])
            pieces.append(self.embed(ids))
            positions.append(frame_pos[b.frame] + per_frame + torch.arange(ids.numel()))
            label = torch.full((ids.numel(),), -100)
            label[-target.numel():] = target
            labels.append(label)
            spans.append((start, start + ids.numel(), prefix + (b.frame + 1) * per_frame))
            start += ids.numel()
        mask = torch.zeros(start, start, dtype=torch.bool)
        mask[:stream, :stream] = torch.ones(stream, stream, dtype=torch.bool).tril()
        for lo, hi, seen in spans:
            mask[lo:hi, :seen] = True
            mask[lo:hi, lo:hi] = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
        return torch.cat(pieces), mask, torch.cat(positions), torch.cat(labels), [(lo, hi) for lo, hi, _ in spans]


# ------------------------------------------------------------------ evaluate
def answer_logits(model, batcher: Batcher, batch: Batch, mc_answer: str) -> torch.Tensor:
    """(vocab,) logits of the answer letter of a one-question batch (:meth:`Sample.single`), greedy.

    ``letter``: at the first answer token; ``word-letter``: after the model's own word and the opener.
    """
    first = int((batch.labels[0] != -100).nonzero()[0])
    embeds, positions = batch.embeds[:, :first], batch.positions[:, :first]
    logits = model(**batch.model_inputs(first)).logits[0, -1]
    if mc_answer == "letter":
        return logits

    def feed(ids: list[int]) -> torch.Tensor:
        # one stream, one question: the mask is plain causal, which the model builds itself
        nonlocal embeds, positions
        new = torch.tensor(ids)
        embeds = torch.cat([embeds, batcher.embed(new)[None].to(embeds.dtype)], dim=1)
        positions = torch.cat([positions, positions[:, -1:] + 1 + torch.arange(len(ids))[None]], dim=1)
        return model(inputs_embeds=embeds, position_ids=positions).logits[0, -1]

    return decode_to_opener(logits, feed, batcher.tokenizer, stop_ids=batcher.end_ids.tolist())[1]


@torch.no_grad()
def quick_eval(model, batcher: Batcher, cfg: TrainConfig, n: int, length: int, seed: int) -> dict[str, float]:
    """Letter accuracy per category on held-out clips of ``length`` frames (one full forward each)."""
    rng = random.Random(seed)
    letter_ids = [batcher._ids(letter)[0].item() for letter in OPTION_LETTERS[:4]]
    correct: dict[str, list[int]] = {}
    for _ in range(n):
        video = SyntheticVideo(seed=10**9 + rng.randrange(10**6), frames=length, fps=cfg.fps,
                               width=cfg.frame_size, height=cfg.frame_size)
        frames = [f.image for f in video.frames()]
        candidates = questions_at(video.events, length - 1, rng)
        q: Question = rng.choice(candidates)
        batch = batcher([Sample.single(frames, format_question(q.question, q.options), q.answer, q.category)])
        logits = answer_logits(model, batcher, batch, cfg.mc_answer)
        guess = OPTION_LETTERS[int(torch.stack([logits[i] for i in letter_ids]).argmax())]
        correct.setdefault(q.category, []).append(int(guess == q.answer))
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


def tokenizer_corpus(cfg: TrainConfig) -> list[str]:
    """Text the scratch tokenizer's merges are learned from: the prompt, questions, options, captions.

    Drawn from its own seeded generator, so the tokenizer is a pure function of the config.
    """
    rng = random.Random(cfg.seed + 7)
    texts = [DEFAULT_SYSTEM_PROMPT, CAPTION_QUESTION]
    for _ in range(cfg.tokenizer_corpus):
        video = _clip(rng, cfg, rng.randint(1, cfg.max_clip))
        last = video.events.num_frames - 1
        texts.append(caption(video.events.state_at(last)))
        for q in questions_at(video.events, last, rng):
            texts += [format_question(q.question, q.options), q.answer_text]
    return texts


class _Run:
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
        if self.cfg.backbone == "smollm2":
            save_frontend(self.frontend, directory, extra=extra)
        else:
            save_scratch(self.model, self.tokenizer, self.frontend, directory, extra=extra,
                         dtype=torch.float32 if checkpoint else torch.bfloat16)


def train(cfg: TrainConfig, run_dir: Path, resume: bool = False, progress: bool = True) -> Path:
    """Train; returns the directory of the final model (``run_dir/final``)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    ckpt = run_dir / "checkpoint"
    resuming = resume and (ckpt / "state.pt").exists()
    run = _Run(cfg, ckpt if resuming else None)
    optimiser = torch.optim.AdamW(run.trainable, lr=cfg.align_lr, weight_decay=0.01)
    vision_optimiser = torch.optim.AdamW(run.vision_parameters, lr=cfg.vision_lr, weight_decay=0.01)
    step = 0
    rng = random.Random(cfg.seed)
    if resuming:
        state = torch.load(ckpt / "state.pt", weights_only=True)  # tensors and plain Python values only
        optimiser.load_state_dict(state["optimiser"])
        vision_optimiser.load_state_dict(state["vision_optimiser"])
        run.vision_head.load_state_dict(state["vision_head"])
        step = state["step"]
        rng.setstate(state["rng"])
        torch.set_rng_state(state["torch_rng"])
        print(f"resumed at step {step}", file=sys.stderr)
    (run_dir / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    batcher = Batcher(run.model, run.tokenizer, run.frontend)
    curve = open(run_dir / "curve.jsonl", "a")
    bar = tqdm(total=cfg.total_steps, initial=step, desc=f"train-embedded ({cfg.backbone})", file=sys.stderr,
               disable=not progress)
    started = time.perf_counter()
    while step < cfg.total_steps:
        stage = cfg.stage(step)
        if stage != "vision":
            run.enter_lm_stages()  # idempotent; also right after resuming past stage 0
        if stage == "vision":
            opt, params = vision_optimiser, vision_optimiser.param_groups[0]["params"]
            loss = run.vision_loss(*vision_batch(rng, cfg, run.grid))
        else:
            opt, params = optimiser, [p for p in run.trainable if p.requires_grad]
            if stage == "align":
                samples = [align_sample(rng, cfg) for _ in range(cfg.batch_size)]
            else:
                late = step - cfg.vision_steps - cfg.align_steps >= cfg.late_from
                share = cfg.late_caption_share if late else cfg.caption_share
                samples = [qa_sample(rng, cfg, share) for _ in range(cfg.batch_size)]
            batch = batcher(samples)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = run.model(**batch.model_inputs(), labels=batch.labels).loss
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
            _checkpoint(run, (optimiser, vision_optimiser), step, rng, ckpt)
    bar.close()
    final = run_dir / "final"
    run.train_mode(False)
    run.save(final, extra={"training": asdict(cfg), "steps": step})
    plot_curve(run_dir / "curve.jsonl", run_dir / "curve.png", f"{cfg.backbone} backbone")
    return final


def check_mc_scoring(mc_scoring: str | None) -> None:
    """Raise ValueError unless ``mc_scoring`` is None or a scorer of :mod:`hermes_policy.evaluate`."""
    from hermes_policy.evaluate import SCORERS

    if mc_scoring is not None and mc_scoring not in SCORERS:
        raise ValueError(f"mc_scoring must be one of {', '.join(SCORERS)}, got {mc_scoring!r}")


def install_model(final: Path, target: Path, mc_scoring: str | None = None) -> None:
    """Copy a trained model into ``target`` (where ``--model embedded`` loads it from).

    The weights, config and tokenizer are replaced; the hand-written model card and its
    figures (``*.md``, ``*.png``) in ``target`` are kept. ``mc_scoring`` (a scorer of
    :mod:`hermes_policy.evaluate`) is how ``eval --scoring auto`` reads the installed model,
    recorded in its ``frontend.json``; None: its training format.
    """
    check_mc_scoring(mc_scoring)
    target.mkdir(parents=True, exist_ok=True)
    for old in target.iterdir():
        if old.suffix not in (".md", ".png"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
    shutil.copytree(final, target, ignore=shutil.ignore_patterns("state.pt"), dirs_exist_ok=True)
    if mc_scoring is not None:
        meta_path = target / "frontend.json"
        meta = json.loads(meta_path.read_text())
        meta["mc_scoring"] = mc_scoring
        meta_path.write_text(json.dumps(meta, indent=2))


def _checkpoint(run: _Run, optimisers: tuple, step: int, rng: random.Random, directory: Path) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint usable."""
    with atomic_dir(directory) as staging:
        # the config too: a checkpoint loaded by path must say how it answers (``mc_answer``)
        run.save(staging, extra={"training": asdict(run.cfg), "steps": step}, checkpoint=True)
        optimiser, vision_optimiser = optimisers
        torch.save({"optimiser": optimiser.state_dict(), "vision_optimiser": vision_optimiser.state_dict(),
                    "vision_head": run.vision_head.state_dict(), "step": step, "rng": rng.getstate(),
                    "torch_rng": torch.get_rng_state()}, staging / "state.pt")


# --------------------------------------------------------------- the curve
def read_curve(path: Path) -> list[dict]:
    """``curve.jsonl`` rows by step; a resumed run re-logs steps after its checkpoint, and the last wins."""
    rows: dict[int, dict] = {}
    for line in Path(path).read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["step"]] = row
    return [rows[s] for s in sorted(rows)]


def plot_curve(curve: Path, out: Path, title: str = "") -> Path:
    """Training loss and held-out letter accuracy per category (one panel per eval length) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.style import DOUBLE_WIDTH_IN, mpl_rc

    rows = read_curve(curve)
    evals = [r for r in rows if "eval" in r]
    lengths = sorted({e["frames"] for r in evals for e in r["eval"]})
    with plt.rc_context(mpl_rc()):
        fig, axes = plt.subplots(1, 1 + len(lengths), figsize=(DOUBLE_WIDTH_IN, 2.2), squeeze=False)
        ax = axes[0, 0]
        ax.plot([r["step"] for r in rows], [r["loss"] for r in rows], lw=0.6)
        ax.set(xlabel="step", ylabel="training loss", yscale="log", title=title or "loss")
        for ax, length in zip(axes[0, 1:], lengths):
            for category in ("real-time", "backward", "counting"):
                pts = [(r["step"], e[category]) for r in evals for e in r["eval"]
                       if e["frames"] == length and category in e]
                if pts:
                    ax.plot(*zip(*pts), marker="o", ms=2, lw=0.8, label=category)
            ax.axhline(0.25, color="grey", lw=0.5, ls=":")
            ax.set(xlabel="step", ylabel="held-out accuracy", ylim=(0, 1), title=f"{length}-frame clips")
        axes[0, -1].legend(frameon=False)
        fig.tight_layout()
        fig.savefig(out, dpi=150)
        plt.close(fig)
    return out
