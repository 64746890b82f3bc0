"""Fixtures for the store tests: a migrated store on each engine, a school and its people."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from schemas.auditing import MemoryAudit
from schemas.records import NewPupil, PupilRecord
from transfer.store.permissions import Actor, Role
from transfer.store.service import Store

KEK = bytes(range(32))
SCHOOL_URN = "199001"
SCHOOL_LAESTAB = "8012000"


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class School:
    store: Store
    audit: MemoryAudit
    clock: FakeClock
    dsl: Actor
    deputy: Actor
    head: Actor
    staff: Actor
    other_staff: Actor
    admin: Actor
    auditor: Actor
    data_dir: Path

    async def pupil(
        self, upn: str, surname: str = "Okafor", dob: date | None = None
    ) -> PupilRecord:
        return await self.store.create_pupil(
            self.admin,
            NewPupil(
                upn=upn,
                surname=surname,
                forename="Amara",
                dob=dob or date(2014, 11, 3),
                sex="F",
                year_group="6",
            ),
        )


async def make_school(store: Store, audit: MemoryAudit, clock: FakeClock, data_dir: Path) -> School:
    """Create the test school and one person per role, through the store's own API."""
    await store.create_school(name="Harbourside Primary", urn=SCHOOL_URN, laestab=SCHOOL_LAESTAB)
    actors: dict[str, Actor] = {}
    for name, roles in {
        "dsl": [Role.DSL],
        "deputy": [Role.DEPUTY_DSL],
        "head": [Role.HEAD_TEACHER],
        "staff": [Role.STAFF],
        "other_staff": [Role.STAFF],
        "admin": [Role.ADMINISTRATOR],
        "auditor": [Role.AUDITOR],
    }.items():
        rec = await store.bootstrap_staff(
            SCHOOL_URN, username=name, display_name=name.title(), roles=roles
        )
        actors[name] = await store.actor_for(rec.id)
    return School(store=store, audit=audit, clock=clock, data_dir=data_dir, **actors)


def start_clock() -> FakeClock:
    return FakeClock(datetime(2026, 9, 7, 9, 0, tzinfo=UTC))


@pytest.fixture
async def school(db_url: str, tmp_path: Path) -> AsyncIterator[School]:
    audit = MemoryAudit()
    clock = start_clock()
    data_dir = tmp_path / "data"
    store = await Store.open(db_url, KEK, audit, data_dir=data_dir, clock=clock)
    try:
        yield await make_school(store, audit, clock, data_dir)
    finally:
        await store.close()
