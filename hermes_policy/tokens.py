"""Per-token metadata that travels with every cached key.

A cache row is a key/value pair plus *what it was*: which frame it came
from, where inside that frame, and when. Policies score and evict by these
columns; probes reduce attention by them. Keeping them as a small struct of
1-D tensors (not Python lists) makes evicting a layer one ``index_select``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

#: ``frame`` value of tokens that belong to no frame (system prefix, questions).
NO_FRAME = -1
#: ``patch`` value of frame tokens that are not image patches (timestamps, delimiters).
NOT_A_PATCH = -1


@dataclass
class TokenMeta:
    """Columns describing S tokens.

    Attributes:
        frame: (S,) int32 index of the source frame in the stream, or ``NO_FRAME``.
        patch: (S,) int32 position inside the frame (row-major over the token
            grid), or ``NOT_A_PATCH`` for text that belongs to a frame.
        time: (S,) float32 timestamp of the source frame in seconds (NaN off-frame).
    """

    frame: torch.Tensor
    patch: torch.Tensor
    time: torch.Tensor

    def __post_init__(self) -> None:
        n = self.frame.shape[0]
        for f in fields(self):
            col = getattr(self, f.name)
            if col.ndim != 1 or col.shape[0] != n:
                raise ValueError(f"TokenMeta.{f.name} must have shape ({n},), got {tuple(col.shape)}")

    def __len__(self) -> int:
        return self.frame.shape[0]

    @classmethod
    def empty(cls) -> TokenMeta:
        return cls.text(0)

    @classmethod
    def text(cls, n: int) -> TokenMeta:
        """Metadata for ``n`` tokens that belong to no frame."""
        return cls(
            frame=torch.full((n,), NO_FRAME, dtype=torch.int32),
            patch=torch.full((n,), NOT_A_PATCH, dtype=torch.int32),
            time=torch.full((n,), float("nan"), dtype=torch.float32),
        )

    @classmethod
    def frame_tokens(cls, frame: int, time: float, n_text: int, n_patches: int) -> TokenMeta:
        """``n_text`` frame-text tokens (e.g. a timestamp) followed by ``n_patches`` patches."""
        n = n_text + n_patches
        patch = torch.cat([torch.full((n_text,), NOT_A_PATCH), torch.arange(n_patches)]).to(torch.int32)
        return cls(
            frame=torch.full((n,), frame, dtype=torch.int32),
            patch=patch,
            time=torch.full((n,), time, dtype=torch.float32),
        )

    @classmethod
    def cat(cls, parts: list[TokenMeta]) -> TokenMeta:
        if not parts:
            return cls.empty()
        return cls(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def select(self, index: torch.Tensor) -> TokenMeta:
        """Rows ``index`` (a (K,) long tensor), as new compact tensors."""
        return TokenMeta(**{f.name: getattr(self, f.name).index_select(0, index) for f in fields(self)})

    @property
    def is_video(self) -> torch.Tensor:
        """(S,) bool: the token belongs to a frame, so it counts against the video budget.

        Negative frame values mark rows that are not frames: ``NO_FRAME`` text and
        policy-owned slots (e.g. a summary token).
        """
        return self.frame >= 0

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).untyped_storage().nbytes() for f in fields(self))
