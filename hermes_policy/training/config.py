"""Hyper-parameters of an embedded-model training run (:class:`TrainConfig`) and the backbones it can train."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from hermes_policy.data.questions import CATEGORIES
from hermes_policy.mc_format import MC_ANSWERS
from hermes_policy.models.scratch import ScratchConfig

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
        if (unknown or not any(w > 0 for w in self.category_weights.values())
                or "real-time" not in self.category_weights):
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


__all__ = ["BACKBONES", "TrainConfig"]
