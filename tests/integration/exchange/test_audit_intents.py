"""A state change and its audit entry (and the receipt it issues) commit together.

A process that dies right after committing a change used to leave the change without its
audit entry (issue 17, item 1). Now the entry is promised in the change's own transaction
(an ``audit_intents`` row): here the audit append after the commit fails, as a process
killed at that moment would leave it, and a later replay (what ``serve`` does at start-up)
writes each promised entry exactly once, and the log verifies. The kill -9 campaign in
``tests/faults`` does the same with real processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa

from schemas.auditing import AuditEvent, AuditSink
from tests.integration.exchange.inbox_support import receiving_node
from tests.integration.exchange.outbox_support import RECEIVER, sending
from tests.integration.store.conftest import KEK
from transfer.audit.log import AuditLog
from transfer.audit.tables import audit_intents
from transfer.errors import TransportError
from transfer.exchange.tables import IncomingPackage, IssuedReceipt
from transfer.store.service import Store


class _Died(TransportError):
    """Stands for the process dying between the commit and the audit append (its answer is
    lost: here a 503, as a passing failure)."""


class DyingSink:
    """Passes events on, except the actions named: those are lost (the process 'died')."""

    def __init__(self, inner: AuditSink, dies_on: Iterable[str]) -> None:
        self.inner = inner
        self.dies_on = set(dies_on)

    async def record(self, event: AuditEvent) -> None:
        if event.action in self.dies_on:
            raise _Died(event.action)
        await self.inner.record(event)

    async def record_intent(self, event: AuditEvent, intent_id: str, at: datetime) -> bool:
        if event.action in self.dies_on:
            raise _Died(event.action)
        return False  # the inner sink records it, the store drops the row


@asynccontextmanager
async def dying(store: Store, *actions: str) -> AsyncIterator[None]:
    saved = store._audit_sink
    store._audit_sink = DyingSink(saved, actions)
    try:
        yield
    finally:
        store._audit_sink = saved


async def _intents(store: Store) -> list[str]:
    async with store.engine.connect() as conn:
        rows = (await conn.execute(sa.select(audit_intents.c.event))).scalars().all()
    return sorted(rows)


async def test_receiver_crash_after_delivery_leaves_nothing_unaudited(
    db_url: str, tmp_path: Path
) -> None:
    async with receiving_node(db_url, tmp_path) as rig:
        pupil = await rig.make_pupil_file()
        built, data = await rig.build(pupil)
        pid = str(built.manifest.package_id)
        await rig.upload(pid, data)
        async with dying(rig.store, "transfer.received", "receipt.issued"):
            status, _, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
        assert status == 503  # the answer to the sender is lost; the change is committed
        async with rig.store.sessions() as s:
            row = await s.get(IncomingPackage, pid)
            issued = (await s.scalars(select_receipts(pid))).all()
        assert row is not None and row.state == "delivered"
        # The delivered receipt was issued with the state, and both entries are promised.
        assert [r.kind for r in issued] == ["delivered"]
        waiting = await _intents(rig.store)
        assert len(waiting) == 2
        assert any('"transfer.received"' in w for w in waiting)
        assert any('"receipt.issued"' in w for w in waiting)

        # The next start of the node writes them, once.
        log = AuditLog.open(db_url, KEK, origin="test/audit")
        try:
            assert await log.replay_intents() == 2
            assert await log.replay_intents() == 0
            received = await log.show(action="transfer.received")
            assert [(e.entry.targets.get("package"), e.entry.outcome) for e in received] == [
                (pid, "ok")
            ]
            assert received[0].entry.detail.get("replayed") is True
            issued_entries = await log.show(action="receipt.issued")
            assert [e.entry.targets.get("receipt") for e in issued_entries] == [issued[0].id]
            assert await _intents(rig.store) == []
            await log.verify()
        finally:
            await log.close()

        # The sender asks again: the same receipt, and nothing is audited twice.
        status, body, _ = await rig.call("POST", f"/peer/v1/packages/{pid}/complete", {})
        assert status == 200 and body["receipt"]["receipt"]["receipt_id"] == issued[0].id


def select_receipts(pid: str) -> sa.Select[IssuedReceipt]:
    return sa.select(IssuedReceipt).where(IssuedReceipt.package_id == pid)


async def test_settled_and_replayed_at_once_write_one_entry(db_url: str, tmp_path: Path) -> None:
    """Two processes settling the same promise (one at start-up, one live): one entry."""
    async with receiving_node(db_url, tmp_path) as rig:
        logs = [AuditLog.open(db_url, KEK, origin="test/audit") for _ in range(2)]
        try:
            async with rig.store.sessions() as s, s.begin():
                intent = await rig.store.intend(
                    s, "transfer.offer", None, RECEIVER, {"package": "p1"}
                )
            results = await asyncio.gather(
                logs[0].record_intent(intent.event, intent.id, intent.at),
                logs[1].replay_intents(),
            )
            assert results[0] is True
            assert len(await logs[0].show(action="transfer.offer")) == 1
            assert await _intents(rig.store) == []
            await logs[0].verify()
        finally:
            for log in logs:
                await log.close()


async def test_sender_crash_after_cancel_and_after_a_receipt_leaves_nothing_unaudited(
    db_url: str, tmp_path: Path
) -> None:
    async with sending(db_url, tmp_path) as s:
        dsl = s.school.dsl
        rec = await s.outbox.queue_leaver_file(dsl, s.pupil_id, RECEIVER)
        async with dying(s.store, "transfer.cancelled"):
            try:
                await s.outbox.cancel(dsl, rec.id)
            except _Died:
                pass
        assert (await s.outbox.get(dsl, rec.id)).state == "cancelled"
        second = await s.outbox.queue_leaver_file(dsl, await s.new_pupil(2), RECEIVER)
        assert await s.outbox.deliver_due() == 1
        viewed = s.peer.receipt(second.id, "viewed")
        async with dying(s.store, "receipt.verified", "transfer.viewed"):
            try:
                await s.outbox.take_receipt(viewed)
            except _Died:
                pass
        got = await s.outbox.get(dsl, second.id)
        assert got.state == "viewed" and [r.kind for r in got.receipts] == ["delivered", "viewed"]
        waiting = await _intents(s.store)
        assert len(waiting) == 3

        log = AuditLog.open(db_url, KEK, origin="test/audit")
        try:
            assert await log.replay_intents() == 3
            cancelled = await log.show(action="transfer.cancelled")
            assert [e.entry.targets.get("package") for e in cancelled] == [rec.id]
            verified = await log.show(action="receipt.verified")
            assert [e.entry.detail.get("receipt") for e in verified] == [
                str(viewed.body.receipt_id)
            ]
            assert len(await log.show(action="transfer.viewed")) == 1
            await log.verify()
        finally:
            await log.close()
