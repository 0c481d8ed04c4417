"""``snapkv``: attention-score eviction from an observation window (SnapKV scoring, H2O accumulation).

What it does, per layer:

1. **Observe.** During every ingest forward (phase ``"ingest"``) an observer
   takes the last ``window`` query rows of the chunk (the observation window;
   fewer if the chunk is shorter) and computes their softmax attention over
   every key the layer holds, new ones included, through the runtime's seam
   (``event.attention(rows)``: only those rows, never L x L).
2. **Vote.** The probabilities are summed over the window rows and over the
   query heads, giving one vote per key; the votes are smoothed along the
   token axis with a 1-D pool of kernel ``pool`` (stride 1, same length;
   ``pooling`` = ``"avg"`` or ``"max"``), as SnapKV does so that the
   neighbours of a hot token survive with it.
3. **Accumulate.** Votes are added to a per-layer running score, H2O-style:
   a cached row's score is the sum of the votes it received in every chunk it
   was present for; the chunk's own rows start with the votes of its window.
   The score vector is kept in ``cache.policy_state["snapkv"]`` row-aligned
   with the layer and is ``index_select``-ed with the same indices whenever
   the policy evicts.
4. **Evict.** After each chunk, every layer holding more than ``budget``
   video tokens keeps its top-``budget`` video tokens by score, in time order,
   plus every non-video row (the system prefix): the shared loop of
   :class:`~hermes_policy.policies.scoring.ScoringPolicy`.

How it differs from the papers:

* SnapKV compresses a *prompt* once, with the question as the observation
  window, and selects per head. Here there is no question while streaming, so
  the window is the tail of each chunk (the only queries there are), and one
  decision is made per layer, summed over heads: per-head selection would need
  per-head storage, and masking instead saves no memory.
* H2O accumulates attention of every generated token; here only the
  observation-window rows of each chunk vote (the cost rule: ask for the rows
  you need). Accumulation favours older rows, which have had more chunks to
  collect votes; that is H2O's known bias, kept on purpose.
* Scores are float32 sums of probabilities; ties are broken by ``torch.topk``.

SnapKV as kvpress implements it (``SnapKVPress``; docs/conformance.md names the file and commit)
is these options, all off by default (:attr:`SnapKVPolicy.RELEASE` lists them): ``votes="mean"``
(the window rows' probabilities averaged, not summed, over rows and query heads),
``keep_window=True`` (the window's own rows are always kept, scored one above the best, and left out
of the pooling) and ``accumulate=False`` (each prune sees only the latest window's votes), with
kvpress's ``window=64``. kvpress then picks each KV head's own top tokens; here one choice serves the
whole layer (its score is the mean of kvpress's per-head scores), which is the same choice when the
layer has one KV head.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F

from hermes_policy.attention import AttentionEvent
from hermes_policy.errors import PolicyError
from hermes_policy.policies.base import register_policy
from hermes_policy.policies.scoring import ScoringPolicy

_STATE = "snapkv"
POOLINGS = ("avg", "max")
VOTES = ("sum", "mean")


def pool_votes(votes: torch.Tensor, kernel: int, pooling: str) -> torch.Tensor:
    """Smooth (..., S) votes along the token axis; same length out (stride 1, centred window).

    Average pooling counts the zero padding at the ends (``F.avg_pool1d``'s default, which SnapKV's
    release and kvpress use).
    """
    if kernel <= 1 or votes.numel() == 0:
        return votes
    s = votes.shape[-1]
    x = votes.reshape(1, -1, s)
    pad = kernel // 2
    if pooling == "max":
        # pad with -inf so the borders are the max of what is really there
        out = F.max_pool1d(F.pad(x, (pad, pad), value=float("-inf")), kernel, stride=1)
    else:
        out = F.avg_pool1d(x, kernel, stride=1, padding=pad)
    # an even kernel yields one extra column; keep S
    return out[..., :s].reshape(votes.shape)


def window_votes(
    event: AttentionEvent, window: int, kernel: int, pooling: str, votes: str = "sum", keep_window: bool = False
) -> torch.Tensor:
    """(S,) pooled votes of the last ``window`` query rows of ``event`` over all its keys.

    Args:
        votes: ``"sum"`` over the window rows and query heads, or ``"mean"``, in kvpress's order: per query
            head the mean over the rows, pooled, then the mean over each KV group, then over the KV heads
            (the same order, so equal scores stay equal and ties break as kvpress breaks them).
        keep_window: the window rows' own keys get one more than the best vote and are not pooled (kvpress
            pools only the keys before the window and pads the window with ``max + 1``).
    """
    r = min(window, event.n_query)
    probs = event.attention(list(range(event.n_query - r, event.n_query)))  # (Hq, r, S) float32
    s = probs.shape[-1]
    body = s - r if keep_window else s
    if votes == "mean":
        hq, hkv = probs.shape[0], event.key.shape[1]
        per_head = pool_votes(probs.mean(dim=1)[:, :body], kernel, pooling)  # (Hq, body)
        v = per_head.view(hkv, hq // hkv, body).mean(dim=1).mean(dim=0)
    else:
        v = pool_votes(probs.sum(dim=(0, 1))[:body], kernel, pooling)
    if not keep_window:
        return v
    top = float(v.max()) + 1 if v.numel() else 1.0
    return torch.cat([v, torch.full((r,), top)])


class _WindowScorer:
    """Observer: per layer, the pooled votes of the latest ingest forward.

    They stay *pending* until :meth:`SnapKVPolicy.prepare` (after the chunk) merges them:
    a forward that fails half-way is rolled back by the cache, and merging in
    ``observe`` would then leave scores for rows that do not exist.
    """

    def __init__(self, policy: SnapKVPolicy) -> None:
        self.policy = policy
        #: layer -> (rows the layer held before the forward, (S,) votes over those rows + the new ones)
        self.pending: dict[int, tuple[int, torch.Tensor]] = {}

    def observe(self, event: AttentionEvent) -> None:
        if event.phase != "ingest":
            return
        p = self.policy
        votes = window_votes(event, p.window, p.pool, p.pooling, p.votes, p.keep_window)
        self.pending[event.layer] = (event.n_key - event.n_query, votes.cpu())


@register_policy
@dataclass
class SnapKVPolicy(ScoringPolicy):
    """SnapKV-style observation-window scores, accumulated over chunks, top-``budget`` per layer.

    Attributes:
        budget: video tokens per layer (required).
        window: observation-window rows per chunk (the last ``window`` tokens of each ingest forward).
        pool: kernel of the 1-D pooling over the token axis (1 = no pooling).
        pooling: ``"avg"`` (SnapKV's default) or ``"max"``.
        votes: ``"sum"`` (hermes-lab) or ``"mean"`` (kvpress) over the window rows and query heads.
        keep_window: always keep each chunk's window rows, scored above the rest (kvpress).
        accumulate: add each chunk's votes to a row's running score (H2O); False: the latest votes only (kvpress).
    """

    name = "snapkv"
    exact_under_budget = True
    #: the option values that reproduce kvpress's SnapKVPress (window 64, kernel 5, mean votes, the
    #: window kept, one shot); per-head selection is the one part that is not reproduced (see the module)
    RELEASE: ClassVar[dict[str, Any]] = {"window": 64, "pool": 5, "pooling": "avg", "votes": "mean",
                                         "keep_window": True, "accumulate": False}
    window: int = 16
    pool: int = 5
    pooling: str = "avg"
    votes: Literal["sum", "mean"] = "sum"
    keep_window: bool = False
    accumulate: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.window, int) or self.window < 1:
            raise PolicyError(f"snapkv: window must be a positive number of query rows, got {self.window!r}")
        if not isinstance(self.pool, int) or self.pool < 1:
            raise PolicyError(f"snapkv: pool must be a positive kernel size, got {self.pool!r}")
        if self.pooling not in POOLINGS:
            raise PolicyError(f"snapkv: pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.votes not in VOTES:
            raise PolicyError(f"snapkv: votes must be one of {VOTES}, got {self.votes!r}")
        for flag in ("keep_window", "accumulate"):
            if not isinstance(getattr(self, flag), bool):
                raise PolicyError(f"snapkv: {flag} must be true or false, got {getattr(self, flag)!r}")
        self._scorer = _WindowScorer(self)

    def observers(self):
        return (self._scorer,)

    # --------------------------------------------------------------- scores
    @staticmethod
    def scores(cache) -> list[torch.Tensor]:
        """Per layer, the (S_l,) cumulative score of every cached row (row-aligned with the layer)."""
        return cache.policy_state.setdefault(_STATE, {}).setdefault("scores", [])

    def _merge_pending(self, cache) -> list[torch.Tensor]:
        scores = self.scores(cache)
        while len(scores) < cache.num_layers:
            scores.append(torch.zeros(0))
        for layer in range(cache.num_layers):
            if layer not in self._scorer.pending:
                raise RuntimeError(f"snapkv: layer {layer} was not observed during the last ingest forward")
            held_before, votes = self._scorer.pending[layer]
            old = scores[layer]
            if old.numel() == 0:
                # first chunk seen: rows cached before it (the system prefix, written in
                # phase "prefix", which no observation window covers) start at zero
                old = torch.zeros(held_before)
            if old.numel() != held_before or votes.numel() != cache.layer_len(layer):
                raise RuntimeError(
                    f"snapkv: scores of layer {layer} are out of step with the cache ({old.numel()} scores, "
                    f"{held_before} rows before the chunk, {cache.layer_len(layer)} after); "
                    "was the cache edited outside the policy?"
                )
            if self.accumulate:
                scores[layer] = torch.cat([old + votes[:held_before], votes[held_before:]])
            else:
                scores[layer] = votes
        self._scorer.pending.clear()
        return scores

    # ---------------------------------------------------------------- prune
    def prepare(self, session, layers: list[int]) -> None:
        # every chunk, pruned or not: the votes of this forward join the running scores
        self._merge_pending(session.cache)

    def score(self, session, layer: int) -> torch.Tensor:
        cache = session.cache
        return self.scores(cache)[layer][torch.nonzero(cache.meta(layer).is_video).flatten()]

    def on_evict(self, session, layer: int, keep: torch.Tensor) -> None:
        # keep the score vector row-aligned with what the cache now holds
        scores = self.scores(session.cache)
        scores[layer] = scores[layer].index_select(0, keep)
