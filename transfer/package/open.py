"""Opening a package: verify before trusting, all or nothing.

Order of checks (``docs/package-format.md``, "Verification"):

1. Decrypt as a stream (age, with our identities); every 64 KiB chunk is
   authenticated by age before its plaintext is used.
2. The first tar member must be ``manifest.json`` (at most
   ``Limits.max_manifest_bytes``), the second ``manifest.json.minisig``.
3. The signature is checked over the manifest's exact bytes with the
   sender's *known* key (:class:`SenderKeys`: a pinned minisign key, or the
   node's keys with revocation), its trusted comment must start with
   ``handover-manifest-v1`` and name this package, its recipient and the
   manifest's SHA-256; the manifest must be in canonical form and name the
   signing key.
4. The manifest must be addressed to us (:class:`Addressee`: organisation
   and key fingerprint), and within the limits (entries, total size).
5. Every other member must be the next entry of the manifest, with the same
   size, and its bytes must hash to the manifest's SHA-256; nothing may be
   missing, added or repeated; after the end of the archive only zero
   padding may follow, and the age stream must end properly.

Nothing is trusted until all of it has checked. :func:`verify_package` is one
pass that keeps nothing. :func:`open_package` is the two-pass way to *use*
the contents: pass 1 verifies the whole file and keeps nothing; pass 2
decrypts the same file again and hands each entry, re-checked as it streams,
to the caller, who stages it (in a database transaction, or the staging
directory of :func:`extract_package`) and commits only when pass 2 returns.
Plaintext therefore never reaches disk for a package that fails a check;
:func:`extract_package` (``handover package open``) is the one place it is
written to disk at all, at the user's explicit request.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, cast

from schemas.manifest import (
    MANIFEST_PATH,
    SIGNATURE_PATH,
    ManifestEntry,
)
from transfer.age import AgeReader, X25519Identity
from transfer.age.errors import AgeError, AgeNoMatchError
from transfer.errors import ConflictError, InputError, TransportError
from transfer.package.errors import (
    ALTERED,
    PackageDecryptError,
    PackageTamperedError,
)
from transfer.package.layout import (
    DEFAULT_LIMITS,
    Addressee,
    KeySetSenderKeys,
    Limits,
    OnEntry,
    PinnedSenderKey,
    SenderKeys,
    VerifiedPackage,
    read_package_tar,
)

__all__ = [
    "Addressee",
    "KeySetSenderKeys",
    "Limits",
    "OnEntry",
    "PinnedSenderKey",
    "Progress",
    "SenderKeys",
    "VerifiedPackage",
    "extract_package",
    "inspect_package",
    "open_package",
    "read_package_tar",
    "verify_package",
]

#: Called with (bytes of ciphertext read so far, total or None) while reading.
Progress = Callable[[int, int | None], None]


# ------------------------------------------------------------- the age level


class _HashingReader:
    """Counts (and, when asked, hashes) the ciphertext as age reads it; reports progress."""

    def __init__(
        self, src: BinaryIO, progress: Progress | None, total: int | None, *, hashing: bool
    ) -> None:
        self._src = src
        self._progress = progress
        self._total = total
        self.size = 0
        self.digest = hashlib.sha256() if hashing else None

    def read(self, size: int = -1, /) -> bytes:
        data = self._src.read(size)
        if data:
            self.size += len(data)
            if self.digest is not None:
                self.digest.update(data)
            if self._progress is not None:
                self._progress(self.size, self._total)
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True


class _Decrypting:
    """The age plaintext, with age's errors turned into package errors."""

    def __init__(self, reader: AgeReader) -> None:
        self._reader = reader

    def read(self, size: int = -1, /) -> bytes:
        try:
            return self._reader.read(size)
        except AgeError as exc:
            raise _decrypt_error(exc) from None


def _decrypt_error(exc: AgeError) -> PackageDecryptError:
    if isinstance(exc, AgeNoMatchError):
        return PackageDecryptError(
            "this package is not encrypted to any of our keys (it is for someone else or for "
            "a key we no longer hold, or its header was damaged)"
        )
    return PackageDecryptError(
        f"the package could not be decrypted: it is damaged, truncated or was altered "
        f"({exc.message})"
    )


def _total_size(src: BinaryIO) -> int | None:
    try:
        return os.fstat(src.fileno()).st_size
    except (OSError, AttributeError, ValueError):
        return None


def _open_age(counting: _HashingReader, identities: Sequence[X25519Identity]) -> _Decrypting:
    try:
        reader = AgeReader(cast(BinaryIO, counting), list(identities))
    except AgeError as exc:
        raise _decrypt_error(exc) from None
    return _Decrypting(reader)


