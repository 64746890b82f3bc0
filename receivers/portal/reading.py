"""Reading a referral package for the portal: re-encrypted to a pickup's identity, then its
records and the names of its documents (off the event loop: these block)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import (
    Any,
    BinaryIO,
    Final,
    cast,
)

from keys.keyset import KeySet
from receivers.portal.contracts import (
    MAX_RECORD_BYTES,
)
from receivers.portal.records import (
    DocumentView,
)
from schemas.manifest import Manifest, ManifestEntry
from transfer.age import AgeReader, AgeWriter, X25519Identity
from transfer.age.errors import AgeError, AgeNoMatchError
from transfer.errors import (
    InputError,
    TransportError,
)
from transfer.package.errors import PackageDecryptError
from transfer.package.layout import KeySetSenderKeys, read_package_tar
from transfer.package.open import inspect_package, verify_package

_CHUNK: Final = 64 * 1024


def _label(name: str) -> str:
    words = re.sub(r"[_\-]+", " ", name).strip()
    return words[:1].upper() + words[1:] if words else name


def record_title(path: str) -> str:
    parts = path.removeprefix("records/").removesuffix(".json").split("/")
    return " — ".join([_label(parts[0]), *parts[1:]])


class StopReading(Exception):
    """Stops reading a package once what was wanted has been read and checked.

    The one exception the portal raises to steer: ``verify_package`` calls ``on_entry``
    for each entry and has no other way to be told to stop (its callers catch it).
    """


def _identities(keyset: KeySet) -> list[X25519Identity]:
    return [X25519Identity.from_private_bytes(k.secret) for k in keyset.decryption_keys()]


class _HashingWriter:
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


class _Tee:
    """The age plaintext, copied into the new encryption as it is read and checked."""

    def __init__(self, reader: AgeReader, writer: AgeWriter) -> None:
        self._reader = reader
        self._writer = writer

    def read(self, size: int = -1, /) -> bytes:
        try:
            data = self._reader.read(size)
        except AgeError as exc:
            raise PackageDecryptError(
                f"the package could not be decrypted: it is damaged, truncated or was altered "
                f"({exc.message})"
            ) from None
        if data:
            self._writer.write(data)
        return data


def reencrypt(
    source: Path, target: Path, keyset: KeySet, identity: X25519Identity
) -> tuple[Manifest, int, str]:
    """Verify the package at ``source`` (encrypted to ``keyset``'s keys, signed by its
    organisation) while re-encrypting it to ``identity`` into ``target`` (new file)."""
    try:
        src = source.open("rb")
    except FileNotFoundError:
        raise InputError(f"{source} does not exist") from None
    except OSError as exc:
        raise TransportError(f"cannot read {source}: {exc.strerror}") from None
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with src, os.fdopen(fd, "wb") as out:
        hashing = _HashingWriter(out)
        try:
            reader = AgeReader(src, _identities(keyset))
        except AgeNoMatchError:
            raise InputError(
                "this package is not encrypted to your organisation's key: build the portal "
                f"package to {keyset.org_id}'s own recipient ({keyset.recipient})"
            ) from None
        except AgeError as exc:
            raise PackageDecryptError(
                f"the package could not be decrypted: it is damaged or truncated ({exc.message})"
            ) from None
        writer = AgeWriter(cast(BinaryIO, hashing), [identity.recipient])
        try:
            tee = _Tee(reader, writer)
            verified = read_package_tar(
                tee, sender_keys=KeySetSenderKeys({keyset.org_id: keyset}), addressee=None
            )
            while tee.read(_CHUNK):
                pass
            if src.read(1):
                raise PackageDecryptError("the package has data after the end of its encryption")
        except BaseException:
            writer.abort()
            raise
        writer.close()
        out.flush()
        os.fsync(out.fileno())
    return verified.manifest, hashing.size, hashing.digest.hexdigest()


def open_stored(path: Path) -> BinaryIO | None:
    """The stored package of a pickup; ``None`` once it is no longer held (deleted when
    the link closed, was withdrawn or swept: the caller says which)."""
    try:
        return path.open("rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise TransportError(f"cannot read the stored referral: {exc.strerror}") from None


def read_records(
    path: Path, identity: X25519Identity, keyset: KeySet
) -> tuple[Manifest, dict[str, bytes | None]] | None:
    """The verified manifest and every ``records/…`` entry (checked against the manifest);
    the documents after them are not decrypted. ``None`` for a record too large to show,
    and instead of both once the stored package is no longer held."""
    sender_keys = KeySetSenderKeys({keyset.org_id: keyset})
    stored = open_stored(path)
    if stored is None:
        return None
    with stored as f:
        manifest = inspect_package(
            f, identities=[identity], sender_keys=sender_keys, addressee=None
        ).manifest
    wanted = {e.path for e in manifest.entries if e.path.startswith("records/")}
    found: dict[str, bytes | None] = {}

    def on_entry(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        if entry.path in wanted:
            if entry.size > MAX_RECORD_BYTES:
                for _ in chunks:
                    pass
                found[entry.path] = None
            else:
                found[entry.path] = b"".join(chunks)
        if wanted <= found.keys():
            raise StopReading

    if wanted:
        stored = open_stored(path)
        if stored is None:
            return None
        with stored as f, contextlib.suppress(StopReading):
            verify_package(
                f,
                identities=[identity],
                sender_keys=sender_keys,
                addressee=None,
                on_entry=on_entry,
            )
    return manifest, found


def list_documents(manifest: Manifest, records: dict[str, Any]) -> tuple[DocumentView, ...]:
    """Every entry that is not a record, named from a record that describes it, if any."""
    described: dict[str, dict[str, Any]] = {}

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            sha = value.get("sha256")
            if isinstance(sha, str) and isinstance(value.get("filename"), str):
                described.setdefault(sha, value)
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(list(records.values()))
    out = []
    docs = [e for e in manifest.entries if not e.path.startswith("records/")]
    for i, entry in enumerate(docs):
        info = described.get(entry.sha256, {})
        filename = str(info.get("filename") or entry.path.rsplit("/", 1)[-1])
        media = str(info.get("media_type") or "application/octet-stream")
        out.append(DocumentView(i, entry.path, filename, entry.size, entry.sha256, media))
    return tuple(out)
