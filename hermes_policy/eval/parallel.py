"""``eval`` across the ranks of a ``torchrun`` / ``accelerate launch`` run.

Every rank plans the same units, reads the same finished ones from the output folder,
and takes its share of the rest (:func:`hermes_policy.distributed.shard`, balanced by
each video's frames). A rank appends finished units to its own fsynced partial file;
a unit that raises (a bad video, an out-of-memory error) is recorded in
``failures.rank{R}.json`` and the rank goes on with its other units. Rank 0 waits for
every rank through the store's counters (never in a collective), then merges all
partial files into exactly the ``rows.parquet`` and ``results.json`` one process would
write, or, if any unit failed, exits non-zero naming the failed units; a rerun, on any
world size, streams only the units that are missing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from tqdm import tqdm

from hermes_policy.distributed import LaunchEnv, Progress, collect_failures, run_share
from hermes_policy.errors import HermesError
from hermes_policy.eval.budgets import open_item
from hermes_policy.eval.errors import EvalError
from hermes_policy.eval.harness import UnitRows, evaluate
from hermes_policy.eval.results import EvalResult
from hermes_policy.eval.sweep import EvalDir

Unit = tuple[str, int]


def unit_weights(items: Sequence, fps: float | None) -> Callable[[Unit], float]:
    """A unit's cost for balancing: its video's frames (1 when the container does not say or cannot be read:
    that unit then fails where it is streamed, and is recorded, instead of stopping every rank here)."""
    frames: dict[int, float] = {}

    def weight(unit: Unit) -> float:
        v = unit[1]
        if v not in frames:
            try:
                frames[v] = float(open_item(items[v], fps).num_frames or 1)
            except HermesError:
                frames[v] = 1.0
        return frames[v]

    return weight


def evaluate_distributed(
    env: LaunchEnv, outdir: EvalDir, settings: dict[str, Any], adapter, items: Sequence, recipes: Sequence,
    done: UnitRows, units: Sequence[Unit], timeout: float, show_progress: bool, **options: Any,
) -> EvalResult | None:
    """This rank's part of a distributed ``eval``; rank 0 returns the merged result, the others None.

    ``options`` go to :func:`~hermes_policy.eval.harness.evaluate` (chunk_frames, fps, scorer, ...).

    Raises:
        EvalError: (rank 0) some units failed; they are named, the rest is saved for a rerun.
        DistributedError: (rank 0) a rank made no progress for ``timeout`` seconds.
    """
    progress = Progress("hermes-lab/eval/")

    def stream(unit: Unit) -> None:
        evaluate(adapter, items, recipes, progress=False, done=done, on_unit=outdir.append, only={unit},
                 **options)

    weight = unit_weights(items, options.get("fps"))
    bar = None
    if env.is_main:
        bar = tqdm(total=len(units), initial=sum(u in done for u in units), unit="stream", file=sys.stderr,
                   desc=f"evaluating on {env.world_size} ranks", disable=not show_progress, leave=False)
    run_share(env, outdir, units, done, stream, weight, progress)
    progress.rank_done()
    if not env.is_main:
        return None
    start = bar.n

    def tick(finished: int) -> None:
        bar.n = start + finished
        bar.refresh()

    with bar:
        progress.wait_for_ranks(env.world_size, timeout, on_tick=tick)
    failures = collect_failures(outdir, env.world_size)
    if failures:
        named = ", ".join(f"{f['run']} on video {f['video_index']} ({f['error']})" for f in failures)
        raise EvalError(f"{len(failures)} unit(s) failed: {named}; the others are saved in {outdir.path} "
                        "(failures.rank*.json say why): rerun the same command to finish only these")
    merged = outdir.resume(settings, units, repair=False)
    missing = [u for u in units if u not in merged]
    if missing:
        raise EvalError(f"{len(missing)} unit(s) are missing after every rank finished (first: {missing[0]}); "
                        "rerun the same command to finish them")
    return evaluate(adapter, items, recipes, progress=False, done=merged, **options)


__all__ = ["evaluate_distributed", "unit_weights"]
