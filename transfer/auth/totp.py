"""Two-factor authentication: TOTP enrolment, recovery codes and the step-up."""

from __future__ import annotations

from sqlalchemy import delete, update

from keys import aead
from transfer.auth import codes
from transfer.auth.attempts import FailedAttempts
from transfer.auth.base import new_id
from transfer.auth.errors import TotpEnrolmentRequired, WrongCode
from transfer.auth.records import Principal, RecoveryCodes, TotpEnrolment
from transfer.auth.tables import Credential, RecoveryCode, SessionRow
from transfer.errors import ConflictError, NotFoundError
from transfer.store.tables import Staff


class Totp(FailedAttempts):
    """TOTP enrolment, recovery codes and the step-up before a sensitive action."""

    # ------------------------------------------------------------ TOTP enrolment

    async def begin_totp_enrolment(self, principal: Principal) -> TotpEnrolment:
        """A new TOTP secret for the signed-in person, pending until a code confirms it."""
        self._needs_session(principal)
        actor = principal.actor
        secret = codes.new_totp_secret()
        async with self._sessions() as s, s.begin():
            cred = await s.get(Credential, actor.staff_id, with_for_update=True)
            staff = await s.get(Staff, actor.staff_id)
            if cred is None or staff is None:
                raise NotFoundError("this account has no password set")
            if cred.totp_sealed is not None:
                # Otherwise a stolen session could move the second factor to another phone.
                raise ConflictError(
                    "two-factor authentication is already set up; to move it to a new device "
                    "ask an administrator to reset it, then sign in and enrol again"
                )
            cred.totp_pending_sealed = aead.seal(
                self._kek, secret.encode("ascii"), codes.totp_aad(actor.staff_id)
            )
            account = f"{staff.username}@{staff.org_id}"
        await self._audit("totp.enrolment_started", actor, actor.org_id, {"staff": actor.staff_id})
        uri = codes.provisioning_uri(secret, account=account, issuer=self.issuer)
        return TotpEnrolment(uri=uri, secret=secret, qr=codes.terminal_qr(uri))

    async def confirm_totp_enrolment(self, principal: Principal, code: str) -> RecoveryCodes:
        """Confirm the pending secret with its first code; return fresh recovery codes.

        An enrolment session becomes a full session (password and a valid code are both proved).
        """
        self._needs_session(principal)
        actor = principal.actor
        now = self.now()
        async with self._sessions() as s, s.begin():
            cred = await s.get(Credential, actor.staff_id, with_for_update=True)
            if cred is None or cred.totp_pending_sealed is None:
                raise ConflictError("no TOTP enrolment is in progress; start one first")
            secret = self._open_totp(actor.staff_id, cred.totp_pending_sealed)
            step = codes.matching_step(secret, code, now, self.security.totp_drift_steps)
            if step is not None:
                cred.totp_sealed, cred.totp_pending_sealed = cred.totp_pending_sealed, None
                cred.totp_last_step = step
                await s.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == actor.staff_id))
                fresh = codes.new_recovery_codes()
                for c in fresh:
                    s.add(
                        RecoveryCode(
                            id=new_id(),
                            staff_id=actor.staff_id,
                            code_hash=codes.recovery_code_hash(actor.staff_id, c),
                            created_at=now,
                        )
                    )
                if principal.kind == "enrolment":
                    await s.execute(
                        update(SessionRow)
                        .where(SessionRow.id == principal.credential_id)
                        .values(kind="session")
                    )
        targets = {"staff": actor.staff_id}
        if step is None:
            await self._audit(
                "totp.failed", actor, actor.org_id, targets, "failed", reason="enrolment"
            )
            raise WrongCode(
                "that code does not match; check the device's clock and type the current code"
            )
        await self._audit("totp.enrolled", actor, actor.org_id, targets)
        return RecoveryCodes(codes=tuple(fresh))

    async def regenerate_recovery_codes(self, principal: Principal) -> RecoveryCodes:
        """Replace every recovery code (the old ones stop working)."""
        self._needs_session(principal)
        if principal.kind != "session":
            raise TotpEnrolmentRequired("set up two-factor authentication first")
        actor, now = principal.actor, self.now()
        fresh = codes.new_recovery_codes()
        async with self._sessions() as s, s.begin():
            cred = await s.get(Credential, actor.staff_id)
            if cred is None or cred.totp_sealed is None:
                raise ConflictError("two-factor authentication is not set up on this account")
            await s.execute(delete(RecoveryCode).where(RecoveryCode.staff_id == actor.staff_id))
            for c in fresh:
                s.add(
                    RecoveryCode(
                        id=new_id(),
                        staff_id=actor.staff_id,
                        code_hash=codes.recovery_code_hash(actor.staff_id, c),
                        created_at=now,
                    )
                )
        await self._audit(
            "recovery_code.regenerated", actor, actor.org_id, {"staff": actor.staff_id}
        )
        return RecoveryCodes(codes=tuple(fresh))

    # ------------------------------------------------------------------ step-up

    async def step_up(self, principal: Principal, code: str) -> None:
        """Check a fresh authenticator code before a sensitive action (send a file, export).

        The code counts as a sign-in attempt: it is accepted once (a code already used, at
        sign-in or an earlier step-up, is refused), a wrong one counts towards the slow-down
        and the lock-out, and a locked account cannot step up. Raises :class:`WrongCode`,
        :class:`SlowDown`, :class:`AccountLocked`, or :class:`ConflictError` when the person
        has no authenticator set up.
        """
        self._needs_session(principal)
        if principal.kind != "session":
            raise TotpEnrolmentRequired("set up two-factor authentication first")
        actor, now = principal.actor, self.now()
        async with self._sessions() as s:
            cred = await s.get(Credential, actor.staff_id)
        if cred is None or cred.totp_sealed is None:
            raise ConflictError(
                "this needs a code from an authenticator app, and none is set up on your "
                "account: set one up first"
            )
        # Counted before the code is checked, like a sign-in: parallel guesses get no more
        # checks than the lock-out allows.
        counted = await self._count_attempt(now, staff_id=actor.staff_id, org=actor.org_id)
        secret = self._open_totp(actor.staff_id, cred.totp_sealed)
        step = codes.matching_step(secret, code, now, self.security.totp_drift_steps)
        if step is None or not await self._accept_step(actor.staff_id, step):
            why = "reused" if step is not None else "wrong"
            await self._failed(
                actor.staff_id, actor.org_id, counted, "bad_totp", during="step_up", totp=why
            )
            raise WrongCode(
                "that code is not right, or it has been used already: wait for the next "
                "code in your authenticator app and type it"
            )
        async with self._sessions() as s, s.begin():
            await self._clear_failures(s, actor.staff_id)  # the attempt was counted first
        targets = {"staff": actor.staff_id, "session": principal.credential_id}
        await self._audit("stepup.ok", actor.staff_id, actor.org_id, targets)


__all__ = ["Totp"]
