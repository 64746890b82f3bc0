"""The plumbing shared by the parts of the accounts service (``transfer.auth.service``)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from keys import aead
from schemas.auditing import AuditEvent, AuditSink, Outcome
from transfer.auth import codes
from transfer.auth.overview import AccountOverview
from transfer.auth.passwords import INTERACTIVE, HashingCost, hash_password, verify_password
from transfer.auth.records import Principal
from transfer.auth.tables import Credential, SessionRow
from transfer.config import SecuritySection
from transfer.errors import NotFoundError
from transfer.store.permissions import Actor, Permission, PermissionDenied, audit_actor, require
from transfer.store.service import Store
from transfer.store.tables import Staff

if TYPE_CHECKING:
    from transfer.auth.approvals import StaffApprovals
    from transfer.auth.invitations import StaffInvitations

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return str(uuid.uuid4())


def fingerprint(text: str) -> str:
    """A short hash of an unverified username for the audit log (never the text itself)."""
    return hashlib.sha256(b"handover:audit-username:v1:" + text.encode()).hexdigest()[:16]


class AccountsBase:
    """What every part of :class:`~transfer.auth.service.Accounts` shares: the store, the
    key-encryption key, the audit sink, the clock, hashing, and the small helpers."""

    #: Account changes held back by the two-person rule (``transfer.auth.approvals``).
    approvals: StaffApprovals
    #: One-time invitation links and the administrator's list (``transfer.auth.invitations``).
    invitations: StaffInvitations
    #: The operator's read-only view of accounts (``transfer.auth.overview``).
    overview: AccountOverview

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
    ) -> None:
        if len(kek) != aead.KEY_SIZE:
            raise ValueError("the key-encryption key must be 32 bytes")
        self.store = store
        self._kek = kek
        self._audit_sink = audit
        self.security = security
        self._clock = clock or utc_now
        self.hashing = hashing
        self.issuer = issuer
        self._dummy_hash: str | None = None
        #: At most this many Argon2id computations at once (each takes its memory limit).
        self._hash_slots = asyncio.Semaphore(4)

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

    @staticmethod
    def _targets(staff_id: str | None) -> dict[str, str]:
        return {"staff": staff_id} if staff_id else {}

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


__all__ = ["AccountsBase", "Clock"]
