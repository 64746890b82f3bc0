"""Pupil events: transfer and referral lines in the chronology, sealed, exported, erased."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, func, select

from keys import aead
from schemas.records import (
    ChronologyEntry,
    NewAction,
    NewConcern,
    NewContact,
    NewTriage,
    PupilEventRecord,
)
from tests.integration.store.conftest import School
from transfer.errors import InputError, NotFoundError
from transfer.package.from_store import leaver_file_entries
from transfer.store.keyring import KeyDestroyed, KeyRing, field_aad
from transfer.store.permissions import PermissionDenied
from transfer.store.tables import PupilEvent, SealedField

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


async def test_events_join_the_chronology_in_time_order(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    school.clock.now = T0 + timedelta(days=1)
    concern = await store.record_concern(
        school.staff,
        NewConcern(pupil_ids=(p.id,), category="bullying", happened_at=T0, account="pushed"),
    )
    school.clock.now = T0 + timedelta(days=3)
    queued = await store.add_pupil_event(
        school.dsl,
        p.id,
        kind="transfer.queued",
        summary="Leaver's file queued for Riverside Academy",
        ref="5b0f2f8e-8f43-4d4a-9a55-2d3c8b1e0a11",
    )
    # The node itself, later, about something that happened earlier than it learnt of it.
    school.clock.now = T0 + timedelta(days=5)
    delivered = await store.add_pupil_event(
        None,
        p.id,
        kind="transfer.delivered",
        summary="  Leaver's file delivered to Riverside Academy  ",
        ref="5b0f2f8e-8f43-4d4a-9a55-2d3c8b1e0a11",
        at=datetime(2026, 9, 4, 10, 0, tzinfo=UTC),
    )
    assert queued.recorded_by == school.dsl.staff_id and delivered.recorded_by is None
    assert delivered.summary == "Leaver's file delivered to Riverside Academy"
    assert delivered.occurred_at == datetime(2026, 9, 4, 10, 0, tzinfo=UTC)
    assert delivered.recorded_at == T0 + timedelta(days=5)

    for reader in (school.dsl, school.deputy, school.head):
        entries = await store.chronology(reader, p.id)
        assert [(e.kind, e.id) for e in entries] == [
            ("concern", concern.id),
            ("event", queued.id),
            ("event", delivered.id),
        ]
    entries = await store.chronology(school.dsl, p.id)
    assert entries[2].record == delivered and entries[2].concern_id is None
    assert entries[2].occurred_at == delivered.occurred_at
    again = [ChronologyEntry.model_validate_json(e.model_dump_json()) for e in entries]
    assert again == entries
    assert isinstance(again[1].record, PupilEventRecord)

    adds = [e for e in school.audit.events if e.action == "store.event.add"]
    assert [(e.actor, e.outcome) for e in adds] == [(school.dsl.staff_id, "ok"), ("node", "ok")]
    assert adds[1].targets == {"pupil": p.id, "event": delivered.id}
    assert adds[1].detail == {"kind": "transfer.delivered", "ref": delivered.ref}
    assert all("Riverside" not in repr(e) for e in school.audit.events)


async def test_the_summary_is_sealed_under_the_pupils_key(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    ev = await store.add_pupil_event(None, p.id, kind="referral.sent", summary="Sent to MASH")
    async with store.sessions() as s:
        row = await s.get(PupilEvent, ev.id)
        assert row is not None and row.kind == "referral.sent" and row.org_id == p.org_id
        sealed = await s.scalar(
            select(SealedField.sealed).where(
                SealedField.record_table == "pupil_events", SealedField.record_id == ev.id
            )
        )
        assert sealed is not None and b"MASH" not in sealed
        key = await KeyRing(bytes(range(32))).pupil_key(s, p.id)
    aad = field_aad("pupil_events", "summary", ev.id, p.id)
    assert aead.unseal(key, sealed, aad) == b"Sent to MASH"


async def test_who_may_add_events_and_bad_input(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    for actor in (school.staff, school.head, school.admin, school.auditor):
        with pytest.raises(PermissionDenied):
            await store.add_pupil_event(actor, p.id, kind="transfer.sent", summary="x")
        last = school.audit.events[-1]
        assert (last.action, last.outcome, last.actor) == (
            "store.event.add",
            "refused",
            actor.staff_id,
        )
    bad: list[dict[str, object]] = [
        {"kind": "Transfer.Sent", "summary": "x"},
        {"kind": "transfer..sent", "summary": "x"},
        {"kind": "transfer." + "a" * 60, "summary": "x"},
        {"kind": "transfer.sent", "summary": "   "},
        {"kind": "transfer.sent", "summary": "x" * 2001},
        {"kind": "transfer.sent", "summary": "x", "ref": ""},
        {"kind": "transfer.sent", "summary": "x", "ref": "a\nb"},
        {"kind": "transfer.sent", "summary": "x", "at": datetime(2026, 9, 1, 8, 0)},
    ]
    for args in bad:
        with pytest.raises(InputError):
            await store.add_pupil_event(school.dsl, p.id, **args)  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        await store.add_pupil_event(None, "no-such-pupil", kind="transfer.sent", summary="x")
    # Nothing was stored by any of the refusals.
    async with store.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(PupilEvent)) == 0


async def test_events_of_another_organisations_pupil_are_refused(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    await store.create_agency(agency_id="mash-riverside", name="Riverside MASH", kind="social_care")
    rec = await store.bootstrap_staff(
        "mash-riverside", username="sw", display_name="Social Worker", roles=["dsl"]
    )
    outsider = await store.actor_for(rec.id)
    with pytest.raises(NotFoundError):
        await store.add_pupil_event(outsider, p.id, kind="referral.received", summary="x")
    assert await store.chronology(school.dsl, p.id) == []


async def test_events_are_exported_and_erased(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    ev = await store.add_pupil_event(
        school.dsl, p.id, kind="transfer.accepted", summary="Accepted by Riverside", ref="pkg-9"
    )
    export = (await store.export_subject_access(school.dsl, p.id)).export
    assert export.events == (ev,)
    assert school.audit.events[-1].detail["events"] == 1

    tomb = await store.erase_pupil(school.dsl, p.id)
    assert tomb.erased["pupil_events"] == 1
    async with store.sessions() as s:
        assert await s.scalar(select(func.count()).select_from(PupilEvent)) == 0
        assert (
            await s.scalar(
                select(func.count())
                .select_from(SealedField)
                .where(SealedField.record_table == "pupil_events")
            )
            == 0
        )
    with pytest.raises(KeyDestroyed):
        await store.add_pupil_event(None, p.id, kind="transfer.sent", summary="late")
    after = (await store.export_subject_access(school.dsl, p.id)).export
    assert after.events == ()


async def test_a_leavers_file_carries_its_events(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    ev = await store.add_pupil_event(
        None, p.id, kind="transfer.requested", summary="Riverside asked for the file"
    )
    leaver = await leaver_file_entries(store, school.dsl, p.id)
    assert [e.kind for e in leaver.chronology] == ["event"]
    assert f"records/events/{ev.id}.json" in {e.path for e in leaver.entries}


async def test_concurrent_events_on_one_pupil(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    made = await asyncio.gather(
        *(
            store.add_pupil_event(None, p.id, kind="transfer.retry", summary=f"attempt {i}")
            for i in range(8)
        )
    )
    entries = await store.chronology(school.dsl, p.id)
    assert {e.id for e in entries} == {m.id for m in made}


async def test_chronology_reads_a_fixed_number_of_statements(school: School) -> None:
    """One query per table, whatever the chronology's length (no query per record)."""
    store = school.store
    short = await school.pupil("H801200001001")
    long = await school.pupil("G80120000101A", "Baker")
    for pupil, n in ((short, 1), (long, 12)):
        for i in range(n):
            c = await store.record_concern(
                school.staff,
                NewConcern(
                    pupil_ids=(pupil.id,),
                    category="bullying",
                    happened_at=T0 + timedelta(hours=i),
                    account=f"account {i}",
                ),
            )
            await store.triage_concern(school.dsl, c.id, NewTriage(decision="monitor", reason="r"))
            await store.add_action(school.dsl, c.id, NewAction(text="t"))
            await store.add_contact(
                school.dsl, c.id, NewContact(agency="MASH", contacted_at=T0, outcome="o")
            )
            await store.add_pupil_event(None, pupil.id, kind="transfer.sent", summary=f"s {i}")
    statements: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(store.engine.sync_engine, "before_cursor_execute", count)
    try:
        assert len(await store.chronology(school.dsl, short.id)) == 5
        few = len(statements)
        statements.clear()
        assert len(await store.chronology(school.dsl, long.id)) == 60
        many = len(statements)
    finally:
        event.remove(store.engine.sync_engine, "before_cursor_execute", count)
    assert few == many, (few, many)
    assert many <= 14
