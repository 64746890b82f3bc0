"""The directory command's files: reading and writing them whole (``handover directory``,
authority side and node side), times in and out, and the type of its ``add`` helper."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from transfer.errors import ConflictError, InputError, TransportError

if TYPE_CHECKING:
    from keys.minisign import PublicKey
    from schemas.directory import DirectoryDocument

SIG_SUFFIX = ".minisig"
MAX_ENTRY_BYTES = 1024 * 1024
FETCH_TIMEOUT = 60


class AddAction(Protocol):
    """Adds one ``handover directory ACTION`` (with ``--data-dir`` on the node side)."""

    def __call__(
        self, name: str, help_text: str, handler: Callable[[argparse.Namespace], int], *, node: bool
    ) -> argparse.ArgumentParser: ...


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return f"cli:uid-{os.getuid()}"


def now() -> datetime:
    return datetime.now(UTC)


def parse_time(text: str, option: str) -> datetime:
    if text.strip().lower() == "now":
        return now()
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"{option} {text[:40]!r} is not a time; write it as ISO 8601 with a zone, "
            "for example 2026-11-23T09:00:00Z, or 'now'"
        ) from None
    if when.tzinfo is None:
        raise InputError(f"{option} {text[:40]!r} has no time zone; add one (…Z or +00:00)")
    return when.astimezone(UTC)


def read_limited(path: Path, what: str, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except FileNotFoundError:
        raise InputError(f"{path} does not exist ({what})") from None
    except IsADirectoryError:
        raise InputError(f"{path} is a directory, not {what}") from None
    except OSError as exc:
        raise TransportError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError(f"{path} is too large to be {what}")
    return data


def write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``path`` whole or not at all (temporary file, fsync, rename)."""
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + path.name, suffix=".tmp")
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None


def write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConflictError(f"{path} already exists; it is not overwritten") from None
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        raise TransportError(f"cannot write {path}: {exc.strerror}") from None


def signature_path(path: Path) -> Path:
    return path.with_name(path.name + SIG_SUFFIX)


def fmt(when: datetime) -> str:
    from keys.keyset import format_time

    return format_time(when)


def load_working(path: Path) -> DirectoryDocument:
    from transfer.directory.document import MAX_DOCUMENT_BYTES, parse_document

    return parse_document(
        read_limited(path, "a directory file", MAX_DOCUMENT_BYTES), canonical=False
    )


def save_working(path: Path, doc: DirectoryDocument) -> None:
    from transfer.directory.document import document_bytes

    write_atomic(path, document_bytes(doc))
    # An edited directory no longer matches its old signature: remove it, so that
    # nothing serves the pair until it is signed again.
    with contextlib.suppress(FileNotFoundError):
        signature_path(path).unlink()


def public_key(path: Path) -> PublicKey:
    from keys import minisign

    return minisign.PublicKey.from_text(read_limited(path, "a minisign public key file", 4096))
