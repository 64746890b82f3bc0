"""Streaming age encryption and decryption: :class:`AgeWriter` and :class:`AgeReader`.

The payload is ChaCha20-Poly1305 in the STREAM construction: 64 KiB chunks,
an 11-byte big-endian counter and a last-chunk flag as nonce. Memory use is a
few chunks, whatever the size of the file: every buffer is allocated once per
reader or writer and reused, chunks are sealed and opened in place
(``encrypt_into`` / ``decrypt_into``), and the writer hands ``dst`` up to
:data:`BATCH_CHUNKS` sealed chunks per ``write`` call.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from transfer.age._format import (
    FILE_KEY_SIZE,
    INTRO,
    NO_DATA,
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
from transfer.errors import TransportError

CHUNK_SIZE = 64 * 1024
TAG_SIZE = 16
NONCE_SIZE = 16
#: Sealed chunks the writer gathers before one ``write`` to its destination (about 1 MiB).
BATCH_CHUNKS = 16
#: The size of block :func:`encrypt_stream` and :func:`decrypt_stream` move at a time.
BLOCK_SIZE = BATCH_CHUNKS * CHUNK_SIZE
_CT_CHUNK = CHUNK_SIZE + TAG_SIZE
_MAX_COUNTER = 1 << 88

_DAMAGED = "the file is damaged or was altered after encryption"

ReadInto = Callable[[memoryview], "int | None"]


def _nonce(counter: int, last: bool) -> bytes:
    return counter.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


def _write_all(dst: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = dst.write(view)
        if n is None or n >= len(view):
            return
        view = view[n:]


_TRUSTED_READERS = (io.BufferedReader, io.BufferedRandom, io.FileIO, io.BytesIO)


def readinto_of(src: object) -> ReadInto | None:
    """``src.readinto`` for the standard binary streams that surely have one, else ``None``.

    A subclass of :class:`io.RawIOBase` that only overrides ``read`` inherits a
    ``readinto`` that raises, and a wrapper that overrides ``read`` (to count or
    hash) must see every byte, so only the standard classes (files, buffered
    files, standard input, :class:`io.BytesIO`) and subclasses that keep their
    ``read`` are trusted.
    """
    for base in _TRUSTED_READERS:
        if isinstance(src, base) and type(src).read is base.read:
            readinto: ReadInto = src.readinto
            return readinto
    return None


class AgeWriter(io.RawIOBase):
    """Encrypts what is written to it, streaming into ``dst``.

    Sealed chunks are gathered and handed to ``dst`` about 1 MiB at a time (and
    by :meth:`flush`), as a :class:`memoryview` of a buffer that is reused: like
    any binary stream, ``dst.write`` must not keep it after returning.

    :meth:`close` writes the last chunk (and the armor's end line); it does not
    close ``dst``. Used as a context manager, a ``with`` block that ends with an
    exception leaves the file unfinished on purpose, so that no reader can take
    a cut-short file for a complete one.
    """

    def __init__(self, dst: BinaryIO, recipients: Sequence[Recipient], armor: bool = False) -> None:
        super().__init__()
        self._finished = False
        # Plaintext not sealed yet: never more than one chunk, sealed once more arrives
        # (the last chunk is sealed differently, so a full chunk waits for the next byte).
        self._pending = memoryview(bytearray(CHUNK_SIZE))
        self._pending_len = 0
        # Sealed chunks not yet handed to dst.
        self._out = memoryview(bytearray(BATCH_CHUNKS * _CT_CHUNK))
        self._out_len = 0
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

    def _emit(self, data: bytes | memoryview) -> None:
        if self._armor is not None:
            self._armor.write(data)
        else:
            _write_all(self._dst, data)

    def _emit_sealed(self) -> None:
        if self._out_len:
            self._emit(self._out[: self._out_len])
            self._out_len = 0

    def _seal(self, chunk: memoryview, last: bool) -> None:
        if self._counter >= _MAX_COUNTER:
            raise AgeError("the file is too large for the age format")
        start = self._out_len
        end = start + len(chunk) + TAG_SIZE
        if end > len(self._out):
            self._emit_sealed()
            start, end = 0, len(chunk) + TAG_SIZE
        self._aead.encrypt_into(_nonce(self._counter, last), chunk, None, self._out[start:end])
        self._out_len = end
        self._counter += 1

    def writable(self) -> bool:
        return True

    def write(self, data: bytes | bytearray | memoryview) -> int:  # type: ignore[override]
        if self.closed or self._finished:
            raise ValueError("write to a closed AgeWriter")
        view = memoryview(data).cast("B")
        size = len(view)
        held = self._pending_len
        if held + size <= CHUNK_SIZE:
            self._pending[held : held + size] = view
            self._pending_len = held + size
            return size
        # Keep at least one byte back: the last chunk is sealed differently.
        if held:
            take = CHUNK_SIZE - held
            self._pending[held:] = view[:take]
            view = view[take:]
            self._seal(self._pending, last=False)
        while len(view) > CHUNK_SIZE:
            self._seal(view[:CHUNK_SIZE], last=False)
            view = view[CHUNK_SIZE:]
        self._pending_len = len(view)
        self._pending[: self._pending_len] = view
        return size

    def write_from(self, src: BinaryIO) -> int:
        """Encrypt everything left in ``src``; return the number of bytes read.

        Standard files are read with ``readinto`` into one reused buffer.
        """
        buffer = memoryview(bytearray(BLOCK_SIZE))
        total = 0
        readinto = readinto_of(src)
        while True:
            if readinto is not None:
                n = readinto(buffer)
                if n is None:
                    raise TransportError(NO_DATA)
                if not n:
                    return total
                self.write(buffer[:n])
            else:
                block = src.read(BLOCK_SIZE)
                if block is None:
                    raise TransportError(NO_DATA)
                if not block:
                    return total
                n = len(block)
                self.write(block)
            total += n

    def flush(self) -> None:
        """Hand the chunks sealed so far to ``dst`` and flush it.

        Up to one chunk of plaintext stays held back: a chunk is sealed only
        when it is known whether it is the last.
        """
        super().flush()
        if not self._finished:
            self._emit_sealed()
            self._dst.flush()

    def close(self) -> None:
        if self.closed:
            return
        try:
            if not self._finished:
                self._finished = True
                self._seal(self._pending[: self._pending_len], last=True)
                self._pending_len = 0
                self._emit_sealed()
                if self._armor is not None:
                    self._armor.close()
                self._dst.flush()
        finally:
            self._release()
            super().close()

    def abort(self) -> None:
        """Stop without writing the last chunk: the output will not decrypt."""
        self._finished = True
        self._release()
        super().close()

    def _release(self) -> None:
        self._pending = self._out = memoryview(b"")
        self._pending_len = self._out_len = 0

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
    :meth:`readinto` with room for whole chunks decrypts them straight into the
    caller's buffer. :meth:`close` does not close ``src``.
    """

    def __init__(self, src: BinaryIO, identities: Sequence[Identity]) -> None:
        super().__init__()
        if not identities:
            raise AgeKeyError("at least one identity is needed to decrypt")
        raw = Input(src.read, readinto_of(src))
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
        self._sealed = memoryview(bytearray(_CT_CHUNK))  # one chunk as read from src
        self._plain = memoryview(bytearray(CHUNK_SIZE))  # for reads smaller than a chunk
        self._chunk = self._plain[:0]  # verified plaintext not returned yet
        self._done = False
        self._error: AgeError | None = None

    def readable(self) -> bool:
        return True

    def _fail(self, message: str = _DAMAGED) -> AgePayloadError:
        self._error = AgePayloadError(message)
        return self._error

    def _decrypt_into(self, data: memoryview, out: memoryview, last: bool) -> bool:
        try:
            self._aead.decrypt_into(_nonce(self._counter, last), data, None, out)
        except InvalidTag:
            return False
        return True

    def _open_chunk(self, out: memoryview) -> int:
        """Decrypt the next chunk into ``out`` (room for a whole chunk); its length.

        Nothing unverified is left in ``out`` when this raises.
        """
        if self._error is not None:
            raise self._error
        try:
            n = self._in.readinto(self._sealed)
        except AgeError as exc:
            self._error = exc
            raise
        if not n:
            raise self._fail("the file is truncated: the end of the encrypted data is missing")
        if self._counter >= _MAX_COUNTER or n < TAG_SIZE:
            raise self._fail()
        data = self._sealed[:n]
        plain = out[: n - TAG_SIZE]
        last = n < _CT_CHUNK
        opened = self._decrypt_into(data, plain, last)
        if not opened and not last:
            # A full-size chunk at the end of the file is the last one.
            opened = last = self._decrypt_into(data, plain, True)
        if not opened:
            plain[:] = bytes(len(plain))  # decrypt_into leaves unverified plaintext behind
            raise self._fail()
        if last:
            if not plain and self._counter > 0:
                raise self._fail()
            self._done = True
        self._counter += 1
        return len(plain)

    def _check_end(self) -> None:
        """After the last chunk: nothing may follow it."""
        try:
            if not self._in.at_eof():
                raise self._fail("the file has extra data appended after its end")
        except AgeError as exc:
            self._error = exc
            raise

    def _fill(self) -> bool:
        """Make ``self._chunk`` hold plaintext; ``False`` at the (checked) end."""
        if self._error is not None:
            raise self._error
        while not self._chunk:
            if self._done:
                self._check_end()
                return False
            self._chunk = self._plain[: self._open_chunk(self._plain)]
        return True

    def _check_open(self) -> None:
        if self.closed:
            raise ValueError("read from a closed AgeReader")

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        """Fill ``buffer`` with verified plaintext; fewer bytes only at the end.

        If a damaged chunk follows verified ones, the verified bytes are
        returned and the error is raised by the next call.
        """
        self._check_open()
        out = memoryview(buffer).cast("B")
        size = len(out)
        total = 0
        while total < size:
            try:
                if not self._chunk and not self._done and size - total >= CHUNK_SIZE:
                    total += self._open_chunk(out[total:])
                    continue
                if not self._fill():
                    break
            except AgeError:
                if total:
                    break  # return what verified; the error is raised on the next call
                raise
            n = min(size - total, len(self._chunk))
            out[total : total + n] = self._chunk[:n]
            self._chunk = self._chunk[n:]
            total += n
        return total

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
            self._chunk = self._plain[:0]
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
    """Encrypt ``src`` into ``dst`` (``dst`` is not closed); on error it is left unfinished."""
    with AgeWriter(dst, recipients, armor=armor) as writer:
        writer.write_from(src)


def decrypt_stream(src: BinaryIO, dst: BinaryIO, identities: Sequence[Identity]) -> None:
    """Decrypt ``src`` into ``dst`` a block at a time; what was written before an error verified."""
    copy_plaintext(AgeReader(src, identities), dst)


def copy_plaintext(reader: AgeReader, dst: BinaryIO) -> None:
    """Write all of ``reader``'s plaintext to ``dst``, :data:`BLOCK_SIZE` bytes per write.

    Chunks are decrypted straight into one reused buffer; only verified
    plaintext is ever written.
    """
    view = memoryview(bytearray(BLOCK_SIZE))
    while n := reader.readinto(view):
        _write_all(dst, view[:n])
