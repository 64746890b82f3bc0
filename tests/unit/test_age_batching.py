"""The fast paths of transfer.age: batched sealing, decryption into the caller's buffer,
``readinto`` sources, and the CLI's written-ahead output file."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import BinaryIO, cast

import pytest

from transfer.age import (
    CHUNK_SIZE,
    AgePayloadError,
    AgeReader,
    AgeWriter,
    X25519Identity,
    decrypt,
    decrypt_stream,
    encrypt,
    encrypt_stream,
)
from transfer.age._format import Input
from transfer.age.stream import BATCH_CHUNKS, BLOCK_SIZE, copy_plaintext, readinto_of
from transfer.commands import age as age_command
from transfer.errors import TransportError

TAG = 16
CT_CHUNK = CHUNK_SIZE + TAG
SIZES = [0, 1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 17 * CHUNK_SIZE, 17 * CHUNK_SIZE + 5]


@pytest.fixture(scope="module")
def key() -> X25519Identity:
    return X25519Identity.generate()


def payload_start(blob: bytes) -> int:
    """Offset of the first payload chunk: after the header and the 16-byte nonce."""
    i = blob.index(b"\n--- ")
    return blob.index(b"\n", i + 1) + 1 + 16


class _ReadOnly:
    """A source with ``read`` only (like the hashing wrappers around a package)."""

    def __init__(self, data: bytes, step: int = 10_000) -> None:
        self._src = io.BytesIO(data)
        self._step = step

    def read(self, n: int = -1, /) -> bytes:
        return self._src.read(min(n, self._step) if n >= 0 else self._step)

    def close(self) -> None:
        self._src.close()


class _Recorder(io.RawIOBase):
    """Records the size of every write it is given (and keeps a copy of the bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, b: object) -> int:
        view = memoryview(b).cast("B")  # type: ignore[arg-type]
        self.sizes.append(len(view))
        self.data += view
        return len(view)


# --- reading into the caller's buffer ---------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("buffer", [1, 100, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 7, BLOCK_SIZE])
def test_readinto_any_buffer_size(key: X25519Identity, size: int, buffer: int) -> None:
    data = os.urandom(size)
    reader = AgeReader(io.BytesIO(encrypt(data, [key.recipient])), [key])
    out = bytearray()
    view = memoryview(bytearray(buffer))
    while n := reader.readinto(view):
        assert n == buffer or len(out) + n == size  # full buffers until the end
        out += view[:n]
    assert bytes(out) == data
    assert reader.readinto(view) == 0


def test_small_then_large_reads_mix(key: X25519Identity) -> None:
    data = os.urandom(5 * CHUNK_SIZE + 3)
    reader = AgeReader(io.BytesIO(encrypt(data, [key.recipient])), [key])
    first = reader.read(1000)  # leaves most of chunk 0 pending
    view = memoryview(bytearray(3 * CHUNK_SIZE))
    n = reader.readinto(view)
    assert n == 3 * CHUNK_SIZE
    rest = reader.read()
    assert first + bytes(view[:n]) + rest == data


@pytest.mark.parametrize("bad", [0, 3, BATCH_CHUNKS - 1, BATCH_CHUNKS + 2])
def test_damaged_chunk_inside_a_block(key: X25519Identity, bad: int) -> None:
    """The chunks before the damaged one come out; nothing unverified is left in the buffer."""
    data = os.urandom((BATCH_CHUNKS + 4) * CHUNK_SIZE + 9)
    blob = bytearray(encrypt(data, [key.recipient]))
    blob[payload_start(bytes(blob)) + bad * CT_CHUNK + 100] ^= 0x01
    reader = AgeReader(io.BytesIO(bytes(blob)), [key])
    view = memoryview(bytearray(BLOCK_SIZE))
    got = bytearray()
    verified = bad * CHUNK_SIZE
    while len(got) < verified:
        n = reader.readinto(view)
        assert n > 0
        got += view[:n]
        if len(got) == verified:
            # The damaged chunk was decrypted into the buffer right after; it was wiped.
            end = n + CHUNK_SIZE
            assert bytes(view[n:end]) == bytes(CHUNK_SIZE)
    assert bytes(got) == data[:verified]
    for _ in range(2):  # raised now, and every time after
        with pytest.raises(AgePayloadError, match="damaged or was altered"):
            reader.readinto(view)


