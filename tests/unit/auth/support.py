"""A node's store and accounts service on a test database, with people to sign in as."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyotp

from schemas.auditing import AuditEvent, MemoryAudit
from schemas.records import StaffRecord
from transfer.audit.request_ids import RequestIdAudit
from transfer.auth import CHEAPEST, Accounts, Principal
from transfer.config import SecuritySection
from transfer.store.permissions import NEEDS_TOTP, Role
from transfer.store.service import Store

KEK = bytes(range(32))
URN = "199001"
LAESTAB = "8012000"
OTHER_URN = "199002"
OTHER_LAESTAB = "8012001"
PASSWORD = "correct staple orbit lantern"


class FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


@dataclass
class Person:
    staff: StaffRecord
    username: str
    password: str
    secret: str | None = None
    recovery_codes: tuple[str, ...] = ()

    def code(self, at: datetime) -> str:
        assert self.secret is not None
        return pyotp.TOTP(self.secret).at(at)


@dataclass
class Node:
    store: Store
    accounts: Accounts
    audit: MemoryAudit
    clock: FakeClock
    data_dir: Path
    people: dict[str, Person] = field(default_factory=dict)

    def events(self, action: str) -> list[AuditEvent]:
        return [e for e in self.audit.events if e.action == action]

    def next_step(self) -> None:
        """Move the clock to the next TOTP time step (codes are accepted once each)."""
        self.clock.advance(seconds=30)

    async def person(
        self, username: str, roles: list[Role], *, enrol: bool | None = None, org: str = URN
    ) -> Person:
        """A staff member with a password; TOTP enrolled when the role needs it (or ``enrol``)."""
        staff = await self.accounts.bootstrap_account(
            org, username=username, display_name=username.title(), roles=roles, password=PASSWORD
        )
        p = Person(staff=staff, username=username, password=PASSWORD)
        if enrol if enrol is not None else bool(set(roles) & NEEDS_TOTP):
            result = await self.accounts.sign_in(org, username, PASSWORD)
            principal = await self.accounts.authenticate(result.token, allow_enrolment=True)
            enrolment = await self.accounts.begin_totp_enrolment(principal)
            p.secret = enrolment.secret
            recovery = await self.accounts.confirm_totp_enrolment(principal, p.code(self.clock.now))
            p.recovery_codes = recovery.codes
            await self.accounts.sign_out(principal)
            self.next_step()
        self.people[username] = p
        return p

    async def session(self, p: Person, org: str = URN) -> Principal:
        """Sign ``p`` in (with a fresh TOTP code if enrolled) and authenticate the session."""
        code = p.code(self.clock.now) if p.secret else None
        result = await self.accounts.sign_in(org, p.username, p.password, totp=code)
        if p.secret:
            self.next_step()
        return await self.accounts.authenticate(result.token)


def start_clock() -> FakeClock:
    return FakeClock(datetime(2026, 9, 7, 9, 0, 5, tzinfo=UTC))


@asynccontextmanager
async def open_node(
    db_url: str, data_dir: Path, security: SecuritySection | None = None
) -> AsyncIterator[Node]:
    audit = MemoryAudit()
    sink = RequestIdAudit(audit)
    clock = start_clock()
    store = await Store.open(db_url, KEK, sink, data_dir=data_dir, clock=clock)
    try:
        accounts = Accounts(
            store, KEK, sink, security or SecuritySection(), clock=clock, hashing=CHEAPEST
        )
        await store.create_school(name="Harbourside Primary", urn=URN, laestab=LAESTAB)
        await store.create_school(name="Cliff Road Academy", urn=OTHER_URN, laestab=OTHER_LAESTAB)
        yield Node(store=store, accounts=accounts, audit=audit, clock=clock, data_dir=data_dir)
    finally:
        await store.close()
