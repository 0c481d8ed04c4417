"""``memstream`` and ``hermes-memstream``: MemStream's additions, in our own formulas.

MemStream (facts, see DESIGN.md) finds that query-frame similarity rises over
the stream, which biases retrieval to late frames, and adds adaptive key
selection, dynamic patch-level compression and a training-free retrieval
mixture of experts fusing the cache's scores with an external image-text
ranker. The mechanics live in :mod:`hermes_policy.memstream` (each module
documents its formula); this module turns them into two registered policies.

``memstream`` (:class:`MemStreamPolicy`): ReKV's mechanics (it subclasses
:class:`~hermes_policy.policies.rekv.ReKVPolicy`: sink + local window while
streaming, one offloaded block per frame, question pass, contiguous reload,
exact restore after the question), with retrieval by the fused score

    s = (1 - beta) * norm(detrend(s_int)) + beta * norm(s_ext)

per layer over its offloaded blocks (:mod:`hermes_policy.memstream.fusion`),
``s_int`` being ReKV's block score and ``s_ext`` the ranker's score of the
block's frame thumbnail. Thumbnails (``thumb_size`` square, uint8) of every
streamed frame are kept in ``cache.policy_state["memstream"]["thumbs"]``; the
ranker scores the offloaded frames at question time, inside TTFT. Optionally
(``tau``, ``patch_budget``, ``merge_tau``) each chunk is also reduced at ingest
before anything is offloaded, so blocks are smaller.

``hermes-memstream`` (:class:`HermesMemStreamPolicy`): HERMES, with each new
chunk first reduced by adaptive key selection (default ``tau`` = 0.95) and,
with ``patch_budget``/``merge_tau``, patch compression; HERMES's pseudo-query
scoring and per-layer top-k then run on what is left.

**How the policy sees frames.** The session hands every written chunk's frames
to :meth:`MemStreamPolicy.on_frames`, which keeps a thumbnail of each for the
ranker. Frames without a thumbnail (e.g. a cache filled by hand) get "no
opinion" from the ranker.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import torch

from hermes_policy.errors import HermesError, PolicyError
from hermes_policy.memstream import fusion
from hermes_policy.memstream.ranker import FrameRanker, make_ranker, thumbnail
from hermes_policy.memstream.reduce import IngestReducer, memstream_state
from hermes_policy.policies.base import register_policy
from hermes_policy.policies.hermes import HermesPolicy
from hermes_policy.policies.rekv import ReKVPolicy, rekv_state, score_blocks, select_blocks


def _reducer(policy) -> IngestReducer:
    return IngestReducer(tau=policy.tau, min_keep=policy.min_keep, patch_budget=policy.patch_budget,
                         merge_tau=policy.merge_tau, reference=policy.reference, policy=policy.name)


def thumbnail_bytes(cache) -> int:
    """Bytes of the frame thumbnails the ``memstream`` policy keeps for its ranker."""
    return sum(t.nbytes for t in memstream_state(cache)["thumbs"].values())


@register_policy
@dataclass
class MemStreamPolicy(ReKVPolicy):
    """ReKV retrieval with MemStream's mixture of experts (and optional ingest-time reduction).

    Attributes:
        budget: the local window, in video tokens per layer (required).
        retrieve_frames: offloaded frames loaded back per layer for each question.
        beta: weight of the external ranker in the fused score, in [0, 1].
        detrend: remove the linear trend of the cache scores over frame index before fusing:
            True or ``"ls"`` (least squares), ``"theil-sen"`` (robust), or False.
        ranker: ``"synthetic"`` (pixel evidence, synthetic streams), ``"clip:<dir or hub id>"``,
            ``"none"`` (then beta must be 0), or a :class:`FrameRanker`.
        norm: ``"zscore"`` or ``"minmax"``, applied to each expert's scores.
        thumb_size: side of the square thumbnails kept for the ranker.
        tau, min_keep, patch_budget, merge_tau, reference: ingest-time reduction
            (:class:`~hermes_policy.memstream.reduce.IngestReducer`); off by default.
    """

    name = "memstream"
    exact_under_budget = True  # nothing is reduced by default, and nothing is offloaded under budget
    beta: float = 0.5
    detrend: bool | str = True
    ranker: Any = "synthetic"
    norm: str = "zscore"
    thumb_size: int = 64
    tau: float | None = None
    min_keep: int = 1
    patch_budget: int | None = None
    merge_tau: float | None = None
    reference: str = "previous"

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.window_at_question:
            # its fused retrieval ranks the offloaded blocks only; ReKV's release layout is rekv's alone
            raise PolicyError("memstream: window_at_question must be true (memstream retrieves among the frames "
                              "that left the window; window_at_question=false is rekv's release layout)")
        b = self.beta
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= float(b) <= 1.0:
            raise PolicyError(f"memstream: beta must be a weight in [0, 1], got {b!r}")
        if not isinstance(self.detrend, bool) and self.detrend not in fusion.DETRENDS:
            raise PolicyError(f"memstream: detrend must be true, false or one of {fusion.DETRENDS}, "
                              f"got {self.detrend!r}")
        if self.norm not in fusion.NORMS:
            raise PolicyError(f"memstream: norm must be one of {fusion.NORMS}, got {self.norm!r}")
        t = self.thumb_size
        if isinstance(t, bool) or not isinstance(t, int) or not 8 <= t <= 1024:
            raise PolicyError(f"memstream: thumb_size must be a side in pixels between 8 and 1024, got {t!r}")
        try:
            self._ranker: FrameRanker | None = make_ranker(self.ranker)
        except HermesError as e:
            raise PolicyError(f"memstream: ranker {self.ranker!r}: {e}") from e
        if self._ranker is None and float(b) > 0:
            raise PolicyError("memstream: ranker 'none' needs beta = 0 (there is no external expert to weigh)")
        self._reducer = _reducer(self)
        self._external: dict[int, float] | None = None
        self._warned = False

    def config(self) -> dict:
        out = super().config()
        if isinstance(self.ranker, FrameRanker):
            out["ranker"] = self.ranker.spec or type(self.ranker).__name__
        return out

    # ---------------------------------------------------------------- ingest
    def validate(self, tokens_per_frame: int, num_layers: int) -> None:
        super().validate(self._reducer.frame_tokens(tokens_per_frame), num_layers)
        if self._ranker is not None and self.beta > 0:
            self._ranker.load()  # before the stream, so no question pays for it

    def on_frames(self, session, frames) -> None:
        """Keep a thumbnail of each frame for the ranker (frame id -> (s, s, 3) uint8)."""
        thumbs = memstream_state(session.cache)["thumbs"]
        for frame in frames:
            thumbs[int(frame.index)] = thumbnail(frame.image, self.thumb_size)

    def after_chunk(self, session) -> None:
        self._reducer.apply(session)
        super().after_chunk(session)

    # ------------------------------------------------------------------- ask
    def external_scores(self, session, question: str) -> dict[int, float]:
        """The ranker's score of every offloaded frame that has a thumbnail: frame id -> score."""
        cache = session.cache
        thumbs = memstream_state(cache)["thumbs"]
        frames = sorted({b.frame for layer in rekv_state(cache)["blocks"] for b in layer})
        have = [f for f in frames if f in thumbs]
        missing = len(frames) - len(have)
        if missing and not self._warned:
            self._warned = True
            warnings.warn(f"memstream: {missing} offloaded frames have no thumbnail (streamed before the policy "
                          "saw frames); the ranker gives them no opinion.", stacklevel=2)
        if not have:
            return {}
        scores = self._ranker.score([thumbs[f] for f in have], question)
        return dict(zip(have, scores.float().tolist()))

    def before_ask(self, session, question: str) -> None:
        if not any(rekv_state(session.cache)["blocks"]):
            return
        memstream_state(session.cache)["last"] = {}
        use_ranker = self._ranker is not None and self.beta > 0
        self._external = self.external_scores(session, question) if use_ranker else None
        try:
            super().before_ask(session, question)  # question pass, then self.retrieve per layer, then load
        finally:
            self._external = None

    def retrieve(self, cache, layer: int, query: torch.Tensor):
        """The layer's top-``retrieve_frames`` blocks by the fused score, in time order."""
        blocks = rekv_state(cache)["blocks"][layer]
        if not blocks:
            return []
        internal = score_blocks(query, torch.stack([b.mean_key for b in blocks]))
        frames = torch.tensor([b.frame for b in blocks])
        external = None
        if self.beta == 0 and not self.detrend:
            fused, chosen = internal, select_blocks(internal, self.retrieve_frames)  # exactly ReKV
        else:
            if self._external is not None:
                external = torch.tensor([self._external.get(b.frame, math.nan) for b in blocks])
            fused = fusion.fuse_scores(internal, external, frames, float(self.beta), self.detrend, self.norm)
            chosen = fusion.select_fused(fused, internal, self.retrieve_frames)
        memstream_state(cache).setdefault("last", {})[layer] = {
            "frames": frames,
            "internal": internal,
            "external": external,
            "fused": fused,
            "chosen": [blocks[i].frame for i in chosen.tolist()],
            "bias_internal": fusion.temporal_bias(internal, frames),
            "bias_fused": fusion.temporal_bias(fused, frames),
        }
        return [blocks[i] for i in chosen.tolist()]


