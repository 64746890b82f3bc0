"""The age v1 header: stanzas, canonical base64, parsing and writing.

Internal module; the public names are re-exported by :mod:`transfer.age`.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from transfer.age.errors import AgeHeaderError
from transfer.errors import TransportError

VERSION_LINE = b"age-encryption.org/v1\n"
INTRO = b"age-encryption.org/"
STANZA_PREFIX = b"-> "
MAC_PREFIX = b"--- "
COLUMNS = 64
FILE_KEY_SIZE = 16
#: Largest header accepted, in bytes (the format sets no limit; this bounds memory).
MAX_HEADER_SIZE = 1 << 20
#: Largest single header line accepted, in bytes (including the newline).
MAX_LINE_SIZE = 64 * 1024

#: Why reading stopped when a non-blocking input had nothing to give.
NO_DATA = "the input is a non-blocking stream that had no data ready; give a file or a pipe"

_BAD_HEADER = "the file is not a valid age-encrypted file (its header is malformed)"


def b64encode(data: bytes) -> bytes:
    """Standard base64 without padding, as age writes it."""
    return binascii.b2a_base64(data, newline=False).rstrip(b"=")


def b64decode(text: bytes) -> bytes:
    """Decode canonical, unpadded standard base64; raise ``ValueError`` otherwise."""
    if b"=" in text or len(text) % 4 == 1:
        raise ValueError("not canonical unpadded base64")
    try:
        data = binascii.a2b_base64(text + b"=" * (-len(text) % 4))
    except binascii.Error:
        raise ValueError("not base64") from None
    # Re-encoding catches characters outside the alphabet and non-zero padding bits.
    if b64encode(data) != text:
        raise ValueError("not canonical base64")
    return data


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int = 32) -> bytes:
    """HKDF-SHA-256."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def is_arg(arg: bytes) -> bool:
    """An argument (or type) is one or more printable ASCII characters (VCHAR)."""
    return bool(arg) and all(33 <= c <= 126 for c in arg)


@dataclass(frozen=True)
class Stanza:
    """One recipient stanza: a type, its arguments and its (decoded) body."""

    type: str
    args: tuple[str, ...]
    body: bytes

    def encode(self) -> bytes:
        words = [self.type.encode("ascii"), *(a.encode("ascii") for a in self.args)]
        if not all(is_arg(w) for w in words):
            raise ValueError("stanza type and arguments must be printable ASCII")
        out = bytearray(STANZA_PREFIX + b" ".join(words) + b"\n")
        text = b64encode(self.body)
        for i in range(0, len(text), COLUMNS):
            out += text[i : i + COLUMNS] + b"\n"
        if len(text) % COLUMNS == 0:
            out += b"\n"
        return bytes(out)


def header_mac_key(file_key: bytes) -> bytes:
    return hkdf(file_key, b"", b"header")


def payload_key(file_key: bytes, nonce: bytes) -> bytes:
    return hkdf(file_key, nonce, b"payload")


def encode_header(stanzas: list[Stanza], file_key: bytes) -> bytes:
    """The full header, MAC line included."""
    body = VERSION_LINE + b"".join(s.encode() for s in stanzas) + b"---"
    mac = hmac.new(header_mac_key(file_key), body, hashlib.sha256).digest()
    return body + b" " + b64encode(mac) + b"\n"


