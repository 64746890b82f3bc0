"""After an accepted receipt: the deadline alert resolves and, under the "erase" policy, the
sender's copy is crypto-shredded after the set time. The whole chain is real: the primary's
outbox delivers to the secondary's node, whose DSL accepts; the accepted receipt is pushed back."""

from __future__ import annotations

from datetime import date, timedelta

import sqlalchemy as sa

from schemas.records import Destination, PupilChanges
from tests.integration.exchange.test_requests import (  # noqa: F401 - two_nodes is a fixture
    PRIMARY,
    SECONDARY,
    PeerNode,
    _with_concern,
    two_nodes,
)
from transfer.config import TransferSection
from transfer.exchange.deadlines_sweep import DeadlineSweep
from transfer.exchange.receipt_push import ReceiptPusher
from transfer.exchange.retention_sweep import ERASER, AfterAcceptanceRetention
from transfer.store.tables import Pupil, PupilKey, SealedField


async def test_accepted_file_resolves_the_deadline_and_erases_the_senders_copy(
    two_nodes: tuple[PeerNode, PeerNode],  # noqa: F811
) -> None:
    primary, secondary = two_nodes
    pri_dsl, sec_dsl = primary.schools[PRIMARY].dsl, secondary.schools[SECONDARY].dsl
    leaving = date.today() - timedelta(days=20)
    old = await primary.add_pupil(PRIMARY, 21, leaving=leaving)
    stays = await primary.add_pupil(PRIMARY, 22, leaving=leaving)  # never sent: kept
    await _with_concern(primary, PRIMARY, old)
    # The leaver's file is long overdue: the sweep raises an alert.
    sweep = DeadlineSweep(
        primary.store, primary.alerts, primary.outbox, TransferSection(), data_dir=primary.data_dir
    )
    await primary.store.update_pupil(  # a destination makes the KCSIE deadline apply
        await primary.store.actor_for(
            (await primary.store.find_staff(PRIMARY, "admin")).id  # type: ignore[union-attr]
        ),
        old,
        PupilChanges(destination=Destination(kind="school", urn=SECONDARY, name="Riverside")),
    )
    first = await sweep.run()
    assert first.raised == 1
    assert [a.level for a in await primary.alerts.list(pri_dsl)] == ["overdue"]

    sent = await primary.outbox.queue_leaver_file(pri_dsl, old, SECONDARY)
    assert await primary.outbox.deliver_due() == 1
    await secondary.inbox.accept(sec_dsl, sent.id, create_new=True)
    pusher = ReceiptPusher(store=secondary.store, client=secondary.client, config=secondary.config)
    assert await pusher.push_due() >= 1
    accepted = await primary.outbox.latest_for_pupil(PRIMARY, old)
    assert accepted is not None and accepted.state == "accepted"

    report = await sweep.run()
    assert report.accepted == 1 and report.raised == 0
    assert await primary.alerts.list(pri_dsl) == []

    # "keep" (the default): nothing is erased, however long ago it was accepted.
    primary.clock.offset += timedelta(days=365)
    keep = AfterAcceptanceRetention(primary.store, primary.outbox, TransferSection())
    assert await keep.run() == []
    primary.clock.offset -= timedelta(days=365)

    # "erase" after 30 days: not yet at 29, done at 31, and only once.
    erase = AfterAcceptanceRetention(
        primary.store, primary.outbox, TransferSection(after_accepted="erase", erase_after_days=30)
    )
    primary.clock.offset += timedelta(days=29)
    assert await erase.run() == []
    primary.clock.offset += timedelta(days=2)
    (tomb,) = await erase.run()
    assert tomb.pupil_id == old and tomb.erased_by == ERASER
    assert await erase.run() == []
    async with primary.store.sessions() as s:
        erased = (await s.execute(sa.select(Pupil.id, Pupil.erased_at))).all()
        key = await s.scalar(sa.select(PupilKey.sealed_key).where(PupilKey.pupil_id == old))
        sealed = await s.scalar(
            sa.select(sa.func.count()).select_from(SealedField).where(SealedField.pupil_id == old)
        )
    assert {pid: at is not None for pid, at in erased} == {old: True, stays: False}
    assert key is None and sealed == 0
    actions = [(e.action, e.outcome) for e in primary.audit.events]
    assert ("transfer.retention.erase", "ok") in actions
    assert ("store.retention.erase", "ok") in actions
