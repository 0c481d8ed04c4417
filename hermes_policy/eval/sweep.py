"""``hermes-lab eval`` sweeps: policies x budgets, an output folder, and resuming an interrupted run.

A sweep is ``--policy a,b,c`` x (``--budget`` list + ``--budget-ratio`` list): one
:class:`~hermes_policy.eval.budgets.PolicyRecipe` per (policy, budget), labelled
``hermes@0.3`` / ``sink-window@512``. A policy that takes no budget (``full``)
runs once. A ``--spec`` configures its own policy: if that policy is also
listed plainly, the spec'd one is a separate run labelled ``name[spec-stem]``
so both are compared; if not, the spec is that policy's entry.

The output folder (:class:`EvalDir`)::

    DIR/config.json          resolved config: settings (compared on resume), model info, versions, argv
    DIR/rows.partial.jsonl   while running: one line per finished (run, video) unit, fsynced
                             (rows.partial.rank{R}.jsonl: rank R's, when launched distributed)
    DIR/failures.rank{R}.json  a distributed rank's units that raised, and why (until a rerun finishes them)
    DIR/rows.parquet         at the end: every per-question row (a hidden reference run's included)
    DIR/results.json         at the end: per run the ``--json`` object, plus the per-category summary

Rerunning with the same settings skips the units already in any ``rows.partial*.jsonl``
(or in ``rows.parquet``, for a finished run), whatever world size wrote them: unit keys are
global; other settings are refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from hermes_policy.atomic import atomic_write_json, atomic_write_text
from hermes_policy.data.dataset import VideoItem, question_to_dict
from hermes_policy.errors import BudgetError
from hermes_policy.eval.budgets import PolicyRecipe, check_policy, takes_budget
from hermes_policy.eval.errors import EvalError
from hermes_policy.eval.results import EvalResult, EvalRow
from hermes_policy.policies import PolicySpec

CONFIG_FILE = "config.json"
PARTIAL_FILE = "rows.partial.jsonl"
PARTIAL_GLOB = "rows.partial*.jsonl"
ROWS_FILE = "rows.parquet"
RESULTS_FILE = "results.json"


# ------------------------------------------------------------------ arguments
def parse_list(text: str | None, option: str, cast: Callable[[str], Any] = str) -> list:
    """``"a, b,c"`` -> ``[cast("a"), cast("b"), cast("c")]``; None -> ``[]``.

    Raises:
        EvalError: an empty list, an empty or repeated entry, or one ``cast`` rejects.
    """
    if text is None:
        return []
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise EvalError(f"{option} is empty; give a comma-separated list")
    if not all(parts):
        raise EvalError(f"{option} {text!r} has an empty entry")
    try:
        values = [cast(p) for p in parts]
    except ValueError:
        raise EvalError(f"{option} {text!r}: every entry must be a {cast.__name__}") from None
    if len(set(values)) != len(values):
        raise EvalError(f"{option} {text!r} names a value twice")
    return values


def build_recipes(
    policy: str, budget: str | None = None, budget_ratio: str | None = None, spec: Path | None = None
) -> list[PolicyRecipe]:
    """The runs of a sweep, from the ``--policy``, ``--budget``, ``--budget-ratio`` and ``--spec`` options.

    Each listed policy runs once per budget (absolute budgets first, then ratios), or once if it takes none.

    Raises:
        PolicyError: an unknown policy, or a spec that does not validate.
        BudgetError: a budget below 1 or a ratio outside (0, 1].
        EvalError: an empty list, or a policy that needs a budget and got none.
    """
    names = parse_list(policy, "--policy")
    for name in names:
        check_policy(name)
    budgets = parse_list(budget, "--budget", int)
    ratios = parse_list(budget_ratio, "--budget-ratio", float)
    for b in budgets:
        if b < 1:
            raise BudgetError(f"--budget takes positive numbers of video tokens, got {b}")
    for r in ratios:
        if not (math.isfinite(r) and 0 < r <= 1):
            raise BudgetError(f"--budget-ratio takes fractions in (0, 1] of each video's tokens, got {r:g}")
    settings: list[tuple[int | None, float | None]] = [(b, None) for b in budgets] + [(None, r) for r in ratios]

    def runs(make: Callable[[int | None, float | None], PolicyRecipe], name: str) -> list[PolicyRecipe]:
        if not takes_budget(name) or not settings:
            return [make(None, None)]  # without settings: raises unless the recipe has a budget of its own (a spec's)
        return [make(b, r) for b, r in settings]

    loaded = PolicySpec.load(spec) if spec is not None else None
    recipes: list[PolicyRecipe] = []
    for name in names:
        recipes += runs(lambda b, r, name=name: PolicyRecipe(name, budget=b, budget_ratio=r), name)
        if loaded is not None and loaded.policy == name:
            variant = Path(spec).stem if spec is not None else "spec"
            recipes += runs(lambda b, r, variant=variant: PolicyRecipe.from_spec(loaded, b, r, source=str(spec),
                                                                         variant=variant),
                            name)
    if loaded is not None and loaded.policy not in names:
        recipes += runs(lambda b, r: PolicyRecipe.from_spec(loaded, b, r, source=str(spec)), loaded.policy)
    labels = [r.key for r in recipes]
    if len(set(labels)) != len(labels):
        twice = sorted({x for x in labels if labels.count(x) > 1})
        raise EvalError(f"the sweep has two runs labelled {', '.join(twice)}; rename the spec file")
    return recipes


def data_fingerprint(items: Sequence[VideoItem]) -> str:
    """sha256 of the dataset's content (every video and question), so a resumed run checks it has not changed."""
    h = hashlib.sha256()
    for item in items:
        line = {"video": item.video, "questions": [question_to_dict(q) for q in item.questions]}
        h.update(json.dumps(line, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
    return h.hexdigest()


# ----------------------------------------------------------------- output dir
def _canonical(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


class EvalDir:
    """An evaluation's output folder; see the module docstring for its layout.

    Use: :meth:`resume` (before the model loads: checks settings, returns finished units),
    :meth:`start` (writes ``config.json``), :meth:`append` per finished unit, :meth:`finish`.
    """

    def __init__(self, path: str | Path, rank: int | None = None) -> None:
        """``rank``: this process's rank in a distributed run (its own partial file); None: one process."""
        self.path = Path(path)
        self.rank = rank
        if self.path.exists() and not self.path.is_dir():
            raise EvalError(f"--out {self.path} is a file; --out takes a folder (created if needed)")

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG_FILE

    @property
    def partial_path(self) -> Path:
        """Where this process appends finished units."""
        if self.rank is None:
            return self.path / PARTIAL_FILE
        return self.path / f"rows.partial.rank{self.rank}.jsonl"

    def partial_paths(self) -> list[Path]:
        """Every partial file in the folder, of any process of any earlier run (sorted)."""
        return sorted(self.path.glob(PARTIAL_GLOB)) if self.path.is_dir() else []

    def failures_path(self, rank: int) -> Path:
        return self.path / f"failures.rank{rank}.json"

    @property
    def rows_path(self) -> Path:
        return self.path / ROWS_FILE

    @property
    def results_path(self) -> Path:
        return self.path / RESULTS_FILE

    def _refuse(self, why: str) -> EvalError:
        return EvalError(f"--out {self.path} {why}; pick another --out or delete {self.path}")

    def resume(
        self, settings: dict[str, Any], units: Sequence[tuple[str, int]], repair: bool = True
    ) -> dict[tuple[str, int], list[EvalRow]]:
        """Finished units' rows, if the folder holds a run with the same ``settings`` (else nothing).

        ``repair`` rewrites a partial file without its torn lines; ranks of a distributed run read
        only (several read at once), and :meth:`append` starts a fresh line after a torn one instead.

        Raises:
            EvalError: the folder holds another evaluation (other settings, or outputs without a config),
                or finished units this run would drop (videos past ``--limit``).
        """
        if not self.path.exists():
            return {}
        if not self.config_path.exists():
            for f in (*self.partial_paths(), self.rows_path, self.results_path):
                if f.exists():
                    raise self._refuse(f"holds {f.name} but no {CONFIG_FILE}")
            return {}
        try:
            stored = json.loads(self.config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise self._refuse(f"has an unreadable {CONFIG_FILE} ({e})") from None
        old = stored.get("settings") if isinstance(stored, dict) else None
        new = _canonical(settings)
        if old != new:
            if not isinstance(old, dict):
                raise self._refuse(f"holds an evaluation without comparable settings ({CONFIG_FILE})")
            diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            raise self._refuse(f"holds an evaluation with other settings ({', '.join(diff)} differ)")
        partials = self.partial_paths()
        done = self._read_partials(partials, repair) if partials else self._read_finished()
        wanted = set(units)
        extra = sorted({v for _, v in done} - {v for _, v in wanted})
        if extra:
            raise self._refuse(f"holds finished streams of video(s) {extra} that this run (--limit) would drop")
        return {u: rows for u, rows in done.items() if u in wanted}

    def _read_partials(self, paths: Sequence[Path], repair: bool) -> dict[tuple[str, int], list[EvalRow]]:
        done: dict[tuple[str, int], list[EvalRow]] = {}
        for path in paths:
            good, bad = [], 0
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    unit = json.loads(line)
                    rows = [EvalRow.from_dict(r) for r in unit["rows"]]
                    key = (str(unit["run"]), int(unit["video_index"]))
                except (ValueError, KeyError, TypeError):
                    bad += 1  # a unit cut off mid-write: it is streamed again
                    continue
                done[key] = rows
                good.append(line)
            if bad and repair:  # rewrite without the broken line, so appends start on a fresh line
                atomic_write_text(path, "".join(g + "\n" for g in good))
        return done

    def _read_finished(self) -> dict[tuple[str, int], list[EvalRow]]:
        if not self.rows_path.exists():
            return {}
        import pyarrow.parquet as pq

        done: dict[tuple[str, int], list[EvalRow]] = {}
        for record in pq.read_table(self.rows_path).to_pylist():
            row = EvalRow.from_dict(record)
            done.setdefault((row.run, row.video_index), []).append(row)
        return done

    def start(self, config: dict[str, Any]) -> None:
        """Create the folder and write ``config.json`` (kept as it is when resuming)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.config_path.exists():
            atomic_write_json(self.config_path, config)

    def append(self, label: str, video_index: int, rows: list[EvalRow]) -> None:
        """Record one finished unit in ``rows.partial.jsonl`` (flushed and fsynced before returning)."""
        line = json.dumps({"run": label, "video_index": video_index, "rows": [asdict(r) for r in rows]},
                          ensure_ascii=False)
        with open(self.partial_path, "a+b") as f:
            f.seek(0, os.SEEK_END)
            if f.tell():  # after a torn last line (a killed writer), start a fresh one
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    line = "\n" + line
            f.write((line + "\n").encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())

    def finish(self, result: EvalResult) -> dict[str, Any]:
        """Write ``rows.parquet`` and ``results.json`` (atomically), then drop the partial file; returns the results."""
        results = result.to_dict()
        results["files"] = {"config": CONFIG_FILE, "rows": ROWS_FILE}
        result.write_rows(self.rows_path)
        atomic_write_json(self.results_path, results)
        for path in (*self.partial_paths(), *self.path.glob("failures.rank*.json")):
            path.unlink(missing_ok=True)
        return results


def resume_note(done: int, total: int) -> None:
    """Say on stderr how much of an interrupted run is already done."""
    if done:
        print(f"resuming: {done} of {total} streams already done", file=sys.stderr)


__all__ = [
    "CONFIG_FILE",
    "PARTIAL_FILE",
    "RESULTS_FILE",
    "ROWS_FILE",
    "EvalDir",
    "build_recipes",
    "data_fingerprint",
    "parse_list",
    "resume_note",
]
