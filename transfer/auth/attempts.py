"""Failure accounting for sign-in, step-up and password change (the counter's I/O)."""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import delete, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.records import StaffRecord
from transfer.auth import throttle
from transfer.auth.base import AccountsBase
from transfer.auth.errors import SIGN_IN_FAILED, AccountLocked, SignInFailed, SlowDown
from transfer.auth.tables import Credential, UnknownSignIn
from transfer.errors import NotFoundError

#: Tries of the compare-and-set that counts an attempt before giving up with a 429.
_COUNT_TRIES: Final = 200


class FailedAttempts(AccountsBase):
    """Counting sign-in attempts in the database; the policy is ``transfer.auth.throttle``."""

    # ------------------------------------------------------- failure accounting
    #
    # Every attempt is counted *before* its password is checked, by a compare-and-set
    # on the counter (``UPDATE ... WHERE failed_count = <what was read>``), which is
    # atomic on SQLite and PostgreSQL alike: parallel guesses cannot all read the same
    # count and pass. The attempt that reaches ``failed_signins_before_lock`` sets the
    # lock as it is counted; a right password clears the count (and that lock).

    def _throttle_policy(self) -> throttle.ThrottlePolicy:
        return throttle.ThrottlePolicy(
            before_delay=self.security.failed_signins_before_delay,
            before_lock=self.security.failed_signins_before_lock,
            lock_minutes=self.security.lock_minutes,
        )

    async def _refuse_attempt(
        self, refused: throttle.Refused, staff_id: str | None, org: str
    ) -> None:
        """Raise (audited): the attempt may not go ahead, locked or too soon after a failure."""
        if refused.locked_until is not None:
            await self._audit(
                "signin.failed", staff_id, org, self._targets(staff_id), "refused", reason="locked"
            )
            until = refused.locked_until.strftime("%H:%M UTC")
            raise AccountLocked(
                "this account is locked after repeated failed sign-ins; "
                f"try again after {until} or ask an administrator to unlock it",
                detail={"locked_until": refused.locked_until.isoformat()},
            )
        await self._audit(
            "signin.failed",
            staff_id,
            org,
            self._targets(staff_id),
            "refused",
            reason="too_soon",
            retry_after=refused.retry_after,
        )
        raise SlowDown(refused.retry_after)

    async def _count_attempt(
        self,
        now: datetime,
        *,
        staff_id: str | None,
        org: str,
        unknown_key: str | None = None,
    ) -> throttle.Counted:
        """Count one attempt on a credential (``staff_id``) or an unknown name (``unknown_key``).

        Refuses (audited, not counted) an attempt on a locked name or one that comes
        too soon after a failure. Otherwise the attempt is counted atomically and may
        go on to the password check.
        """
        table: type[Credential] | type[UnknownSignIn] = (
            UnknownSignIn if unknown_key is not None else Credential
        )
        key_col = UnknownSignIn.key_hash if unknown_key is not None else Credential.staff_id
        key = unknown_key if unknown_key is not None else staff_id
        policy = self._throttle_policy()
        for _ in range(_COUNT_TRIES):
            try:
                async with self._sessions() as s, s.begin():
                    row = (
                        await s.execute(
                            select(
                                table.failed_count, table.last_failed_at, table.locked_until
                            ).where(key_col == key)
                        )
                    ).first()
                    if row is None and unknown_key is None:
                        raise NotFoundError("this account has no password set")
                    stored = throttle.Attempts(*row) if row is not None else throttle.NO_ATTEMPTS
                    decision = throttle.decide(stored, now, policy)
                    if isinstance(decision, throttle.Counted):
                        values = {
                            "failed_count": decision.count,
                            "last_failed_at": now,
                            "locked_until": decision.locked_until,
                        }
                        if row is None:
                            # Old rows go as new names come (the only way the table grows).
                            await s.execute(
                                delete(UnknownSignIn).where(
                                    UnknownSignIn.last_failed_at < now - throttle.FORGET_AFTER
                                )
                            )
                            s.add(UnknownSignIn(key_hash=unknown_key, **values))
                            await s.flush()
                            return decision
                        done = await s.execute(
                            update(table)
                            .where(key_col == key, table.failed_count == stored.count)
                            .values(**values)
                            .execution_options(synchronize_session=False)
                        )
                        if getattr(done, "rowcount", 0) == 1:
                            return decision
            except sa_exc.IntegrityError:
                continue  # another attempt inserted the same unknown name first: read it again
            if isinstance(decision, throttle.Refused):
                await self._refuse_attempt(decision, staff_id, org)
        # Hundreds of attempts on one name at the same instant: make the rest wait.
        await self._audit(
            "signin.failed",
            staff_id,
            org,
            self._targets(staff_id),
            "refused",
            reason="too_soon",
            retry_after=1,
        )
        raise SlowDown(1)

    async def _clear_failures(self, s: AsyncSession, staff_id: str) -> None:
        await s.execute(
            update(Credential)
            .where(Credential.staff_id == staff_id)
            .values(failed_count=0, last_failed_at=None, locked_until=None)
        )

    async def _fail(
        self,
        staff: StaffRecord,
        counted: throttle.Counted,
        reason: str,
        **detail: str | int | bool | None,
    ) -> SignInFailed:
        """Audit a failed attempt (already counted) on a real account; return the error."""
        await self._failed(staff.id, staff.org_id, counted, reason, **detail)
        return SignInFailed(SIGN_IN_FAILED)

    async def _failed(
        self,
        staff_id: str,
        org_id: str,
        counted: throttle.Counted,
        reason: str,
        **detail: str | int | bool | None,
    ) -> None:
        targets = {"staff": staff_id}
        await self._audit(
            "signin.failed", staff_id, org_id, targets, "failed", reason=reason, **detail
        )
        if counted.locks:
            await self._audit(
                "account.locked",
                staff_id,
                org_id,
                targets,
                failures=counted.count,
                minutes=self.security.lock_minutes,
            )


__all__ = ["FailedAttempts"]
