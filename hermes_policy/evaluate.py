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

A model trained to answer ``word-letter`` ("red (B)": the free-form answer,
then its letter; ``adapter.mc_scoring``) is scored by
:class:`WordLetterScorer`: it writes its word greedily up to the opener " ("
(appended if it ends or runs past ``max_word_tokens`` first, as answer
extraction does), and the letters are scored there, in that context, as
above; ``answer_text`` in the rows is the word. :class:`ClozeScorer` asks the
question without options and scores each option by ``log P(its tokens, then
an end token)``: the free-form answer restricted to the options, for a model
that answers in words more reliably than it matches words to letters
(``embedded`` declares it). ``--scoring`` overrides what the model declares
(``auto``, the default, follows it).

The prediction is the option with the highest score (ties: the earliest
letter); it is correct when it equals the answer letter. ``letter_prob`` in
the rows is the softmax mass on all option-letter tokens: how much the model
follows the "answer with the letter" instruction at all.

TTFT is the wall time of that scoring call after the flush (``word-letter``:
up to the word's first token; ``cloze``: every option's score): the policy's
question-time hook, the question prefill and the LM head on its last token,
up to the letter logits on the host; the same span ``session.ask`` times up to
its first token, so no second forward is spent on timing. ``kv_bytes`` is
what the compact cache held when the question arrived; ``peak_kv_bytes`` the
most it held so far in that stream, sampled after every ingest call and at each
question (rows a chunk adds and the policy prunes within the same call, and a
question's scratch rows, are not seen). ``kept_fraction`` is the video tokens
the cache holds (averaged over layers) over the video tokens streamed so far.

Fidelity vs the full cache needs no labels: every question is also answered
from the full cache (the rows of a listed ``full`` run, or of a hidden
reference run with ``reference=True``); ``agrees_with_full`` compares the
predicted letters and ``kl_vs_full`` is ``KL(p_full || p_run)`` with p the
softmax over the option scores. A run's agreement and KL are their means over
questions; the full run itself gets 1 and 0 by the same computation.

Runs are labelled ``policy@budget`` as given (``hermes@0.3``, ``sink-window@512``;
``full`` alone); :mod:`hermes_policy.sweep` builds sweeps and the resumable output folder.

Budgets: a :class:`PolicyRecipe` with ``budget_ratio=r`` gets, per video,
``max(min_budget, round(r * video_tokens))`` where ``video_tokens = ceil(frames
/ frames_per_group) * tokens_per_frame`` counts the *whole* video at the
sampled rate (tokens per frame from its first frame's size) and ``min_budget``
is the smallest budget the policy accepts (one frame plus any reserved
tokens; for per-layer splits such as ``hermes``, the smallest whose every
layer holds a frame). An absolute ``budget`` is used as is.
"""

from __future__ import annotations

import io
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from hermes_policy.atomic import atomic_path, atomic_write_text
from hermes_policy.data.dataset import VideoItem, question_task
from hermes_policy.data.questions import CATEGORIES, Question
from hermes_policy.errors import BudgetError, HermesError, PolicyError
from hermes_policy.models.base import ModelAdapter
from hermes_policy.policies import POLICIES, Policy, PolicySpec, make_policy
from hermes_policy.mc_format import OPTION_LETTERS, format_question
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.timeline import TIME_TOLERANCE, interleave
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
        label: the name results are reported under (default :attr:`key`).
        source: where it came from (e.g. a spec path), for the resolved config.
        variant: tells two configurations of one policy apart (e.g. a spec file's stem):
            the policy is reported as ``name[variant]``.
    """

    name: str
    budget: int | None = None
    budget_ratio: float | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    label: str | None = None
    source: str | None = None
    variant: str | None = None

    def __post_init__(self) -> None:
        if self.name not in POLICIES:
            raise PolicyError(f"unknown policy {self.name!r}; available: {', '.join(sorted(POLICIES))}")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise BudgetError(f"budget must be a positive number of video tokens, got {self.budget!r}")
        if self.budget_ratio is not None and not (math.isfinite(self.budget_ratio) and self.budget_ratio > 0):
            raise BudgetError(f"budget ratio must be a number > 0, got {self.budget_ratio!r}")
        # build one now, so a missing budget or a bad parameter fails before any model is loaded
        if not POLICIES[self.name].requires_budget:
            return
        if self.budget is None and self.budget_ratio is None:
            try:
                self._build(None)
            except BudgetError:
                raise EvalError(f"policy {self.key!r} needs a budget: pass --budget-ratio R or --budget N") from None
        else:
            self._build(self.budget if self.budget is not None else 1 << 20)

    @property
    def policy_label(self) -> str:
        """The policy as listed: ``name``, or ``name[variant]``."""
        return f"{self.name}[{self.variant}]" if self.variant else self.name

    @property
    def budget_given(self) -> int | float | None:
        """The budget as given: absolute tokens, a ratio, a spec's own budget, or None (``full``, none given)."""
        if self.name == "full":
            return None
        if self.budget is not None:
            return self.budget
        if self.budget_ratio is not None:
            return self.budget_ratio
        return self.params.get("budget")

    @property
    def key(self) -> str:
        """The run's label: ``label`` if given, else e.g. ``hermes@0.3``, ``sink-window@512``, ``full``."""
        if self.label:
            return self.label
        given = self.budget_given
        return self.policy_label if given is None else f"{self.policy_label}@{format_budget(given)}"

    @classmethod
    def from_spec(cls, spec: PolicySpec, budget: int | None = None, budget_ratio: float | None = None,
                  label: str | None = None, source: str | None = None,
                  variant: str | None = None) -> PolicyRecipe:
        """A spec's policy; ``budget``/``budget_ratio`` override the spec's own budget."""
        params = dict(spec.params)
        if spec.layers is not None:
            params["layers"] = spec.layers
        if budget is not None or budget_ratio is not None:
            params.pop("budget", None)
        return cls(spec.policy, budget, budget_ratio, params, label, source, variant)

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
        return {"label": self.key, "policy": self.name, "policy_label": self.policy_label,
                "budget": self.budget, "budget_ratio": self.budget_ratio, "budget_given": self.budget_given,
                "params": dict(self.params), "source": self.source}


def format_budget(budget: int | float) -> str:
    """``512`` -> ``"512"``, ``0.3`` -> ``"0.3"`` (as a run label shows it)."""
    return str(budget) if isinstance(budget, int) else f"{budget:g}"


def takes_budget(name: str) -> bool:
    """Whether a registered policy uses a budget at all (``full`` does not): a sweep runs it once."""
    return POLICIES[name].requires_budget


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
        top_token: the vocabulary's argmax token at the letter, decoded (None if not computed).
        answer_text: the free-form answer written before the letter (``word-letter`` scoring), else None.
    """

    scores: torch.Tensor
    ttft_ms: float
    letter_prob: float | None = None
    top_token: str | None = None
    answer_text: str | None = None


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


def _letter_scored(logits: torch.Tensor, groups: list[list[int]], tokenizer, ttft_ms: float,
                   answer_text: str | None = None) -> Scored:
    """Per option, the log-sum-exp of its letter spellings' logits; logits: (vocab,) at the letter token."""
    flat = torch.tensor([i for g in groups for i in g])
    logits = logits.cpu()
    letter_logits, scores, k = logits[flat], [], 0
    for g in groups:
        scores.append(torch.logsumexp(letter_logits[k: k + len(g)], dim=0))
        k += len(g)
    letter_prob = float(torch.softmax(logits, dim=0)[flat].sum())
    top = tokenizer.decode([int(logits.argmax())])
    return Scored(torch.stack(scores), ttft_ms, letter_prob, top, answer_text)


class LetterScorer:
    """The default scorer for models that answer by letter: option-letter logits at the first answer token,
    timed as TTFT."""

    name = "letter"

    def __call__(self, session: StreamingSession, question: Question) -> Scored:
        options = list(question.options)
        prompt = session.template.question_text(format_question(question.question.strip(), options))
        groups = letter_token_ids(session.adapter.tokenizer, prompt, len(options))
        flat = torch.tensor([i for g in groups for i in g])
        session.flush()  # stream work, not question work: outside TTFT as in session.ask
        start = time.perf_counter()
        logits = session.question_logits(question.question, options)  # (vocab,)
        logits[flat.to(logits.device)].cpu()  # the copy waits for the device: TTFT is complete
        ttft = (time.perf_counter() - start) * 1000
        return _letter_scored(logits, groups, session.adapter.tokenizer, ttft)


@dataclass
class WordLetterScorer:
    """For models that answer ``word-letter`` ("red (B)"): the model writes its free-form answer greedily
    up to the opener, then the letter is scored there as :class:`LetterScorer` scores it at the first token.

    TTFT is to the first answer token (the word's), as in ``session.ask``; ``answer_text`` in the rows is
    the word. ``max_word_tokens`` bounds the word; past it (or at an end token) the opener is appended.
    """

    max_word_tokens: int = 8
    name = "word-letter"

    def __call__(self, session: StreamingSession, question: Question) -> Scored:
        session.flush()
        out = session.letter_after_word(question.question, list(question.options), self.max_word_tokens)
        groups = letter_token_ids(session.adapter.tokenizer, out.prompt + out.written, len(question.options))
        return _letter_scored(out.logits, groups, session.adapter.tokenizer, out.ttft_ms, out.word)


class ClozeScorer:
    """Multiple choice without letters: the question asked plainly, each option scored by how likely the
    model is to answer exactly it (``session.option_logprobs``): the cloze formulation small models are
    evaluated with, as they answer in words before they can match words to letters. TTFT: the one packed
    forward that scores every option."""

    name = "cloze"

    def __call__(self, session: StreamingSession, question: Question) -> Scored:
        session.flush()
        scores, ttft = session.option_logprobs(question.question, list(question.options))
        return Scored(scores, ttft)


SCORERS: dict[str, Callable[[], Scorer]] = {"letter": LetterScorer, "word-letter": WordLetterScorer,
                                            "cloze": ClozeScorer}


def scorer_for(adapter: ModelAdapter, scoring: str = "auto") -> Scorer:
    """The scorer named ``scoring``; ``auto``: the one the model declares (``adapter.mc_scoring``:
    ``letter`` for hub models; a model trained here records its own in ``frontend.json``)."""
    name = adapter.mc_scoring if scoring == "auto" else scoring
    if name not in SCORERS:
        source = f"model {adapter.name!r} declares" if scoring == "auto" else "asked for"
        raise EvalError(f"unknown scoring {name!r} ({source}); choose auto, {', '.join(SCORERS)}")
    return SCORERS[name]()


# ----------------------------------------------------------------- results
@dataclass
class EvalRow:
    """One question answered in one run (one row of ``rows.parquet``).

    Attributes:
        run: the run's label, e.g. ``hermes@0.3`` (unique within an evaluation).
        policy: the policy as listed, ``name`` or ``name[variant]``.
        policy_name: the registered policy name.
        budget_setting: the budget as given (a ratio, or absolute tokens), None for ``full``.
        budget: video tokens per layer this video got (None: unlimited).
        reference: the row belongs to a hidden ``full`` run, streamed only as the fidelity reference.
        kv_bytes: key/value bytes the compact cache held when the question arrived.
        peak_kv_bytes: the largest ``kv_bytes`` of this stream so far (sampled after every ingest and at each question).
        video_tokens: video tokens of the whole video.
        video_tokens_seen: video tokens streamed in by the question's time.
        video_tokens_kept: video tokens in the cache then, averaged over layers.
        kept_fraction: ``video_tokens_kept / video_tokens_seen``.
        scores: the scorer's per-option scores; ``option_probs`` is their softmax.
        full_predicted, agrees_with_full, kl_vs_full: fidelity against the full-cache run's answer to the
            same question (``KL(p_full || p_run)`` over the option distributions); None without a reference.
    """

    run: str
    policy: str
    policy_name: str
    budget_setting: float | None
    budget: int | None
    reference: bool
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
    peak_kv_bytes: int
    video_tokens: int
    video_tokens_seen: int
    video_tokens_kept: float
    kept_fraction: float
    letter_prob: float | None
    top_token: str | None
    scores: list[float]
    option_probs: list[float]
    answer_text: str | None = None
    full_predicted: str | None = None
    agrees_with_full: bool | None = None
    kl_vs_full: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EvalRow:
        """A row back from ``asdict`` (JSONL or parquet); unknown keys are ignored."""
        names = {f.name for f in fields(cls)}
        row = cls(**{k: v for k, v in d.items() if k in names})
        row.scores, row.option_probs = list(row.scores), list(row.option_probs)
        return row


def option_probs(scores: Sequence[float] | torch.Tensor) -> list[float]:
    """Softmax of option scores (float64): the answer-option distribution fidelity compares."""
    return torch.softmax(torch.as_tensor(scores, dtype=torch.float64), dim=0).tolist()


def option_kl(reference: Sequence[float] | torch.Tensor, other: Sequence[float] | torch.Tensor) -> float:
    """``KL(p_ref || p_other)`` in nats, where p = softmax over the option scores."""
    log_p = torch.log_softmax(torch.as_tensor(reference, dtype=torch.float64), dim=0)
    log_q = torch.log_softmax(torch.as_tensor(other, dtype=torch.float64), dim=0)
    return float((log_p.exp() * (log_p - log_q)).sum())


def attach_fidelity(rows: Sequence[EvalRow], reference: str) -> None:
    """Fill every row's ``full_predicted``, ``agrees_with_full`` and ``kl_vs_full`` from run ``reference``'s rows."""
    ref = {(r.video_index, r.question_index): r for r in rows if r.run == reference}
    for r in rows:
        f = ref.get((r.video_index, r.question_index))
        if f is None:
            r.full_predicted = r.agrees_with_full = r.kl_vs_full = None
            continue
        r.full_predicted = f.predicted
        r.agrees_with_full = r.predicted == f.predicted
        r.kl_vs_full = option_kl(f.scores, r.scores)


def _category_order(categories: set[str]) -> list[str]:
    known = [c for c in (*CATEGORIES, "forward") if c in categories]
    return known + sorted(categories - set(known))


def _num(x: float | None) -> float | None:
    """NaN -> None, so the JSON stays strict."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else x


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


@dataclass
class EvalResult:
    """Per-question rows plus the summaries computed from them.

    Attributes:
        rows: one per (run, question), in evaluation order; a hidden reference run's rows included.
        runs: the labels of the runs asked for, in order (a hidden reference run is not one of them).
        policy_configs: label -> resolved recipe (``PolicyRecipe.to_dict``) or ``{"label": ...}``.
        reference: the label of the full-cache run fidelity is measured against (None: no fidelity).
        model: the model's name, for the summaries.
    """

    rows: list[EvalRow]
    runs: list[str]
    policy_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    reference: str | None = None
    model: str | None = None

    @property
    def policies(self) -> list[str]:
        """Alias of :attr:`runs`."""
        return self.runs

    @property
    def categories(self) -> list[str]:
        return _category_order({r.category for r in self.rows})

    def _select(self, run: str, category: str = "overall") -> list[EvalRow]:
        return [r for r in self.rows if r.run == run and (category == "overall" or r.category == category)]

    def accuracy(self, run: str, category: str = "overall") -> float:
        """Fraction correct (``overall``: over all questions, i.e. micro-averaged); NaN if none."""
        rows = self._select(run, category)
        return sum(r.correct for r in rows) / len(rows) if rows else float("nan")

    def agreement(self, run: str, category: str = "overall") -> float:
        """Fraction of questions answered as the full cache answers them; NaN without a reference."""
        rows = [r for r in self._select(run, category) if r.agrees_with_full is not None]
        return sum(r.agrees_with_full for r in rows) / len(rows) if rows else float("nan")

    def kl(self, run: str, category: str = "overall") -> float:
        """Mean over questions of ``KL(p_full || p_run)`` (nats); NaN without a reference."""
        return _mean([r.kl_vs_full for r in self._select(run, category) if r.kl_vs_full is not None])

    def run_summary(self, run: str) -> dict[str, Any]:
        """The ``--json`` object of one run: model, policy, budget (as given), accuracy overall and by category,
        median TTFT, peak KV bytes (max over videos), mean kept fraction and fidelity vs the full cache."""
        rows = self._select(run)
        config = self.policy_configs.get(run, {})
        by_category = {c: _num(self.accuracy(run, c)) for c in _category_order(set(CATEGORIES) | set(self.categories))}
        return {
            "model": self.model,
            "policy": config.get("policy_label", run),
            "budget": config.get("budget_given"),
            "accuracy": _num(self.accuracy(run)),
            "by_category": by_category,
            "ttft_ms_median": statistics.median(r.ttft_ms for r in rows) if rows else None,
            "peak_kv_bytes": max((r.peak_kv_bytes for r in rows), default=None),
            "kept_fraction": _num(_mean([r.kept_fraction for r in rows])),
            "fidelity": {"agreement": _num(self.agreement(run)), "kl": _num(self.kl(run))},
        }

    def to_json(self) -> dict[str, Any] | list[dict[str, Any]]:
        """What ``eval --json`` prints: one run's :meth:`run_summary`, or a list of them for a sweep."""
        objects = [self.run_summary(run) for run in self.runs]
        return objects[0] if len(objects) == 1 else objects

    def summary(self) -> list[dict[str, Any]]:
        """Per run and category (plus ``overall``): n, accuracy, TTFT, KV bytes, kept fraction, fidelity."""
        cells = []
        for run in self.runs:
            config = self.policy_configs.get(run, {})
            for category in [*self.categories, "overall"]:
                rows = self._select(run, category)
                if not rows:
                    continue
                ttft = [r.ttft_ms for r in rows]
                budgets = [r.budget for r in rows if r.budget is not None]
                cells.append({
                    "run": run,
                    "policy": config.get("policy_label", run),
                    "budget": config.get("budget_given"),
                    "category": category,
                    "n": len(rows),
                    "correct": sum(r.correct for r in rows),
                    "accuracy": sum(r.correct for r in rows) / len(rows),
                    "ttft_ms_mean": statistics.fmean(ttft),
                    "ttft_ms_median": statistics.median(ttft),
                    "kv_bytes_mean": statistics.fmean(r.kv_bytes for r in rows),
                    "peak_kv_bytes": max(r.peak_kv_bytes for r in rows),
                    "kept_fraction_mean": _num(_mean([r.kept_fraction for r in rows])),
                    "budget_tokens_mean": statistics.fmean(budgets) if budgets else None,
                    "agreement": _num(self.agreement(run, category)),
                    "kl_mean": _num(self.kl(run, category)),
                })
        return cells

    def to_dict(self) -> dict[str, Any]:
        """The results document, ``results.json`` (no rows: they go to ``rows.parquet``)."""
        return {
            "format": RESULTS_FORMAT,
            "version": VERSION,
            "model": self.model,
            "runs": self.runs,
            "reference": self.reference,
            "categories": self.categories,
            "questions": len({(r.video_index, r.question_index) for r in self.rows}),
            "results": [self.run_summary(run) for run in self.runs],
            "summary": self.summary(),
            "policy_configs": self.policy_configs,
        }

    def write_rows(self, path: str | Path) -> Path:
        """Per-question rows as JSONL (``.jsonl``) or parquet (``.parquet``), written atomically."""
        path = Path(path)
        records = [asdict(r) for r in self.rows]
        if path.suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            with atomic_path(path, EvalError) as tmp:
                pq.write_table(pa.Table.from_pylist(records), tmp)
            return path
        if path.suffix != ".jsonl":
            raise EvalError(f"rows go to a .jsonl or .parquet file, got {path}")
        return atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))

    def table(self, title: str | None = None):
        """A :class:`rich.table.Table`: one row per run with accuracy per category and overall, agreement
        and KL vs the full cache, median TTFT, peak KV MiB and the mean fraction of video tokens kept."""
        from rich.markup import escape
        from rich.table import Table

        def cell(x: float | None, fmt: str) -> str:
            return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else format(x, fmt)

        cats = _category_order(set(CATEGORIES) | set(self.categories))
        table = Table(title=title, title_justify="left")
        table.add_column("policy")
        table.add_column("budget", justify="right")
        table.add_column("n", justify="right")
        for c in cats:
            table.add_column(c, justify="right")
        for head in ("overall", "agree", "KL", "TTFT ms", "peak KV MiB", "kept %"):
            table.add_column(head, justify="right")
        for run in self.runs:
            s = self.run_summary(run)
            budget = "-" if s["budget"] is None else format_budget(s["budget"])
            table.add_row(
                escape(s["policy"]), budget, str(len(self._select(run))),  # "hermes[spec]" is not markup
                *(cell(s["by_category"][c], ".3f") for c in cats),
                cell(s["accuracy"], ".3f"), cell(s["fidelity"]["agreement"], ".3f"), cell(s["fidelity"]["kl"], ".4f"),
                cell(s["ttft_ms_median"], ".1f"),
                cell(None if s["peak_kv_bytes"] is None else s["peak_kv_bytes"] / 2**20, ".2f"),
                cell(None if s["kept_fraction"] is None else 100 * s["kept_fraction"], ".1f"),
            )
        return table

    def format_table(self, title: str | None = None, width: int = 200) -> str:
        """:meth:`table` rendered as plain text."""
        from rich.console import Console

        console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
        console.print(self.table(title))
        return console.export_text()