def test_appended_data_after_a_full_last_chunk(key: X25519Identity) -> None:
    data = os.urandom(3 * CHUNK_SIZE)  # the last chunk is full size
    blob = encrypt(data, [key.recipient]) + b"x"
    reader = AgeReader(io.BytesIO(blob), [key])
    view = memoryview(bytearray(BLOCK_SIZE))
    assert reader.readinto(view) == len(data)
    assert bytes(view[: len(data)]) == data
    with pytest.raises(AgePayloadError, match="extra data"):
        reader.readinto(view)


def test_truncated_at_a_chunk_boundary(key: X25519Identity) -> None:
    data = os.urandom(4 * CHUNK_SIZE + 10)
    blob = encrypt(data, [key.recipient])
    cut = blob[: payload_start(blob) + 2 * CT_CHUNK]
    out = io.BytesIO()
    with pytest.raises(AgePayloadError, match="truncated"):
        decrypt_stream(io.BytesIO(cut), out, [key])
    assert data.startswith(out.getvalue())


def test_sources_without_readinto_and_armor(key: X25519Identity) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 1)
    for armor in (False, True):
        blob = encrypt(data, [key.recipient], armor=armor)
        out = io.BytesIO()
        decrypt_stream(cast(BinaryIO, _ReadOnly(blob, 4097)), out, [key])
        assert out.getvalue() == data


