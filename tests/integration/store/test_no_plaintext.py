"""No safeguarding text in plaintext anywhere: database file, WAL, table contents, files."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from schemas.auditing import MemoryAudit
from schemas.records import NewAction, NewBodyMapMark, NewConcern, NewContact, NewTriage
from tests.integration.store.conftest import KEK, School, make_school, start_clock
from transfer.store.service import Store

MARKER = "ZQX-SECRET-MARKER-7731"
CONTROL = "Plaintextcontrolname"  # a pupil's surname: not sealed, so it must be found
WHEN = datetime(2026, 9, 6, 12, 30, tzinfo=UTC)


def _forms(s: str) -> list[bytes]:
    raw = s.encode()
    return [raw, raw.hex().encode(), s.encode("utf-16-le")]


async def _doc() -> AsyncIterator[bytes]:
    yield b"%PDF-1.4 " + MARKER.encode() + b" document body " * 1000
    yield MARKER.encode()


async def _fill_every_sealed_field(school: School) -> None:
    store = school.store
    a = await school.pupil("H801200001001", CONTROL)
    b = await school.pupil("G80120000101A", "Baker")
    c = await store.record_concern(
        school.staff,
        NewConcern(
            pupil_ids=(a.id, b.id),
            category="child_protection",
            happened_at=WHEN,
            account=f"account {MARKER}",
            location=f"location {MARKER}",
            people_involved=f"people {MARKER}",
            body_map=(
                NewBodyMapMark(pupil_id=a.id, side="front", x=0.1, y=0.2, description=MARKER),
                NewBodyMapMark(pupil_id=b.id, side="back", x=0.3, y=0.4, description=MARKER),
            ),
        ),
    )
    await store.triage_concern(
        school.dsl, c.id, NewTriage(decision="no_referral", reason=f"reason {MARKER}")
    )
    action = await store.add_action(school.dsl, c.id, NewAction(text=f"action {MARKER}"))
    await store.complete_action(school.dsl, action.id)
    await store.add_contact(
        school.dsl,
        c.id,
        NewContact(agency=f"agency {MARKER}", contacted_at=WHEN, outcome=f"outcome {MARKER}"),
    )
    await store.add_document(school.dsl, a.id, _doc(), filename=f"{MARKER}.pdf", concern_id=c.id)
    await store.add_pupil_event(
        None, a.id, kind="transfer.delivered", summary=f"delivered {MARKER}", ref="pkg-1"
    )
    # Reading everything back exercises every read path too.
    entries = await store.chronology(school.dsl, a.id)
    assert sum(MARKER in e.model_dump_json() for e in entries) == 6
    assert all(MARKER not in repr(e) for e in school.audit.events)


def _files_under(*roots: Path) -> list[Path]:
    out: list[Path] = []
    for root in roots:
        out += [p for p in root.rglob("*") if p.is_file()]
    return out


async def test_no_plaintext_on_sqlite(tmp_path: Path) -> None:
    db = tmp_path / "db" / "handover.db"
    data_dir = tmp_path / "data"
    audit = MemoryAudit()
    clock = start_clock()
    store = await Store.open(
        f"sqlite+aiosqlite:///{db}", KEK, audit, data_dir=data_dir, clock=clock
    )
    s = await make_school(store, audit, clock, data_dir)
    try:
        await _fill_every_sealed_field(s)
        files = _files_under(db.parent, data_dir)
        assert any(f.name.endswith("-wal") for f in files)  # the WAL is searched too
        blob = b"".join(f.read_bytes() for f in files)
        assert CONTROL.encode() in blob  # the search does find plaintext
        for form in _forms(MARKER):
            assert form not in blob
    finally:
        await store.close()
    blob = b"".join(f.read_bytes() for f in _files_under(db.parent, data_dir))
    for form in _forms(MARKER):
        assert form not in blob


@pytest.mark.postgres
async def test_no_plaintext_on_postgres(pg_url: str, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    audit = MemoryAudit()
    clock = start_clock()
    store = await Store.open(pg_url, KEK, audit, data_dir=data_dir, clock=clock)
    try:
        s = await make_school(store, audit, clock, data_dir)
        await _fill_every_sealed_field(s)
        async with store.engine.connect() as conn:
            tables = (
                (
                    await conn.execute(
                        text(
                            "SELECT table_name FROM information_schema.tables "
                            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                        )
                    )
                )
                .scalars()
                .all()
            )
            assert {"concerns", "sealed_fields", "documents", "actions"} <= set(tables)
            dump: list[str] = []
            for table in tables:
                rows = await conn.execute(text(f'SELECT t::text FROM "{table}" t'))
                dump += [r[0] for r in rows]
        everything = "\n".join(dump)
        assert CONTROL in everything
        assert MARKER not in everything
        assert MARKER.encode().hex() not in everything
        files = b"".join(f.read_bytes() for f in _files_under(data_dir))
        assert files and MARKER.encode() not in files
    finally:
        await store.close()
