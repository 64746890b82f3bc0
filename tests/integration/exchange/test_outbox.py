"""The outbox against a tiny real peer on 127.0.0.1: states, retries, resume, receipts."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path

import pytest

from tests.integration.exchange.outbox_support import CHUNK, RECEIVER, Sending, sending
from transfer.errors import ConflictError, InputError, IntegrityError, NotFoundError
from transfer.exchange.outbox import OutgoingRecord
from transfer.receipts import SignedReceipt
from transfer.store.permissions import PermissionDenied


def _events(record: OutgoingRecord) -> list[str]:
    return [e.event for e in record.events]


async def _chronology_kinds(s: Sending, pupil_id: str) -> list[str]:
    entries = await s.store.chronology(s.school.dsl, pupil_id)
    return [getattr(e.record, "kind", "") for e in entries if e.kind == "event"]


async def test_happy_path_queued_delivered_viewed_accepted(db_url: str, tmp_path: Path) -> None:
    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        assert rec.state == "queued" and rec.to_name == "Cliff Road Academy"
        assert rec.pupil_ids == (s.pupil_id,) and _events(rec) == ["draft", "queued"]
        path = s.outbox.path_of(rec.id)
        assert path.is_file() and not list(path.parent.glob("*.tmp"))
        data = path.read_bytes()
        assert len(data) == rec.ciphertext_size and len(data) > 4 * CHUNK
        assert hashlib.sha256(data).hexdigest() == rec.ciphertext_sha256
        assert data.startswith(b"age-encryption.org/v1\n")  # ciphertext only on disk

        assert await s.outbox.deliver_due() == 1
        got = await s.outbox.get(dsl, rec.id)
        assert got.state == "delivered" and got.attempts == 1
        assert _events(got) == ["draft", "queued", "sent", "receipt.delivered"]
        assert [r.kind for r in got.receipts] == ["delivered"]
        assert bytes(s.peer.uploads[rec.id].data) == data and s.peer.stored == {rec.id: 1}
        assert len(s.peer.patch_bytes) == -(-len(data) // CHUNK)  # chunks of transfer.chunk_bytes
        assert await s.outbox.deliver_due() == 0  # nothing left to do

        # The receipt is kept byte for byte and verifies with the receiver's key.
        held = got.receipts[0]
        signed = s.outbox.stored_receipt(
            s.peer.uploads[rec.id].receipts[0].body_bytes, held.signature
        )
        assert signed.body.kind == "delivered"

        seen: list[tuple[str, str]] = []

        async def listener(record: OutgoingRecord, receipt: SignedReceipt) -> None:
            seen.append((record.state, receipt.body.kind))

        s.outbox.on_receipt.append(listener)
        viewed = s.peer.receipt(rec.id, "viewed")
        assert await s.outbox.take_receipt(viewed) is True
        assert await s.outbox.take_receipt(viewed) is False  # idempotent
        accepted = s.peer.receipt(rec.id, "accepted", manifest_sha256=rec.manifest_sha256)
        assert await s.outbox.pull_receipts() == 1  # the accepted one, pulled
        final = await s.outbox.get(dsl, rec.id)
        assert final.state == "accepted"
        assert [r.kind for r in final.receipts] == ["delivered", "viewed", "accepted"]
        assert final.receipts[-1].acted_by == {"name": "Dee Ess", "role": "dsl"}
        assert seen == [("viewed", "viewed"), ("accepted", "accepted")]
        assert await s.outbox.take_receipt(accepted) is False

        actions = s.school.audit.actions()
        for action in (
            "transfer.queued",
            "transfer.sent",
            "transfer.delivered",
            "receipt.verified",
            "transfer.viewed",
            "transfer.accepted",
        ):
            assert action in actions, action
        assert await _chronology_kinds(s, s.pupil_id) == [
            "transfer.queued",
            "transfer.delivered",
            "transfer.viewed",
            "transfer.accepted",
        ]
        assert (await s.outbox.latest_for_pupil("199001", s.pupil_id)) == final
        later = s.school.clock.now
        assert [r.id for r in await s.outbox.accepted_before("199001", later)] == []
        s.school.clock.advance(seconds=1)
        assert [r.id for r in await s.outbox.accepted_before("199001", s.school.clock.now)] == [
            rec.id
        ]
        assert [r.id for r in await s.outbox.list(dsl, state="accepted")] == [rec.id]
        assert await s.outbox.list(dsl, state="queued") == []


async def test_receiver_down_then_up(tmp_path: Path) -> None:
    async with sending(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as s:
        rec = await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, RECEIVER)
        s.peer.down = True
        assert await s.outbox.deliver_due() == 1
        got = await s.outbox.get(s.school.dsl, rec.id)
        assert got.state == "queued" and got.attempts == 1
        assert (
            got.last_error and "503" in got.last_error and "down for maintenance" in got.last_error
        )
        assert got.next_attempt_at is not None and got.next_attempt_at > s.school.clock.now
        # Not due yet: the sweep leaves it alone.
        assert await s.outbox.deliver_due() == 0
        s.school.clock.advance(seconds=1.01)  # jitter 0.5 of a 2 s ceiling
        assert await s.outbox.deliver_due() == 1  # still down: second failure
        again = await s.outbox.get(s.school.dsl, rec.id)
        assert again.attempts == 2 and again.state == "queued" and again.next_attempt_at
        assert (again.next_attempt_at - s.school.clock.now).total_seconds() == pytest.approx(2.0)
        s.peer.down = False
        s.school.clock.advance(seconds=2.01)
        assert await s.outbox.deliver_due() == 1
        done = await s.outbox.get(s.school.dsl, rec.id)
        assert done.state == "delivered" and done.attempts == 3
        assert _events(done).count("retry") == 2 and s.peer.stored == {rec.id: 1}


async def test_connection_dropped_mid_upload_resumes_from_the_held_offset(tmp_path: Path) -> None:
    async with sending(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as s:
        rec = await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, RECEIVER)
        size = rec.ciphertext_size
        assert size is not None
        s.peer.drop_patch = 3  # the 4th chunk is cut off
        await s.outbox.deliver_due()
        got = await s.outbox.get(s.school.dsl, rec.id)
        assert got.state == "queued" and got.last_error and "cannot reach" in got.last_error
        held = len(s.peer.uploads[rec.id].data)
        assert held == 3 * CHUNK
        before = s.outbox.bytes_sent
        s.school.clock.advance(seconds=5)
        await s.outbox.deliver_due()
        after_resume = s.outbox.bytes_sent - before
        assert (await s.outbox.get(s.school.dsl, rec.id)).state == "delivered"
        assert after_resume == size - held and after_resume < size
        assert bytes(s.peer.uploads[rec.id].data) == s.outbox.path_of(rec.id).read_bytes()
        assert s.peer.stored == {rec.id: 1}


async def test_a_killed_claimers_lease_expires_and_nothing_arrives_twice(
    db_url: str, tmp_path: Path
) -> None:
    async with sending(db_url, tmp_path) as s:
        rec = await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, RECEIVER)
        # The first process claims the item, starts uploading and is killed mid-way.
        s.peer.stall_patch = 2
        task = asyncio.create_task(s.outbox.deliver_due())
        await asyncio.wait_for(s.peer.stalled.wait(), 10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Another process: the lease still holds, so it takes nothing.
        other = s.second_outbox()
        try:
            assert await other.deliver_due() == 0
            s.school.clock.advance(seconds=121)  # the 120 s lease runs out
            assert await other.deliver_due() == 1
            got = await other.get(s.school.dsl, rec.id)
            assert got.state == "delivered"
            assert s.peer.stored == {rec.id: 1}
            assert bytes(s.peer.uploads[rec.id].data) == s.outbox.path_of(rec.id).read_bytes()
        finally:
            await other.client.close()


async def test_permanent_refusal_fails_at_once_and_resend_sends_the_same_bytes(
    tmp_path: Path,
) -> None:
    async with sending(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        data = s.outbox.path_of(rec.id).read_bytes()
        s.peer.refuse = (403, "this school does not take files from you")
        await s.outbox.deliver_due()
        got = await s.outbox.get(dsl, rec.id)
        assert got.state == "failed" and got.attempts == 1
        assert got.failure_reason and "403" in got.failure_reason
        assert "does not take files" in got.failure_reason
        assert "transfer.failed" in s.school.audit.actions()
        assert "transfer.failed" in await _chronology_kinds(s, s.pupil_id)
        s.school.clock.advance(hours=1)
        assert await s.outbox.deliver_due() == 0  # failed items are not retried

        s.peer.refuse = None
        again = await s.outbox.resend(dsl, rec.id)
        assert again.id == rec.id and again.state == "queued" and again.attempts == 0
        assert again.failure_reason is None and "resent" in _events(again)
        await s.outbox.deliver_due()
        done = await s.outbox.get(dsl, rec.id)
        assert done.state == "delivered" and done.ciphertext_sha256 == rec.ciphertext_sha256
        assert bytes(s.peer.uploads[rec.id].data) == data
        with pytest.raises(ConflictError, match="only a failed package"):
            await s.outbox.resend(dsl, rec.id)


async def test_give_up_after_the_configured_hours(tmp_path: Path) -> None:
    async with sending(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as s:
        rec = await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, RECEIVER)
        s.peer.down = True
        await s.outbox.deliver_due()
        s.school.clock.advance(hours=2, seconds=1)
        await s.outbox.deliver_due()
        got = await s.outbox.get(s.school.dsl, rec.id)
        assert got.state == "failed"
        assert got.failure_reason and got.failure_reason.startswith("not delivered within 2 hours")
        failed = [e for e in s.school.audit.events if e.action == "transfer.failed"]
        assert failed and failed[-1].detail["gave_up"] is True


async def test_cancel_before_and_after_delivery(tmp_path: Path) -> None:
    async with sending(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        # Queuing the same pupil to the same school again is refused while one waits.
        with pytest.raises(ConflictError, match="already waiting"):
            await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        cancelled = await s.outbox.cancel(dsl, rec.id)
        assert cancelled.state == "cancelled" and not s.outbox.path_of(rec.id).exists()
        assert await s.outbox.deliver_due() == 0 and s.peer.requests == []
        assert "transfer.cancelled" in await _chronology_kinds(s, s.pupil_id)
        with pytest.raises(ConflictError, match="cancelled"):
            await s.outbox.cancel(dsl, rec.id)

        second = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        await s.outbox.deliver_due()
        with pytest.raises(ConflictError, match="delivered, so it cannot be cancelled"):
            await s.outbox.cancel(dsl, second.id)
        assert (await s.outbox.get(dsl, second.id)).state == "delivered"
        refused = [e for e in s.school.audit.events if e.action == "transfer.cancelled"]
        assert [e.outcome for e in refused] == ["ok", "refused", "refused"]


async def test_bad_receipts_are_refused_audited_and_change_nothing(tmp_path: Path) -> None:
    async with sending(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        # The receiver's answer to "complete" is signed with a key that is not its own.
        from keys.keyset import KeySet

        s.peer.wrong_key = KeySet.generate("199003")
        await s.outbox.deliver_due()
        got = await s.outbox.get(dsl, rec.id)
        assert got.state == "queued" and got.receipts == ()
        assert got.last_error and "not a key of Cliff Road Academy" in got.last_error
        refused = [e for e in s.school.audit.events if e.action == "receipt.refused"]
        assert refused and refused[0].outcome == "refused"

        # A properly signed receipt whose body was altered after signing.
        s.peer.wrong_key = None
        s.school.clock.advance(seconds=5)
        await s.outbox.deliver_due()  # the peer already stored it: answers with the stored receipt
        assert (await s.outbox.get(dsl, rec.id)).state == "queued"  # that one was forged too
        good = s.peer.receipt(rec.id, "viewed")
        tampered_body = good.body.model_copy(update={"kind": "rejected", "reason": "no"})
        tampered = SignedReceipt(
            body=tampered_body,
            body_bytes=tampered_body.canonical_bytes(),
            signature_text=good.signature_text,
        )
        with pytest.raises(IntegrityError):
            await s.outbox.record_receipt(tampered)
        assert (await s.outbox.get(dsl, rec.id)).receipts == ()
        # A good receipt for a package this node never sent.
        other = s.peer.receipt(rec.id, "viewed")
        stray_body = other.body.model_copy(update={"package_id": uuid.uuid4()})
        stray = SignedReceipt(stray_body, stray_body.canonical_bytes(), other.signature_text)
        with pytest.raises(NotFoundError):
            await s.outbox.record_receipt(stray)
        # Once the receipt is good, the state moves straight to viewed (receipts move forward).
        assert await s.outbox.take_receipt(good) is True
        assert (await s.outbox.get(dsl, rec.id)).state == "viewed"


async def test_permissions_and_bad_input(tmp_path: Path) -> None:
    async with sending(f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", tmp_path) as s:
        with pytest.raises(PermissionDenied):
            await s.outbox.queue_leaver_file(s.school.staff, s.pupil_id, RECEIVER)
        refused = [e for e in s.school.audit.events if e.action == "transfer.queued"]
        assert refused[0].outcome == "refused"
        with pytest.raises(InputError, match="not to your own"):
            await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, "199001")
        with pytest.raises(NotFoundError):
            await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, "999999")
        with pytest.raises(InputError, match="UUID"):
            await s.outbox.get(s.school.dsl, "not-an-id")
        with pytest.raises(InputError, match="unknown state"):
            await s.outbox.list(s.school.dsl, state="lost")
        rec = await s.outbox.queue_leaver_file(s.school.dsl, s.pupil_id, RECEIVER)
        with pytest.raises(PermissionDenied):
            await s.outbox.get(s.school.staff, rec.id)
        with pytest.raises(PermissionDenied):
            await s.outbox.cancel(s.school.head, rec.id)
        assert (await s.outbox.get(s.school.dsl, rec.id)).state == "queued"


async def test_two_sweepers_drain_one_outbox_with_each_item_delivered_once(
    db_url: str, tmp_path: Path
) -> None:
    from schemas.auditing import MemoryAudit
    from tests.integration.store.conftest import KEK
    from transfer.store.service import Store

    async with sending(db_url, tmp_path) as s:
        ids = [
            (await s.outbox.queue_leaver_file(s.school.dsl, await s.new_pupil(n), RECEIVER)).id
            for n in range(2, 24)
        ]
        assert len(ids) == 22
        # A second "serve" process: its own engine on the same database.
        store2 = await Store.open(
            db_url, KEK, MemoryAudit(), data_dir=s.data_dir, clock=s.school.clock
        )
        other = s.second_outbox(store2)
        done = {s.outbox.worker_id: 0, other.worker_id: 0}

        async def drain(outbox: object) -> None:
            from transfer.exchange.outbox import Outbox

            assert isinstance(outbox, Outbox)
            idle = 0
            while idle < 3:
                n = await outbox.deliver_due(limit=3)
                done[outbox.worker_id] += n
                idle = idle + 1 if n == 0 else 0
                await asyncio.sleep(0)

        try:
            await asyncio.gather(drain(s.outbox), drain(other))
        finally:
            await other.client.close()
            await store2.close()
        records = await s.outbox.list(s.school.dsl)
        assert {r.id for r in records if r.state == "delivered"} >= set(ids)
        assert s.peer.stored == {i: 1 for i in ids}
        completes = [p for m, p in s.peer.requests if p.endswith("/complete")]
        assert sorted(completes) == sorted(f"/peer/v1/packages/{i}/complete" for i in ids)
        for r in records:
            assert _events(r).count("receipt.delivered") == 1 and r.attempts == 1
        assert sum(done.values()) == len(ids) and all(done.values()), done


@pytest.mark.parametrize("final, contrary", [("accepted", "rejected"), ("rejected", "accepted")])
async def test_a_receipt_contradicting_the_final_state_is_refused_and_audited(
    db_url: str, tmp_path: Path, final: str, contrary: str
) -> None:
    from transfer.receipts import ReceiptContradictionError

    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        await s.outbox.deliver_due()

        def receipt(kind: str) -> SignedReceipt:
            return s.peer.receipt(
                rec.id,
                kind,  # type: ignore[arg-type]
                manifest_sha256=rec.manifest_sha256 if kind == "accepted" else None,
                reason="Not our pupil" if kind == "rejected" else None,
            )

        assert await s.outbox.take_receipt(receipt(final)) is True
        before = await s.outbox.get(dsl, rec.id)
        assert before.state == final
        bad = receipt(contrary)
        with pytest.raises(ReceiptContradictionError, match=f"already {final}"):
            await s.outbox.take_receipt(bad)
        after = await s.outbox.get(dsl, rec.id)
        assert after.state == final
        assert [r.kind for r in after.receipts] == ["delivered", final]  # not stored, not listed
        assert after.events == before.events
        refused = [e for e in s.school.audit.events if e.action == "receipt.refused"]
        assert [(e.outcome, e.detail["reason"], e.detail["receipt"]) for e in refused] == [
            ("refused", "receipt-contradicts-final-state", str(bad.body.receipt_id))
        ]
        # Pulled from the receiver, it is refused the same way (logged, not kept).
        assert await s.outbox.pull_receipts() == 0
        assert [r.kind for r in (await s.outbox.get(dsl, rec.id)).receipts] == ["delivered", final]
        # A late receipt that does not contradict (viewed) is still kept as evidence.
        assert await s.outbox.take_receipt(receipt("viewed")) is True
        assert (await s.outbox.get(dsl, rec.id)).state == final


async def test_accepted_and_rejected_receipts_at_once_keep_exactly_one(
    db_url: str, tmp_path: Path
) -> None:
    """Two processes take opposite final receipts at the same moment: one wins, the
    other is refused, on both engines."""
    from schemas.auditing import MemoryAudit
    from tests.integration.store.conftest import KEK
    from transfer.receipts import ReceiptContradictionError
    from transfer.store.service import Store

    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        store2 = await Store.open(
            db_url, KEK, MemoryAudit(), data_dir=s.data_dir, clock=s.school.clock
        )
        other = s.second_outbox(store2)
        try:
            for round_ in range(4):
                rec = await s.outbox.queue_leaver_file(dsl, await s.new_pupil(round_ + 2), RECEIVER)
                await s.outbox.deliver_due()
                accepted = s.peer.receipt(rec.id, "accepted", manifest_sha256=rec.manifest_sha256)
                rejected = s.peer.receipt(rec.id, "rejected", reason="Not our pupil")
                results = await asyncio.gather(
                    s.outbox.take_receipt(accepted),
                    other.take_receipt(rejected),
                    return_exceptions=True,
                )
                assert sorted(type(r).__name__ for r in results) == [
                    "ReceiptContradictionError",
                    "bool",
                ], results
                won = "accepted" if results[0] is True else "rejected"
                assert isinstance(results[1 if won == "accepted" else 0], ReceiptContradictionError)
                got = await s.outbox.get(dsl, rec.id)
                assert got.state == won
                assert [r.kind for r in got.receipts] == ["delivered", won]
        finally:
            await other.client.close()
            await store2.close()
