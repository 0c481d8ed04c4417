"""StreamingSession: ingest a video chunk by chunk, ask at any moment.

The session owns one :class:`~hermes_policy.cache.CompactCache` and one
policy. Layout of what the cache ever sees::

    [system prefix (sink)] [frame 0 tokens] [frame 1 tokens] ...    <- kept, then pruned by the policy
                                             [question][answer]     <- scratch, always rolled back

Positions are explicit everywhere: the session keeps the next free position,
asks the adapter to lay chunks out from it, and passes ``position_ids`` to the
decoder, so streaming reproduces the positions of one full forward and keeps
them meaningful after eviction (gaps stay until re-indexing closes them).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from hermes_policy.attention import (
    ATTENTION_NAME,
    AttentionObserver,
    Segment,
    Subscription,
    streaming_context,
    subscribe,
)
from hermes_policy.cache import CompactCache
from hermes_policy.embedding_probe import PSEUDO_QUERY_DEPTHS, PseudoQueryDepth, embedding_probe
from hermes_policy.errors import SessionError
from hermes_policy.head_cache import HeadCache
from hermes_policy.inputs import check_text_length
from hermes_policy.mc_format import (  # noqa: F401  (re-exported: imported from here before mc_format existed)
    LETTER_OPENER,
    MC_ANSWERS,
    OPTION_LETTERS,
    WordLetter,
    decode_to_opener,
    format_question,
    word_letter,
)
from hermes_policy.models.base import DEFAULT_SYSTEM_PROMPT, EncodedChunk, ModelAdapter
from hermes_policy.policies.base import Policy
from hermes_policy.policies.full import FullPolicy
from hermes_policy.timeline import TIME_TOLERANCE, interleave  # noqa: F401  (re-exported)
from hermes_policy.tokens import TokenMeta
from hermes_policy.video import Frame


@dataclass
class SessionConfig:
    """How a session streams.

    Attributes:
        chunk_frames: frames prefilled per forward (rounded up to the model's frame groups).
        max_new_tokens: greedy decode limit per answer.
        system_prompt: the system message; its tokens are the always-kept prefix.
        reindex: "lazy" compacts positions only when they near the model's
            maximum (streaming); "eager" after every chunk that evicted (offline); "off" never.
        reindex_headroom: lazy re-indexing fires when fewer positions than this remain.
        timed: add each ingest stage's wall time to :attr:`StreamingSession.stage_seconds`
            (``vision``: frames to embeddings; ``lm``: the chunk's prefill; ``policy``: pruning and
            re-indexing). On CUDA this synchronises at every stage boundary, so it is for benchmarks.
    """

    chunk_frames: int = 4
    max_new_tokens: int = 32
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    reindex: Literal["lazy", "eager", "off"] = "lazy"
    reindex_headroom: int = 2048
    timed: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.chunk_frames, int) or self.chunk_frames < 1:
            raise SessionError(f"chunk_frames must be a positive integer, got {self.chunk_frames!r}")
        if self.max_new_tokens < 1:
            raise SessionError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.reindex not in ("lazy", "eager", "off"):
            raise SessionError(f"reindex must be 'lazy', 'eager' or 'off', got {self.reindex!r}")
        if self.reindex_headroom < 0:
            raise SessionError("reindex_headroom must be >= 0")


def check_question(question: object) -> str:
    """``question`` if it is non-empty UTF-8 text; SessionError (one line) otherwise."""
    if not isinstance(question, str) or not question.strip():
        raise SessionError("the question is empty; ask something, e.g. 'What is happening?'")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes from a command line arrive as lone surrogates
        raise SessionError(f"the question {question[:80]!r} is not valid UTF-8 text") from None
    return check_text_length(question, SessionError, "the question")


@dataclass
class Answer:
    """One answered question.

    Attributes:
        time: stream time (s) when the question was asked.
        ttft_ms: question arrival to first generated token.
        total_ms: question arrival to the last generated token.
        kv_bytes: key/value bytes held by the compact cache when the question arrived.
        cached_tokens: rows per layer at that moment.
    """

    question: str
    answer: str
    time: float
    ttft_ms: float
    total_ms: float
    kv_bytes: int
    new_tokens: int
    cached_tokens: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "time": self.time,
            "question": self.question,
            "answer": self.answer,
            "ttft_ms": round(self.ttft_ms, 3),
            "kv_bytes": self.kv_bytes,
        }


class Observation:
    """Observers attached to a session by :meth:`StreamingSession.observing`; detach with :meth:`detach`.

    Attached from the moment it is made. As a context manager it detaches on exit,
    so ``with session.observing(probe, phases=["probe"]):`` scopes the observation to a block.
    """

    def __init__(self, session: StreamingSession, subscriptions: tuple[Subscription, ...]) -> None:
        self.session = session
        self.subscriptions = subscriptions
        session._subscriptions.extend(subscriptions)

    @property
    def attached(self) -> bool:
        return any(s in self.session._subscriptions for s in self.subscriptions)

    def detach(self) -> None:
        """Remove these observers from the session (again: no-op)."""
        current = self.session._subscriptions
        self.session._subscriptions = [s for s in current if not any(s is mine for mine in self.subscriptions)]

    def __enter__(self) -> Observation:
        return self

    def __exit__(self, *exc) -> None:
        self.detach()


class StreamingSession:
    """A video stream flowing into one model under one memory policy.

    Args:
        adapter: the wrapped model (see :func:`hermes_policy.models.load_model`).
        policy: the memory policy; default ``full`` (no eviction).
        config: streaming settings.
    """

    def __init__(
        self, adapter: ModelAdapter, policy: Policy | None = None, config: SessionConfig | None = None
    ) -> None:
        self.adapter = adapter
        self.policy = policy if policy is not None else FullPolicy()
        self.policy.check_model(adapter)  # a spec made for another model fails here, before anything streams
        self.config = config if config is not None else SessionConfig()
        group = adapter.frames_per_group
        self.chunk_frames = -(-self.config.chunk_frames // group) * group
        adapter.set_attention(ATTENTION_NAME)
        layout = HeadCache if self.policy.granularity == "head" else CompactCache
        self.cache = layout(adapter.num_layers, adapter.rotary, adapter.layer_types)
        self.template = adapter.template(self.config.system_prompt)
        self._subscriptions: list[Subscription] = []
        self.frames_seen = 0
        self.stream_time = 0.0
        self.tokens_per_frame: int | None = None
        self.sink_len = 0
        self.next_position = 0
        #: video tokens written so far (every frame's rows, before any eviction)
        self.video_tokens_seen = 0
        self.timeline: list[dict] = []
        #: (question, answer, options) of every question :meth:`ask` answered, oldest first (HERMES's
        #: pseudo-queries quote the last one)
        self.exchanges: list[tuple[str, str, list[str] | None]] = []
        #: seconds spent per ingest stage when ``config.timed`` (see :class:`SessionConfig`)
        self.stage_seconds: dict[str, float] = {"vision": 0.0, "lm": 0.0, "policy": 0.0}
        self._pending: list[Frame] = []
        self._stop_ids = self._stop_token_ids()

    # ------------------------------------------------------------ observers
    def observing(
        self, *observers: AttentionObserver, layers: Iterable[int] | None = None, phases: Iterable[str] | None = None
    ) -> Observation:
        """Attach attention observers, optionally only for some layers and phases; returns the handle.

        An observer filtered out of a (layer, phase) is not called for it at all.
        Use it as a context manager (``with session.observing(p):``) or call ``.detach()``.

        Raises:
            TypeError: something that is not an observer, before anything is attached.
            ValueError: an unknown phase or a bad layer, before anything is attached.
        """
        if isinstance(self.cache, HeadCache):
            raise SessionError("probes record per-layer rows, and this session keeps a per-head cache "
                               "(granularity head), whose heads hold different rows; observe a per-layer run")
        layers = None if layers is None else list(layers)
        phases = None if phases is None else list(phases)
        if layers is not None:
            bad = [i for i in layers if isinstance(i, int) and i >= self.adapter.num_layers]
            if bad:
                raise ValueError(f"the model has {self.adapter.num_layers} layers; no layer {bad}")
        return Observation(self, tuple(subscribe(o, layers, phases) for o in observers))

    @property
    def observers(self) -> tuple[AttentionObserver, ...]:
        """The observers attached with :meth:`observing` (read-only: attach and detach through it)."""
        return tuple(s.observer for s in self._subscriptions)

    # ---------------------------------------------------------------- state
    @property
    def kv_bytes(self) -> int:
        return self.cache.kv_bytes

    @property
    def pending_frames(self) -> int:
        return len(self._pending)

    def video_tokens_kept(self) -> float:
        """Video tokens the cache holds now, averaged over layers (policy slots such as a summary token excluded)."""
        n = self.cache.num_layers
        return sum(self.cache.video_count(i) for i in range(n)) / n if n else 0.0

    def _stop_token_ids(self) -> set[int]:
        ids: set[int] = set()
        eos = getattr(self.adapter.model.generation_config, "eos_token_id", None)
        ids.update([eos] if isinstance(eos, int) else (eos or []))
        tok = self.adapter.tokenizer
        if tok.eos_token_id is not None:
            ids.add(tok.eos_token_id)
        im_end = tok.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tok.unk_token_id:
            ids.add(im_end)
        return ids

    # -------------------------------------------------------------- forward
    def _forward(
        self, chunk: EncodedChunk, phase: str, keep: bool, tag: str = "", segments: list[Segment] | None = None
    ) -> torch.Tensor:
        """Prefill ``chunk`` against the cache; returns last hidden states (1, n, hidden).

        ``keep`` commits the rows; otherwise they are staged and must be
        rolled back by the caller's :meth:`CompactCache.scratch`.
        """
        observers = [*self.policy.observers(), *self._subscriptions]
        with streaming_context(self.cache, phase, observers, tag, segments), torch.no_grad():
            out = self.adapter.text_model(
                inputs_embeds=chunk.embeds[None].to(self.adapter.device),
                position_ids=self.adapter.position_ids(chunk.positions),
                past_key_values=self.cache,
                use_cache=True,
                **self.adapter.forward_kwargs(chunk),
            )
        return out.last_hidden_state

    def _write(self, chunk: EncodedChunk, phase: str) -> None:
        with self.cache.transaction(chunk.positions, chunk.meta):
            self._forward(chunk, phase, keep=True)
        self.next_position = max(self.next_position, chunk.end_position)

    def _ensure_prefix(self) -> None:
        if self.cache.layer_len(0) > 0:
            return
        prefix = self.adapter.encode_text(self.template.prefix, self.next_position)
        self._write(prefix, "prefix")
        self.sink_len = len(prefix)

    # --------------------------------------------------------------- ingest
    def ingest(self, frames: Iterable[Frame], progress: Any = None) -> int:
        """Feed frames; every ``chunk_frames`` of them are prefilled, then the policy prunes.

        Frames that do not fill a chunk wait for the next call (or :meth:`flush`,
        which :meth:`ask` runs first). Returns how many frames were taken.

        Args:
            frames: the frames to take, in stream order.
            progress: optional tqdm-like object; ``update(n)`` is called per chunk.
        """
        taken = 0
        carried = len(self._pending)  # frames left over from earlier calls
        try:
            for frame in frames:
                self._pending.append(frame)
                taken += 1
                if len(self._pending) >= self.chunk_frames:
                    self._ingest_pending(self.chunk_frames)
                    carried = 0
                    if progress is not None:
                        progress.update(self.chunk_frames)
        except BaseException:
            # the cache holds exactly the chunks that completed; frames of this
            # call that were not written are dropped, so the session stays usable
            del self._pending[carried:]
            raise
        return taken

    def flush(self) -> None:
        """Prefill frames still waiting for a full chunk."""
        n = len(self._pending)
        if n:
            self._ingest_pending(n)

    def _ingest_pending(self, n: int) -> None:
        frames = self._pending[:n]
        h, w = frames[0].image.shape[:2]
        tokens_per_frame = self.adapter.tokens_per_frame(h, w)
        if self.tokens_per_frame is None:
            # before any write: an impossible budget leaves the session untouched
            self.policy.validate(tokens_per_frame, self.adapter.num_layers)
        elif tokens_per_frame != self.tokens_per_frame:
            raise SessionError(
                f"frame size changed mid-stream ({w}x{h} gives {tokens_per_frame} tokens per frame, "
                f"the stream so far had {self.tokens_per_frame})"
            )
        self._ensure_prefix()
        with self._stage("vision"):
            chunk = self.adapter.encode_frames(frames, self.next_position)
        with self._stage("lm"):
            self._write(chunk, "ingest")
        self.video_tokens_seen += int(chunk.meta.is_video.sum())
        del self._pending[:n]
        self.tokens_per_frame = tokens_per_frame
        self.frames_seen += n
        self.stream_time = frames[-1].time
        # every edit of committed rows bumps the version (an eviction, or HERMES folding a row into a summary
        # row without changing the count), so it says whether the policy evicted
        before = self.cache.version
        with self._stage("policy"):
            self.policy.on_frames(self, frames)
            self.policy.after_chunk(self)
            if self.cache.layer_tails:
                # each layer continues from its own last row: the stream's next position is the cache's
                self.next_position = self.cache.next_position
            evicted = self.cache.version != before
            self._maybe_reindex(evicted)
        entry = {
            "frames": self.frames_seen,
            "time": self.stream_time,
            "kv_bytes": self.cache.kv_bytes,
            "tokens": self.cache.lengths(),
        }
        if isinstance(self.cache, HeadCache):
            entry["head_tokens"] = self.cache.all_head_lengths()  # per layer, each KV head's rows
        self.timeline.append(entry)

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        if not self.config.timed:
            yield
            return
        self._synchronise()
        start = time.perf_counter()
        yield
        self._synchronise()
        self.stage_seconds[name] += time.perf_counter() - start

    @staticmethod
    def _synchronise() -> None:
        # every GPU: with a device map, layers run on several
        if torch.cuda.is_available():
            for index in range(torch.cuda.device_count()):
                torch.cuda.synchronize(index)

    def _maybe_reindex(self, evicted: bool) -> None:
        mode = self.config.reindex
        near_limit = self.next_position + self.config.reindex_headroom >= self.adapter.rotary.max_position
        if (mode == "eager" and evicted) or (mode == "lazy" and near_limit):
            self.cache.reindex_all()
            self.next_position = self.cache.next_position

    # ------------------------------------------------------------------ ask
    def _prepare_question(self, question: str, options: Sequence[str] | None) -> str:
        """Validate and template a question, then flush buffered frames so it sees all of them."""
        check_question(question)
        if self.frames_seen == 0 and not self._pending:
            raise SessionError("no frame has been streamed yet; ingest at least one frame before asking")
        text = self.template.question_text(format_question(question.strip(), options))
        self.flush()
        return text

    @torch.no_grad()
    def pseudo_queries(
        self, prompts: dict[str, str], depth: PseudoQueryDepth = "forward", templated: bool = True,
        causal: bool = True,
    ) -> None:
        """Run prompts against the cache as questions would be, for observers only.

        HERMES scores tokens with such prompts after every chunk; probes record
        them. All prompts share one pass (phase ``probe``) as independent
        :class:`Segment` s tagged by their key: each starts at the next free
        position and sees the cache and itself only. Nothing is generated or kept.

        Args:
            depth: ``"forward"`` runs the prompts through the model (every layer's queries
                come from the real residual stream); ``"embedding"`` projects the prompts'
                input embeddings at each layer instead, as HERMES's release does under
                sdpa / flash attention (:mod:`hermes_policy.embedding_probe`): no forward.
            templated: wrap each prompt in the chat template as a question; False: its bare tokens (as the
                HERMES release tokenises its pseudo-queries).
            causal: on the embedding path, mask a prompt's later tokens from its earlier ones; False: every
                token of a prompt sees the whole prompt (the HERMES release's sdpa path builds no mask).
                A forward is always causal.
        """
        if depth not in PSEUDO_QUERY_DEPTHS:
            raise ValueError(f"depth must be one of {PSEUDO_QUERY_DEPTHS}, got {depth!r}")
        if self.frames_seen == 0:
            raise SessionError("no frame has been streamed yet; a pseudo-query needs a cache to look at")
        if depth == "forward" and len(prompts) > 1 and not self.packable:
            for tag, prompt in prompts.items():  # a recurrent layer would carry one prompt into the next
                self.pseudo_queries({tag: prompt}, depth, templated, causal)
            return
        parts, segments, start = [], [], 0
        for tag, prompt in prompts.items():
            if templated:
                chunk = self.adapter.encode_question(self.template.question_text(prompt), self.next_position)
            else:
                chunk = self.adapter.encode_text(prompt, self.next_position)
            if len(chunk) == 0:
                raise SessionError(f"pseudo-query {tag!r} has no tokens")
            parts.append(chunk)
            segments.append(Segment(tag, start, start + len(chunk)))
            start += len(chunk)
        packed = EncodedChunk.cat(parts)
        with self.cache.scratch(packed.positions, packed.meta):
            if depth == "forward":
                self._forward(packed, "probe", keep=False, segments=segments)
                return
            observers = [*self.policy.observers(), *self._subscriptions]
            with streaming_context(self.cache, "probe", observers, segments=segments) as ctx:
                embedding_probe(self.adapter, self.cache, packed, ctx, causal=causal)

    @property
    def packable(self) -> bool:
        """Whether independent prompts may share one forward as :class:`Segment` s. A hybrid's linear-attention
        layers cannot be masked (their recurrent state runs through the whole forward), so there each prompt
        gets its own forward from the same state."""
        return not self.cache.recurrent_layers

    @torch.no_grad()
    def question_logits(self, question: str, options: Sequence[str] | None = None) -> torch.Tensor:
        """(vocab,) float32 logits of the first answer token; the cache is left as it was."""
        text = self._prepare_question(question, options)
        with self._policy_question(text), self.cache.scratch(*self._question_rows(text)) as chunk:
            hidden = self._forward(chunk, "ask", keep=False)
            return self.adapter.lm_head(hidden[0, -1]).float()

    def _decode(self, ids: list[int], position: int) -> torch.Tensor:
        """Feed answer tokens into the current scratch write from ``position``; the (vocab,) logits after them."""
        step = self.adapter.encode_ids(torch.tensor(ids), position)
        self.cache.extend_scratch(step.positions, TokenMeta.text(len(ids)))
        hidden = self._forward(step, "decode", keep=False)
        return self.adapter.lm_head(hidden[0, -1]).float()

    @torch.no_grad()
    def letter_after_word(self, question: str, options: Sequence[str], max_word_tokens: int = 8) -> WordLetter:
        """A ``word-letter`` answer ("red (B)") read up to its letter; the cache is left as it was.

        The model writes its free-form answer greedily until the opener " (" (see :func:`decode_to_opener`);
        the logits of the next token are the letter's. TTFT is to the first token, as in :meth:`ask`.
        """
        text = self._prepare_question(question, options)
        start = time.perf_counter()
        with self._policy_question(text), self.cache.scratch(*self._question_rows(text)) as chunk:
            hidden = self._forward(chunk, "ask", keep=False)
            first = self.adapter.lm_head(hidden[0, -1]).float()
            int(first.argmax())  # the first token is on the host: TTFT is complete
            ttft = time.perf_counter() - start
            position = chunk.end_position

            def feed(ids: list[int]) -> torch.Tensor:
                nonlocal position
                logits = self._decode(ids, position)
                position += len(ids)
                return logits

            ids, logits = decode_to_opener(first, feed, self.adapter.tokenizer, stop_ids=self._stop_ids,
                                           limit=max_word_tokens)
        return WordLetter(prompt=text, ids=ids, written=self.adapter.tokenizer.decode(ids), logits=logits,
                          ttft_ms=ttft * 1000)

    @torch.no_grad()
    def option_logprobs(self, question: str, options: Sequence[str]) -> tuple[torch.Tensor, float]:
        """Cloze scoring: how likely each option is as the whole free-form answer; the cache is left as it was.

        The question is asked plainly (the options are not shown); each option's score is
        ``log P(its tokens, then an end token | question)``. All options share one forward as
        independent :class:`Segment` s (question + option each, at the same positions), as
        :meth:`pseudo_queries` packs prompts.

        Returns:
            (n_options,) float32 log-probabilities, and the ms that forward took to the scores (TTFT).
        """
        text = self._prepare_question(question, None)
        tokenizer, stop = self.adapter.tokenizer, sorted(self._stop_ids)
        q = self.adapter.encode_question(text, self.next_position)
        parts, segments, answers, begin = [], [], [], 0
        for i, option in enumerate(options):
            ids = list(tokenizer(str(option), add_special_tokens=False).input_ids)
            parts.append(EncodedChunk.cat([q, self.adapter.encode_ids(torch.tensor(ids), q.end_position)]))
            segments.append(Segment(str(i), begin, begin + len(parts[-1])))
            answers.append(ids)
            begin += len(parts[-1])
        packed = EncodedChunk.cat(parts)
        start = time.perf_counter()
        with self._policy_question(text):
            if self.packable:
                with self.cache.scratch(packed.positions, packed.meta):
                    hidden = self._forward(packed, "ask", keep=False, segments=segments)[0]
            else:  # one forward per option, each from the stream's own state (see packable)
                hidden = torch.cat([self._scratch_hidden(part) for part in parts])
            scores = []
            for segment, ids in zip(segments, answers):
                # rows from the question's last token on predict the option's tokens, then the end
                rows = hidden[segment.start + len(q) - 1: segment.stop]
                logp = torch.log_softmax(self.adapter.lm_head(rows).float(), dim=-1).cpu()
                scores.append(logp[torch.arange(len(ids)), ids].sum() + torch.logsumexp(logp[len(ids), stop], 0))
        return torch.stack(scores), (time.perf_counter() - start) * 1000

    def _scratch_hidden(self, chunk: EncodedChunk) -> torch.Tensor:
        """(n, hidden) last hidden states of ``chunk`` prefilled on the cache and rolled back."""
        with self.cache.scratch(chunk.positions, chunk.meta):
            return self._forward(chunk, "ask", keep=False)[0]

    @contextmanager
    def _policy_question(self, text: str) -> Iterator[None]:
        """The policy's question-time hooks around a question's prefill and decode."""
        try:
            self.policy.before_ask(self, text)
            yield
        finally:
            self.policy.after_ask(self)

    def _question_rows(self, text: str) -> tuple[torch.Tensor, TokenMeta, EncodedChunk]:
        chunk = self.adapter.encode_question(text, self.next_position)
        return chunk.positions, chunk.meta, chunk

    @torch.no_grad()
    def ask(
        self, question: str, options: Sequence[str] | None = None, max_new_tokens: int | None = None
    ) -> Answer:
        """Answer from the compact cache as it is now; the question and answer are not kept.

        TTFT runs from here (after buffered frames are flushed, which is stream
        work, not question work) to the first generated token.
        """
        text = self._prepare_question(question, options)
        limit = max_new_tokens or self.config.max_new_tokens
        kv_bytes, lengths = self.cache.kv_bytes, self.cache.lengths()
        start = time.perf_counter()
        generated: list[int] = []
        with self._policy_question(text), self.cache.scratch(*self._question_rows(text)) as chunk:
            hidden = self._forward(chunk, "ask", keep=False)
            position = chunk.end_position
            token = int(self.adapter.lm_head(hidden[0, -1]).argmax())
            ttft = time.perf_counter() - start
            while token not in self._stop_ids:
                generated.append(token)
                if len(generated) >= limit:
                    break
                token = int(self._decode([token], position).argmax())
                position += 1
        total = time.perf_counter() - start
        answer = self.adapter.tokenizer.decode(generated, skip_special_tokens=True).strip()
        self.exchanges.append((question, answer, list(options) if options else None))
        return Answer(
            question=question,
            answer=answer,
            time=self.stream_time,
            ttft_ms=ttft * 1000,
            total_ms=total * 1000,
            kv_bytes=kv_bytes,
            new_tokens=len(generated),
            cached_tokens=lengths,
        )
