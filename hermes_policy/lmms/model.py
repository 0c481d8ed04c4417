"""The ``hermes_lab`` lmms-eval model: any lmms-eval video task under a hermes-lab memory policy.

::

    lmms-eval --model hermes_lab \\
        --model_args model=embedded,policy=hermes,budget=64,fps=1 \\
        --tasks hermes_tiny --include_path "$(python -c 'import hermes_policy.lmms as m; print(m.tasks_path())')"

Each request's video is streamed frame by frame into a :class:`~hermes_policy.session.StreamingSession`
under the chosen policy and the answer comes from the compact cache (:mod:`hermes_policy.lmms.streams`),
so the task measures the policy, not a full-context model. Request types:

* ``generate_until``: greedy decoding from the cache, cut at the task's ``until`` strings;
* ``generate_until_multi_round`` (OVO-Bench forward): one stream per document, extended round by round
  (``rounds=stream``) and asked again each round, as OVO-Bench's forward-active probes are;
* ``loglikelihood`` (``multiple_choice`` tasks): ``log P(continuation | context)`` from the cache, one
  stream per document shared by all its options.

Sampling (``do_sample``) is not supported: answers are greedy, and a task asking for sampling gets one
warning. After each batch of requests the plugin reports its means (budget, KV bytes, kept video tokens,
TTFT) through lmms-eval's metric log, so they land in the results file's ``throughput`` block.

This module imports lmms-eval; it is only loaded when lmms-eval resolves ``--model hermes_lab``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from lmms_eval.api.instance import Instance
from lmms_eval.api.model import lmms
from tqdm import tqdm

from hermes_policy.lmms.streams import PluginConfig, PluginError, QuestionRecord, StreamRunner, Visuals, open_visuals
from hermes_policy.lmms.streams import warn as _warn


class HermesLab(lmms):
    """An lmms-eval model that streams each video into a hermes-lab session under a memory policy.

    Every keyword is a :class:`~hermes_policy.lmms.streams.PluginConfig` field (``model``, ``policy``,
    ``budget``, ``budget_ratio``, ``spec``, ``fps``, ``max_frames``, ``chunk_frames``, ``reindex``,
    ``dtype``, ``device``, ``max_new_tokens``, ``rounds``, ``stream_log``, ``trust_remote_code``);
    ``batch_size`` and ``max_batch_size`` from lmms-eval's own options are accepted and ignored
    (requests stream one at a time). ``device`` from ``--device`` is used when ``model_args`` gives none.
    """

    is_simple = True

    def __init__(self, batch_size: int | str | None = 1, max_batch_size: int | None = None, **kwargs: Any) -> None:
        super().__init__()
        self.config = PluginConfig.from_args(kwargs)
        self.runner = StreamRunner(self.config)
        self.batch_size_per_gpu = 1
        self._warned_sampling = False

    @property
    def batch_size(self) -> int:
        return 1

    @property
    def device(self) -> str:
        return str(self.runner.adapter.device)

    # --------------------------------------------------------------- helpers
    def _doc(self, task: str, split: str, doc_id: Any) -> Any:
        return self.task_dict[task][split][doc_id]

    def _visuals(self, doc_to_visual: Callable[[Any], Any], task: str, split: str, doc_id: Any) -> Visuals:
        return open_visuals(doc_to_visual(self._doc(task, split, doc_id)), f"{task}/{split}/{doc_id}")

    def _limit(self, gen_kwargs: dict[str, Any] | None) -> tuple[int | None, Any]:
        """``(max_new_tokens, until)`` from a task's generation kwargs; sampling is warned about once."""
        kwargs = dict(gen_kwargs or {})
        if kwargs.get("do_sample") and not self._warned_sampling:
            _warn("hermes_lab decodes greedily; the task's do_sample/temperature are ignored")
            self._warned_sampling = True
        limit = kwargs.get("max_new_tokens")
        return (int(limit) if limit is not None else None), kwargs.get("until")

    def _report(self, records: Sequence[QuestionRecord], started: float, generated_tokens: int = 0) -> None:
        """The batch's means into lmms-eval's metric log (the results file's ``throughput`` block)."""
        summary = self.runner.summary(records)
        if not summary:
            return
        elapsed = time.perf_counter() - started
        numeric = {k: v for k, v in summary.items() if isinstance(v, (int, float)) and v is not None}
        try:
            from lmms_eval.models.model_utils.gen_metrics import log_metrics

            log_metrics(total_elapsed_time=elapsed, total_gen_tokens=generated_tokens,
                        avg_speed=generated_tokens / elapsed if elapsed > 0 else 0.0, additional_metrics=numeric)
        except ImportError:  # an lmms-eval without the metric log: the summary line alone
            _warn(f"hermes_lab summary: {summary}")

    @staticmethod
    def _grouped(keys: Sequence[str]) -> list[int]:
        """Request indices ordered so requests on the same visuals are adjacent (first-seen order kept)."""
        order: dict[str, list[int]] = {}
        for i, key in enumerate(keys):
            order.setdefault(key, []).append(i)
        return [i for group in order.values() for i in group]

    # -------------------------------------------------------------- requests
    def generate_until(self, requests: list[Instance]) -> list[str]:
        """Greedy answers from each video's compact cache (requests on one video share its stream)."""
        started, first = time.perf_counter(), len(self.runner.records)
        parsed = []
        for request in requests:
            context, gen_kwargs, doc_to_visual, doc_id, task, split = request.args
            parsed.append((context, gen_kwargs, self._visuals(doc_to_visual, task, split, doc_id), doc_id, task))
        out: list[str] = [""] * len(requests)
        tokens = 0
        for i in tqdm(self._grouped([p[2].key for p in parsed]), desc="hermes_lab", disable=self.rank != 0):
            context, gen_kwargs, visuals, doc_id, task = parsed[i]
            limit, until = self._limit(gen_kwargs)
            session = self.runner.stream(visuals)
            out[i] = self.runner.generate(session, context, limit, until, task=task, doc_id=doc_id)
            tokens += len(self.runner.adapter.tokenizer(out[i], add_special_tokens=False).input_ids)
        self._report(self.runner.records[first:], started, tokens)
        return out

    def generate_until_multi_round(self, requests: list[Instance]) -> list[list[str]]:
        """Several questions over one stream per document, each round on the cache the earlier rounds left.

        Round 0 asks the request's context after streaming ``doc_to_visual(doc)``; round ``k`` takes its
        visuals and question from ``doc_to_text(doc, previous_output=..., round_idx=k, previous_round_info=...)``
        (lmms-eval's multi-round protocol) until it signals the end. Returns each document's answers in order.
        """
        started, first = time.perf_counter(), len(self.runner.records)
        out: list[list[str]] = []
        for request in tqdm(requests, desc="hermes_lab rounds", disable=self.rank != 0):
            context, gen_kwargs, doc_to_visual, doc_to_text, doc_id, task, split = request.args
            doc = self._doc(task, split, doc_id)
            limit, until = self._limit(gen_kwargs)
            key = f"{task}/{split}/{doc_id}"
            self.runner.close()  # every document starts its own stream
            session = self.runner.stream(open_visuals(doc_to_visual(doc), key))
            answers = [self.runner.generate(session, context, limit, until, task, doc_id, round_index=0)]
            info = None
            round_index = 1
            while True:
                step = doc_to_text(doc, previous_output=list(answers), round_idx=round_index,
                                   previous_round_info=info)
                if not isinstance(step, tuple) or len(step) != 5:
                    raise PluginError(f"hermes_lab: task {task}'s doc_to_text returned {type(step).__name__} at "
                                      f"round {round_index}; multi-round tasks return (visuals, context, "
                                      "terminal, previous_output, round_info)")
                visuals, round_context, terminal, _, info = step
                if terminal:
                    break
                if visuals:
                    session = self.runner.continue_stream(open_visuals(visuals, f"{key}#{round_index}"))
                answers.append(self.runner.generate(session, round_context, limit, until, task, doc_id,
                                                    round_index=round_index))
                round_index += 1
            out.append(answers)
        self._report(self.runner.records[first:], started)
        return out

    def loglikelihood(self, requests: list[Instance]) -> list[Any]:
        """``(loss, is_greedy)`` per request, from the video's compact cache (loss: mean negative log-likelihood
        per continuation token, as lmms-eval's own models return; see :meth:`StreamRunner.loglikelihood`).

        Each pair is handed back inside a ``GenerationResult``: lmms-eval 0.7.3's ``unwrap_generation_output``
        turns a bare ``(float, bool)`` tuple into its string, which its ``multiple_choice`` scoring cannot
        unpack, while a ``GenerationResult``'s ``text`` passes through as it is. The unconditional requests of
        ``acc_mutual_info`` (no video) are refused: a streaming cache has nothing to offer a text-only score.
        """
        started, first = time.perf_counter(), len(self.runner.records)
        parsed = []
        for request in requests:
            if len(request.args) < 6:
                raise PluginError("hermes_lab scores continuations against a video's cache; this request has no "
                                  "video (acc_mutual_info's unconditional scores are not supported)")
            context, continuation, doc_to_visual, doc_id, task, split = request.args[:6]
            parsed.append((context, continuation, self._visuals(doc_to_visual, task, split, doc_id), doc_id, task))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(requests)
        for i in tqdm(self._grouped([p[2].key for p in parsed]), desc="hermes_lab", disable=self.rank != 0):
            context, continuation, visuals, doc_id, task = parsed[i]
            session = self.runner.stream(visuals)
            out[i] = self.runner.loglikelihood(session, context, continuation, task=task, doc_id=doc_id)
        self._report(self.runner.records[first:], started)
        return [_passthrough(pair) for pair in out]


def _passthrough(pair: tuple[float, bool]) -> Any:
    """``pair`` wrapped so lmms-eval's output unwrapping keeps it a tuple (see :meth:`HermesLab.loglikelihood`)."""
    try:
        from lmms_eval.api.instance import GenerationResult
    except ImportError:  # an lmms-eval before GenerationResult keeps tuples as they are
        return pair
    return GenerationResult(text=pair)  # type: ignore[arg-type]


__all__ = ["HermesLab"]
