"""``rekv``: ReKV-style retrieval (in-context video KV-cache retrieval, ICLR 2025), the query-time-work baseline.

What it does:

**While streaming** (the shared prune loop of
:class:`~hermes_policy.policies.scoring.ScoringPolicy`, scoring by recency),
every layer keeps the system prefix (the attention sink) plus a local window of
its ``budget`` most recent video tokens. Video tokens that leave the window are
*offloaded* (:meth:`ReKVPolicy.before_evict`): their
keys, values, positions and metadata are copied to CPU memory into one
:class:`Block` per frame (per frame unit the adapter tags, e.g. a Qwen-VL
temporal group), kept in ``cache.policy_state["rekv"]`` and evicted from the
:class:`~hermes_policy.cache.CompactCache`, so ``kv_bytes`` counts only sink +
window. A frame that straddles the window edge is offloaded piecewise into the
same block. Each block is represented per KV head by the mean of its keys.

**At question time** (:meth:`ReKVPolicy.before_ask`, inside TTFT):

1. the question is run once through the LM against the current cache; per
   layer, its queries are averaged over the question's tokens and summed over the
   query heads of each KV group (GQA) into one vector per KV head (so a block's score
   is ReKV's: the sum over query heads of ``q_h . k_block``);
2. per layer, every block scores ``sum_h q_h . k_block_h`` (dot product,
   summed over KV heads), and the top ``retrieve_frames`` blocks are chosen;
3. they are loaded back into that layer in time order, laid out as
   ``[sink][retrieved blocks][window]`` with positions made contiguous: each
   block, then the window, is shifted by one delta (on every rotary axis) to
   start one past the previous part's largest position, and its keys are
   rotated by that delta (:meth:`RotarySpec.rotate`), so keys always match
   their positions;
4. ``session.next_position`` is moved to one past the largest position of any
   layer, so the question that the session then prefills comes after
   everything cached.

:meth:`ReKVPolicy.after_ask` puts back the exact tensors the layers held
before, and the session's next position: the cache is bit-identical afterwards.

How it differs from ReKV as released:

* ReKV (built on InfLLM) keeps keys without RoPE and applies positions when it
  attends. Here keys are cached after RoPE, so re-positioning rotates them by
  the position difference. Block means and question queries are first
  un-rotated to position 0, so the retrieval score is position-free (the dot
  product of two vectors under one shared rotation), as with ReKV's
  un-positioned memory keys.
* Blocks are whole frames of the adapter (Qwen-VL: two-frame temporal groups);
  the local window is exact in tokens.
* With M-RoPE, a block keeps its internal (t, h, w) layout and is shifted by
  one delta on all axes; "contiguous" means it starts one past the previous
  part's largest position on any axis. Layers retrieve different blocks, so in
  M-RoPE layers may end at slightly different positions; the question starts
  after the largest, leaving a small gap in the others.
* If nothing has been offloaded yet, the question pass and retrieval are
  skipped (nothing could be retrieved), so the policy equals ``full``.
* The question pass uses the same templated question text that the session
  then prefills, and is run as a private scratch forward (phase ``"probe"``,
  tag ``"rekv-question"``) seen only by this policy's observer. (The session's
  ``pseudo_queries`` would wrap the already templated text in the template again.)
* ``retrieve_frames`` defaults to 8 frames per layer; ReKV tunes the number of
  retrieved frames per benchmark (its scripts default to 64).
* ReKV cuts *every* frame into a block as it streams (the local window only serves
  the ingest's sliding-window attention) and answers from ``[sink][retrieved frames]``
  alone: the window is not attended at question time, and retrieval ranks every frame,
  the window's included. Here, by default, only frames that left the window are
  candidates and the window is always attended; ``window_at_question=False`` does as
  ReKV does (:attr:`ReKVPolicy.RELEASE`).

Loaded blocks are placed with :meth:`CompactCache.replace_layer`, which rebuilds a layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from hermes_policy.attention import AttentionEvent, streaming_context
from hermes_policy.cache import CompactCache
from hermes_policy.errors import PolicyError
from hermes_policy.policies.base import register_policy
from hermes_policy.policies.scoring import ScoringPolicy, recency
from hermes_policy.rope import RotarySpec
from hermes_policy.tokens import TokenMeta

_STATE = "rekv"
QUESTION_TAG = "rekv-question"


# --------------------------------------------------------------------- blocks
@dataclass
class Block:
    """One offloaded frame of one layer.

    Attributes:
        frame: the frame id (``TokenMeta.frame``) of its rows.
        keys, values: (1, Hkv, n, D) on CPU, as they were cached (keys rotated to ``positions``).
        positions: (A, n) the positions they had in the cache.
        meta: their metadata (n rows).
        mean_key: (Hkv, D) float32 mean of the keys un-rotated to position 0.
    """

    frame: int
    keys: torch.Tensor
    values: torch.Tensor
    positions: torch.Tensor
    meta: TokenMeta
    mean_key: torch.Tensor

    @property
    def nbytes(self) -> int:
        return self.keys.untyped_storage().nbytes() + self.values.untyped_storage().nbytes()


def unrotate(rotary: RotarySpec, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Rotate (..., n, D) vectors computed at ``positions`` (A, n) back to position 0, in float32."""
    return rotary.rotate(x.float(), -positions.to(x.device))