# -------------------------------------------------------------- the harness
REFERENCE_LABEL = "full"


def _factories(policies: Mapping[str, PolicyFactory] | Sequence[PolicyRecipe]) -> dict[str, PolicyFactory]:
    if isinstance(policies, Mapping):
        out = dict(policies)
    else:
        out = {}
        for recipe in policies:
            if recipe.key in out:
                raise EvalError(f"run label {recipe.key!r} is given twice; give one a label")
            out[recipe.key] = recipe
    if not out:
        raise EvalError("no policy to evaluate")
    return out


def _is_full(factory: PolicyFactory) -> bool:
    return isinstance(factory, PolicyRecipe) and factory.name == "full" and not factory.params


@dataclass
class EvalPlan:
    """What :func:`evaluate` will stream: every (run, video) unit, a hidden reference run included.

    Attributes:
        factories: run label -> factory, listed runs first, then the hidden reference (if one is added).
        runs: the listed run labels.
        reference: the label of the full-cache run (listed or hidden); None without fidelity.
        videos: indices into ``items`` of the videos that have questions.
    """

    factories: dict[str, PolicyFactory]
    runs: list[str]
    reference: str | None
    videos: list[int]

    @property
    def hidden(self) -> set[str]:
        return set(self.factories) - set(self.runs)

    @property
    def units(self) -> list[tuple[str, int]]:
        """``(run label, video index)`` in evaluation order: video by video, every run of a video in turn."""
        return [(label, v) for v in self.videos for label in self.factories]


