"""AttentionProbe: an observer on the runtime's attention seam that records as the stream runs.

It watches two kinds of forwards (selected by query kind):

* ``local`` / ``global`` / ``mixed``: the HERMES pseudo-queries, which the
  capture loop runs against the cache after every chunk (phase ``probe``,
  tagged with the query name); every row of the prompt is observed;
* ``newest-frame``: the ingest forward itself; only the rows of the newest
  frame's tokens are observed ("what the model looks at while watching");
* ``question``: real user questions at ask time (all question rows).

Each observation is reduced at once (:func:`probes.reducers.reduce_rows`),
so memory stays O(layers x heads x frames) per step.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from hermes_policy.attention import AttentionEvent
from hermes_policy.session import StreamingSession
from probes.recording import Recording, layer_name
from probes.reducers import LayerReduction, reduce_rows, split

PSEUDO_QUERIES = ("local", "global", "mixed")
QUERY_KINDS = (*PSEUDO_QUERIES, "newest-frame", "question")


class AttentionProbe:
    """Records per-layer, per-head attention summaries for the chosen query kinds.

    Args:
        queries: query kinds to record (the Q axis of the recording), from :data:`QUERY_KINDS`.
        num_layers: L, cache layers recorded.
        num_heads: H, query heads per layer.
        tokens_per_frame: tokens of a frame unit (per frame group for Qwen-VL), its text included.
        raw_steps: keep raw (mean-over-rows) attention rows for the first this-many steps.
        patches_per_frame: P, image patches of a frame unit (position mass has one column per patch);
            default ``tokens_per_frame``, for families whose frames carry no text.
    """

    def __init__(
        self, queries: Sequence[str], num_layers: int, num_heads: int, tokens_per_frame: int, raw_steps: int = 0,
        patches_per_frame: int | None = None,
    ) -> None:
        unknown = set(queries) - set(QUERY_KINDS)
        if unknown or not queries:
            raise ValueError(f"query kinds must be a non-empty subset of {QUERY_KINDS}, got {list(queries)}")
        self.queries = list(queries)
        self.num_layers, self.num_heads = num_layers, num_heads
        self.tokens_per_frame = tokens_per_frame
        self.patches_per_frame = patches_per_frame or tokens_per_frame
        self.raw_steps = raw_steps
        self.num_frames = 0
        self._steps: list[dict[tuple[int, int], LayerReduction]] = []
        self._step_frames: list[int] = []
        self._step_times: list[float] = []

    # --------------------------------------------------------------- stepping
    def begin_step(self, frames_seen: int, time: float) -> None:
        """Start a new step: observations until the next call belong to it."""
        self.num_frames = frames_seen
        self._steps.append({})
        self._step_frames.append(frames_seen)
        self._step_times.append(time)

    # ---------------------------------------------------------------- observe
    @property
    def phases(self) -> tuple[str, ...]:
        """The forward phases its query kinds live in: attach with ``session.observing(probe, phases=probe.phases)``."""
        wanted = {"probe"} if any(q in PSEUDO_QUERIES for q in self.queries) else set()
        wanted |= {"ask"} if "question" in self.queries else set()
        wanted |= {"ingest"} if "newest-frame" in self.queries else set()
        return tuple(sorted(wanted))

    def _wanted(self, event: AttentionEvent) -> list[tuple[str, slice | list[int] | None]]:
        """(query kind, rows) pairs this event holds for us."""
        if event.phase == "probe":
            if event.segments is None:
                return [(event.tag, None)] if event.tag in self.queries else []
            return [(s.tag, slice(s.start, s.stop)) for s in event.segments if s.tag in self.queries]
        if event.phase == "ask" and "question" in self.queries:
            return [("question", None)]
        if event.phase == "ingest" and "newest-frame" in self.queries:
            frames = event.meta.frame[-event.n_query :]
            return [("newest-frame", torch.nonzero(frames == frames[-1]).flatten().tolist())]
        return []

    def observe(self, event: AttentionEvent) -> None:
        if not self._steps:
            return
        wanted = self._wanted(event)
        if not wanted:
            return
        num_frames = max(self.num_frames, int(event.meta.frame.max()) + 1)
        if event.phase == "probe":
            # one softmax over every packed prompt, then a mean per segment
            everything = event.attention()
            means = [everything[:, rows].mean(dim=1) for _, rows in wanted]  # rows are slices: views
        else:
            means = [event.attention(rows).mean(dim=1) for _, rows in wanted]
        # reduced on the CPU, where the token metadata lives: layers may sit on different devices
        reduced = reduce_rows(torch.cat(means).cpu(), event.meta, num_frames, self.tokens_per_frame,
                              self.patches_per_frame)
        keep_raw = len(self._steps) <= self.raw_steps
        for (name, _), reduction in zip(wanted, split(reduced, len(wanted))):
            if not keep_raw:
                reduction.row = reduction.row[:, :0]  # raw rows only for the bounded window
            self._steps[-1][(self.queries.index(name), event.layer)] = reduction

    # ------------------------------------------------------------ to tensors
    def recording(self, meta: dict) -> Recording:
        """Stack what was observed into a :class:`Recording` (missing observations are NaN)."""
        steps = [s for s in self._steps if s]
        frames = [f for f, s in zip(self._step_frames, self._steps) if s]
        times = [t for t, s in zip(self._step_times, self._steps) if s]
        t, q, h, p = len(steps), len(self.queries), self.num_heads, self.patches_per_frame
        f = max([self.num_frames, *[r.frame_mass.shape[1] for s in steps for r in s.values()]], default=0)
        w = min(self.raw_steps, t)
        s_max = max([r.row.shape[1] for s in steps[:w] for r in s.values()], default=0)
        nan = float("nan")
        tensors: dict[str, torch.Tensor] = {
            "steps.frames": torch.tensor(frames, dtype=torch.int64),
            "steps.time": torch.tensor(times, dtype=torch.float32),
        }
        for layer in range(self.num_layers):
            out = {
                "frame_mass": torch.full((t, q, h, f), nan),
                "position_mass": torch.full((t, q, h, p), nan),
                "entropy": torch.full((t, q, h), nan),
                "sink_mass": torch.full((t, q, h), nan),
                "periodicity": torch.full((t, q, h), nan),
            }
            if w:
                out["rows"] = torch.full((w, q, h, s_max), nan)
            for i, step in enumerate(steps):
                for qi in range(q):
                    r = step.get((qi, layer))
                    if r is None:
                        continue
                    out["frame_mass"][i, qi, :, : r.frame_mass.shape[1]] = r.frame_mass
                    out["position_mass"][i, qi] = r.position_mass
                    out["entropy"][i, qi] = r.entropy
                    out["sink_mass"][i, qi] = r.sink_mass
                    out["periodicity"][i, qi] = r.periodicity
                    if i < w:
                        out["rows"][i, qi, :, : r.row.shape[1]] = r.row
            tensors.update({layer_name(layer, k): v for k, v in out.items()})
        full_meta = {
            **meta,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "queries": self.queries,
            "tokens_per_frame": self.tokens_per_frame,
            **({"patches_per_frame": self.patches_per_frame} if self.patches_per_frame != self.tokens_per_frame
               else {}),
            "steps": t,
            "frames": f,
        }
        return Recording(tensors, full_meta)


@contextmanager
def attached(session: StreamingSession, *observers) -> Iterator[None]:
    """Attach observers to a session for the duration of the block (``session.observing``, kept for callers)."""
    with session.observing(*observers):
        yield
