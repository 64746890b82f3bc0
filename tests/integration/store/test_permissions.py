"""Permissions are enforced by the store itself, whatever the entry point."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from schemas.records import NewAction, NewConcern, NewPupil, NewTriage
from tests.integration.store.conftest import School
from transfer.errors import NotFoundError, PolicyError
from transfer.store.permissions import PermissionDenied

WHEN = datetime(2026, 9, 6, 12, 30, tzinfo=UTC)


def _concern(pupil_id: str, category: str = "bullying", account: str = "text") -> NewConcern:
    return NewConcern(pupil_ids=(pupil_id,), category=category, happened_at=WHEN, account=account)


async def test_staff_see_only_what_they_recorded(school: School) -> None:
    p = await school.pupil("H801200001001")
    mine = await school.store.record_concern(school.staff, _concern(p.id, account="mine"))
    theirs = await school.store.record_concern(school.other_staff, _concern(p.id, account="theirs"))

    assert (await school.store.get_concern(school.staff, mine.id)).account == "mine"
    with pytest.raises(NotFoundError):
        await school.store.get_concern(school.staff, theirs.id)
    listed = await school.store.list_concerns(school.staff)
    assert [c.id for c in listed] == [mine.id]
    # The refusal is audited, without any text.
    refused = [e for e in school.audit.events if e.outcome == "refused"]
    assert refused and refused[-1].targets == {"concern": theirs.id}
    # Staff have no chronology and cannot triage.
    with pytest.raises(PermissionDenied):
        await school.store.chronology(school.staff, p.id)
    with pytest.raises(PermissionDenied):
        await school.store.triage_concern(
            school.staff, mine.id, NewTriage(decision="no_referral", reason="r")
        )
    # The head teacher and the DSL team read both.
    for actor in (school.head, school.dsl, school.deputy):
        ids = {c.id for c in await school.store.list_concerns(actor, pupil_id=p.id)}
        assert ids == {mine.id, theirs.id}


async def test_restricted_categories_only_for_the_dsl_team(school: School) -> None:
    p = await school.pupil("H801200001001")
    restricted = await school.store.record_concern(school.staff, _concern(p.id, "domestic_abuse"))
    normal = await school.store.record_concern(school.staff, _concern(p.id, "bullying"))
    assert restricted.restricted and not normal.restricted

    with pytest.raises(NotFoundError):
        await school.store.get_concern(school.head, restricted.id)
    assert (await school.store.get_concern(school.head, normal.id)).id == normal.id
    head_chrono = await school.store.chronology(school.head, p.id)
    assert [e.id for e in head_chrono] == [normal.id]
    for dsl in (school.dsl, school.deputy):
        assert (await school.store.get_concern(dsl, restricted.id)).restricted
        assert {e.id for e in await school.store.chronology(dsl, p.id)} == {
            restricted.id,
            normal.id,
        }
    # The member of staff who recorded it still sees their own record.
    assert (await school.store.get_concern(school.staff, restricted.id)).id == restricted.id

    # A DSL can restrict a category later; existing concerns follow.
    await school.store.set_category_restricted(school.dsl, "bullying", True)
    with pytest.raises(NotFoundError):
        await school.store.get_concern(school.head, normal.id)
    with pytest.raises(PermissionDenied):
        await school.store.set_category_restricted(school.head, "bullying", False)


async def test_administrators_and_auditors_see_no_content(school: School) -> None:
    p = await school.pupil("H801200001001")
    c = await school.store.record_concern(school.staff, _concern(p.id))
    for actor in (school.admin, school.auditor):
        with pytest.raises(PermissionDenied):
            await school.store.get_concern(actor, c.id)
        with pytest.raises(PermissionDenied):
            await school.store.list_concerns(actor)
        with pytest.raises(PermissionDenied):
            await school.store.chronology(actor, p.id)
        with pytest.raises(PermissionDenied):
            await school.store.record_concern(actor, _concern(p.id))
        with pytest.raises(PermissionDenied):
            await school.store.read_document(actor, "x")
        with pytest.raises(PermissionDenied):
            await school.store.export_subject_access(actor, p.id)
    # The administrator manages pupils and staff; the auditor does not.
    assert (await school.store.get_pupil(school.admin, p.id)).upn == "H801200001001"
    with pytest.raises(PermissionDenied):
        await school.store.get_pupil(school.auditor, p.id)
    with pytest.raises(PermissionDenied):
        await school.store.create_staff(school.dsl, username="x", display_name="X", roles=["staff"])
    made = await school.store.create_staff(
        school.admin, username="newbie", display_name="New", roles=["staff"]
    )
    assert made.roles == ("staff",)
    with pytest.raises(PermissionDenied):
        await school.store.create_pupil(
            school.staff,
            NewPupil(upn="G80120000101A", surname="A", forename="B", dob=WHEN.date(), sex="M"),
        )


async def test_actions_need_the_dsl_team_and_staff_records_lifecycle(school: School) -> None:
    p = await school.pupil("H801200001001")
    c = await school.store.record_concern(school.staff, _concern(p.id))
    with pytest.raises(PermissionDenied):
        await school.store.add_action(school.head, c.id, NewAction(text="call"))
    action = await school.store.add_action(
        school.deputy, c.id, NewAction(text="call", assignee_id=school.dsl.staff_id)
    )
    done = await school.store.complete_action(school.deputy, action.id)
    assert done.done_at == school.clock.now and done.text == "call"

    updated = await school.store.update_staff(
        school.admin, school.staff.staff_id, roles=["staff", "auditor"]
    )
    assert set(updated.roles) == {"staff", "auditor"}
    # A role that reads concerns is not the store's to give: it waits for a DSL's approval
    # (``transfer.auth.approvals``, tests/unit/auth/test_approvals.py).
    with pytest.raises(PermissionDenied, match="DSL's approval"):
        await school.store.update_staff(
            school.admin, school.staff.staff_id, roles=["staff", "head_teacher"]
        )
    await school.store.deactivate_staff(school.admin, school.staff.staff_id)
    with pytest.raises(PolicyError):
        await school.store.actor_for(school.staff.staff_id)
    assert (await school.store.find_staff("199001", "staff")) is not None
    assert (await school.store.find_staff("199001", "nobody")) is None

    # Staff records: administrators list them; anyone reads their own.
    listed = await school.store.list_staff(school.admin)
    assert {r.username for r in listed} >= {"dsl", "staff", "admin", "auditor"}
    assert school.audit.events[-1].action == "store.staff.list"
    me = await school.store.get_staff(school.head, school.head.staff_id)
    assert me.username == "head"
    with pytest.raises(PermissionDenied):
        await school.store.get_staff(school.head, school.dsl.staff_id)
    with pytest.raises(PermissionDenied):
        await school.store.list_staff(school.dsl)


async def test_other_organisations_records_are_invisible(school: School) -> None:
    p = await school.pupil("H801200001001")
    c = await school.store.record_concern(school.staff, _concern(p.id))
    await school.store.create_school(name="Hill Secondary", urn="199002", laestab="8014001")
    other = await school.store.bootstrap_staff(
        "199002", username="dsl", display_name="DSL", roles=["dsl"]
    )
    other_dsl = await school.store.actor_for(other.id)
    with pytest.raises(NotFoundError):
        await school.store.get_concern(other_dsl, c.id)
    with pytest.raises(NotFoundError):
        await school.store.chronology(other_dsl, p.id)
    assert await school.store.list_concerns(other_dsl) == []
