"""Full disks at the receiver, and a damaged package at the sender (issue 17, items 5, 6, 10).

- An offer the receiver's disk cannot hold (keeping ``transfer.disk_reserve_bytes``) is
  refused with 507 before anything is stored; smaller packages still go through; the
  sender keeps the package queued and tries again on its schedule.
- A full disk met while serving the peer protocol (the database, or the file a chunk is
  written to) answers 503 ``out-of-space`` with one log line, and the node carries on
  once space is freed.
- A queued package whose file was damaged on the sender's own disk is failed before
  anything is sent, blaming this server's disk, and audited.

The disk is filled for real (``tests.support.disk``): a file-size limit on this process,
and PostgreSQL's own ``disk_full``. Free space as the offer sees it comes through the
inbox's ``free_space`` seam, since no test can shrink the machine's disk.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from tests.integration.exchange.inbox_support import RECEIVER, Rig, receiving_node
from tests.support.disk import disk_full, empty_sqlite_wal, file_size_limit
from transfer.config import Config
from transfer.exchange.outbox import Outbox
from transfer.exchange.tables import IncomingPackage, outgoing_packages
from transfer.space import space_shortage
from transfer.transport.http import PeerClient

RESERVE = 100_000


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path) as r:
        r.inbox.config = _with(r.inbox.config, disk_reserve_bytes=RESERVE)
        yield r


@pytest.fixture
async def pg_rig(pg_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    """On PostgreSQL, whose ``disk_full`` a test can raise; SQLite's own "database or disk is
    full" is met on a real full file system in ``tests/integration/test_full_disk_serve.py``."""
    async with receiving_node(pg_url, tmp_path) as r:
        yield r


def _with(config: Config, **transfer: Any) -> Config:
    return config.model_copy(update={"transfer": config.transfer.model_copy(update=transfer)})


def _free(n: int) -> Any:
    return lambda _path: n


async def _incoming(rig: Rig) -> list[str]:
    async with rig.store.sessions() as s:
        return list((await s.scalars(IncomingPackage.__table__.select())).all())


def _errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


# ---------------------------------------------------------------- 507: an offer that cannot fit


async def test_an_offer_that_cannot_fit_is_refused_with_507_and_a_smaller_one_goes_through(
    rig: Rig,
) -> None:
    pupil = await rig.make_pupil_file()
    built, data = await rig.build(pupil)
    small = str(built.manifest.package_id)
    big = "0b5e7a4c-1d2e-4f00-8a00-000000000507"
    # Room for the small package and the reserve, not for one ten times its size.
    rig.inbox.free_space = _free(len(data) + RESERVE + 1000)
    body = rig.offer_body(big, data, size=10 * len(data))
    status, doc, _ = await rig.call("POST", "/peer/v1/packages", body)
    assert status == 507, doc
    assert doc["type"] == "urn:handover:problem:insufficient-storage"
    assert f"cannot hold package {big} ({10 * len(data)} more bytes) just now" in doc["detail"]
    assert "offer it again later" in doc["detail"]
    # Nothing was stored for it: no row, no partial file; the refusal is audited.
    assert await _incoming(rig) == []
    assert not rig.inbox.part_path(big).exists()
    [refused] = rig.events("transfer.offer", "refused")
    assert refused.detail["reason"] == "insufficient-storage"
    assert refused.targets == {"package": big}

    await rig.upload(small, data)
    status, doc, _ = await rig.call("POST", f"/peer/v1/packages/{small}/complete", {})
    assert status == 200, doc
    assert doc["state"] == "delivered"


