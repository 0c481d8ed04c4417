"""Dynamic patch-level compression: merge similar neighbouring patch tokens of a frame.

The rule (our design; MemStream publishes none), applied per layer to each
newly cached frame after key selection:

* **Clusters** start as single patch tokens. Two clusters are *adjacent* when
  some member of one is a 4-neighbour of some member of the other in the
  frame's patch grid. Grid coordinates: on M-RoPE models the token's own
  (height, width) position axes; on 1-D RoPE models the row-major patch index
  on a ``g x g`` grid with ``g = sqrt(tokens_per_frame)`` when that is a whole
  number, else a 1-D strip (index i is adjacent to i +- 1).
  If no adjacent pair is left (key selection can leave isolated tokens) the
  clusters that are consecutive in patch order count as adjacent, so a budget
  can always be met.
* **Similarity** of two clusters: cosine of their mean keys un-rotated to
  position 0 (position-free, as in key selection).
* **Greedy**: repeatedly merge the most similar adjacent pair (ties: the pair
  with the smallest indices) while the frame holds more than ``budget``
  clusters, or, with ``merge_tau`` set, while the best adjacent pair has
  similarity >= ``merge_tau`` and more than ``min_keep`` clusters remain. The
  budget is a hard cap; ``merge_tau`` makes the compression *dynamic*: a
  static frame compresses further than a busy one.
* **The merged row** takes the place, position and metadata of its
  representative, the member with the smallest patch index ("first" token).
  Its key is the mean of the members' keys each rotated to the representative's
  position, ``k = (1/n) sum_m R(p_rep - p_m) k_m = R(p_rep) mean_m k̂_m``; its
  value the mean of the members' values. Means are over the original tokens, so
  merging a cluster of size a with one of size b is the size-weighted mean
  ``(a·x_a + b·x_b)/(a+b)`` (ToMe-style). Each merged row's size is recorded
  (``row_sizes``) so analyses can weigh it; attention itself does not add
  ToMe's ``log(size)`` bias (that would need a change to the attention seam).
"""

from __future__ import annotations

import math

import torch


def patch_coords(
    patch: torch.Tensor, positions: torch.Tensor | None, tokens_per_frame: int | None
) -> torch.Tensor:
    """(n, 2) long grid coordinates (row, col) of patch tokens of one frame.

    Args:
        patch: (n,) patch indices (row-major inside the frame).
        positions: (A, n) their positions; with A == 3 (M-RoPE) the (h, w) axes are the grid.
        tokens_per_frame: patch tokens of a whole frame (for the 1-D square-grid rule).
    """
    if positions is not None and positions.shape[0] == 3:
        return positions[1:3].transpose(0, 1).to(torch.long)
    patch = patch.to(torch.long)
    side = math.isqrt(tokens_per_frame) if tokens_per_frame else 0
    if side and side * side == tokens_per_frame:
        return torch.stack([patch // side, patch % side], dim=1)
    return torch.stack([torch.zeros_like(patch), patch], dim=1)


def greedy_merge(
    vectors: torch.Tensor,
    coords: torch.Tensor,
    budget: int | None,
    merge_tau: float | None = None,
    min_keep: int = 1,
) -> list[list[int]]:
    """Cluster one frame's tokens by greedy merging of the most similar adjacent pair.

    Args:
        vectors: (n, d) position-free keys of the frame's tokens, in patch order.
        coords: (n, 2) grid coordinates (see :func:`patch_coords`).
        budget: merge while more than this many clusters remain (None: no cap).
        merge_tau: also merge while the best adjacent similarity is >= this (None: off).
        min_keep: ``merge_tau`` merging stops at this many clusters.

    Returns:
        Clusters as ascending lists of row indices (into the n tokens), ordered by their first member.
    """
    n = vectors.shape[0]
    members: list[list[int]] = [[i] for i in range(n)]
    if n <= 1 or (budget is None and merge_tau is None):
        return members
    sums = vectors.float().clone()
    sizes = torch.ones(n)
    alive = torch.ones(n, dtype=torch.bool)
    d = (coords[:, None, :] - coords[None, :, :]).abs().sum(-1)
    adjacent = d == 1
    unit = torch.nn.functional.normalize(sums, dim=-1, eps=1e-12)
    sim = unit @ unit.T
    count = n
    while count > 1:
        over = budget is not None and count > budget
        if not over and (merge_tau is None or count <= min_keep):
            break
        pair_ok = adjacent & alive[:, None] & alive[None, :]
        pair_ok.fill_diagonal_(False)
        if not bool(pair_ok.any()):
            # no grid neighbours left: consecutive clusters in patch order are neighbours
            live = torch.nonzero(alive).flatten()
            pair_ok = torch.zeros_like(adjacent)
            pair_ok[live[:-1], live[1:]] = True
        masked = torch.where(torch.triu(pair_ok, diagonal=1) | torch.triu(pair_ok.T, diagonal=1), sim, -math.inf)
        best = int(torch.argmax(masked))
        i, j = divmod(best, n)
        if not over and float(masked[i, j]) < merge_tau:
            break
        # j joins i (i < j: the representative, the smaller patch index, stays first)
        members[i] = sorted(members[i] + members[j])
        members[j] = []
        sums[i] += sums[j]
        sizes[i] += sizes[j]
        alive[j] = False
        adjacent[i] |= adjacent[j]
        adjacent[:, i] |= adjacent[:, j]
        adjacent[i, i] = False
        mean_i = torch.nn.functional.normalize(sums[i] / sizes[i], dim=-1, eps=1e-12)
        unit[i] = mean_i
        row = unit @ mean_i
        sim[i], sim[:, i] = row, row
        count -= 1
    return [m for m in members if m]
