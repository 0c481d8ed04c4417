"""``hermes-lab bench``: TTFT, ingest speed and memory per policy and stream length, in one run.

Every (policy, frames) cell streams the same frames into the same loaded model,
then asks the same few questions at the end of the stream. Measured per cell:

* ``ttft_ms``: median over the questions of question arrival -> first token;
* ``ingest_ms_per_frame``: wall time of the ingest loop (policy work included) / frames;
* ``kv_bytes``: the largest key/value storage the cache held at any chunk boundary or question;
* ``peak_rss_bytes``: the process's peak resident set during the cell, sampled every 5 ms
  from ``/proc/self/statm`` (the model's weights are part of it).

Ratios between cells are what to read: absolute numbers move with the machine's load.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from hermes_policy.errors import BudgetError, PolicyError
from hermes_policy.models.base import ModelAdapter
from hermes_policy.policies import POLICIES, PolicySpec, policy_from_args
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import open_video
from hermes_policy.video.spec import parse_synthetic_spec

QUESTIONS = (
    "What is happening right now?",
    "What colour was the first shape that appeared?",
    "How many shapes have appeared so far?",
)


@dataclass
class BenchRow:
    policy: str
    frames: int
    budget: int | None
    ttft_ms: float
    ingest_ms_per_frame: float
    kv_bytes: int
    peak_rss_bytes: int


class RssSampler:
    """Peak resident set size of this process while the block runs (Linux /proc)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE")

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * self._page

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def __enter__(self) -> "RssSampler":
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def video_for(video: str, frames: int):
    """The first ``frames`` frames of ``video``; a synthetic spec is re-made at that length."""
    if video.startswith("synthetic:"):
        spec = parse_synthetic_spec(video)
        return open_video(
            f"synthetic:seed={spec['seed']},frames={frames},fps={spec['fps']},size={spec['width']}x{spec['height']}"
        )
    return open_video(video, max_frames=frames)


def policy_for(name: str, budget: int | None, spec: Path | None):
    """The spec configures the policy it names; the others are built from ``name`` and ``budget``."""
    if spec is not None and PolicySpec.load(spec).policy == name:
        return policy_from_args(name, budget, spec)
    takes_budget = name in POLICIES and POLICIES[name].requires_budget
    if takes_budget and budget is None:
        raise BudgetError(f"bench: policy {name!r} needs --budget")
    return policy_from_args(name, budget if takes_budget else None)


def run_cell(
    adapter: ModelAdapter, video: str, frames: int, policy_name: str, budget: int | None, spec: Path | None,
    chunk_frames: int, questions: tuple[str, ...] = QUESTIONS, progress: bool = True,
) -> BenchRow:
    policy = policy_for(policy_name, budget, spec)
    source = video_for(video, frames)
    gc.collect()
    with RssSampler() as rss:
        session = StreamingSession(adapter, policy, SessionConfig(chunk_frames=chunk_frames, max_new_tokens=1))
        kv_peak = 0
        bar = tqdm(total=frames, desc=f"{policy_name}@{frames}", unit="frame", file=sys.stderr,
                   disable=not progress, leave=False)
        start = time.perf_counter()
        with bar:
            for frame in source.frames():
                session.ingest([frame])
                bar.update(1)
                kv_peak = max(kv_peak, session.kv_bytes)
        session.flush()
        ingest = (time.perf_counter() - start) / max(session.frames_seen, 1) * 1000
        ttfts = []
        for q in questions:
            answer = session.ask(q, max_new_tokens=1)
            ttfts.append(answer.ttft_ms)
            kv_peak = max(kv_peak, answer.kv_bytes, session.kv_bytes)
    del session
    return BenchRow(
        policy=policy_name,
        frames=frames,
        budget=getattr(policy, "budget", None),
        ttft_ms=round(statistics.median(ttfts), 3),
        ingest_ms_per_frame=round(ingest, 3),
        kv_bytes=kv_peak,
        peak_rss_bytes=rss.peak,
    )


def format_table(rows: list[BenchRow]) -> str:
    head = f"{'policy':<12} {'frames':>6} {'budget':>7} {'TTFT ms':>9} {'ingest ms/f':>11} {'KV MiB':>8} {'RSS MiB':>8}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r.policy:<12} {r.frames:>6} {str(r.budget or '-'):>7} {r.ttft_ms:>9.1f} {r.ingest_ms_per_frame:>11.2f} "
            f"{r.kv_bytes / 2**20:>8.2f} {r.peak_rss_bytes / 2**20:>8.0f}"
        )
    return "\n".join(lines)


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PolicyError(f"--{what} takes comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise PolicyError(f"--{what} takes positive integers, got {text!r}")
    return values


def rows_json(rows: list[BenchRow]) -> str:
    return json.dumps([asdict(r) for r in rows])
