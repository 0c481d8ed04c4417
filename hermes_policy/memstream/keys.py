"""Adaptive key selection: drop patch keys that repeat the previous frame, keep the novel ones.

The rule (our design; MemStream publishes none):

* Every patch token of a newly cached frame is compared with the token at the
  **same patch index** of the previous frame unit of the stream (the previous
  frame, or the previous temporal group on Qwen-VL), in the same layer.
* The comparison is the cosine similarity of the **KV-head-concatenated key
  un-rotated to position 0**: ``k̂ = R(-p) k`` for every KV head, flattened to
  one ``Hkv*D`` vector. Cached keys are stored after RoPE, so two identical
  patches at different positions have different rotated keys; un-rotating
  removes the position and leaves the content (``rotate`` is exact up to float
  error, so identical content gives cosine 1 on the first layer).
* A token is **redundant** when ``cos(k̂_t, k̂_ref) >= tau``; redundant tokens
  are evicted (real memory is freed by ``CompactCache.evict``/``replace_layer``).
* A frame is never emptied: when fewer than ``min_keep`` of its patch tokens
  would survive, the least similar (most novel) of the redundant ones are kept.
* The reference a token is compared against is, per layer and patch index,
  either the previous frame's key whether it was kept or not (``"previous"``,
  the literal reading: "locally redundant with its predecessor"), or the last
  *kept* key at that patch index (``"kept"``: an anchor, so a slow drift whose
  every step is below ``1 - tau`` is still caught once it has drifted far from
  what memory actually holds).

Text rows that belong to a frame (``patch == NOT_A_PATCH``) are never compared or dropped.
"""

from __future__ import annotations

import math

import torch

from hermes_policy.rope import RotarySpec

REFERENCES = ("previous", "kept")


def flat_unrotated_keys(rotary: RotarySpec, keys: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """(n, Hkv*D) float32: keys (1, Hkv, n, D) rotated back to position 0, heads concatenated.

    Args:
        positions: (A, n) the positions the keys were rotated to.
    """
    k = rotary.rotate(keys.float(), -positions.to(keys.device))[0]  # (Hkv, n, D)
    return k.transpose(0, 1).reshape(k.shape[1], -1)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two (n, d) tensors, in float32 (0 where a row is all zeros)."""
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1, eps=1e-12)


def redundant_mask(similarity: torch.Tensor, tau: float, min_keep: int) -> torch.Tensor:
    """Which tokens of one frame to drop.

    Args:
        similarity: (n,) cosine with each token's reference; NaN = no reference (always kept).
        tau: drop tokens with ``similarity >= tau``.
        min_keep: at least this many tokens survive (the most novel redundant ones are kept back).

    Returns:
        (n,) bool, True = drop.
    """
    sim = similarity.float()
    drop = torch.nan_to_num(sim, nan=-math.inf) >= tau
    short = min_keep - int((~drop).sum())
    if short > 0 and bool(drop.any()):
        candidates = torch.nonzero(drop).flatten()
        keep_back = candidates[torch.argsort(sim[candidates], stable=True)[:short]]
        drop[keep_back] = False
    return drop


class KeyReference:
    """Per-layer reference keys, one per patch index: what the next frame is compared with.

    Holds a (P, Hkv*D) float32 tensor and a (P,) validity mask; P grows to the
    largest patch index seen. Memory: P * Hkv * D * 4 bytes per layer.
    """

    def __init__(self) -> None:
        self.keys: torch.Tensor | None = None
        self.valid = torch.zeros(0, dtype=torch.bool)

    def _grow(self, n: int, dim: int, device) -> None:
        if self.keys is None:
            self.keys = torch.zeros(0, dim, device=device)
        have = self.keys.shape[0]
        if n > have:
            self.keys = torch.cat([self.keys, torch.zeros(n - have, dim, device=self.keys.device)])
            self.valid = torch.cat([self.valid, torch.zeros(n - have, dtype=torch.bool)])

    def similarity(self, patch: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(n,) cosine of (n, d) ``keys`` with the reference at each ``patch`` index; NaN where none."""
        out = torch.full((patch.numel(),), math.nan)
        if self.keys is None or patch.numel() == 0:
            return out
        inside = patch < self.valid.numel()
        have = torch.zeros_like(inside)
        have[inside] = self.valid[patch[inside]]
        if bool(have.any()):
            ref = self.keys[patch[have].to(self.keys.device)]
            out[have] = cosine(keys[have.to(keys.device)], ref).cpu()
        return out

    def update(self, patch: torch.Tensor, keys: torch.Tensor) -> None:
        """Set the reference of each ``patch`` index to the matching row of (n, d) ``keys``."""
        if patch.numel() == 0:
            return
        self._grow(int(patch.max()) + 1, keys.shape[-1], keys.device)
        self.keys[patch.to(self.keys.device)] = keys.float()
        self.valid[patch] = True

    @property
    def nbytes(self) -> int:
        return 0 if self.keys is None else self.keys.untyped_storage().nbytes()
