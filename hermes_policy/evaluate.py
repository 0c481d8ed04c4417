"""The evaluation harness: streaming multiple-choice QA accuracy, TTFT and memory per policy.

For every video and every policy, a fresh :class:`StreamingSession` streams
the video frame by frame, and each question is asked when the stream reaches
its time, by the rule of ``hermes-lab stream``: a question at ``t`` is asked
before ingesting the first frame whose time is later than ``t`` (so every
frame shown at or before ``t`` is in), after flushing the frames still waiting
for a full chunk. Frame times within :data:`TIME_TOLERANCE` of ``t`` count as
at ``t`` (container timestamps are rounded). Once a video's last question is
asked its stream stops: later frames cannot change any answer. Questions past
the end of the video are asked at its end (``asked_at`` in the rows says when).

Scoring (:class:`LetterScorer`, the default): one forward of the question
(options lettered A, B, ... by :func:`~hermes_policy.session.format_question`)
against the cache, then the logits of the first answer token. Each option
letter's score is the log-sum-exp of the logits of its token spellings:

* the token the tokenizer produces for the letter written right after the
  prompt (the assistant turn's opening, e.g. ``"...assistant\\n"`` + ``"B"``):
  exactly what greedy decoding would emit first. If appending the letter
  merges across the boundary, the letter's own first token is used instead;
* the single token for ``" B"`` (leading space), when the tokenizer has one and
  no other letter claims it: SentencePiece-style models often open an answer with it.

The prediction is the option with the highest score (ties: the earliest
letter); it is correct when it equals the answer letter. ``letter_prob`` in
the rows is the softmax mass on all option-letter tokens: how much the model
follows the "answer with the letter" instruction at all.

TTFT is the wall time of that scoring call after the flush: the policy's
question-time hook, the question prefill and the LM head on its last token,
up to the letter logits on the host; the same span ``session.ask`` times up to
its first token, so no second forward is spent on timing. ``kv_bytes`` is
what the compact cache held when the question arrived.

Budgets: a :class:`PolicyRecipe` with ``budget_ratio=r`` gets, per video,
``max(min_budget, round(r * video_tokens))`` where ``video_tokens = ceil(frames
/ frames_per_group) * tokens_per_frame`` counts the *whole* video at the
sampled rate (tokens per frame from its first frame's size) and ``min_budget``
is the smallest budget the policy accepts (one frame plus any reserved
tokens; for per-layer splits such as ``hermes``, the smallest whose every
layer holds a frame). An absolute ``budget`` is used as is.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hermes_policy.data.dataset import VideoItem, atomic_write_text, question_task
from hermes_policy.data.questions import CATEGORIES, Question
from hermes_policy.errors import BudgetError, HermesError, PolicyError
from hermes_policy.models.base import ModelAdapter
from hermes_policy.policies import POLICIES, Policy, PolicySpec, make_policy
from hermes_policy.session import (
    OPTION_LETTERS,
    TIME_TOLERANCE,
    SessionConfig,
    StreamingSession,
    format_question,
    interleave,
)
from hermes_policy.video import open_video
from hermes_policy.video.frames import VideoSource

RESULTS_FORMAT = "hermes-lab/eval-results"
CONFIG_FORMAT = "hermes-lab/eval-config"
VERSION = 1


class EvalError(HermesError):
    """An evaluation that cannot run as configured (no questions, a policy without a budget, ...)."""


# ----------------------------------------------------------------- budgets
@dataclass(frozen=True)
class StreamInfo:
    """What a policy factory may size itself by, for one video.

    Attributes:
        video: the item's video spec or path.
        frames: frames of the whole video at the sampled rate.
        tokens_per_frame: video tokens one frame group adds (the session's unit).
        frames_per_group: frames the model fuses into one group (2 for Qwen-VL).
        num_layers: decoder layers (per-layer budgets are validated against them).
    """

    video: str
    frames: int
    tokens_per_frame: int
    frames_per_group: int = 1
    num_layers: int = 1

    @property
    def video_tokens(self) -> int:
        """Video tokens of the whole stream: ``ceil(frames / frames_per_group) * tokens_per_frame``."""
        return -(-self.frames // self.frames_per_group) * self.tokens_per_frame


PolicyFactory = Callable[[StreamInfo], Policy]


def _feasible(build: Callable[[int], Policy], budget: int, info: StreamInfo) -> Policy | None:
    try:
        policy = build(budget)
        policy.validate(info.tokens_per_frame, info.num_layers)
    except BudgetError:
        return None
    return policy


def fit_budget(build: Callable[[int], Policy], want: int, info: StreamInfo) -> Policy:
    """``build(want)`` if it holds a frame, else ``build(b)`` for the smallest feasible ``b > want``.

    Feasibility is assumed monotone in the budget: found by doubling, then bisection.
    """
    policy = _feasible(build, want, info)
    if policy is not None:
        return policy
    lo, hi = want, max(want, info.tokens_per_frame, 1)
    for _ in range(40):
        hi *= 2
        if _feasible(build, hi, info) is not None:
            break
        lo = hi
    else:
        build(want).validate(info.tokens_per_frame, info.num_layers)  # re-raises the policy's own error
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _feasible(build, mid, info) is not None else (mid, hi)
    policy = _feasible(build, hi, info)
    assert policy is not None
    return policy


@dataclass(frozen=True)
class PolicyRecipe:
    """A policy to evaluate, sized per video; calling it with a :class:`StreamInfo` builds one.

    Attributes:
        name: registered policy name.
        budget: absolute video tokens per layer (wins over ``budget_ratio``).
        budget_ratio: fraction of each video's video tokens (see the module docstring).
        params: other constructor parameters (e.g. a PolicySpec's params and layers).
        label: the name results are reported under (default ``name``).
        source: where it came from (e.g. a spec path), for the resolved config.
    """

    name: str
    budget: int | None = None
    budget_ratio: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    source: str | None = None

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise PolicyError(f"unknown policy {self.name!r}; available: {', '.join(sorted(POLICIES))}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise BudgetError(f"budget must be a positive number of video tokens, got {self.budget!r}")
        if self.budget_ratio is not None and not (math.isfinite(self.budget_ratio) and self.budget_ratio > 0):
            raise BudgetError(f"budget ratio must be a number > 0, got {self.budget_ratio!r}")
        # build one now, so a missing budget or a bad parameter fails before any model is loaded
        if self.name == "full":
            return
        if self.budget is None and self.budget_ratio is None:
            try:
                self._build(None)
            except BudgetError:
                raise EvalError(f"policy {self.key!r} needs a budget: pass --budget-ratio R or --budget N") from None
        else:
            self._build(self.budget if self.budget is not None else 1 << 20)

    @property
    def key(self) -> str:
        return self.label or self.name

    @classmethod
    def from_spec(cls, spec: PolicySpec, budget: int | None = None, budget_ratio: float | None = None,
                  label: str | None = None, source: str | None = None) -> "PolicyRecipe":
        """A spec's policy; ``budget``/``budget_ratio`` override the spec's own budget."""
        params = dict(spec.params)
        if spec.layers is not None:
            params["layers"] = spec.layers
        if budget is not None or budget_ratio is not None:
            params.pop("budget", None)
        return cls(spec.policy, budget, budget_ratio, params, label, source)

    def _build(self, budget: int | None) -> Policy:
        params = dict(self.params)
        if budget is not None:
            params["budget"] = budget
        return make_policy(self.name, **params)

    def __call__(self, info: StreamInfo) -> Policy:
        if self.name == "full":  # keeps everything: any budget is meaningless
            return make_policy("full", **{k: v for k, v in self.params.items() if k != "budget"})
        if self.budget is not None:
            policy = self._build(self.budget)
            policy.validate(info.tokens_per_frame, info.num_layers)  # fail before streaming, not mid-way
            return policy
        if self.budget_ratio is not None:
            want = max(1, round(self.budget_ratio * info.video_tokens))
            return fit_budget(self._build, want, info)
        return self._build(None)  # the params' own budget (e.g. a spec's); checked in __post_init__

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.key, "policy": self.name, "budget": self.budget, "budget_ratio": self.budget_ratio,
                "params": dict(self.params), "source": self.source}


def stream_info(adapter: ModelAdapter, item: VideoItem, fps: float | None = None) -> StreamInfo:
    """Frames and tokens per frame of one video, without decoding it (unless its length is unknown)."""
    source = open_item(item, fps)
    frames = source.num_frames
    width, height = getattr(source, "width", None), getattr(source, "height", None)
    if frames is None or width is None or height is None:
        count = 0
        for frame in source.frames():  # no metadata: one decoding pass
            if count == 0:
                height, width = frame.image.shape[:2]
            count += 1
        frames = frames if frames is not None else count
    if not frames or width is None or height is None:
        raise EvalError(f"{item.video}: the video has no frames")
    return StreamInfo(item.video, int(frames), adapter.tokens_per_frame(int(height), int(width)),
                      adapter.frames_per_group, adapter.num_layers)


def open_item(item: VideoItem, fps: float | None = None) -> VideoSource:
    """The item's video; ``fps`` resamples files only (a synthetic spec's questions are timed at its own rate)."""
    return open_video(item.video, fps=None if item.is_synthetic else fps)


# ----------------------------------------------------------------- scoring
@dataclass
class Scored:
    """One scored question.

    Attributes:
        scores: (n_options,) float score per option letter, higher = preferred.
        ttft_ms: question arrival to first-token logits.
        letter_prob: softmax mass on all option-letter tokens (None if not computed).
        top_token: the vocabulary's argmax token, decoded (None if not computed).
    """

    scores: torch.Tensor
    ttft_ms: float
    letter_prob: float | None = None
    top_token: str | None = None


Scorer = Callable[[StreamingSession, Question], Scored]


def letter_token_ids(tokenizer, prompt: str, n_options: int) -> list[list[int]]:
    """Per option letter, the token ids that spell it as a first answer token (see the module docstring).

    Returns:
        ``n_options`` lists of ids; the first id of each list is the in-context spelling.

    Raises:
        EvalError: when two letters share an in-context token (the letters could not be told apart).
    """
    def ids(text: str) -> list[int]:
        return list(tokenizer(text, add_special_tokens=False).input_ids)

    base = ids(prompt)
    letters = OPTION_LETTERS[:n_options]
    primary = []
    for letter in letters:
        extended = ids(prompt + letter)
        if len(extended) > len(base) and extended[: len(base)] == base:
            primary.append(extended[len(base)])
        else:  # the letter merged with the prompt's last token: fall back to its own first token
            primary.append(ids(letter)[0])
    if len(set(primary)) != len(primary):
        raise EvalError(f"the tokenizer gives option letters {letters} no distinct first tokens ({primary})")
    spaced = [ids(" " + letter) for letter in letters]
    singles = [s[0] for s in spaced if len(s) == 1]
    out = []
    for first, variant in zip(primary, spaced):
        group = [first]
        # a space variant joins only if it is one token that no other letter uses
        if len(variant) == 1 and variant[0] != first and variant[0] not in primary and singles.count(variant[0]) == 1:
            group.append(variant[0])
        out.append(group)
    return out


class LetterScorer:
    """The default scorer: option-letter logits at the first answer token, timed as TTFT."""

    def __call__(self, session: StreamingSession, question: Question) -> Scored:
        options = list(question.options)
        prompt = session.template.question_text(format_question(question.question.strip(), options))
        groups = letter_token_ids(session.adapter.tokenizer, prompt, len(options))
        flat = torch.tensor([i for g in groups for i in g])
        session.flush()  # stream work, not question work: outside TTFT as in session.ask
        start = time.perf_counter()
        logits = session.question_logits(question.question, options)  # (vocab,)
        letter_logits = logits[flat.to(logits.device)].cpu()  # the copy waits for the device: TTFT is complete
        ttft = (time.perf_counter() - start) * 1000
        scores, k = [], 0
        for g in groups:
            scores.append(torch.logsumexp(letter_logits[k: k + len(g)], dim=0))
            k += len(g)
        logits = logits.cpu()
        letter_prob = float(torch.softmax(logits, dim=0)[flat].sum())
        top = session.adapter.tokenizer.decode([int(logits.argmax())])
        return Scored(torch.stack(scores), ttft, letter_prob, top)


# ----------------------------------------------------------------- results
@dataclass
class EvalRow:
    """One question answered under one policy (one line of the rows dump)."""

    policy: str
    policy_name: str
    budget: int | None
    video_index: int
    video: str
    question_index: int
    qid: str
    task: str
    category: str
    time: float
    asked_at: float
    frames_seen: int
    question: str
    answer: str
    predicted: str
    correct: bool
    ttft_ms: float
    kv_bytes: int
    video_tokens: int
    letter_prob: float | None
    top_token: str | None
    scores: list[float]


def _category_order(categories: set[str]) -> list[str]:
    known = [c for c in (*CATEGORIES, "forward") if c in categories]
    return known + sorted(categories - set(known))


@dataclass
class EvalResult:
    """Per-question rows plus the summaries computed from them.

    Attributes:
        rows: one per (policy, question), in evaluation order.
        policies: policy labels, in the order given.
        policy_configs: label -> resolved recipe (``PolicyRecipe.to_dict``) or ``{"label": ...}``.
    """

    rows: list[EvalRow]
    policies: list[str]
    policy_configs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def categories(self) -> list[str]:
        return _category_order({r.category for r in self.rows})

    def _select(self, policy: str, category: str = "overall") -> list[EvalRow]:
        return [r for r in self.rows if r.policy == policy and (category == "overall" or r.category == category)]

    def accuracy(self, policy: str, category: str = "overall") -> float:
        """Fraction correct (``overall``: over all questions, i.e. micro-averaged); NaN if none."""
        rows = self._select(policy, category)
        return sum(r.correct for r in rows) / len(rows) if rows else float("nan")

    def summary(self) -> list[dict[str, Any]]:
        """Per policy and category (plus ``overall``): n, correct, accuracy, mean/median TTFT, mean KV bytes."""
        cells = []
        for policy in self.policies:
            for category in [*self.categories, "overall"]:
                rows = self._select(policy, category)
                if not rows:
                    continue
                ttft = [r.ttft_ms for r in rows]
                budgets = [r.budget for r in rows if r.budget is not None]
                cells.append({
                    "policy": policy,
                    "category": category,
                    "n": len(rows),
                    "correct": sum(r.correct for r in rows),
                    "accuracy": sum(r.correct for r in rows) / len(rows),
                    "ttft_ms_mean": statistics.fmean(ttft),
                    "ttft_ms_median": statistics.median(ttft),
                    "kv_bytes_mean": statistics.fmean(r.kv_bytes for r in rows),
                    "budget_mean": statistics.fmean(budgets) if budgets else None,
                })
        return cells

    def to_dict(self) -> dict[str, Any]:
        """The results document (no rows: they go to their own JSONL/parquet file)."""
        summary = self.summary()
        return {
            "format": RESULTS_FORMAT,
            "version": VERSION,
            "policies": self.policies,
            "categories": self.categories,
            "questions": len({(r.video_index, r.question_index) for r in self.rows}),
            "accuracy": {p: {c["category"]: c["accuracy"] for c in summary if c["policy"] == p}
                         for p in self.policies},
            "summary": summary,
            "policy_configs": self.policy_configs,
        }

    def write_rows(self, path: str | Path) -> Path:
        """Per-question rows as JSONL (``.jsonl``) or parquet (``.parquet``), written atomically."""
        path = Path(path)
        records = [asdict(r) for r in self.rows]
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            tmp = path.with_name(f".{path.name}.tmp")
            try:
                pq.write_table(pa.Table.from_pylist(records), tmp)
                tmp.replace(path)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            return path
        if path.suffix != ".jsonl":
            raise EvalError(f"rows go to a .jsonl or .parquet file, got {path}")
        return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def format_table(self) -> str:
        """Accuracy per policy x category, overall, median TTFT and mean KV, as aligned text."""
        cats = self.categories
        counts = {c: len(self._select(self.policies[0], c)) for c in cats} if self.policies else {}
        heads = [f"{c} (n={counts[c]})" for c in cats]
        width = max([len("policy"), *map(len, self.policies)])
        head = (f"{'policy':<{width}} {'budget':>8} " + " ".join(f"{h:>{max(len(h), 6)}}" for h in heads)
                + f" {'overall':>8} {'TTFT med ms':>11} {'KV MiB':>8}")
        lines = [head, "-" * len(head)]
        by = {(c["policy"], c["category"]): c for c in self.summary()}
        for p in self.policies:
            overall = by.get((p, "overall"))
            if overall is None:
                continue
            budget = "-" if overall["budget_mean"] is None else f"{overall['budget_mean']:.0f}"
            accs = " ".join(f"{by[(p, c)]['accuracy'] if (p, c) in by else float('nan'):>{max(len(h), 6)}.3f}"
                            for c, h in zip(cats, heads))
            lines.append(f"{p:<{width}} {budget:>8} {accs} {overall['accuracy']:>8.3f} "
                         f"{overall['ttft_ms_median']:>11.1f} {overall['kv_bytes_mean'] / 2**20:>8.2f}")
        return "\n".join(lines)


# -------------------------------------------------------------- the harness
def _factories(policies: Mapping[str, PolicyFactory] | Sequence[PolicyRecipe]) -> dict[str, PolicyFactory]:
    if isinstance(policies, Mapping):
        out = dict(policies)
    else:
        out = {}
        for recipe in policies:
            if recipe.key in out:
                raise EvalError(f"policy label {recipe.key!r} is given twice; give one a label")
            out[recipe.key] = recipe
    if not out:
        raise EvalError("no policy to evaluate")
    return out


def _ask(session: StreamingSession, scorer: Scorer, q: Question) -> tuple[Scored, int, int, float]:
    session.flush()
    kv_bytes, frames_seen, asked_at = session.kv_bytes, session.frames_seen, session.stream_time
    scored = scorer(session, q)
    if scored.scores.shape != (len(q.options),):
        raise EvalError(f"the scorer returned scores of shape {tuple(scored.scores.shape)} "
                        f"for {len(q.options)} options")
    return scored, kv_bytes, frames_seen, asked_at


def run_video(
    adapter: ModelAdapter, item: VideoItem, policy: Policy, scorer: Scorer, config: SessionConfig,
    fps: float | None = None,
) -> list[tuple[int, Question, Scored, int, int, float]]:
    """Stream one video under one policy, asking its questions on time.

    Returns:
        per question (in time order): (index in ``item.questions``, question, scored,
        kv_bytes, frames_seen, asked_at).
    """
    session = StreamingSession(adapter, policy, config)
    done = []
    frames = open_item(item, fps).frames()
    try:
        for kind, entry in interleave(frames, list(enumerate(item.questions)), lambda p: p[1].time):
            if kind == "frame":
                session.ingest([entry])
                continue
            i, q = entry
            done.append((i, q, *_ask(session, scorer, q)))
            if len(done) == len(item.questions):
                break  # the rest of the stream cannot change an answer
    finally:
        close = getattr(frames, "close", None)  # a generator: release a file's decoder now, not at collection
        if close is not None:
            close()
    return done


def evaluate(
    adapter: ModelAdapter,
    items: Sequence[VideoItem],
    policy_factory: Mapping[str, PolicyFactory] | Sequence[PolicyRecipe],
    chunk_frames: int = 4,
    progress: bool = True,
    fps: float | None = None,
    scorer: Scorer | None = None,
    reindex: str = "lazy",
) -> EvalResult:
    """Stream every item under every policy and score its questions.

    Args:
        adapter: the loaded model.
        items: videos with timed multiple-choice questions (items without questions are skipped).
        policy_factory: ``{label: factory}`` (a factory builds a fresh policy from a
            :class:`StreamInfo`, once per video), or a sequence of :class:`PolicyRecipe`.
        chunk_frames: frames per ingest forward.
        progress: show a progress bar (stderr) over videos x policies.
        fps: sampling rate of video files (None: their native rate); synthetic specs keep theirs.
        scorer: ``(session, question) -> Scored``; default :class:`LetterScorer`.
        reindex: the sessions' re-indexing mode.
    """
    factories = _factories(policy_factory)
    scorer = scorer if scorer is not None else LetterScorer()
    config = SessionConfig(chunk_frames=chunk_frames, max_new_tokens=1, reindex=reindex)  # type: ignore[arg-type]
    todo = [(v, item) for v, item in enumerate(items) if item.questions]
    if not todo:
        raise EvalError("the dataset has no questions to ask")
    rows: list[EvalRow] = []
    bar = tqdm(total=len(todo) * len(factories), unit="stream", desc="evaluating", file=sys.stderr,
               disable=not progress, leave=False)
    with bar:
        for v, item in todo:
            info = stream_info(adapter, item, fps)
            for label, factory in factories.items():
                policy = factory(info)
                bar.set_postfix_str(f"{label} | video {v}")
                for i, q, scored, kv_bytes, frames_seen, asked_at in run_video(adapter, item, policy, scorer,
                                                                              config, fps):
                    pick = int(torch.argmax(scored.scores))  # first maximum: ties go to the earliest letter
                    predicted = OPTION_LETTERS[pick]
                    rows.append(EvalRow(
                        policy=label, policy_name=policy.name, budget=getattr(policy, "budget", None),
                        video_index=v, video=item.video, question_index=i, qid=getattr(q, "qid", ""),
                        task=question_task(q), category=q.category, time=q.time, asked_at=asked_at,
                        frames_seen=frames_seen, question=q.question, answer=q.answer, predicted=predicted,
                        correct=predicted == q.answer, ttft_ms=scored.ttft_ms, kv_bytes=kv_bytes,
                        video_tokens=info.video_tokens, letter_prob=scored.letter_prob,
                        top_token=scored.top_token, scores=[float(s) for s in scored.scores],
                    ))
                bar.update(1)
    configs = {label: (f.to_dict() if isinstance(f, PolicyRecipe) else {"label": label})
               for label, f in factories.items()}
    return EvalResult(rows, list(factories), configs)


__all__ = [
    "CONFIG_FORMAT",
    "RESULTS_FORMAT",
    "TIME_TOLERANCE",
    "EvalError",
    "EvalResult",
    "EvalRow",
    "LetterScorer",
    "PolicyFactory",
    "PolicyRecipe",
    "Scored",
    "Scorer",
    "StreamInfo",
    "evaluate",
    "fit_budget",
    "letter_token_ids",
    "open_item",
    "run_video",
    "stream_info",
]
