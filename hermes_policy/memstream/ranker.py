"""External image-text rankers: the second expert of MemStream's retrieval mixture.

A :class:`FrameRanker` scores frames (small RGB thumbnails) against a question's
text, higher = more relevant. Two implementations:

* :class:`SyntheticRanker`: no model. It reads colour and shape words of the
  synthetic streams (:data:`~hermes_policy.video.synthetic.COLOURS`,
  :data:`~hermes_policy.video.synthetic.SHAPES`) in the query and scores each
  frame by pixel evidence alone (it never sees an event log), so it is a
  stand-in for CLIP that is exact on synthetic streams and runs anywhere.
* :class:`ClipRanker`: a CLIP-style dual encoder loaded with transformers
  (``AutoModel`` + ``AutoProcessor``, never ``trust_remote_code``): cosine of the
  image and text embeddings. CLIP and SigLIP checkpoints work; PE-Core ships
  outside transformers and would need its own ``FrameRanker``.

:func:`make_ranker` builds one from a spec string: ``"synthetic"``,
``"clip:<dir or hub id>"``, or ``"none"``.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hermes_policy.errors import ModelError, PolicyError
from hermes_policy.video.synthetic import COLOURS, SHAPES

#: bounding-box fill ratio of each synthetic shape (square: 1, circle: pi/4, equilateral triangle: ~0.5)
SHAPE_FILL = {"square": 1.0, "circle": math.pi / 4, "triangle": 0.5}


class FrameRanker(ABC):
    """Scores frames against a text query.

    Attributes:
        spec: the spec string that rebuilds this ranker (for a policy's resolved config).
    """

    spec: str = ""

    @abstractmethod
    def score(self, frames: list[np.ndarray], query: str) -> torch.Tensor:
        """(F,) float32 relevance of each (H, W, 3) uint8 frame to ``query`` (higher = more relevant)."""

    def load(self) -> None:
        """Load weights now (policies call it before the stream, so questions do not pay for it)."""


def thumbnail(image: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8 copy of an (H, W, 3) uint8 frame (area-averaged; a copy even when no resize)."""
    if image.shape[0] == size and image.shape[1] == size:
        return np.array(image, dtype=np.uint8)
    return np.asarray(Image.fromarray(np.asarray(image, dtype=np.uint8)).resize((size, size), Image.Resampling.BOX))


_TAGS = re.compile(r"<\|[^|>]*\|>|<image>|<video>")
_ROLE_LINE = re.compile(r"^\s*(system|user|assistant)\s*$", re.IGNORECASE | re.MULTILINE)


def clean_query(text: str) -> str:
    """The question without chat-template tokens and role lines (what an image-text model should read)."""
    text = _ROLE_LINE.sub(" ", _TAGS.sub(" ", text))
    text = text.replace("Answer with the option's letter.", " ")
    return " ".join(text.split())


def words_in(text: str, vocabulary) -> list[str]:
    """Which words of ``vocabulary`` occur in ``text`` as whole words (case-insensitive), in vocabulary order."""
    low = text.lower()
    return [w for w in vocabulary if re.search(rf"\b{re.escape(w)}s?\b", low)]


class SyntheticRanker(FrameRanker):
    """Pixel evidence for colour and shape words, for the synthetic streams.

    Score of a frame (all fractions of the frame's pixels):

    * colour words only: the largest fraction of pixels within ``tolerance``
      (RGB Euclidean distance) of a named colour;
    * shape words (with or without colours): for each palette colour (only the
      named ones if any are named) whose pixels form a blob of at least
      ``min_pixels``, the blob's shape is the :data:`SHAPE_FILL` entry nearest
      to its bounding-box fill ratio; the score is the largest pixel fraction
      of a blob whose shape is named;
    * neither: 0 for every frame (no opinion; fusion then falls back to the cache).

    Objects of the synthetic streams have unique colours at any time, so a
    colour's pixels are one object.
    """

    spec = "synthetic"

    def __init__(self, tolerance: float = 50.0, min_pixels: int = 6) -> None:
        self.tolerance = float(tolerance)
        self.min_pixels = int(min_pixels)

    def masks(self, image: np.ndarray, colours) -> dict[str, np.ndarray]:
        """Per colour name, the (H, W) bool mask of pixels within tolerance of it."""
        img = np.asarray(image, dtype=np.float32)
        return {c: np.linalg.norm(img - np.asarray(COLOURS[c], np.float32), axis=-1) <= self.tolerance
                for c in colours}

    @staticmethod
    def shape_of(mask: np.ndarray) -> str:
        """The shape whose bounding-box fill ratio is nearest the mask's."""
        ys, xs = np.nonzero(mask)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        fill = mask.sum() / box
        return min(SHAPE_FILL, key=lambda s: abs(SHAPE_FILL[s] - fill))

    def frame_score(self, image: np.ndarray, colours: list[str], shapes: list[str]) -> float:
        if not colours and not shapes:
            return 0.0
        total = image.shape[0] * image.shape[1]
        masks = self.masks(image, colours or list(COLOURS))
        if not shapes:
            return max(float(m.sum()) / total for m in masks.values())
        best = 0.0
        for m in masks.values():
            if m.sum() >= self.min_pixels and self.shape_of(m) in shapes:
                best = max(best, float(m.sum()) / total)
        return best

    def score(self, frames: list[np.ndarray], query: str) -> torch.Tensor:
        colours, shapes = words_in(query, COLOURS), words_in(query, SHAPES)
        return torch.tensor([self.frame_score(f, colours, shapes) for f in frames], dtype=torch.float32)


def _looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


class ClipRanker(FrameRanker):
    """Cosine similarity of CLIP-style image and text embeddings.

    Args:
        name_or_path: a local checkpoint directory (``config.json`` + weights +
            processor files) or a hub id. A path that does not exist raises
            :class:`ModelError` at once, before any network access.
        device: torch device for the encoder.
        local_files_only: never contact the hub (also honoured: ``HF_HUB_OFFLINE``).
        batch_size: images per forward.
        model, processor: already-built components (then nothing is loaded);
            ``processor(text=[q], images=[...], return_tensors="pt", ...)`` must work.
    """

    def __init__(self, name_or_path: str, device: str = "cpu", local_files_only: bool = False,
                 batch_size: int = 32, model=None, processor=None) -> None:
        self.name_or_path = str(name_or_path)
        self.spec = f"clip:{self.name_or_path}"
        self.device = device
        self.local_files_only = local_files_only
        self.batch_size = batch_size
        self.model, self.processor = model, processor
        if model is None and _looks_like_path(self.name_or_path):
            path = Path(self.name_or_path).expanduser()
            if not path.is_dir():
                raise ModelError(f"ClipRanker: no model directory at {path}; pass a local CLIP/SigLIP checkpoint "
                                 "directory (config.json, weights, processor files) or a hub id such as "
                                 "openai/clip-vit-base-patch32")
            if not (path / "config.json").is_file():
                raise ModelError(f"ClipRanker: {path} has no config.json; it is not a transformers checkpoint")

    def load(self) -> None:
        if self.model is not None:
            return
        from transformers import AutoModel, AutoProcessor

        source = str(Path(self.name_or_path).expanduser()) if _looks_like_path(self.name_or_path) else self.name_or_path
        try:
            model = AutoModel.from_pretrained(source, trust_remote_code=False, local_files_only=self.local_files_only)
            processor = AutoProcessor.from_pretrained(source, trust_remote_code=False,
                                                      local_files_only=self.local_files_only)
        except (OSError, ValueError) as e:
            raise ModelError(f"ClipRanker: could not load {self.name_or_path!r}: {e}") from e
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise ModelError(f"ClipRanker: {self.name_or_path!r} is a {type(model).__name__}, not a dual "
                             "image-text encoder (needs get_image_features and get_text_features)")
        self.model, self.processor = model.to(self.device).eval(), processor

    @staticmethod
    def _features(out) -> torch.Tensor:
        # transformers 5 returns a model output whose pooler_output is the projected embedding
        return out if isinstance(out, torch.Tensor) else out.pooler_output

    @torch.no_grad()
    def score(self, frames: list[np.ndarray], query: str) -> torch.Tensor:
        if not frames:
            return torch.zeros(0)
        self.load()
        text = clean_query(query) or query
        siglip = "siglip" in str(getattr(self.model.config, "model_type", ""))
        pad = dict(padding="max_length", max_length=64) if siglip else dict(padding=True)
        t = self.processor(text=[text], return_tensors="pt", truncation=True, **pad)
        t = {k: v.to(self.device) for k, v in t.items() if k in ("input_ids", "attention_mask")}
        text_emb = torch.nn.functional.normalize(self._features(self.model.get_text_features(**t)).float(), dim=-1)
        scores = []
        for start in range(0, len(frames), self.batch_size):
            batch = [np.asarray(f, dtype=np.uint8) for f in frames[start : start + self.batch_size]]
            pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"].to(self.device)
            pixels = pixels.to(next(self.model.parameters()).dtype)
            img = torch.nn.functional.normalize(self._features(self.model.get_image_features(pixel_values=pixels))
                                                .float(), dim=-1)
            scores.append((img @ text_emb[0]).cpu())
        return torch.cat(scores)


def make_ranker(spec) -> FrameRanker | None:
    """A ranker from a spec string (``"synthetic"``, ``"clip:<path or hub id>"``, ``"none"``) or an instance."""
    if spec is None or isinstance(spec, FrameRanker):
        return spec
    if not isinstance(spec, str):
        raise PolicyError(f"ranker must be 'synthetic', 'clip:<path>' or 'none', got {spec!r}")
    if spec == "none":
        return None
    if spec == "synthetic":
        return SyntheticRanker()
    if spec.startswith("clip:") and spec[5:].strip():
        return ClipRanker(spec[5:].strip())
    raise PolicyError(f"unknown ranker {spec!r}; use 'synthetic', 'clip:<checkpoint dir or hub id>' or 'none'")
