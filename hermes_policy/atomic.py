"""Atomic writes: a reader (or a crash) sees the old file or the new one, never half of either.

Every module that writes results, specs, recordings, videos or checkpoints goes
through here, so the one subtle sequence (same-directory temporary, flush,
fsync, ``os.replace``, fsync of the directory) is written once.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hermes_policy.errors import HermesError


def _fsync_path(path: Path) -> None:
    """Flush a file's (or a directory's) contents to disk; directories where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; the rename is still atomic
    finally:
        os.close(fd)


def _check_parent(path: Path, error: type[HermesError]) -> None:
    if not path.parent.is_dir():
        raise error(f"cannot write {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise error(f"cannot write {path}: it is a directory")


@contextmanager
def atomic_path(path: str | Path, error: type[HermesError] = HermesError) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it replaces ``path`` in one rename.

    Write whatever you like to the yielded path (``pq.write_table``, ``save_file``, an encoder).
    If the block raises, the temporary file is removed and ``path`` is untouched.
    It is in the same directory because ``os.replace`` is atomic only within one filesystem.
    """
    path = Path(path)
    _check_parent(path, error)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_path(path.parent)


def atomic_write_bytes(path: str | Path, data: bytes, error: type[HermesError] = HermesError) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path, error) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str, error: type[HermesError] = HermesError) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"), error)


def atomic_write_json(path: str | Path, data: Any, error: type[HermesError] = HermesError, **dumps: Any) -> Path:
    """Write ``data`` as indented JSON plus a newline, atomically; ``dumps`` go to :func:`json.dumps`."""
    dumps.setdefault("indent", 2)
    return atomic_write_text(path, json.dumps(data, **dumps) + "\n", error)


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty staging directory beside ``target``; on a clean exit it becomes ``target``.

    ``os.replace`` cannot replace a non-empty directory, so an existing ``target`` is
    first renamed aside and removed after the swap: readers see the old directory, or
    (for the instant between two renames) none, or the new one, never a partial one.
    If the block raises, the staging directory is removed and ``target`` is untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    staging.chmod(0o755)  # mkdtemp makes it private; the result should read like any other directory
    try:
        yield staging
        for child in staging.rglob("*"):
            if child.is_file():
                _fsync_path(child)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    stale = None
    if target.exists():
        stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.stale-"))
        os.replace(target, stale / "old")
    os.replace(staging, target)
    _fsync_path(target.parent)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def remove_leftovers(target: str | Path) -> None:
    """Delete staging and stale directories that an interrupted :func:`atomic_dir` left beside ``target``."""
    target = Path(target)
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.stale-*"):
        for leftover in target.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def refuse_existing(path: str | Path, overwrite: bool, error: type[HermesError] = HermesError,
                    what: str = "--out") -> None:
    """The rule for every command that writes: an output that exists with something in it (a file, or a folder
    that is not empty) is refused, before any work, unless ``overwrite``. An empty folder is fine."""
    path = Path(path)
    if overwrite or not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    kind = "a folder that is not empty" if path.is_dir() else "a file"
    raise error(f"{what} {path} already exists ({kind}); pass --overwrite to replace it, or choose another path")