def plan(items: Sequence[VideoItem], policy_factory: Mapping[str, PolicyFactory] | Sequence[PolicyRecipe],
         reference: bool = True) -> EvalPlan:
    """The units of an evaluation; a ``full`` reference is added (hidden) when fidelity needs one and none is listed."""
    factories = _factories(policy_factory)
    runs = list(factories)
    ref = None
    if reference:
        ref = next((label for label, f in factories.items() if _is_full(f)), None)
        if ref is None:
            ref = REFERENCE_LABEL if REFERENCE_LABEL not in factories else f"{REFERENCE_LABEL}[reference]"
            factories[ref] = PolicyRecipe("full", label=ref)
    videos = [v for v, item in enumerate(items) if item.questions]
    if not videos:
        raise EvalError("the dataset has no questions to ask")
    return EvalPlan(factories, runs, ref, videos)


def _ask(session: StreamingSession, scorer: Scorer, q: Question) -> tuple[Scored, int, int, float]:
    session.flush()
    kv_bytes, frames_seen, asked_at = session.kv_bytes, session.frames_seen, session.stream_time
    scored = scorer(session, q)
    if scored.scores.shape != (len(q.options),):
        raise EvalError(f"the scorer returned scores of shape {tuple(scored.scores.shape)} "
                        f"for {len(q.options)} options")
    return scored, kv_bytes, frames_seen, asked_at


