"""Knockout and patching of cached KV rows, re-scored exactly and in batches: the runtime of the causal map.

A :class:`Knockout` hides some cached rows (the frames of an age bin, one in-frame position of every
frame) from some layers' attention, or from single query heads there; with ``patch`` the rows are
replaced by the same rows of a second stream instead (same token layout: frames, frame size, chunks).
Its effect is read where the eval reads an answer: the option scores of the ``cloze`` or ``letter``
scorer (:mod:`hermes_policy.eval.scoring`), so a knockout's change in the correct option's
log-probability is the change an eval of the evicted cache would see.

Why it is cheap, and still exact (per question, :class:`Rescorer`):

1. **One clean pass.** The question is prefilled once; for cloze every option is a branch off the
   shared question rows (the rows ``option_logprobs`` repeats per option are computed once). Pre-hooks
   keep each decoder layer's input, and an observer reads each layer's attention at the answer row: the
   attention mass on every :class:`Selection` and its *direct effect* (below), for no further forward.
2. **Packed re-scoring.** Knockouts that start at the same layer share one forward that starts there:
   the layers below cannot see the knockout, so their outputs are the clean pass's and are fed in, not
   recomputed (:func:`_bypass`). Each knockout gets its own copy of the question block; a key mask
   (:data:`hermes_policy.attention.KeyMask`) keeps the copies apart and hides each copy's rows in its
   layers. Hiding a key from the softmax is removing it, so every copy's scores equal evicting its rows
   and asking again, which :meth:`Rescorer.naive` does (the tests compare the two).

Cost (:class:`Cost`), in decoder-layer x query-row units: the naive map asks once per knockout, all L
layers over ``option_logprobs``' rows; the packed map runs L - first layer over one block per knockout.

**Direct effect** of removing selection σ from head h at layer l, its input held clean: with p the
answer row's attention and o = Σ p_j v_j its output, m = Σ_{j∈σ} p_j and u = Σ_{j∈σ} p_j v_j, the
output without σ is o' = (o - u) / (1 - m), and ``direct = ‖o' - o‖ / (‖o‖ + ‖o'‖)``: the change of
what the head writes, in [0, 1] (1: the head loses everything it read, or reads the opposite), so
that means over questions are not ruled by a head whose few remaining keys happen to cancel. It
needs no forward, and it is the only effect a planted model shows (their output projections are
zero by construction, so no knockout reaches their answer).

Hybrid models (Qwen3.5's linear-attention layers) are refused: copies of a question cannot share a
forward through a recurrent state.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from hermes_policy.attention import AttentionEvent, streaming_context
from hermes_policy.cache import CompactCache
from hermes_policy.errors import SessionError
from hermes_policy.models.base import EncodedChunk
from hermes_policy.session import StreamingSession
from hermes_policy.tokens import TokenMeta

#: how the answer is read (the eval's scorers of the same names); ``word-letter`` decodes a word first,
#: which a knockout may change, so it has no fixed rows to re-score
SCORINGS = ("cloze", "letter")


def select_rows(meta: TokenMeta, frames: Sequence[int] | None = None,
                patches: Sequence[int] | None = None) -> torch.Tensor:
    """(S,) bool: the rows of ``frames`` (None: every frame), only patches ``patches`` of them (None: every
    row of those frames, their text included, as eviction drops a frame's text with its patches)."""
    sel = meta.frame >= 0
    if frames is not None:
        sel &= torch.isin(meta.frame, torch.as_tensor(list(frames), dtype=meta.frame.dtype))
    if patches is not None:
        sel &= torch.isin(meta.patch, torch.as_tensor(list(patches), dtype=meta.patch.dtype))
    return sel


@dataclass(frozen=True)
class Selection:
    """Cache rows chosen by frame and in-frame position (see :func:`select_rows`)."""

    frames: tuple[int, ...] | None = None
    patches: tuple[int, ...] | None = None

    def rows(self, meta: TokenMeta) -> torch.Tensor:
        return select_rows(meta, self.frames, self.patches)


@dataclass(frozen=True)
class Knockout:
    """One intervention on the cache for one question.

    Attributes:
        layers: cache layers whose attention loses (or, patched, swaps) the rows.
        frames, patches: which rows (see :func:`select_rows`).
        heads: query heads that lose them (None: all heads, i.e. the rows are gone, as eviction removes them).
        patch: replace the rows by the donor stream's same rows instead of removing them.
    """

    layers: tuple[int, ...]
    frames: tuple[int, ...] | None = None
    patches: tuple[int, ...] | None = None
    heads: tuple[int, ...] | None = None
    patch: bool = False

    def __post_init__(self) -> None:
        if not self.layers or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in self.layers):
            raise SessionError(f"a knockout needs cache layers (non-negative integers), got {self.layers!r}")
        if self.heads is not None and (not self.heads or any(h < 0 for h in self.heads)):
            raise SessionError(f"knockout heads must be non-negative head indices, got {self.heads!r}")
        if self.patch and self.heads is not None:
            raise SessionError("patching replaces whole KV rows, which every head of a KV group shares; "
                               "a per-head intervention is a knockout")

    @property
    def selection(self) -> Selection:
        return Selection(self.frames, self.patches)

    @property
    def first_layer(self) -> int:
        return min(self.layers)


