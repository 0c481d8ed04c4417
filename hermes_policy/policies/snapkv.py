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
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from hermes_policy.attention import AttentionEvent
from hermes_policy.errors import PolicyError
from hermes_policy.policies.base import register_policy
from hermes_policy.policies.scoring import ScoringPolicy

_STATE = "snapkv"
POOLINGS = ("avg", "max")


def pool_votes(votes: torch.Tensor, kernel: int, pooling: str) -> torch.Tensor:
    """Smooth (S,) votes along the token axis; same length out (stride 1, centred window).

    Average pooling counts the zero padding at the ends (as ``F.avg_pool1d`` does
    by default, and as SnapKV's release uses it).
    """
    if kernel <= 1 or votes.numel() == 0:
        return votes
    x = votes[None, None]
    pad = kernel // 2
    if pooling == "max":
        # pad with -inf so the borders are the max of what is really there
        out = F.max_pool1d(F.pad(x, (pad, pad), value=float("-inf")), kernel, stride=1)
    else:
        out = F.avg_pool1d(F.pad(x, (pad, pad)), kernel, stride=1)
    # an even kernel yields one extra column; keep S
    return out[0, 0, : votes.numel()]


def window_votes(event: AttentionEvent, window: int, kernel: int, pooling: str) -> torch.Tensor:
    """(S,) pooled votes of the last ``window`` query rows of ``event`` over all its keys."""
    rows = list(range(max(0, event.n_query - window), event.n_query))
    probs = event.attention(rows)  # (Hq, r, S) float32
    return pool_votes(probs.sum(dim=(0, 1)), kernel, pooling)


class _WindowScorer:
    """Observer: per layer, the pooled votes of the latest ingest forward.

    They stay *pending* until :meth:`SnapKVPolicy.prepare` (after the chunk) merges them:
    a forward that fails half-way is rolled back by the cache, and merging in
    ``observe`` would then leave scores for rows that do not exist.
    """

    def __init__(self, policy: "SnapKVPolicy") -> None:
        self.policy = policy
        #: layer -> (rows the layer held before the forward, (S,) votes over those rows + the new ones)
        self.pending: dict[int, tuple[int, torch.Tensor]] = {}

    def observe(self, event: AttentionEvent) -> None:
        if event.phase != "ingest":
            return
        votes = window_votes(event, self.policy.window, self.policy.pool, self.policy.pooling)
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
    """

    name = "snapkv"
    exact_under_budget = True
    window: int = 16
    pool: int = 5
    pooling: str = "avg"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.window, int) or self.window < 1:
            raise PolicyError(f"snapkv: window must be a positive number of query rows, got {self.window!r}")
        if not isinstance(self.pool, int) or self.pool < 1:
            raise PolicyError(f"snapkv: pool must be a positive kernel size, got {self.pool!r}")
        if self.pooling not in POOLINGS:
            raise PolicyError(f"snapkv: pooling must be one of {POOLINGS}, got {self.pooling!r}")
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
            scores[layer] = torch.cat([old + votes[:held_before], votes[held_before:]])
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
