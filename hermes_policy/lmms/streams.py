"""What the lmms-eval plugin does with a request, without lmms-eval: visuals to a stream, answers from its cache.

:class:`StreamRunner` owns one loaded model and one policy recipe. For each request it

1. turns the task's visuals into one stream of :class:`~hermes_policy.video.Frame` s (:func:`open_visuals`):
   a video file (decoded at ``fps``, the protocol's sampling rate), a ``synthetic:...`` spec (its own rate),
   or a list of images (one frame each, ``1 / fps`` seconds apart);
2. sizes the policy for that stream (:class:`~hermes_policy.eval.budgets.PolicyRecipe`: an absolute ``budget``
   or a ``budget_ratio`` of the stream's video tokens) and streams every frame into a
   :class:`~hermes_policy.session.StreamingSession` chunk by chunk, the policy pruning after each chunk;
3. answers from the compact cache as it is at the end of the stream (the question's moment: lmms-eval's
   streaming tasks cut each video at the question's timestamp), with the question as text only.

A stream is kept for the next request on the same visuals (several questions, or a multiple-choice task's
options, over one compressed cache: questions and answers are always rolled back). In a multi-round request
(:meth:`StreamRunner.continue_stream`) each round's video is taken as the stream so far: when it is a longer
prefix of the same video (OVO-Bench's forward chunks ``{id}_{i}.mp4`` all start at 0), only frames after the
stream's time are ingested, so round ``i`` is asked on the cache the earlier rounds left; a round whose video
does not extend the stream starts a new one.

Every question leaves a :class:`QuestionRecord` (policy, budget, KV bytes, kept video tokens, TTFT) in
:attr:`StreamRunner.records`, which the plugin reports to lmms-eval and optionally writes as JSONL.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hermes_policy.errors import BudgetError, HermesError, VideoError
from hermes_policy.timeline import TIME_TOLERANCE
from hermes_policy.video import Frame

#: the sampling rate of video files when none is given: 1 frame per second (synthetic specs keep their own)
DEFAULT_FPS = 1.0
#: generate_until's token limit when the task gives none
DEFAULT_MAX_NEW_TOKENS = 32
ROUND_MODES = ("stream", "restart")


class PluginError(HermesError):
    """A plugin argument or a task's request the plugin cannot serve (the message says which and why)."""


