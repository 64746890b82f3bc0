"""Fixtures for the audit log tests: a migrated database on each engine and a log over it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from schemas.auditing import AuditEvent
from transfer.audit.log import AuditLog
from transfer.store.db import migrate_url

KEK = bytes(range(32))
ORIGIN = "school-a.example/audit"


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 9, 7, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def migrated_url(db_url: str) -> str:
    migrate_url(db_url)
    return db_url


@pytest.fixture
def open_log(migrated_url: str, tmp_path: Path) -> Callable[..., AuditLog]:
    def make(anchor: bool = True, origin: str = ORIGIN) -> AuditLog:
        return AuditLog.open(
            migrated_url,
            KEK,
            origin=origin,
            clock=FakeClock(),
            anchor=tmp_path / "data" / "audit" / "latest-checkpoint.note" if anchor else None,
        )

    return make


@pytest.fixture
async def log(open_log: Callable[..., AuditLog]) -> AsyncIterator[AuditLog]:
    the_log = open_log()
    try:
        yield the_log
    finally:
        await the_log.close()


def event(i: int, pupil: str = "pupil-1") -> AuditEvent:
    return AuditEvent(
        action="store.pupil.read" if i % 2 else "store.concern.read",
        actor=f"staff-{i % 3}",
        org="school-a",
        targets={"pupil": pupil, "concern": f"c-{i}"},
        outcome="ok",
        request_id=f"req-{i}",
        detail={"n": i},
    )
