"""Sessions and API tokens in use: authenticating a bearer token, signing out, and
changing one's own password (which ends the other sessions)."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from sqlalchemy import select, update

from transfer.auth import codes
from transfer.auth.attempts import FailedAttempts
from transfer.auth.errors import SessionInvalid, TotpEnrolmentRequired, WrongPassword
from transfer.auth.passwords import check_password_policy
from transfer.auth.records import Principal, ScopedActor
from transfer.auth.tables import ApiTokenRow, Credential, SessionRow
from transfer.errors import InputError, NotFoundError, PolicyError
from transfer.store.permissions import Actor, Permission
from transfer.store.tables import Staff

#: Every permission value (token scopes are a subset).
_PERMISSIONS: Final = frozenset(p.value for p in Permission)


class Sessions(FailedAttempts):
    """Authentication of a bearer token, and the end of sessions."""

    # --------------------------------------------------------- authentication

    async def authenticate(self, token: str, *, allow_enrolment: bool = False) -> Principal:
        """The :class:`Principal` for a bearer token (a session or an API token), or raise.

        Sessions end after ``session_idle_minutes`` without use and after
        ``session_max_hours`` in all; every use moves the idle limit on.
        """
        if token.startswith(codes.API_TOKEN_PREFIX):
            return await self._authenticate_api_token(token)
        if not token.startswith(codes.SESSION_PREFIX):
            raise SessionInvalid("the bearer token is not one this node issued; sign in again")
        now = self.now()
        digest = codes.token_hash(token)
        async with self._sessions() as s, s.begin():
            row = await s.scalar(select(SessionRow).where(SessionRow.token_hash == digest))
            if row is None or not codes.same(row.token_hash, digest) or row.ended_at is not None:
                raise SessionInvalid("the session has ended or is not known; sign in again")
            idle_limit = row.last_seen_at + timedelta(minutes=self.security.session_idle_minutes)
            reason = None
            if now >= row.expires_at:
                reason = "expired_max"
            elif now >= idle_limit:
                reason = "expired_idle"
            if reason is None:
                row.last_seen_at = now
            else:
                row.ended_at, row.ended_reason = now, reason
            staff_id, org_id, session_id, kind = row.staff_id, row.org_id, row.id, row.kind
        if reason is not None:
            await self._audit(
                "session.end",
                staff_id,
                org_id,
                {"staff": staff_id, "session": session_id},
                reason=reason,
            )
            raise SessionInvalid("the session has expired; sign in again")
        actor = await self._active_actor(staff_id)
        if kind == "enrolment" and not allow_enrolment:
            raise TotpEnrolmentRequired(
                "your role needs two-factor authentication: set it up (POST /api/v1/me/totp) "
                "before doing anything else",
                detail={"must_enrol_totp": True},
            )
        return Principal(
            actor=actor,
            kind="session" if kind == "session" else "enrolment",
            credential_id=session_id,
        )

    async def _active_actor(self, staff_id: str) -> Actor:
        try:
            return await self.store.actor_for(staff_id)
        except (PolicyError, NotFoundError):
            raise SessionInvalid("this account is no longer active") from None

    async def _authenticate_api_token(self, token: str) -> Principal:
        now = self.now()
        digest = codes.token_hash(token)
        async with self._sessions() as s, s.begin():
            row = await s.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == digest))
            if row is None or not codes.same(row.token_hash, digest):
                raise SessionInvalid("the API token is not known")
            if row.revoked_at is not None:
                bad = "revoked"
            elif row.expires_at is not None and row.expires_at <= now:
                bad = "expired"
            else:
                bad = ""
                row.last_used_at = now
            token_id, staff_id, org_id = row.id, row.staff_id, row.org_id
            scopes = frozenset(Permission(p) for p in row.scopes if p in _PERMISSIONS)
        targets = {"token": token_id, "staff": staff_id}
        if bad:
            await self._audit("token.used", staff_id, org_id, targets, "refused", reason=bad)
            raise SessionInvalid(f"the API token has been {bad}")
        actor = await self._active_actor(staff_id)
        await self._audit("token.used", staff_id, org_id, targets)
        return Principal(
            actor=ScopedActor(
                staff_id=actor.staff_id,
                org_id=actor.org_id,
                roles=actor.roles,
                display_name=actor.display_name,
                scopes=scopes,
            ),
            kind="token",
            credential_id=token_id,
        )

    async def sign_out(self, principal: Principal) -> None:
        """End the principal's session (an API token is revoked with :meth:`revoke_token`)."""
        if principal.kind == "token":
            raise InputError("an API token is not a session; revoke it instead")
        await self._end_session(principal.credential_id, "signed_out", principal.actor)

    async def _end_session(self, session_id: str, reason: str, actor: Actor) -> None:
        now = self.now()
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(SessionRow)
                .where(SessionRow.id == session_id, SessionRow.ended_at.is_(None))
                .values(ended_at=now, ended_reason=reason)
            )
        await self._audit(
            "session.end", actor, actor.org_id, {"session": session_id}, reason=reason
        )

    # ---------------------------------------------------------------- passwords

    async def change_password(self, principal: Principal, current: str, new: str) -> None:
        """The signed-in person changes their own password; their other sessions end."""
        self._needs_session(principal)
        actor = principal.actor
        async with self._sessions() as s:
            cred = await s.get(Credential, actor.staff_id)
            staff = await s.get(Staff, actor.staff_id)
        if cred is None or staff is None:
            raise NotFoundError("this account has no password set")
        now = self.now()
        counted = await self._count_attempt(now, staff_id=actor.staff_id, org=actor.org_id)
        if not await self._verify(cred.password_hash, current):
            await self._failed(
                actor.staff_id, actor.org_id, counted, "bad_password", during="password_change"
            )
            raise WrongPassword("the current password is not right")
        async with self._sessions() as s, s.begin():
            await self._clear_failures(s, actor.staff_id)  # the attempt was counted first
        check_password_policy(new, staff.username)
        hashed = await self._hash(new)
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(Credential)
                .where(Credential.staff_id == actor.staff_id)
                .values(password_hash=hashed, password_changed_at=self.now())
            )
            await s.execute(
                update(SessionRow)
                .where(
                    SessionRow.staff_id == actor.staff_id,
                    SessionRow.ended_at.is_(None),
                    SessionRow.id != principal.credential_id,
                )
                .values(ended_at=self.now(), ended_reason="password_changed")
            )
        await self._audit("password.changed", actor, actor.org_id, {"staff": actor.staff_id})


__all__ = ["Sessions"]