def verify_package(
    src: BinaryIO,
    *,
    identities: Sequence[X25519Identity],
    sender_keys: SenderKeys,
    addressee: Addressee | None,
    limits: Limits = DEFAULT_LIMITS,
    on_entry: OnEntry | None = None,
    progress: Progress | None = None,
    hash_ciphertext: bool = False,
) -> VerifiedPackage:
    """Decrypt and verify a whole package from ``src`` (one pass, nothing kept).

    ``on_entry`` sees each entry as it streams, *before* the package as a whole
    has checked: use :func:`open_package` to act on the contents.

    The ciphertext's SHA-256 (``ciphertext_sha256``) is computed only when asked
    (``hash_ciphertext``): it is not part of the checks (the signature covers the
    manifest, and the manifest every entry's SHA-256), and a node already hashed the
    ciphertext once, as it arrived, against the SHA-256 its offer named. Hashing it
    again would cost as much CPU as the decryption.
    """
    if not identities:
        raise InputError("no decryption key was given")
    counting = _HashingReader(src, progress, _total_size(src), hashing=hash_ciphertext)
    plain = _open_age(counting, identities)
    result = read_package_tar(
        plain, sender_keys=sender_keys, addressee=addressee, limits=limits, on_entry=on_entry
    )
    if counting.read(1):
        raise PackageDecryptError("the package has data after the end of its encryption")
    return VerifiedPackage(
        manifest=result.manifest,
        manifest_bytes=result.manifest_bytes,
        signature=result.signature,
        signature_text=result.signature_text,
        entries_checked=True,
        ciphertext_sha256=counting.digest.hexdigest() if counting.digest is not None else None,
        ciphertext_size=counting.size,
    )


def inspect_package(
    src: BinaryIO,
    *,
    identities: Sequence[X25519Identity],
    sender_keys: SenderKeys,
    addressee: Addressee | None,
    limits: Limits = DEFAULT_LIMITS,
) -> VerifiedPackage:
    """Decrypt only as far as the manifest and its signature, and verify those.

    The entries are neither read nor checked (``entries_checked`` is False).
    """
    if not identities:
        raise InputError("no decryption key was given")
    counting = _HashingReader(src, None, None, hashing=False)
    plain = _open_age(counting, identities)
    return read_package_tar(
        plain, sender_keys=sender_keys, addressee=addressee, limits=limits, manifest_only=True
    )


def open_package(
    path: Path,
    on_entry: OnEntry,
    *,
    identities: Sequence[X25519Identity],
    sender_keys: SenderKeys,
    addressee: Addressee,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> VerifiedPackage:
    """Two passes over the package file at ``path``: verify everything, then stream the
    entries to ``on_entry``.

    ``on_entry`` is called only once pass 1 has verified the whole package;
    each entry is checked again as it streams in pass 2 (the file could change
    between passes), so the caller stages what it receives and keeps it only
    if this function returns. On any error it raises and the caller discards
    its staging.
    """

    def half(done: int, total: int | None) -> None:
        if progress is not None:
            progress(done // 2, total)

    def second_half(done: int, total: int | None) -> None:
        if progress is not None:
            progress((total or 0) // 2 + done // 2, total)

    with _open_file(path) as f:
        first = verify_package(
            f,
            identities=identities,
            sender_keys=sender_keys,
            addressee=addressee,
            limits=limits,
            progress=half,
        )
    with _open_file(path) as f:
        second = verify_package(
            f,
            identities=identities,
            sender_keys=sender_keys,
            addressee=addressee,
            limits=limits,
            on_entry=on_entry,
            progress=second_half,
        )
    # The same signed manifest in both passes means the same contents: pass 2 checked
    # every entry it streamed against that manifest's SHA-256s.
    if second.manifest_bytes != first.manifest_bytes:
        raise PackageTamperedError(
            f"{ALTERED} (the package file changed while it was being opened)"
        )
    return second


@contextlib.contextmanager
def _open_file(path: Path) -> Iterator[BinaryIO]:
    try:
        f = Path(path).open("rb")
    except FileNotFoundError:
        raise InputError(f"{path} does not exist") from None
    except OSError as exc:
        raise TransportError(f"cannot read {path}: {exc.strerror}") from None
    with f:
        yield f


def _write_chunks(target: Path, chunks: Iterable[bytes]) -> None:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        for chunk in chunks:
            f.write(chunk)


def extract_package(
    path: Path,
    out_dir: Path,
    *,
    identities: Sequence[X25519Identity],
    sender_keys: SenderKeys,
    addressee: Addressee,
    limits: Limits = DEFAULT_LIMITS,
    progress: Progress | None = None,
) -> VerifiedPackage:
    """Verify the package at ``path`` and only then write its files under ``out_dir``.

    ``out_dir`` must not exist. The files (manifest, signature and every entry,
    modes 0600/0700) are written to a hidden staging directory beside it in
    pass 2 of :func:`open_package`, which is renamed to ``out_dir`` only when
    everything has checked; on any error the staging directory is removed and
    ``out_dir`` is never created. This writes plaintext to disk: it is for a
    user who asked for exactly that.
    """
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise ConflictError(f"{out_dir} already exists; name a new directory to open into")
    parent = out_dir.parent
    if not parent.is_dir():
        raise InputError(f"{parent} is not a directory")
    staging: Path | None = None

    def stage(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        nonlocal staging
        if staging is None:
            staging = Path(tempfile.mkdtemp(prefix=".handover-open-", dir=parent))
        target = staging.joinpath(*entry.path.split("/"))
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_chunks(target, chunks)

    try:
        result = open_package(
            path,
            stage,
            identities=identities,
            sender_keys=sender_keys,
            addressee=addressee,
            limits=limits,
            progress=progress,
        )
        if staging is None:
            staging = Path(tempfile.mkdtemp(prefix=".handover-open-", dir=parent))
        _write_chunks(staging / MANIFEST_PATH, [result.manifest_bytes])
        _write_chunks(staging / SIGNATURE_PATH, [result.signature_text.encode("utf-8")])
        if out_dir.exists():
            raise ConflictError(f"{out_dir} appeared while the package was being opened")
        try:
            os.rename(staging, out_dir)
        except OSError as exc:
            raise ConflictError(f"cannot create {out_dir}: {exc.strerror}") from None
        staging = None
        return result
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
