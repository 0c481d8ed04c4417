"""Atomic writes: a reader (or a crash) sees the old file or the new one, never half of either.

Every module that writes results, specs, recordings, videos or checkpoints goes
through here, so the one subtle sequence (same-directory temporary, flush,
fsync, ``os.replace``, fsync of the directory) is written once.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hermes_policy.errors import HermesError

#: OS errors that mean "this machine cannot store it" rather than a bug: said in one line, never a traceback
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM})


def storage_error(e: OSError, path: str | Path, error: type[HermesError]) -> HermesError | None:
    """``error`` naming ``path`` and the OS's reason, if ``e`` is a storage failure; None for anything else."""
    if e.errno not in STORAGE_ERRNOS:
        return None
    return error(f"cannot write {path}: {e.strerror or e} (the previous contents, if any, are kept)")


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
    try:
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise (storage_error(e, path, error) or e) from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        _fsync_path(tmp)
        os.replace(tmp, path)
    except OSError as e:  # a disk that fills up partway: one line, and the old file stays
        tmp.unlink(missing_ok=True)
        friendly = storage_error(e, path, error)
        if friendly is None:
            raise
        raise friendly from None
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
def atomic_dir(target: str | Path, error: type[HermesError] = HermesError) -> Iterator[Path]:
    """Yield an empty staging directory beside ``target``; on a clean exit it becomes ``target``.

    ``os.replace`` cannot replace a non-empty directory, so an existing ``target`` is
    first renamed aside and removed after the swap: readers see the old directory, or
    (for the instant between two renames) none, or the new one, never a partial one.
    If the block raises, the staging directory is removed and ``target`` is untouched; a storage
    failure (disk full, quota, read-only) becomes ``error`` naming ``target``.
    """
    target = Path(target)
    # folders made for it are removed again if the block fails: a failed command leaves nothing behind
    made = [p for p in (target.parent, *target.parent.parents) if not os.path.lexists(p)]
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    except OSError as e:
        raise (storage_error(e, target, error) or e) from None
    staging.chmod(0o755)  # mkdtemp makes it private; the result should read like any other directory
    try:
        yield staging
        for child in staging.rglob("*"):
            if child.is_file():
                _fsync_path(child)
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        for folder in made:  # deepest first
            try:
                folder.rmdir()
            except OSError:
                break
        friendly = storage_error(e, target, error) if isinstance(e, OSError) else None
        if friendly is None:
            raise
        raise friendly from None
    stale = None
    if target.exists():
        stale = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.stale-"))
        os.replace(target, stale / "old")
    os.replace(staging, target)
    _fsync_path(target.parent)
    if stale is not None:
        shutil.rmtree(stale, ignore_errors=True)


def remove_temporaries(folder: str | Path) -> int:
    """Delete the temporary files interrupted :func:`atomic_path` writes left in ``folder`` (and below it);
    returns how many. Only for a folder this process holds the output lock of: a live writer's temporary
    would go too."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    # exactly the names atomic_path makes: ".{name}." + mkstemp's 8 random characters + ".tmp"
    ours = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
    stale = [p for p in folder.rglob(".*.tmp") if ours.match(p.name) and p.is_file() and not p.is_symlink()]
    for p in stale:
        p.unlink(missing_ok=True)
    return len(stale)


def remove_leftovers(target: str | Path) -> None:
    """Delete staging and stale directories that an interrupted :func:`atomic_dir` left beside ``target``."""
    target = Path(target)
    for pattern in (f".{target.name}.tmp-*", f".{target.name}.stale-*"):
        for leftover in target.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)
