"""The outbox's plumbing (its settings, rows, audit and chronology) and its reading.

:class:`OutboxCore` is the base of the queue, delivery and receipts parts that
:class:`transfer.exchange.outbox.Outbox` joins."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import logging
import os
import socket
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from sqlalchemy import Insert, Select, delete, insert, select

from schemas.manifest import PackageKind
from transfer.config import Config
from transfer.errors import (
    HandoverError,
    InputError,
    NotFoundError,
)
from transfer.exchange import backoff
from transfer.exchange.outbox.records import (
    _LABELS,
    OUTGOING_DIR,
    REASON_FIELD,
    REASON_TABLE,
    STATES,
    EventRow,
    OutboxDirectory,
    OutgoingRecord,
    PackageRow,
    ReceiptListener,
    ReceiptRow,
    _crashed_draft,
    _p,
    _permission_for,
    _short,
    _to_record,
)
from transfer.exchange.tables import (
    outgoing_events,
    outgoing_pupils,
    outgoing_receipts,
)
from transfer.store.db import is_sqlite
from transfer.store.permissions import Actor, PermissionDenied, require
from transfer.store.tables import SealedField
from transfer.transport.base import PeerTransport

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from keys.keyfiles import KeyFiles
    from transfer.store.base import AuditIntent
    from transfer.store.service import Store


log = logging.getLogger("handover.outbox")


class OutboxCore:
    """The state and plumbing every part of the outbox shares (see :class:`Outbox`)."""

    def __init__(
        self,
        *,
        store: Store,
        keys: KeyFiles,
        directory: OutboxDirectory,
        client: PeerTransport,
        config: Config,
        data_dir: Path | None = None,
        worker_id: str | None = None,
        lease_seconds: float = 120.0,
        uniform: backoff.Uniform | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.directory = directory
        self.client = client
        self.config = config
        self.outgoing_dir = (data_dir or store.data_dir) / OUTGOING_DIR
        self.worker_id = (
            worker_id or f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        )
        self.lease = timedelta(seconds=lease_seconds)
        self._uniform = uniform
        self._sqlite = is_sqlite(str(store.engine.url))
        #: Called after a receipt is verified and recorded (referrals follow their packages).
        self.on_receipt: list[ReceiptListener] = []
        #: Bytes of package data sent by this process (for tests and benchmarks).
        self.bytes_sent = 0

    # ---------------------------------------------------------------- plumbing

    def _now(self) -> datetime:
        return self.store.now()

    def path_of(self, package_id: str) -> Path:
        """Where the package's ciphertext is kept while it is sent."""
        return self.outgoing_dir / f"{UUID(package_id)}.age"

    def _delay(self, attempt: int, base: float | None = None) -> datetime:
        t = self.config.transfer
        kwargs: dict[str, Any] = {"uniform": self._uniform} if self._uniform else {}
        return backoff.next_attempt_at(
            self._now(),
            attempt,
            base=base or t.retry_base_seconds,
            cap=t.retry_max_seconds,
            **kwargs,
        )

    async def _audit(
        self,
        action: str,
        actor: Actor | None,
        row: PackageRow,
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        pupils: Sequence[str] = row.pupils
        targets = {"package": row.id, "recipient": row.to_org_id}
        if pupils:
            targets["pupil"] = pupils[0]
            if len(pupils) > 1:
                detail["pupils"] = len(pupils)
        await self.store.record_event(
            action, actor, row.org_id, targets, outcome, kind=row.kind, **detail
        )

    async def _intend(
        self,
        session: AsyncSession,
        action: str,
        actor: Actor | None,
        row: PackageRow,
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> AuditIntent:
        """The audit entry of a change (as :meth:`_audit`), promised in the change's own
        transaction: committed with it, appended by :meth:`Store.settle` or on replay."""
        pupils: Sequence[str] = row.pupils
        targets = {"package": row.id, "recipient": row.to_org_id}
        if pupils:
            targets["pupil"] = pupils[0]
            if len(pupils) > 1:
                detail["pupils"] = len(pupils)
        return await self.store.intend(
            session, action, actor, row.org_id, targets, outcome, kind=row.kind, **detail
        )

    async def _chronology(
        self,
        actor: Actor | None,
        pupil_ids: Sequence[str],
        event: str,
        summary: str,
        package_id: str,
        at: datetime,
    ) -> None:
        for pupil_id in pupil_ids:
            try:
                await self.store.add_pupil_event(
                    actor,
                    pupil_id,
                    kind=f"transfer.{event}",
                    summary=summary,
                    ref=package_id,
                    at=at,
                )
            except HandoverError as exc:
                # An erased pupil has no chronology left to add to; the outbox row still says it.
                log.warning(
                    "package %s: no chronology line for pupil %s (%s)",
                    package_id,
                    pupil_id,
                    exc.slug,
                )

    async def _row(self, package_id: str) -> PackageRow | None:
        async with self.store.sessions() as s:
            row = (await s.execute(select(_p).where(_p.c.id == package_id))).first()
            if row is None:
                return None
            pupils = (
                (
                    await s.execute(
                        select(outgoing_pupils.c.pupil_id)
                        .where(outgoing_pupils.c.package_id == package_id)
                        .order_by(outgoing_pupils.c.pupil_id)
                    )
                )
                .scalars()
                .all()
            )
        return PackageRow.of(row, tuple(pupils))

    async def _held(self, package_id: str) -> PackageRow:
        """The package's row, which this process has just read or written (it is there)."""
        row = await self._row(package_id)
        if row is None:
            raise NotFoundError(f"outgoing package {package_id} is gone")
        return row

    async def _row_for(self, actor: Actor, package_id: str) -> PackageRow:
        try:
            package_id = str(UUID(package_id))
        except ValueError:
            raise InputError("a package id is a UUID") from None
        row = await self._row(package_id)
        if row is None or row.org_id != actor.org_id:
            raise NotFoundError("no such outgoing package in your organisation")
        return row

    async def _require(self, actor: Actor, kind: str, action: str, targets: dict[str, str]) -> None:
        try:
            require(actor, _permission_for(kind))
        except PermissionDenied:
            await self.store.record_event(action, actor, actor.org_id, targets, "refused")
            raise

    def _event(
        self,
        package_id: str,
        event: str,
        state: str,
        at: datetime,
        actor: Actor | None = None,
        detail: str | None = None,
    ) -> Insert:
        return insert(outgoing_events).values(
            package_id=package_id,
            at=at,
            event=event,
            state=state,
            actor=actor.staff_id if actor else None,
            detail=_short(detail) if detail else None,
        )

    async def _drop_draft(self, package_id: str, tmp: Path | None) -> bool:
        """Remove a draft (its rows, its sealed reason, its temporary file); False if the
        package is no longer a draft (it was queued meanwhile: nothing is removed)."""
        if tmp is not None:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(tmp.unlink, True)
        async with self.store.sessions() as s, s.begin():
            still = await s.execute(
                select(_p.c.id).where(_p.c.id == package_id, _p.c.state == "draft")
            )
            if still.first() is None:
                return False
            await s.execute(
                delete(SealedField).where(
                    SealedField.record_table == REASON_TABLE, SealedField.record_id == package_id
                )
            )
            await s.execute(
                delete(outgoing_events).where(outgoing_events.c.package_id == package_id)
            )
            await s.execute(
                delete(outgoing_pupils).where(outgoing_pupils.c.package_id == package_id)
            )
            await s.execute(delete(_p).where(_p.c.id == package_id, _p.c.state == "draft"))
        return True

    async def discard_stale_drafts(self, *, package_id: str | None = None) -> int:
        """Remove drafts left by a process killed while building (and their temp files).

        A draft is left when its builder is gone (:func:`_crashed_draft`): ``serve`` runs
        this at start-up and on each delivery sweep, and ``send`` for one that blocks it.
        Each removal is audited (``transfer.queued``, outcome ``failed``, reason
        ``interrupted``). Returns how many were removed (of ``package_id`` alone if given).
        """
        query = select(_p).where(_crashed_draft(self._now()))
        if package_id is not None:
            query = query.where(_p.c.id == package_id)
        async with self.store.sessions() as s:
            rows = [PackageRow.of(r) for r in (await s.execute(query)).all()]
        removed = 0
        for row in rows:
            if not await self._drop_draft(row.id, self.outgoing_dir / f"{row.id}.age.tmp"):
                continue
            removed += 1
            log.warning("removed the unfinished draft package %s (its build was cut short)", row.id)
            await self.store.record_event(
                "transfer.queued",
                None,
                row.org_id,
                {"package": row.id, "recipient": row.to_org_id},
                "failed",
                kind=row.kind,
                reason="interrupted",
            )
        return removed

    # ------------------------------------------------------------------- reading

    async def _record(self, row: PackageRow) -> OutgoingRecord:
        reason = None
        if row.reasons_needed and row.pupils:
            notes = await self.store.open_notes(REASON_TABLE, row.id, row.pupils[0])
            reason = notes.get(REASON_FIELD)
        async with self.store.sessions() as s:
            events = (
                await s.execute(
                    select(outgoing_events)
                    .where(outgoing_events.c.package_id == row.id)
                    .order_by(outgoing_events.c.id)
                )
            ).all()
            held = (
                await s.execute(
                    select(outgoing_receipts)
                    .where(outgoing_receipts.c.package_id == row.id)
                    .order_by(outgoing_receipts.c.issued_at, outgoing_receipts.c.receipt_id)
                )
            ).all()
        return _to_record(
            row, [EventRow.of(e) for e in events], [ReceiptRow.of(r) for r in held], reason
        )

    async def get(self, actor: Actor, package_id: str) -> OutgoingRecord:
        """One outgoing package of the actor's organisation: state, events, receipts."""
        row = await self._row_for(actor, package_id)
        await self._require(actor, row.kind, "transfer.read", {"package": row.id})
        return await self._record(row)

    async def list(
        self, actor: Actor, *, state: str | None = None, pupil_id: str | None = None
    ) -> builtins.list[OutgoingRecord]:
        """The organisation's outgoing packages the actor may see, newest first."""
        if state is not None and state not in STATES:
            raise InputError(f"unknown state {state[:20]!r}; states are: {', '.join(STATES)}")
        kinds = [k for k in _LABELS if actor.has(_permission_for(k))]
        if not kinds:
            await self._require(actor, "leaver_file", "transfer.read", {})
        query = select(_p).where(_p.c.org_id == actor.org_id, _p.c.kind.in_(kinds))
        if state is not None:
            query = query.where(_p.c.state == state)
        if pupil_id is not None:
            pupil_id = await self.store.pupil_id_for(actor, pupil_id)
            query = query.where(
                _p.c.id.in_(
                    select(outgoing_pupils.c.package_id).where(
                        outgoing_pupils.c.pupil_id == pupil_id
                    )
                )
            )
        return await self._records(
            query.order_by(_p.c.created_at.desc(), _p.c.id), with_reasons=True
        )

    async def _records(
        self, query: Select[Any], *, with_reasons: bool = False
    ) -> builtins.list[OutgoingRecord]:
        """The packages ``query`` selects, with pupils, events and receipts (and, with
        ``with_reasons``, the reason given for each, unsealed: for the people who read them)."""
        async with self.store.sessions() as s:
            rows = [PackageRow.of(r) for r in (await s.execute(query)).all()]
            ids = [r.id for r in rows]
            if not ids:
                return []
            pupils: dict[str, builtins.list[str]] = {}
            for pid, pupil in (
                await s.execute(
                    select(outgoing_pupils.c.package_id, outgoing_pupils.c.pupil_id)
                    .where(outgoing_pupils.c.package_id.in_(ids))
                    .order_by(outgoing_pupils.c.pupil_id)
                )
            ).all():
                pupils.setdefault(pid, []).append(pupil)
            events: dict[str, builtins.list[EventRow]] = {}
            for e in (
                await s.execute(
                    select(outgoing_events)
                    .where(outgoing_events.c.package_id.in_(ids))
                    .order_by(outgoing_events.c.id)
                )
            ).all():
                events.setdefault(e.package_id, []).append(EventRow.of(e))
            receipts: dict[str, builtins.list[ReceiptRow]] = {}
            for r in (
                await s.execute(
                    select(outgoing_receipts)
                    .where(outgoing_receipts.c.package_id.in_(ids))
                    .order_by(outgoing_receipts.c.issued_at, outgoing_receipts.c.receipt_id)
                )
            ).all():
                receipts.setdefault(r.package_id, []).append(ReceiptRow.of(r))
        reasons: dict[str, str | None] = {}
        for row in rows:
            held = pupils.get(row.id)
            if with_reasons and row.reasons_needed and held:
                notes = await self.store.open_notes(REASON_TABLE, row.id, held[0])
                reasons[row.id] = notes.get(REASON_FIELD)
        return [
            _to_record(
                dataclasses.replace(row, pupils=tuple(pupils.get(row.id, ()))),
                events.get(row.id, []),
                receipts.get(row.id, []),
                reasons.get(row.id),
            )
            for row in rows
        ]

    async def latest_for_pupil(
        self, org_id: str, pupil_id: str, kind: PackageKind = "leaver_file"
    ) -> OutgoingRecord | None:
        """The newest package of ``kind`` about the pupil from ``org_id`` (not drafts)."""
        query = (
            select(_p)
            .join(outgoing_pupils, outgoing_pupils.c.package_id == _p.c.id)
            .where(
                _p.c.org_id == org_id,
                _p.c.kind == kind,
                outgoing_pupils.c.pupil_id == pupil_id,
                _p.c.state != "draft",
            )
            .order_by(_p.c.created_at.desc(), _p.c.id)
            .limit(1)
        )
        found = await self._records(query)
        return found[0] if found else None

    async def sending_now(self, package_ids: Sequence[str]) -> set[str]:
        """Which of these queued packages a process is delivering right now (a live lease)."""
        if not package_ids:
            return set()
        async with self.store.sessions() as s:
            found = await s.scalars(
                select(_p.c.id).where(
                    _p.c.id.in_(list(package_ids)),
                    _p.c.state == "queued",
                    _p.c.claimed_by.is_not(None),
                    _p.c.lease_until > self._now(),
                )
            )
            return set(found.all())

    async def accepted_before(self, org_id: str, when: datetime) -> builtins.list[OutgoingRecord]:
        """Packages from ``org_id`` the receiver accepted before ``when`` (for retention)."""
        query = (
            select(_p)
            .where(_p.c.org_id == org_id, _p.c.state == "accepted", _p.c.state_changed_at < when)
            .order_by(_p.c.state_changed_at, _p.c.id)
        )
        return await self._records(query)
