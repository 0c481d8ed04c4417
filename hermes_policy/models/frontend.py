"""Vision front ends that turn frames into LM input embeddings for text-only LMs.

The embedded model is a plain Llama-family LM (SmolLM2-135M) that has never
seen an image, so it needs a front end that maps each frame to a few token
embeddings. :class:`PatchProjector` is the simplest honest one: average-pool
each cell of a ``grid x grid`` partition of the frame to a tiny RGB patch and
project it linearly into the embedding space. Untrained it is a deterministic
random projection (seeded); a trained front end with the same interface can be
saved and loaded as safetensors + JSON.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn


@dataclass(frozen=True)
class FrontendConfig:
    """Shape of a :class:`PatchProjector`.

    Attributes:
        hidden_size: LM embedding width.
        grid: the frame is cut into grid x grid cells -> grid**2 tokens per frame.
        cell_pixels: each cell is pooled to cell_pixels x cell_pixels RGB.
        seed: initialisation seed (makes the untrained projector reproducible).
        target_norm: L2 norm of output embeddings at init, matched to the LM's token embeddings.
    """

    hidden_size: int
    grid: int = 4
    cell_pixels: int = 4
    seed: int = 0
    target_norm: float = 1.0

    def __post_init__(self) -> None:
        if self.hidden_size <= 0 or self.grid <= 0 or self.cell_pixels <= 0:
            raise ValueError("hidden_size, grid and cell_pixels must be positive")
        if self.target_norm <= 0:
            raise ValueError("target_norm must be positive")

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid

    @property
    def in_features(self) -> int:
        return 3 * self.cell_pixels * self.cell_pixels


class PatchProjector(nn.Module):
    """(F, H, W, 3) uint8 frames -> (F, grid**2, hidden) embeddings, row-major over cells."""

    def __init__(self, config: FrontendConfig) -> None:
        super().__init__()
        self.config = config
        gen = torch.Generator().manual_seed(config.seed)
        self.proj = nn.Linear(config.in_features, config.hidden_size)
        self.cell_embed = nn.Parameter(torch.zeros(config.tokens_per_frame, config.hidden_size))
        with torch.no_grad():
            # Random features with the LM's embedding norm keep the untrained
            # projector's tokens in-distribution for the frozen LM.
            w = torch.randn(config.hidden_size, config.in_features, generator=gen)
            self.proj.weight.copy_(w * config.target_norm / np.sqrt(config.in_features * config.hidden_size))
            self.proj.bias.zero_()

    def pixels(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(F, H, W, 3) uint8 -> (F, grid**2, 3*cell*cell) float features in [-1, 1]."""
        x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        side = self.config.grid * self.config.cell_pixels
        x = F.adaptive_avg_pool2d(x, (side, side))  # (F, 3, side, side)
        g, c = self.config.grid, self.config.cell_pixels
        x = x.reshape(x.shape[0], 3, g, c, g, c).permute(0, 2, 4, 1, 3, 5)
        return x.reshape(x.shape[0], g * g, 3 * c * c)

    def forward(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        feats = self.pixels(frames).to(self.proj.weight.device, self.proj.weight.dtype)
        return self.proj(feats) + self.cell_embed

    def save(self, directory: str | Path) -> None:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, directory / "frontend.safetensors")
        (directory / "frontend.json").write_text(json.dumps(asdict(self.config), indent=2))

    @classmethod
    def load(cls, directory: str | Path) -> "PatchProjector":
        directory = Path(directory)
        module = cls(FrontendConfig(**json.loads((directory / "frontend.json").read_text())))
        module.load_state_dict(load_file(directory / "frontend.safetensors"))
        return module