@register_policy
@dataclass
class HermesMemStreamPolicy(HermesPolicy):
    """HERMES with MemStream's ingest-time adaptive key selection and patch compression.

    Attributes:
        budget, layers, gamma, family, summary: as for ``hermes``.
        tau: key-selection threshold (cosine of position-free keys with the previous
            frame's at the same patch); None disables it.
        min_keep: patch tokens every frame keeps at least.
        patch_budget: patch tokens per frame after compression (None: no cap).
        merge_tau: also merge neighbouring patches at least this similar (None: off).
        reference: ``"previous"`` or ``"kept"`` (what key selection compares with).
    """

    name = "hermes-memstream"
    exact_under_budget = False  # key selection (tau = 0.95 by default) drops tokens whatever the budget
    granularities = ("layer",)  # its key selection and patch compression edit whole layers
    tau: float | None = 0.95
    min_keep: int = 1
    patch_budget: int | None = None
    merge_tau: float | None = None
    reference: str = "previous"

    def __post_init__(self) -> None:
        super().__post_init__()
        self._reducer = _reducer(self)

    def validate(self, tokens_per_frame: int, num_layers: int) -> None:
        # the budget must hold one frame as it is after compression
        super().validate(self._reducer.frame_tokens(tokens_per_frame), num_layers)

    def after_chunk(self, session) -> None:
        self._reducer.apply(session)
        super().after_chunk(session)


