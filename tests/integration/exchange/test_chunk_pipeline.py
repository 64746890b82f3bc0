"""The upload paths: the receiver hashes and writes each piece as it reads it and makes what it
holds durable at checkpoints; the sender sends a whole package in one request under a lease it
keeps renewing, or hashes the next chunk while it sends this one. The promises: the digest
checked before the end of a request is committed, a body that proves bad undone to its start,
a break keeping the last checkpoint, the part file cut back to the held offset on any
failure."""

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

from tests.integration.exchange.inbox_support import RECEIVER, SENDER, Rig, receiving_node
from transfer.errors import IntegrityError, OutOfSpaceError, TooLargeError, TransportError
from transfer.exchange.inbox import PeerCaller
from transfer.exchange.inbox import delivery as delivery_module
from transfer.exchange.inbox.upload import _hash_and_write
from transfer.exchange.outbox import Outbox, PackageFileMissingError
from transfer.exchange.outbox import delivery as outbox_module
from transfer.exchange.outbox.delivery import _ChunkDigests, _digest_range
from transfer.exchange.tables import outgoing_packages
from transfer.httpsig import DigestHasher, content_digest
from transfer.receipts import SignedReceipt
from transfer.transport.http import PeerClient

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
    first = DATA[: 3 * MIB + 7]  # 256 KiB pieces and a short last one
    new = await rig.inbox.receive_chunk(
        caller, pid, 0, content_digest(first), _pieces(first, 256 * 1024)
    )
    assert new == len(first)
    # 1,000-byte pieces.
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


async def test_a_bad_digest_found_after_several_mib_cuts_the_file_back(rig: Rig) -> None:
    pid = await _offer(rig)
    caller = _caller(rig)
    good = DATA[:MIB]
    assert await rig.inbox.receive_chunk(caller, pid, 0, content_digest(good), _pieces(good, 65536))
    # Four MiB are on disk before the digest is known to be wrong.
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


