"""The pipelined chunk paths: the receiver hashes and writes in a worker thread while it reads
on, the sender hashes the next chunk while it sends this one. Same promises as before: all of a
chunk or none of it, the digest checked before the offset is committed, the part file cut back
to the held offset on any failure."""

from __future__ import annotations

import asyncio
import errno
import gc
import hashlib
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import update

from tests.exchange.inbox_support import RECEIVER, SENDER, Rig, receiving_node
from transfer.errors import IntegrityError, TooLargeError, TransportError
from transfer.exchange import outbox as outbox_module
from transfer.exchange.client import PeerClient
from transfer.exchange.inbox import PeerCaller, _hash_and_write
from transfer.exchange.outbox import Outbox, _ChunkDigests, _digest_range
from transfer.exchange.outbox_tables import outgoing_packages
from transfer.httpsig import DigestHasher, content_digest

MIB = 1024 * 1024
DATA = os.urandom(6 * MIB + 12345)


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path, max_package=16 * MIB) as r:
        yield r


def _caller(rig: Rig) -> PeerCaller:
    ks = rig.sender_keys
    return PeerCaller(org_id=SENDER, name="Harbourside Primary", key_id=ks.key_id_hex)


async def _pieces(data: bytes, size: int, *, fail_after: int | None = None) -> AsyncIterator[bytes]:
    """``data`` in pieces of ``size`` bytes; a cut connection after ``fail_after`` bytes."""
    for at in range(0, len(data), size):
        if fail_after is not None and at >= fail_after:
            raise TransportError("the chunk was cut short (ClientPayloadError)")
        yield data[at : at + size]
        if at % (64 * size) == 0:
            await asyncio.sleep(0)


async def _offer(rig: Rig) -> str:
    pid = str(uuid.uuid4())
    status, body, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, DATA))
    assert status == 201, body
    return pid


def _part(rig: Rig, pid: str) -> Path:
    return rig.data_dir / "incoming" / f"{pid}.part"


async def test_chunks_of_many_batches_and_tiny_pieces_are_written_exactly(rig: Rig) -> None:
    pid = await _offer(rig)
    caller = _caller(rig)
    first = DATA[: 3 * MIB + 7]  # 256 KiB pieces: several 1 MiB batches and a short last one
    new = await rig.inbox.receive_chunk(
        caller, pid, 0, content_digest(first), _pieces(first, 256 * 1024)
    )
    assert new == len(first)
    # 1,000-byte pieces: batches close on the piece count (IOV_MAX), not the byte count.
    second = DATA[new : new + MIB + 333_333]
    new = await rig.inbox.receive_chunk(
        caller, pid, new, content_digest(second), _pieces(second, 1000)
    )
    assert new == len(first) + len(second)
    # The rest through the real socket and peer server, in one request.
    status, body, headers = await rig.patch(pid, new, DATA[new:])
    assert status == 204, body
    assert headers["Upload-Offset"] == str(len(DATA))
    assert _part(rig, pid).read_bytes() == DATA
    assert (await rig.inbox.upload_offset(caller, pid)) == len(DATA)


async def test_a_bad_digest_found_after_several_batches_cuts_the_file_back(rig: Rig) -> None:
    pid = await _offer(rig)
    caller = _caller(rig)
    good = DATA[:MIB]
    assert await rig.inbox.receive_chunk(caller, pid, 0, content_digest(good), _pieces(good, 65536))
    # Four batches are on disk before the digest is known to be wrong.
    bad = bytearray(DATA[MIB : 5 * MIB])
    bad[-1] ^= 1
    with pytest.raises(IntegrityError):
        await rig.inbox.receive_chunk(
            caller, pid, MIB, content_digest(DATA[MIB : 5 * MIB]), _pieces(bytes(bad), 65536)
        )
    assert _part(rig, pid).stat().st_size == MIB
    assert (await rig.inbox.upload_offset(caller, pid)) == MIB
    # Through the socket: a 422 problem, the file and offset unchanged.
    status, problem, _ = await rig.patch(
        pid, MIB, DATA[MIB : 3 * MIB], digest=content_digest(b"other bytes")
    )
    assert status == 422 and problem["type"].endswith("content-digest-mismatch")
    assert _part(rig, pid).stat().st_size == MIB
    # And the right bytes are taken after that.
    rest = DATA[MIB:]
    assert await rig.inbox.receive_chunk(
        caller, pid, MIB, content_digest(rest), _pieces(rest, 256 * 1024)
    ) == len(DATA)
    assert _part(rig, pid).read_bytes() == DATA


