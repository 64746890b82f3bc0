"""The chronology merges every kind of record in time order; the SAR export holds everything."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from schemas.records import (
    ChronologyEntry,
    NewAction,
    NewBodyMapMark,
    NewConcern,
    NewContact,
    NewTriage,
    SubjectAccessExport,
)
from tests.integration.store.conftest import School
from tests.support.sar import unpack
from transfer.store.permissions import PermissionDenied

T0 = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data[:3]
    yield data[3:]


async def test_chronology_is_in_time_order_across_kinds(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    school.clock.now = T0 + timedelta(days=5)
    # Recorded late about something that happened first.
    late = await store.record_concern(
        school.staff,
        NewConcern(pupil_ids=(p.id,), category="bullying", happened_at=T0, account="first"),
    )
    school.clock.now = T0 + timedelta(days=1)
    early = await store.record_concern(
        school.staff,
        NewConcern(
            pupil_ids=(p.id,),
            category="medical",
            happened_at=T0 + timedelta(hours=2),
            account="second",
        ),
    )
    school.clock.now = T0 + timedelta(days=6)
    triage = await store.triage_concern(
        school.dsl, late.id, NewTriage(decision="no_referral", reason="parent engaged")
    )
    school.clock.now = T0 + timedelta(days=7)
    action = await store.add_action(school.dsl, late.id, NewAction(text="check in weekly"))
    school.clock.now = T0 + timedelta(days=8)
    contact = await store.add_contact(
        school.dsl,
        late.id,
        NewContact(agency="Early help", contacted_at=T0 + timedelta(days=2), outcome="advice"),
    )
    school.clock.now = T0 + timedelta(days=9)
    doc = await store.add_document(school.dsl, p.id, _chunks(b"minutes"), filename="m.txt")

    entries = await store.chronology(school.dsl, p.id)
    assert [(e.kind, e.id) for e in entries] == [
        ("concern", late.id),
        ("concern", early.id),
        ("contact", contact.id),
        ("triage", triage.id),
        ("action", action.id),
        ("document", doc.id),
    ]
    assert [e.occurred_at for e in entries] == sorted(e.occurred_at for e in entries)
    assert all(e.provenance is None and e.schema_version == 1 for e in entries)
    record = entries[3].record
    assert record.model_dump()["reason"] == "parent engaged"
    # Entries round-trip through JSON (they will travel in packages).
    again = [ChronologyEntry.model_validate_json(e.model_dump_json()) for e in entries]
    assert again == entries
    assert school.audit.events[-1].action == "store.chronology.read"
    assert school.audit.events[-1].detail == {"entries": 6}


async def test_subject_access_export_holds_everything_for_review(school: School) -> None:
    store = school.store
    p = await school.pupil("H801200001001")
    q = await school.pupil("G80120000101A", "Other")
    c = await store.record_concern(
        school.staff,
        NewConcern(
            pupil_ids=(p.id, q.id),
            category="radicalisation_prevent",
            happened_at=T0,
            account="account text",
            people_involved="an uncle",
            body_map=(
                NewBodyMapMark(pupil_id=p.id, side="front", x=0.3, y=0.4, description="bruise"),
                NewBodyMapMark(pupil_id=q.id, side="front", x=0.3, y=0.4, description="q's"),
            ),
        ),
    )
    await store.triage_concern(school.dsl, c.id, NewTriage(decision="refer_police", reason="r"))
    await store.add_action(school.dsl, c.id, NewAction(text="a"))
    await store.add_contact(school.dsl, c.id, NewContact(agency="Police", contacted_at=T0))
    doc = await store.add_document(
        school.dsl, p.id, _chunks(b"letter body"), filename="../letter.txt", concern_id=c.id
    )

    with pytest.raises(PermissionDenied):
        await store.export_subject_access(school.head, p.id)
    archive = await store.export_subject_access(school.dsl, p.id)
    export = archive.export
    files = await unpack(archive)

    loaded = SubjectAccessExport.model_validate(json.loads(files[f"{archive.name}/export.json"]))
    assert loaded == export
    assert export.pupil.id == p.id
    (concern,) = export.concerns
    assert concern.account == "account text" and concern.restricted
    # Only this pupil's body-map marks: the other child's are not theirs to receive.
    assert [m.description for m in concern.body_map] == ["bruise"]
    assert len(export.triage) == len(export.actions) == len(export.contacts) == 1
    assert [d.id for d in export.documents] == [doc.id]
    (name,) = [n for n in files if "/documents/" in n]
    assert files[name] == b"letter body"
    assert name == f"{archive.name}/{export.files[doc.id]}"
    assert name.endswith("letter.txt") and ".." not in name
    review = {(r.record, r.field) for r in export.review}
    assert {("concern", "people_involved"), ("concern", "pupil_ids")} <= review
    assert ("document", "content") in review
    assert school.audit.events[-1].action == "store.sar.export"
    assert school.audit.events[-1].targets == {"pupil": p.id}


async def test_export_of_an_erased_pupil_holds_only_the_tombstone(school: School) -> None:
    p = await school.pupil("H801200001001")
    await school.store.record_concern(
        school.staff,
        NewConcern(pupil_ids=(p.id,), category="bullying", happened_at=T0, account="gone"),
    )
    await school.store.add_document(school.dsl, p.id, _chunks(b"gone too"), filename="g")
    tomb = await school.store.erase_pupil(school.dsl, p.id)
    archive = await school.store.export_subject_access(school.dsl, p.id)
    export = archive.export
    assert export.tombstones == (tomb,)
    assert export.concerns == () and export.documents == ()
    assert export.pupil.erased_at is not None and export.pupil.surname == ""
    files = await unpack(archive)
    assert list(files) == [f"{archive.name}/export.json"]
    assert b"gone" not in files[f"{archive.name}/export.json"]
