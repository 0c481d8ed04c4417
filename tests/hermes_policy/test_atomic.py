"""One atomic-write helper: a crash mid-write leaves the old file (or directory) as it was."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hermes_policy.atomic import atomic_dir, atomic_path, atomic_write_json, atomic_write_text, remove_leftovers
from hermes_policy.errors import HermesError


def test_write_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "results.json"
    target.write_text("old")
    atomic_write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_exception_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "rows.parquet"
    target.write_bytes(b"old contents")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half of the new")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["rows.parquet"]


def test_killed_process_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    """A real crash: the writer dies (no cleanup, no exception handling) half-way through."""
    target = tmp_path / "spec.json"
    target.write_text('{"policy": "full"}')
    script = (
        "import os, sys\n"
        "from hermes_policy.atomic import atomic_path\n"
        f"with atomic_path({str(target)!r}) as tmp:\n"
        "    with open(tmp, 'w') as f:\n"
        "        f.write('{\"policy\": \"hal')\n"
        "        f.flush()\n"
        "        os._exit(9)\n"
    )
    assert subprocess.run([sys.executable, "-c", script]).returncode == 9
    assert json.loads(target.read_text()) == {"policy": "full"}


def test_missing_directory_and_directory_target_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(HermesError, match="does not exist"):
        atomic_write_text(tmp_path / "nope" / "x.txt", "x")
    with pytest.raises(HermesError, match="is a directory"):
        atomic_write_text(tmp_path, "x")


def test_directory_swap_is_all_or_nothing(tmp_path: Path) -> None:
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "state.txt").write_text("step 50")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as staging:
            (staging / "state.txt").write_text("step 1")
            raise KeyboardInterrupt
    assert (target / "state.txt").read_text() == "step 50"
    with atomic_dir(target) as staging:
        (staging / "state.txt").write_text("step 100")
    assert (target / "state.txt").read_text() == "step 100"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_leftovers_of_a_killed_swap_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "model"
    (tmp_path / ".model.tmp-abc").mkdir()
    (tmp_path / ".model.stale-def").mkdir()
    (tmp_path / "other").mkdir()
    remove_leftovers(target)
    assert [p.name for p in tmp_path.iterdir()] == ["other"]
