"""Encrypted document files: the ``HODOC1`` chunked format, under keyed names.

::

    header  = b"HODOC1\\0\\0" || salt (32 bytes)
    subkey  = HKDF-SHA256(pupil data key, salt, info=b"handover/document/v1")
    chunk_i = AES-256-GCM(subkey, nonce_i, plaintext_i, aad_i)
    nonce_i = i (11 bytes big-endian) || final (1 byte)
    aad_i   = b"handover/document/v1|" || pupil id || b"|" || i (8 bytes BE) || final

Plaintext chunks are :data:`CHUNK` bytes except the last, which has 1 to
:data:`CHUNK` bytes (0 only for an empty document) and ``final = 1``.
Truncation, reordering, extension and moving a file to another pupil all fail
authentication. Memory use is one chunk, whatever the size.

A file's **name** is not the SHA-256 of its plaintext (which would let anyone
holding a disk image or a backup confirm that a known file is held for a
pupil) but :func:`document_name`: an HMAC-SHA256 of it under a key derived
from the pupil's data key (``HKDF info "handover/document-name/v1"``). The
same bytes uploaded twice for one pupil still get one file; the same bytes for
two pupils get unrelated names; and once the pupil's key is destroyed nobody
can recompute a name.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transfer.errors import IntegrityError, TooLargeError, TransportError
from transfer.private_files import create_private, private_dir

MAGIC = b"HODOC1\x00\x00"
SALT_SIZE = 32
CHUNK = 64 * 1024
TAG = 16
#: Sealed chunks read from a stored document at a time (about 512 KiB; with the next block
#: read ahead, a reader holds about 1 MiB: the memory tests allow 2 MiB).
READ_CHUNKS = 8
_INFO = b"handover/document/v1"
_NAME_INFO = b"handover/document-name/v1"


class DocumentTampered(IntegrityError):
    """A stored document failed its integrity check (altered, truncated or misplaced)."""


def _subkey(pupil_key: bytes, salt: bytes) -> AESGCM:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=_INFO)
    return AESGCM(hkdf.derive(pupil_key))


def _nonce(index: int, final: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if final else b"\x00")


def _aad(pupil_id: str, index: int, final: bool) -> bytes:
    return (
        _INFO
        + b"|"
        + pupil_id.encode()
        + b"|"
        + index.to_bytes(8, "big")
        + (b"\x01" if final else b"\x00")
    )


def document_name(pupil_key: bytes, pupil_id: str, sha256: str) -> str:
    """The file name of a pupil's document whose plaintext has SHA-256 ``sha256`` (hex)."""
    name_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_NAME_INFO).derive(
        pupil_key
    )
    message = pupil_id.encode() + b"|" + sha256.encode("ascii")
    return hmac.new(name_key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class StoredBlob:
    #: SHA-256 of the plaintext (kept sealed in the database, never as a file name).
    sha256: str
    size: int
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


async def _write(fh: BinaryIO, data: bytes) -> None:
    await asyncio.to_thread(fh.write, data)


async def write_encrypted(
    chunks: AsyncIterable[bytes],
    pupil_key: bytes,
    pupil_id: str,
    directory: Path,
    max_bytes: int,
) -> StoredBlob:
    """Encrypt a stream into ``directory/<document_name>``; nothing is kept on any error."""
    await asyncio.to_thread(private_dir, directory)
    salt = os.urandom(SALT_SIZE)
    cipher = _subkey(pupil_key, salt)
    digest = hashlib.sha256()
    tmp = directory / f".upload-{os.urandom(8).hex()}"
    size = 0
    index = 0
    pending = bytearray()
    fh = os.fdopen(await asyncio.to_thread(create_private, tmp), "wb")
    try:
        await _write(fh, MAGIC + salt)
        async for piece in chunks:
            size += len(piece)
            if size > max_bytes:
                raise TooLargeError(f"the document is larger than the limit of {max_bytes} bytes")
            digest.update(piece)
            pending += piece
            # Keep at least one byte pending so the final chunk is never a full
            # chunk written too early without its final flag.
            while len(pending) > CHUNK:
                block = bytes(pending[:CHUNK])
                del pending[:CHUNK]
                await _write(
                    fh, cipher.encrypt(_nonce(index, False), block, _aad(pupil_id, index, False))
                )
                index += 1
        await _write(
            fh, cipher.encrypt(_nonce(index, True), bytes(pending), _aad(pupil_id, index, True))
        )
        await asyncio.to_thread(fh.flush)
        await asyncio.to_thread(os.fsync, fh.fileno())
        fh.close()
        sha = digest.hexdigest()
        final = directory / document_name(pupil_key, pupil_id, sha)
        await asyncio.to_thread(os.replace, tmp, final)
        return StoredBlob(sha, size, final)
    except BaseException as exc:
        fh.close()
        await asyncio.to_thread(tmp.unlink, missing_ok=True)
        if isinstance(exc, OSError):
            raise TransportError(f"could not store the document: {exc.strerror}") from None
        raise


async def read_decrypted(
    path: Path, pupil_key: bytes, pupil_id: str, expected_sha256: str
) -> AsyncIterator[bytes]:
    """Decrypt ``path`` chunk by chunk; raise :class:`DocumentTampered` on any mismatch."""
    try:
        fh = await asyncio.to_thread(path.open, "rb")
    except FileNotFoundError:
        raise DocumentTampered("a stored document file is missing") from None
    try:
        header = await asyncio.to_thread(fh.read, len(MAGIC) + SALT_SIZE)
        if len(header) != len(MAGIC) + SALT_SIZE or header[: len(MAGIC)] != MAGIC:
            raise DocumentTampered("a stored document is damaged or in an unknown format")
        cipher = _subkey(pupil_key, header[len(MAGIC) :])
        digest = hashlib.sha256()
        sealed = CHUNK + TAG
        # READ_CHUNKS sealed chunks per read (one thread hop, not one per 64 KiB chunk);
        # a chunk is the final one when nothing follows it in the file.
        block = await asyncio.to_thread(fh.read, sealed * READ_CHUNKS)
        index = 0
        while True:
            following = await asyncio.to_thread(fh.read, sealed * READ_CHUNKS)
            for start in range(0, max(len(block), 1), sealed):
                current = block[start : start + sealed]
                final = not following and start + sealed >= len(block)
                try:
                    plain = cipher.decrypt(
                        _nonce(index, final), current, _aad(pupil_id, index, final)
                    )
                except InvalidTag:
                    raise DocumentTampered(
                        "a stored document failed its integrity check: it was altered or truncated"
                    ) from None
                digest.update(plain)
                if plain:
                    yield plain
                index += 1
            if not following:
                break
            block = following
        if digest.hexdigest() != expected_sha256:
            raise DocumentTampered("a stored document does not match its recorded SHA-256")
    finally:
        fh.close()