async def test_the_reserve_is_kept_and_a_resumed_upload_needs_only_its_rest(rig: Rig) -> None:
    pupil = await rig.make_pupil_file()
    built, data = await rig.build(pupil)
    pid = str(built.manifest.package_id)
    # One byte short of the package plus the reserve: refused.
    rig.inbox.free_space = _free(len(data) + RESERVE - 1)
    status, doc, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert status == 507, doc
    rig.inbox.free_space = _free(len(data) + RESERVE)
    status, doc, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert status == 201, doc
    half = len(data) // 2
    status, doc, _ = await rig.patch(pid, 0, data[:half])
    assert status == 204, doc
    # The first half is on the disk now: resuming needs room for the rest only.
    rig.inbox.free_space = _free(len(data) - half + RESERVE)
    status, doc, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert (status, doc["offset"]) == (200, half), doc
    rig.inbox.free_space = _free(len(data) - half + RESERVE - 1)
    status, doc, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert status == 507, doc


async def test_the_sender_waits_and_retries_after_507_then_delivers(rig: Rig) -> None:
    client = PeerClient(keys=rig.keys, directory=rig.directory, config=rig.services.config)
    try:
        outbox = Outbox(
            store=rig.store,
            keys=rig.keys,
            directory=rig.directory,
            client=client,
            config=rig.services.config,
            data_dir=rig.data_dir,
            uniform=lambda: 0.0,
        )
        pupil = await rig.make_pupil_file()
        queued = await outbox.queue_leaver_file(rig.school.dsl, pupil, RECEIVER)
        rig.inbox.free_space = _free(RESERVE)  # the disk is as full as the reserve allows
        assert await outbox.deliver_due() == 1
        waiting = await outbox.get(rig.school.dsl, queued.id)
        assert waiting.state == "queued"  # not failed: it waits for room
        assert "507" in (waiting.last_error or "")
        assert "cannot hold package" in (waiting.last_error or "")
        attempt = [e for e in rig.audit.events if e.action == "transfer.attempt"]
        assert [(e.outcome, e.detail["reason"]) for e in attempt] == [
            ("failed", "transport-failure")
        ]
        assert rig.events("transfer.failed") == []

        rig.inbox.free_space = _free(10**12)  # space freed
        async with rig.store.sessions() as s, s.begin():  # its next try is due now
            await s.execute(
                update(outgoing_packages)
                .where(outgoing_packages.c.id == queued.id)
                .values(next_attempt_at=rig.store.now())
            )
        assert await outbox.deliver_due() == 1
        done = await outbox.get(rig.school.dsl, queued.id)
        assert done.state == "delivered"
    finally:
        await client.close()


# ---------------------------------------------------------------- 503: the disk is full


