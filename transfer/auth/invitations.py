"""Inviting staff by a one-time link: :class:`StaffInvitations`.

An administrator never types a new colleague's password. Inviting someone
makes their account without a password and gives back a link, shown once; the
person follows it, chooses their own password and (for a role that needs one)
sets up their authenticator app at once. The link:

- holds a 256-bit token; only its SHA-256 (``codes.token_hash``) is stored;
- works once: it is consumed by a compare-and-set (``UPDATE ... WHERE used_at IS
  NULL``) in the same transaction that sets the password, so two people racing
  with one link cannot both get in, on SQLite or PostgreSQL;
- expires after :data:`INVITATION_DAYS`; a new link for the same person withdraws
  the older ones; deactivating the account makes it useless.

A protected role (DSL, deputy DSL, head teacher) is never given by an
invitation: the account is made with the other roles (or as staff), and the
protected role waits for a DSL's approval like any other role change
(:mod:`transfer.auth.approvals`).

Administrators' view of their organisation's accounts (:meth:`StaffInvitations.lines`:
name, roles, and active / locked / deactivated / invited) is here too, because an
invited account's state is its link's.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, Literal

from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.records import StaffRecord
from transfer.auth import codes
from transfer.auth.passwords import check_password_policy
from transfer.auth.records import ApprovalRecord, SignInResult
from transfer.auth.tables import Credential, Invitation, SessionRow, StaffApproval
from transfer.errors import ConflictError, PolicyError
from transfer.store.permissions import (
    NEEDS_TOTP,
    PROTECTED_ROLES,
    Actor,
    Permission,
    Role,
    holds_protected,
)
from transfer.store.tables import Staff

if TYPE_CHECKING:
    from transfer.auth.service import Accounts

#: Days an invitation link works for.
INVITATION_DAYS: Final = 7
#: Where the link points, under the node's address.
INVITATION_PATH: Final = "/invitation/"
INVITATION_PREFIX: Final = "hoi_"

AccountState = Literal["active", "locked", "deactivated", "invited", "invitation expired"]


class InvitationInvalid(PolicyError):
    """A link that is not right, used already, withdrawn or out of date (one message for all,
    so the answer does not say which links exist)."""

    http_status = 410
    slug = "invitation-invalid"
    title = "This invitation link does not work"


INVALID_MESSAGE: Final = (
    "this invitation link does not work: it has been used already, it has expired, or it is "
    "not complete. Ask your school's administrator for a new one"
)


@dataclass(frozen=True)
class IssuedInvitation:
    """A new link (shown once), for whom, and a role change waiting for a DSL, if any."""

    staff: StaffRecord
    link_token: str
    expires_at: datetime
    waiting: ApprovalRecord | None = None

    @property
    def path(self) -> str:
        return INVITATION_PATH + self.link_token


@dataclass(frozen=True)
class InvitationInfo:
    """What the invitation page shows before the person chooses a password."""

    display_name: str
    username: str
    org_id: str
    expires_at: datetime


@dataclass(frozen=True)
class StaffLine:
    """One account in the administrator's list (no secret, no hash)."""

    staff_id: str
    username: str
    display_name: str
    email: str | None
    roles: tuple[str, ...]
    state: AccountState
    two_factor: bool
    locked_until: datetime | None
    invitation_expires: datetime | None


def _new_id() -> str:
    return str(uuid.uuid4())


