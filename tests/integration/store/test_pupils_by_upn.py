"""A person names a pupil by UPN wherever they name a pupil (issue 11, item 16).

Every store operation that takes a pupil takes the UPN as well as the internal id;
a UPN is checked by the DfE's rules first (a wrong check letter is refused as the
DfE words it), and the audit log still names the pupil by id. SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from schemas.records import NewBodyMapMark, NewConcern, PupilChanges
from tests.integration.store.conftest import School
from transfer.errors import NotFoundError
from transfer.identifiers import InvalidUPN, UPNErrorCategory
from transfer.store.permissions import PermissionDenied

UPN = "H801200001001"
T0 = datetime(2026, 9, 1, 10, 0, tzinfo=UTC)


async def _pdf() -> AsyncIterator[bytes]:
    yield b"%PDF-1.7\n% a letter\n"


async def test_every_pupil_operation_takes_the_upn(school: School, tmp_path: Path) -> None:
    store = school.store
    pupil = await school.pupil(UPN)
    # Read, change, list by UPN; written in lower case and with spaces, as people type it.
    assert (await store.get_pupil(school.dsl, UPN)).id == pupil.id
    assert (await store.get_pupil(school.dsl, " h801200001001 ")).id == pupil.id
    changed = await store.update_pupil(school.admin, UPN, PupilChanges(year_group="7"))
    assert changed.id == pupil.id and changed.year_group == "7"
    concern = await store.record_concern(
        school.staff,
        NewConcern(
            pupil_ids=(UPN,),
            category="bullying",
            happened_at=T0,
            account="pushed",
            body_map=(
                NewBodyMapMark(
                    pupil_id=UPN.lower(), side="front", x=0.1, y=0.2, description="graze"
                ),
            ),
        ),
    )
    assert concern.pupil_ids == (pupil.id,) and concern.body_map[0].pupil_id == pupil.id
    assert [c.id for c in await store.list_concerns(school.dsl, pupil_id=UPN)] == [concern.id]
    doc = await store.add_document(school.dsl, UPN, _pdf(), filename="letter.pdf")
    assert doc.pupil_id == pupil.id and doc.media_type == "application/pdf"
    kinds = {e.kind for e in await store.chronology(school.dsl, UPN)}
    assert kinds == {"concern", "document"}
    archive = await store.export_subject_access(school.dsl, UPN)
    async for _ in archive.chunks:
        pass
    assert archive.export.pupil.id == pupil.id
    # The audit log names the pupil by its id, whatever the person typed.
    pupil_targets = {e.targets.get("pupil") for e in school.audit.events if "pupil" in e.targets}
    assert pupil_targets == {pupil.id}
    tomb = await store.erase_pupil(school.dsl, UPN)
    assert tomb.pupil_id == pupil.id
    # Erased, the UPN is gone with the rest: it names no pupil any more.
    with pytest.raises(NotFoundError, match=f"no pupil with UPN {UPN}"):
        await store.get_pupil(school.dsl, UPN)


async def test_a_bad_upn_gets_the_dfe_error_and_an_unknown_one_is_not_found(
    school: School,
) -> None:
    await school.pupil(UPN)
    with pytest.raises(InvalidUPN) as bad:
        await school.store.get_pupil(school.dsl, "A801200001001")
    assert bad.value.category is UPNErrorCategory.CHECK_LETTER
    assert "wrong check letter" in bad.value.message and bad.value.http_status == 400
    with pytest.raises(InvalidUPN) as bad:
        await school.store.chronology(school.dsl, "H999200001001")
    assert bad.value.category is UPNErrorCategory.LA_CODE
    with pytest.raises(InvalidUPN) as bad:
        await school.store.get_pupil(school.dsl, "not-a-pupil")
    assert bad.value.category is UPNErrorCategory.WRONG_LENGTH
    with pytest.raises(NotFoundError, match="no pupil with UPN G80120000101A"):
        await school.store.get_pupil(school.dsl, "G80120000101A")
    # An id still works, and an unknown id is still "no such pupil".
    with pytest.raises(NotFoundError, match="no such pupil"):
        await school.store.get_pupil(school.dsl, "0b6c2f7e-9a1d-4c1b-8d2e-3f4a5b6c7d8e")


async def test_looking_a_upn_up_needs_the_right_to_read_pupils(school: School) -> None:
    await school.pupil(UPN)
    # The DPO's auditor role reads the audit trail, not the roll: it may not probe UPNs.
    with pytest.raises(PermissionDenied):
        await school.store.chronology(school.auditor, UPN)
    refused = [e for e in school.audit.events if e.outcome == "refused"]
    assert [e.action for e in refused] == ["store.pupil.find"]


async def test_another_schools_upn_is_not_found(school: School) -> None:
    await school.store.create_school(name="Riverside Academy", urn="199002", laestab="8014001")
    other = await school.store.bootstrap_staff(
        "199002", username="dsl2", display_name="Aisha Khan", roles=["dsl"]
    )
    await school.pupil(UPN)
    with pytest.raises(NotFoundError):
        await school.store.get_pupil(await school.store.actor_for(other.id), UPN)
