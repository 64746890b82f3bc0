"""People are shown by name and role, not by id: the chronology's lines and the SAR export."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from schemas.records import NewAction, NewConcern, NewContact, NewTriage
from tests.integration.store.conftest import School
from transfer.store import people

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _file(school: School) -> str:
    store = school.store
    p = await school.pupil("H801200001001")
    c = await store.record_concern(
        school.staff,
        NewConcern(pupil_ids=(p.id,), category="bullying", happened_at=T0, account="first"),
    )
    school.clock.now = T0 + timedelta(days=1)
    await store.triage_concern(school.dsl, c.id, NewTriage(decision="monitor", reason="watch"))
    await store.add_action(
        school.deputy, c.id, NewAction(text="check in", assignee_id=school.head.staff_id)
    )
    await store.add_contact(school.dsl, c.id, NewContact(agency="Early help", contacted_at=T0))
    await store.add_document(school.deputy, p.id, _chunks(b"minutes"), filename="m.txt")
    await store.add_pupil_event(None, p.id, kind="transfer.queued", summary="Queued by the node")
    return p.id


async def test_chronology_lines_say_who_recorded_each_line(school: School) -> None:
    pupil_id = await _file(school)
    lines = await school.store.chronology_lines(school.dsl, pupil_id)
    said = {line.kind: (line.recorded_by_name, line.recorded_by_role) for line in lines}
    assert said == {
        "concern": ("Staff", "Staff"),
        "triage": ("Dsl", "DSL"),
        "action": ("Deputy", "Deputy DSL"),
        "contact": ("Dsl", "DSL"),
        "document": ("Deputy", "Deputy DSL"),
        "event": ("the node itself (automatic)", None),
    }
    # Still the chronology itself: same lines, same order, the ids kept in the records.
    plain = await school.store.chronology(school.dsl, pupil_id)
    assert [(line.kind, line.id) for line in lines] == [(e.kind, e.id) for e in plain]
    concern = next(line for line in lines if line.kind == "concern")
    assert concern.record.model_dump()["recorded_by"] == school.staff.staff_id


async def test_the_subject_access_export_names_the_people_in_it(school: School) -> None:
    pupil_id = await _file(school)
    archive = await school.store.export_subject_access(school.dsl, pupil_id)
    async for _ in archive.chunks:  # the caller takes the whole stream
        pass
    export = archive.export
    named = {p.id: (p.name, p.role) for p in export.people}
    assert named == {
        school.staff.staff_id: ("Staff", "staff"),
        school.dsl.staff_id: ("Dsl", "dsl"),  # who exported it, who triaged
        school.deputy.staff_id: ("Deputy", "deputy_dsl"),
        school.head.staff_id: ("Head", "head_teacher"),  # the action's assignee
    }
    assert export.exported_by == school.dsl.staff_id


async def test_describing_audit_actors(school: School) -> None:
    async with school.store.sessions() as s:
        conn = await s.connection()
        who = await people.describe_actors(
            conn,
            [school.dsl.staff_id, "operator", "node", None, "peer:199001", "199001", "nobody-1"],
        )
    assert who[school.dsl.staff_id].describe(with_organisation=True) == (
        "Dsl (DSL, Harbourside Primary)"
    )
    assert who["operator"].describe() == "the operator (command line)"
    assert who["node"] is who[None] is people.NODE
    assert who["peer:199001"].describe() == "Harbourside Primary's node"
    assert who["199001"].describe() == "Harbourside Primary"
    assert who["nobody-1"].describe() == "unknown (nobody-1)"
