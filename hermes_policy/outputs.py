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

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from hermes_policy.atomic import atomic_dir
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
    if base != path and not base.is_dir():
        raise error(f"cannot write {what} {shown}: {base} is a file, not a folder")
    exists = base == path
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
    with atomic_dir(out, error) as staging:
        yield staging
        marker = {"command": command, "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        (staging / OUTPUT_MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")


def refuse_existing(path: str | Path, overwrite: bool, error: type[HermesError] = HermesError,
                    what: str = "--out") -> None:
    """The rule for every command that writes: an output that exists with something in it (a file, or a folder
    that is not empty) is refused, before any work, unless ``overwrite``. An empty folder is fine."""
    path = Path(path)
    if overwrite or not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return
    kind = "a folder that is not empty" if path.is_dir() else "a file"
    raise error(f"{what} {path} already exists ({kind}); pass --overwrite to replace it, or choose another path")


__all__ = ["OUTPUT_MARKER", "check_output", "output_folder", "refuse_existing"]
