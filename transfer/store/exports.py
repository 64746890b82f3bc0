"""Subject access exports as a stream for the caller, and the plaintext ones left on disk.

An export is handed over as a POSIX tar stream (``<name>/export.json``, then
``<name>/documents/<document id>-<file name>``), produced piece by piece while
it is sent: the records are built in memory and each document is decrypted
chunk by chunk, so no plaintext of an export is ever written on the node.

Versions before this one wrote each export under
``<data dir>/exports/<32 hex>/sar-<pupil id>-<time>/`` in plaintext and left it
there. :func:`legacy_exports` finds those directories (by that exact layout,
so nothing else under ``exports/``, such as offline referral bundles, is
touched) and :func:`remove_legacy_exports` deletes them.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from transfer.errors import IntegrityError
from transfer.package.tar import end_of_archive, member_header, member_padding

EXPORTS_DIR: Final = "exports"
_RANDOM_DIR = re.compile(r"[0-9a-f]{32}")
_LEGACY = re.compile(
    r"sar-(?P<pupil>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-\d{8}T\d{6}Z"
)


@dataclass(frozen=True)
class ArchiveFile:
    """One document of an export: where it goes in the archive and how to read it."""

    path: str
    size: int
    #: Opens the document's decrypted bytes (called when its turn comes).
    read: Callable[[], AsyncIterator[bytes]]


async def tar_stream(
    name: str,
    records: bytes,
    files: Sequence[ArchiveFile],
    *,
    still_allowed: Callable[[], Awaitable[None]] | None = None,
    mtime: int = 0,
) -> AsyncIterator[bytes]:
    """The export as tar pieces: ``name/export.json`` (``records``), then each file.

    ``still_allowed`` is awaited before each document and
    before the end of the archive; it raises to cut the stream (the pupil was
    erased meanwhile), so the caller never receives a whole archive that should
    no longer exist.
    """
    header = member_header(f"{name}/export.json", len(records), mtime=mtime)
    first = header + records + member_padding(len(records))
    async for piece in archive_stream(
        name, files, still_allowed=still_allowed, mtime=mtime, first=first
    ):
        yield piece


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


def in_memory(path: str, data: bytes) -> ArchiveFile:
    """A file of an archive whose bytes are already in memory."""
    return ArchiveFile(path, len(data), lambda: _once(data))


async def archive_stream(
    name: str,
    files: Sequence[ArchiveFile],
    *,
    still_allowed: Callable[[], Awaitable[None]] | None = None,
    mtime: int = 0,
    first: bytes = b"",
) -> AsyncIterator[bytes]:
    """``files`` as a POSIX tar stream under the folder ``name``, read one at a time.

    ``first`` is a member already encoded (header, data, padding) that goes first.
    ``still_allowed`` (see :func:`tar_stream`) is awaited before each file and before the
    end. A file that yields more or fewer bytes than its size cuts the stream
    (:class:`IntegrityError`): a tar member cannot be shorter than its header says.
    """
    written = len(first)
    if first:
        yield first
    for item in files:
        if still_allowed is not None:
            await still_allowed()
        header = member_header(f"{name}/{item.path}", item.size, mtime=mtime)
        written += len(header)
        yield header
        count = 0
        async for chunk in item.read():
            count += len(chunk)
            if count > item.size:
                raise IntegrityError("a file is larger than its record says")
            written += len(chunk)
            yield chunk
        if count != item.size:
            raise IntegrityError("a file is smaller than its record says")
        padding = member_padding(item.size)
        written += len(padding)
        if padding:
            yield padding
    if still_allowed is not None:
        await still_allowed()
    yield end_of_archive(written)


def legacy_exports(data_dir: Path, pupil_id: str | None = None) -> list[Path]:
    """Plaintext export directories left by earlier versions (of one pupil, or all)."""
    root = data_dir / EXPORTS_DIR
    found: list[Path] = []
    try:
        parents = [p for p in root.iterdir() if p.is_dir() and _RANDOM_DIR.fullmatch(p.name)]
    except FileNotFoundError:
        return found
    for parent in parents:
        for child in parent.iterdir():
            match = _LEGACY.fullmatch(child.name)
            if match and child.is_dir() and (pupil_id is None or match["pupil"] == pupil_id):
                found.append(child)
    return sorted(found)


def remove_legacy_exports(data_dir: Path, pupil_id: str | None = None) -> list[str]:
    """Delete those directories (and their emptied parents); the pupil ids they were of."""
    pupils: list[str] = []
    for path in legacy_exports(data_dir, pupil_id):
        shutil.rmtree(path, ignore_errors=True)
        match = _LEGACY.fullmatch(path.name)
        assert match is not None
        pupils.append(match["pupil"])
        try:
            path.parent.rmdir()
        except OSError:
            pass  # not empty: something else is in it
    return pupils
