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

from hermes_policy.errors import ModelError
from hermes_policy.jsonfile import read_json


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

    kind = "patch-projector"

    def save(self, directory: str | Path) -> None:
        save_frontend(self, directory)


@dataclass(frozen=True)
class ConvFrontendConfig:
    """Shape of a :class:`ConvFrontend`.

    Attributes:
        hidden_size: LM embedding width.
        input_size: frames are resized to input_size x input_size.
        grid: output tokens form a grid x grid map (input_size / grid must be a power of two >= 2).
        channels: conv widths, one stride-2 stage each, until the map is grid x grid.
        target_norm: output embeddings are scaled to about this L2 norm (the LM's token norm).
        concepts: if > 0, a concept bottleneck: each cell's features are first read out as this many
            attribute logits (trained directly, e.g. "a red object is centred here"), and only their
            sigmoids are projected into the LM's space. 0: the features are projected as they are.
    """

    hidden_size: int
    input_size: int = 128
    grid: int = 4
    channels: tuple[int, ...] = (32, 64, 96, 128, 160)
    target_norm: float = 1.0
    seed: int = 0
    concepts: int = 0

    def __post_init__(self) -> None:
        stages = self.input_size // self.grid
        if self.input_size % self.grid or stages & (stages - 1) or stages < 2:
            raise ValueError("input_size / grid must be a power of two >= 2")
        if len(self.channels) != stages.bit_length() - 1:
            raise ValueError(f"need {stages.bit_length() - 1} conv stages to go from {self.input_size} to {self.grid}")

    @property
    def tokens_per_frame(self) -> int:
        return self.grid * self.grid


class ConvFrontend(nn.Module):
    """A small trainable vision front end: (F, H, W, 3) uint8 -> (F, grid**2, hidden), row-major over cells.

    Two paths are summed per grid cell:

    * a pixel path: the cell average-pooled to 8 x 8 RGB, through a 2-layer MLP.
      It hands colour and coarse shape to the LM directly, which a frozen LM
      learns to read quickly;
    * a conv path: stride-2 conv stages shrink the frame to a grid x grid map
      that sees across cell borders (objects straddle cells), then a linear map.

    With ``concepts > 0`` the summed features pass a concept bottleneck first
    (attribute logits -> sigmoid -> MLP readout). A learned per-cell embedding
    says where each token sits. Each output token is
    scaled to the LM's token-embedding norm (``target_norm``). A first version
    layer-normed the sum with a learned scale; the constant part dominated (frames
    differed by ~3% of the norm) and it never learned to see. A second left the
    norm free; it drifted to ~10x the LM's and stayed at chance on held-out frames.
    """

    kind = "conv"
    cell_pixels = 8

    def __init__(self, config: ConvFrontendConfig) -> None:
        super().__init__()
        self.config = config
        gen_state = torch.random.get_rng_state()
        torch.manual_seed(config.seed)
        layers: list[nn.Module] = []
        width = 3
        for c in config.channels:
            layers += [nn.Conv2d(width, c, 3, stride=2, padding=1), nn.GELU()]
            width = c
        self.encoder = nn.Sequential(*layers)
        h = config.hidden_size
        pixels = 3 * self.cell_pixels**2
        self.pixel_mlp = nn.Sequential(nn.Linear(pixels, h), nn.GELU(), nn.Linear(h, h))
        self.conv_proj = nn.Linear(width, h)
        self.cell_embed = nn.Parameter(torch.randn(config.tokens_per_frame, h) * 0.02)
        if config.concepts:
            self.concept_head = nn.Sequential(nn.LayerNorm(h), nn.Linear(h, config.concepts))
            self.readout = nn.Sequential(nn.Linear(config.concepts, h), nn.GELU(), nn.Linear(h, h))
        with torch.no_grad():
            # start at about the LM's token-embedding norm so the frozen LM sees in-range inputs
            for lin in (self.pixel_mlp[2], self.conv_proj):
                lin.weight.mul_(config.target_norm / 4)
                lin.bias.zero_()
        torch.random.set_rng_state(gen_state)

    def pixels(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(frames)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        size = self.config.input_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return x

    def features(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(F, H, W, 3) uint8 -> (F, grid**2, hidden) cell features before the bottleneck and norm."""
        x = self.pixels(frames).to(self.cell_embed.device, self.cell_embed.dtype)  # (F, 3, S, S)
        g, c = self.config.grid, self.cell_pixels
        cells = F.adaptive_avg_pool2d(x, (g * c, g * c)).reshape(x.shape[0], 3, g, c, g, c)
        cells = cells.permute(0, 2, 4, 1, 3, 5).reshape(x.shape[0], g * g, 3 * c * c)
        conv = self.encoder(x).flatten(2).transpose(1, 2)  # (F, grid**2, C)
        return self.pixel_mlp(cells) + self.conv_proj(conv)

    def concept_logits(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """(F, grid**2, concepts) attribute logits per cell (concept-bottleneck front ends only)."""
        if not self.config.concepts:
            raise ValueError("this front end has no concept bottleneck (concepts=0)")
        return self.concept_head(self.features(frames))

    def encoder_parameters(self) -> list[nn.Parameter]:
        """What sees pixels: frozen after stage 0 in a bottleneck front end, so concepts keep their meaning."""
        parts = [self.encoder, self.pixel_mlp, self.conv_proj, *([self.concept_head] if self.config.concepts else [])]
        return [p for part in parts for p in part.parameters()]

    def forward(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        if self.config.concepts:
            out = self.readout(torch.sigmoid(self.concept_logits(frames))) + self.cell_embed
        else:
            out = self.features(frames) + self.cell_embed
        # every token at the LM's own embedding norm: left free, the norm drifted to ~10x it and
        # held-out accuracy stayed at chance; pinned, colour reading starts to generalise
        return F.normalize(out, dim=-1) * self.config.target_norm

    def save(self, directory: str | Path) -> None:
        save_frontend(self, directory)


FRONTENDS = {"patch-projector": (PatchProjector, FrontendConfig), "conv": (ConvFrontend, ConvFrontendConfig)}


def save_frontend(module: nn.Module, directory: str | Path, extra: dict | None = None) -> None:
    """``frontend.safetensors`` + ``frontend.json`` (its kind and config) in ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()},
              directory / "frontend.safetensors")
    meta = {"kind": module.kind, "config": asdict(module.config), **(extra or {})}
    (directory / "frontend.json").write_text(json.dumps(meta, indent=2))


def mc_scoring(directory: str | Path) -> str:
    """How evaluation reads a trained model's multiple-choice answers by default (:mod:`hermes_policy.eval.scoring`).

    ``frontend.json``'s ``mc_scoring`` when set (the model card says why), else the answer format it was
    trained on (``training.mc_answer``), else ``letter``.
    """
    meta = read_json(Path(directory) / "frontend.json", ModelError, "model file", expect=dict)
    return str(meta.get("mc_scoring") or meta.get("training", {}).get("mc_answer", "letter"))


def load_frontend(directory: str | Path) -> nn.Module:
    """Inverse of :func:`save_frontend`."""
    directory = Path(directory)
    meta = read_json(directory / "frontend.json", ModelError, "model file", expect=dict)
    cls, config_cls = FRONTENDS[meta["kind"]]
    config = dict(meta["config"])
    if "channels" in config:
        config["channels"] = tuple(config["channels"])
    module = cls(config_cls(**config))
    module.load_state_dict(load_file(directory / "frontend.safetensors"))
    return module.eval()