@dataclass(frozen=True)
class PluginConfig:
    """The plugin's ``--model_args`` (``key=value,...``), checked before the model loads.

    Attributes:
        model: a hermes-lab model name (``embedded``, ``tiny-*``, ``config:...``, a HF id or path).
        policy: a registered memory policy (``full``, ``hermes``, ``sink-window``, ...).
        budget: video tokens kept per layer (absolute).
        budget_ratio: or a fraction in (0, 1] of each stream's video tokens (at least one frame).
        spec: a PolicySpec JSON (its policy and parameters; ``budget``/``budget_ratio`` override its budget).
        fps: sampling rate of video files, and the spacing of image lists; None: a file's native rate.
        max_frames: stream at most this many frames of a video (None: all).
        chunk_frames: frames prefilled per forward before the policy prunes.
        reindex: ``lazy`` | ``eager`` | ``off`` (see :class:`~hermes_policy.session.SessionConfig`).
        dtype: ``auto`` | ``float32`` | ``bfloat16`` | ``float16``.
        device: ``cpu``, ``cuda``, ``cuda:1``, ``auto``.
        max_new_tokens: upper bound on any task's ``max_new_tokens`` (None: the task's, default 32).
        rounds: multi-round requests: ``stream`` continues one stream across rounds; ``restart`` streams each
            round's video into a fresh session (what a full-context model is given).
        stream_log: a JSONL file every question's :class:`QuestionRecord` is appended to (None: none).
        trust_remote_code: let a hub checkpoint run its own code.
    """

    model: str = "embedded"
    policy: str = "hermes"
    budget: int | None = None
    budget_ratio: float | None = None
    spec: str | None = None
    fps: float | None = DEFAULT_FPS
    max_frames: int | None = None
    chunk_frames: int = 4
    reindex: str = "lazy"
    dtype: str = "auto"
    device: str = "cpu"
    max_new_tokens: int | None = None
    rounds: str = "stream"
    stream_log: str | None = None
    trust_remote_code: bool = False

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> PluginConfig:
        """Build from parsed ``--model_args``; an unknown key is refused, naming the ones it takes."""
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(args) - known)
        if unknown:
            raise PluginError(f"hermes_lab: unknown model_args {unknown}; it takes {sorted(known)}")
        values = {k: (None if isinstance(v, str) and v.strip().lower() in ("", "none", "null") else v)
                  for k, v in args.items()}
        config = cls(**values)
        config.check()
        return config

    def check(self) -> None:
        """Types and ranges of every argument (PluginError / BudgetError, one line each)."""
        from hermes_policy.video.frames import check_fps

        if not isinstance(self.model, str) or not self.model.strip():
            raise PluginError("hermes_lab: model= must name a model, e.g. model=embedded")
        if self.budget is not None and (isinstance(self.budget, bool) or not isinstance(self.budget, int)
                                        or self.budget < 1):
            raise BudgetError(f"hermes_lab: budget= must be a positive integer (video tokens per layer), "
                              f"got {self.budget!r}")
        if self.budget_ratio is not None:
            r = self.budget_ratio
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not (math.isfinite(r) and 0 < r <= 1):
                raise BudgetError(f"hermes_lab: budget_ratio= must be a number in (0, 1], got {r!r}")
        if self.budget is not None and self.budget_ratio is not None:
            raise BudgetError("hermes_lab: give budget= or budget_ratio=, not both")
        if self.fps is not None:
            if isinstance(self.fps, bool) or not isinstance(self.fps, (int, float)):
                raise PluginError(f"hermes_lab: fps= must be a number, got {self.fps!r}")
            check_fps(float(self.fps), "hermes_lab: fps=")
        for name in ("max_frames", "chunk_frames", "max_new_tokens"):
            value = getattr(self, name)
            if value is None and name != "chunk_frames":
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PluginError(f"hermes_lab: {name}= must be a positive integer, got {value!r}")
        if self.rounds not in ROUND_MODES:
            raise PluginError(f"hermes_lab: rounds= must be {' or '.join(ROUND_MODES)}, got {self.rounds!r}")
        if not isinstance(self.trust_remote_code, bool):
            raise PluginError(f"hermes_lab: trust_remote_code= must be true or false, got {self.trust_remote_code!r}")


@dataclass
class QuestionRecord:
    """One answered request: what the cache held when it was asked.

    Attributes:
        key: the stream's visuals, as the plugin keyed them.
        kind: ``generate`` | ``loglikelihood`` | ``round``.
        budget: video tokens per layer the policy was given for this stream (None: unlimited).
        frames: frames streamed when asked; ``asked_at``: the stream time (s) then.
        kv_bytes: key/value bytes the compact cache held; ``video_tokens_seen`` / ``video_tokens_kept``:
            video tokens streamed in / cached now (mean over layers).
    """

    key: str
    kind: str
    policy: str
    budget: int | None
    frames: int
    asked_at: float
    kv_bytes: int
    video_tokens_seen: int
    video_tokens_kept: float
    ttft_ms: float | None = None
    task: str = ""
    doc_id: Any = None
    round: int | None = None

    @property
    def kept_fraction(self) -> float:
        return self.video_tokens_kept / self.video_tokens_seen if self.video_tokens_seen else float("nan")


# ------------------------------------------------------------------ visuals
def _image_array(visual: Any) -> np.ndarray | None:
    """An (H, W, 3) uint8 RGB array from a PIL image or an array; None for anything else."""
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover (pillow is a dependency)
        Image = None  # type: ignore[assignment]
    if Image is not None and isinstance(visual, Image.Image):
        return np.asarray(visual.convert("RGB"), dtype=np.uint8)
    if isinstance(visual, np.ndarray) and visual.ndim == 3 and visual.shape[2] in (3, 4):
        return np.ascontiguousarray(visual[..., :3].astype(np.uint8))
    return None


def _resized(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == size:
        return image
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((size[1], size[0])), dtype=np.uint8)


