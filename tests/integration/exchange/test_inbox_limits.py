"""Opening a received package reads its records into memory: each record and their total
are capped while streaming, refused past the cap, and parsed off the event loop.

The packages are real: built by the project's own builder (``build_package`` over the
store's leaver-file entries), signed by the sending school, sealed to the receiver and
delivered over the peer protocol.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import tracemalloc
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

import transfer.exchange.inbox.reading as reading_module
from schemas.manifest import Recipient, Sender
from tests.integration.exchange.inbox_support import RECEIVER, Rig, receiving_node
from tests.integration.package.support import identity
from transfer.config import Config
from transfer.exchange.importing import PackageRecords, RecordTooLargeError, parse_records
from transfer.package.build import EntrySource, build_package
from transfer.package.from_store import RECORD_TYPES, leaver_file_entries

MiB = 1024 * 1024
BIG = 20 * MiB  # more than the default 16 MiB a record may hold


@pytest.fixture
async def rig(db_url: str, tmp_path: Path) -> AsyncIterator[Rig]:
    async with receiving_node(db_url, tmp_path, max_package=64 * MiB) as r:
        yield r


def padded_json(path: str, size: int) -> EntrySource:
    """A JSON record of exactly ``size`` bytes, streamed in 1 MiB pieces (never held whole)."""
    head, tail = b'{"padding":"', b'"}'
    piece = b"A" * MiB

    def chunks() -> Iterator[bytes]:
        yield head
        left = size - len(head) - len(tail)
        while left:
            n = min(left, MiB)
            yield piece[:n]
            left -= n
        yield tail

    digest = hashlib.sha256()
    for chunk in chunks():
        digest.update(chunk)
    return EntrySource(path=path, size=size, sha256=digest.hexdigest(), opener=chunks)


async def deliver_built(
    rig: Rig,
    pupil_id: str,
    *,
    replace: Mapping[str, EntrySource] = {},
    extra: Sequence[EntrySource] = (),
) -> str:
    """The pupil's leaver's file with some records replaced or added, built by the project's
    builder, signed and sealed to the receiver, uploaded and completed; its package id."""
    leaver = await leaver_file_entries(rig.store, rig.school.dsl, pupil_id)
    entries = [replace.get(e.path, e) for e in leaver.entries]
    entries[1:1] = list(extra)  # records come before the documents
    sender, to = rig.sender_keys, rig.receiver_keys
    path = rig.tmp / f"big-{uuid.uuid4().hex[:8]}.age"

    def build() -> str:
        with path.open("wb") as f:
            built = build_package(
                f,
                kind="leaver_file",
                sender=Sender(
                    org_id=sender.org_id,
                    key_fingerprint=sender.fingerprint,
                    signing_key_id=sender.key_id_hex,
                ),
                recipient=Recipient(org_id=RECEIVER, key_fingerprint=to.fingerprint),
                subject=leaver.subject,
                entries=entries,
                signer=sender.minisign_secret_key(),
                recipients=[identity(to).recipient],
                records_schema=RECORD_TYPES,
            )
        return str(built.manifest.package_id)

    pid = await asyncio.to_thread(build)  # documents are read from the store on this loop
    data = path.read_bytes()
    await rig.upload(pid, data, chunk=8 * MiB)
    status, body, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
    assert status == 200, body
    return pid


def limited(rig: Rig, *, per_record: int, total: int) -> None:
    base = rig.inbox.config
    rig.inbox.config = Config(
        node=base.node,
        transfer=base.transfer.model_copy(
            update={"max_record_bytes": per_record, "max_records_bytes": total}
        ),
    )


async def test_an_oversized_record_is_refused_before_it_is_read(rig: Rig) -> None:
    """The review's case: a validly signed package with a huge ``records/pupil.json``."""
    assert rig.inbox.record_limits.per_record == 16 * MiB  # the default
    pupil = await rig.make_pupil_file()
    pid = await deliver_built(
        rig, pupil, replace={"records/pupil.json": padded_json("records/pupil.json", BIG)}
    )

    tracemalloc.start()
    try:
        with pytest.raises(RecordTooLargeError) as info:
            await rig.inbox.show(rig.receiver_dsl, pid)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Refused before the record's bytes were read: memory never came near its 20 MiB.
    assert peak < 6 * MiB, f"peak {peak / MiB:.1f} MiB while refusing a {BIG // MiB} MiB record"
    message = str(info.value)
    assert "records/pupil.json" in message and "20.0 MiB" in message
    assert "16.0 MiB" in message and "transfer.max_record_bytes" in message
    assert info.value.http_status == 422 and info.value.slug == "record-too-large"
    failed = rig.events("transfer.viewed", "failed")
    assert [e.detail["reason"] for e in failed] == ["record-too-large"]

    # Nothing was lost or changed: still delivered, still held, no viewed receipt.
    summary = (await rig.inbox.list(rig.receiver_dsl))[0]
    assert summary.package_id == pid and summary.state == "delivered"
    assert rig.inbox.inbox_path(pid).exists()
    with pytest.raises(RecordTooLargeError):
        await rig.inbox.accept(rig.receiver_dsl, pid)
    assert [e.detail["reason"] for e in rig.events("transfer.accepted", "refused")] == [
        "record-too-large"
    ]
    # The DSL can still refuse it, with a reason for the sender.
    rejected = await rig.inbox.reject(rig.receiver_dsl, pid, "Records too large to open")
    assert rejected.state == "rejected"