@dataclass
class Asked:
    """One question asked during :func:`run_video`, with the stream's state when it arrived.

    Attributes:
        index: the question's index in ``item.questions``.
        kv_bytes: cache bytes at question time; ``peak_kv_bytes``: the stream's largest so far.
        video_tokens_seen: video tokens streamed in; ``video_tokens_kept``: cached now (mean over layers).
    """

    index: int
    question: Question
    scored: Scored
    kv_bytes: int
    frames_seen: int
    asked_at: float
    peak_kv_bytes: int
    video_tokens_seen: int
    video_tokens_kept: float


def run_video(
    adapter: ModelAdapter, item: VideoItem, policy: Policy, scorer: Scorer, config: SessionConfig,
    fps: float | None = None,
) -> list[Asked]:
    """Stream one video under one policy, asking its questions on time (in time order).

    The peak KV bytes are sampled after every ingest call and at each question.
    """
    session = StreamingSession(adapter, policy, config)
    done: list[Asked] = []
    peak = 0
    frames = open_item(item, fps).frames()
    try:
        for kind, entry in interleave(frames, list(enumerate(item.questions)), lambda p: p[1].time):
            if kind == "frame":
                session.ingest([entry])
                peak = max(peak, session.kv_bytes)
                continue
            i, q = entry
            scored, kv_bytes, frames_seen, asked_at = _ask(session, scorer, q)
            peak = max(peak, kv_bytes)
            done.append(Asked(i, q, scored, kv_bytes, frames_seen, asked_at, peak, session.video_tokens_seen,
                              session.video_tokens_kept()))
            if len(done) == len(item.questions):
                break  # the rest of the stream cannot change an answer
    finally:
        close = getattr(frames, "close", None)  # a generator: release a file's decoder now, not at collection
        if close is not None:
            close()
    return done