@dataclass
class Visuals:
    """One request's visuals as a stream: a video (file or synthetic spec) or a list of images."""

    key: str
    video: str | None = None
    images: list[np.ndarray] = field(default_factory=list)

    def frames(self, fps: float | None, max_frames: int | None) -> Iterator[Frame]:
        """The stream's frames in time order (a video is decoded lazily)."""
        if self.video is not None:
            from hermes_policy.video import open_video
            from hermes_policy.video.spec import SYNTHETIC_PREFIX

            synthetic = self.video.startswith(SYNTHETIC_PREFIX)
            source = open_video(self.video, fps=None if synthetic else fps, max_frames=max_frames)
            yield from source.frames()
            return
        step = 1.0 / (fps or DEFAULT_FPS)
        images = self.images if max_frames is None else self.images[:max_frames]
        for i, image in enumerate(images):
            yield Frame(i, i * step, image)

    def stream_info(self, adapter, fps: float | None, max_frames: int | None):
        """The :class:`~hermes_policy.eval.budgets.StreamInfo` the policy is sized by."""
        from hermes_policy.data.dataset import VideoItem
        from hermes_policy.eval.budgets import StreamInfo, stream_info

        if self.video is not None:
            info = stream_info(adapter, VideoItem(self.video), fps)
            if max_frames is not None and info.frames > max_frames:
                info = StreamInfo(info.video, max_frames, info.tokens_per_frame, info.frames_per_group,
                                  info.num_layers)
            return info
        n = len(self.images) if max_frames is None else min(len(self.images), max_frames)
        h, w = self.images[0].shape[:2]
        return StreamInfo(self.key, n, adapter.tokens_per_frame(h, w), adapter.frames_per_group, adapter.num_layers)


def open_visuals(visuals: Any, fallback_key: str) -> Visuals:
    """A request's visuals (``doc_to_visual(doc)``) as one stream; PluginError for what cannot be streamed.

    Accepted: a video path or ``synthetic:...`` spec (alone or as a one-item list), or a list of images
    (PIL or (H, W, 3) arrays; resized to the first one's size). A missing video file is a VideoError naming it.

    Args:
        fallback_key: keys an image stream (images have no path): the task, split and document.
    """
    from hermes_policy.video.spec import SYNTHETIC_PREFIX

    items = list(visuals) if isinstance(visuals, (list, tuple)) else ([] if visuals is None else [visuals])
    if not items:
        raise PluginError(f"hermes_lab streams video: request {fallback_key} has no visual (a text-only task "
                          "has nothing to stream)")
    paths = [v for v in items if isinstance(v, (str, os.PathLike))]
    if paths:
        if len(items) != 1:
            raise PluginError(f"hermes_lab streams one video per request; request {fallback_key} gives "
                              f"{len(items)} visuals ({', '.join(str(p) for p in paths[:3])})")
        video = os.fspath(paths[0])
        if not video.startswith(SYNTHETIC_PREFIX) and not Path(video).is_file():
            raise VideoError(f"hermes_lab: video {video} does not exist (request {fallback_key})")
        return Visuals(key=video, video=video)
    arrays = []
    for i, visual in enumerate(items):
        array = _image_array(visual)
        if array is None:
            raise PluginError(f"hermes_lab: request {fallback_key}: visual {i} is a {type(visual).__name__}; "
                              "it streams a video path, a synthetic:... spec or images")
        arrays.append(array)
    size = arrays[0].shape[:2]
    return Visuals(key=fallback_key, images=[_resized(a, size) for a in arrays])


def truncate_at_stops(text: str, until: str | Sequence[str] | None) -> str:
    """``text`` cut at the first of the stop strings (lmms-eval's ``until``)."""
    stops = [until] if isinstance(until, str) else list(until or [])
    cut = len(text)
    for stop in stops:
        if isinstance(stop, str) and stop:
            at = text.find(stop)
            if at != -1:
                cut = min(cut, at)
    return text[:cut]


def continuation_logprob(session, question: str, continuation: str) -> tuple[float, bool]:
    """``log P(continuation | question)`` from ``session``'s compact cache, and whether greedy decoding writes it.

    The question is templated as :meth:`~hermes_policy.session.StreamingSession.ask` templates it, with the
    policy's question-time hooks around it, and the continuation's tokens follow the assistant turn's opening
    (no end token is added, unlike ``option_logprobs``). One forward of question + continuation, rolled back:
    the cache is left as it was. An empty continuation scores 0.

    Raises:
        SessionError: an empty question, or no frame streamed yet.
    """
    import torch

    from hermes_policy.models.base import EncodedChunk

    adapter = session.adapter
    text = session._prepare_question(question, None)
    ids = list(adapter.tokenizer(str(continuation), add_special_tokens=False).input_ids)
    if not ids:
        return 0.0, True
    with torch.no_grad():
        q = adapter.encode_question(text, session.next_position)
        part = EncodedChunk.cat([q, adapter.encode_ids(torch.tensor(ids), q.end_position)])
        with session._policy_question(text):
            hidden = session._scratch_hidden(part)
        # rows from the question's last token on predict the continuation's tokens
        rows = hidden[len(q) - 1: len(q) - 1 + len(ids)]
        logp = torch.log_softmax(adapter.lm_head(rows).float(), dim=-1).cpu()
    target = torch.tensor(ids)
    total = float(logp[torch.arange(len(ids)), target].sum())
    return total, bool((logp.argmax(dim=-1) == target).all())


