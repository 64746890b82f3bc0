"""The two-person rule for account changes: :class:`StaffApprovals`.

An administrator could make themselves a DSL and read restricted concerns, or
reset a DSL's password and authenticator and take the account over. So these
changes do not happen when they are asked for; they wait here, as a *pending
approval*, until a DSL approves them:

- granting or removing a protected role (``PROTECTED_ROLES``: DSL, deputy DSL,
  head teacher: the roles that read concern content), and adding an account
  that holds one;
- resetting the password or the authenticator app of someone who holds one.

Who asked, what and when is recorded; the DSL team is alerted
(:mod:`transfer.alerts`) when a request is made; a DSL (``staff.approve``,
signed in with password and code: not an API token, not the operator acting
for them) approves or declines it; the change is applied in the same
transaction as the approval; everything is audited. The requester, and the
person the change is about, can never approve it, even if they are a DSL.
The requester may withdraw it, and the person it is about may decline it.
A request not decided within :data:`APPROVAL_DAYS` expires.

The rule lives here, in the domain layer, so the API, the CLI and the web app
all go through it (:class:`transfer.auth.service.Accounts` calls in).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Final, cast

from sqlalchemy import delete, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from transfer.auth.records import (
    ApprovalKind,
    ApprovalRecord,
    ApprovalState,
    ScopedActor,
)
from transfer.auth.tables import Credential, RecoveryCode, StaffApproval
from transfer.errors import ConflictError, HandoverError, InputError, NotFoundError
from transfer.store.permissions import (
    Actor,
    Permission,
    PermissionDenied,
    roles_in_words,
)
from transfer.store.tables import Staff

if TYPE_CHECKING:
    from transfer.alerts import Alerts
    from transfer.auth.service import Accounts

#: Days a request waits for a decision before it expires.
APPROVAL_DAYS: Final = 7
STATES: Final = ("pending", "approved", "declined", "withdrawn", "expired")
_ALERT_KEY: Final = "staff-approval:"


def _new_id() -> str:
    return str(uuid.uuid4())


def _person(name: str | None, roles: list[str] | None) -> str:
    if name is None:
        return "someone no longer on this node"
    return f"{name} ({roles_in_words(roles or [])})"


class StaffApprovals:
    """Requests held back by the two-person rule, and their decisions."""

    def __init__(self, accounts: Accounts, alerts: Alerts) -> None:
        self._accounts = accounts
        self.alerts = alerts

    def _sessions(self) -> AsyncSession:
        return self._accounts.store.sessions()

    async def _audit(
        self,
        action: str,
        actor: Actor | None,
        org: str,
        targets: dict[str, str],
        outcome: str = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        await self._accounts.audit_as(action, actor, org, targets, outcome, **detail)

    async def _expire(self, s: AsyncSession, now: datetime) -> None:
        await s.execute(
            update(StaffApproval)
            .where(StaffApproval.state == "pending", StaffApproval.expires_at <= now)
            .values(state="expired", pending_key=None, password_hash=None)
            .execution_options(synchronize_session=False)
        )

    # ----------------------------------------------------------------- records

    async def _people(self, s: AsyncSession, org_id: str) -> dict[str, tuple[str, list[str]]]:
        rows = (
            await s.execute(
                select(Staff.id, Staff.display_name, Staff.roles).where(Staff.org_id == org_id)
            )
        ).all()
        return {r.id: (r.display_name, list(r.roles)) for r in rows}

    @staticmethod
    def _requester(row: StaffApproval, people: dict[str, tuple[str, list[str]]]) -> str:
        if row.requested_by is None:
            return "the server operator"
        who = _person(*people.get(row.requested_by, (None, None)))
        return f"the server operator, acting for {who}" if row.requested_as == "operator" else who

    def _summary(self, row: StaffApproval, people: dict[str, tuple[str, list[str]]]) -> str:
        who = self._requester(row, people)
        target = (
            _person(*people.get(row.staff_id, (None, None)))
            if row.staff_id
            else f"{row.display_name} ({row.username})"
        )
        name = people.get(row.staff_id, (target, []))[0] if row.staff_id else target
        if row.kind == "create_account":
            return (
                f"{who} asked to add an account for {target} as {roles_in_words(row.roles or [])}"
            )
        if row.kind == "change_roles":
            return (
                f"{who} asked to change the roles of {name} from "
                f"{roles_in_words(row.roles_before or [])} to {roles_in_words(row.roles or [])}"
            )
        if row.kind == "reset_password":
            return f"{who} asked to set a new password for {target}"
        return (
            f"{who} asked to remove the authenticator app of {target} (a new one is set up "
            "at the next sign-in)"
        )

    def _record(
        self, row: StaffApproval, people: dict[str, tuple[str, list[str]]], now: datetime
    ) -> ApprovalRecord:
        state = row.state
        if state == "pending" and row.expires_at <= now:
            state = "expired"
        target_name = (
            people.get(row.staff_id, ("someone no longer on this node", []))[0]
            if row.staff_id
            else (row.display_name or "")
        )
        return ApprovalRecord(
            id=row.id,
            org_id=row.org_id,
            kind=cast(ApprovalKind, row.kind),
            state=cast(ApprovalState, state),
            summary=self._summary(row, people),
            staff_id=row.staff_id,
            staff_name=target_name,
            username=row.username,
            roles=tuple(row.roles) if row.roles is not None else None,
            roles_before=tuple(row.roles_before) if row.roles_before is not None else None,
            requested_by=row.requested_by,
            requested_by_name=self._requester(row, people),
            requested_as="operator" if row.requested_as == "operator" else "staff",
            requested_at=row.requested_at,
            expires_at=row.expires_at,
            decided_by=row.decided_by,
            decided_by_name=(
                _person(*people.get(row.decided_by, (None, None))) if row.decided_by else None
            ),
            decided_at=row.decided_at,
        )

    async def _load(self, approval_id: str, org_id: str) -> ApprovalRecord:
        async with self._sessions() as s:
            row = await s.get(StaffApproval, approval_id)
            if row is None or row.org_id != org_id:
                raise NotFoundError("there is no such account change request in your organisation")
            return self._record(row, await self._people(s, org_id), self._accounts.now())

    # ---------------------------------------------------------------- requests

    async def request(
        self,
        requester: Actor | None,
        org_id: str,
        kind: ApprovalKind,
        *,
        staff_id: str | None = None,
        username: str | None = None,
        display_name: str | None = None,
        email: str | None = None,
        roles: list[str] | None = None,
        roles_before: list[str] | None = None,
        password_hash: str | None = None,
    ) -> ApprovalRecord:
        """Record a change that waits for a DSL's approval, and alert the DSL team.

        ``requester`` None is the operator on the node's command line. Only one
        change of a kind waits for one person (or one new username) at a time.
        """
        now = self._accounts.now()
        target = staff_id if staff_id is not None else f"new:{(username or '').lower()}"
        row = StaffApproval(
            id=_new_id(),
            org_id=org_id,
            kind=kind,
            state="pending",
            pending_key=f"{org_id}:{kind}:{target}",
            staff_id=staff_id,
            username=username,
            display_name=display_name,
            email=email,
            roles=roles,
            roles_before=roles_before,
            password_hash=password_hash,
            requested_by=requester.staff_id if requester is not None else None,
            requested_as="operator" if requester is None or requester.operator else "staff",
            requested_at=now,
            expires_at=now + timedelta(days=APPROVAL_DAYS),
        )
        targets = {"approval": row.id, **({"staff": staff_id} if staff_id else {})}
        try:
            async with self._sessions() as s, s.begin():
                await self._expire(s, now)
                s.add(row)
                await s.flush()
        except sa_exc.IntegrityError:
            await self._audit(
                "account.approval.requested",
                requester,
                org_id,
                {k: v for k, v in targets.items() if k != "approval"},
                "refused",
                kind=kind,
                reason="already_waiting",
            )
            raise ConflictError(
                "a request for this change is already waiting for a DSL's approval; a DSL "
                "approves or declines it first (or whoever asked withdraws it)"
            ) from None
        async with self._sessions() as s:
            record = self._record(row, await self._people(s, org_id), now)
        await self._audit(
            "account.approval.requested",
            requester,
            org_id,
            targets,
            kind=kind,
            roles=",".join(roles) if roles is not None else None,
        )
        await self.alerts.notify(
            org_id,
            key=_ALERT_KEY + row.id,
            level="info",
            subject="An account change is waiting for a DSL's approval",
            message=(
                f"{record.summary[0].upper()}{record.summary[1:]}. It happens only when a DSL "
                "other than the person who asked approves it: sign in to Handover to approve or "
                "decline it (or use 'handover account approvals'). If nobody at school asked "
                f"for this, decline it and tell your head teacher. It expires after "
                f"{APPROVAL_DAYS} days."
            ),
            ref=row.id,
        )
        return record

    # --------------------------------------------------------------- decisions

    async def _refuse(
        self, actor: Actor, action: str, targets: dict[str, str], message: str, reason: str
    ) -> PermissionDenied:
        await self._audit(action, actor, actor.org_id, targets, "refused", reason=reason)
        return PermissionDenied(message)

    async def _decidable(
        self, actor: Actor, approval_id: str, action: str
    ) -> tuple[StaffApproval, dict[str, str]]:
        """The pending request ``approval_id`` in the actor's organisation, or raise."""
        now = self._accounts.now()
        targets = {"approval": approval_id}
        async with self._sessions() as s:
            row = await s.get(StaffApproval, approval_id)
        if row is None or row.org_id != actor.org_id:
            raise NotFoundError("there is no such account change request in your organisation")
        if row.staff_id:
            targets["staff"] = row.staff_id
        if row.state != "pending" or row.expires_at <= now:
            state = "expired" if row.state == "pending" else row.state
            await self._audit(action, actor, actor.org_id, targets, "refused", state=state)
            raise ConflictError(f"this request is {state} already; nothing was changed")
        return row, targets

    async def _claim(
        self, s: AsyncSession, row: StaffApproval, actor: Actor, state: str, now: datetime
    ) -> None:
        done = await s.execute(
            update(StaffApproval)
            .where(StaffApproval.id == row.id, StaffApproval.state == "pending")
            .values(
                state=state,
                decided_by=actor.staff_id,
                decided_at=now,
                pending_key=None,
                password_hash=None,
            )
            .execution_options(synchronize_session=False)
        )
        if getattr(done, "rowcount", 0) != 1:
            raise ConflictError("someone decided this request a moment ago; nothing was changed")

    async def approve(self, actor: Actor, approval_id: str) -> ApprovalRecord:
        """A DSL approves a request: the change is applied now, in the same transaction."""
        action = "account.approval.approved"
        targets = {"approval": approval_id}
        if actor.operator:
            raise await self._refuse(
                actor,
                action,
                targets,
                "approving an account change needs the DSL signed in with their password and "
                "code ('handover account approve --sign-in'), not the operator acting for them",
                "operator",
            )
        if isinstance(actor, ScopedActor):
            raise await self._refuse(
                actor,
                action,
                targets,
                "approving an account change needs a signed-in session, not an API token",
                "token",
            )
        if not actor.has(Permission.APPROVE_STAFF_CHANGES):
            raise await self._refuse(
                actor,
                action,
                targets,
                "only a DSL may approve an account change (staff.approve); ask your DSL",
                "role",
            )
        row, targets = await self._decidable(actor, approval_id, action)
        if row.requested_by == actor.staff_id:
            raise await self._refuse(
                actor,
                action,
                targets,
                "you asked for this change, so another DSL must approve it",
                "own_request",
            )
        if row.staff_id == actor.staff_id:
            raise await self._refuse(
                actor,
                action,
                targets,
                "this change is about your own account, so another DSL must approve it",
                "own_account",
            )
        now = self._accounts.now()
        try:
            async with self._sessions() as s, s.begin():
                await self._claim(s, row, actor, "approved", now)
                applied = await self._apply(s, row, now)
        except HandoverError as err:
            await self._audit(action, actor, actor.org_id, targets, "failed", reason=err.slug)
            raise
        if applied and "staff" not in targets:
            targets["staff"] = applied
        await self._audit(action, actor, actor.org_id, targets, kind=row.kind)
        await self._audit(
            _APPLIED[row.kind],
            actor,
            actor.org_id,
            {"staff": applied, "approval": row.id},
            requested_by=row.requested_by or "operator",
            roles=",".join(row.roles) if row.roles is not None else None,
        )
        await self.alerts.resolve(row.org_id, _ALERT_KEY + row.id)
        return await self._load(row.id, row.org_id)

    async def decline(self, actor: Actor, approval_id: str) -> ApprovalRecord:
        """A DSL declines a request (or the requester withdraws it, or the person it is
        about declines it); nothing changes."""
        action = "account.approval.declined"
        row, targets = await self._decidable(actor, approval_id, action)
        own = row.requested_by is not None and row.requested_by == actor.staff_id
        about_me = row.staff_id is not None and row.staff_id == actor.staff_id
        if not (own or about_me or actor.has(Permission.APPROVE_STAFF_CHANGES)):
            raise await self._refuse(
                actor,
                action,
                targets,
                "only a DSL, whoever asked, or the person it is about may decline this request",
                "role",
            )
        state = "withdrawn" if own else "declined"
        now = self._accounts.now()
        async with self._sessions() as s, s.begin():
            await self._claim(s, row, actor, state, now)
        await self._audit(
            "account.approval.withdrawn" if own else action,
            actor,
            actor.org_id,
            targets,
            kind=row.kind,
        )
        await self.alerts.resolve(row.org_id, _ALERT_KEY + row.id)
        return await self._load(row.id, row.org_id)

    # ------------------------------------------------------------------ reading

    async def _may_read(self, actor: Actor, action: str, targets: dict[str, str]) -> None:
        if not (actor.has(Permission.APPROVE_STAFF_CHANGES) or actor.has(Permission.MANAGE_STAFF)):
            raise await self._refuse(
                actor,
                action,
                targets,
                "your role does not allow this (staff.approve or staff.manage); ask your DSL or "
                "administrator",
                "role",
            )

    async def list(self, actor: Actor, *, state: str | None = "pending") -> list[ApprovalRecord]:
        """The organisation's account change requests, newest first (``state`` None: all)."""
        if state is not None and state not in STATES:
            raise InputError(f"state must be one of {', '.join(STATES)}")
        await self._may_read(actor, "account.approval.list", {})
        now = self._accounts.now()
        async with self._sessions() as s:
            if state in ("pending", "expired"):
                async with s.begin():
                    await self._expire(s, now)
            query = select(StaffApproval).where(StaffApproval.org_id == actor.org_id)
            if state is not None:
                query = query.where(StaffApproval.state == state)
            rows = (
                await s.scalars(query.order_by(StaffApproval.requested_at.desc(), StaffApproval.id))
            ).all()
            people = await self._people(s, actor.org_id)
            out = [self._record(r, people, now) for r in rows]
        await self._audit("account.approval.list", actor, actor.org_id, {}, count=len(out))
        return out

    async def get(self, actor: Actor, approval_id: str) -> ApprovalRecord:
        targets = {"approval": approval_id}
        await self._may_read(actor, "account.approval.read", targets)
        record = await self._load(approval_id, actor.org_id)
        await self._audit("account.approval.read", actor, actor.org_id, targets)
        return record

    # ---------------------------------------------------------------- applying

    async def _apply(self, s: AsyncSession, row: StaffApproval, now: datetime) -> str:
        """Make the approved change inside the approving transaction; the staff id it is about."""
        if row.kind == "create_account":
            return await self._create(s, row, now)
        assert row.staff_id is not None
        staff = await s.get(Staff, row.staff_id)
        if staff is None or staff.org_id != row.org_id or not staff.active:
            raise ConflictError(
                "the account this request is about has been deactivated since; decline it"
            )
        if row.kind == "change_roles":
            if sorted(staff.roles) != sorted(row.roles_before or []):
                raise ConflictError(
                    f"{staff.display_name}'s roles have changed since this was asked (now "
                    f"{roles_in_words(staff.roles)}); decline it and ask again"
                )
            staff.roles = list(row.roles or [])
            await self._accounts.end_sessions(s, staff.id, "roles_changed")
        elif row.kind == "reset_password":
            await self._new_password(s, staff.id, row, now)
        else:
            cred = await s.get(Credential, staff.id)
            if cred is None:
                raise ConflictError(f"{staff.display_name} has no password set; decline it")
            cred.totp_sealed = cred.totp_pending_sealed = None
            cred.totp_last_step = None
            await s.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == staff.id))
            await self._accounts.end_sessions(s, staff.id, "totp_reset")
        return staff.id

    async def _new_password(
        self, s: AsyncSession, staff_id: str, row: StaffApproval, now: datetime
    ) -> None:
        hashed = row.password_hash
        if hashed is None:
            raise ConflictError("this request holds no password any more; ask again")
        cred = await s.get(Credential, staff_id)
        if cred is None:
            s.add(
                Credential(
                    staff_id=staff_id,
                    password_hash=hashed,
                    password_changed_at=now,
                    failed_count=0,
                )
            )
        else:
            cred.password_hash = hashed
            cred.password_changed_at = now
            cred.failed_count, cred.last_failed_at, cred.locked_until = 0, None, None
            await self._accounts.end_sessions(s, staff_id, "password_reset")

    async def _create(self, s: AsyncSession, row: StaffApproval, now: datetime) -> str:
        staff = await self._accounts.store.add_staff_row(
            s,
            row.org_id,
            username=row.username or "",
            display_name=row.display_name or "",
            roles=row.roles or [],
            email=row.email,
        )
        await s.flush()
        await self._new_password(s, staff.id, row, now)
        await s.execute(
            update(StaffApproval)
            .where(StaffApproval.id == row.id)
            .values(staff_id=staff.id)
            .execution_options(synchronize_session=False)
        )
        return staff.id


_APPLIED: Final[dict[str, str]] = {
    "create_account": "account.created",
    "change_roles": "account.roles_changed",
    "reset_password": "account.password_reset",
    "reset_totp": "account.totp_reset",
}


__all__ = ["APPROVAL_DAYS", "StaffApprovals"]
