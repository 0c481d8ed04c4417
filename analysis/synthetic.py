"""Recordings with known answers, for tests and for demos without a model.

:func:`synthetic_recording` writes the same tensors a probe would, from a
per-layer (optionally per-head) :class:`Pattern`: frame mass shaped like
``exp(-k·d)`` times an optional rise with frame index, in-frame position mass
with a chosen share on position 0 (an "anchor"), and a chosen periodicity.
Entropy is computed exactly from the planted token distribution (frame mass ×
position mass), so normalised entropy is 1 for uniform attention.

:func:`hermes_like_recording` plants HERMES's picture: strong recency in the
shallowest quarter, anchors and no recency in the deepest three eighths.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from probes.recording import Recording, layer_name


@dataclass(frozen=True)
class Pattern:
    """What one head attends to.

    Attributes:
        recency_k: mass over frames ∝ exp(-recency_k·d), d = normalised age.
        rise: extra factor (1 + rise·f/(n-1)) on frame f: a content-free rise with index.
        anchor: share of the within-frame mass on position 0 (the rest spread evenly).
        periodicity: the value recorded as ``periodicity``.
        sink: the value recorded as ``sink_mass``.
    """

    recency_k: float = 0.0
    rise: float = 0.0
    anchor: float = 0.0
    periodicity: float = 0.0
    sink: float = 0.1


def frame_distribution(p: Pattern, n: int, num_frames: int) -> torch.Tensor:
    """(F,) mass over the first n frames (sums to 1), NaN for frames >= n."""
    out = torch.full((num_frames,), math.nan, dtype=torch.float64)
    f = torch.arange(n, dtype=torch.float64)
    d = (n - 1 - f) / max(n - 1, 1)
    w = torch.exp(-p.recency_k * d) * (1 + p.rise * f / max(n - 1, 1))
    out[:n] = w / w.sum()
    return out


def position_distribution(p: Pattern, positions: int) -> torch.Tensor:
    """(P,) in-frame mass: ``anchor`` on position 0 plus the rest spread evenly over all positions."""
    return torch.full((positions,), (1 - p.anchor) / positions, dtype=torch.float64) + \
        torch.nn.functional.one_hot(torch.tensor(0), positions).to(torch.float64) * p.anchor


def _entropy(x: torch.Tensor) -> float:
    x = x[x > 0]
    return float(-(x * x.log()).sum())


def synthetic_recording(
    layers: Sequence[Pattern],
    heads: int = 4,
    queries: Sequence[str] = ("local", "global", "mixed"),
    frames: int = 20,
    chunk: int = 2,
    positions: int = 16,
    head_patterns: Mapping[tuple[int, int], Pattern] | None = None,
    noise: float = 0.0,
    seed: int = 0,
    family: str = "QwenVLAdapter",
) -> Recording:
    """A recording streamed ``chunk`` frames per step up to ``frames`` frames.

    Args:
        layers: one pattern per layer (every head and query kind uses it)...
        head_patterns: ...except (layer, head) -> pattern overrides.
        noise: multiplicative log-normal noise (sigma) on frame mass, renormalised.
        seed: seed for the noise.
        family: ``model_info["family"]`` to record.
    """
    gen = torch.Generator().manual_seed(seed)
    L, H, Q, F, P = len(layers), heads, len(queries), frames, positions
    steps = torch.arange(chunk, F + 1, chunk)
    if int(steps[-1]) != F:
        steps = torch.cat([steps, torch.tensor([F])])
    T = len(steps)
    tensors: dict[str, torch.Tensor] = {"steps.frames": steps.clone(), "steps.time": steps.to(torch.float32) / 2.0,
                                        "frames.time": torch.arange(F, dtype=torch.float32) / 2.0}
    overrides = dict(head_patterns or {})
    for layer in range(L):
        fm = torch.empty(T, Q, H, F, dtype=torch.float64)
        pm = torch.empty(T, Q, H, P, dtype=torch.float64)
        ent, per, sink = (torch.empty(T, Q, H, dtype=torch.float64) for _ in range(3))
        for h in range(H):
            p = overrides.get((layer, h), layers[layer])
            pos = position_distribution(p, P)
            for t, n in enumerate(steps.tolist()):
                for q in range(Q):
                    dist = frame_distribution(p, n, F)
                    if noise > 0:
                        dist[:n] *= torch.exp(noise * torch.randn(n, generator=gen, dtype=torch.float64))
                        dist[:n] /= dist[:n].sum()
                    fm[t, q, h] = dist
                    pm[t, q, h] = pos
                    ent[t, q, h] = _entropy(dist[:n]) + _entropy(pos)
                    per[t, q, h] = p.periodicity
                    sink[t, q, h] = p.sink
        for name, x in (("frame_mass", fm), ("position_mass", pm), ("entropy", ent), ("periodicity", per),
                        ("sink_mass", sink)):
            tensors[layer_name(layer, name)] = x.to(torch.float32)
    meta = {
        "num_layers": L, "num_heads": H, "queries": list(queries), "tokens_per_frame": P,
        "model": "synthetic", "model_info": {"family": family, "layers": L, "heads": H},
        "video": f"synthetic:frames={F}", "fps": 2.0, "chunk_frames": chunk,
    }
    rec = Recording(tensors, meta)
    rec.validate()
    return rec


SENSORY = Pattern(recency_k=8.0, anchor=0.0, periodicity=0.1)
WORKING = Pattern(recency_k=2.0, anchor=0.3, periodicity=0.5)
LONG_TERM = Pattern(recency_k=0.0, anchor=0.7, periodicity=0.9)


def hermes_like_recording(num_layers: int = 8, **kwargs) -> Recording:
    """Layers [0, L/4) sensory, [L/4, 5L/8) working, [5L/8, L) long-term (L = 8: 0-1, 2-4, 5-7)."""
    a, b = num_layers // 4, (5 * num_layers) // 8
    patterns = [SENSORY if i < a else WORKING if i < b else LONG_TERM for i in range(num_layers)]
    return synthetic_recording(patterns, **kwargs)