# ------------------------------------------------------------------- runner
class StreamRunner:
    """One model and one policy recipe serving requests: streams visuals, keeps the last stream, answers.

    Args:
        config: the plugin's arguments (checked); the model loads here.

    Raises:
        ModelError / PolicyError / BudgetError / PluginError: a bad argument, before any request.
    """

    def __init__(self, config: PluginConfig) -> None:
        from hermes_policy.eval.budgets import PolicyRecipe
        from hermes_policy.models import load_model
        from hermes_policy.models.registry import parse_dtype
        from hermes_policy.policies import PolicySpec
        from hermes_policy.session import SessionConfig

        self.config = config
        if config.spec is not None:
            self.recipe = PolicyRecipe.from_spec(PolicySpec.load(config.spec), config.budget, config.budget_ratio,
                                                 source=str(config.spec))
        else:
            self.recipe = PolicyRecipe(config.policy, config.budget, config.budget_ratio)
        self.session_config = SessionConfig(chunk_frames=config.chunk_frames, reindex=config.reindex)  # type: ignore[arg-type]
        self.adapter = load_model(config.model, dtype=parse_dtype(config.dtype), device=config.device,
                                  trust_remote_code=config.trust_remote_code)
        self.records: list[QuestionRecord] = []
        self._key: str | None = None
        self._session = None
        self._budget: int | None = None

    @property
    def policy_label(self) -> str:
        return self.recipe.key

    # ---------------------------------------------------------------- streams
    def _new_session(self, visuals: Visuals):
        from hermes_policy.session import StreamingSession

        info = visuals.stream_info(self.adapter, self.config.fps, self.config.max_frames)
        try:
            policy = self.recipe(info)  # an impossible budget for this stream fails here, before streaming
        except BudgetError as e:  # the policy's words name the CLI's option; here it is a model_arg
            raise BudgetError(f"hermes_lab: {visuals.key}: {str(e).replace('--budget ', 'budget=')}") from None
        self._session = StreamingSession(self.adapter, policy, self.session_config)
        self._budget = getattr(policy, "budget", None)
        self._key = visuals.key
        return self._session

    def stream(self, visuals: Visuals):
        """The session holding ``visuals`` streamed to their end (the last stream, when it is the same)."""
        if self._session is not None and self._key == visuals.key:
            return self._session
        self.close()
        session = self._new_session(visuals)
        self._ingest(session, visuals.frames(self.config.fps, self.config.max_frames))
        if session.frames_seen == 0:
            raise VideoError(f"hermes_lab: {visuals.key}: the video has no frames")
        return session

    def continue_stream(self, visuals: Visuals):
        """Extend the current stream with ``visuals`` (a multi-round request's next round).

        ``rounds=stream``: frames later than the stream's time are ingested (the round's video is the same video
        cut later); a video that ends before the stream's time is not a continuation and starts a new stream.
        ``rounds=restart``: always a new stream.
        """
        session = self._session
        if session is None or self.config.rounds == "restart" or self._key == visuals.key:
            return self.stream(visuals)
        seen = session.stream_time
        last = -math.inf
        newer = 0

        def later() -> Iterator[Frame]:
            nonlocal last, newer
            for frame in visuals.frames(self.config.fps, self.config.max_frames):
                last = frame.time
                if frame.time > seen + TIME_TOLERANCE:
                    newer += 1  # indices continue the stream's own count
                    yield Frame(session.frames_seen + session.pending_frames, frame.time, frame.image)

        self._ingest(session, later())
        if not newer and last + TIME_TOLERANCE < seen:
            self.close()  # the round's video ends before the stream's time: it is another stream
            return self.stream(visuals)
        self._key = visuals.key
        return session

    def _ingest(self, session, frames: Iterable[Frame]) -> None:
        session.ingest(frames)
        session.flush()

    def close(self) -> None:
        """Drop the kept stream (its cache is freed)."""
        self._session, self._key, self._budget = None, None, None

    # ---------------------------------------------------------------- answers
    def _record(self, session, kind: str, ttft_ms: float | None, task: str, doc_id: Any,
                round_index: int | None) -> QuestionRecord:
        record = QuestionRecord(
            key=str(self._key), kind=kind, policy=self.policy_label, budget=self._budget,
            frames=session.frames_seen, asked_at=session.stream_time, kv_bytes=session.kv_bytes,
            video_tokens_seen=session.video_tokens_seen, video_tokens_kept=session.video_tokens_kept(),
            ttft_ms=ttft_ms, task=task, doc_id=doc_id, round=round_index,
        )
        self.records.append(record)
        if self.config.stream_log:
            path = Path(self.config.stream_log)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({**asdict(record), "kept_fraction": record.kept_fraction}, default=str) + "\n")
        return record

    def generate(self, session, question: str, max_new_tokens: int | None = None,
                 until: str | Sequence[str] | None = None, task: str = "", doc_id: Any = None,
                 round_index: int | None = None) -> str:
        """Greedy answer to ``question`` from the session's compact cache, cut at the stop strings."""
        limit = max_new_tokens if max_new_tokens is not None else DEFAULT_MAX_NEW_TOKENS
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise PluginError(f"hermes_lab: max_new_tokens must be a positive integer, got {limit!r}")
        if self.config.max_new_tokens is not None:
            limit = min(limit, self.config.max_new_tokens)
        answer = session.ask(question, max_new_tokens=limit)
        self._record(session, "round" if round_index is not None else "generate", answer.ttft_ms, task, doc_id,
                     round_index)
        return truncate_at_stops(answer.answer, until)

    def loglikelihood(self, session, context: str, continuation: str, task: str = "",
                      doc_id: Any = None) -> tuple[float, bool]:
        """``(loss, is_greedy)`` of ``continuation`` after ``context``, from the compact cache.

        ``loss`` is the mean negative log-likelihood per continuation token, what lmms-eval's own models
        return from ``loglikelihood`` (its ``multiple_choice`` picks the option with the lowest; lmms-eval
        issue #370). The context is templated as a question, so the continuation starts the assistant's turn:
        its leading whitespace (lmms-eval's ``target_delimiter``) is dropped, as an answer there begins without it.
        """
        text = str(continuation).lstrip()
        logprob, greedy = continuation_logprob(session, context, text)
        n = len(self.adapter.tokenizer(text, add_special_tokens=False).input_ids)
        self._record(session, "loglikelihood", None, task, doc_id, None)
        return (-logprob / n if n else 0.0), greedy

    # ---------------------------------------------------------------- summary
    def summary(self, records: Sequence[QuestionRecord] | None = None) -> dict[str, Any]:
        """Means over ``records`` (default: all): budget, KV bytes, kept video tokens and fraction, TTFT."""
        rows = list(self.records if records is None else records)
        if not rows:
            return {}

        def mean(values: list[float]) -> float | None:
            values = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
            return statistics.fmean(values) if values else None

        return {
            "hermes_policy": self.policy_label,
            "hermes_questions": len(rows),
            "hermes_budget_tokens": mean([r.budget for r in rows]),
            "hermes_kv_bytes": mean([r.kv_bytes for r in rows]),
            "hermes_peak_kv_bytes": max(r.kv_bytes for r in rows),
            "hermes_video_tokens_kept": mean([r.video_tokens_kept for r in rows]),
            "hermes_kept_fraction": mean([r.kept_fraction for r in rows]),
            "hermes_ttft_ms": mean([r.ttft_ms for r in rows]),
        }


def warn(message: str) -> None:
    """One line on stderr (lmms-eval's logger when it is there)."""
    try:
        from loguru import logger

        logger.warning(message)
    except ImportError:
        print(f"warning: {message}", file=sys.stderr)


__all__ = [
    "DEFAULT_FPS",
    "DEFAULT_MAX_NEW_TOKENS",
    "PluginConfig",
    "PluginError",
    "QuestionRecord",
    "StreamRunner",
    "Visuals",
    "continuation_logprob",
    "open_visuals",
    "truncate_at_stops",
]
