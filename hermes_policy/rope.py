"""Rotary position arithmetic on keys that are already cached.

Cached keys are stored *after* RoPE, so a key keeps the position it was
computed at. Moving a key to another position is a rotation by the angle
difference, because RoPE rotations compose additively: R(p_new) = R(p_new - p_old) R(p_old).

Both layouts HF uses share the ``rotate_half`` convention: the head dimension D
is two halves, and frequency ``j`` (0 <= j < D/2) pairs dims ``j`` and ``j + D/2``.
They differ only in which position axis drives each frequency:

* 1-D RoPE (Llama, Qwen2, SmolLM2): one axis drives every frequency.
* M-RoPE (Qwen2-VL, Qwen2.5-VL): ``mrope_section = [s_t, s_h, s_w]`` splits the
  D/2 frequencies into consecutive temporal, height and width sections.
* Interleaved M-RoPE (Qwen3-VL, Qwen3.5): frequency ``j`` follows height when
  ``j % 3 == 1`` and ``j < 3 s_h``, width when ``j % 3 == 2`` and ``j < 3 s_w``,
  else time, so every axis gets fast and slow frequencies alike.

Some models rotate only the first ``R < D`` dimensions of a head (Qwen3.5's
``partial_rotary_factor``); the rest pass through unrotated, and so they do here.

:class:`RotarySpec` captures exactly that mapping, so one code path serves them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class RotarySpec:
    """Which position axis drives each rotary frequency, and at what rate.

    Attributes:
        inv_freq: (D/2,) float32 angular rate per position of each frequency.
        axis_of_freq: (D/2,) long, the position axis (0..n_axes-1) of each frequency.
        n_axes: 1 for 1-D RoPE, 3 for M-RoPE (temporal, height, width).
        max_position: the largest position the model was trained for; lazy
            re-indexing compacts positions before they get there.

    The rotated dimensions are the first ``2 * len(inv_freq)`` of a head; any beyond them are not rotated.
    """

    inv_freq: torch.Tensor
    axis_of_freq: torch.Tensor
    n_axes: int
    max_position: int

    def __post_init__(self) -> None:
        if self.inv_freq.ndim != 1 or self.axis_of_freq.shape != self.inv_freq.shape:
            raise ValueError("inv_freq and axis_of_freq must both have shape (D/2,)")
        if self.n_axes < 1 or int(self.axis_of_freq.max()) >= self.n_axes:
            raise ValueError(f"axis_of_freq refers to an axis >= n_axes={self.n_axes}")

    @classmethod
    def one_d(cls, inv_freq: torch.Tensor, max_position: int) -> RotarySpec:
        inv_freq = inv_freq.detach().float().cpu()
        return cls(inv_freq, torch.zeros_like(inv_freq, dtype=torch.long), 1, max_position)

    @classmethod
    def multimodal(cls, inv_freq: torch.Tensor, mrope_section: list[int], max_position: int) -> RotarySpec:
        """M-RoPE as in Qwen2-VL: section ``i`` of the frequencies follows axis ``i % 3``."""
        inv_freq = inv_freq.detach().float().cpu()
        if sum(mrope_section) != inv_freq.numel():
            raise ValueError(f"mrope_section {mrope_section} must sum to head_dim/2 = {inv_freq.numel()}")
        axis = torch.cat([torch.full((n,), i % 3, dtype=torch.long) for i, n in enumerate(mrope_section)])
        return cls(inv_freq, axis, 3, max_position)

    @classmethod
    def interleaved(cls, inv_freq: torch.Tensor, mrope_section: list[int], max_position: int) -> RotarySpec:
        """Interleaved M-RoPE as in Qwen3-VL: height takes frequencies 1, 4, 7, ... (``s_h`` of them), width
        2, 5, 8, ... (``s_w``), time every other one."""
        inv_freq = inv_freq.detach().float().cpu()
        if sum(mrope_section) != inv_freq.numel() or len(mrope_section) != 3:
            raise ValueError(f"mrope_section {mrope_section} must be 3 sections summing to the rotary "
                             f"frequencies ({inv_freq.numel()})")
        j = torch.arange(inv_freq.numel())
        axis = torch.zeros_like(j)
        for a in (1, 2):
            axis[(j % 3 == a) & (j < 3 * mrope_section[a])] = a
        return cls(inv_freq, axis, 3, max_position)

    @property
    def rotary_dim(self) -> int:
        """How many leading dimensions of a head are rotated (the whole head unless the model rotates part)."""
        return 2 * self.inv_freq.numel()

    def angles(self, positions: torch.Tensor) -> torch.Tensor:
        """Rotation angle of every (token, frequency).

        Args:
            positions: (n_axes, S) integer or float positions (or position deltas).

        Returns:
            (S, D/2) float32 angles.
        """
        if positions.ndim != 2 or positions.shape[0] != self.n_axes:
            raise ValueError(f"positions must have shape ({self.n_axes}, S), got {tuple(positions.shape)}")
        per_freq = positions.float()[self.axis_of_freq.to(positions.device)]  # (D/2, S)
        return per_freq.transpose(0, 1) * self.inv_freq.to(positions.device)

    def rotate(self, keys: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        """Rotate keys by position deltas, as if they had been computed ``delta`` later.

        Args:
            keys: (..., S, D) keys after RoPE.
            delta: (n_axes, S) new position minus old position, per axis.

        Returns:
            (..., S, D) keys in the input dtype; the rotation itself runs in float32.
        """
        cos, sin = self.cos_sin(delta.to(keys.device))  # where the keys are (layers may sit on other devices)
        return self.apply(keys, cos, sin)

    def cos_sin(self, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, D) float32 cosines and sines of the rotation by ``delta`` ((n_axes, S)); reusable across layers."""
        theta = self.angles(delta)
        return torch.cat([theta.cos(), theta.cos()], dim=-1), torch.cat([theta.sin(), theta.sin()], dim=-1)

    @staticmethod
    def apply(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """Rotate (..., S, D) ``x`` by precomputed (S, R) ``cos``/``sin``; float32 math, ``x``'s dtype out.

        The first R dimensions are rotated; the other D - R pass through (R = D for most models).
        """
        rd = cos.shape[-1]
        k = x[..., :rd].float()
        half = rd // 2
        rotated_half = torch.cat([-k[..., half:], k[..., :half]], dim=-1)
        rotated = (k * cos + rotated_half * sin).to(x.dtype)
        return rotated if rd == x.shape[-1] else torch.cat([rotated, x[..., rd:]], dim=-1)


def dense_positions(positions: torch.Tensor) -> torch.Tensor:
    """Compact positions to dense ranks, axis by axis, keeping order and ties.

    Eviction leaves gaps; this closes them. Ties survive (several M-RoPE
    tokens share a temporal position), so each axis is ranked over its own set
    of distinct values, as the HERMES release does.

    Args:
        positions: (n_axes, S) integer positions.

    Returns:
        (n_axes, S) long, each axis mapped onto 0..(distinct values - 1).
    """
    ranked = [torch.unique(axis, sorted=True, return_inverse=True)[1] for axis in positions]
    return torch.stack(ranked).to(torch.long)
