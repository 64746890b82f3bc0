"""Files and directories for the node's own user alone: 0600 and 0700, whatever the umask.

Everything in a node's data directory (the database and its ``-wal``/``-shm``
files, the configuration, keys, TLS keys and certificates, audit anchors,
documents, packages, exports) is created through these helpers or with an
explicit mode, so no file has a group or other permission bit. The data
directory itself is 0700 too; the files inside it are closed as well, so a
directory copied elsewhere, or a mode loosened by hand, still gives nothing
away. :func:`tighten` closes what an earlier version (or an operator) left
open; ``handover init`` and ``handover serve`` run it.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

__all__ = ["DIR_MODE", "FILE_MODE", "create_private", "private_dir", "tighten", "write_private"]

FILE_MODE: Final = 0o600
DIR_MODE: Final = 0o700
_OPEN_TO_OTHERS: Final = 0o077


def private_dir(path: Path) -> Path:
    """``path`` as a directory; each directory this creates (parents too) is 0700.

    Directories that already exist are left as they are (a caller's own folder is
    not changed); :func:`tighten` closes those inside a data directory.
    """
    missing: list[Path] = []
    here = path
    while not here.exists():
        missing.append(here)
        if here.parent == here:
            break
        here = here.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue  # made a moment ago by another process
        os.chmod(directory, DIR_MODE)  # mkdir's mode is filtered by the umask
    return path


def create_private(path: Path, flags: int = os.O_WRONLY | os.O_CREAT | os.O_EXCL) -> int:
    """``os.open`` of a file created 0600 (also if it existed with a looser mode)."""
    fd = os.open(path, flags, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: Path, data: bytes) -> None:
    """Write ``path`` whole (0600): a temporary file in the same directory, then renamed."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = create_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def tighten(root: Path) -> int:
    """Remove group and other permission bits from ``root`` and everything under it.

    Symbolic links are neither followed nor changed. Returns how many entries were
    changed (0 when everything was already private).
    """
    changed = 0

    def close(path: Path) -> None:
        nonlocal changed
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            return
        if stat.S_ISLNK(mode) or not mode & _OPEN_TO_OTHERS:
            return
        os.chmod(path, stat.S_IMODE(mode) & ~_OPEN_TO_OTHERS)
        changed += 1

    if not root.exists():
        return 0
    close(root)
    for directory, subdirs, files in os.walk(root):
        here = Path(directory)
        for name in subdirs + files:
            close(here / name)
    return changed
