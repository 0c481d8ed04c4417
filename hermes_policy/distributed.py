"""Data parallelism on torch.distributed, as ``torchrun`` and ``accelerate launch`` start it.

A launcher sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE`` (and the
rendezvous address) in every process; :func:`launch_env` reads them, and :func:`initialise`
joins the process group: NCCL when CUDA is present, gloo on CPU. Nothing here starts
processes or opens sockets of its own.

Work is split by :func:`shard`: deterministic, balanced by a weight per unit (a video's
frames), so any rank computes every rank's share without talking to the others. Ranks
report progress and completion through counters in the process group's own key-value
store (:class:`Progress`), which needs no collective: a rank that finishes early never
blocks in a barrier waiting for a slow one, and rank 0 gives up on a rank that makes no
progress for ``timeout`` seconds instead of hanging.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable, Collection, Hashable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from hermes_policy.atomic import atomic_write_json
from hermes_policy.errors import HermesError
from hermes_policy.jsonfile import read_json

if TYPE_CHECKING:
    from hermes_policy.models.placement import Placement

T = TypeVar("T", bound=Hashable)
U = TypeVar("U", bound=tuple)


class DistributedError(HermesError):
    """A distributed run that cannot start or finish as asked."""


class FailureLog(Protocol):
    """An output folder that says where rank R records the units that raised on it."""

    def failures_path(self, rank: int) -> Path: ...


@dataclass(frozen=True)
class LaunchEnv:
    """Where this process sits in a launch (``WORLD_SIZE`` 1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise DistributedError(f"RANK {self.rank} is not within WORLD_SIZE {self.world_size}")
        if self.local_world_size < 1 or not 0 <= self.local_rank < self.local_world_size:
            raise DistributedError(f"LOCAL_RANK {self.local_rank} is not within LOCAL_WORLD_SIZE "
                                   f"{self.local_world_size}")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launch_env(environ: dict[str, str] | None = None) -> LaunchEnv:
    """The launch this process belongs to, from the variables torchrun and accelerate set."""
    env = os.environ if environ is None else environ

    def number(name: str, default: int) -> int:
        text = env.get(name)
        if text is None or text == "":
            return default
        try:
            return int(text)
        except ValueError:
            raise DistributedError(f"{name}={text!r} is not a whole number") from None

    world = number("WORLD_SIZE", 1)
    local_world = number("LOCAL_WORLD_SIZE", world)
    return LaunchEnv(number("RANK", 0), world, number("LOCAL_RANK", 0), local_world)


def launch_for(timeout: float, placement: Placement | None, gpus_per_rank: int | None,
               error: type[HermesError]) -> LaunchEnv:
    """This process's launch, after the checks every distributed command makes before loading anything.

    Args:
        timeout: ``--dist-timeout``, which must be positive.
        placement: the model's placement, if every rank loads one; a device map under a launch needs
            ``gpus_per_rank``.
        gpus_per_rank: ``--gpus-per-rank`` (None: one device per rank).
        error: the command's own error class, so the message reads as that command's.
    """
    if not timeout > 0:
        raise error(f"--dist-timeout must be a positive number of seconds, got {timeout}")
    if gpus_per_rank is not None and (isinstance(gpus_per_rank, bool) or gpus_per_rank < 1):
        raise error(f"--gpus-per-rank must be a positive number of GPUs, got {gpus_per_rank}")
    env = launch_env()
    if gpus_per_rank is not None and not env.distributed:
        raise error(f"--gpus-per-rank {gpus_per_rank} splits a node's GPUs among the ranks of a torchrun / "
                    "accelerate launch, and this is no launch (WORLD_SIZE 1); without a launcher, --device-map "
                    "auto spreads one model over every GPU")
    if placement is not None and placement.mapped and env.distributed:
        if gpus_per_rank is None:
            raise error("--device-map under a distributed launch needs --gpus-per-rank G: each rank then spreads "
                        "its model over its own G GPUs (ranks x G must not exceed the GPUs of a node)")
        if not isinstance(placement.device_map, str):
            raise error("a --device-map FILE names fixed devices, which every rank would share; under a launch "
                        "use a strategy (auto, balanced, sequential) with --gpus-per-rank")
    return env


def gpu_group(env: LaunchEnv, gpus_per_rank: int, visible: int) -> list[int]:
    """The GPUs of this rank: ``G`` consecutive ones from ``LOCAL_RANK x G`` (8 GPUs = 4 ranks x 2)."""
    first = env.local_rank * gpus_per_rank
    if first + gpus_per_rank > visible:
        raise DistributedError(
            f"local rank {env.local_rank} needs GPUs {first}..{first + gpus_per_rank - 1} but {visible} are visible; "
            f"start at most {visible // gpus_per_rank} rank(s) per node with --gpus-per-rank {gpus_per_rank}")
    return list(range(first, first + gpus_per_rank))


def place_rank(env: LaunchEnv, placement: Placement, requested: str, gpus_per_rank: int | None) -> Placement:
    """This rank's placement: its own device, or (a device map under a launch) a map over its own GPUs only."""
    import torch

    if env.distributed and placement.mapped:
        if not torch.cuda.is_available():
            raise DistributedError("--device-map with --gpus-per-rank under a launch needs CUDA GPUs; none is visible")
        return placement.restricted_to(gpu_group(env, gpus_per_rank or 1, torch.cuda.device_count()))
    placement.device = device_for(env, requested, gpus_per_rank or 1)
    return placement


def device_for(env: LaunchEnv, requested: str, gpus_per_rank: int = 1) -> str:
    """The device this rank streams on: its first GPU (``cuda:{LOCAL_RANK x G}``) when CUDA is present and
    asked for, else CPU.

    ``requested`` is the user's ``--device``; under a launch, ``cuda`` (or ``auto``) means this rank's own GPU.
    """
    import torch

    from hermes_policy.models.placement import resolve_device

    if not env.distributed:
        return resolve_device(requested)
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{gpu_group(env, gpus_per_rank, torch.cuda.device_count())[0]}"
    if requested.startswith("cuda") and requested not in ("cuda",):
        raise DistributedError(f"--device {requested} names one GPU; under a launch each rank takes "
                               "cuda:LOCAL_RANK, so pass --device cuda")
    return "cpu" if requested in ("auto", "cuda") else requested


def share_threads(env: LaunchEnv) -> int:
    """Give this rank its share of the CPU cores (cores / local ranks); returns the thread count."""
    import torch

    threads = max(1, (os.cpu_count() or 1) // env.local_world_size)
    if env.distributed:
        torch.set_num_threads(threads)
    return threads


def initialise(env: LaunchEnv, timeout: float, gpus_per_rank: int | None = None) -> None:
    """Join the launch's process group (NCCL with CUDA, else gloo); ``timeout`` bounds every collective."""
    import torch
    import torch.distributed as dist

    if not env.distributed or dist.is_initialized():
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(env.local_rank * (gpus_per_rank or 1))  # the rank's first GPU
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout))


