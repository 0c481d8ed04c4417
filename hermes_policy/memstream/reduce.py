"""Ingest-time reduction of each new chunk: adaptive key selection, then patch compression.

:class:`IngestReducer` runs after a chunk has been cached and before the
policy's own eviction (HERMES scoring, ReKV offloading), on every layer:

1. the layer's *new* patch rows are those of frames later than the last frame
   it has processed (frame ids grow along the stream; policy-owned rows such as
   a HERMES summary slot have negative frame ids and are never touched);
2. adaptive key selection (:mod:`.keys`) marks the redundant ones;
3. patch compression (:mod:`.merge`) clusters each frame's survivors down to the
   per-frame budget;
4. the layer is rebuilt once with :meth:`CompactCache.replace_layer` from
   freshly gathered tensors (``index_select``), so the dropped and merged-away
   rows' memory is really freed and no tensor anyone else holds is written to.

Its state lives in ``cache.policy_state["memstream"]``: per layer the last
processed frame, the :class:`~.keys.KeyReference`, the sizes of merged rows
keyed by ``(frame, patch)`` (a row's identity survives any later eviction or
re-index), and running counts of rows removed by each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from hermes_policy.cache import CompactCache
from hermes_policy.errors import PolicyError
from hermes_policy.memstream.keys import REFERENCES, KeyReference, flat_unrotated_keys, redundant_mask
from hermes_policy.memstream.merge import greedy_merge, patch_coords

STATE = "memstream"


def memstream_state(cache: CompactCache) -> dict:
    """``cache.policy_state["memstream"]``, with per-layer lists sized to the cache.

    Keys: ``seen`` (last processed frame per layer), ``reference`` (:class:`KeyReference`
    per layer), ``sizes`` (per layer ``{(frame, patch): n}`` for merged rows),
    ``removed`` (per layer running ``{"selected": n, "merged": n}`` row counts),
    ``reduced`` (per layer, what the latest chunk lost: ``{"selected": [(frame, patch)],
    "merged": [(frame, [patches, representative first])]}``), and for the retrieval
    policy ``thumbs`` (frame id -> thumbnail) and ``last`` (diagnostics of the latest question).
    """
    state = cache.policy_state.setdefault(STATE, {})
    n = cache.num_layers
    state.setdefault("seen", [-1] * n)
    state.setdefault("reference", [KeyReference() for _ in range(n)])
    state.setdefault("sizes", [{} for _ in range(n)])
    state.setdefault("removed", [{"selected": 0, "merged": 0} for _ in range(n)])
    state.setdefault("reduced", [None] * n)
    state.setdefault("thumbs", {})
    return state


def row_sizes(cache: CompactCache, layer: int) -> torch.Tensor:
    """(S_l,) how many original tokens each row of ``layer`` stands for (1 unless merged)."""
    sizes = memstream_state(cache)["sizes"][layer]
    meta = cache.meta(layer)
    return torch.tensor(
        [sizes.get((f, p), 1) for f, p in zip(meta.frame.tolist(), meta.patch.tolist())], dtype=torch.long
    )


def _check_fraction(policy: str, name: str, value, allow_none: bool = True) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not -1.0 < float(value) <= 1.0:
        raise PolicyError(f"{policy}: {name} must be a cosine similarity in (-1, 1], got {value!r}")


@dataclass
class IngestReducer:
    """Key selection + patch compression of newly cached frames.

    Attributes:
        tau: key-selection threshold (cosine); None disables key selection.
        min_keep: patch tokens every frame keeps at least (both steps honour it).
        patch_budget: patch tokens per frame after compression; None: no cap.
        merge_tau: also merge adjacent clusters at least this similar; None: off.
        reference: ``"previous"`` or ``"kept"`` (see :mod:`.keys`).
    """

    tau: float | None = None
    min_keep: int = 1
    patch_budget: int | None = None
    merge_tau: float | None = None
    reference: str = "previous"
    policy: str = "memstream"

    def __post_init__(self) -> None:
        p = self.policy
        _check_fraction(p, "tau", self.tau)
        _check_fraction(p, "merge_tau", self.merge_tau)
        if isinstance(self.min_keep, bool) or not isinstance(self.min_keep, int) or self.min_keep < 1:
            raise PolicyError(f"{p}: min_keep must be a positive number of tokens per frame, got {self.min_keep!r}")
        b = self.patch_budget
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise PolicyError(f"{p}: patch_budget must be a positive number of tokens per frame, got {b!r}")
        if b is not None and b < self.min_keep:
            raise PolicyError(f"{p}: patch_budget ({b}) is below min_keep ({self.min_keep})")
        if self.reference not in REFERENCES:
            raise PolicyError(f"{p}: reference must be one of {REFERENCES}, got {self.reference!r}")

    @property
    def active(self) -> bool:
        return self.tau is not None or self.patch_budget is not None or self.merge_tau is not None

    def frame_tokens(self, tokens_per_frame: int) -> int:
        """Patch tokens a frame can hold at most after reduction (what a budget must fit)."""
        return min(tokens_per_frame, self.patch_budget) if self.patch_budget is not None else tokens_per_frame

    # ---------------------------------------------------------------- apply
    @torch.no_grad()
    def apply(self, session) -> None:
        """Reduce every layer's newly cached frames (call from ``after_chunk``, before evicting)."""
        if not self.active:
            return
        cache = session.cache
        state = memstream_state(cache)
        for layer in range(cache.num_layers):
            self.reduce_layer(cache, layer, session.tokens_per_frame, state)

    def reduce_layer(self, cache: CompactCache, layer: int, tokens_per_frame: int | None, state: dict) -> None:
        meta = cache.meta(layer)
        seen = state["seen"][layer]
        new = torch.nonzero((meta.frame > seen) & (meta.patch >= 0)).flatten()
        if new.numel() == 0:
            return
        state["seen"][layer] = int(meta.frame[new].max())
        positions, keys = cache.positions(layer), cache.keys(layer)
        flat = flat_unrotated_keys(cache.rotary, keys.index_select(-2, new.to(keys.device)), positions[:, new])
        reference: KeyReference = state["reference"][layer]
        frames = meta.frame[new]
        drop = torch.zeros(cache.layer_len(layer), dtype=torch.bool)
        merges: list[tuple[int, list[int]]] = []  # (representative row, member rows)
        selected: list[int] = []  # rows key selection dropped
        for frame in torch.unique_consecutive(frames).tolist():
            local = torch.nonzero(frames == frame).flatten()
            rows, patch = new[local], meta.patch[new[local]].to(torch.long)
            kept = torch.ones(local.numel(), dtype=torch.bool)
            if self.tau is not None:
                kept = ~redundant_mask(reference.similarity(patch, flat[local]), self.tau, self.min_keep)
                update = slice(None) if self.reference == "previous" else kept
                reference.update(patch[update], flat[local][update])
            state["removed"][layer]["selected"] += int((~kept).sum())
            drop[rows[~kept]] = True
            selected += rows[~kept].tolist()
            survivors = torch.nonzero(kept).flatten()
            if survivors.numel() > 1 and (self.patch_budget is not None or self.merge_tau is not None):
                coords = patch_coords(patch[survivors], positions[:, rows[survivors]], tokens_per_frame)
                clusters = greedy_merge(flat[local][survivors], coords, self.patch_budget, self.merge_tau,
                                        self.min_keep)
                for cluster in clusters:
                    if len(cluster) > 1:
                        member_rows = rows[survivors[cluster]].tolist()
                        merges.append((member_rows[0], member_rows))
                        drop[member_rows[1:]] = True
                        state["removed"][layer]["merged"] += len(cluster) - 1
        state["reduced"][layer] = {
            "selected": [(int(meta.frame[r]), int(meta.patch[r])) for r in selected],
            "merged": [(int(meta.frame[rep]), [int(meta.patch[r]) for r in m]) for rep, m in merges],
        }
        if not bool(drop.any()):
            return
        self._rebuild(cache, layer, drop, merges, state["sizes"][layer])

    @staticmethod
    def _rebuild(cache: CompactCache, layer: int, drop: torch.Tensor, merges, sizes: dict) -> None:
        meta, positions = cache.meta(layer), cache.positions(layer)
        keys, values = cache.keys(layer), cache.values(layer)
        keep = torch.nonzero(~drop).flatten()
        dev_keep = keep.to(keys.device)
        new_k, new_v = keys.index_select(-2, dev_keep), values.index_select(-2, dev_keep)
        where = torch.full((drop.numel(),), -1, dtype=torch.long)
        where[keep] = torch.arange(keep.numel())
        for rep, members in merges:
            idx = torch.tensor(members)
            dev_idx = idx.to(keys.device)
            target = positions[:, rep : rep + 1]
            # each member rotated from its own position to the representative's, then averaged
            delta = (target - positions[:, idx]).to(keys.device)
            rotated = cache.rotary.rotate(keys.index_select(-2, dev_idx).float(), delta)
            new_k[:, :, int(where[rep])] = rotated.mean(dim=2).to(keys.dtype)
            new_v[:, :, int(where[rep])] = values.index_select(-2, dev_idx).float().mean(dim=2).to(values.dtype)
            sizes[(int(meta.frame[rep]), int(meta.patch[rep]))] = len(members)
        cache.replace_layer(layer, new_k, new_v, positions.index_select(1, keep), meta.select(keep))
        # forget sizes of rows that earlier evictions removed
        present = set(meta.frame[keep].tolist())
        for key in [k for k in sizes if k[0] not in present]:
            del sizes[key]
