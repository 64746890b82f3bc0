"""The store's plumbing, shared by every part of :class:`transfer.store.service.Store`:
the engine and its sessions, the clock, one :class:`KeyRing` per call, the audit sink
(entries and intents) and the listeners told of committed changes.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from sqlalchemy import delete
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from keys import aead
from schemas.auditing import AuditEvent, AuditSink, IntentSink, Outcome, event_to_json
from transfer.audit.tables import audit_intents
from transfer.errors import ConflictError, InputError
from transfer.space import SpaceWatch
from transfer.store._common import _Sealed, log
from transfer.store.changes import StoreChange, StoreListener
from transfer.store.db import sessionmaker
from transfer.store.keyring import KeyDestroyed, KeyRing
from transfer.store.permissions import Actor, Permission, PermissionDenied, audit_actor, require
from transfer.store.tables import SealedField
from transfer.wording import plural

Clock = Callable[[], datetime]

#: How far ahead of this node's clock a reported time may be (another device's clock).
FUTURE_ALLOWANCE: Final = timedelta(minutes=5)

DEFAULT_MAX_DOCUMENT_BYTES: Final = 2 * 1024**3


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class AuditIntent:
    """An audit entry promised in a transaction (:meth:`Store.intend`), to :meth:`Store.settle`."""

    id: str
    event: AuditEvent
    at: datetime


class StoreBase:
    """The store's state and plumbing; the parts of the store build on it."""

    def __init__(
        self,
        engine: AsyncEngine,
        kek: bytes,
        audit: AuditSink,
        *,
        data_dir: Path,
        clock: Clock | None = None,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    ) -> None:
        if len(kek) != aead.KEY_SIZE:
            raise ValueError("the key-encryption key must be 32 bytes")
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = sessionmaker(engine)
        self._kek = kek
        self._audit_sink = audit
        self.data_dir = data_dir
        self.documents_dir = data_dir / "documents"
        self._clock = clock or utc_now
        self.max_document_bytes = max_document_bytes
        #: Whether this node ran out of storage space lately (``transfer.space``): the faces
        #: note each refusal here, the scheduler alerts the DSL teams.
        self.space = SpaceWatch()
        #: Called after a change is committed and audited (``transfer.store.changes``):
        #: the node wires the DSL team's alerts here; the store holds no alert logic.
        self.listeners: list[StoreListener] = []

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------- plumbing

    def now(self) -> datetime:
        value = self._clock()
        if value.tzinfo is None:
            raise ValueError("the store's clock must return an aware datetime")
        return value.astimezone(UTC)

    def _check_not_future(self, when: datetime, what: str) -> None:
        """Refuse a time of something that happened which is later than now (beyond the
        small allowance for clocks that disagree): a mistyped year, or a.m. for p.m."""
        if when > self.now() + FUTURE_ALLOWANCE:
            minutes = int(FUTURE_ALLOWANCE.total_seconds() // 60)
            raise InputError(
                f"{what} is dated in the future ({when.astimezone(UTC):%Y-%m-%d %H:%M} UTC); "
                f"give the time it happened (at most {plural(minutes, 'minute')} ahead of "
                "this node's clock)"
            )

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        """A session in one write transaction; a constraint violation is a conflict."""
        try:
            async with self.sessions() as s, s.begin():
                yield s
        except sa_exc.IntegrityError:
            raise ConflictError(
                "the records changed while this was being saved (another change or an "
                "erasure came first); reload and try again"
            ) from None

    def _ring(self) -> KeyRing:
        return KeyRing(self._kek)

    async def _audit(
        self,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str] | None = None,
        outcome: Outcome = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        who: str | None
        if not isinstance(actor, Actor):
            who = actor
        else:
            # The operator acting for someone is recorded as the operator, never as them.
            who, kind = audit_actor(actor)
            detail = {**detail, **kind}
        await self._audit_sink.record(
            AuditEvent(
                action=action,
                actor=who,
                org=org,
                targets=dict(targets or {}),
                outcome=outcome,
                detail=dict(detail),
            )
        )

    #: The store's audit door for other areas acting on its records (packaging).
    record_event = _audit

    async def intend(
        self,
        session: AsyncSession,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str] | None = None,
        outcome: Outcome = "ok",
        **detail: str | int | bool | None,
    ) -> AuditIntent:
        """Promise an audit entry in ``session``'s transaction (the change it records).

        The intent row commits (or rolls back) with the change; :meth:`settle` then
        appends the entry and deletes the row together. A process killed in between
        leaves the row, and the entry is appended when the log replays it (``serve``
        at start-up and on its sweeps): a committed change never lacks its entry
        (``docs/reliability.md``, ``docs/adr/0011-audit-intents.md``).
        """
        who: str | None
        if not isinstance(actor, Actor):
            who = actor
        else:
            who, kind = audit_actor(actor)
            detail = {**detail, **kind}
        event = AuditEvent(
            action=action,
            actor=who,
            org=org,
            targets=dict(targets or {}),
            outcome=outcome,
            detail=dict(detail),
        )
        intent = AuditIntent(str(uuid.uuid4()), event, self.now())
        await session.execute(
            audit_intents.insert().values(
                id=intent.id, event=event_to_json(event), created_at=intent.at
            )
        )
        return intent

    async def settle(self, *intents: AuditIntent) -> None:
        """Append the entries promised by committed intents (each once), in order."""
        sink = self._audit_sink
        for intent in intents:
            if isinstance(sink, IntentSink) and await sink.record_intent(
                intent.event, intent.id, intent.at
            ):
                continue
            # A sink without intents (tests' MemoryAudit): record, then drop the row.
            await sink.record(intent.event)
            async with self.sessions() as s, s.begin():
                await s.execute(audit_intents.delete().where(audit_intents.c.id == intent.id))

    async def _leaving_changed(self, actor: Actor, pupil_ids: tuple[str, ...]) -> None:
        await self._changed(StoreChange("pupil.leaving", actor.org_id, pupil_ids, actor=actor))

    async def _changed(self, change: StoreChange) -> None:
        """Tell the listeners; one that fails is logged, and the change stands."""
        for listener in list(self.listeners):
            try:
                await listener(change)
            except Exception:
                log.exception(
                    "a listener failed after %s in %s (the change is saved; the next sweep "
                    "catches up)",
                    change.kind,
                    change.org_id,
                )

    async def seal_notes(
        self, table: str, record_id: str, pupil_id: str, fields: dict[str, str]
    ) -> None:
        """Keep text another area holds about a pupil sealed under the pupil's data key.

        For words a person typed that may carry safeguarding detail (the reason a
        file was sent again): never a plain column. Erasing the pupil erases them.
        """
        ring = self._ring()
        async with self._writing() as s:
            await s.execute(
                delete(SealedField).where(
                    SealedField.record_table == table,
                    SealedField.record_id == record_id,
                    SealedField.pupil_id == pupil_id,
                    SealedField.field.in_(list(fields)),
                )
            )
            await _Sealed(s, ring).put(table, record_id, [pupil_id], fields)

    async def open_notes(self, table: str, record_id: str, pupil_id: str) -> dict[str, str]:
        """The notes :meth:`seal_notes` kept; empty when there are none or the pupil is erased."""
        ring = self._ring()
        async with self.sessions() as s:
            try:
                return await _Sealed(s, ring).one(table, record_id, pupil_id)
            except KeyDestroyed:
                return {}

    async def _require(
        self, actor: Actor, permission: Permission, action: str, targets: dict[str, str]
    ) -> None:
        try:
            require(actor, permission)
        except PermissionDenied:
            await self._audit(action, actor, actor.org_id, targets, "refused")
            raise

    async def _refuse(self, actor: Actor, action: str, targets: dict[str, str]) -> None:
        await self._audit(action, actor, actor.org_id, targets, "refused")

    def _blob_dir(self, org_id: str, pupil_id: str) -> Path:
        """Where a pupil's document files are (documents, erasure, export, upgrade)."""
        return self.documents_dir / org_id / pupil_id