def barrier() -> None:
    """Wait for every rank (bounded by the group's timeout); only for short, even waits such as start-up."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def finalise() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(units: Sequence[T], weight: Callable[[T], float], world_size: int) -> list[list[T]]:
    """Split ``units`` over ``world_size`` ranks, balanced by ``weight``; the same answer on every rank.

    Heaviest first, each to the rank with the least weight so far (ties: the lower rank);
    each rank's share keeps the units' original order.
    """
    order = sorted(range(len(units)), key=lambda i: (-weight(units[i]), i))
    loads = [0.0] * world_size
    owner = [0] * len(units)
    for i in order:
        r = min(range(world_size), key=lambda k: (loads[k], k))
        owner[i] = r
        loads[r] += weight(units[i])
    return [[u for i, u in enumerate(units) if owner[i] == r] for r in range(world_size)]


class Progress:
    """Counters in the process group's key-value store: units finished, ranks finished.

    Every rank adds to them without waiting for anyone; rank 0 reads them to drive one
    progress bar over all ranks and to know when every rank is done.
    """

    def __init__(self, namespace: str) -> None:
        import torch.distributed as dist
        from torch.distributed import distributed_c10d

        # the store torchrun's rendezvous created; prefixed so reruns and other commands never collide
        self.store = dist.PrefixStore(namespace, distributed_c10d._get_default_store())

    def unit_done(self) -> None:
        self.store.add("units", 1)

    def rank_done(self) -> None:
        self.store.add("ranks", 1)

    def units(self) -> int:
        return int(self.store.add("units", 0))

    def ranks(self) -> int:
        return int(self.store.add("ranks", 0))

    def wait_for_ranks(self, world_size: int, timeout: float, on_tick: Callable[[int], None] | None = None,
                       poll: float = 0.5) -> None:
        """Return once every rank has called :meth:`rank_done`.

        Raises:
            DistributedError: no unit finished and no rank came in for ``timeout`` seconds.
        """
        last_units, last_change = self.units(), time.monotonic()
        while self.ranks() < world_size:
            units = self.units()
            if on_tick is not None:
                on_tick(units)
            if units != last_units:
                last_units, last_change = units, time.monotonic()
            elif time.monotonic() - last_change > timeout:
                raise DistributedError(
                    f"{world_size - self.ranks()} rank(s) made no progress for {timeout:g} s; giving up "
                    "(their finished units are saved: rerun to resume)")
            time.sleep(poll)
        if on_tick is not None:
            on_tick(self.units())


def run_share(env: LaunchEnv, outdir: FailureLog, units: Sequence[U], done: Collection[U],
              stream: Callable[[U], None], weight: Callable[[U], float], progress: Progress) -> list[dict]:
    """Run this rank's share of the units not yet ``done``; returns the failures (also written to ``outdir``).

    A unit that raises is recorded (its ``(name, index)`` key, the error, the traceback) and the rank goes
    on with its other units: one bad video must not cost every other unit of the rank.
    """
    remaining = [u for u in units if u not in done]
    mine = shard(remaining, weight, env.world_size)[env.rank]
    failures: list[dict] = []
    for unit in mine:
        try:
            stream(unit)
        except Exception as e:  # noqa: BLE001  (any failure of one unit is recorded; the rank goes on)
            failures.append({"run": unit[0], "video_index": unit[1], "error": f"{type(e).__name__}: {e}",
                             "traceback": traceback.format_exc()})
        progress.unit_done()
    path = outdir.failures_path(env.rank)
    if failures:
        atomic_write_json(path, {"rank": env.rank, "failures": failures}, DistributedError)
    else:
        path.unlink(missing_ok=True)  # a rerun that finished what failed before
    return failures


def collect_failures(outdir: FailureLog, world_size: int) -> list[dict]:
    """The failures the ranks of this run recorded (older, larger runs' files are ignored)."""
    failures = []
    for rank in range(world_size):
        path = outdir.failures_path(rank)
        if path.exists():
            failures += read_json(path, DistributedError, "failure log", expect=dict).get("failures", [])
    return failures


__all__ = [
    "DistributedError",
    "FailureLog",
    "collect_failures",
    "run_share",
    "LaunchEnv",
    "barrier",
    "Progress",
    "device_for",
    "finalise",
    "initialise",
    "launch_env",
    "launch_for",
    "gpu_group",
    "place_rank",
    "share_threads",
    "shard",
]
