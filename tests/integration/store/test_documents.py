"""Documents: streamed in and out in constant memory, content-addressed, tamper-evident."""

from __future__ import annotations

import hashlib
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from schemas.records import DocumentRef
from tests.integration.store.conftest import School
from transfer.errors import IntegrityError, TooLargeError
from transfer.media import UnsupportedDocumentType
from transfer.store import blobs
from transfer.store.keyring import KeyDestroyed
from transfer.store.tables import Document, SealedField

MB = 1024 * 1024


def _block(i: int) -> bytes:
    # Deterministic, incompressible-looking 64 KiB blocks without holding 20 MB; the first
    # starts as a PDF does (the store keeps only kinds of document it recognises).
    seed = hashlib.sha256(i.to_bytes(8, "big")).digest()
    block = seed * (65536 // 32)
    return (b"%PDF-1.7\n" + block)[:65536] if i == 0 else block


async def _generate(total: int, piece: int = 65536) -> AsyncIterator[bytes]:
    sent = 0
    i = 0
    while sent < total:
        block = _block(i)[: min(piece, total - sent)]
        sent += len(block)
        i += 1
        yield block


async def _consume(it: AsyncIterator[bytes]) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    async for piece in it:
        digest.update(piece)
        size += len(piece)
    return digest.hexdigest(), size


async def _expected(total: int) -> str:
    digest = hashlib.sha256()
    async for piece in _generate(total):
        digest.update(piece)
    return digest.hexdigest()


async def _stored_name(school: School, ref: DocumentRef) -> str:
    async with school.store.sessions() as s:
        name = await s.scalar(select(Document.name).where(Document.id == ref.id))
    assert name is not None and name != ref.sha256
    return name


async def _path(school: School, ref: DocumentRef) -> Path:
    name = await _stored_name(school, ref)
    return school.data_dir / "documents" / "199001" / ref.pupil_id / name


async def test_twenty_megabytes_round_trip_in_bounded_memory(school: School) -> None:
    p = await school.pupil("H801200001001")
    total = 20 * MB + 12345
    expected = await _expected(total)

    tracemalloc.start()
    try:
        ref = await school.store.add_document(
            school.dsl, p.id, _generate(total, piece=100_000), filename="scan.pdf"
        )
        _, upload_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        got_ref, stream = await school.store.read_document(school.dsl, ref.id)
        sha, size = await _consume(stream)
        _, download_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert (sha, size) == (expected, total)
    assert ref.sha256 == expected and ref.size == total and got_ref == ref
    assert got_ref.filename == "scan.pdf" and got_ref.media_type == "application/pdf"
    # Streaming: far below the document's size (a few chunks plus the engine's own state).
    assert upload_peak < 2 * MB, upload_peak
    assert download_peak < 2 * MB, download_peak
    on_disk = (await _path(school, ref)).stat().st_size
    chunks = total // blobs.CHUNK + 1
    assert on_disk == len(blobs.MAGIC) + blobs.SALT_SIZE + total + chunks * blobs.TAG


async def test_tampered_truncated_or_moved_files_are_refused(school: School) -> None:
    p = await school.pupil("H801200001001")
    q = await school.pupil("G80120000101A")
    ref = await school.store.add_document(
        school.dsl, p.id, _generate(3 * blobs.CHUNK + 10), filename="x"
    )
    path = await _path(school, ref)
    original = path.read_bytes()

    flipped = bytearray(original)
    flipped[len(blobs.MAGIC) + blobs.SALT_SIZE + 2 * blobs.CHUNK] ^= 1
    path.write_bytes(bytes(flipped))
    _, stream = await school.store.read_document(school.dsl, ref.id)
    with pytest.raises(IntegrityError):
        await _consume(stream)

    # Truncated exactly at a chunk boundary: the last chunk seen lacks the final flag.
    header = len(blobs.MAGIC) + blobs.SALT_SIZE
    path.write_bytes(original[: header + 2 * (blobs.CHUNK + blobs.TAG)])
    _, stream = await school.store.read_document(school.dsl, ref.id)
    with pytest.raises(IntegrityError):
        await _consume(stream)

    # Extended after the final chunk.
    path.write_bytes(original + original[header : header + blobs.CHUNK + blobs.TAG])
    _, stream = await school.store.read_document(school.dsl, ref.id)
    with pytest.raises(IntegrityError):
        await _consume(stream)

    # The same file moved under another pupil does not open with that pupil's key.
    path.write_bytes(original)
    ref_q = await school.store.add_document(
        school.dsl, q.id, _generate(3 * blobs.CHUNK + 10), filename="x"
    )
    (await _path(school, ref_q)).write_bytes(original)
    _, stream = await school.store.read_document(school.dsl, ref_q.id)
    with pytest.raises(IntegrityError):
        await _consume(stream)

    # Restored, it reads again.
    _, stream = await school.store.read_document(school.dsl, ref.id)
    assert (await _consume(stream))[0] == ref.sha256


async def test_size_limit_keeps_nothing_and_identical_content_is_stored_once(
    school: School,
) -> None:
    p = await school.pupil("H801200001001")
    school.store.max_document_bytes = 200_000
    with pytest.raises(TooLargeError):
        await school.store.add_document(school.dsl, p.id, _generate(300_000), filename="big")
    pupil_dir = school.data_dir / "documents" / "199001" / p.id
    assert _names(pupil_dir) == []
    assert await school.store.chronology(school.dsl, p.id) == []

    one = await school.store.add_document(school.dsl, p.id, _generate(1000), filename="a")
    two = await school.store.add_document(school.dsl, p.id, _generate(1000), filename="b")
    with pytest.raises(UnsupportedDocumentType, match="empty"):
        await school.store.add_document(school.dsl, p.id, _generate(0), filename="e")
    assert one.sha256 == two.sha256 and one.id != two.id
    assert await _stored_name(school, one) == await _stored_name(school, two)
    assert _names(pupil_dir) == [await _stored_name(school, one)]
    _, stream = await school.store.read_document(school.dsl, one.id)
    assert await _consume(stream) == (await _expected(1000), 1000)
    assert "store.document.download" in school.audit.actions()


async def test_upload_racing_an_erasure_keeps_nothing(school: School) -> None:
    p = await school.pupil("H801200001001")

    async def erasing_midway() -> AsyncIterator[bytes]:
        yield b"first part "
        await school.store.erase_pupil(school.dsl, p.id)
        yield b"second part"

    with pytest.raises(KeyDestroyed):
        await school.store.add_document(school.dsl, p.id, erasing_midway(), filename="late")
    pupil_dir = school.data_dir / "documents" / "199001" / p.id
    assert not pupil_dir.exists() or _names(pupil_dir) == []
    async with school.store.sessions() as s:
        assert (await s.scalars(select(Document).where(Document.pupil_id == p.id))).all() == []
        assert (await s.scalars(select(SealedField))).all() == []


def _names(directory: Path) -> list[str]:
    return sorted(f.name for f in directory.iterdir())
