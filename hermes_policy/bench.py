"""``hermes-lab bench``: TTFT, ingest speed and memory per policy and stream length, in one run.

Every (policy, frames) cell streams the same frames into the same loaded model,
then asks the same few questions at the end of the stream. Measured per cell:

* ``ttft_ms``: median over the questions (each asked ``ttft_repeats`` times) of question arrival -> first token;
* ``ingest_ms_per_frame``: wall time of the ingest loop (policy work included) / frames;
* ``ingest_full_ms_per_frame``: the same, over only the frames after the cache first held more video
  tokens than the budget (the steady state in which a policy prunes after every chunk; None without a budget
  or when the stream never fills it);
* ``vision_ms_per_frame`` / ``lm_ms_per_frame`` / ``policy_ms_per_frame``: the ingest time split into the
  vision tower (frames to embeddings), the language model's prefill of each chunk, and the policy's
  pruning (pseudo-queries included) and re-indexing;
* ``kv_bytes``: the largest key/value storage the cache held at any chunk boundary or question;
* ``peak_rss_bytes``: the process's peak resident set during the cell, sampled every 5 ms
  from ``/proc/self/statm`` (the model's weights are part of it);
* ``peak_gpu_bytes``: with CUDA, the most memory torch allocated on the GPUs during the cell (weights included).

Ratios between cells are what to read: absolute numbers move with the machine's load.
Each process warms up (:func:`warm_up`) before its first cell, so that cell order does not bias them.

Under ``torchrun`` / ``accelerate launch`` with ``--distributed``, :func:`bench_distributed`
splits the cells over the ranks (balanced by stream length) and rank 0 reports the rows
in the order one process would.
"""

from __future__ import annotations

import gc
import itertools
import json
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from hermes_policy.distributed import DistributedError, LaunchEnv, Progress, shard
from hermes_policy.errors import BudgetError, HermesError, PolicyError
from hermes_policy.inputs import check_frame_count
from hermes_policy.models.base import ModelAdapter
from hermes_policy.models.configured import RANDOM_WEIGHTS_NOTE
from hermes_policy.outputs import output_folder
from hermes_policy.policies import POLICIES, PolicySpec, policy_from_args
from hermes_policy.session import SessionConfig, StreamingSession
from hermes_policy.video import open_video
from hermes_policy.video.spec import parse_synthetic_spec

QUESTIONS = (
    "What is happening right now?",
    "What colour was the first shape that appeared?",
    "How many shapes have appeared so far?",
)


class BenchError(HermesError):
    """A bench run that cannot start as asked, or cells that failed on some rank."""


@dataclass(frozen=True)
class Cell:
    """One (policy, stream length) measurement; ``index`` is its row's place in the table."""

    index: int
    policy: str
    frames: int


def plan_cells(names: list[str], lengths: list[int]) -> list[Cell]:
    """The cells in table order: each length in turn, every policy at that length."""
    pairs = [(name, n) for n in lengths for name in names]
    return [Cell(i, name, n) for i, (name, n) in enumerate(pairs)]


@dataclass
class BenchRow:
    policy: str
    frames: int
    budget: int | None
    ttft_ms: float
    ingest_ms_per_frame: float
    kv_bytes: int
    peak_rss_bytes: int
    #: ``kv_bytes`` per device at that peak (layers of a device-mapped model live on different devices)
    kv_bytes_by_device: dict[str, int] = field(default_factory=dict)
    #: video tokens one frame (group) adds, through the model's own processor
    tokens_per_frame: int | None = None
    #: ``random`` for a ``config:`` model: its answers are noise, only time and memory are real
    weights: str = "trained"
    #: ingest ms/frame once the cache first exceeded the budget (None: no budget, or never exceeded)
    ingest_full_ms_per_frame: float | None = None
    vision_ms_per_frame: float | None = None
    lm_ms_per_frame: float | None = None
    policy_ms_per_frame: float | None = None
    #: WIDTHxHEIGHT of the frames given to the model's processor
    frame_size: str = ""
    #: peak memory torch allocated on the GPUs during the cell, all of them together (None without CUDA)
    peak_gpu_bytes: int | None = None


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

    def __enter__(self) -> RssSampler:
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())


