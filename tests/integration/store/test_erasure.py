"""A concern about several pupils stays erasable pupil by pupil; retention shreds and tombstones."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from keys import aead
from schemas.auditing import MemoryAudit
from schemas.records import NewAction, NewBodyMapMark, NewConcern, NewContact, NewTriage
from tests.integration.store.conftest import KEK, School, make_school, start_clock
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.store import _common
from transfer.store.keyring import KeyDestroyed, KeyRing, field_aad
from transfer.store.permissions import PermissionDenied
from transfer.store.service import Store
from transfer.store.tables import Concern, PupilKey, SealedField, Tombstone

WHEN = datetime(2026, 9, 6, 12, 30, tzinfo=UTC)


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_multi_pupil_concern_erased_pupil_by_pupil(school: School) -> None:
    store = school.store
    a = await school.pupil("H801200001001", "Able")
    b = await school.pupil("G80120000101A", "Baker")
    c = await store.record_concern(
        school.staff,
        NewConcern(
            pupil_ids=(a.id, b.id),
            category="child_on_child_abuse",
            happened_at=WHEN,
            account="both pupils involved",
            location="playground",
            people_involved="a parent",
            body_map=(
                NewBodyMapMark(pupil_id=a.id, side="front", x=0.5, y=0.2, description="A mark"),
                NewBodyMapMark(pupil_id=b.id, side="back", x=0.1, y=0.9, description="B mark"),
            ),
        ),
    )
    await store.triage_concern(school.dsl, c.id, NewTriage(decision="monitor", reason="watch"))
    await store.add_action(school.dsl, c.id, NewAction(text="talk to both"))
    await store.add_contact(
        school.dsl, c.id, NewContact(agency="MASH", contacted_at=WHEN, outcome="advice")
    )
    doc_a = await store.add_document(school.dsl, a.id, _chunks(b"A's letter"), filename="a.txt")

    # Keep A's sealed copy of the account, to show it cannot be opened afterwards.
    async with store.sessions() as s:
        a_account = await s.scalar(
            select(SealedField.sealed).where(
                SealedField.pupil_id == a.id,
                SealedField.record_table == "concerns",
                SealedField.field == "account",
            )
        )
    assert a_account is not None

    tomb = await store.erase_pupil(school.dsl, a.id)
    assert tomb.policy == "manual" and tomb.pupil_id == a.id
    assert tomb.erased["concerns"] == 1 and tomb.erased["concerns_deleted"] == 0
    assert tomb.erased["documents"] == 1 and tomb.erased["body_map_marks"] == 1

    # B's copy is intact: the concern, its triage, action and contact still read.
    got = await store.get_concern(school.dsl, c.id)
    assert got.pupil_ids == (b.id,)
    assert got.account == "both pupils involved"
    assert [m.description for m in got.body_map] == ["B mark"]
    kinds = [e.kind for e in await store.chronology(school.dsl, b.id)]
    assert sorted(kinds) == ["action", "concern", "contact", "triage"]

    # A is gone: key destroyed, no sealed rows, files removed, chronology refused.
    with pytest.raises(NotFoundError):
        await store.chronology(school.dsl, a.id)
    with pytest.raises(NotFoundError):
        await store.read_document(school.dsl, doc_a.id)
    assert not (school.data_dir / "documents" / "199001" / a.id).exists()
    async with store.sessions() as s:
        key_row = await s.get(PupilKey, a.id)
        assert key_row is not None
        assert key_row.sealed_key is None and key_row.destroyed_at == school.clock.now
        left = (await s.scalars(select(SealedField).where(SealedField.pupil_id == a.id))).all()
        assert left == []
        ring = KeyRing(KEK)
        with pytest.raises(KeyDestroyed):
            await ring.pupil_key(s, a.id)
        # B's key cannot open A's old copy either (each copy has its own key).
        b_key = await ring.pupil_key(s, b.id)
    with pytest.raises(aead.UnsealError):
        aead.unseal(b_key, a_account, field_aad("concerns", "account", c.id, a.id))
    pupil_a = await store.get_pupil(school.admin, a.id)
    assert pupil_a.erased_at is not None and pupil_a.upn is None and pupil_a.surname == ""

    # Erasing again is idempotent: the same tombstone.
    assert (await store.erase_pupil(school.dsl, a.id)).id == tomb.id

    # Erasing B too leaves no pupil: the concern and everything under it go.
    tomb_b = await store.erase_pupil(school.dsl, b.id)
    assert tomb_b.erased["concerns_deleted"] == 1
    with pytest.raises(NotFoundError):
        await store.get_concern(school.dsl, c.id)
    async with store.sessions() as s:
        assert (await s.scalars(select(Concern))).all() == []
        assert (await s.scalars(select(SealedField))).all() == []


async def test_retention_shreds_expired_pupils_and_tombstones_idempotently(
    school: School,
) -> None:
    store = school.store
    old = await school.pupil("H801200001001", "Old", dob=date(2001, 9, 7))
    leap = await school.pupil("G80120000101A", "Leap", dob=date(2000, 2, 29))
    young = await school.pupil("A801200014001", "Young", dob=date(2001, 9, 8))
    c = await store.record_concern(
        school.dsl,
        NewConcern(pupil_ids=(old.id,), category="neglect", happened_at=WHEN, account="old"),
    )
    await store.add_document(school.dsl, old.id, _chunks(b"scan"), filename="scan.pdf")
    await store.record_concern(
        school.dsl,
        NewConcern(pupil_ids=(young.id,), category="neglect", happened_at=WHEN, account="y"),
    )

    # 2025-02-28: the leap-day child is not yet 25 (1 March in a common year).
    report = await store.run_retention(datetime(2025, 2, 28, 23, tzinfo=UTC))
    assert report.erased_pupils == ()
    report = await store.run_retention(datetime(2025, 3, 1, 0, 1, tzinfo=UTC))
    assert report.erased_pupils == (leap.id,)

    # 2026-09-07 is old's 25th birthday; young is one day short.
    now = datetime(2026, 9, 7, 9, tzinfo=UTC)
    report = await store.run_retention(now)
    assert report.erased_pupils == (old.id,)
    (tomb,) = report.tombstones
    assert tomb.policy == "cp-dob-25" and tomb.erased_by == "retention"
    assert tomb.erased["concerns"] == 1 and tomb.erased["documents"] == 1
    assert tomb.erased["concerns_deleted"] == 1
    with pytest.raises(NotFoundError):
        await store.get_concern(school.dsl, c.id)
    assert not (school.data_dir / "documents" / "199001" / old.id).exists()
    assert "store.retention.erase" in school.audit.actions()

    # Idempotent: running again erases nothing and makes no second tombstone.
    assert (await store.run_retention(now)).erased_pupils == ()
    async with store.sessions() as s:
        tombs = (await s.scalars(select(Tombstone).order_by(Tombstone.erased_at))).all()
    assert [t.pupil_id for t in tombs] == [leap.id, old.id]
    # The young pupil is untouched and still readable.
    assert len(await store.chronology(school.dsl, young.id)) == 1
    assert [t.pupil_id for t in await store.tombstones(school.dsl)] == [leap.id, old.id]


async def test_sqlite_files_keep_no_copy_of_an_erased_pupils_key(tmp_path: Path) -> None:
    db_dir = tmp_path / "db"
    audit = MemoryAudit()
    clock = start_clock()
    store = await Store.open(
        f"sqlite+aiosqlite:///{db_dir / 'h.db'}", KEK, audit, data_dir=tmp_path / "d", clock=clock
    )
    try:
        school = await make_school(store, audit, clock, tmp_path / "d")
        p = await school.pupil("H801200001001")
        await store.record_concern(
            school.dsl,
            NewConcern(pupil_ids=(p.id,), category="neglect", happened_at=WHEN, account="x" * 50),
        )
        async with store.sessions() as s:
            row = await s.get(PupilKey, p.id)
            assert row is not None and row.sealed_key is not None
            secrets = [row.sealed_key, *(await s.scalars(select(SealedField.sealed))).all()]
        assert _found(db_dir, secrets) == len(secrets)  # the search sees them before
        await store.erase_pupil(school.dsl, p.id)
        # Still open: neither the database file nor its WAL holds the old bytes.
        assert _found(db_dir, secrets) == 0
    finally:
        await store.close()


def _found(directory: Path, needles: list[bytes]) -> int:
    blob = b"".join(f.read_bytes() for f in directory.iterdir() if f.is_file())
    return sum(n in blob for n in needles)


async def test_sqlite_write_racing_an_erasure_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # On SQLite the driver begins the transaction at the first write, so the erasure
    # can commit between our first check and our insert: the re-check must catch it.
    audit = MemoryAudit()
    clock = start_clock()
    store = await Store.open(
        f"sqlite+aiosqlite:///{tmp_path / 'h.db'}", KEK, audit, data_dir=tmp_path, clock=clock
    )
    try:
        school = await make_school(store, audit, clock, tmp_path)
        p = await school.pupil("H801200001001")
        q = await school.pupil("G80120000101A")
        c = await store.record_concern(
            school.dsl,
            NewConcern(pupil_ids=(p.id, q.id), category="neglect", happened_at=WHEN, account="a"),
        )
        real_put = _common._Sealed.put
        erased = False

        async def put_after_erasure(self: _common._Sealed, *args: Any, **kwargs: Any) -> None:
            nonlocal erased
            if not erased:
                erased = True
                await store.erase_pupil(school.dsl, p.id)
            await real_put(self, *args, **kwargs)

        monkeypatch.setattr(_common._Sealed, "put", put_after_erasure)
        with pytest.raises(KeyDestroyed):
            await asyncio.wait_for(
                store.add_action(school.dsl, c.id, NewAction(text="too late")), 30
            )
        async with store.sessions() as s:
            left = (await s.execute(select(SealedField.record_table, SealedField.pupil_id))).all()
        # Only q's copy of the concern itself: no action, nothing for the erased pupil.
        assert sorted(left) == [("concerns", q.id)] * 3
        # A single-pupil concern erased under our feet is a conflict, not a crash.
        monkeypatch.setattr(_common._Sealed, "put", real_put)
        r = await school.pupil("A801200014001")
        c2 = await store.record_concern(
            school.dsl,
            NewConcern(pupil_ids=(r.id,), category="neglect", happened_at=WHEN, account="a"),
        )
        erased = False

        async def put_after_erasing_r(self: _common._Sealed, *args: Any, **kwargs: Any) -> None:
            nonlocal erased
            if not erased:
                erased = True
                await store.erase_pupil(school.dsl, r.id)
            await real_put(self, *args, **kwargs)

        monkeypatch.setattr(_common._Sealed, "put", put_after_erasing_r)
        with pytest.raises((ConflictError, KeyDestroyed)):
            await asyncio.wait_for(store.add_action(school.dsl, c2.id, NewAction(text="x")), 30)
    finally:
        await store.close()


async def test_an_organisations_own_retention_policy_is_data(school: School) -> None:
    store = school.store
    assert (await store.retention_policy(school.dsl)).key == "cp-dob-25"
    policy = await store.set_retention_policy(
        school.dsl, years=30, description="Local authority policy: DOB + 30"
    )
    assert (policy.years, policy.org_id) == (30, "199001")
    assert await store.retention_policy(school.dsl) == policy
    with pytest.raises(PermissionDenied):
        await store.set_retention_policy(school.deputy, years=1, description="x")
    with pytest.raises(InputError):
        await store.set_retention_policy(school.dsl, years=0, description="x")
    p = await school.pupil("H801200001001", dob=date(2000, 1, 1))
    assert (await store.run_retention(datetime(2026, 1, 1, tzinfo=UTC))).erased_pupils == ()
    report = await store.run_retention(datetime(2030, 1, 1, tzinfo=UTC))
    assert report.erased_pupils == (p.id,)
    assert report.tombstones[0].policy == policy.key
