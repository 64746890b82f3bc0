"""The HODOC1 chunked document format, without a database."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keys import aead
from transfer.errors import TooLargeError
from transfer.store import blobs

PUPIL = "3f1c0f5e-0000-4000-8000-000000000001"
SIZES = [0, 1, blobs.CHUNK - 1, blobs.CHUNK, blobs.CHUNK + 1, 3 * blobs.CHUNK, 3 * blobs.CHUNK + 7]
#: Around the reader's blocks of READ_CHUNKS sealed chunks (issue 16: one read per block).
BLOCK = blobs.READ_CHUNKS * blobs.CHUNK
BLOCK_SIZES = [BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK, 2 * BLOCK + blobs.CHUNK + 3]


async def _pieces(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def _read(path: Path, key: bytes, sha: str, pupil: str = PUPIL) -> bytes:
    return b"".join([p async for p in blobs.read_decrypted(path, key, pupil, sha)])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("piece", [1000, blobs.CHUNK, 200_000])
async def test_round_trip_at_chunk_boundaries(tmp_path: Path, size: int, piece: int) -> None:
    data = bytes(i % 251 for i in range(size))
    key = aead.new_key()
    blob = await blobs.write_encrypted(_pieces(data, piece), key, PUPIL, tmp_path, 10**9)
    assert blob.sha256 == hashlib.sha256(data).hexdigest() and blob.size == size
    # Named by a keyed hash of the SHA-256, never by the SHA-256 itself.
    assert blob.path == tmp_path / blobs.document_name(key, PUPIL, blob.sha256)
    assert blob.name != blob.sha256
    n_chunks = max(1, -(-size // blobs.CHUNK))  # the final chunk is full or short, never extra
    header = len(blobs.MAGIC) + blobs.SALT_SIZE
    assert blob.path.stat().st_size == header + size + n_chunks * blobs.TAG
    assert await _read(blob.path, key, blob.sha256) == data
    assert _names(tmp_path) == [blob.name]  # no temporary left
    assert oct(blob.path.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("size", BLOCK_SIZES)
async def test_round_trip_and_truncation_at_the_readers_block_boundaries(
    tmp_path: Path, size: int
) -> None:
    data = os.urandom(size)
    key = aead.new_key()
    blob = await blobs.write_encrypted(_pieces(data, 100_000), key, PUPIL, tmp_path, 10**9)
    assert await _read(blob.path, key, blob.sha256) == data
    good = blob.path.read_bytes()
    header = len(blobs.MAGIC) + blobs.SALT_SIZE
    step = blobs.CHUNK + blobs.TAG
    # Cut after whole blocks (and after whole chunks): the last chunk left is not the final.
    for keep in {blobs.READ_CHUNKS, blobs.READ_CHUNKS - 1, 1}:
        if header + keep * step < len(good):
            blob.path.write_bytes(good[: header + keep * step])
            with pytest.raises(blobs.DocumentTampered):
                await _read(blob.path, key, blob.sha256)


async def test_every_kind_of_tampering_fails(tmp_path: Path) -> None:
    data = bytes(range(256)) * 1024  # 4 chunks exactly
    key = aead.new_key()
    blob = await blobs.write_encrypted(_pieces(data, 5000), key, PUPIL, tmp_path, 10**9)
    good = blob.path.read_bytes()
    header = len(blobs.MAGIC) + blobs.SALT_SIZE
    step = blobs.CHUNK + blobs.TAG
    chunks = [good[header + i : header + i + step] for i in range(0, len(good) - header, step)]
    assert len(chunks) == 4  # 4 full chunks, the last one flagged final

    variants = {
        "bit flip": good[:-5] + bytes([good[-5] ^ 0x80]) + good[-4:],
        "salt changed": good[: len(blobs.MAGIC)] + bytes(32) + good[header:],
        "bad magic": b"HODOC2\x00\x00" + good[len(blobs.MAGIC) :],
        "swapped chunks": good[:header] + chunks[1] + chunks[0] + b"".join(chunks[2:]),
        "dropped final": good[:header] + b"".join(chunks[:-1]),
        "duplicated chunk": good[:header] + chunks[0] + b"".join(chunks),
        "empty": b"",
    }
    for name, content in variants.items():
        blob.path.write_bytes(content)
        with pytest.raises(blobs.DocumentTampered):
            await _read(blob.path, key, blob.sha256)
        assert name  # (the loop names each variant for a reader)
    blob.path.write_bytes(good)
    with pytest.raises(blobs.DocumentTampered):
        await _read(blob.path, key, blob.sha256, pupil="another-pupil")
    with pytest.raises(blobs.DocumentTampered):
        await _read(blob.path, aead.new_key(), blob.sha256)
    with pytest.raises(blobs.DocumentTampered):
        await _read(blob.path, key, "0" * 64)
    with pytest.raises(blobs.DocumentTampered):
        await _read(tmp_path / "missing", key, blob.sha256)
    assert await _read(blob.path, key, blob.sha256) == data


async def test_limit_refuses_and_removes_partial_file(tmp_path: Path) -> None:
    with pytest.raises(TooLargeError):
        await blobs.write_encrypted(
            _pieces(b"x" * 100_001, 4096), aead.new_key(), PUPIL, tmp_path, 100_000
        )
    assert _names(tmp_path) == []


@settings(max_examples=40, deadline=None)
@given(
    size=st.integers(min_value=0, max_value=3 * blobs.CHUNK + 3),
    cuts=st.lists(st.integers(min_value=1, max_value=3 * blobs.CHUNK), max_size=6),
)
def test_any_split_of_any_size_round_trips(size: int, cuts: list[int]) -> None:
    data = os.urandom(size)

    async def pieces() -> AsyncIterator[bytes]:
        pos = 0
        for cut in cuts:
            yield data[pos : pos + cut]
            pos += cut
        yield data[pos:]

    async def go(directory: Path) -> bytes:
        key = aead.new_key()
        blob = await blobs.write_encrypted(pieces(), key, PUPIL, directory, 10**9)
        return await _read(blob.path, key, blob.sha256)

    with tempfile.TemporaryDirectory() as d:
        assert asyncio.run(go(Path(d))) == data
