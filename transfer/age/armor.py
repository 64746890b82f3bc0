"""ASCII armor for age files: strict, streaming PEM with type ``AGE ENCRYPTED FILE``.

Writing: 64-column lines of canonical padded base64 between the begin and end
lines, LF line endings. Reading (strict, as in the reference implementation):
whitespace is allowed only before the begin line and after the end line (up to
1 KiB each), lines may end in LF or CRLF, every line but the last is exactly 64
columns, the base64 is canonical with padding, and nothing else is allowed
(no PEM headers, no checksum line, no trailing garbage).
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

from transfer.age._format import Input
from transfer.age.errors import AgeArmorError

BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"
END = b"-----END AGE ENCRYPTED FILE-----"
COLUMNS = 64
BYTES_PER_LINE = 48
MAX_WHITESPACE = 1024
_WHITESPACE = b" \t\r\n\v\f"


def _armor_error(detail: str) -> AgeArmorError:
    return AgeArmorError(f"the file's text form (ASCII armor) is damaged or altered: {detail}")


class ArmorEncoder:
    """Writes armored text to ``write``; call :meth:`close` to write the end line."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._pending = bytearray()
        self._started = False
        self._closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._started:
            self._write(BEGIN + b"\n")
            self._started = True
        self._pending += data
        full = len(self._pending) - len(self._pending) % BYTES_PER_LINE
        if full:
            text = binascii.b2a_base64(bytes(self._pending[:full]), newline=False)
            del self._pending[:full]
            lines = [text[i : i + COLUMNS] for i in range(0, len(text), COLUMNS)]
            self._write(b"\n".join(lines) + b"\n")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if not self._started:
            self._write(BEGIN + b"\n")
        if self._pending:
            self._write(binascii.b2a_base64(bytes(self._pending), newline=True))
            self._pending.clear()
        self._write(END + b"\n")


class ArmorDecoder:
    """Reads armored text from ``src`` and returns the decoded bytes, strictly."""

    def __init__(self, src: Input) -> None:
        self._src = src
        self._started = False
        self._done = False

    def _line(self) -> bytes:
        text = self._src.readline(COLUMNS + 2)
        if not text:
            raise _armor_error("the end line is missing")
        if len(text) > COLUMNS + 2:
            raise _armor_error("a line is too long")
        if text.endswith(b"\n"):
            text = text[:-1]
        if text.endswith(b"\r"):
            text = text[:-1]
        return text

    def _start(self) -> None:
        skipped = 0
        while True:
            text = self._src.readline(MAX_WHITESPACE + len(BEGIN) + 2)
            if not text:
                raise _armor_error("the begin line is missing")
            stripped = text.strip(_WHITESPACE)
            if not stripped:
                skipped += len(text)
                if skipped > MAX_WHITESPACE:
                    raise _armor_error("too much blank space before the begin line")
                continue
            line = text.removesuffix(b"\n").removesuffix(b"\r")
            if line != BEGIN:
                raise _armor_error("it does not start with " + BEGIN.decode())
            self._started = True
            return

    def _finish(self) -> None:
        """After the end line, allow only a little whitespace."""
        tail = self._src.read(MAX_WHITESPACE)
        if tail.strip(_WHITESPACE):
            raise _armor_error("there is data after the end line")
        if len(tail) == MAX_WHITESPACE:
            raise _armor_error("too much blank space after the end line")
        self._done = True

    def read(self, n: int) -> bytes:
        """Up to about ``n`` decoded bytes (at least one line's worth); ``b""`` at the end."""
        if self._done:
            return b""
        if not self._started:
            self._start()
        out = bytearray()
        while len(out) < n and not self._done:
            line = self._line()
            if line == END:
                self._finish()
                break
            if len(line) > COLUMNS:
                raise _armor_error("a line is too long")
            if not line:
                raise _armor_error("there is an empty line inside the armor")
            try:
                data = binascii.a2b_base64(line, strict_mode=True)
            except binascii.Error:
                raise _armor_error("a line is not valid base64") from None
            if binascii.b2a_base64(data, newline=False) != line:
                raise _armor_error("a line is not canonical base64")
            out += data
            if len(data) < BYTES_PER_LINE:
                if self._line() != END:
                    raise _armor_error("a short line is not followed by the end line")
                self._finish()
        return bytes(out)
