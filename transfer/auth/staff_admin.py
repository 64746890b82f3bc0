"""Account administration: creating accounts, resetting passwords and TOTP, roles,
deactivation, unlocking, and the two-person rule's entry points."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

from sqlalchemy import delete, select, update

from schemas.auditing import Outcome
from schemas.records import StaffRecord
from transfer.auth.base import AccountsBase
from transfer.auth.passwords import check_password_policy
from transfer.auth.records import AccountStatus, ApprovalRecord
from transfer.auth.tables import ApiTokenRow, Credential, RecoveryCode
from transfer.errors import ConflictError, NotFoundError
from transfer.store.permissions import (
    Actor,
    Permission,
    PermissionDenied,
    Role,
    holds_protected,
    touches_protected,
)
from transfer.store.tables import Staff


class StaffAdmin(AccountsBase):
    """Account administration (``staff.manage``) and the operator's actions."""

    # ----------------------------------------------------- account administration

    async def _set_credential(self, staff_id: str, hashed: str) -> None:
        async with self._sessions() as s, s.begin():
            cred = await s.get(Credential, staff_id)
            if cred is None:
                s.add(
                    Credential(
                        staff_id=staff_id,
                        password_hash=hashed,
                        password_changed_at=self.now(),
                        failed_count=0,
                    )
                )
            else:
                cred.password_hash = hashed
                cred.password_changed_at = self.now()
                cred.failed_count, cred.last_failed_at, cred.locked_until = 0, None, None
                await self.end_sessions(s, staff_id, "password_reset")

    async def bootstrap_account(
        self,
        org_id: str,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        password: str,
        email: str | None = None,
        operator: str = "operator",
    ) -> StaffRecord:
        """Operator action (``handover init``, the demo): a staff member with a password."""
        check_password_policy(password, username)
        hashed = await self._hash(password)
        record = await self.store.bootstrap_staff(
            org_id,
            username=username,
            display_name=display_name,
            roles=list(roles),
            email=email,
            operator=operator,
        )
        await self._set_credential(record.id, hashed)
        await self._audit(
            "account.created", operator, org_id, {"staff": record.id}, roles=",".join(record.roles)
        )
        return record

    async def create_account_as_operator(
        self,
        org_id: str,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        password: str,
        email: str | None = None,
    ) -> StaffRecord | ApprovalRecord:
        """``handover account create``: the operator adds a staff member.

        The organisation's first DSL is created at once (nobody could approve it).
        Once the organisation has a DSL who can sign in, an account with a
        protected role waits for a DSL's approval like anyone else's request.
        """
        role_list = list(roles)
        if not holds_protected(role_list) or not await self._has_dsl(org_id):
            return await self.bootstrap_account(
                org_id,
                username=username,
                display_name=display_name,
                roles=role_list,
                password=password,
                email=email,
            )
        await self.store.get_organisation(org_id)
        return await self._request_new_account(
            None,
            org_id,
            username=username,
            display_name=display_name,
            roles=role_list,
            password=password,
            email=email,
        )

    async def _has_dsl(self, org_id: str) -> bool:
        """Whether the organisation has an active DSL with a password (someone to approve)."""
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(Staff.roles)
                    .join(Credential, Credential.staff_id == Staff.id)
                    .where(Staff.org_id == org_id, Staff.active.is_(True))
                )
            ).all()
        return any(Role.DSL.value in r.roles for r in rows)

    async def _request_new_account(
        self,
        requester: Actor | None,
        org_id: str,
        *,
        username: str,
        display_name: str,
        roles: list[str],
        password: str,
        email: str | None,
    ) -> ApprovalRecord:
        username, display_name, role_list = self.store.check_staff_fields(
            username, display_name, roles, email
        )
        if await self.store.find_staff(org_id, username) is not None:
            raise ConflictError(f"the username {username!r} is already taken in this organisation")
        check_password_policy(password, username)
        return await self.approvals.request(
            requester,
            org_id,
            "create_account",
            username=username,
            display_name=display_name,
            email=email,
            roles=role_list,
            password_hash=await self._hash(password),
        )

    async def create_account(
        self,
        actor: Actor,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        password: str,
        email: str | None = None,
    ) -> StaffRecord | ApprovalRecord:
        """An administrator adds a staff member with a first password (``staff.manage``).

        An account with a protected role (DSL, deputy DSL, head teacher) is not
        created yet: the request waits for a DSL's approval (an :class:`ApprovalRecord`).
        """
        await self._require(actor, Permission.MANAGE_STAFF, "account.created", "")
        role_list = list(roles)
        if holds_protected(role_list):
            return await self._request_new_account(
                actor,
                actor.org_id,
                username=username,
                display_name=display_name,
                roles=role_list,
                password=password,
                email=email,
            )
        check_password_policy(password, username)
        hashed = await self._hash(password)
        record = await self.store.create_staff(
            actor, username=username, display_name=display_name, roles=role_list, email=email
        )
        await self._set_credential(record.id, hashed)
        await self._audit(
            "account.created",
            actor,
            actor.org_id,
            {"staff": record.id},
            roles=",".join(record.roles),
        )
        return record

    async def _not_self(self, actor: Actor, staff_id: str, action: str, message: str) -> None:
        if staff_id == actor.staff_id:
            await self._audit(
                action, actor, actor.org_id, {"staff": staff_id}, "refused", reason="own_account"
            )
            raise PermissionDenied(message)

    async def _target(self, actor: Actor, staff_id: str) -> StaffRecord:
        async with self._sessions() as s:
            staff = await self._staff_row(s, actor, staff_id)
            return StaffRecord(
                id=staff.id,
                org_id=staff.org_id,
                username=staff.username,
                display_name=staff.display_name,
                email=staff.email,
                roles=tuple(staff.roles),
                active=staff.active,
                created_at=staff.created_at,
            )

    async def reset_password(
        self, actor: Actor, staff_id: str, password: str
    ) -> ApprovalRecord | None:
        """An administrator sets a new password; the person's sessions end and any lock lifts.

        For someone holding a protected role the new password waits for a DSL's
        approval (returned); nobody resets their own (they change it with the current one).
        """
        action = "account.password_reset"
        await self._require(actor, Permission.MANAGE_STAFF, action, staff_id)
        await self._not_self(
            actor,
            staff_id,
            action,
            "change your own password with your current one (PUT /api/v1/me/password)",
        )
        staff = await self._target(actor, staff_id)
        check_password_policy(password, staff.username)
        hashed = await self._hash(password)
        if holds_protected(staff.roles):
            return await self.approvals.request(
                actor, actor.org_id, "reset_password", staff_id=staff_id, password_hash=hashed
            )
        await self._set_credential(staff_id, hashed)
        await self._audit(action, actor, actor.org_id, {"staff": staff_id})
        return None

    async def set_roles(
        self, actor: Actor, staff_id: str, roles: Iterable[str]
    ) -> StaffRecord | ApprovalRecord:
        """Change someone's roles (``staff.manage``); their sessions end so the change applies.

        Nobody changes their own roles. Granting or removing a protected role
        waits for a DSL's approval (an :class:`ApprovalRecord` is returned).
        """
        action = "account.roles_changed"
        await self._require(actor, Permission.MANAGE_STAFF, action, staff_id)
        await self._not_self(
            actor,
            staff_id,
            action,
            "nobody may change their own roles; ask another administrator",
        )
        role_list = self.store.check_staff_fields("x", "x", roles, None)[2]
        staff = await self._target(actor, staff_id)
        if touches_protected(staff.roles, role_list):
            return await self.approvals.request(
                actor,
                actor.org_id,
                "change_roles",
                staff_id=staff_id,
                roles=role_list,
                roles_before=list(staff.roles),
            )
        record = await self.store.update_staff(actor, staff_id, roles=role_list)
        async with self._sessions() as s, s.begin():
            ended = await self.end_sessions(s, staff_id, "roles_changed")
        await self._audit(
            action,
            actor,
            actor.org_id,
            {"staff": staff_id},
            roles=",".join(record.roles),
            sessions_ended=ended,
        )
        return record

    async def deactivate(self, actor: Actor, staff_id: str) -> StaffRecord:
        """Deactivate an account (``staff.manage``): sessions end, tokens are revoked."""
        await self._require(actor, Permission.MANAGE_STAFF, "account.deactivated", staff_id)
        if staff_id == actor.staff_id:
            raise ConflictError("you cannot deactivate your own account")
        record = await self.store.deactivate_staff(actor, staff_id)
        async with self._sessions() as s, s.begin():
            ended = await self.end_sessions(s, staff_id, "deactivated")
            await s.execute(
                update(ApiTokenRow)
                .where(ApiTokenRow.staff_id == staff_id, ApiTokenRow.revoked_at.is_(None))
                .values(revoked_at=self.now())
            )
        await self._audit(
            "account.deactivated",
            actor,
            actor.org_id,
            {"staff": staff_id},
            sessions_ended=ended,
        )
        return record

    async def unlock(self, actor: Actor, staff_id: str) -> None:
        """Lift a lock and clear the failure count (``staff.manage``)."""
        await self._require(actor, Permission.MANAGE_STAFF, "account.unlocked", staff_id)
        async with self._sessions() as s, s.begin():
            await self._staff_row(s, actor, staff_id)
            cred = await s.get(Credential, staff_id)
            if cred is None:
                raise NotFoundError("this account has no password set")
            cred.failed_count, cred.last_failed_at, cred.locked_until = 0, None, None
        await self._audit("account.unlocked", actor, actor.org_id, {"staff": staff_id})

    async def reset_totp(self, actor: Actor, staff_id: str) -> ApprovalRecord | None:
        """Remove someone's TOTP and recovery codes (a lost phone); they must enrol again.

        For someone holding a protected role this waits for a DSL's approval
        (returned); nobody resets their own (a stolen session must not move it).
        """
        action = "account.totp_reset"
        await self._require(actor, Permission.MANAGE_STAFF, action, staff_id)
        await self._not_self(
            actor,
            staff_id,
            action,
            "nobody may reset their own authenticator app; ask another administrator",
        )
        staff = await self._target(actor, staff_id)
        if holds_protected(staff.roles):
            return await self.approvals.request(
                actor, actor.org_id, "reset_totp", staff_id=staff_id
            )
        async with self._sessions() as s, s.begin():
            cred = await s.get(Credential, staff_id)
            if cred is None:
                raise NotFoundError("this account has no password set")
            cred.totp_sealed = cred.totp_pending_sealed = None
            cred.totp_last_step = None
            await s.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == staff_id))
            await self.end_sessions(s, staff_id, "totp_reset")
        await self._audit(action, actor, actor.org_id, {"staff": staff_id})
        return None

    # --------------------------------------------------- the two-person rule

    async def list_approvals(
        self, actor: Actor, *, state: str | None = "pending"
    ) -> list[ApprovalRecord]:
        """Account changes waiting for (or given) a DSL's approval (``staff.approve`` or
        ``staff.manage``)."""
        return await self.approvals.list(actor, state=state)

    async def get_approval(self, actor: Actor, approval_id: str) -> ApprovalRecord:
        return await self.approvals.get(actor, approval_id)

    async def approve(self, actor: Actor, approval_id: str) -> ApprovalRecord:
        """A DSL (not the requester, not the person it is about) approves: the change applies."""
        return await self.approvals.approve(actor, approval_id)

    async def decline(self, actor: Actor, approval_id: str) -> ApprovalRecord:
        """A DSL declines (the requester withdraws; the person it is about declines)."""
        return await self.approvals.decline(actor, approval_id)

    async def audit_as(
        self,
        action: str,
        actor: Actor | None,
        org: str,
        targets: dict[str, str],
        outcome: str = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        """Audit an event done by ``actor`` (None: the operator on the command line)."""
        if outcome not in ("ok", "refused", "failed"):
            raise ValueError(f"unknown audit outcome {outcome!r}")
        await self._audit(
            action,
            actor if actor is not None else "operator",
            org,
            targets,
            cast(Outcome, outcome),
            **detail,
        )

    async def sign_in_problems(self, actor: Actor) -> list[AccountStatus]:
        """Accounts in the actor's organisation that are locked or have failed sign-ins."""
        await self._require(actor, Permission.MANAGE_STAFF, "account.list_locked", "")
        now = self.now()
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(Staff, Credential)
                    .join(Credential, Credential.staff_id == Staff.id)
                    .where(Staff.org_id == actor.org_id, Credential.failed_count > 0)
                    .order_by(Staff.username)
                )
            ).all()
        out = []
        for staff, cred in rows:
            locked = cred.locked_until is not None and cred.locked_until > now
            out.append(
                AccountStatus(
                    staff_id=staff.id,
                    username=staff.username,
                    display_name=staff.display_name,
                    failed_count=cred.failed_count,
                    last_failed_at=cred.last_failed_at,
                    locked_until=cred.locked_until if locked else None,
                    locked=locked,
                    totp_enrolled=cred.totp_sealed is not None,
                )
            )
        await self._audit("account.list_locked", actor, actor.org_id, {}, count=len(out))
        return out


__all__ = ["StaffAdmin"]
