"""Organisations, categories, pupils by hand, the key hierarchy and provenance."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest
from sqlalchemy import update

from schemas.auditing import MemoryAudit
from schemas.records import Destination, NewConcern, NewPupil, PupilChanges
from tests.integration.store.conftest import School
from transfer.errors import ConflictError, InputError, IntegrityError
from transfer.identifiers import InvalidIdentifier, InvalidUPN, UPNErrorCategory
from transfer.store.organisations import DEFAULT_CATEGORIES
from transfer.store.service import Store
from transfer.store.tables import Concern, ProvenanceRow

WHEN = datetime(2026, 9, 6, 12, 30, tzinfo=UTC)


async def test_organisations_are_validated_and_seeded(school: School) -> None:
    store = school.store
    with pytest.raises(InvalidIdentifier):
        await store.create_school(name="X", urn="12345", laestab="8012001")
    with pytest.raises(InvalidIdentifier):
        await store.create_school(name="X", urn="123456", laestab="9992001")
    with pytest.raises(ConflictError):
        await store.create_school(name="Again", urn="199001", laestab="8012000")
    mash = await store.create_agency(
        agency_id="MASH-Bristol", name="Bristol MASH", kind="social_care"
    )
    assert (mash.id, mash.kind, mash.urn) == ("mash-bristol", "social_care", None)
    with pytest.raises(InputError):
        await store.create_agency(agency_id="lado-x", name="LADO", kind="school")
    assert [o.id for o in await store.list_organisations()] == ["199001", "mash-bristol"]
    assert (await store.get_organisation("199001")).laestab == "8012000"

    cats = {c.key: c for c in await store.list_categories(school.staff)}
    assert set(cats) == set(DEFAULT_CATEGORIES)
    assert {k for k, c in cats.items() if c.restricted} == {
        "domestic_abuse",
        "radicalisation_prevent",
    }
    await store.add_category(school.dsl, key="fgm", label="FGM", restricted=True)
    with pytest.raises(ConflictError):
        await store.add_category(school.dsl, key="fgm", label="FGM")
    with pytest.raises(InputError):
        await store.add_category(school.dsl, key="Bad Key", label="x")
    p = await school.pupil("H801200001001")
    with pytest.raises(InputError, match="unknown category"):
        await store.record_concern(
            school.staff,
            NewConcern(pupil_ids=(p.id,), category="no_such", happened_at=WHEN, account="a"),
        )


async def test_pupils_by_hand(school: School) -> None:
    store = school.store
    with pytest.raises(InvalidUPN) as err:
        await school.pupil("A801200001001")
    assert err.value.category is UPNErrorCategory.CHECK_LETTER
    p = await school.pupil(" h801200001001 ")
    assert p.upn == "H801200001001"
    with pytest.raises(ConflictError):
        await school.pupil("H801200001001")
    changed = await store.update_pupil(
        school.admin,
        p.id,
        PupilChanges(
            leaving_date=date(2027, 7, 21),
            destination=Destination(kind="school", urn="199002", laestab="8014001"),
        ),
    )
    assert changed.leaving_date == date(2027, 7, 21) and changed.surname == "Okafor"
    assert changed.destination is not None and changed.destination.urn == "199002"
    cleared = await store.update_pupil(school.admin, p.id, PupilChanges(destination=None))
    assert cleared.destination is None and cleared.leaving_date == date(2027, 7, 21)
    assert (await store.find_pupil(school.staff, "H801200001001")).id == p.id
    assert [x.id for x in await store.list_pupils(school.head)] == [p.id]
    with pytest.raises(InputError):
        await store.create_pupil(
            school.admin,
            NewPupil.model_construct(
                upn="12", surname="a", forename="b", dob=date(2015, 1, 1), sex="M"
            ),
        )


async def test_wrong_kek_opens_nothing(school: School, db_url: str) -> None:
    p = await school.pupil("H801200001001")
    c = await school.store.record_concern(
        school.staff,
        NewConcern(pupil_ids=(p.id,), category="bullying", happened_at=WHEN, account="a"),
    )
    other = await Store.open(db_url, bytes(32), MemoryAudit(), data_dir=school.data_dir)
    try:
        with pytest.raises(IntegrityError, match="key-encryption key is wrong"):
            await other.get_concern(school.dsl, c.id)
    finally:
        await other.close()


async def test_received_records_show_their_provenance(school: School) -> None:
    p = await school.pupil("H801200001001")
    c = await school.store.record_concern(
        school.staff,
        NewConcern(pupil_ids=(p.id,), category="bullying", happened_at=WHEN, account="a"),
    )
    async with school.store.sessions() as s, s.begin():
        s.add(
            ProvenanceRow(
                id="prov-1",
                org_id="199001",
                source_org_id="199009",
                source_org_name="Previous Primary",
                package_id="pkg-42",
                received_at=WHEN,
                original_id="their-concern-7",
            )
        )
        await s.flush()
        await s.execute(update(Concern).where(Concern.id == c.id).values(provenance_id="prov-1"))
    (entry,) = await school.store.chronology(school.dsl, p.id)
    assert entry.provenance is not None
    assert (entry.provenance.source_org_id, entry.provenance.package_id) == ("199009", "pkg-42")
    assert entry.provenance.received_at == WHEN
    assert (await school.store.get_concern(school.dsl, c.id)).provenance == entry.provenance