@dataclass
class Cost:
    """Work done, in forwards and in decoder-layer x query-row units, next to what naive asking would take.

    Attributes:
        forwards: forwards run (clean passes and packs).
        row_layers: query rows x decoder layers computed.
        naive_forwards: one ``option_logprobs`` / ``question_logits`` call per knockout, plus the clean one.
        naive_row_layers: what those calls compute (all layers, the question repeated per cloze option).
        seconds: wall time of the clean passes and packs.
    """

    forwards: int = 0
    row_layers: int = 0
    naive_forwards: int = 0
    naive_row_layers: int = 0
    seconds: float = 0.0

    def add(self, other: Cost) -> None:
        for name in ("forwards", "row_layers", "naive_forwards", "naive_row_layers", "seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class CleanPass:
    """The unmodified question, read once.

    Attributes:
        scores: (n_options,) float32 option scores, as the eval's scorer gives them.
        attention: (L, n_sel, Hq) float32 answer-row attention mass on each selection.
        direct: (L, n_sel, Hq) float32 direct effect of removing each selection (module docstring).
        null: (L, n_sel, Hq) float32 the direct effect a head attending every frame patch alike would show:
            what the selection's values alone account for (a row with values unlike the rest moves any head).
    """

    scores: torch.Tensor
    attention: torch.Tensor
    direct: torch.Tensor
    null: torch.Tensor


@dataclass
class _Block:
    """One copy of the question: its rows, their visibility among themselves, and how the answer is read."""

    chunk: EncodedChunk
    mask: torch.Tensor  # (R, R) bool
    answer_row: int  # the last question row: it predicts the answer's first token
    reads: list[tuple[torch.Tensor, list[int]]] = field(default_factory=list)  # cloze: (rows, ids) per option
    groups: list[list[int]] | None = None  # letter: token ids per option letter
    naive_rows: int = 0  # rows ``option_logprobs`` (or ``question_logits``) prefills for this question


def _block(session: StreamingSession, question: str, options: Sequence[str], scoring: str) -> _Block:
    """The question's rows: for cloze the question asked plainly, then each option as a branch off it (at the
    same positions, as ``option_logprobs`` lays them out); for letter the question with lettered options."""
    from hermes_policy.eval.scoring import letter_token_ids
    from hermes_policy.mc_format import format_question

    adapter, start = session.adapter, session.next_position
    if scoring == "letter":
        text = session.template.question_text(format_question(question.strip(), list(options)))
        q = adapter.encode_question(text, start)
        R = len(q)
        return _Block(q, torch.ones(R, R, dtype=torch.bool).tril(), R - 1,
                      groups=letter_token_ids(adapter.tokenizer, text, len(options)), naive_rows=R)
    text = session.template.question_text(question.strip())
    q = adapter.encode_question(text, start)
    Q, parts, reads, begin = len(q), [q], [], len(q)
    for option in options:
        ids = list(adapter.tokenizer(str(option), add_special_tokens=False).input_ids)
        parts.append(adapter.encode_ids(torch.tensor(ids), q.end_position))
        # the last question row predicts the option's first token; each option row the next, the last one the end
        reads.append((torch.tensor([Q - 1, *range(begin, begin + len(ids))]), ids))
        begin += len(ids)
    R = begin
    mask = torch.zeros(R, R, dtype=torch.bool)
    mask[:Q, :Q] = torch.ones(Q, Q, dtype=torch.bool).tril()
    lo = Q
    for _, ids in reads:
        hi = lo + len(ids)
        mask[lo:hi, :Q] = True  # an option sees the whole question, then itself causally
        mask[lo:hi, lo:hi] = torch.ones(hi - lo, hi - lo, dtype=torch.bool).tril()
        lo = hi
    naive = sum(Q + len(ids) for _, ids in reads)
    return _Block(EncodedChunk.cat(parts), mask, Q - 1, reads, naive_rows=naive)


def _pass_through(*args, **kwargs):
    return args[0] if args else kwargs["hidden_states"]


_UNSET = object()


@contextmanager
def _bypass(layers: nn.ModuleList, below: int) -> Iterator[None]:
    """Decoder layers ``< below`` return their input unchanged for the duration: the caller feeds the clean
    pass's input of layer ``below`` in as the embeddings, which those layers would have computed anyway.
    Any forward already set on an instance (accelerate's device hooks) is put back afterwards."""
    saved = []
    try:
        for layer in list(layers)[:below]:
            saved.append((layer, layer.__dict__.get("forward", _UNSET)))
            layer.forward = _pass_through
        yield
    finally:
        for layer, forward in saved:
            if forward is _UNSET:
                del layer.forward
            else:
                layer.forward = forward


class _AnswerRowReader:
    """Observer of the clean pass: per layer, the answer row's attention mass and direct effect per selection."""

    def __init__(self, cache: CompactCache, answer_row: int, selections: Sequence[Selection]) -> None:
        self.cache, self.row, self.selections = cache, answer_row, selections
        self.attention: dict[int, torch.Tensor] = {}
        self.direct: dict[int, torch.Tensor] = {}
        self.null: dict[int, torch.Tensor] = {}

    def observe(self, event: AttentionEvent) -> None:
        S = self.cache.layer_len(event.layer)  # committed rows; the question block follows them
        meta = self.cache.meta(event.layer)
        p = event.attention([self.row])[:, 0]  # (Hq, S + R) float32
        v = event.value[0].float()  # (Hkv, S + R, D)
        hq, hkv = p.shape[0], v.shape[0]
        sel = torch.stack([s.rows(meta) for s in self.selections]).float()  # (n, S)
        m, direct = _direct(p.reshape(hkv, hq // hkv, -1), v, sel, S)
        # the same for a head that reads every frame's patches alike (frame text, such as timestamps, is not
        # what a memory head reads): what removing σ does through the values alone
        video = ((meta.frame >= 0) & (meta.patch >= 0)).float()
        uniform = torch.cat([video / video.sum().clamp_min(1), torch.zeros(p.shape[-1] - S)]).to(v)
        _, null = _direct(uniform.expand(hkv, 1, -1), v, sel, S)
        self.attention[event.layer] = m.reshape(len(sel), hq)
        self.direct[event.layer] = direct.reshape(len(sel), hq)
        self.null[event.layer] = null.repeat_interleave(hq // hkv, dim=1).reshape(len(sel), hq)


def _direct(p: torch.Tensor, v: torch.Tensor, sel: torch.Tensor, S: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention mass and direct effect of removing each selection (module docstring).

    Args:
        p: (Hkv, G, K) attention of the G query heads of each KV head over its K keys (cache rows first).
        v: (Hkv, K, D) values; sel: (n, S) 0/1 selections over the S cache rows.

    Returns:
        (n, Hkv, G) mass m and (n, Hkv, G) ``‖o' - o‖ / (‖o‖ + ‖o'‖)``.
    """
    o = torch.einsum("kgs,ksd->kgd", p, v)  # grouped: no copy of the values per query head
    m = torch.einsum("ns,kgs->nkg", sel, p[..., :S])
    u = torch.einsum("ns,kgs,ksd->nkgd", sel, p[..., :S], v[:, :S])
    without = (o[None] - u) / (1 - m).clamp_min(1e-12)[..., None]  # the output without σ
    change = (without - o[None]).norm(dim=-1)
    return m, change / (o.norm(dim=-1)[None] + without.norm(dim=-1)).clamp_min(1e-30)


class Rescorer:
    """Exact knockout re-scoring of one question against a session's cache, as it is now.

    The session's policy question hooks are not run (the map reads the cache as it is; use a ``full``
    session, as ``hermes-lab causal`` does); the cache is left exactly as it was found.

    Args:
        session: a session with at least one frame streamed (buffered frames are flushed first).
        question, options: the multiple-choice question.
        scoring: ``cloze`` or ``letter`` (:data:`SCORINGS`).
        donor: a second stream's cache, row for row like this one, for ``patch`` knockouts.
        max_rows: query rows per packed forward (more knockouts are split over several).
    """

    def __init__(self, session: StreamingSession, question: str, options: Sequence[str], scoring: str = "cloze",
                 donor: CompactCache | None = None, max_rows: int = 4096) -> None:
        if scoring not in SCORINGS:
            raise SessionError(f"knockout re-scoring reads cloze or letter answers, not {scoring!r} (a word-letter "
                               "answer decodes a word first, which a knockout may change)")
        if not session.packable:
            raise SessionError(f"{session.adapter.name} has linear-attention layers; copies of a question cannot "
                               "share a forward through their recurrent state, so no causal map for it")
        if session.frames_seen == 0 and not session.pending_frames:
            raise SessionError("no frame has been streamed yet; a knockout needs a cache")
        if max_rows < 1:
            raise SessionError(f"max_rows must be >= 1, got {max_rows}")
        session.flush()
        self.session, self.cache, self.donor = session, session.cache, donor
        self.adapter = session.adapter
        self.options = list(options)
        self.block = _block(session, question, self.options, scoring)
        self.max_rows = max_rows
        self.cost = Cost()
        self._hidden: list[torch.Tensor] | None = None
        self._question = question
        self._stop = sorted(session._stop_ids)  # the end tokens cloze scoring sums over, as option_logprobs does

    # ------------------------------------------------------------------ reading answers
    def _read(self, hidden: torch.Tensor, copies: int = 1) -> torch.Tensor:
        """(copies, n_options) float32 scores from the (copies·R, hidden) last hidden states of ``copies`` blocks.

        One LM-head call for every row any copy reads (the vocabulary projection is the costly part)."""
        from hermes_policy.eval.scoring import score_letters

        R, head = len(self.block.chunk), self.adapter.lm_head
        offsets = torch.arange(copies) * R
        if self.block.groups is not None:
            logits = head(hidden[(offsets + self.block.answer_row).to(hidden.device)]).float().cpu()
            return torch.stack([score_letters(row, self.block.groups, self.adapter.tokenizer, 0.0).scores
                                for row in logits])
        rows = torch.cat([r for r, _ in self.block.reads])  # (n,) rows of one block, option after option
        every = (offsets[:, None] + rows[None]).flatten()  # (copies·n,)
        logp = torch.log_softmax(head(hidden[every.to(hidden.device)]).float(), dim=-1).cpu()
        logp = logp.reshape(copies, len(rows), -1)
        scores, lo = [], 0
        for _, ids in self.block.reads:
            part = logp[:, lo: lo + len(ids) + 1]  # (copies, len + 1, vocab)
            tokens = part[:, torch.arange(len(ids)), ids].sum(-1)
            scores.append(tokens + torch.logsumexp(part[:, len(ids)][:, self._stop], dim=-1))
            lo += len(ids) + 1
        return torch.stack(scores, dim=-1)

    def _forward(self, copies: int, start: int, key_mask, observers=()) -> torch.Tensor:
        """(copies·R, hidden) last hidden states of ``copies`` question blocks from model layer ``start``."""
        chunk = EncodedChunk.cat([self.block.chunk] * copies)
        text_model = self.adapter.text_model
        if start == 0:
            embeds = chunk.embeds[None].to(self.adapter.device)
        else:
            embeds = self._hidden[start].repeat(1, copies, 1)
        began = time.perf_counter()
        with self.cache.scratch(chunk.positions, chunk.meta), _bypass(text_model.layers, start), \
                streaming_context(self.cache, "ask", observers, key_mask=key_mask), torch.no_grad():
            out = text_model(inputs_embeds=embeds, position_ids=self.adapter.position_ids(chunk.positions),
                             past_key_values=self.cache, use_cache=True, **self.adapter.forward_kwargs(chunk))
        n_layers = self.adapter.num_model_layers
        self.cost.add(Cost(forwards=1, row_layers=len(chunk) * (n_layers - start),
                           seconds=time.perf_counter() - began))
        return out.last_hidden_state[0]

    # ------------------------------------------------------------------ the clean pass
    @torch.no_grad()
    def clean(self, selections: Sequence[Selection] = ()) -> CleanPass:
        """Ask once, unmodified: the scores, each layer's input (for :meth:`score`), and the answer row's
        attention mass and direct effect on each of ``selections`` at every layer."""
        block, R = self.block, len(self.block.chunk)
        inner = block.mask

        def key_mask(layer: int, n_key: int) -> torch.Tensor:
            return torch.cat([torch.ones(R, n_key - R, dtype=torch.bool), inner], dim=1)

        hidden: list[torch.Tensor | None] = [None] * self.adapter.num_model_layers

        def keep(index: int):
            def hook(module, args, kwargs):
                hidden[index] = (args[0] if args else kwargs["hidden_states"]).detach()
            return hook

        layers = self.adapter.text_model.layers
        handles = [layer.register_forward_pre_hook(keep(i), with_kwargs=True) for i, layer in enumerate(layers)]
        reader = _AnswerRowReader(self.cache, block.answer_row, selections) if selections else None
        try:
            out = self._forward(1, 0, key_mask, [reader] if reader is not None else ())
        finally:
            for h in handles:
                h.remove()
        self._hidden = hidden  # type: ignore[assignment]
        self.cost.naive_forwards += 1
        self.cost.naive_row_layers += block.naive_rows * self.adapter.num_model_layers
        L, H = self.cache.num_layers, self.adapter.num_heads
        empty = torch.zeros(L, len(selections), H)
        attention = torch.stack([reader.attention[i] for i in range(L)]) if reader is not None else empty
        direct = torch.stack([reader.direct[i] for i in range(L)]) if reader is not None else empty
        null = torch.stack([reader.null[i] for i in range(L)]) if reader is not None else empty
        return CleanPass(self._read(out)[0], attention.float().cpu(), direct.float().cpu(), null.float().cpu())

    # ------------------------------------------------------------------ knockouts, packed
    @torch.no_grad()
    def score(self, knockouts: Sequence[Knockout]) -> torch.Tensor:
        """(K, n_options) float32 scores with each knockout applied alone; runs :meth:`clean` first if needed."""
        L = self.cache.num_layers
        for k in knockouts:
            if max(k.layers) >= L:
                raise SessionError(f"the cache has {L} layers; a knockout names layer {max(k.layers)}")
            if k.heads is not None and max(k.heads) >= self.adapter.num_heads:
                raise SessionError(f"the model has {self.adapter.num_heads} query heads; a knockout names head "
                                   f"{max(k.heads)}")
            if k.patch and self.donor is None:
                raise SessionError("a patch knockout needs a donor stream's cache")
        if self._hidden is None:
            self.clean()
        out = torch.full((len(knockouts), len(self.options)), float("nan"))
        per_pack = max(1, self.max_rows // len(self.block.chunk))
        by_start: dict[int, list[int]] = {}
        for i, k in enumerate(knockouts):
            by_start.setdefault(self.cache.kv_layers[k.first_layer], []).append(i)
        for start, idx in sorted(by_start.items()):
            for lo in range(0, len(idx), per_pack):
                chosen = idx[lo: lo + per_pack]
                out[chosen] = self._pack(start, [knockouts[i] for i in chosen])
        self.cost.naive_forwards += len(knockouts)
        self.cost.naive_row_layers += len(knockouts) * self.block.naive_rows * self.adapter.num_model_layers
        return out

    def _pack(self, start: int, knockouts: Sequence[Knockout]) -> torch.Tensor:
        """(V, n_options) scores of V knockouts in one forward from model layer ``start``."""
        V, R = len(knockouts), len(self.block.chunk)
        inner = torch.block_diag(*[self.block.mask] * V)  # (V·R, V·R): copies never see each other
        H = self.adapter.num_heads
        patched = sorted({layer for k in knockouts if k.patch for layer in k.layers})
        own_meta = {layer: self.cache.meta(layer) for layer in range(self.cache.num_layers)}
        plain: dict[int, torch.Tensor] = {}  # layers no copy touches share one mask per key count

        def key_mask(layer: int, n_key: int) -> torch.Tensor:
            S = n_key - V * R
            extra = donor_rows.get(layer)
            touched = [(v, k) for v, k in enumerate(knockouts) if layer in k.layers]
            if not touched and extra is None:
                if S not in plain:
                    plain[S] = torch.cat([torch.ones(V * R, S, dtype=torch.bool), inner], dim=-1)
                return plain[S]
            meta = own_meta[layer]
            S_own = len(meta)
            per_head = any(k.heads is not None for _, k in touched)
            vis = torch.ones((V, H, S) if per_head else (V, S), dtype=torch.bool)
            if extra is not None:
                vis[..., S_own:] = False  # donor rows are seen only by the copies that patch them in
            for v, k in touched:
                sel = k.selection.rows(meta)
                if k.heads is not None:
                    vis[v, list(k.heads), :S_own] &= ~sel
                    continue
                vis[v, ..., :S_own] &= ~sel
                if k.patch:
                    vis[v, ..., S_own:] = sel[extra]
            rows = vis.repeat_interleave(R, dim=0)  # (V·R, [H,] S)
            if per_head:
                return torch.cat([rows.transpose(0, 1), inner.expand(H, -1, -1)], dim=-1)  # (H, V·R, S + V·R)
            return torch.cat([rows, inner], dim=-1)

        with self._donor_rows(patched, knockouts) as donor_rows:
            hidden = self._forward(V, start, key_mask)
        return self._read(hidden, V)

    @contextmanager
    def _donor_rows(self, layers: Sequence[int], knockouts: Sequence[Knockout]) -> Iterator[dict[int, torch.Tensor]]:
        """Append, at each patched layer, the donor's rows that some knockout patches in; yields layer ->
        (n,) indices of those rows among the layer's own. The layers are put back as they were afterwards."""
        saved, extra = {}, {}
        try:
            for layer in layers:
                self._check_donor(layer)
                meta = self.cache.meta(layer)
                union = torch.zeros(len(meta), dtype=torch.bool)
                for k in knockouts:
                    if k.patch and layer in k.layers:
                        union |= k.selection.rows(meta)
                idx = torch.nonzero(union).flatten()
                keys, values = self.cache.keys(layer), self.cache.values(layer)
                positions = self.cache.positions(layer)
                saved[layer] = (keys, values, positions, meta)
                dk = self.donor.keys(layer).index_select(-2, idx.to(keys.device)).to(keys.dtype)
                dv = self.donor.values(layer).index_select(-2, idx.to(values.device)).to(values.dtype)
                self.cache.replace_layer(layer, torch.cat([keys, dk], -2), torch.cat([values, dv], -2),
                                         torch.cat([positions, positions[:, idx]], 1),
                                         TokenMeta.cat([meta, meta.select(idx)]))
                extra[layer] = idx
            yield extra
        finally:
            for layer, (keys, values, positions, meta) in saved.items():
                self.cache.replace_layer(layer, keys, values, positions, meta)

    def _check_donor(self, layer: int) -> None:
        donor, own = self.donor, self.cache
        same = (donor is not None and donor.num_layers == own.num_layers
                and donor.layer_len(layer) == own.layer_len(layer)
                and torch.equal(donor.positions(layer), own.positions(layer))
                and torch.equal(donor.meta(layer).frame, own.meta(layer).frame)
                and torch.equal(donor.meta(layer).patch, own.meta(layer).patch))
        if not same:
            raise SessionError(f"the donor stream's cache does not line up with this one at layer {layer}: "
                               "patching needs two streams with the same frames, frame size and chunking")

    # ------------------------------------------------------------------ the naive reference
    @torch.no_grad()
    def naive(self, knockout: Knockout) -> torch.Tensor:
        """(n_options,) scores the slow, obvious way: evict (or swap in) the rows for real, ask the session
        with the eval's scorer call, put the layers back. What :meth:`score` must equal."""
        if knockout.heads is not None:
            raise SessionError("a per-head knockout has no eviction to compare with: heads of a KV group share rows")
        saved = {}
        began = time.perf_counter()
        try:
            for layer in knockout.layers:
                meta = self.cache.meta(layer)
                saved[layer] = (self.cache.keys(layer), self.cache.values(layer), self.cache.positions(layer), meta)
                sel = knockout.selection.rows(meta)
                if knockout.patch:
                    self._check_donor(layer)
                    keys, values = saved[layer][0].clone(), saved[layer][1].clone()
                    where = torch.nonzero(sel).flatten().to(keys.device)
                    keys[..., where, :] = self.donor.keys(layer)[..., where, :].to(keys.dtype)
                    values[..., where, :] = self.donor.values(layer)[..., where, :].to(values.dtype)
                    self.cache.replace_layer(layer, keys, values, saved[layer][2], meta)
                else:
                    self.cache.evict(layer, torch.nonzero(~sel).flatten())
            return self._ask()
        finally:
            for layer, (keys, values, positions, meta) in saved.items():
                self.cache.replace_layer(layer, keys, values, positions, meta)
            self.naive_seconds = getattr(self, "naive_seconds", 0.0) + time.perf_counter() - began

    def _ask(self) -> torch.Tensor:
        from hermes_policy.eval.scoring import score_letters

        if self.block.groups is None:
            return self.session.option_logprobs(self._question, self.options)[0]
        logits = self.session.question_logits(self._question, self.options)
        return score_letters(logits, self.block.groups, self.adapter.tokenizer, 0.0).scores


__all__ = ["SCORINGS", "CleanPass", "Cost", "Knockout", "Rescorer", "Selection", "select_rows"]