class StaffInvitations:
    """Invitation links and the administrator's list of accounts."""

    def __init__(self, accounts: Accounts) -> None:
        self._accounts = accounts

    def _sessions(self) -> AsyncSession:
        return self._accounts.store.sessions()

    async def _new_link(self, actor: Actor, staff_id: str, now: datetime) -> tuple[str, datetime]:
        token = codes.new_token(INVITATION_PREFIX)
        expires = now + timedelta(days=INVITATION_DAYS)
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(Invitation)
                .where(
                    Invitation.staff_id == staff_id,
                    Invitation.used_at.is_(None),
                    Invitation.withdrawn_at.is_(None),
                )
                .values(withdrawn_at=now)
                .execution_options(synchronize_session=False)
            )
            s.add(
                Invitation(
                    id=_new_id(),
                    token_hash=codes.token_hash(token),
                    staff_id=staff_id,
                    org_id=actor.org_id,
                    created_by=actor.staff_id,
                    created_at=now,
                    expires_at=expires,
                )
            )
        return token, expires

    async def invite(
        self,
        actor: Actor,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None = None,
    ) -> IssuedInvitation:
        """Make an account without a password and a one-time link for its person.

        A protected role is asked of a DSL (returned as ``waiting``); until it is
        approved the account has the other roles asked for, or ``staff``.
        """
        accounts = self._accounts
        await accounts._require(actor, Permission.MANAGE_STAFF, "account.invited", "")
        username, display_name, role_list = accounts.store.check_staff_fields(
            username, display_name, roles, email
        )
        protected = {r.value for r in PROTECTED_ROLES}
        now_roles = [r for r in role_list if r not in protected] or [Role.STAFF.value]
        record = await accounts.store.create_staff(
            actor, username=username, display_name=display_name, roles=now_roles, email=email
        )
        now = accounts.now()
        token, expires = await self._new_link(actor, record.id, now)
        await accounts.audit_as(
            "account.invited",
            actor,
            actor.org_id,
            {"staff": record.id},
            roles=",".join(record.roles),
        )
        waiting = None
        if holds_protected(role_list):
            waiting = await accounts.approvals.request(
                actor,
                actor.org_id,
                "change_roles",
                staff_id=record.id,
                roles=role_list,
                roles_before=list(record.roles),
            )
        return IssuedInvitation(record, token, expires, waiting)

    async def reinvite(self, actor: Actor, staff_id: str) -> IssuedInvitation:
        """A new link for someone who has not set a password yet (older links stop working)."""
        accounts = self._accounts
        await accounts._require(actor, Permission.MANAGE_STAFF, "account.invited", staff_id)
        record = await accounts._target(actor, staff_id)
        if not record.active:
            raise ConflictError(f"{record.display_name}'s account has been deactivated")
        async with self._sessions() as s:
            if await s.get(Credential, staff_id) is not None:
                raise ConflictError(
                    f"{record.display_name} has set a password already; an invitation is only "
                    "for someone who has not signed in yet"
                )
        token, expires = await self._new_link(actor, staff_id, accounts.now())
        await accounts.audit_as(
            "account.invited", actor, actor.org_id, {"staff": staff_id}, again=True
        )
        return IssuedInvitation(record, token, expires)

    async def _live(self, token: str, now: datetime) -> tuple[Invitation, Staff]:
        """The invitation of ``token`` and its account, if the link still works."""
        if not token.startswith(INVITATION_PREFIX) or len(token) > 100:
            raise InvitationInvalid(INVALID_MESSAGE)
        async with self._sessions() as s:
            row = await s.scalar(
                select(Invitation).where(Invitation.token_hash == codes.token_hash(token))
            )
            staff = await s.get(Staff, row.staff_id) if row is not None else None
        reason = None
        if row is None or staff is None:
            reason = "unknown"
        elif row.used_at is not None:
            reason = "used"
        elif row.withdrawn_at is not None:
            reason = "withdrawn"
        elif row.expires_at <= now:
            reason = "expired"
        elif not staff.active:
            reason = "deactivated"
        if reason is not None:
            await self._accounts._audit(
                "account.invitation.refused",
                None,
                row.org_id if row is not None else None,
                {"staff": row.staff_id} if row is not None else {},
                "refused",
                reason=reason,
            )
            raise InvitationInvalid(INVALID_MESSAGE)
        assert row is not None and staff is not None
        return row, staff

    async def info(self, token: str) -> InvitationInfo:
        """Whom a link is for (or :class:`InvitationInvalid`); nothing is used up."""
        row, staff = await self._live(token, self._accounts.now())
        return InvitationInfo(staff.display_name, staff.username, staff.org_id, row.expires_at)

    async def accept(self, token: str, password: str) -> SignInResult:
        """Set the invited person's password and sign them in; the link is used up.

        A password the policy refuses leaves the link working. For a role that
        needs an authenticator app the session may only set one up (state
        ``must_enrol_totp``), exactly as at a first sign-in.
        """
        accounts = self._accounts
        now = accounts.now()
        row, staff = await self._live(token, now)
        check_password_policy(password, staff.username)
        hashed = await accounts._hash(password)
        roles = frozenset(Role(r) for r in staff.roles)
        kind = "enrolment" if roles & NEEDS_TOTP else "session"
        session_token = codes.new_token(codes.SESSION_PREFIX)
        session = SessionRow(
            id=_new_id(),
            token_hash=codes.token_hash(session_token),
            staff_id=staff.id,
            org_id=staff.org_id,
            kind=kind,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=accounts.security.session_max_hours),
        )
        try:
            async with self._sessions() as s, s.begin():
                claimed = await s.execute(
                    update(Invitation)
                    .where(
                        Invitation.id == row.id,
                        Invitation.used_at.is_(None),
                        Invitation.withdrawn_at.is_(None),
                        Invitation.expires_at > now,
                    )
                    .values(used_at=now)
                    .execution_options(synchronize_session=False)
                )
                if getattr(claimed, "rowcount", 0) != 1:
                    raise InvitationInvalid(INVALID_MESSAGE)
                s.add(
                    Credential(
                        staff_id=staff.id,
                        password_hash=hashed,
                        password_changed_at=now,
                        failed_count=0,
                    )
                )
                s.add(session)
        except sa_exc.IntegrityError:  # a password set meanwhile by another way
            raise InvitationInvalid(INVALID_MESSAGE) from None
        except InvitationInvalid:
            await accounts._audit(
                "account.invitation.refused",
                None,
                staff.org_id,
                {"staff": staff.id},
                "refused",
                reason="used",
            )
            raise
        await accounts._audit(
            "account.invitation.accepted",
            staff.id,
            staff.org_id,
            {"staff": staff.id, "session": session.id},
        )
        state: Literal["signed_in", "must_enrol_totp"] = (
            "must_enrol_totp" if kind == "enrolment" else "signed_in"
        )
        return SignInResult(
            state=state,
            token=session_token,
            session_id=session.id,
            staff_id=staff.id,
            org_id=staff.org_id,
            display_name=staff.display_name,
            roles=tuple(staff.roles),
            expires_at=session.expires_at,
            idle_minutes=accounts.security.session_idle_minutes,
        )

    async def lines(self, actor: Actor) -> list[StaffLine]:
        """The organisation's accounts for an administrator (``staff.manage``), by name."""
        accounts = self._accounts
        await accounts._require(actor, Permission.MANAGE_STAFF, "account.list", "")
        now = accounts.now()
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(Staff, Credential)
                    .outerjoin(Credential, Credential.staff_id == Staff.id)
                    .where(Staff.org_id == actor.org_id)
                    .order_by(Staff.display_name, Staff.username)
                )
            ).all()
            links = (
                await s.execute(
                    select(Invitation.staff_id, Invitation.expires_at).where(
                        Invitation.org_id == actor.org_id,
                        Invitation.used_at.is_(None),
                        Invitation.withdrawn_at.is_(None),
                    )
                )
            ).all()
        latest: dict[str, datetime] = {}
        for staff_id, until in links:
            latest[staff_id] = max(until, latest.get(staff_id, until))
        out = []
        for staff, cred in rows:
            state: AccountState
            locked = cred is not None and cred.locked_until is not None and cred.locked_until > now
            expires: datetime | None = latest.get(staff.id) if cred is None else None
            if not staff.active:
                state = "deactivated"
            elif cred is None:
                state = (
                    "invited" if expires is not None and expires > now else ("invitation expired")
                )
            elif locked:
                state = "locked"
            else:
                state = "active"
            out.append(
                StaffLine(
                    staff_id=staff.id,
                    username=staff.username,
                    display_name=staff.display_name,
                    email=staff.email,
                    roles=tuple(staff.roles),
                    state=state,
                    two_factor=cred is not None and cred.totp_sealed is not None,
                    locked_until=cred.locked_until if locked and cred is not None else None,
                    invitation_expires=expires,
                )
            )
        await accounts.audit_as("account.list", actor, actor.org_id, {}, count=len(out))
        return out

    async def pending_for(self, actor: Actor, staff_id: str) -> list[str]:
        """The kinds of change waiting for a DSL's approval about ``staff_id``."""
        async with self._sessions() as s:
            kinds = await s.scalars(
                select(StaffApproval.kind).where(
                    StaffApproval.org_id == actor.org_id,
                    StaffApproval.staff_id == staff_id,
                    StaffApproval.state == "pending",
                    StaffApproval.expires_at > self._accounts.now(),
                )
            )
            return list(kinds)


__all__ = [
    "INVITATION_DAYS",
    "INVITATION_PATH",
    "InvitationInfo",
    "InvitationInvalid",
    "IssuedInvitation",
    "StaffInvitations",
    "StaffLine",
]
