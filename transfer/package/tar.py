"""A minimal POSIX tar (ustar + pax) writer and a hostile-input-safe streaming reader.

The writer emits only regular files, with fixed metadata (mode 0644, owner 0,
no user or group names) and pax extended headers only where ustar cannot hold
a value (long paths, sizes of 8 GiB or more).

The reader is written for input from outside: it parses headers itself
rather than through :mod:`tarfile` (whose stream mode reads a GNU long name or
a pax header of any declared size into memory). It accepts regular files and
pax extended headers (at most :data:`MAX_PAX_BYTES`), and refuses, with a
specific message, absolute paths, ``..`` and ``.`` parts, empty parts,
backslashes and control characters in names, every link and device type,
directories, FIFOs, GNU long names and sparse files, global pax headers, bad
header checksums, bad magic, and anything but zero padding after the end of
the archive. It never reads more than ``max_total`` bytes. Sizes are enforced:
a member's data is exactly its declared size, and the caller compares that to
the manifest before reading it.

Pure: works on file-like objects, no files are opened.
"""

from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Protocol

from transfer.package.errors import EntryMismatchError, PackageLimitError, UnsafeTarError

__all__ = [
    "BLOCK_SIZE",
    "MAX_PAX_BYTES",
    "RECORD_SIZE",
    "Member",
    "TarReader",
    "TarWriter",
    "check_member_path",
    "end_of_archive",
    "member_header",
    "member_padding",
]

BLOCK_SIZE = 512
#: Archives are padded to a multiple of this (tar's default blocking factor, 20).
RECORD_SIZE = 20 * BLOCK_SIZE
#: The largest pax extended header the reader accepts.
MAX_PAX_BYTES = 64 * 1024
_READ_CHUNK = 64 * 1024
_ZERO_BLOCK = bytes(BLOCK_SIZE)

_TYPE_NAMES = {
    b"1": "a hard link",
    b"2": "a symbolic link",
    b"3": "a character device",
    b"4": "a block device",
    b"5": "a directory",
    b"6": "a FIFO",
    b"7": "a contiguous file",
    b"g": "a global pax header",
    b"L": "a GNU long name",
    b"K": "a GNU long link name",
    b"S": "a GNU sparse file",
    b"V": "a GNU volume header",
    b"M": "a GNU multi-volume part",
}


class _Writable(Protocol):
    def write(self, data: bytes, /) -> int: ...


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


def _shown(path: str) -> str:
    text = path if len(path) <= 80 else path[:77] + "..."
    return text.encode("unicode_escape").decode("ascii")


def check_member_path(path: str) -> str:
    """Return ``path`` if it is a safe relative member name, else raise :class:`UnsafeTarError`."""
    if path == "":
        raise UnsafeTarError("the package holds an entry with an empty name")
    if path.startswith("/"):
        raise UnsafeTarError(f"the package holds an entry with an absolute path ({_shown(path)})")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in path):
        raise UnsafeTarError(
            f"the package holds an entry whose name has control characters ({_shown(path)})"
        )
    if "\\" in path:
        raise UnsafeTarError(
            f"the package holds an entry whose name has a backslash ({_shown(path)})"
        )
    parts = path.split("/")
    if ".." in parts:
        raise UnsafeTarError(
            f"the package holds an entry whose path climbs out of the package ({_shown(path)})"
        )
    if "." in parts or "" in parts:
        raise UnsafeTarError(
            f"the package holds an entry with an empty or '.' part in its path ({_shown(path)})"
        )
    return path


def _padding(size: int) -> int:
    return -size % BLOCK_SIZE


def member_header(path: str, size: int, *, mtime: int = 0) -> bytes:
    """The header of one regular file of ``size`` bytes (fixed metadata; pax only if needed).

    For writers that produce the stream piece by piece (an async generator):
    header, exactly ``size`` bytes of data, :func:`member_padding`, and at the end
    :func:`end_of_archive`. :class:`TarWriter` is the checked way to do the same.
    """
    check_member_path(path)
    info = tarfile.TarInfo(name=path)
    info.size = size
    info.mtime = mtime
    info.mode = 0o644
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict")


def member_padding(size: int) -> bytes:
    """The zero bytes after a member's ``size`` bytes of data."""
    return bytes(_padding(size))


def end_of_archive(written: int) -> bytes:
    """The end-of-archive marker and padding, after ``written`` bytes of members."""
    end = 2 * BLOCK_SIZE
    return bytes(end + (-(written + end) % RECORD_SIZE))


# --------------------------------------------------------------------- writer


