"""``hermes-lab eval`` sweeps: policies x budgets, an output folder, and resuming an interrupted run.

A sweep is ``--policy a,b,c`` x (``--budget`` list + ``--budget-ratio`` list): one
:class:`~hermes_policy.eval.budgets.PolicyRecipe` per (policy, budget), labelled
``hermes@0.3`` / ``sink-window@512``. A policy that takes no budget (``full``)
runs once. A ``--spec`` configures its own policy: if that policy is also
listed plainly, the spec'd one is a separate run labelled ``name[spec-stem]``
so both are compared; if not, the spec is that policy's entry. ``--spec`` may be
repeated: then every spec is its own run, ``name[stem]``, so two derivations of one
policy (attention-derived and causally-derived tiers, say) are compared, paired, in one
evaluation.

The output folder (:class:`EvalDir`)::

    DIR/config.json          resolved config: settings (compared on resume), model info, versions, argv
    DIR/rows.partial.jsonl   while running: one line per finished (run, video) unit, fsynced
                             (rows.partial.rank{R}.jsonl: rank R's, when launched distributed)
    DIR/failures.rank{R}.json  a distributed rank's units that raised, and why (until a rerun finishes them)
    DIR/rows.parquet         at the end: every per-question row (a hidden reference run's included)
    DIR/results.json         at the end: per run the ``--json`` object, plus the per-category summary

Rerunning with the same settings skips the units already in any ``rows.partial*.jsonl``
(or in ``rows.parquet``, for a finished run), whatever world size wrote them: unit keys are
global; other settings are refused, never overwritten, unless nothing of that evaluation
finished (a ``config.json`` left by a start that failed, no partial rows, no results): such
a folder is empty, and the rerun starts it over with its own settings.

A partial file's line is one whole unit (all its rows) plus a checksum of it::

    {"run": "sink-window@0.5", "video_index": 1, "rows": [{...}, ...], "sha256": "<hex>"}

``sha256`` is over the canonical JSON of every other field of the line (sorted keys, no
whitespace, UTF-8; :func:`unit_checksum`), so a unit is done only if its line verifies,
and a unit's rows are accepted all together or not at all. On resume a line that is torn
(a writer killed mid-line), not UTF-8, not a unit, changed since it was written (fails its
checksum) or without a checksum (written by a hermes-lab before checksums: unverifiable,
so not trusted) is dropped and its unit evaluated again, with one warning on stderr
counting the lines and naming the units; a single process also rewrites the file without
them. A damaged ``rows.parquet`` of a finished folder (whose partial rows are gone) is an
:class:`EvalError` naming it, never a traceback.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from hermes_policy.atomic import atomic_write_bytes, atomic_write_json
from hermes_policy.data.dataset import VideoItem, question_to_dict
from hermes_policy.errors import BudgetError
from hermes_policy.eval.budgets import PolicyRecipe, check_policy, takes_budget
from hermes_policy.eval.errors import EvalError
from hermes_policy.eval.results import EvalResult, EvalRow
from hermes_policy.jsonfile import loads_json, read_json
from hermes_policy.outputs import check_output
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
    policy: str, budget: str | None = None, budget_ratio: str | None = None,
    spec: Path | Sequence[Path] | None = None, granularity: str | None = None,
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

    paths = [] if spec is None else [Path(spec)] if isinstance(spec, (str, Path)) else [Path(p) for p in spec]
    loaded = [(path, PolicySpec.load(path)) for path in paths]
    several = len(loaded) > 1  # each spec its own run, told apart by its file's stem
    recipes: list[PolicyRecipe] = []
    for name in names:
        recipes += runs(lambda b, r, name=name: PolicyRecipe(name, budget=b, budget_ratio=r), name)
        for path, one in loaded:
            if one.policy == name:
                recipes += runs(lambda b, r, one=one, path=path: PolicyRecipe.from_spec(
                    one, b, r, source=str(path), variant=path.stem), name)
    for path, one in loaded:
        if one.policy not in names:
            recipes += runs(lambda b, r, one=one, path=path: PolicyRecipe.from_spec(
                one, b, r, source=str(path), variant=path.stem if several else None), one.policy)
    if granularity is not None:  # --granularity: every run's cache layout (checked as each recipe is made)
        recipes = [replace(r, params={**r.params, "granularity": granularity}) for r in recipes]
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


CHECKSUM_FIELD = "sha256"


def unit_checksum(record: dict[str, Any]) -> str:
    """sha256 (hex) of a partial-file record's canonical JSON, its ``sha256`` field left out.

    Canonical: sorted keys, no whitespace, UTF-8 (``ensure_ascii=False``); JSON numbers and strings
    round-trip exactly, so a line read back hashes to what was written unless its content changed.
    """
    body = {k: v for k, v in record.items() if k != CHECKSUM_FIELD}
    text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# why a partial line is not trusted, as the resume warning counts them
_TORN, _NOT_UTF8, _NOT_UNIT, _CHANGED, _UNCHECKED = (
    "cut off mid-write or not JSON", "not UTF-8", "not a unit record", "changed since written (checksum mismatch)",
    "without a checksum (older hermes-lab)")
# the unit a torn line was for: ``append`` writes ``run`` and ``video_index`` first
_KEY_PREFIX = re.compile(r'^\{"run": ("(?:[^"\\]|\\.)*"), "video_index": (\d+)[,}]')


def _line_key(text: str, record: Any) -> tuple[str, int] | None:
    """The (run, video) unit a partial line names, if it still does."""
    if isinstance(record, dict):
        run, video = record.get("run"), record.get("video_index")
        if isinstance(run, str) and isinstance(video, int) and not isinstance(video, bool):
            return run, video
    match = _KEY_PREFIX.match(text)
    if match:
        try:
            return str(json.loads(match.group(1))), int(match.group(2))
        except ValueError:
            pass
    return None


def _parse_line(raw: bytes) -> tuple[tuple[str, int] | None, list[EvalRow] | None, str | None]:
    """One partial-file line -> (its unit, its rows, None) if it verifies, else (its unit or None, None, why)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
        return _line_key(text, None), None, _NOT_UTF8
    try:
        record = loads_json(text, EvalError, "a partial line")
    except EvalError:  # torn, or hostile (nested too deep, a huge integer): either way not a unit we wrote
        return _line_key(text, None), None, _TORN
    key = _line_key(text, record)
    if key is None or not isinstance(record, dict) or not isinstance(record.get("rows"), list):
        return key, None, _NOT_UNIT
    stored = record.get(CHECKSUM_FIELD)
    if stored is None:
        return key, None, _UNCHECKED
    if stored != unit_checksum(record):
        return key, None, _CHANGED
    try:
        rows = [EvalRow.from_dict(r) for r in record["rows"]]
    except (TypeError, AttributeError, ValueError):
        return key, None, _NOT_UNIT
    return key, rows, None