def test_readinto_of_trusts_only_standard_streams(tmp_path: Path) -> None:
    class OnlyRead(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            return b""

    class Hashing(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            return super().read(size)

    assert readinto_of(OnlyRead()) is None  # its inherited readinto would raise
    assert readinto_of(_ReadOnly(b"")) is None
    assert readinto_of(Hashing(b"ab")) is None  # its read must see every byte
    assert readinto_of(io.BytesIO(b"ab")) is not None
    (tmp_path / "f").write_bytes(b"x")
    with (tmp_path / "f").open("rb") as buffered, (tmp_path / "f").open("rb", buffering=0) as raw:
        assert readinto_of(buffered) is not None
        assert readinto_of(raw) is not None


def test_input_readinto_keeps_what_a_source_gives_beyond_the_request() -> None:
    pieces = [b"abcdefgh", b"ijkl", b""]

    def read(n: int) -> bytes:
        return pieces.pop(0)  # ignores n on purpose: more than asked for

    src = Input(read)
    out = memoryview(bytearray(5))
    assert src.readinto(out) == 5 and bytes(out) == b"abcde"
    assert src.readinto(out) == 5 and bytes(out) == b"fghij"
    assert src.readinto(out) == 2 and bytes(out[:2]) == b"kl"
    assert src.at_eof()


def test_non_blocking_source_without_data_is_refused(key: X25519Identity) -> None:
    class NoDataYet(io.BytesIO):
        def readinto(self, buffer: object) -> int | None:  # type: ignore[override]
            return None

    with pytest.raises(TransportError, match="non-blocking"):
        encrypt_stream(NoDataYet(), io.BytesIO(), [key.recipient])
    data = os.urandom(4 * CHUNK_SIZE)
    reader = AgeReader(io.BytesIO(encrypt(data, [key.recipient])), [key])
    reader._in._readinto = lambda view: None  # the source runs dry after the header
    with pytest.raises(TransportError, match="non-blocking"):
        reader.read()


# --- sealing in batches -------------------------------------------------------------------


def test_writer_hands_dst_whole_batches(key: X25519Identity) -> None:
    data = os.urandom(5 * BATCH_CHUNKS * CHUNK_SIZE + 123)
    dst = _Recorder()
    with AgeWriter(cast(BinaryIO, dst), [key.recipient]) as writer:
        assert writer.write_from(io.BytesIO(data)) == len(data)
    _header, *payload = dst.sizes
    assert all(size == BATCH_CHUNKS * CT_CHUNK for size in payload[:-1])
    assert len(payload) == 6 and payload[-1] == 123 + TAG
    assert decrypt(bytes(dst.data), [key]) == data


def test_flush_hands_over_sealed_chunks_only(key: X25519Identity) -> None:
    data = os.urandom(3 * CHUNK_SIZE + 1)
    dst = io.BytesIO()
    writer = AgeWriter(dst, [key.recipient])
    writer.write(data)
    before = len(dst.getvalue())
    writer.flush()
    flushed = dst.getvalue()
    assert len(flushed) == before + 3 * CT_CHUNK  # the last byte is held back, unsealed
    with pytest.raises(AgePayloadError, match="truncated"):
        decrypt(flushed, [key])
    writer.close()
    with pytest.raises(ValueError):
        writer.flush()
    assert decrypt(dst.getvalue(), [key]) == data


@pytest.mark.parametrize("size", SIZES)
def test_write_from_sources(key: X25519Identity, size: int, tmp_path: Path) -> None:
    data = os.urandom(size)
    (tmp_path / "plain").write_bytes(data)
    for armor in (False, True):
        sources: list[BinaryIO] = [
            io.BytesIO(data),
            cast(BinaryIO, _ReadOnly(data)),
            (tmp_path / "plain").open("rb"),
        ]
        for src in sources:
            dst = io.BytesIO()
            with AgeWriter(dst, [key.recipient], armor=armor) as writer:
                assert writer.write_from(src) == size
            src.close()
            assert decrypt(dst.getvalue(), [key]) == data


def test_abort_after_batches_leaves_a_file_that_does_not_decrypt(key: X25519Identity) -> None:
    dst = io.BytesIO()
    writer = AgeWriter(dst, [key.recipient])
    writer.write(os.urandom(3 * BATCH_CHUNKS * CHUNK_SIZE))
    writer.abort()
    with pytest.raises(ValueError):
        writer.write(b"x")
    with pytest.raises(AgePayloadError, match="truncated"):
        decrypt(dst.getvalue(), [key])


def test_copy_plaintext_writes_blocks(key: X25519Identity) -> None:
    data = os.urandom(2 * BLOCK_SIZE + 5)
    dst = _Recorder()
    reader = AgeReader(io.BytesIO(encrypt(data, [key.recipient])), [key])
    copy_plaintext(reader, cast(BinaryIO, dst))
    assert dst.sizes == [BLOCK_SIZE, BLOCK_SIZE, 5]
    assert bytes(dst.data) == data


# --- the CLI's output file ----------------------------------------------------------------


def test_output_is_written_ahead_then_fsynced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    advised: list[tuple[int, int]] = []
    synced: list[int] = []
    real_fsync = os.fsync

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        assert advice == os.POSIX_FADV_DONTNEED
        advised.append((offset, length))

    def fsync(fd: int) -> None:
        synced.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    monkeypatch.setattr(os, "fsync", fsync)
    step = age_command._WRITE_AHEAD
    block = os.urandom(BLOCK_SIZE)
    target = tmp_path / "out.bin"
    with age_command._output(str(target)) as fh:
        for _ in range(2 * step // BLOCK_SIZE + 3):
            fh.write(block)
        assert not target.exists()  # only renamed once complete
    assert advised == [(0, step), (step, step)]
    assert len(synced) == 1
    assert target.read_bytes() == block * (2 * step // BLOCK_SIZE + 3)
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_output_without_fadvise_support(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []

    def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append(offset)
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(os, "posix_fadvise", fadvise)
    block = os.urandom(BLOCK_SIZE)
    count = 3 * age_command._WRITE_AHEAD // BLOCK_SIZE
    target = tmp_path / "out.bin"
    with age_command._output(str(target)) as fh:
        for _ in range(count):
            fh.write(block)
    assert calls == [0]  # tried once, then left alone
    assert target.read_bytes() == block * count


def test_output_removed_on_error(tmp_path: Path) -> None:
    target = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), age_command._output(str(target)) as fh:
        fh.write(os.urandom(age_command._WRITE_AHEAD + 1))
        raise RuntimeError("damaged input")
    assert list(tmp_path.iterdir()) == []
