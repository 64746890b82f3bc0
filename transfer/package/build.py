"""Building a package: tar stream -> age encryption -> ``out``, streamed end to end.

The manifest names every entry's size and SHA-256 before any entry is
written, so each :class:`EntrySource` declares them up front (records are
serialised first; documents are content-addressed in the store, so their
hashes and sizes are known). While an entry streams, its bytes are counted and
hashed again; if they do not match what was declared the build stops with
:class:`~transfer.package.errors.EntryMismatchError` before the age stream is
finished, so what was written to ``out`` is not a valid package and must be
discarded (:func:`build_package_file` does that itself).

Nothing here holds a package or an entry in memory (chunks of at most what the
source yields, re-chunked by age into 64 KiB) and nothing is written to disk
in plaintext. Pure: works over file objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, cast
from uuid import UUID, uuid4

from keys import minisign
from schemas.manifest import (
    Manifest,
    PackageKind,
    Recipient,
    Sender,
    Subject,
)
from transfer.age import AgeWriter, X25519Recipient
from transfer.age import Recipient as AgeRecipient
from transfer.errors import ConflictError, InputError, TransportError
from transfer.package.layout import (
    MANIFEST_CONTEXT,
    EntrySource,
    check_sources,
    manifest_trusted_comment,
    sign_manifest,
    write_package_tar,
)

__all__ = [
    "MANIFEST_CONTEXT",
    "BuiltPackage",
    "EntrySource",
    "build_package",
    "build_package_file",
    "manifest_trusted_comment",
    "sign_manifest",
    "write_package",
]


@dataclass(frozen=True)
class BuiltPackage:
    """What was written: the signed manifest and the ciphertext's size and SHA-256."""

    manifest: Manifest
    manifest_bytes: bytes
    signature: str
    ciphertext_size: int
    ciphertext_sha256: str

    @property
    def manifest_sha256(self) -> str:
        return hashlib.sha256(self.manifest_bytes).hexdigest()


class _CountingOut:
    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self.size = 0
        self.digest = hashlib.sha256()

    def write(self, data: bytes | memoryview, /) -> int:
        self._out.write(data)
        self.size += len(data)
        self.digest.update(data)
        return len(data)

    def flush(self) -> None:
        self._out.flush()


def write_package(
    out: BinaryIO,
    manifest: Manifest,
    entries: Sequence[EntrySource],
    *,
    signer: minisign.SecretKey,
    recipients: Sequence[AgeRecipient],
) -> BuiltPackage:
    """Sign ``manifest`` and write the encrypted package to ``out`` (which is not closed).

    ``recipients``: the receiver's X25519 key(s), or (an offline referral bundle) one age
    scrypt passphrase recipient. On any error the age stream is left unfinished: discard
    what was written. The one place a package is written (leaver's files and referrals).
    """
    if not recipients:
        raise InputError("a package needs at least one recipient key")
    check_sources(manifest, entries)
    manifest_bytes, signature = sign_manifest(manifest, signer)
    counting = _CountingOut(out)
    writer = AgeWriter(cast(BinaryIO, counting), list(recipients))
    try:
        write_package_tar(writer, manifest, manifest_bytes, signature, entries)
    except BaseException:
        writer.abort()  # the last chunk is never written: the output cannot decrypt
        raise
    writer.close()
    counting.flush()
    return BuiltPackage(
        manifest=manifest,
        manifest_bytes=manifest_bytes,
        signature=signature,
        ciphertext_size=counting.size,
        ciphertext_sha256=counting.digest.hexdigest(),
    )


def build_package(
    out: BinaryIO,
    *,
    kind: PackageKind,
    sender: Sender,
    recipient: Recipient,
    subject: Subject,
    entries: Sequence[EntrySource],
    signer: minisign.SecretKey,
    recipients: Sequence[X25519Recipient],
    package_id: UUID | None = None,
    created_at: datetime | None = None,
    records_schema: Mapping[str, int] | None = None,
) -> BuiltPackage:
    """Make the manifest from the fields and the entries, then :func:`write_package`."""
    manifest = Manifest(
        package_id=package_id or uuid4(),
        kind=kind,
        sender=sender,
        recipient=recipient,
        subject=subject,
        created_at=created_at or datetime.now(UTC),
        entries=tuple(e.entry for e in entries),
        records_schema=dict(records_schema or {}),
    )
    return write_package(out, manifest, entries, signer=signer, recipients=recipients)


def build_package_file(path: Path, **fields: Any) -> BuiltPackage:
    """:func:`build_package` into a new file at ``path``, written atomically.

    The package is written to a temporary file beside ``path`` and renamed
    into place only once complete; on any error the temporary file is removed
    and ``path`` is not created.
    """
    path = Path(path)
    if path.exists():
        raise ConflictError(f"{path} already exists; choose another name")
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=".handover-package-", dir=path.parent)
    except OSError as exc:
        raise TransportError(f"cannot write in {path.parent}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            built = build_package(f, **fields)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise ConflictError(f"{path} already exists; choose another name") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return built