def video_for(video: str, frames: int, size: tuple[int, int] | None = None):
    """The first ``frames`` frames of ``video`` (scaled to ``size``); a synthetic spec is re-made at that length."""
    if video.startswith("synthetic:"):
        spec = parse_synthetic_spec(video)
        return open_video(
            f"synthetic:seed={spec['seed']},frames={frames},fps={spec['fps']},size={spec['width']}x{spec['height']}",
            size=size,
        )
    return open_video(video, max_frames=frames, size=size)


def policy_for(name: str, budget: int | None, spec: Path | None, granularity: str | None = None):
    """The spec configures the policy it names; the others are built from ``name`` and ``budget``;
    ``granularity`` (``--granularity``) sets every policy's cache layout."""
    if spec is not None and PolicySpec.load(spec).policy == name:
        return policy_from_args(name, budget, spec, granularity)
    takes_budget = name in POLICIES and POLICIES[name].requires_budget
    if takes_budget and budget is None:
        raise BudgetError(f"bench: policy {name!r} needs --budget")
    return policy_from_args(name, budget if takes_budget else None, granularity=granularity)


def run_cell(
    adapter: ModelAdapter, video: str, frames: int, policy_name: str, budget: int | None, spec: Path | None,
    chunk_frames: int, questions: tuple[str, ...] = QUESTIONS, progress: bool = True,
    size: tuple[int, int] | None = None, ttft_repeats: int = 3, granularity: str | None = None,
) -> BenchRow:
    policy = policy_for(policy_name, budget, spec, granularity)
    source = video_for(video, frames, size)
    gc.collect()
    gpus = range(torch.cuda.device_count()) if torch.cuda.is_available() else range(0)
    for index in gpus:
        torch.cuda.reset_peak_memory_stats(index)
    with RssSampler() as rss:
        session = StreamingSession(adapter, policy,
                                   SessionConfig(chunk_frames=chunk_frames, max_new_tokens=1, timed=True))
        limit = getattr(policy, "budget", None)
        full_at: tuple[int, float] | None = None  # (frames seen, time) when the cache first exceeded the budget
        kv_peak, by_device = 0, {}

        def sample(cache) -> None:
            nonlocal kv_peak, by_device
            if cache.kv_bytes > kv_peak:
                kv_peak, by_device = cache.kv_bytes, cache.kv_bytes_by_device

        bar = tqdm(total=frames, desc=f"{policy_name}@{frames}", unit="frame", file=sys.stderr,
                   disable=not progress, leave=False)
        start = time.perf_counter()
        size_seen = "-"
        with bar:
            for frame in source.frames():
                size_seen = f"{frame.image.shape[1]}x{frame.image.shape[0]}"
                session.ingest([frame])
                bar.update(1)
                sample(session.cache)
                if full_at is None and limit is not None and session.video_tokens_seen > limit:
                    full_at = (session.frames_seen, time.perf_counter())
        session.flush()
        end = time.perf_counter()
        seen = max(session.frames_seen, 1)
        ingest = (end - start) / seen * 1000
        ingest_full = None
        if full_at is not None and session.frames_seen > full_at[0]:
            ingest_full = round((end - full_at[1]) / (session.frames_seen - full_at[0]) * 1000, 3)
        stages = {k: round(v / seen * 1000, 3) for k, v in session.stage_seconds.items()}
        ttfts = []
        for _ in range(ttft_repeats):
            for q in questions:
                answer = session.ask(q, max_new_tokens=1)
                ttfts.append(answer.ttft_ms)
                sample(session.cache)  # what the question arrived to (its own rows were rolled back)
    tokens_per_frame, session_frames = session.tokens_per_frame, session.frames_seen
    del session
    if session_frames < frames:
        print(f"note: {video} has {session_frames} frames; the {frames}-frame cell measured those", file=sys.stderr)
    default = type(policy).__dataclass_fields__["granularity"].default
    return BenchRow(
        policy=policy_name if policy.granularity == default else f"{policy_name}[{policy.granularity}]",
        frames=session_frames,  # what was streamed: a short video gives fewer frames than asked for
        budget=getattr(policy, "budget", None),
        ttft_ms=round(statistics.median(ttfts), 3),
        ingest_ms_per_frame=round(ingest, 3),
        kv_bytes=kv_peak,
        peak_rss_bytes=rss.peak,
        peak_gpu_bytes=sum(torch.cuda.max_memory_allocated(index) for index in gpus) if gpus else None,
        kv_bytes_by_device=by_device,
        tokens_per_frame=tokens_per_frame,
        weights=adapter.weights,
        ingest_full_ms_per_frame=ingest_full,
        vision_ms_per_frame=stages["vision"],
        lm_ms_per_frame=stages["lm"],
        policy_ms_per_frame=stages["policy"],
        frame_size=size_seen,
    )