class EvalDir:
    """An evaluation's output folder; see the module docstring for its layout.

    Use: :meth:`resume` (before the model loads: checks settings, returns finished units),
    :meth:`start` (writes ``config.json``), :meth:`append` per finished unit, :meth:`finish`.
    """

    def __init__(self, path: str | Path, rank: int | None = None) -> None:
        """``rank``: this process's rank in a distributed run (its own partial file); None: one process."""
        self.path = Path(path)
        self.rank = rank
        self._restart = False  # resume found a config.json of other settings with nothing finished
        self._warned = False  # the damaged-lines warning is said once (rank 0's merge reads the files again)
        check_output(self.path, False, EvalError, resumable=True)  # its own resume rule, in resume()

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

        A partial line that does not verify (see the module docstring) is dropped, its unit is not
        returned (so it is evaluated again), and one warning on stderr says so (rank 0's only).
        A ``config.json`` of other settings with nothing finished (no unit record in a partial file,
        no ``rows.parquet``, no ``results.json``) is a start that failed: nothing is returned and
        :meth:`start` replaces it; nothing is written here.

        Raises:
            EvalError: the folder holds another evaluation (other settings, or outputs without a config),
                finished units this run would drop (videos past ``--limit``), or a finished evaluation
                whose ``rows.parquet`` cannot be read back.
        """
        if not self.path.exists():
            return {}
        if not self.config_path.exists():
            for f in (*self.partial_paths(), self.rows_path, self.results_path):
                if f.exists():
                    raise self._refuse(f"holds {f.name} but no {CONFIG_FILE}")
            return {}
        try:
            stored = read_json(self.config_path, EvalError, CONFIG_FILE)
        except EvalError as e:
            raise self._refuse(f"has an unreadable {CONFIG_FILE} ({e})") from None
        old = stored.get("settings") if isinstance(stored, dict) else None
        new = _canonical(settings)
        if old != new:
            if not isinstance(old, dict):
                raise self._refuse(f"holds an evaluation without comparable settings ({CONFIG_FILE})")
            diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if not self._holds_work():
                self._restart = True
                if self._speaks:
                    print(f"note: --out {self.path}: nothing of its earlier evaluation ({', '.join(diff)} "
                          "differ) finished; starting it over with these settings", file=sys.stderr)
                return {}
            raise self._refuse(f"holds an evaluation with other settings ({', '.join(diff)} differ)")
        wanted = set(units)
        partials = self.partial_paths()
        if partials:
            done, bad = self._read_partials(partials, repair)
            self._warn(bad, done, wanted)
        else:
            done = self._read_finished()
        extra = sorted({v for _, v in done} - {v for _, v in wanted})
        if extra:
            raise self._refuse(f"holds finished streams of video(s) {extra} that this run (--limit) would drop")
        return {u: rows for u, rows in done.items() if u in wanted}

    @property
    def _speaks(self) -> bool:
        """Whether this process says resume notes (one process, or rank 0 of a distributed run)."""
        return self.rank in (None, 0)

    def _holds_work(self) -> bool:
        """Whether anything of the folder's evaluation finished: results, or a unit record in a partial
        file (verified or not: an unverifiable unit of other settings is still not ours to delete)."""
        if self.rows_path.exists() or self.results_path.exists():
            return True
        for path in self.partial_paths():
            try:
                data = path.read_bytes()
            except OSError:
                return True
            for raw in data.split(b"\n"):
                if raw.strip() and _parse_line(raw)[2] not in (_TORN, _NOT_UTF8, _NOT_UNIT):
                    return True
        return False

    def _read_partials(
        self, paths: Sequence[Path], repair: bool
    ) -> tuple[dict[tuple[str, int], list[EvalRow]], list[tuple[str, str, tuple[str, int] | None]]]:
        """Verified units' rows from every partial file, and the lines dropped: (file name, why, unit or None)."""
        done: dict[tuple[str, int], list[EvalRow]] = {}
        bad: list[tuple[str, str, tuple[str, int] | None]] = []
        for path in paths:
            try:
                data = path.read_bytes()
            except OSError as e:
                raise self._refuse(f"has an unreadable {path.name} ({e})") from None
            good: list[bytes] = []
            dropped = 0
            for raw in data.split(b"\n"):
                if not raw.strip():
                    continue
                key, rows, why = _parse_line(raw)
                if why is not None:
                    dropped += 1  # its unit is streamed again
                    bad.append((path.name, why, key))
                    continue
                done[key] = rows
                good.append(raw)
            if dropped and repair:  # rewrite without the dropped lines, so appends start on a fresh line
                atomic_write_bytes(path, b"".join(g + b"\n" for g in good), EvalError)
        return done, bad

    def _warn(self, bad: Sequence[tuple[str, str, tuple[str, int] | None]], done: Collection[tuple[str, int]],
              wanted: Collection[tuple[str, int]]) -> None:
        """One stderr line about the partial lines dropped: how many, why, which units run again."""
        if not bad or self._warned or not self._speaks:
            return
        self._warned = True
        files = ", ".join(dict.fromkeys(name for name, _, _ in bad))
        whys = Counter(why for _, why, _ in bad)
        again = sorted({key for _, _, key in bad if key is not None and key not in done and key in wanted},
                       key=lambda k: (k[1], k[0]))
        unnamed = sum(key is None for _, _, key in bad)
        named = ", ".join(f"{run} on video {video}" for run, video in again[:10])
        if len(again) > 10:
            named += f" and {len(again) - 10} more"
        if unnamed:
            named += f"{' and ' if named else ''}{unnamed} unit(s) the line is too damaged to name"
        print(f"warning: --out {self.path}: dropped {len(bad)} damaged line(s) of {files} "
              f"({', '.join(f'{n} {why}' for why, n in whys.items())}); "
              + (f"evaluating again: {named}" if named else "their units are saved on other lines"),
              file=sys.stderr)

    def _read_finished(self) -> dict[tuple[str, int], list[EvalRow]]:
        if not self.rows_path.exists():
            return {}
        import pyarrow as pa
        import pyarrow.parquet as pq

        done: dict[tuple[str, int], list[EvalRow]] = {}
        try:
            for record in pq.read_table(self.rows_path).to_pylist():
                row = EvalRow.from_dict(record)
                done.setdefault((row.run, row.video_index), []).append(row)
        except (pa.ArrowException, OSError, ValueError, TypeError, KeyError) as e:
            why = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EvalError(f"--out {self.path}: {ROWS_FILE} is damaged ({why}) and the partial rows it was "
                            f"built from are gone, so this finished evaluation cannot be read back; delete "
                            f"{self.path} (or pick another --out) and run it again") from None
        return done

    def start(self, config: dict[str, Any]) -> None:
        """Create the folder and write ``config.json`` (kept as it is when resuming; replaced, with the failed
        start's leftovers, when :meth:`resume` found other settings of which nothing finished)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self._restart:
            for path in (*self.partial_paths(), *self.path.glob("failures.rank*.json")):
                path.unlink(missing_ok=True)
            atomic_write_json(self.config_path, config, EvalError)
            self._restart = False
        elif not self.config_path.exists():
            atomic_write_json(self.config_path, config)

    def append(self, label: str, video_index: int, rows: list[EvalRow]) -> None:
        """Record one finished unit in ``rows.partial.jsonl``: one line, all its rows and their checksum
        (flushed and fsynced before returning)."""
        record: dict[str, Any] = {"run": label, "video_index": video_index, "rows": [asdict(r) for r in rows]}
        record = json.loads(json.dumps(record))  # as it will be read back (tuples are lists), then hashed
        record[CHECKSUM_FIELD] = unit_checksum(record)
        line = json.dumps(record, ensure_ascii=False)
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
    "unit_checksum",
]
