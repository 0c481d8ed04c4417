"""Where a command writes: checked once, before any model loads or any work starts.

Every command that takes ``--out`` (or another path it writes to) calls :func:`check_output`
first. It applies the one rule for existing outputs (refused unless ``--overwrite``) and then
proves the location writable by creating and removing a probe file in the folder the writes
will land in. A probe is the only test that holds everywhere: permission bits, ACLs, a
read-only filesystem, and root without ``CAP_DAC_OVERRIDE`` all answer a real ``open`` truthfully,
while ``os.access`` answers for the real uid and is fooled by several of them. Nothing is left
behind, not even an empty ``--out`` folder, so a refused command changes nothing on disk.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from hermes_policy.atomic import atomic_dir, remove_leftovers, remove_temporaries
from hermes_policy.errors import HermesError

#: the file a folder written whole by a command holds, so that ``--overwrite`` replaces only folders it wrote
OUTPUT_MARKER = ".hermes-lab-output.json"



def _nearest_existing(path: Path) -> Path:
    """``path`` or its closest ancestor that exists (links count as existing, dangling ones too)."""
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def _probe_write(folder: Path, target: Path, what: str, error: type[HermesError]) -> None:
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".hermes-lab-write-probe-")
    except OSError as e:
        raise error(f"cannot write {what} {target}: {folder} is not writable ({e.strerror or e})") from None
    os.close(fd)
    os.unlink(name)


def check_output(path: str | Path, overwrite: bool, error: type[HermesError] = HermesError, *,
                 kind: Literal["dir", "file"] = "dir", what: str = "--out", whole: bool = True,
                 resumable: bool = False) -> None:
    """Refuse an output that cannot or may not be written, before any work.

    Args:
        overwrite: whether an output that already holds something may be replaced.
        kind: ``"dir"``: a folder of outputs; ``"file"``: one file (replaced atomically from
            beside it, so its folder must take writes).
        whole: (folders) the command replaces the folder whole (:func:`output_folder`), so
            ``overwrite`` applies only to a folder that a hermes-lab command wrote (it holds
            :data:`OUTPUT_MARKER`): never to a folder of the user's own files. False: the command
            replaces only its own files inside the folder.
        resumable: the command adds to an existing folder itself (``eval``, ``study``), so the
            existing-output rule is its own; only the location is checked here.

    Raises:
        error: the path exists and holds something (without ``overwrite``, or a folder hermes-lab did
            not write); it is the wrong kind (a file for a folder, a folder for a file); an ancestor is
            a file; or the folder the writes land in is not writable. The message names path and reason.
    """
    shown = Path(path)  # as the user wrote it, in messages
    path = shown.absolute()
    base = _nearest_existing(path)
    if path.is_symlink():
        # a link (dangling, looping or not) is an existing path, and writing through one could land anywhere
        raise error(f"{what} {shown} is a symbolic link; give the real path (hermes-lab never writes through "
                    "a link, and never replaces one)")
    if base != path and not base.is_dir():
        raise error(f"cannot write {what} {shown}: {base} is a file, not a folder")
    exists = base == path
    if exists and path.is_dir():
        links = [p.name for p in path.iterdir() if p.is_symlink()]
        if links:
            raise error(f"{what} {shown} holds symbolic links ({', '.join(sorted(links)[:3])}); hermes-lab never "
                        "reads or writes through a link in an output folder: remove them or choose another folder")
    if exists:
        if kind == "dir" and not path.is_dir():
            raise error(f"{what} {shown} is a file; {what} takes a folder (created if needed)")
        if kind == "file" and path.is_dir():
            raise error(f"{what} {shown} is a folder; {what} takes a file path")
        if not resumable:
            refuse_existing(shown, overwrite, error, what)
            if kind == "dir" and whole and any(path.iterdir()) and not (path / OUTPUT_MARKER).is_file():
                raise error(f"{what} {shown} holds files that no hermes-lab command wrote there; --overwrite "
                            f"replaces only a folder hermes-lab wrote (it holds {OUTPUT_MARKER}), never one of "
                            "your own: choose a new folder, or empty this one yourself")
    # a new folder is created in `base`; an existing folder is written into (and one replaced whole is
    # staged beside, so its parent must take writes too); a file is replaced from its folder
    if not exists:
        folders = [base]
    elif kind == "file":
        folders = [path.parent]
    else:
        folders = [path, path.parent] if whole and not resumable else [path]
    for folder in folders:
        _probe_write(folder, shown, what, error)


@contextmanager
def output_folder(out: str | Path, error: type[HermesError], command: str) -> Iterator[Path]:
    """Yield an empty staging folder; on a clean exit it replaces ``out`` whole, in one rename.

    So a run that fails partway (a full disk, an interrupt) leaves the previous ``out`` as it was, or
    none, and a rerun with ``--overwrite`` leaves no stale file of the earlier one. The folder gets
    :data:`OUTPUT_MARKER`, naming the command, which is what lets a later ``--overwrite`` replace it.
    Call :func:`check_output` first, before any work.
    """
    remove_leftovers(out)  # a killed run's staging folders (the caller holds the output's lock)
    with atomic_dir(out, error) as staging:
        yield staging
        marker = {"command": command, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (staging / OUTPUT_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")


#: where :func:`output_lock` keeps its lock files: one per output path, outside every output folder
LOCK_DIR = Path(tempfile.gettempdir()) / "hermes-lab-locks"


def _lock_key(path: Path) -> str:
    """One spelling per output path: the nearest existing ancestor resolved, the rest as written."""
    path = path.absolute()
    base = _nearest_existing(path)
    return str(base.resolve() / path.relative_to(base)) if base != path else str(path.resolve())


@contextmanager
def output_lock(path: str | Path, error: type[HermesError] = HermesError, what: str = "--out") -> Iterator[None]:
    """Hold an exclusive lock on an output path while a run writes it; a second run is refused at once.

    Two runs writing one folder would interleave their files (one's config with the other's rows). The lock
    is a ``flock`` on a file in :data:`LOCK_DIR` named after the path, so it works whether or not the output
    exists yet, never adds a file to it, and is dropped by the kernel if the run dies. It guards one machine
    (a folder shared over a network by several machines is not covered).
    """
    LOCK_DIR.mkdir(mode=0o777, exist_ok=True)
    try:
        LOCK_DIR.chmod(0o1777)  # shared by every user, each removing only their own files
    except PermissionError:
        pass
    name = hashlib.sha256(_lock_key(Path(path)).encode()).hexdigest()[:32] + ".lock"
    with open(LOCK_DIR / name, "a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise error(f"{what} {path} is being written by another hermes-lab run ({holder}); wait for it to "
                        f"finish, or choose another {what}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


_HELD: dict[str, Any] = {}  # lock key -> the output lock this process holds for it


def hold_output_lock(path: str | Path, error: type[HermesError] = HermesError, what: str = "--out",
                     clean: bool = True) -> None:
    """:func:`output_lock` for the rest of the command: released by :func:`release_output_locks` (the CLI's
    entry point does so when the command returns or fails), or by the kernel when the process exits.

    Holding it, the temporary files a killed run left in the output are removed (``clean``): nobody else
    writes there. Not for a folder of the user's own files (``data convert`` into the videos' folder).
    """
    key = _lock_key(Path(path))
    if key in _HELD:  # an earlier command of this process (a test's CliRunner) ended without releasing it
        _HELD.pop(key).__exit__(None, None, None)
    lock = output_lock(path, error, what)
    lock.__enter__()
    _HELD[key] = lock
    if clean and Path(path).is_dir():
        remove_temporaries(path)


def release_output_locks() -> None:
    while _HELD:
        _HELD.pop(next(iter(_HELD))).__exit__(None, None, None)


def refuse_existing(path: str | Path, overwrite: bool, error: type[HermesError] = HermesError,
                    what: str = "--out") -> None:
    """The rule for every command that writes: an output that exists with something in it (a file, or a folder
    that is not empty) is refused, before any work, unless ``overwrite``. An empty folder is fine."""
    path = Path(path)
    if overwrite or not os.path.lexists(path) or (path.is_dir() and not any(path.iterdir())):
        return
    kind = "a folder that is not empty" if path.is_dir() else "a file"
    raise error(f"{what} {path} already exists ({kind}); pass --overwrite to replace it, or choose another path")


__all__ = ["LOCK_DIR", "OUTPUT_MARKER", "check_output", "hold_output_lock", "output_folder", "output_lock",
           "refuse_existing", "release_output_locks"]
