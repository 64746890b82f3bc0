"""Streaming age encryption and decryption: :class:`AgeWriter` and :class:`AgeReader`.

The payload is ChaCha20-Poly1305 in the STREAM construction: 64 KiB chunks,
an 11-byte big-endian counter and a last-chunk flag as nonce. Memory use is a
few chunks, whatever the size of the file.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from types import TracebackType
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from transfer.age._format import (
    FILE_KEY_SIZE,
    INTRO,
    Input,
    Stanza,
    encode_header,
    parse_header,
    payload_key,
)
from transfer.age.armor import ArmorDecoder, ArmorEncoder
from transfer.age.errors import (
    AgeError,
    AgeHeaderError,
    AgeHMACError,
    AgeKeyError,
    AgeNoMatchError,
    AgePayloadError,
)
from transfer.age.keys import SCRYPT_TYPE, Identity, Recipient

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
NONCE_SIZE = 16
_CT_CHUNK = CHUNK_SIZE + TAG_SIZE
_MAX_COUNTER = 1 << 88

_DAMAGED = "the file is damaged or was altered after encryption"


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _write_all(dst: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = dst.write(view)
        if n is None or n >= len(view):
            return
        view = view[n:]


class AgeWriter(io.RawIOBase):
    """Encrypts what is written to it, streaming into ``dst``.

    :meth:`close` writes the last chunk (and the armor's end line); it does not
    close ``dst``. Used as a context manager, a ``with`` block that ends with an
    exception leaves the file unfinished on purpose, so that no reader can take
    a cut-short file for a complete one.
    """

    def __init__(self, dst: BinaryIO, recipients: Sequence[Recipient], armor: bool = False) -> None:
        super().__init__()
        self._buf = bytearray()
        self._finished = False
        if not recipients:
            raise AgeKeyError("at least one recipient is needed to encrypt")
        self._dst = dst
        self._armor = ArmorEncoder(lambda b: _write_all(dst, b)) if armor else None
        file_key = os.urandom(FILE_KEY_SIZE)
        stanzas = [s for r in recipients for s in r.wrap(file_key)]
        if any(s.type == SCRYPT_TYPE for s in stanzas) and len(stanzas) != 1:
            raise AgeKeyError("a passphrase must be the only recipient of a file")
        nonce = os.urandom(NONCE_SIZE)
        self._aead = ChaCha20Poly1305(payload_key(file_key, nonce))
        self._counter = 0
        self._emit(encode_header(stanzas, file_key) + nonce)

    def _emit(self, data: bytes) -> None:
        if self._armor is not None:
            self._armor.write(data)
        else:
            _write_all(self._dst, data)

    def _seal(self, chunk: bytes | bytearray | memoryview, last: bool) -> None:
        if self._counter >= _MAX_COUNTER:
            raise AgeError("the file is too large for the age format")
        self._emit(self._aead.encrypt(_nonce(self._counter, last), chunk, None))
        self._counter += 1

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed or self._finished:
            raise ValueError("write to a closed AgeWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        if len(self._buf) + size <= CHUNK_SIZE:
            self._buf += view
            return size
        # Keep at least one byte back: the last chunk is sealed differently.
        if self._buf:
            take = CHUNK_SIZE - len(self._buf)
            self._buf += view[:take]
            view = view[take:]
            self._seal(self._buf, last=False)
            self._buf.clear()
        while len(view) > CHUNK_SIZE:
            self._seal(view[:CHUNK_SIZE], last=False)
            view = view[CHUNK_SIZE:]
        self._buf += view
        return size

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._finished:
                self._finished = True
                self._seal(self._buf, last=True)
                self._buf.clear()
                if self._armor is not None:
                    self._armor.close()
                self._dst.flush()
        finally:
            super().close()

    def abort(self) -> None:
        """Stop without writing the last chunk: the output will not decrypt."""
        self._finished = True
        self._buf.clear()
        super().close()

    def __del__(self) -> None:
        # A writer dropped without close() was not finished on purpose: never
        # seal what was written so far into a file that looks complete.
        if not self.closed:
            self.abort()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self.abort()
        else:
            self.close()


def _unwrap(stanzas: Sequence[Stanza], identities: Sequence[Identity]) -> bytes:
    """The file key from the first identity that opens a stanza."""
    if any(s.type == SCRYPT_TYPE for s in stanzas) and len(stanzas) != 1:
        raise AgeHeaderError(
            "the file is not a valid age-encrypted file "
            "(a passphrase-protected file must have no other recipient)"
        )
    for identity in identities:
        file_key = identity.unwrap(stanzas)
        if file_key is not None:
            if len(file_key) != FILE_KEY_SIZE:
                raise AgeHeaderError(
                    "the file is not a valid age-encrypted file (its file key has the wrong size)"
                )
            return file_key
    raise AgeNoMatchError("this file is not encrypted to any of the given identities")


class AgeReader(io.RawIOBase):
    """Decrypts ``src`` as it is read; binary or armored input is detected.

    The header is read and checked, and the file key found, when the reader is
    made: a wrong key or a damaged header raises there. Plaintext is released
    one authenticated chunk at a time; a damaged chunk raises
    :class:`AgePayloadError` after the chunks before it were returned.
    :meth:`close` does not close ``src``.
    """

    def __init__(self, src: BinaryIO, identities: Sequence[Identity]) -> None:
        super().__init__()
        if not identities:
            raise AgeKeyError("at least one identity is needed to decrypt")
        raw = Input(src.read)
        start = raw.peek(len(INTRO))
        self.armored = bool(start) and not INTRO.startswith(start)
        self._in = Input(ArmorDecoder(raw).read) if self.armored else raw
        header = parse_header(self._in)
        file_key = _unwrap(header.stanzas, identities)
        if not header.verify_mac(file_key):
            raise AgeHMACError(
                "the file is damaged or was altered after encryption (its header does not verify)"
            )
        nonce = self._in.read(NONCE_SIZE)
        if len(nonce) != NONCE_SIZE:
            raise AgeHeaderError("the file is truncated: it ends right after its header")
        self._aead = ChaCha20Poly1305(payload_key(file_key, nonce))
        self._counter = 0
        self._chunk = memoryview(b"")
        self._done = False
        self._error: AgeError | None = None

    def readable(self) -> bool:
        return True

    def _fail(self, message: str = _DAMAGED) -> AgePayloadError:
        self._error = AgePayloadError(message)
        return self._error

    def _next_chunk(self) -> bool:
        """Decrypt the next chunk into ``self._chunk``; ``False`` at the end."""
        if self._error is not None:
            raise self._error
        if self._done:
            return False
        try:
            data = self._in.read(_CT_CHUNK)
        except AgeError as exc:
            self._error = exc
            raise
        if not data:
            raise self._fail("the file is truncated: the end of the encrypted data is missing")
        if self._counter >= _MAX_COUNTER:
            raise self._fail()
        last = len(data) < _CT_CHUNK
        try:
            plain = self._aead.decrypt(_nonce(self._counter, last), data, None)
        except InvalidTag:
            if last:
                raise self._fail() from None
            # A full-size chunk at the end of the file is the last one.
            try:
                plain = self._aead.decrypt(_nonce(self._counter, True), data, None)
            except InvalidTag:
                raise self._fail() from None
            last = True
        if last:
            if not plain and self._counter > 0:
                raise self._fail()
            self._done = True
        self._counter += 1
        self._chunk = memoryview(plain)
        return True

    def _check_end(self) -> None:
        """After the last chunk: nothing may follow it."""
        try:
            if not self._in.at_eof():
                raise self._fail("the file has extra data appended after its end")
        except AgeError as exc:
            self._error = exc
            raise

    def _fill(self) -> bool:
        while not self._chunk:
            if self._done:
                self._check_end()
                return False
            if not self._next_chunk():
                return False
        return True

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("read from a closed AgeReader")

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        self._check_open()
        out = memoryview(buffer).cast("B")
        if not out:
            return 0
        if not self._fill():
            return 0
        n = min(len(out), len(self._chunk))
        out[:n] = self._chunk[:n]
        self._chunk = self._chunk[n:]
        return n

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        if size is None or size < 0:
            return self.readall()
        parts: list[bytes] = []
        wanted = size
        while wanted > 0:
            try:
                if not self._fill():
                    break
            except AgeError:
                if parts:
                    break  # return what verified; the error is raised on the next call
                raise
            n = min(wanted, len(self._chunk))
            parts.append(bytes(self._chunk[:n]))
            self._chunk = self._chunk[n:]
            wanted -= n
        return b"".join(parts)

    def readall(self) -> bytes:
        self._check_open()
        parts: list[bytes] = []
        while self._fill():
            parts.append(bytes(self._chunk))
            self._chunk = memoryview(b"")
        return b"".join(parts)


def encrypt(data: bytes, recipients: Sequence[Recipient], armor: bool = False) -> bytes:
    """Encrypt ``data`` in memory."""
    out = io.BytesIO()
    with AgeWriter(out, recipients, armor=armor) as writer:
        writer.write(data)
    return out.getvalue()


def decrypt(data: bytes, identities: Sequence[Identity]) -> bytes:
    """Decrypt ``data`` in memory (binary or armored)."""
    return AgeReader(io.BytesIO(data), identities).read()


def encrypt_stream(
    src: BinaryIO, dst: BinaryIO, recipients: Sequence[Recipient], armor: bool = False
) -> None:
    """Encrypt ``src`` into ``dst`` chunk by chunk (``dst`` is not closed)."""
    with AgeWriter(dst, recipients, armor=armor) as writer:
        while block := src.read(CHUNK_SIZE * 4):
            writer.write(block)


def decrypt_stream(src: BinaryIO, dst: BinaryIO, identities: Sequence[Identity]) -> None:
    """Decrypt ``src`` into ``dst`` chunk by chunk; what was written before an error verified."""
    reader = AgeReader(src, identities)
    buf = bytearray(CHUNK_SIZE * 4)
    view = memoryview(buf)
    while n := reader.readinto(view):
        _write_all(dst, view[:n])
