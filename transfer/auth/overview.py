"""The operator's view of an organisation's accounts (``handover account list``,
``account enrol-totp``): who has a password, two-factor sign-in and a lock, read
through the accounts service so the command line needs no query of its own.

Names and roles only: no secret, hash or sealed value leaves this module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from schemas.auditing import AuditEvent, AuditSink
from transfer.auth.tables import Credential
from transfer.errors import NotFoundError
from transfer.store.tables import Staff

TwoFactor = Literal["set up", "waiting", "not set up"]


@dataclass(frozen=True)
class CredentialState:
    """What sign-in needs for one person: a password, and their authenticator's state."""

    staff_id: str
    has_password: bool
    two_factor: TwoFactor | None  # None: no password yet


@dataclass(frozen=True)
class AccountLine:
    """One account, as the operator's list shows it."""

    username: str
    display_name: str
    roles: tuple[str, ...]
    two_factor: TwoFactor | None
    state: Literal["active", "locked", "no password", "deactivated"]


def _two_factor(cred: Credential | None) -> TwoFactor | None:
    if cred is None:
        return None
    if cred.totp_sealed is not None:
        return "set up"
    return "waiting" if cred.totp_pending_sealed is not None else "not set up"


class AccountOverview:
    """Read-only account facts for the operator, audited as the operator."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], audit: AuditSink) -> None:
        self._sessions = sessions
        self._audit = audit

    async def credential_state(self, staff_id: str) -> CredentialState:
        async with self._sessions() as s:
            cred = await s.get(Credential, staff_id)
        return CredentialState(staff_id, cred is not None, _two_factor(cred))

    async def active_credential_state(self, org_id: str, username: str) -> CredentialState:
        """The state of the active account ``username`` of ``org_id``, or NotFoundError."""
        async with self._sessions() as s:
            staff = await s.scalar(
                select(Staff).where(Staff.org_id == org_id, Staff.username == username)
            )
            if staff is None or not staff.active:
                raise NotFoundError(
                    f"no active account {username[:100]!r} in organisation {org_id[:64]!r}"
                )
            cred = await s.get(Credential, staff.id)
        return CredentialState(staff.id, cred is not None, _two_factor(cred))

    async def list(self, org_id: str, now: datetime) -> list[AccountLine]:
        """Every account of ``org_id`` by username (the operator's ``account list``)."""
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(Staff, Credential)
                    .outerjoin(Credential, Credential.staff_id == Staff.id)
                    .where(Staff.org_id == org_id)
                    .order_by(Staff.username)
                )
            ).all()
        lines = []
        for staff, cred in rows:
            state: Literal["active", "locked", "no password", "deactivated"]
            if not staff.active:
                state = "deactivated"
            elif cred is None:
                state = "no password"
            elif cred.locked_until is not None and cred.locked_until > now:
                state = "locked"
            else:
                state = "active"
            lines.append(
                AccountLine(
                    staff.username, staff.display_name, tuple(staff.roles), _two_factor(cred), state
                )
            )
        await self._audit.record(
            AuditEvent(
                action="account.list", actor="operator", org=org_id, detail={"count": len(lines)}
            )
        )
        return lines
