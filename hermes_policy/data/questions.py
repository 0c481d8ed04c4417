"""Questions with known answers, generated from a synthetic video's event log.

Three categories, mirroring the streaming benchmarks (StreamingBench real-time,
OVO-Bench backward tracing, counting), each needing memory at a different range:

* ``real-time``: what is on screen at the moment of asking;
* ``backward``: what happened earlier (first appearance, colour at appearance);
* ``counting``: how many things happened over the stream so far.

Every question is multiple choice (A-D) and also carries the short free-form
answer (``answer_text``), so a model can be trained word-first and scored by letter.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

from hermes_policy.mc_format import OPTION_LETTERS
from hermes_policy.video.events import EventLog, FrameState
from hermes_policy.video.synthetic import COLOURS, SHAPES

CATEGORIES = ("real-time", "backward", "counting")
#: a shape the simulator never draws: the fourth option of shape questions
DECOY_SHAPE = "star"


@dataclass(frozen=True)
class Question:
    """One timed question about a stream.

    Attributes:
        time: stream time (s) at which it is asked; frames up to this time have been seen.
        frame: index of the last frame seen when it is asked.
        question: the text.
        options: four answer texts (A-D).
        answer: the correct letter.
        answer_text: the correct answer as a word or number.
        category: one of :data:`CATEGORIES`.
    """

    time: float
    frame: int
    question: str
    options: tuple[str, ...]
    answer: str
    answer_text: str
    category: str

    def to_dict(self) -> dict:
        d = asdict(self)
        d["options"] = list(self.options)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Question:
        return cls(
            time=float(d["time"]),
            frame=int(d.get("frame", -1)),
            question=str(d["question"]),
            options=tuple(str(o) for o in d["options"]),
            answer=str(d["answer"]),
            answer_text=str(d.get("answer_text", "")),
            category=str(d.get("category", "unknown")),
        )


def _choices(correct: str, pool: list[str], rng: random.Random) -> tuple[tuple[str, ...], str]:
    """Four options (the correct one plus three distractors from ``pool``), shuffled; and the letter."""
    distractors = rng.sample([p for p in pool if p != correct], 3)
    options = [correct, *distractors]
    rng.shuffle(options)
    return tuple(options), OPTION_LETTERS[options.index(correct)]


def _count_choices(correct: int, rng: random.Random) -> tuple[tuple[str, ...], str]:
    low = max(0, correct - rng.randint(0, 3))
    options = [str(n) for n in range(low, low + 4)]
    return tuple(options), OPTION_LETTERS[options.index(str(correct))]


def _make(state: FrameState, text: str, correct: str, pool: list[str] | None, category: str, rng) -> Question:
    if pool is None:
        options, letter = _count_choices(int(correct), rng)
    else:
        options, letter = _choices(correct, pool, rng)
    return Question(state.time, state.frame, text, options, letter, correct, category)


def real_time_questions(log: EventLog, frame: int, rng: random.Random) -> list[Question]:
    state = log.state_at(frame)
    colours, shapes = list(COLOURS), [*SHAPES, DECOY_SHAPE]
    out = [_make(state, "How many shapes are on screen now?", str(len(state.objects)), None, "real-time", rng)]
    for obj in state.objects:
        out.append(_make(state, f"What colour is the {obj.shape} now?", obj.colour, colours, "real-time", rng))
        out.append(_make(state, f"What shape is the {obj.colour} object now?", obj.shape, shapes, "real-time", rng))
    return out


def backward_questions(log: EventLog, frame: int, rng: random.Random) -> list[Question]:
    state = log.state_at(frame)
    appears = [e for e in log.events_until(frame) if e.kind == "appear"]
    if not appears:
        return []
    colours, shapes = list(COLOURS), [*SHAPES, DECOY_SHAPE]
    first = appears[0]
    out = [
        _make(state, "What colour was the first shape that appeared?", first.colour, colours, "backward", rng),
        _make(state, "What shape appeared first?", first.shape, shapes, "backward", rng),
    ]
    # colour at appearance, asked only about a shape that appeared once (so "the circle" is one
    # object) and only when the screen no longer shows that colour (so it needs memory)
    once = {s for s in SHAPES if sum(1 for e in appears if e.shape == s) == 1}
    for e in appears:
        if e.shape not in once:
            continue
        now = state.find(shape=e.shape)
        if now is None or now.object_id != e.object_id or now.colour != e.colour:
            out.append(_make(state, f"What colour was the {e.shape} when it first appeared?", e.colour, colours,
                             "backward", rng))
            break
    return out


def counting_questions(log: EventLog, frame: int, rng: random.Random) -> list[Question]:
    state = log.state_at(frame)
    appears = sum(1 for e in log.events_until(frame) if e.kind == "appear")
    return [_make(state, "How many shapes have appeared so far?", str(appears), None, "counting", rng)]


GENERATORS = {"real-time": real_time_questions, "backward": backward_questions, "counting": counting_questions}


def questions_at(log: EventLog, frame: int, rng: random.Random, categories=CATEGORIES) -> list[Question]:
    """Every question of the chosen categories that has a determined answer at ``frame``."""
    return [q for c in categories for q in GENERATORS[c](log, frame, rng)]


def sample_questions(
    log: EventLog, seed: int, per_category: int = 2, min_frame: int = 0, categories=CATEGORIES
) -> list[Question]:
    """A few questions per category at random moments of the stream, in time order.

    Backward questions are drawn from the later half of the stream, so they reach back.
    """
    rng = random.Random(seed)
    chosen: list[Question] = []
    for category in categories:
        lo = max(min_frame, log.num_frames // 2 if category == "backward" else min_frame)
        frames = list(range(lo, log.num_frames))
        rng.shuffle(frames)
        picked = 0
        for f in frames:
            candidates = GENERATORS[category](log, f, rng)
            if candidates:
                chosen.append(rng.choice(candidates))
                picked += 1
            if picked == per_category:
                break
    return sorted(chosen, key=lambda q: (q.time, q.category))
