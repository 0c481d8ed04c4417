"""Recordings: what a probe captured, on disk as safetensors + JSON (never pickle).

Names follow TransformerLens: ``blocks.{L}.attn.{quantity}``. Index a
recording as ``rec["frame_mass", 3]`` (layer 3) or ``rec["steps.frames"]``.

Per-layer quantities (T steps, Q query kinds, H query heads, F frames of the
stream, P token positions inside a frame):

==========================  ==============  =====================================================
name                        shape           meaning
==========================  ==============  =====================================================
``frame_mass``              (T, Q, H, F)    attention mass per frame, normalised over video tokens;
                                            NaN for frames not yet streamed (or not cached)
``position_mass``           (T, Q, H, P)    mass per position inside a frame (summed over frames),
                                            normalised over video tokens
``entropy``                 (T, Q, H)       entropy (nats) of the attention over video tokens
``sink_mass``               (T, Q, H)       mass on tokens that belong to no frame (system prefix,
                                            the query's own text); 1 - sink_mass is the video mass
``periodicity``             (T, Q, H)       autocorrelation of per-token video mass at a lag of
                                            one frame (P tokens): high = the same in-frame
                                            positions are attended in every frame (anchors)
``rows``                    (W, Q, H, S)    optional raw attention rows (mean over query tokens)
                                            for the first W steps, NaN-padded to S keys
==========================  ==============  =====================================================

Step-level tensors: ``steps.frames`` (T,) frames streamed at each step,
``steps.time`` (T,) stream time; ``frames.time`` (F,) each frame's time.
``meta`` holds the model, video spec, fps, tokens per frame, chunk size, the
query kinds (names of the Q axis), layer/head counts and the package version;
``meta["study"]`` the settings it was recorded with (what a rerun compares to resume).

An **aggregate** over videos (:mod:`probes.aggregate`) has the same names and
shapes, holding the mean over videos, plus ``blocks.{L}.attn.{quantity}_std``
(same shape: the spread over videos) and ``steps.videos`` (T,) (videos averaged
at each step); ``meta["aggregate"]`` says how many videos and lists them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from hermes_policy.atomic import atomic_path, atomic_write_text
from hermes_policy.jsonfile import read_json

FORMAT = "hermes-lab/recording"
VERSION = 1
TENSORS_FILE = "recording.safetensors"
META_FILE = "recording.json"
LAYER_QUANTITIES = ("frame_mass", "position_mass", "entropy", "sink_mass", "periodicity", "rows")
_LAYER_NAME = re.compile(r"^blocks\.(\d+)\.attn\.(\w+)$")
#: suffix of an aggregate's spread-over-videos tensors: ``blocks.{L}.attn.entropy_std``
STD_SUFFIX = "_std"


class RecordingError(ValueError):
    """A recording that is missing, corrupt, or not of this format."""


def layer_name(layer: int, quantity: str) -> str:
    return f"blocks.{layer}.attn.{quantity}"


def parse_layer_name(name: str) -> tuple[int, str] | None:
    """``blocks.3.attn.entropy`` -> (3, "entropy"); None for step-level names such as ``steps.frames``."""
    m = _LAYER_NAME.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


@dataclass
class Recording:
    """Named tensors plus metadata.

    Attributes:
        tensors: name -> tensor (see module docstring for names and shapes).
        meta: JSON-serialisable description of what was recorded.
    """

    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    # -------------------------------------------------------------- indexing
    def __getitem__(self, key: str | tuple[str, int]) -> torch.Tensor:
        name = layer_name(key[1], key[0]) if isinstance(key, tuple) else key
        try:
            return self.tensors[name]
        except KeyError:
            raise KeyError(f"recording has no {name!r}; it has e.g. {sorted(self.tensors)[:6]}") from None

    def __contains__(self, key: str | tuple[str, int]) -> bool:
        name = layer_name(key[1], key[0]) if isinstance(key, tuple) else key
        return name in self.tensors

    def names(self, pattern: str = "") -> list[str]:
        """Tensor names containing ``pattern`` (a substring), sorted."""
        return sorted(n for n in self.tensors if pattern in n)

    def stack(self, quantity: str) -> torch.Tensor:
        """One quantity for every layer, stacked on a new leading axis: (L, ...)."""
        return torch.stack([self[quantity, layer] for layer in range(self.num_layers)])

    def layers(self) -> Iterator[int]:
        return iter(range(self.num_layers))

    @property
    def num_layers(self) -> int:
        return int(self.meta["num_layers"])

    @property
    def num_heads(self) -> int:
        return int(self.meta["num_heads"])

    @property
    def model_layers(self) -> list[int]:
        """The decoder layer each recorded layer is: ``0..L-1``, unless the model is hybrid (Qwen3.5), where
        only its attention layers were recorded."""
        kv = (self.meta.get("model_info") or {}).get("kv_layers")
        return [int(i) for i in kv] if kv else list(range(self.num_layers))

    @property
    def unattended_layers(self) -> list[int]:
        """A hybrid's decoder layers without attention (linear attention: a recurrent state, no KV cache)."""
        total = (self.meta.get("model_info") or {}).get("model_layers")
        if not total:
            return []
        kept = set(self.model_layers)
        return [i for i in range(int(total)) if i not in kept]

    @property
    def is_aggregate(self) -> bool:
        """Whether this is a mean over several videos' recordings (see :mod:`probes.aggregate`)."""
        return "aggregate" in self.meta

    @property
    def queries(self) -> list[str]:
        return list(self.meta["queries"])

    def query_index(self, query: str) -> int:
        try:
            return self.queries.index(query)
        except ValueError:
            raise KeyError(f"recording has no query kind {query!r}; it has {self.queries}") from None

    # --------------------------------------------------------------- on disk
    def save(self, directory: str | Path) -> Path:
        """Write ``directory/recording.{safetensors,json}`` atomically (a crash leaves the old one intact)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / TENSORS_FILE) as tmp:
            save_file({k: v.detach().contiguous().cpu() for k, v in self.tensors.items()}, tmp)
        meta = {"format": FORMAT, "version": VERSION, **self.meta}
        atomic_write_text(directory / META_FILE, json.dumps(meta, indent=2, default=_json_default))
        return directory

    @staticmethod
    def read_meta(directory: str | Path) -> dict[str, Any]:
        """The metadata of the recording in ``directory``, without reading its tensors.

        :meth:`save` writes the JSON last, so a directory whose JSON reads back holds a
        complete tensor file too (each file is replaced atomically).
        """
        directory = Path(directory)
        meta_path, tensor_path = directory / META_FILE, directory / TENSORS_FILE
        if not meta_path.is_file() or not tensor_path.is_file():
            raise RecordingError(f"{directory} is not a recording (needs {META_FILE} and {TENSORS_FILE})")
        meta = read_json(meta_path, RecordingError, "recording metadata")
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise RecordingError(f"{meta_path} is not a hermes-lab recording")
        if meta.get("version") != VERSION:
            raise RecordingError(f"{meta_path} has version {meta.get('version')!r}; this build reads {VERSION}")
        meta.pop("format"), meta.pop("version")
        return meta

    @classmethod
    def load(cls, directory: str | Path) -> Recording:
        meta = cls.read_meta(directory)
        tensor_path = Path(directory) / TENSORS_FILE
        try:
            tensors = load_file(tensor_path)
        except Exception as e:  # safetensors raises its own error types for truncated/corrupt files
            raise RecordingError(f"{tensor_path} is corrupt: {e}") from None
        rec = cls(tensors, meta)
        rec.validate()
        return rec

    def validate(self) -> None:
        """Check that every per-layer tensor is present with consistent shapes."""
        for key in ("num_layers", "num_heads", "queries", "tokens_per_frame"):
            if key not in self.meta:
                raise RecordingError(f"recording metadata lacks {key!r}")
        for key in ("num_layers", "num_heads", "tokens_per_frame"):
            value = self.meta[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "tokens_per_frame" else 1):
                raise RecordingError(f"recording metadata {key!r} must be a positive integer, got {value!r}")
        queries = self.meta["queries"]
        if not isinstance(queries, list) or not queries or not all(isinstance(x, str) for x in queries):
            raise RecordingError(f"recording metadata 'queries' must be a non-empty list of names, got {queries!r}")
        q, h = len(self.queries), self.num_heads
        for layer in range(self.num_layers):
            for quantity in ("frame_mass", "entropy"):
                if (quantity, layer) not in self:
                    raise RecordingError(f"recording lacks {layer_name(layer, quantity)}")
            fm = self["frame_mass", layer]
            if fm.ndim != 4 or fm.shape[1:3] != (q, h):
                raise RecordingError(f"{layer_name(layer, 'frame_mass')} has shape {tuple(fm.shape)}, "
                                     f"expected (T, {q}, {h}, F)")
        for name in self.tensors:
            parsed = parse_layer_name(name)
            if parsed and parsed[0] >= self.num_layers:
                raise RecordingError(f"{name} refers to a layer beyond num_layers={self.num_layers}")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot store {type(obj).__name__} in recording metadata")