async def test_a_chunk_cut_short_or_too_long_leaves_the_held_offset(rig: Rig) -> None:
    pid = await _offer(rig)
    caller = _caller(rig)
    good = DATA[: 2 * MIB]
    await rig.inbox.receive_chunk(caller, pid, 0, content_digest(good), _pieces(good, 256 * 1024))
    chunk = DATA[2 * MIB : 6 * MIB]
    with pytest.raises(TransportError):
        await rig.inbox.receive_chunk(
            caller,
            pid,
            2 * MIB,
            content_digest(chunk),
            _pieces(chunk, 128 * 1024, fail_after=3 * MIB),
        )
    assert _part(rig, pid).stat().st_size == 2 * MIB
    too_long = DATA[2 * MIB :] + b"x" * MIB
    with pytest.raises(TooLargeError):
        await rig.inbox.receive_chunk(
            caller, pid, 2 * MIB, content_digest(too_long), _pieces(too_long, 256 * 1024)
        )
    assert _part(rig, pid).stat().st_size == 2 * MIB
    assert (await rig.inbox.upload_offset(caller, pid)) == 2 * MIB


async def test_a_disk_error_in_the_worker_is_a_transport_error_and_cuts_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = await _offer(rig)
    caller = _caller(rig)
    good = DATA[:MIB]
    await rig.inbox.receive_chunk(caller, pid, 0, content_digest(good), _pieces(good, 256 * 1024))
    real = os.pwritev
    calls = 0

    def failing(fd: int, buffers: list[memoryview], offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, buffers, offset)

    monkeypatch.setattr(os, "pwritev", failing)
    chunk = DATA[MIB : 5 * MIB]
    with pytest.raises(TransportError, match="could not store the chunk: No space left"):
        await rig.inbox.receive_chunk(
            caller, pid, MIB, content_digest(chunk), _pieces(chunk, 65536)
        )
    assert calls == 3
    assert _part(rig, pid).stat().st_size == MIB
    assert (await rig.inbox.upload_offset(caller, pid)) == MIB


def test_hash_and_write_finishes_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwritev
    sizes: list[int] = []

    def short(fd: int, buffers: list[memoryview], offset: int) -> int:
        # At most 70,001 bytes a call: ends in the middle of a piece every time.
        left, take = 70_001, []
        for b in buffers:
            if not left:
                break
            take.append(b[:left])
            left -= len(take[-1])
        n = real(fd, take, offset)
        sizes.append(n)
        return n

    monkeypatch.setattr(os, "pwritev", short)
    pieces = [os.urandom(n) for n in (100_000, 1, 65536, 250_000, 3)]
    path = tmp_path / "f"
    path.write_bytes(b"H" * 10)
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = DigestHasher()
        assert _hash_and_write(fd, hasher, pieces, 10) == sum(map(len, pieces))
    finally:
        os.close(fd)
    whole = b"".join(pieces)
    assert path.read_bytes() == b"H" * 10 + whole
    assert hasher.digest() == hashlib.sha256(whole).digest() and hasher.size == len(whole)
    assert len(sizes) > 1 and max(sizes) <= 70_001

    monkeypatch.setattr(os, "pwritev", lambda fd, b, o: 0)
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError, match="accepted no more"):
            _hash_and_write(fd, DigestHasher(), [b"abc"], 0)
    finally:
        os.close(fd)


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    seen: list[tuple[int, int]] = []

    def digest(path: Path, offset: int, length: int) -> str:
        seen.append((offset, length))
        return _digest_range(path, offset, length)

    monkeypatch.setattr(outbox_module, "_digest_range", digest)
    return seen