class Input:
    """A buffered byte source with line reading, over any ``read(n) -> bytes`` callable.

    Given the source's ``readinto`` too, :meth:`readinto` reads straight into
    the caller's buffer once the bytes buffered here are used up. Memory is
    bounded by the largest request made of it.
    """

    def __init__(
        self,
        read: Callable[[int], bytes],
        readinto: Callable[[memoryview], int | None] | None = None,
    ) -> None:
        self._read = read
        self._readinto = readinto
        self._buf = bytearray()
        self._eof = False

    def _fill(self, n: int) -> None:
        while len(self._buf) < n and not self._eof:
            data = self._read(max(n - len(self._buf), 16 * 1024))
            if not data:
                self._eof = True
            else:
                self._buf += data

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes without consuming them (fewer only at end of input)."""
        self._fill(n)
        return bytes(self._buf[:n])

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer only at the end of the input."""
        if not self._buf and not self._eof:
            data = self._read(n)
            if len(data) == n:
                return data
            self._buf += data
            if not data:
                self._eof = True
        self._fill(n)
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def readinto(self, out: memoryview) -> int:
        """Fill ``out``; fewer bytes only at the end of the input. Returns the count."""
        size = len(out)
        n = min(len(self._buf), size)
        if n:
            out[:n] = self._buf[:n]
            del self._buf[:n]
        while n < size and not self._eof:
            if self._readinto is not None:
                got = self._readinto(out[n:])
                if got is None:
                    raise TransportError(NO_DATA)
            else:
                data = self._read(size - n)
                if data is None:
                    raise TransportError(NO_DATA)
                got = min(len(data), size - n)
                out[n : n + got] = data[:got]
                self._buf += data[got:]
            if not got:
                self._eof = True
            n += got
        return n

    def at_eof(self) -> bool:
        self._fill(1)
        return not self._buf

    def readline(self, limit: int) -> bytes:
        """One line with its ``\\n``; without it at end of input.

        Returns at most ``limit + 1`` bytes: a result longer than ``limit`` means
        the line is too long.
        """
        start = 0
        while True:
            i = self._buf.find(b"\n", start, limit + 1)
            if i >= 0:
                out = bytes(self._buf[: i + 1])
                del self._buf[: i + 1]
                return out
            if len(self._buf) > limit or self._eof:
                n = min(len(self._buf), limit + 1)
                out = bytes(self._buf[:n])
                del self._buf[:n]
                return out
            start = len(self._buf)
            self._fill(len(self._buf) + 1)


@dataclass(frozen=True)
class Header:
    stanzas: tuple[Stanza, ...]
    #: The bytes covered by the MAC: from the version line to ``---`` inclusive.
    mac_input: bytes
    mac: bytes

    def verify_mac(self, file_key: bytes) -> bool:
        expected = hmac.new(header_mac_key(file_key), self.mac_input, hashlib.sha256).digest()
        return hmac.compare_digest(expected, self.mac)


def _header_error(detail: str = "") -> AgeHeaderError:
    return AgeHeaderError(_BAD_HEADER + (f": {detail}" if detail else ""))


def parse_header(src: Input) -> Header:
    """Read and check the header's syntax; the stream is left at the payload nonce."""
    seen = bytearray()

    def line() -> bytes:
        text = src.readline(MAX_LINE_SIZE)
        if not text.endswith(b"\n"):
            if len(text) > MAX_LINE_SIZE:
                raise _header_error("a header line is too long")
            raise _header_error("the header is incomplete")
        seen.extend(text)
        if len(seen) > MAX_HEADER_SIZE:
            raise _header_error("the header is too large")
        return text[:-1]

    first = src.readline(len(VERSION_LINE))
    if first != VERSION_LINE:
        if not first:
            raise AgeHeaderError("the file is empty, it is not an age-encrypted file")
        if first.startswith(INTRO):
            raise AgeHeaderError(
                "the file uses an age format version this program does not support"
            )
        raise AgeHeaderError("the file is not an age-encrypted file")
    seen.extend(first)

    stanzas: list[Stanza] = []
    while True:
        text = line()
        if text.startswith(MAC_PREFIX):
            mac_input = bytes(seen[: len(seen) - len(text) - 1]) + b"---"
            try:
                mac = b64decode(text[len(MAC_PREFIX) :])
            except ValueError:
                raise _header_error("the header MAC is not valid base64") from None
            if len(mac) != 32:
                raise _header_error("the header MAC has the wrong length")
            return Header(tuple(stanzas), mac_input, mac)
        if not text.startswith(STANZA_PREFIX):
            raise _header_error("a header line is not a recipient stanza")
        words = text[len(STANZA_PREFIX) :].split(b" ")
        if not all(is_arg(w) for w in words):
            raise _header_error("a recipient stanza has an empty or invalid argument")
        body = bytearray()
        while True:
            chunk = line()
            if len(chunk) > COLUMNS:
                raise _header_error("a recipient stanza body line is too long")
            try:
                body += b64decode(chunk)
            except ValueError:
                raise _header_error("a recipient stanza body is not valid base64") from None
            if len(chunk) < COLUMNS:
                break
        type_, *args = (w.decode("ascii") for w in words)
        stanzas.append(Stanza(type_, tuple(args), bytes(body)))