UnitRows = Mapping[tuple[str, int], Sequence[EvalRow]]


def evaluate(
    adapter: ModelAdapter,
    items: Sequence[VideoItem],
    policy_factory: Mapping[str, PolicyFactory] | Sequence[PolicyRecipe],
    chunk_frames: int = 4,
    progress: bool = True,
    fps: float | None = None,
    scorer: Scorer | None = None,
    reindex: str = "lazy",
    reference: bool = True,
    done: UnitRows | None = None,
    on_unit: Callable[[str, int, list[EvalRow]], None] | None = None,
    model: str | None = None,
) -> EvalResult:
    """Stream every item under every policy and score its questions.

    Args:
        adapter: the loaded model.
        items: videos with timed multiple-choice questions (items without questions are skipped).
        policy_factory: ``{label: factory}`` (a factory builds a fresh policy from a
            :class:`StreamInfo`, once per video), or a sequence of :class:`PolicyRecipe`.
        chunk_frames: frames per ingest forward.
        progress: show a progress bar (stderr) over (run, video) units.
        fps: sampling rate of video files (None: their native rate); synthetic specs keep theirs.
        scorer: ``(session, question) -> Scored``; default: :func:`scorer_for` the adapter (``auto``).
        reindex: the sessions' re-indexing mode.
        reference: measure fidelity against the full cache: a listed ``full`` recipe's rows serve, else a
            hidden ``full`` run is streamed too (its rows have ``reference=True``).
        done: rows of (run label, video index) units already evaluated (a resumed run): not streamed again.
        on_unit: called with ``(label, video index, rows)`` after each unit streamed here.
        model: the model's name, for the summaries.
    """
    work = plan(items, policy_factory, reference)
    scorer = scorer if scorer is not None else scorer_for(adapter)
    config = SessionConfig(chunk_frames=chunk_frames, max_new_tokens=1, reindex=reindex)  # type: ignore[arg-type]
    done = done or {}
    units = work.units
    rows: list[EvalRow] = []
    bar = tqdm(total=len(units), initial=sum(u in done for u in units), unit="stream", desc="evaluating",
               file=sys.stderr, disable=not progress, leave=False)
    with bar:
        for v in work.videos:
            item, info = items[v], None
            for label, factory in work.factories.items():
                if (label, v) in done:
                    rows.extend(done[(label, v)])
                    continue
                if info is None:
                    info = stream_info(adapter, item, fps)
                policy = factory(info)
                recipe = factory if isinstance(factory, PolicyRecipe) else None
                given = None if recipe is None else recipe.budget_given
                bar.set_postfix_str(f"{label} | video {v}")
                unit = []
                for a in run_video(adapter, item, policy, scorer, config, fps):
                    q, scored = a.question, a.scored
                    pick = int(torch.argmax(scored.scores))  # first maximum: ties go to the earliest letter
                    predicted = OPTION_LETTERS[pick]
                    scores = [float(s) for s in scored.scores]
                    unit.append(EvalRow(
                        run=label, policy=recipe.policy_label if recipe is not None else label,
                        policy_name=policy.name, budget_setting=None if given is None else float(given),
                        budget=getattr(policy, "budget", None), reference=label in work.hidden,
                        video_index=v, video=item.video, question_index=a.index, qid=getattr(q, "qid", ""),
                        task=question_task(q), category=q.category, time=q.time, asked_at=a.asked_at,
                        frames_seen=a.frames_seen, question=q.question, answer=q.answer, predicted=predicted,
                        correct=predicted == q.answer, ttft_ms=scored.ttft_ms, kv_bytes=a.kv_bytes,
                        peak_kv_bytes=a.peak_kv_bytes, video_tokens=info.video_tokens,
                        video_tokens_seen=a.video_tokens_seen, video_tokens_kept=a.video_tokens_kept,
                        kept_fraction=(a.video_tokens_kept / a.video_tokens_seen if a.video_tokens_seen
                                       else float("nan")),
                        letter_prob=scored.letter_prob, top_token=scored.top_token, answer_text=scored.answer_text,
                        scores=scores,
                        option_probs=option_probs(scores),
                    ))
                if on_unit is not None:
                    on_unit(label, v, unit)
                rows.extend(unit)
                bar.update(1)
    if work.reference is not None:
        attach_fidelity(rows, work.reference)
    configs = {label: (f.to_dict() if isinstance(f, PolicyRecipe) else {"label": label})
               for label, f in work.factories.items()}
    return EvalResult(rows, work.runs, configs, work.reference, model)


__all__ = [
    "CONFIG_FORMAT",
    "REFERENCE_LABEL",
    "RESULTS_FORMAT",
    "SCORERS",
    "TIME_TOLERANCE",
    "Asked",
    "ClozeScorer",
    "EvalError",
    "EvalPlan",
    "EvalResult",
    "EvalRow",
    "LetterScorer",
    "PolicyFactory",
    "PolicyRecipe",
    "Scored",
    "Scorer",
    "StreamInfo",
    "WordLetterScorer",
    "attach_fidelity",
    "evaluate",
    "fit_budget",
    "format_budget",
    "letter_token_ids",
    "open_item",
    "option_kl",
    "option_probs",
    "plan",
    "run_video",
    "scorer_for",
    "stream_info",
    "takes_budget",
]