async def test_the_records_together_are_capped(rig: Rig) -> None:
    limited(rig, per_record=1 * MiB, total=256 * 1024)
    pupil = await rig.make_pupil_file()
    extra = [padded_json(f"records/concerns/{uuid.uuid4()}.json", 100 * 1024) for _ in range(3)]
    pid = await deliver_built(rig, pupil, extra=extra)
    with pytest.raises(RecordTooLargeError) as info:
        await rig.inbox.show(rig.receiver_dsl, pid)
    assert "come to more than the 256 KiB" in str(info.value)
    assert "transfer.max_records_bytes" in str(info.value)
    assert (await rig.inbox.list(rig.receiver_dsl))[0].state == "delivered"


async def test_records_within_the_caps_open(rig: Rig) -> None:
    limited(rig, per_record=1 * MiB, total=2 * MiB)
    pupil = await rig.make_pupil_file()
    pid = await deliver_built(rig, pupil)
    preview = await rig.inbox.show(rig.receiver_dsl, pid)
    assert preview.pupil is not None and preview.counts["concerns"] == 1


async def test_other_requests_are_answered_while_a_large_preview_parses(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large but allowed chronology is parsed in a worker thread: the node keeps answering.

    The parse is held until a request has been answered; were it on the event loop, no
    request could be answered until it finished, and the test would fail (after a wait).
    """
    pupil = await rig.make_pupil_file()
    chronology = await rig.store.chronology(rig.school.dsl, pupil)
    one = reading_module._CHRONOLOGY.dump_json(list(chronology))
    copies = max(1, (4 * MiB) // len(one))  # about 4 MiB: allowed, and real work to parse
    big = reading_module._CHRONOLOGY.dump_json(list(chronology) * copies)
    assert 3 * MiB < len(big) < rig.inbox.record_limits.per_record
    pid = await deliver_built(
        rig,
        pupil,
        replace={"records/chronology.json": EntrySource.from_bytes("records/chronology.json", big)},
    )

    real = parse_records
    parsing, answered = threading.Event(), threading.Event()
    parsed_on: list[threading.Thread] = []

    def held_parse(raw: Mapping[str, bytes]) -> PackageRecords:
        parsed_on.append(threading.current_thread())
        parsing.set()
        answered.wait(30)
        return real(raw)

    monkeypatch.setattr(reading_module, "parse_records", held_parse)
    preview_task = asyncio.create_task(rig.inbox.show(rig.receiver_dsl, pid))
    await asyncio.to_thread(parsing.wait, 30)
    status, body, _ = await rig.call("GET", f"/peer/v1/packages/{pid}/receipts")
    still_parsing = not preview_task.done()
    answered.set()
    preview = await preview_task
    assert status == 200, body
    assert still_parsing, "no request was answered while the preview was being parsed"
    assert parsed_on and parsed_on[0] is not threading.main_thread()
    assert len(preview.chronology) == len(chronology) * copies
