"""Amending a concern: the earlier text kept (sealed), who may (its author, the DSL team),
never a received concern, audited, erased with the pupil; and a form's own reference
stores a triage decision, an action or a contact once. On each engine."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import select, update

from schemas.records import NewAction, NewAmendment, NewConcern, NewContact, NewTriage
from tests.integration.store.conftest import School
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.store.permissions import PermissionDenied
from transfer.store.tables import Concern, ConcernAmendment, ProvenanceRow, SealedField

WHEN = datetime(2026, 9, 6, 12, 30, tzinfo=UTC)


async def _concern(school: School, upn: str = "H801200001001") -> tuple[str, str]:
    p = await school.pupil(upn)
    c = await school.store.record_concern(
        school.staff,
        NewConcern(
            pupil_ids=(p.id,),
            category="bullying",
            happened_at=WHEN,
            location="Hall",
            account="First account.",
            people_involved="Two pupils",
        ),
    )
    return p.id, c.id


def _change(account: str = "Second account.", reason: str = "Corrected") -> NewAmendment:
    return NewAmendment(
        account=account, location="Hall", people_involved="Two pupils", reason=reason
    )


async def test_the_author_amends_and_the_earlier_text_is_kept(school: School) -> None:
    pupil_id, cid = await _concern(school)
    school.clock.advance(hours=2)
    after = await school.store.amend_concern(school.staff, cid, _change())
    assert after.account == "Second account." and after.location == "Hall"
    assert (await school.store.get_concern(school.dsl, cid)).account == "Second account."
    school.clock.advance(minutes=5)
    await school.store.amend_concern(school.dsl, cid, _change("Third account.", "DSL's note"))
    history = await school.store.concern_amendments(school.dsl, cid)
    assert [(a.earlier_account, a.reason, a.amended_by) for a in history] == [
        ("First account.", "Corrected", school.staff.staff_id),
        ("Second account.", "DSL's note", school.dsl.staff_id),
    ]
    assert history[1].amended_at == school.clock.now
    amended = [e for e in school.audit.events if e.action == "store.concern.amend"]
    assert [e.outcome for e in amended] == ["ok", "ok"]
    assert all("account" not in e.detail for e in amended)
    # The earlier text is sealed like the rest: no plaintext in the database.
    async with school.store.sessions() as s:
        sealed = (
            await s.scalars(
                select(SealedField.sealed).where(SealedField.record_table == "concern_amendments")
            )
        ).all()
    assert sealed and all(b"First account" not in v for v in sealed)
    # Changing nothing is refused, and nothing is stored.
    with pytest.raises(InputError, match="nothing was changed"):
        await school.store.amend_concern(school.dsl, cid, _change("Third account."))
    assert len(await school.store.concern_amendments(school.dsl, cid)) == 2
    assert pupil_id


async def test_only_the_author_or_the_dsl_team_may_amend(school: School) -> None:
    _, cid = await _concern(school)
    with pytest.raises(NotFoundError):  # another teacher cannot even read it
        await school.store.amend_concern(school.other_staff, cid, _change())
    with pytest.raises(PermissionDenied, match="only the person who logged"):
        await school.store.amend_concern(school.head, cid, _change())
    for actor in (school.admin, school.auditor):
        with pytest.raises(PermissionDenied):
            await school.store.amend_concern(actor, cid, _change())
    refused = [
        e
        for e in school.audit.events
        if e.action == "store.concern.amend" and e.outcome == "refused"
    ]
    assert len(refused) == 4
    assert (await school.store.get_concern(school.dsl, cid)).account == "First account."
    assert await school.store.concern_amendments(school.dsl, cid) == []
    await school.store.amend_concern(school.deputy, cid, _change())


async def test_a_received_concern_is_never_amended_here(school: School) -> None:
    _, cid = await _concern(school)
    async with school.store.sessions() as s, s.begin():
        s.add(
            ProvenanceRow(
                id="prov-1",
                org_id="199001",
                source_org_id="199002",
                source_org_name="Cliff Road Academy",
                package_id="pkg",
                received_at=WHEN,
                original_id="orig",
            )
        )
        await s.flush()
        await s.execute(update(Concern).where(Concern.id == cid).values(provenance_id="prov-1"))
    with pytest.raises(ConflictError, match="received from another school"):
        await school.store.amend_concern(school.dsl, cid, _change())
    assert (await school.store.get_concern(school.dsl, cid)).account == "First account."


async def test_erasing_the_pupil_erases_the_amendments(school: School) -> None:
    pupil_id, cid = await _concern(school)
    await school.store.amend_concern(school.staff, cid, _change())
    await school.store.erase_pupil(school.dsl, pupil_id)
    async with school.store.sessions() as s:
        rows = (await s.scalars(select(ConcernAmendment.id))).all()
        fields = (
            await s.scalars(
                select(SealedField.record_id).where(
                    SealedField.record_table == "concern_amendments"
                )
            )
        ).all()
    assert rows == [] and fields == []


async def test_a_forms_reference_stores_each_record_once(school: School) -> None:
    _, cid = await _concern(school)
    _, other = await _concern(school, "X801200001002")
    refs = [f"6f1c1d2e-0000-4000-8000-00000000000{n}" for n in range(4)]
    for _ in range(2):
        t = await school.store.triage_concern(
            school.dsl, cid, NewTriage(decision="no_referral", reason="Reason"), record_id=refs[0]
        )
        a = await school.store.add_action(
            school.dsl, cid, NewAction(text="Call"), record_id=refs[1]
        )
        k = await school.store.add_contact(
            school.dsl, cid, NewContact(agency="MASH", contacted_at=WHEN), record_id=refs[2]
        )
        await school.store.amend_concern(school.staff, cid, _change(), record_id=refs[3])
    assert (t.id, a.id, k.id) == tuple(refs[:3])
    assert t.reason == "Reason" and a.text == "Call" and k.agency == "MASH"
    assert len(await school.store.concern_amendments(school.dsl, cid)) == 1
    kinds = [e.kind for e in await school.store.chronology(school.dsl, "H801200001001")]
    assert kinds.count("triage") == kinds.count("action") == kinds.count("contact") == 1
    # The same reference for another concern, or by someone else: refused.
    with pytest.raises(ConflictError, match="used for something else"):
        await school.store.add_action(school.dsl, other, NewAction(text="x"), record_id=refs[1])
    with pytest.raises(ConflictError, match="used for something else"):
        await school.store.add_action(school.deputy, cid, NewAction(text="x"), record_id=refs[1])
    with pytest.raises(InputError, match="reference is not valid"):
        await school.store.add_action(school.dsl, cid, NewAction(text="x"), record_id="nope")


async def test_the_migration_carries_existing_concerns_forward(db_url: str, tmp_path: Path) -> None:
    """A database from before ``store_0004`` (its concerns, their sealed text) upgrades:
    every concern reads as before, has no history, and can then be amended."""
    from alembic import command

    from schemas.auditing import MemoryAudit
    from tests.integration.store.conftest import KEK, make_school, start_clock
    from transfer.store.db import _alembic_config, make_engine
    from transfer.store.service import Store

    def downgrade(conn: Any) -> None:
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "store_0003")

    audit, clock = MemoryAudit(), start_clock()
    store = await Store.open(db_url, KEK, audit, data_dir=tmp_path / "d", clock=clock)
    school = await make_school(store, audit, clock, tmp_path / "d")
    _, cid = await _concern(school)
    await store.close()
    engine = make_engine(db_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(downgrade)
            tables = await conn.run_sync(lambda c: set(sa.inspect(c).get_table_names()))
        assert "concern_amendments" not in tables and "concerns" in tables
    finally:
        await engine.dispose()
    store = await Store.open(db_url, KEK, audit, data_dir=tmp_path / "d", clock=clock)
    try:
        school = await make_school_again(store, school)
        before = await store.get_concern(school.dsl, cid)
        assert before.account == "First account." and before.location == "Hall"
        assert await store.concern_amendments(school.dsl, cid) == []
        after = await store.amend_concern(school.staff, cid, _change())
        assert after.account == "Second account."
        history = await store.concern_amendments(school.dsl, cid)
        assert [a.earlier_account for a in history] == ["First account."]
    finally:
        await store.close()


async def make_school_again(store: Any, school: School) -> School:
    """The same people, on the reopened store."""
    import dataclasses

    return dataclasses.replace(school, store=store)
