"""The evaluation harness: streaming multiple-choice QA accuracy, TTFT and memory per policy.

For every video and every policy, a fresh :class:`StreamingSession` streams
the video frame by frame, and each question is asked when the stream reaches
its time, by the rule of ``hermes-lab stream``: a question at ``t`` is asked
before ingesting the first frame whose time is later than ``t`` (so every
frame shown at or before ``t`` is in), after flushing the frames still waiting
for a full chunk. Frame times within :data:`~hermes_policy.timeline.TIME_TOLERANCE`
of ``t`` count as at ``t`` (container timestamps are rounded). Once a video's last
question is asked its stream stops: later frames cannot change any answer. Questions past
the end of the video are asked at its end (``asked_at`` in the rows says when).
Each question is scored by a scorer of :mod:`hermes_policy.eval.scoring` (a free-form count
question, OVO-Bench REC, by its count rule: ``predicted`` is the extracted count, ``scores`` empty);
budgets are sized per video by :mod:`hermes_policy.eval.budgets`. The rules are written down as
data in :mod:`hermes_policy.eval.protocol` (the manifest every eval folder holds).

TTFT is the wall time of the scoring call after the flush (``word-letter``:
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
``full`` alone); :mod:`hermes_policy.eval.sweep` builds sweeps and the resumable output folder.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

import torch
from tqdm import tqdm

from hermes_policy.data.dataset import VideoItem, answer_format, question_task
from hermes_policy.data.questions import Question
from hermes_policy.eval.budgets import PolicyFactory, PolicyRecipe, open_item, stream_info
from hermes_policy.eval.errors import EvalError
from hermes_policy.eval.results import EvalResult, EvalRow, attach_fidelity, option_probs
from hermes_policy.eval.scoring import CountScorer, Scored, Scorer, scorer_for
from hermes_policy.mc_format import OPTION_LETTERS
from hermes_policy.models.base import ModelAdapter
from hermes_policy.policies import Policy
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.timeline import interleave

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


COUNT_SCORER = CountScorer()


def _ask(session: StreamingSession, scorer: Scorer, q: Question) -> tuple[Scored, int, int, float]:
    session.flush()
    kv_bytes, frames_seen, asked_at = session.kv_bytes, session.frames_seen, session.stream_time
    scored = (COUNT_SCORER if answer_format(q) == "count" else scorer)(session, q)
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
    only: Collection[tuple[str, int]] | None = None,
) -> EvalResult:
    """Stream every item under every policy and score its questions.

    Args:
        adapter: the loaded model.
        items: videos with timed multiple-choice questions (items without questions are skipped).
        policy_factory: ``{label: factory}`` (a factory builds a fresh policy from a
            :class:`~hermes_policy.eval.budgets.StreamInfo`, once per video), or a sequence of :class:`PolicyRecipe`.
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
        only: stream just these (run label, video index) units, leaving out every other unit that is
            not in ``done`` (one rank's share of a distributed run); fidelity is then not attached, since
            the reference rows may be another rank's: the merge (all units in ``done``) attaches it.
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
                if only is not None and (label, v) not in only:
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
                    if answer_format(q) == "count":  # free-form: the extracted count is the prediction
                        predicted = scored.top_token or ""
                    else:
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
    if work.reference is not None and only is None:
        attach_fidelity(rows, work.reference)
    configs = {label: (f.to_dict() if isinstance(f, PolicyRecipe) else {"label": label})
               for label, f in work.factories.items()}
    return EvalResult(rows, work.runs, configs, work.reference, model, adapter.weights)


__all__ = [
    "REFERENCE_LABEL",
    "Asked",
    "EvalPlan",
    "UnitRows",
    "evaluate",
    "plan",
    "run_video",
]
