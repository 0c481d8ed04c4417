"""What the embedded model is trained on: captions, question branches, streams and vision batches.

Every draw comes from the ``random.Random`` passed in, in a fixed order, so a seed gives the same samples.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from hermes_policy.data.questions import Question, questions_at
from hermes_policy.mc_format import format_question, word_letter
from hermes_policy.models.base import DEFAULT_SYSTEM_PROMPT
from hermes_policy.training.config import TrainConfig
from hermes_policy.video.events import FrameState
from hermes_policy.video.synthetic import COLOURS, SHAPES, SyntheticVideo, render_state

CAPTION_QUESTION = "Describe the current frame."
MATCH_QUESTION = "Which option is {}?"


# ------------------------------------------------------------------ captions
def _where(x: float, y: float) -> str:
    """Where a point lies on a 3x3 grid of the frame, as a caption says it: "top left", "centre"."""
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
    def single(cls, frames: list[np.ndarray], question: str, target: str, category: str) -> Sample:
        """A question at the end of the frames: the layout of one ask."""
        return cls(frames, [Branch(len(frames) - 1, question, target, category)])


def _clip(rng: random.Random, cfg: TrainConfig, length: int) -> SyntheticVideo:
    """A new random scene of ``length`` frames at the config's rate and frame size."""
    return SyntheticVideo(seed=rng.randrange(10**9), frames=length, fps=cfg.fps,
                          width=cfg.frame_size, height=cfg.frame_size)


def _random_state(rng: random.Random, cfg: TrainConfig) -> FrameState:
    """A random moment of a random scene: the end of a clip of 1..12 frames."""
    video = _clip(rng, cfg, rng.randint(1, 12))
    return video.events.state_at(video.events.num_frames - 1)


def align_sample(rng: random.Random, cfg: TrainConfig) -> Sample:
    """One frame and its dense caption (stage 1)."""
    state = _random_state(rng, cfg)
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
        state = _random_state(rng, cfg)
        frames.append(render_state(state, cfg.frame_size, cfg.frame_size))
        targets.append(cell_targets(state, grid))
    return np.stack(frames), torch.stack(targets)


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


__all__ = ["CAPTION_QUESTION", "MATCH_QUESTION", "Branch", "Sample", "align_sample", "caption", "cell_targets",
           "mc_target", "on_screen", "qa_sample", "tokenizer_corpus", "vision_batch"]