@pytest.mark.postgres
async def test_a_full_database_answers_503_out_of_space_and_work_carries_on(
    pg_rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    rig = pg_rig
    pupil = await rig.make_pupil_file()
    built, data = await rig.build(pupil)
    pid = str(built.manifest.package_id)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        async with disk_full(rig.store.engine):
            status, doc, headers = await rig.call(
                "POST", "/peer/v1/packages", rig.offer_body(pid, data)
            )
    assert status == 503, doc
    assert doc["type"] == "urn:handover:problem:out-of-space"
    assert doc["detail"].startswith("this node is out of storage space (the database ")
    assert "nothing was changed" in doc["detail"]
    # One clear line, no traceback.
    [line] = _errors(caplog)
    assert line.name == "handover.space"
    assert line.getMessage().startswith("POST /peer/v1/packages failed: this node is out of")
    assert line.exc_info is None
    assert f"[request {headers['X-Request-ID']}]" in line.getMessage()
    assert rig.store.space.pending_since is not None
    # Space freed: the same offer goes through, and the package is delivered.
    await rig.upload(pid, data)
    status, doc, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 200, doc


async def test_a_chunk_that_finds_the_disk_full_answers_503_and_the_upload_resumes(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    pupil = await rig.make_pupil_file()
    built, data = await rig.build(pupil)
    pid = str(built.manifest.package_id)
    status, doc, _ = await rig.call("POST", "/peer/v1/packages", rig.offer_body(pid, data))
    assert status == 201, doc
    limit = 64 * 1024
    assert len(data) > 2 * limit
    if rig.store.engine.dialect.name == "sqlite":
        await empty_sqlite_wal(rig.store.engine)  # room in the WAL for the request's nonce
    caplog.clear()
    with caplog.at_level(logging.INFO), file_size_limit(limit):
        status, doc, headers = await rig.patch(pid, 0, data)
    assert status == 503, doc
    assert doc["type"] == "urn:handover:problem:out-of-space"
    assert f"no space left in {rig.inbox.incoming_dir}" in doc["detail"]
    assert headers["Upload-Offset"] == "0"  # nothing of it is held
    [line] = _errors(caplog)
    assert (line.name, line.exc_info) == ("handover.space", None)
    assert rig.inbox.part_path(pid).stat().st_size == 0
    # Space freed: the sender sends the chunk again and completes.
    status, doc, headers = await rig.patch(pid, 0, data)
    assert status == 204, doc
    status, doc, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 200, doc


def test_full_disks_are_recognised_through_their_wrappers() -> None:
    import errno
    import sqlite3

    full = sqlite3.OperationalError("database or disk is full")
    assert space_shortage(full) == "database"
    wrapped = RuntimeError("wrapper")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert space_shortage(wrapped) == "file"

    class PgError(Exception):
        sqlstate = "53100"

    assert space_shortage(PgError()) == "database"
    assert space_shortage(sqlite3.OperationalError("database is locked")) is None
    assert space_shortage(OSError(errno.EACCES, "denied")) is None


# ---------------------------------------------------------------- a damaged package at the sender


async def test_a_package_damaged_on_the_senders_disk_is_failed_before_it_is_sent(
    rig: Rig,
) -> None:
    client = PeerClient(keys=rig.keys, directory=rig.directory, config=rig.services.config)
    try:
        outbox = Outbox(
            store=rig.store,
            keys=rig.keys,
            directory=rig.directory,
            client=client,
            config=rig.services.config,
            data_dir=rig.data_dir,
        )
        pupil = await rig.make_pupil_file()
        queued = await outbox.queue_leaver_file(rig.school.dsl, pupil, RECEIVER)
        path = outbox.path_of(queued.id)
        raw = bytearray(path.read_bytes())
        raw[len(raw) // 2] ^= 0x01  # one flipped bit, the size unchanged
        path.write_bytes(bytes(raw))

        assert await outbox.deliver_due() == 1
        failed = await outbox.get(rig.school.dsl, queued.id)
        assert failed.state == "failed"
        reason = failed.failure_reason or ""
        assert reason.startswith("the copy of this file on this server is damaged")
        assert "build it again" in reason
        assert "on the way" not in reason
        [event] = rig.events("transfer.failed")
        assert event.detail["reason"] == "package-file-damaged"
        # Never sent: the receiver saw no offer and holds nothing.
        assert rig.events("transfer.offer") == []
        assert await _incoming(rig) == []
        assert client is not None and outbox.bytes_sent == 0

        # Sending the same damaged bytes again is refused too.
        from transfer.errors import ConflictError

        with pytest.raises(ConflictError, match="the copy of this file on this server is dam"):
            await outbox.resend(rig.school.dsl, queued.id)
    finally:
        await client.close()


async def test_a_package_cut_short_on_the_senders_disk_is_failed_before_it_is_sent(
    rig: Rig,
) -> None:
    client = PeerClient(keys=rig.keys, directory=rig.directory, config=rig.services.config)
    try:
        outbox = Outbox(
            store=rig.store,
            keys=rig.keys,
            directory=rig.directory,
            client=client,
            config=rig.services.config,
            data_dir=rig.data_dir,
        )
        pupil = await rig.make_pupil_file()
        queued = await outbox.queue_leaver_file(rig.school.dsl, pupil, RECEIVER)
        path = outbox.path_of(queued.id)
        size = path.stat().st_size
        with path.open("r+b") as fh:
            fh.truncate(size - 100)
        assert await outbox.deliver_due() == 1
        failed = await outbox.get(rig.school.dsl, queued.id)
        assert failed.state == "failed"
        assert f"it holds {size - 100} bytes, not the {size}" in (failed.failure_reason or "")
        assert rig.events("transfer.offer") == []
    finally:
        await client.close()