def block_mean_key(rotary: RotarySpec, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(Hkv, D) float32: the block's keys (1, Hkv, n, D) un-rotated to position 0, averaged over n."""
    return unrotate(rotary, keys, positions)[0].mean(dim=-2)


def question_vector(
    rotary: RotarySpec, query: torch.Tensor, positions: torch.Tensor, num_kv_heads: int
) -> torch.Tensor:
    """(Hkv, D) float32 question vector per KV head: the mean query over tokens, summed over the KV group.

    Args:
        query: (1, Hq, q, D) queries after RoPE; positions: (A, q) their positions.

    Query heads ``g*G .. g*G+G-1`` share KV head ``g`` (HF's ``repeat_kv`` order),
    so each KV head gets the sum over its group of the mean over the q tokens.
    """
    q = unrotate(rotary, query, positions)[0].mean(dim=-2)  # (Hq, D)
    hq, d = q.shape
    # summed, not averaged, over the group: ReKV dots the flattened (Hq * D) mean query with each block's
    # keys repeated per query head, i.e. it sums over query heads
    return q.reshape(num_kv_heads, hq // num_kv_heads, d).sum(dim=1)


def score_blocks(query: torch.Tensor, mean_keys: torch.Tensor) -> torch.Tensor:
    """(n,) retrieval scores: dot product of a (Hkv, D) query with each of (n, Hkv, D) block keys, summed over heads."""
    return torch.einsum("hd,nhd->n", query.float(), mean_keys.float())


def select_blocks(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``k`` best-scoring blocks, ascending (blocks are stored in time order)."""
    k = min(k, scores.numel())
    return torch.sort(torch.topk(scores, k).indices).values


def shift_to(
    rotary: RotarySpec, keys: torch.Tensor, positions: torch.Tensor, start: int
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Move rows so that their smallest position (over all axes) is ``start``; rotate keys to match.

    One delta on every axis keeps the rows' internal layout (an M-RoPE frame
    stays a frame). Returns (keys, positions, one past the new largest position).
    """
    delta = start - int(positions.min())
    if delta == 0:
        return keys, positions, int(positions.max()) + 1
    moved = positions + delta
    keys = rotary.rotate(keys, torch.full_like(positions, delta).to(keys.device))
    return keys, moved, int(moved.max()) + 1


def rekv_state(cache: CompactCache) -> dict:
    """The policy's per-cache state in ``cache.policy_state["rekv"]``.

    Keys: ``blocks`` (per layer, a time-ordered list of :class:`Block`);
    ``retrieved`` (per layer, the frames loaded for the latest question, kept for
    inspection); ``saved`` (only between ``before_ask`` and ``after_ask``: what to put back).
    """
    state = cache.policy_state.setdefault(_STATE, {})
    blocks = state.setdefault("blocks", [])
    while len(blocks) < cache.num_layers:
        blocks.append([])
    return state


def offloaded_bytes(cache: CompactCache) -> int:
    """Key and value bytes held in offloaded blocks (CPU memory, not counted by ``kv_bytes``)."""
    return sum(b.nbytes for layer in rekv_state(cache)["blocks"] for b in layer)


class _QuestionQueries:
    """Observer of the question pass: per layer, the (Hkv, D) mean question query."""

    def __init__(self, rotary: RotarySpec) -> None:
        self.rotary = rotary
        self.vectors: dict[int, torch.Tensor] = {}

    def observe(self, event: AttentionEvent) -> None:
        if event.phase != "probe" or event.tag != QUESTION_TAG:
            return
        q = event.n_query
        # the question rows are the last q keys; their positions are the staged ones
        self.vectors[event.layer] = question_vector(
            self.rotary, event.query, event.positions[:, -q:], event.key.shape[1]
        ).cpu()


# --------------------------------------------------------------------- policy
@register_policy
@dataclass
class ReKVPolicy(ScoringPolicy):
    """Sink + local window while streaming; per-layer retrieval of offloaded frames at question time.

    Attributes:
        budget: the local window, in video tokens per layer (required): what the cache holds while streaming.
        retrieve_frames: offloaded frames (blocks) loaded back per layer for each question.
        window_at_question: attend the local window at question time and retrieve only among frames that
            left it (hermes-lab); False: retrieve among every frame and answer from sink + retrieved
            frames alone (ReKV as released).
    """

    name = "rekv"
    exact_under_budget = True
    budget_help = "the local window, in video tokens per layer"
    #: the option values that reproduce ReKV's release (its own retrieve_size default is 64 frames)
    RELEASE: ClassVar[dict[str, Any]] = {"window_at_question": False, "retrieve_frames": 64}
    retrieve_frames: int = 8
    window_at_question: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        n = self.retrieve_frames
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise PolicyError(f"rekv: retrieve_frames must be a positive number of frames, got {n!r}")
        if not isinstance(self.window_at_question, bool):
            raise PolicyError(f"rekv: window_at_question must be true or false, got {self.window_at_question!r}")

    # ---------------------------------------------------------------- ingest
    def prepare(self, session, layers: list[int]) -> None:
        rekv_state(session.cache)  # the block store exists from the first chunk on, offloaded or not

    def score(self, session, layer: int) -> torch.Tensor:
        """Recency: the layer keeps its ``budget`` newest video tokens (the local window)."""
        return recency(session.cache.video_count(layer))

    def before_evict(self, session, layer: int, keep: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
        # what leaves the window (the oldest video rows, in time order) goes to CPU blocks
        cache = session.cache
        self._offload(cache, layer, dropped, rekv_state(cache)["blocks"][layer])
        return keep

    @staticmethod
    def _offload(cache: CompactCache, layer: int, rows: torch.Tensor, blocks: list[Block]) -> None:
        """Copy ``rows`` (time order) to CPU as one block per frame; extend the newest block if it is the same frame."""
        meta = cache.meta(layer)
        frames = meta.frame[rows]
        keys, values = cache.keys(layer), cache.values(layer)
        for frame in torch.unique_consecutive(frames).tolist():
            idx = rows[frames == frame]
            dev_idx = idx.to(keys.device)
            part = (
                keys.index_select(-2, dev_idx).to("cpu"),
                values.index_select(-2, dev_idx).to("cpu"),
                cache.positions(layer).index_select(1, idx),
                meta.select(idx),
            )
            if blocks and blocks[-1].frame == frame:
                # the rest of a frame that straddled the window edge joins its block
                last = blocks.pop()
                part = (
                    torch.cat([last.keys, part[0]], dim=-2),
                    torch.cat([last.values, part[1]], dim=-2),
                    torch.cat([last.positions, part[2]], dim=1),
                    TokenMeta.cat([last.meta, part[3]]),
                )
            blocks.append(Block(int(frame), *part, mean_key=block_mean_key(cache.rotary, part[0], part[2])))

    # ------------------------------------------------------------------- ask
    @torch.no_grad()
    def question_queries(self, session, text: str) -> list[torch.Tensor]:
        """Run the (templated) question once against the cache; per layer, its (Hkv, D) mean query."""
        cache, adapter = session.cache, session.adapter
        chunk = adapter.encode_question(text, session.next_position)
        observer = _QuestionQueries(cache.rotary)
        with cache.scratch(chunk.positions, chunk.meta), streaming_context(cache, "probe", [observer], QUESTION_TAG):
            adapter.text_model(
                inputs_embeds=chunk.embeds[None].to(adapter.device),
                position_ids=adapter.position_ids(chunk.positions),
                past_key_values=cache,
                use_cache=True,
            )
        return [observer.vectors[layer] for layer in range(cache.num_layers)]

    def retrieve(self, cache: CompactCache, layer: int, query: torch.Tensor) -> list[Block]:
        """The layer's top-``retrieve_frames`` candidate blocks for a (Hkv, D) query, in time order."""
        blocks = self.candidate_blocks(cache, layer)
        if not blocks:
            return []
        scores = score_blocks(query, torch.stack([b.mean_key for b in blocks]))
        return [blocks[i] for i in select_blocks(scores, self.retrieve_frames).tolist()]

    def candidate_blocks(self, cache: CompactCache, layer: int) -> list[Block]:
        """The blocks a question may retrieve: the offloaded ones, and without ``window_at_question`` the
        window's frames too (a frame split by the window edge is one block), in time order."""
        blocks = rekv_state(cache)["blocks"][layer]
        if self.window_at_question:
            return blocks
        merged = list(blocks)
        window = torch.nonzero(cache.meta(layer).is_video).flatten()
        if window.numel():
            self._offload(cache, layer, window, merged)
        return merged

    def before_ask(self, session, question: str) -> None:
        cache = session.cache
        state = rekv_state(cache)
        if self.window_at_question and not any(state["blocks"]):
            return  # nothing was offloaded: the cache already holds the whole stream
        if not any(cache.video_count(i) for i in range(cache.num_layers)) and not any(state["blocks"]):
            return  # no frame at all
        queries = self.question_queries(session, question)
        # the exact tensors to put back (the layers are rebuilt, never edited in place)
        state["saved"] = {
            "next_position": session.next_position,
            "layers": [
                (cache.kv_layer(i).keys, cache.kv_layer(i).values, cache.positions(i), cache.meta(i))
                for i in range(cache.num_layers)
            ],
        }
        state["retrieved"] = []
        end = 0
        for layer in range(cache.num_layers):
            chosen = self.retrieve(cache, layer, queries[layer])
            state["retrieved"].append([b.frame for b in chosen])
            end = max(end, self._load(cache, layer, chosen, self.window_at_question))
        # the question goes after every cached position of every layer
        session.next_position = end

    @staticmethod
    def _load(cache: CompactCache, layer: int, chosen: list[Block], window_too: bool = True) -> int:
        """Rebuild ``layer`` as [sink][chosen blocks][window] (``window_too``) or [sink][chosen blocks],
        contiguous; returns one past its last position."""
        meta, positions = cache.meta(layer), cache.positions(layer)
        keys, values = cache.keys(layer), cache.values(layer)
        sink = torch.nonzero(~meta.is_video).flatten()
        window = torch.nonzero(meta.is_video).flatten()
        dev_sink, dev_window = sink.to(keys.device), window.to(keys.device)
        parts_k, parts_v = [keys.index_select(-2, dev_sink)], [values.index_select(-2, dev_sink)]
        parts_p, parts_m = [positions.index_select(1, sink)], [meta.select(sink)]
        cursor = int(positions[:, sink].max()) + 1 if sink.numel() else 0
        pieces = [(b.keys.to(keys.device), b.values.to(values.device), b.positions, b.meta) for b in chosen]
        if window_too:
            pieces.append((keys.index_select(-2, dev_window), values.index_select(-2, dev_window),
                           positions.index_select(1, window), meta.select(window)))
        for k, v, p, m in pieces:
            if not m.frame.numel():
                continue
            k, p, cursor = shift_to(cache.rotary, k, p, cursor)
            parts_k.append(k)
            parts_v.append(v)
            parts_p.append(p)
            parts_m.append(m)
        cache.replace_layer(
            layer, torch.cat(parts_k, dim=-2), torch.cat(parts_v, dim=-2),
            torch.cat(parts_p, dim=1), TokenMeta.cat(parts_m),
        )
        return cursor

    def after_ask(self, session) -> None:
        state = session.cache.policy_state.get(_STATE, {})
        saved = state.pop("saved", None)
        if saved is None:
            return
        for layer, (keys, values, positions, meta) in enumerate(saved["layers"]):
            session.cache.replace_layer(layer, keys, values, positions, meta)
        session.next_position = saved["next_position"]