class TarWriter:
    """Writes a POSIX tar stream of regular files to ``out`` (nothing is buffered whole)."""

    def __init__(self, out: _Writable, *, mtime: int = 0) -> None:
        self._out = out
        self._mtime = mtime
        self._written = 0
        self._closed = False
        self._names: set[str] = set()

    def _write(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self._written += len(data)

    def add(self, path: str, size: int, chunks: Iterable[bytes], *, hash_data: bool = True) -> str:
        """Write one regular file of exactly ``size`` bytes; return the SHA-256 (hex) of its data
        (with ``hash_data=False``, for bytes their source checks itself: an empty string).

        Raises :class:`EntryMismatchError` when ``chunks`` hold more or fewer
        bytes than ``size`` (the stream is then unusable: discard it).
        """
        if self._closed:
            raise ValueError("the tar stream is closed")
        check_member_path(path)
        if path in self._names:
            raise ValueError(f"{path} is already in the tar stream")
        self._names.add(path)
        self._write(member_header(path, size, mtime=self._mtime))
        digest = hashlib.sha256() if hash_data else None
        count = 0
        source = iter(chunks)
        try:
            for chunk in source:
                if not chunk:
                    continue
                count += len(chunk)
                if count > size:
                    raise EntryMismatchError(
                        f"{path} is larger than its declared {size} bytes; the package was not made"
                    )
                if digest is not None:
                    digest.update(chunk)
                self._write(bytes(chunk))
        finally:
            # A generator's own clean-up (a stored document's reader, closed on the event
            # loop by the bridge) runs here, on this thread, whatever stopped the writing:
            # not later, wherever the garbage collector happens to finalise it.
            close = getattr(source, "close", None)
            if close is not None:
                close()
        if count != size:
            raise EntryMismatchError(
                f"{path} has {count} bytes, not its declared {size}; the package was not made"
            )
        self._write(bytes(_padding(size)))
        return digest.hexdigest() if digest is not None else ""

    def close(self) -> None:
        """Write the end-of-archive marker and pad to a whole record."""
        if self._closed:
            return
        self._write(end_of_archive(self._written))
        self._closed = True


# --------------------------------------------------------------------- reader


@dataclass(frozen=True)
class Member:
    """A regular file in the tar stream: its safe path and its exact size."""

    path: str
    size: int


def _octal(field: bytes, what: str) -> int:
    if field and field[0] & 0x80:
        if field[0] != 0x80:
            raise UnsafeTarError(f"the package's tar header has a negative or huge {what}")
        return int.from_bytes(field[1:], "big")
    text = field.split(b"\x00", 1)[0].strip(b" ")
    if not text:
        return 0
    try:
        if not all(48 <= c <= 55 for c in text):
            raise ValueError(what)
        return int(text, 8)
    except ValueError:
        raise UnsafeTarError(f"the package's tar header has an invalid {what}") from None


def _cstring(field: bytes) -> bytes:
    return field.split(b"\x00", 1)[0]


def _decode_name(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsafeTarError("the package holds an entry whose name is not UTF-8") from None


def _parse_pax(data: bytes) -> dict[str, str]:
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        if data[pos:].strip(b"\x00") == b"":
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise UnsafeTarError("the package's tar has a malformed pax header")
        try:
            length = int(data[pos:space].decode("ascii"), 10)
        except ValueError:
            raise UnsafeTarError("the package's tar has a malformed pax header") from None
        end = pos + length
        if length <= space - pos + 1 or end > len(data) or data[end - 1 : end] != b"\n":
            raise UnsafeTarError("the package's tar has a malformed pax header")
        record = data[space + 1 : end - 1]
        key, eq, value = record.partition(b"=")
        if not eq:
            raise UnsafeTarError("the package's tar has a malformed pax header")
        try:
            key_text = key.decode("utf-8")
            value_text = value.decode("utf-8")
        except UnicodeDecodeError:
            raise UnsafeTarError("the package's tar has a pax header that is not UTF-8") from None
        if key_text in records:
            raise UnsafeTarError(f"the package's tar has a pax header naming {key_text} twice")
        records[key_text] = value_text
        pos = end
    return records


class TarReader:
    """Reads a tar stream from ``src`` member by member, refusing anything unsafe.

    Usage: ``while (m := reader.next()) is not None: ... reader.read_all() /
    reader.iter_data()``; then :meth:`finish`. Unread data of a member is
    skipped by the next call to :meth:`next`.
    """

    def __init__(self, src: _Readable, *, max_total: int) -> None:
        self._src = src
        self._max_total = max_total
        self._consumed = 0
        self._remaining = 0  # data bytes of the current member not yet read
        self._pad = 0  # padding after the current member's data
        self._ended = False

    @property
    def consumed(self) -> int:
        """Bytes of the tar stream read so far."""
        return self._consumed

    def _read_exact(self, n: int, *, eof_ok: bool = False) -> bytes:
        if self._consumed + n > self._max_total:
            raise PackageLimitError(
                f"the package is larger than the limit of {self._max_total} bytes"
            )
        parts: list[bytes] = []
        got = 0
        while got < n:
            chunk = self._src.read(n - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        data = b"".join(parts)
        self._consumed += len(data)
        if len(data) != n and not (eof_ok and not data):
            raise UnsafeTarError("the package's tar stream ends in the middle of an entry")
        return data

    def _skip_current(self) -> None:
        while self._remaining:
            n = min(self._remaining, _READ_CHUNK)
            self._read_exact(n)
            self._remaining -= n
        if self._pad:
            self._read_exact(self._pad)
            self._pad = 0

    def _header(self) -> bytes | None:
        block = self._read_exact(BLOCK_SIZE, eof_ok=True)
        if not block:
            raise UnsafeTarError("the package's tar stream has no end-of-archive marker")
        if block == _ZERO_BLOCK:
            second = self._read_exact(BLOCK_SIZE, eof_ok=True)
            if second != _ZERO_BLOCK:
                raise UnsafeTarError("the package's tar stream has a damaged end-of-archive marker")
            return None
        stored = _octal(block[148:156], "checksum")
        computed = sum(block[:148]) + 8 * 0x20 + sum(block[156:])
        if stored != computed:
            raise UnsafeTarError("the package's tar stream has a header with a bad checksum")
        if block[257:263] != b"ustar\x00" or block[263:265] != b"00":
            raise UnsafeTarError("the package's tar stream is not POSIX (ustar or pax) format")
        return block

    def next(self) -> Member | None:
        """The next regular file, or ``None`` at the end of the archive."""
        if self._ended:
            return None
        self._skip_current()
        pax: dict[str, str] | None = None
        while True:
            block = self._header()
            if block is None:
                if pax is not None:
                    raise UnsafeTarError("the package's tar ends after an extended header")
                self._ended = True
                return None
            typeflag = block[156:157]
            size = _octal(block[124:136], "size")
            if typeflag == b"x":
                if pax is not None:
                    raise UnsafeTarError("the package's tar has two extended headers in a row")
                if size > MAX_PAX_BYTES:
                    raise UnsafeTarError(
                        f"the package's tar has an extended header of {size} bytes "
                        f"(at most {MAX_PAX_BYTES})"
                    )
                data = self._read_exact(size)
                self._read_exact(_padding(size))
                pax = _parse_pax(data)
                if any(k.startswith("GNU.sparse") for k in pax):
                    raise UnsafeTarError("the package holds a sparse file, which is not allowed")
                continue
            name = _cstring(block[0:100])
            prefix = _cstring(block[345:500])
            path = _decode_name(prefix + b"/" + name if prefix else name)
            if pax is not None and "path" in pax:
                path = pax["path"]
            if pax is not None and "size" in pax:
                try:
                    size = int(pax["size"], 10)
                except ValueError:
                    raise UnsafeTarError("the package's tar has an invalid size") from None
                if size < 0:
                    raise UnsafeTarError("the package's tar has a negative size")
            if typeflag not in (b"0", b"\x00"):
                what = _TYPE_NAMES.get(typeflag, f"an entry of unknown type {typeflag!r}")
                raise UnsafeTarError(
                    f"the package holds {what} ({_shown(path)}); only regular files are allowed"
                )
            check_member_path(path)
            if self._consumed + size > self._max_total:
                raise PackageLimitError(
                    f"the package is larger than the limit of {self._max_total} bytes"
                )
            self._remaining = size
            self._pad = _padding(size)
            return Member(path=path, size=size)

    def iter_data(self, chunk_size: int = _READ_CHUNK) -> Iterator[bytes]:
        """The rest of the current member's data, in chunks."""
        while self._remaining:
            n = min(self._remaining, chunk_size)
            data = self._read_exact(n)
            self._remaining -= n
            yield data

    def read_all(self) -> bytes:
        """The rest of the current member's data, in one piece (for small members only)."""
        return b"".join(self.iter_data())

    def finish(self) -> None:
        """After ``next()`` returned ``None``: check that only zero padding follows, to EOF."""
        if not self._ended:
            raise UnsafeTarError("the package's tar stream was not read to its end")
        while True:
            if self._consumed >= self._max_total:
                # Whatever follows would be over the limit anyway.
                if self._src.read(1):
                    raise PackageLimitError(
                        f"the package is larger than the limit of {self._max_total} bytes"
                    )
                return
            chunk = self._src.read(min(_READ_CHUNK, self._max_total - self._consumed))
            if not chunk:
                return
            self._consumed += len(chunk)
            if chunk.strip(b"\x00"):
                raise UnsafeTarError("the package has data after the end of its tar archive")