async def test_chunk_digests_hash_each_chunk_once_ahead_of_its_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.age"
    path.write_bytes(DATA)
    seen = _counting(monkeypatch)
    digests = _ChunkDigests(path)
    chunk, offset = 2 * MIB, 0
    try:
        while offset < len(DATA):
            n = min(chunk, len(DATA) - offset)
            got = await digests.get(offset, n)
            assert got == content_digest(DATA[offset : offset + n])
            digests.prefetch(offset + n, min(chunk, len(DATA) - offset - n))
            if offset + n < len(DATA):
                await asyncio.sleep(0.05)  # "sending": the next digest is under way meanwhile
                assert seen[-1] == (offset + n, min(chunk, len(DATA) - offset - n))
            offset += n
    finally:
        digests.close()
    assert seen == [
        (0, chunk),
        (chunk, chunk),
        (2 * chunk, chunk),
        (3 * chunk, len(DATA) - 3 * chunk),
    ]

    # The peer asks for another offset: the digest hashed ahead is not used.
    seen.clear()
    digests.prefetch(MIB, MIB)
    assert await digests.get(5000, MIB) == content_digest(DATA[5000 : 5000 + MIB])
    assert (5000, MIB) in seen
    digests.close()


async def test_a_failed_digest_ahead_is_raised_when_used_and_never_logged_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "short.age"
    path.write_bytes(b"x" * 1000)
    digests = _ChunkDigests(path)
    digests.prefetch(500, 1000)  # goes beyond the end: the file is shorter than recorded
    with pytest.raises(outbox_module.PackageFileMissingError, match="shorter than recorded"):
        await digests.get(500, 1000)
    # One that fails and is never asked for (the upload failed meanwhile): dropped quietly.
    digests.prefetch(500, 1000)
    await asyncio.sleep(0.2)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        digests.close()
        gc.collect()
        await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


def _outbox(rig: Rig, client: PeerClient, *, chunk_bytes: int) -> Outbox:
    config = rig.services.config.model_copy(
        update={
            "transfer": rig.services.config.transfer.model_copy(update={"chunk_bytes": chunk_bytes})
        }
    )
    return Outbox(
        store=rig.store,
        keys=rig.keys,
        directory=rig.directory,
        client=client,
        config=config,
        data_dir=rig.data_dir,
    )


async def test_the_lease_is_renewed_after_every_chunk_beside_the_next_upload(rig: Rig) -> None:
    client = PeerClient(keys=rig.keys, directory=rig.directory, config=rig.services.config)
    try:
        outbox = _outbox(rig, client, chunk_bytes=64 * 1024)
        renewals: list[str] = []
        renew = outbox._renew

        async def counting(package_id: str) -> None:
            renewals.append(package_id)
            await renew(package_id)

        outbox._renew = counting  # type: ignore[method-assign]
        queued = await outbox.queue_leaver_file(
            rig.school.dsl, await rig.make_pupil_file(), RECEIVER
        )
        size = queued.ciphertext_size
        assert size is not None and size > 3 * 64 * 1024
        assert await outbox.deliver_due() == 1
        assert (await outbox.get(rig.school.dsl, queued.id)).state == "delivered"
        assert renewals == [queued.id] * -(-size // (64 * 1024))
    finally:
        await client.close()


async def test_a_lease_lost_during_the_upload_stops_it_before_it_is_sent(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    client = PeerClient(keys=rig.keys, directory=rig.directory, config=rig.services.config)
    try:
        outbox = _outbox(rig, client, chunk_bytes=64 * 1024)
        renew = outbox._renew
        calls = 0

        async def taken_over(package_id: str) -> None:
            nonlocal calls
            calls += 1
            if calls == 2:  # another process took the item over meanwhile
                async with rig.store.sessions() as s, s.begin():
                    await s.execute(
                        update(outgoing_packages)
                        .where(outgoing_packages.c.id == package_id)
                        .values(claimed_by="another-process")
                    )
            await renew(package_id)

        outbox._renew = taken_over  # type: ignore[method-assign]
        queued = await outbox.queue_leaver_file(
            rig.school.dsl, await rig.make_pupil_file(), RECEIVER
        )
        with caplog.at_level(logging.WARNING, logger="handover.outbox"):
            assert await outbox.deliver_due() == 1
        assert "taken over by another process" in caplog.text
        record = await outbox.get(rig.school.dsl, queued.id)
        assert record.state == "queued"
        assert "sent" not in [e.event for e in record.events]
        # The renewal after chunk 2 failed: chunk 3 was on the wire meanwhile, no chunk after it.
        status, _, headers = await rig.call("HEAD", f"/peer/v1/packages/{queued.id}")
        assert status == 204 and int(headers["Upload-Offset"]) == 3 * 64 * 1024
        assert calls == 2
    finally:
        await client.close()
