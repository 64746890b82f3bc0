"""Signing in: a password, then a TOTP code or a recovery code; a session opens."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import select, update

from schemas.records import StaffRecord
from transfer.auth import codes
from transfer.auth.attempts import FailedAttempts
from transfer.auth.base import fingerprint, new_id
from transfer.auth.errors import SIGN_IN_FAILED, SignInFailed
from transfer.auth.records import SignInResult
from transfer.auth.tables import Credential, RecoveryCode, SessionRow
from transfer.store.permissions import NEEDS_TOTP, Role


class SignIn(FailedAttempts):
    """Sign-in with a password and a second factor."""

    # ------------------------------------------------------------------ sign-in

    async def sign_in(
        self,
        org_id: str,
        username: str,
        password: str,
        *,
        totp: str | None = None,
        recovery_code: str | None = None,
    ) -> SignInResult:
        """Check a password and (when enrolled) a TOTP code or a recovery code; open a session.

        A role in ``NEEDS_TOTP`` without TOTP set up gets state ``must_enrol_totp``:
        a session that may only enrol. Raises :class:`SignInFailed` (the same message
        for every wrong part), :class:`SlowDown` or :class:`AccountLocked`.
        """
        now = self.now()
        staff = await self.store.find_staff(org_id[:64], username[:100]) if username else None
        cred = None
        if staff is not None and staff.active:
            async with self._sessions() as s:
                cred = await s.get(Credential, staff.id)
        if staff is None or not staff.active or cred is None:
            org = org_id[:64]
            staff_id = staff.id if staff else None
            counted = await self._count_attempt(
                now,
                staff_id=staff_id,
                org=org,
                unknown_key=codes.unknown_signin_key(self._kek, org, username),
            )
            await self._burn_time(password)
            reason = "unknown_user" if staff is None else "inactive_or_no_password"
            await self._audit(
                "signin.failed",
                staff_id,
                org,
                self._targets(staff_id),
                "failed",
                reason=reason,
                username_hash=fingerprint(f"{org_id}\x00{username.strip().lower()}"),
            )
            if counted.locks and staff is not None:
                await self._audit("account.locked", staff.id, org, {"staff": staff.id})
            raise SignInFailed(SIGN_IN_FAILED)

        counted = await self._count_attempt(now, staff_id=staff.id, org=staff.org_id)
        if not await self._verify(cred.password_hash, password):
            raise await self._fail(staff, counted, "bad_password")

        roles = frozenset(Role(r) for r in staff.roles)
        enrolled = cred.totp_sealed is not None
        used_recovery = False
        if enrolled:
            if recovery_code:
                if not await self._use_recovery_code(staff, recovery_code, now):
                    raise await self._fail(staff, counted, "bad_recovery_code")
                used_recovery = True
            elif totp:
                assert cred.totp_sealed is not None
                secret = self._open_totp(staff.id, cred.totp_sealed)
                step = codes.matching_step(secret, totp, now, self.security.totp_drift_steps)
                accepted = step is not None and await self._accept_step(staff.id, step)
                if not accepted:
                    why = "reused" if step is not None else "wrong"
                    await self._audit(
                        "totp.failed",
                        staff.id,
                        staff.org_id,
                        {"staff": staff.id},
                        "failed",
                        reason=why,
                    )
                    raise await self._fail(staff, counted, "bad_totp", totp=why)
            else:
                raise await self._fail(staff, counted, "totp_missing")
        kind = "session" if enrolled or not (roles & NEEDS_TOTP) else "enrolment"

        token = codes.new_token(codes.SESSION_PREFIX)
        row = SessionRow(
            id=new_id(),
            token_hash=codes.token_hash(token),
            staff_id=staff.id,
            org_id=staff.org_id,
            kind=kind,
            created_at=now,
            last_seen_at=now,
            expires_at=now + timedelta(hours=self.security.session_max_hours),
        )
        async with self._sessions() as s, s.begin():
            s.add(row)
            await self._clear_failures(s, staff.id)
        state = "signed_in" if kind == "session" else "must_enrol_totp"
        await self._audit(
            "signin.ok",
            staff.id,
            staff.org_id,
            {"staff": staff.id, "session": row.id},
            state=state,
            second_factor="recovery_code" if used_recovery else ("totp" if enrolled else "none"),
        )
        return SignInResult(
            state=state,
            token=token,
            session_id=row.id,
            staff_id=staff.id,
            org_id=staff.org_id,
            display_name=staff.display_name,
            roles=staff.roles,
            expires_at=row.expires_at,
            idle_minutes=self.security.session_idle_minutes,
        )

    async def _use_recovery_code(self, staff: StaffRecord, code: str, now: datetime) -> bool:
        wanted = codes.recovery_code_hash(staff.id, code)
        async with self._sessions() as s, s.begin():
            rows = (
                await s.scalars(
                    select(RecoveryCode).where(
                        RecoveryCode.staff_id == staff.id, RecoveryCode.used_at.is_(None)
                    )
                )
            ).all()
            match: RecoveryCode | None = None
            for r in rows:
                if codes.same(r.code_hash, wanted):
                    match = r
            if match is None:
                return False
            result = await s.execute(
                update(RecoveryCode)
                .where(RecoveryCode.id == match.id, RecoveryCode.used_at.is_(None))
                .values(used_at=now)
            )
            if getattr(result, "rowcount", 0) != 1:
                return False
            left = len(rows) - 1
        await self._audit(
            "recovery_code.used", staff.id, staff.org_id, {"staff": staff.id}, remaining=left
        )
        return True


__all__ = ["SignIn"]
