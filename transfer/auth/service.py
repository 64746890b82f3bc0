"""Staff accounts and sign-in: :class:`Accounts`.

Passwords (Argon2id), TOTP (required for every role in ``NEEDS_TOTP``),
one-time recovery codes, the slow-down and lock-out of failed sign-ins,
sessions with an idle and an absolute limit, and scoped API tokens. The
staff *record* is the store's (``Store.create_staff`` and friends); this
service adds what proves who someone is, and checks its own permissions
(``staff.manage`` for account administration) in the domain layer.

Every outcome is audited (``signin.ok``, ``signin.failed`` with a reason,
``totp.failed``, ``account.locked``, ``recovery_code.used``, ``session.end``,
``token.used``, ``token.created``, ``token.revoked``, ``account.*``); no
password, code, token or secret is ever put in an event or a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, cast

from sqlalchemy import delete, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from keys import aead
from schemas.auditing import AuditEvent, AuditSink, Outcome
from schemas.records import StaffRecord
from transfer.alerts import Alerts
from transfer.auth import codes
from transfer.auth.approvals import StaffApprovals
from transfer.auth.invitations import StaffInvitations
from transfer.auth.models import (
    ApiTokenRow,
    Credential,
    RecoveryCode,
    SessionRow,
    UnknownSignIn,
)
from transfer.auth.overview import AccountOverview
from transfer.auth.passwords import (
    INTERACTIVE,
    HashingCost,
    check_password_policy,
    hash_password,
    verify_password,
)
from transfer.auth.records import (
    AccountStatus,
    ApprovalRecord,
    IssuedToken,
    Principal,
    RecoveryCodes,
    ScopedActor,
    SignInResult,
    TokenInfo,
    TotpEnrolment,
)
from transfer.config import SecuritySection, SmtpSection
from transfer.errors import (
    AuthenticationError,
    ConflictError,
    InputError,
    NotFoundError,
    PolicyError,
)
from transfer.mail import Mailer
from transfer.store.models import Staff
from transfer.store.permissions import (
    NEEDS_TOTP,
    Actor,
    Permission,
    PermissionDenied,
    Role,
    audit_actor,
    holds_protected,
    require,
    touches_protected,
)
from transfer.store.service import Store
from transfer.wording import plural

Clock = Callable[[], datetime]

#: The one message for every failed sign-in (unknown user, wrong password, wrong code).
SIGN_IN_FAILED: Final = (
    "the organisation, username, password or code is not right; "
    "after repeated failures sign-in slows down and the account is locked for a while"
)
#: Longest wait imposed between failed attempts before the lock.
MAX_DELAY_SECONDS: Final = 300
#: Every permission value (token scopes are a subset).
_PERMISSIONS: Final = frozenset(p.value for p in Permission)
#: A failure older than this is forgotten (an unknown username's row is then deleted).
FORGET_AFTER: Final = timedelta(hours=24)
#: Tries of the compare-and-set that counts an attempt before giving up with a 429.
_COUNT_TRIES: Final = 200


class SignInFailed(AuthenticationError):
    """The sign-in was refused; the message never says which part was wrong."""

    slug = "sign-in-failed"
    title = "Sign-in failed"


class AccountLocked(AuthenticationError):
    """Too many failed sign-ins: locked until a time, or until an administrator unlocks it."""

    slug = "account-locked"
    title = "The account is locked"


class SlowDown(AuthenticationError):
    """Failed sign-ins came too fast; wait ``retry_after`` seconds."""

    http_status = 429
    slug = "slow-down"
    title = "Too many sign-in attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(
            f"too many failed sign-ins; wait {plural(retry_after, 'second')} before trying again",
            detail={"retry_after": retry_after},
        )
        self.retry_after = retry_after


class SessionInvalid(AuthenticationError):
    """The session or token is unknown, expired, ended or revoked: sign in again."""

    slug = "session-invalid"
    title = "Sign in again"


class TotpEnrolmentRequired(PolicyError):
    """The role needs two-factor authentication; only enrolment is allowed until it is set up."""

    slug = "totp-enrolment-required"
    title = "Set up two-factor authentication first"


class WrongPassword(InputError):
    """The current password given to change it is not right."""

    slug = "wrong-password"
    title = "The current password is not right"


class WrongCode(InputError):
    """The code given to confirm TOTP enrolment, or a step-up, is not right."""

    slug = "wrong-code"
    title = "The code is not right"


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


def _fingerprint(text: str) -> str:
    """A short hash of an unverified username for the audit log (never the text itself)."""
    return hashlib.sha256(b"handover:audit-username:v1:" + text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class _Attempts:
    """Failure counter of one name (a real credential row or an unknown username)."""

    count: int
    last: datetime | None
    locked_until: datetime | None


@dataclass(frozen=True)
class _Counted:
    """An attempt counted before its password was checked: its number, and whether it locked."""

    count: int
    locks: bool


class Accounts:
    """Sign-in and account administration over the store's staff records."""

    def __init__(
        self,
        store: Store,
        kek: bytes,
        audit: AuditSink,
        security: SecuritySection,
        *,
        clock: Clock | None = None,
        hashing: HashingCost = INTERACTIVE,
        issuer: str = "Handover",
        alerts: Alerts | None = None,
    ) -> None:
        if len(kek) != aead.KEY_SIZE:
            raise ValueError("the key-encryption key must be 32 bytes")
        self.store = store
        self._kek = kek
        self._audit_sink = audit
        self.security = security
        self._clock = clock or _utc_now
        self.hashing = hashing
        self.issuer = issuer
        self._dummy_hash: str | None = None
        #: At most this many Argon2id computations at once (each takes its memory limit).
        self._hash_slots = asyncio.Semaphore(4)
        if alerts is None:  # alerts in the app only (no e-mail)
            alerts = Alerts(store, Mailer(SmtpSection()))
        #: Account changes held back by the two-person rule (``transfer.auth.approvals``).
        self.approvals = StaffApprovals(self, alerts)
        #: One-time invitation links and the administrator's list (``transfer.auth.invitations``).
        self.invitations = StaffInvitations(self)
        #: The operator's read-only view of accounts (``transfer.auth.overview``).
        self.overview = AccountOverview(store.sessions, audit)

    # ----------------------------------------------------------------- plumbing

    def now(self) -> datetime:
        value = self._clock()
        if value.tzinfo is None:
            raise ValueError("the accounts clock must return an aware datetime")
        return value.astimezone(UTC)

    def _sessions(self) -> AsyncSession:
        return self.store.sessions()

    async def _audit(
        self,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str] | None = None,
        outcome: Outcome = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        if isinstance(actor, Actor):
            actor, kind = audit_actor(actor)
            detail = {**detail, **kind}
        await self._audit_sink.record(
            AuditEvent(
                action=action,
                actor=actor,
                org=org,
                targets=dict(targets or {}),
                outcome=outcome,
                detail=dict(detail),
            )
        )

    async def _require(
        self, actor: Actor, permission: Permission, action: str, target: str
    ) -> None:
        try:
            require(actor, permission)
        except PermissionDenied:
            targets = {"staff": target} if target else {}
            await self._audit(action, actor, actor.org_id, targets, "refused")
            raise

    async def _hash(self, password: str) -> str:
        async with self._hash_slots:
            return await asyncio.to_thread(hash_password, password, self.hashing)

    async def _verify(self, stored: str, password: str) -> bool:
        async with self._hash_slots:
            return await asyncio.to_thread(verify_password, stored, password)

    async def _burn_time(self, password: str) -> None:
        """Verify against a dummy hash so that an unknown user costs as long as a real one."""
        if self._dummy_hash is None:
            self._dummy_hash = await self._hash(codes.new_token("dummy-"))
        await self._verify(self._dummy_hash, password)

    async def _staff_row(self, s: AsyncSession, actor: Actor, staff_id: str) -> Staff:
        staff = await s.get(Staff, staff_id)
        if staff is None or staff.org_id != actor.org_id:
            raise NotFoundError("no such staff member in your organisation")
        return staff

    # ------------------------------------------------------- failure accounting
    #
    # Every attempt is counted *before* its password is checked, by a compare-and-set
    # on the counter (``UPDATE ... WHERE failed_count = <what was read>``), which is
    # atomic on SQLite and PostgreSQL alike: parallel guesses cannot all read the same
    # count and pass. The attempt that reaches ``failed_signins_before_lock`` sets the
    # lock as it is counted; a right password clears the count (and that lock).

    def _current(self, a: _Attempts, now: datetime) -> _Attempts:
        """``a`` as it stands at ``now``: an expired lock or a day-old failure is forgotten."""
        if a.locked_until is not None:
            return _Attempts(0, None, None) if a.locked_until <= now else a
        if a.last is not None and now - a.last >= FORGET_AFTER:
            return _Attempts(0, None, None)
        return a

    def _wait_seconds(self, a: _Attempts, now: datetime) -> int:
        """Seconds still to wait after ``a.count`` failures (0 when an attempt may go ahead)."""
        over = a.count - self.security.failed_signins_before_delay
        if over < 0 or a.last is None:
            return 0
        delay = min(2**over, MAX_DELAY_SECONDS)
        remaining = (a.last + timedelta(seconds=delay) - now).total_seconds()
        return max(0, int(remaining + 0.999))

    async def _refuse_attempt(
        self, a: _Attempts, now: datetime, staff_id: str | None, org: str
    ) -> None:
        """Raise (audited) if an attempt may not go ahead: locked, or too soon after a failure."""
        if a.locked_until is not None and a.locked_until > now:
            await self._audit(
                "signin.failed", staff_id, org, self._targets(staff_id), "refused", reason="locked"
            )
            until = a.locked_until.strftime("%H:%M UTC")
            raise AccountLocked(
                "this account is locked after repeated failed sign-ins; "
                f"try again after {until} or ask an administrator to unlock it",
                detail={"locked_until": a.locked_until.isoformat()},
            )
        wait = self._wait_seconds(a, now)
        if wait > 0:
            await self._audit(
                "signin.failed",
                staff_id,
                org,
                self._targets(staff_id),
                "refused",
                reason="too_soon",
                retry_after=wait,
            )
            raise SlowDown(wait)

    async def _count_attempt(
        self,
        now: datetime,
        *,
        staff_id: str | None,
        org: str,
        unknown_key: str | None = None,
    ) -> _Counted:
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
                    stored = _Attempts(*row) if row is not None else _Attempts(0, None, None)
                    a = self._current(stored, now)
                    if a.locked_until is not None or self._wait_seconds(a, now) > 0:
                        refused = a
                    else:
                        refused = None
                        count = a.count + 1
                        locks = count >= self.security.failed_signins_before_lock
                        values = {
                            "failed_count": count,
                            "last_failed_at": now,
                            "locked_until": (
                                now + timedelta(minutes=self.security.lock_minutes)
                                if locks
                                else None
                            ),
                        }
                        if row is None:
                            # Old rows go as new names come (the only way the table grows).
                            await s.execute(
                                delete(UnknownSignIn).where(
                                    UnknownSignIn.last_failed_at < now - FORGET_AFTER
                                )
                            )
                            s.add(UnknownSignIn(key_hash=unknown_key, **values))
                            await s.flush()
                            return _Counted(count, locks)
                        done = await s.execute(
                            update(table)
                            .where(key_col == key, table.failed_count == stored.count)
                            .values(**values)
                            .execution_options(synchronize_session=False)
                        )
                        if getattr(done, "rowcount", 0) == 1:
                            return _Counted(count, locks)
            except sa_exc.IntegrityError:
                continue  # another attempt inserted the same unknown name first: read it again
            if refused is not None:
                await self._refuse_attempt(refused, now, staff_id, org)
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

    @staticmethod
    def _targets(staff_id: str | None) -> dict[str, str]:
        return {"staff": staff_id} if staff_id else {}

    async def _clear_failures(self, s: AsyncSession, staff_id: str) -> None:
        await s.execute(
            update(Credential)
            .where(Credential.staff_id == staff_id)
            .values(failed_count=0, last_failed_at=None, locked_until=None)
        )

    async def _fail(
        self,
        staff: StaffRecord,
        counted: _Counted,
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
        counted: _Counted,
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
                username_hash=_fingerprint(f"{org_id}\x00{username.strip().lower()}"),
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
            id=_new_id(),
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

    def _open_totp(self, staff_id: str, sealed: bytes) -> str:
        return aead.unseal(self._kek, sealed, codes.totp_aad(staff_id)).decode("ascii")

    async def _accept_step(self, staff_id: str, step: int) -> bool:
        """Record ``step`` as used, atomically; False if it (or a later one) was used already."""
        async with self._sessions() as s, s.begin():
            result = await s.execute(
                update(Credential)
                .where(
                    Credential.staff_id == staff_id,
                    (Credential.totp_last_step.is_(None)) | (Credential.totp_last_step < step),
                )
                .values(totp_last_step=step)
            )
            return bool(getattr(result, "rowcount", 0) == 1)

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

    async def end_sessions(self, s: AsyncSession, staff_id: str, reason: str) -> int:
        """End every open session of ``staff_id`` inside the caller's transaction."""
        result = await s.execute(
            update(SessionRow)
            .where(SessionRow.staff_id == staff_id, SessionRow.ended_at.is_(None))
            .values(ended_at=self.now(), ended_reason=reason)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    # ------------------------------------------------------------ TOTP enrolment

    def _needs_session(self, principal: Principal) -> None:
        if principal.kind == "token":
            raise PermissionDenied("this needs a signed-in session, not an API token")

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
                            id=_new_id(),
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
                        id=_new_id(),
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

    # -------------------------------------------------------------- API tokens

    async def create_token(
        self,
        principal: Principal,
        *,
        name: str,
        scopes: Iterable[str],
        expires_in_days: int | None = None,
    ) -> IssuedToken:
        """A new API token for the signed-in person, limited to ``scopes``.

        Each scope is a :class:`Permission` the person holds now; the token never
        holds more than its owner's roles grant at the time of use.
        """
        self._needs_session(principal)
        if principal.kind != "session":
            raise TotpEnrolmentRequired("set up two-factor authentication first")
        actor = principal.actor
        name = name.strip()
        if not name or len(name) > 100:
            raise InputError("a token's name must be 1 to 100 characters")
        wanted: list[str] = []
        for value in scopes:
            try:
                perm = Permission(value)
            except ValueError:
                raise InputError(f"unknown scope {value[:60]!r}") from None
            if not actor.has(perm):
                await self._audit(
                    "token.created",
                    actor,
                    actor.org_id,
                    {},
                    "refused",
                    scope=perm.value,
                )
                raise PermissionDenied(f"you cannot give a token a permission you lack ({perm})")
            if perm.value not in wanted:
                wanted.append(perm.value)
        if not wanted:
            raise InputError("a token needs at least one scope")
        if expires_in_days is not None and not 1 <= expires_in_days <= 366:
            raise InputError("a token's lifetime must be 1 to 366 days")
        now = self.now()
        token = codes.new_token(codes.API_TOKEN_PREFIX)
        row = ApiTokenRow(
            id=_new_id(),
            token_hash=codes.token_hash(token),
            staff_id=actor.staff_id,
            org_id=actor.org_id,
            name=name,
            scopes=wanted,
            created_at=now,
            expires_at=now + timedelta(days=expires_in_days) if expires_in_days else None,
        )
        async with self._sessions() as s, s.begin():
            s.add(row)
        await self._audit(
            "token.created",
            actor,
            actor.org_id,
            {"token": row.id},
            scopes=",".join(wanted),
        )
        return IssuedToken(
            id=row.id,
            name=name,
            token=token,
            scopes=tuple(wanted),
            created_at=now,
            expires_at=row.expires_at,
        )

    @staticmethod
    def _token_info(r: ApiTokenRow) -> TokenInfo:
        return TokenInfo(
            id=r.id,
            staff_id=r.staff_id,
            name=r.name,
            scopes=tuple(r.scopes),
            created_at=r.created_at,
            expires_at=r.expires_at,
            last_used_at=r.last_used_at,
            revoked_at=r.revoked_at,
        )

    async def list_tokens(self, principal: Principal) -> list[TokenInfo]:
        """The signed-in person's API tokens (never the tokens themselves)."""
        self._needs_session(principal)
        async with self._sessions() as s:
            rows = await s.scalars(
                select(ApiTokenRow)
                .where(ApiTokenRow.staff_id == principal.actor.staff_id)
                .order_by(ApiTokenRow.created_at)
            )
            return [self._token_info(r) for r in rows]

    async def revoke_token(self, principal: Principal, token_id: str) -> TokenInfo:
        """Revoke one's own token (or, with ``staff.manage``, anyone's in the organisation)."""
        self._needs_session(principal)
        actor = principal.actor
        async with self._sessions() as s, s.begin():
            row = await s.get(ApiTokenRow, token_id)
            if row is None or row.org_id != actor.org_id:
                raise NotFoundError("no such API token")
            if row.staff_id != actor.staff_id:
                await self._require(actor, Permission.MANAGE_STAFF, "token.revoked", row.staff_id)
            if row.revoked_at is None:
                row.revoked_at = self.now()
            info = self._token_info(row)
        await self._audit("token.revoked", actor, actor.org_id, {"token": token_id})
        return info

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


__all__ = [
    "AccountLocked",
    "Accounts",
    "SessionInvalid",
    "SignInFailed",
    "SlowDown",
    "TotpEnrolmentRequired",
    "WrongCode",
    "WrongPassword",
]