def format_table(rows: list[BenchRow]) -> str:
    head = (f"{'policy':<12} {'frames':>6} {'size':>9} {'budget':>7} {'tok/frame':>9} {'TTFT ms':>9} "
            f"{'ingest ms/f':>11} {'full ms/f':>9} {'vision/LM/policy ms/f':>22} {'KV MiB':>8} {'RSS MiB':>8}")
    lines = [head, "-" * len(head)]
    for r in rows:
        full = "-" if r.ingest_full_ms_per_frame is None else f"{r.ingest_full_ms_per_frame:.2f}"
        split = "-" if r.vision_ms_per_frame is None else (
            f"{r.vision_ms_per_frame:.1f}/{r.lm_ms_per_frame:.1f}/{r.policy_ms_per_frame:.1f}")
        lines.append(
            f"{r.policy:<12} {r.frames:>6} {r.frame_size or '-':>9} {str(r.budget or '-'):>7} "
            f"{str(r.tokens_per_frame or '-'):>9} {r.ttft_ms:>9.1f} {r.ingest_ms_per_frame:>11.2f} {full:>9} "
            f"{split:>22} {r.kv_bytes / 2**20:>8.2f} {r.peak_rss_bytes / 2**20:>8.0f}"
        )
    if any(r.weights == "random" for r in rows):
        lines.append(RANDOM_WEIGHTS_NOTE)
    return "\n".join(lines)


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise PolicyError(f"--{what} takes comma-separated integers, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise PolicyError(f"--{what} takes positive integers, got {text!r}")
    for v in values:
        check_frame_count(v, PolicyError, f"--{what}")
    return values


def rows_json(rows: list[BenchRow]) -> str:
    return json.dumps([asdict(r) for r in rows])


def write_rows(out: Path, rows: list[BenchRow], model: str) -> None:
    """``out/rows.parquet`` and ``out/rows.json``: every row with the model it measured (atomic writes)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [{"model": model, **asdict(r)} for r in rows]
    for record in records:
        # parquet needs one type per column: the per-device bytes go as JSON text
        record["kv_bytes_by_device"] = json.dumps(record["kv_bytes_by_device"])
    with output_folder(out, BenchError, "bench") as staging:  # both files, or neither (and never a stale third)
        pq.write_table(pa.Table.from_pylist(records), staging / "rows.parquet")
        (staging / "rows.json").write_text(json.dumps([{"model": model, **asdict(r)} for r in rows], indent=2) + "\n",
                                           encoding="utf-8")


def check_arguments(names: list[str], budget: int | None, spec: Path | None, video: str, lengths: list[int],
                    size: tuple[int, int] | None = None, granularity: str | None = None) -> None:
    """Open the video and build every policy once, so a bad video, name, budget or spec fails before the (slow)
    model load, on one rank, instead of once per cell on every rank."""
    video_for(video, max(lengths), size)
    if not names:
        raise PolicyError("--policies names no policy")
    for name in names:
        if name not in POLICIES:
            raise PolicyError(f"unknown policy {name!r}; available: {', '.join(sorted(POLICIES))}")
        policy_for(name, cell_budget(name, budget), spec, granularity)


def cell_budget(name: str, budget: int | None) -> int | None:
    """``full`` keeps everything, so it is never given a budget."""
    return None if name == "full" else budget


def warm_up(adapter: ModelAdapter, video: str, chunk_frames: int, size: tuple[int, int] | None = None) -> None:
    """Stream two chunks and ask once, untimed, before the first cell.

    The first forwards of a process pay for lazy initialisation (kernels, thread pools, allocator
    growth); measured without this, whichever cell ran first came out up to 1.4x slower in TTFT.
    """
    session = StreamingSession(adapter, None, SessionConfig(chunk_frames=chunk_frames, max_new_tokens=1))
    frames = list(itertools.islice(video_for(video, 2 * chunk_frames, size).frames(), 2 * chunk_frames))
    session.ingest(frames)
    session.ask(QUESTIONS[0], max_new_tokens=1)


def measure(adapter: ModelAdapter, cell: Cell, video: str, budget: int | None, spec: Path | None,
            chunk_frames: int, progress: bool = True, size: tuple[int, int] | None = None,
            ttft_repeats: int = 3, granularity: str | None = None) -> BenchRow:
    """One cell, measured the same way in one process and on any rank."""
    return run_cell(adapter, video, cell.frames, cell.policy, cell_budget(cell.policy, budget), spec, chunk_frames,
                    progress=progress, size=size, ttft_repeats=ttft_repeats, granularity=granularity)


def merge_shares(cells: list[Cell], shares: list[dict]) -> list[BenchRow]:
    """The table one process would print, from every rank's ``{"rows": [[index, row], ...], "failures": [...]}``.

    Raises:
        BenchError: some cells failed (named, with their error) or no rank reported them.
    """
    failures = [f for s in shares for f in s["failures"]]
    if failures:
        named = "; ".join(f"{f['policy']}@{f['frames']} ({f['error']})" for f in failures)
        raise BenchError(f"{len(failures)} cell(s) failed: {named}")
    rows = {index: BenchRow(**row) for s in shares for index, row in s["rows"]}
    missing = [c for c in cells if c.index not in rows]
    if missing:
        raise BenchError(f"{len(missing)} cell(s) came back from no rank (first: {missing[0].policy}@"
                         f"{missing[0].frames})")
    return [rows[c.index] for c in cells]


def bench_distributed(env: LaunchEnv, cells: list[Cell], run: Callable[[Cell], BenchRow], timeout: float,
                      show_progress: bool) -> list[BenchRow] | None:
    """Measure this rank's share of ``cells``; rank 0 returns every rank's rows in table order, the others None.

    Rows travel through the process group's key-value store, the same store :class:`Progress` counts in:
    a few hundred bytes per rank, so it needs no shared folder across nodes (bench has no output folder, and
    a node's /tmp is its own), works the same under NCCL and gloo (``gather_object`` would need a gloo
    side group under NCCL), and keeps the one rule of :mod:`hermes_policy.distributed`: no rank waits in
    a collective for a slower one; rank 0 polls the counters and gives up after ``timeout`` s without progress.

    Raises:
        BenchError: (rank 0) some cells failed on their rank (named, with the error).
        DistributedError: (rank 0) a rank measured no cell for ``timeout`` seconds.
    """
    # a fresh namespace per restart of an elastic launch, whose store outlives the restarted workers
    progress = Progress(f"hermes-lab/bench/{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}/")
    share: dict[str, list] = {"rows": [], "failures": []}
    for cell in shard(cells, lambda c: c.frames, env.world_size)[env.rank]:
        try:
            share["rows"].append([cell.index, asdict(run(cell))])
        except Exception as e:  # noqa: BLE001  (one failing cell, e.g. out of memory, is named by rank 0)
            share["failures"].append({"policy": cell.policy, "frames": cell.frames,
                                      "error": f"{type(e).__name__}: {e}"})
        progress.unit_done()
    progress.store.set(f"share{env.rank}", json.dumps(share))  # before rank_done: rank 0 reads it after
    progress.rank_done()
    if not env.is_main:
        return None
    bar = tqdm(total=len(cells), unit="cell", file=sys.stderr, desc=f"benchmarking on {env.world_size} ranks",
               disable=not show_progress, leave=False)

    def tick(finished: int) -> None:
        bar.n = finished
        bar.refresh()

    with bar:
        try:
            progress.wait_for_ranks(env.world_size, timeout, on_tick=tick)
        except DistributedError:
            raise DistributedError(f"{env.world_size - progress.ranks()} rank(s) measured no cell for {timeout:g} s;"
                                   " giving up (raise --dist-timeout for long cells)") from None
    shares = [json.loads(progress.store.get(f"share{r}")) for r in range(env.world_size)]
    return merge_shares(cells, shares)