async def test_a_long_request_cut_short_keeps_its_last_checkpoint(rig: Rig) -> None:
    _checkpoint_every(rig, MIB)
    pid = await _offer(rig)
    caller = _caller(rig)
    good = DATA[: 2 * MIB]
    await rig.inbox.receive_chunk(caller, pid, 0, content_digest(good), _pieces(good, 256 * 1024))
    rest = DATA[2 * MIB :]
    # The connection drops after 3.5 MiB of this request: 3 MiB of it were checkpointed.
    with pytest.raises(TransportError) as cut:
        await rig.inbox.receive_chunk(
            caller,
            pid,
            2 * MIB,
            content_digest(rest),
            _pieces(rest, 128 * 1024, fail_after=3 * MIB + MIB // 2),
        )
    assert cut.value.detail["offset"] == 5 * MIB
    assert "5242880 bytes are held" in cut.value.message
    assert await rig.inbox.upload_offset(caller, pid) == 5 * MIB
    assert _part(rig, pid).read_bytes() == DATA[: 5 * MIB]
    # The sender resumes from there; the old offset is refused with the one to use.
    status, problem, headers = await rig.patch(pid, 2 * MIB, DATA[2 * MIB : 3 * MIB])
    assert status == 409 and headers["Upload-Offset"] == str(5 * MIB), problem
    more = DATA[5 * MIB :]
    new = await rig.inbox.receive_chunk(
        caller, pid, 5 * MIB, content_digest(more), _pieces(more, 256 * 1024)
    )
    assert new == len(DATA) and _part(rig, pid).read_bytes() == DATA


@pytest.mark.parametrize("fault", ["digest", "too-long"])
async def test_a_checkpointed_request_whose_body_proves_bad_is_undone_to_its_start(
    rig: Rig, fault: str
) -> None:
    _checkpoint_every(rig, MIB)
    pid = await _offer(rig)
    caller = _caller(rig)
    good = DATA[:MIB]
    await rig.inbox.receive_chunk(caller, pid, 0, content_digest(good), _pieces(good, 256 * 1024))
    body = bytearray(DATA[MIB:])
    error_type: type[Exception]
    if fault == "digest":
        body[-1] ^= 1  # noticed only at the end, after four checkpoints were committed
        signed, error_type = content_digest(DATA[MIB:]), IntegrityError
    else:
        body += b"x" * MIB  # beyond the offered size, after five checkpoints
        signed, error_type = content_digest(bytes(body)), TooLargeError
    with pytest.raises(error_type):
        await rig.inbox.receive_chunk(caller, pid, MIB, signed, _pieces(bytes(body), 256 * 1024))
    assert await rig.inbox.upload_offset(caller, pid) == MIB
    assert _part(rig, pid).read_bytes() == DATA[:MIB]


async def test_a_package_sent_whole_in_one_request_is_not_read_again_to_complete(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    built, data = await rig.build(await rig.make_pupil_file())
    hashed: list[Path] = []
    real = delivery_module._sha256_file

    def counting(path: Path) -> tuple[str, int]:
        hashed.append(path)
        return real(path)

    monkeypatch.setattr(delivery_module, "_sha256_file", counting)
    # In one request from offset 0: the digest checked on the body is the package's.
    one = str(built.manifest.package_id)
    await rig.upload(one, data, chunk=len(data))
    status, body, _ = await rig.call("POST", f"/peer/v1/packages/{one}/complete", {})
    assert status == 200 and body["state"] == "delivered", body
    assert hashed == []
    receipt = SignedReceipt.from_dict(body["receipt"])
    assert receipt.body.ciphertext_sha256 == hashlib.sha256(data).hexdigest()
    # In several requests: the whole file is read and hashed again before the receipt.
    built2, data2 = await rig.build(await rig.make_pupil_file(2), name="second")
    two = str(built2.manifest.package_id)
    await rig.upload(two, data2, chunk=len(data2) // 3 + 1)
    status, body, _ = await rig.call("POST", f"/peer/v1/packages/{two}/complete", {})
    assert status == 200 and body["state"] == "delivered", body
    assert [p.name for p in hashed] == [f"{two}.part"]


async def test_a_whole_upload_whose_file_changed_before_complete_is_refused(rig: Rig) -> None:
    built, data = await rig.build(await rig.make_pupil_file())
    pid = str(built.manifest.package_id)
    await rig.upload(pid, data, chunk=len(data))
    with _part(rig, pid).open("r+b") as f:  # cut on disk after the request: not the same file
        f.truncate(len(data) - 1)
    status, problem, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status >= 400 and "offset 0" in problem["detail"], problem


async def test_a_disk_error_is_a_transport_error_and_cuts_back(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    pid = await _offer(rig)
    caller = _caller(rig)
    good = DATA[:MIB]
    await rig.inbox.receive_chunk(caller, pid, 0, content_digest(good), _pieces(good, 256 * 1024))
    real = os.pwrite
    calls = 0

    def failing(fd: int, data: memoryview, offset: int) -> int:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", failing)
    chunk = DATA[MIB : 5 * MIB]
    # A full disk is named as such (issue 17, item 6): still a transport error, retried.
    with pytest.raises(TransportError, match=r"out of storage space \(no space left in") as got:
        await rig.inbox.receive_chunk(
            caller, pid, MIB, content_digest(chunk), _pieces(chunk, 65536)
        )
    assert isinstance(got.value, OutOfSpaceError)
    assert got.value.detail["offset"] == MIB
    assert calls == 3
    assert _part(rig, pid).stat().st_size == MIB
    assert (await rig.inbox.upload_offset(caller, pid)) == MIB


def test_hash_and_write_finishes_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.pwrite
    sizes: list[int] = []

    def short(fd: int, data: memoryview, offset: int) -> int:
        n = real(fd, data[:70_001], offset)  # at most 70,001 bytes a call
        sizes.append(n)
        return n

    monkeypatch.setattr(os, "pwrite", short)
    pieces = [os.urandom(n) for n in (100_000, 1, 65536, 250_000, 3)]
    path = tmp_path / "f"
    path.write_bytes(b"H" * 10)
    fd = os.open(path, os.O_RDWR)
    try:
        hasher = DigestHasher()
        at = 10
        for piece in pieces:
            assert _hash_and_write(fd, hasher, piece, at) == len(piece)
            at += len(piece)
    finally:
        os.close(fd)
    whole = b"".join(pieces)
    assert path.read_bytes() == b"H" * 10 + whole
    assert hasher.digest() == hashlib.sha256(whole).digest() and hasher.size == len(whole)
    assert len(sizes) > len(pieces) and max(sizes) <= 70_001

    monkeypatch.setattr(os, "pwrite", lambda fd, b, o: 0)
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError, match="accepted no more"):
            _hash_and_write(fd, DigestHasher(), b"abc", 0)
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
    with pytest.raises(PackageFileMissingError, match="shorter than recorded"):
        await digests.get(500, 1000)
    # One that fails and is never asked for (the upload failed meanwhile): dropped quietly.
    digests.prefetch(500, 1000)
    await asyncio.sleep(0.2)
    with caplog.at_level(logging.ERROR, logger="asyncio"):
        digests.close()
        gc.collect()
        await asyncio.sleep(0)
    assert "never retrieved" not in caplog.text


def _outbox(
    rig: Rig, client: PeerClient, *, chunk_bytes: int | None = None, lease_seconds: float = 120.0
) -> Outbox:
    transfer = rig.services.config.transfer
    if chunk_bytes is not None:
        transfer = transfer.model_copy(update={"chunk_bytes": chunk_bytes})
    config = rig.services.config.model_copy(update={"transfer": transfer})
    return Outbox(
        store=rig.store,
        keys=rig.keys,
        directory=rig.directory,
        client=client,
        config=config,
        data_dir=rig.data_dir,
        lease_seconds=lease_seconds,
    )


def _slow_reads(monkeypatch: pytest.MonkeyPatch, *, piece: int, pause: float) -> None:
    """The sender reads its package file in ``piece``-byte pieces, ``pause`` s apart."""
    read_range = outbox_module._read_range

    async def slow(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
        async for block in read_range(path, offset, length):
            for at in range(0, len(block), piece):
                await asyncio.sleep(pause)
                yield block[at : at + piece]

    monkeypatch.setattr(outbox_module, "_read_range", slow)


def _checkpoint_every(rig: Rig, nbytes: int) -> None:
    transfer = rig.inbox.config.transfer.model_copy(update={"checkpoint_bytes": nbytes})
    rig.inbox.config = rig.inbox.config.model_copy(update={"transfer": transfer})


async def test_the_lease_is_renewed_while_one_long_request_uploads(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    client = PeerClient(keys=rig.keys, directory=rig.directory, config=rig.services.config)
    try:
        # The whole package in one request (the default), taking well over a lease to send.
        outbox = _outbox(rig, client, lease_seconds=0.3)
        _slow_reads(monkeypatch, piece=16 * 1024, pause=0.05)
        renewals: list[str] = []
        renew = outbox._renew

        async def counting(package_id: str) -> None:
            renewals.append(package_id)
            await renew(package_id)

        outbox._renew = counting  # type: ignore[method-assign]
        sent: list[int] = []
        request = client.request

        async def patches(*args: object, **kwargs: object) -> object:
            if args[2] == "PATCH":
                sent.append(int(str(kwargs["headers"]["Upload-Offset"])))  # type: ignore[index]
            return await request(*args, **kwargs)  # type: ignore[arg-type]

        client.request = patches  # type: ignore[method-assign,assignment]
        queued = await outbox.queue_leaver_file(
            rig.school.dsl, await rig.make_pupil_file(), RECEIVER
        )
        size = queued.ciphertext_size
        assert size is not None and size > 8 * 16 * 1024
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await outbox.deliver_due() == 1
        took = loop.time() - t0
        assert (await outbox.get(rig.school.dsl, queued.id)).state == "delivered"
        assert sent == [0]  # one request carried the whole package
        # Renewed every lease / 3 (0.1 s) while it ran, and no other process took it meanwhile.
        assert took > 0.6
        assert len(renewals) >= 3 and set(renewals) == {queued.id}
    finally:
        await client.close()


async def test_a_lease_lost_during_the_upload_stops_it_and_the_receiver_keeps_its_checkpoint(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    client = PeerClient(keys=rig.keys, directory=rig.directory, config=rig.services.config)
    try:
        outbox = _outbox(rig, client, lease_seconds=0.3)
        _checkpoint_every(rig, 64 * 1024)
        _slow_reads(monkeypatch, piece=16 * 1024, pause=0.04)
        renew = outbox._renew
        calls = 0
        taken_at = 0

        async def taken_over(package_id: str) -> None:
            nonlocal calls, taken_at
            calls += 1
            # Another process takes the item over once the receiver holds a checkpoint (by
            # its progress, not by time: a busy machine may renew before any bytes arrive).
            _, _, held = await rig.call("HEAD", f"/peer/v1/packages/{package_id}")
            if not taken_at and int(held.get("Upload-Offset", 0)) >= 64 * 1024:
                taken_at = calls
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
        size = queued.ciphertext_size
        assert size is not None and size > 4 * 64 * 1024
        with caplog.at_level(logging.WARNING, logger="handover.outbox"):
            assert await outbox.deliver_due() == 1
        assert "taken over by another process" in caplog.text
        record = await outbox.get(rig.school.dsl, queued.id)
        assert record.state == "queued"
        assert "sent" not in [e.event for e in record.events]
        assert taken_at and calls == taken_at  # no renewal after the item was taken over
        # The request was cut off mid-way: the receiver keeps what it had checkpointed, a
        # checkpoint (every 64 KiB) short of the whole package, and the part file matches.
        await asyncio.sleep(0.2)  # the receiver's handler sees the cut connection
        status, _, headers = await rig.call("HEAD", f"/peer/v1/packages/{queued.id}")
        held = int(headers["Upload-Offset"])
        assert status == 204 and 64 * 1024 <= held < size
        assert rig.inbox.part_path(queued.id).stat().st_size == held
        data = outbox.path_of(queued.id).read_bytes()
        assert rig.inbox.part_path(queued.id).read_bytes() == data[:held]
    finally:
        await client.close()
