"""The receipt-push sweep: send queued receipts (viewed, accepted, rejected) to the sender's node.

State lives in ``inbox_receipts``; the scheduler only wakes the sweep up.
Each due receipt is *leased* (its next attempt moved a few minutes ahead) in
a short transaction (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several
``serve`` processes never take the same one), then posted with
``PeerClient.request_json`` to ``POST /peer/v1/receipts`` with this node's
latest audit checkpoint. A process killed mid-push leaves the lease to run
out, and the receipt is pushed again (the sender records a receipt once).

A failure is retried with exponential back-off and full jitter
(:mod:`transfer.exchange.backoff`, ``transfer.retry_base_seconds`` and
``retry_max_seconds``); after ``transfer.give_up_hours`` of failing the
receipt is marked failed (the sender can still pull it, ``GET
/peer/v1/packages/{id}/receipts``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from transfer.audit.log import AuditLog
from transfer.config import Config
from transfer.errors import HandoverError, TransportError
from transfer.exchange.backoff import next_attempt_at, should_give_up
from transfer.exchange.tables import (
    PUSH_DONE,
    PUSH_FAILED,
    PUSH_PENDING,
    IncomingPackage,
    IssuedReceipt,
)
from transfer.store.db import is_sqlite, sessionmaker
from transfer.store.service import Store

__all__ = ["LEASE", "PeerJsonClient", "ReceiptPusher"]

log = logging.getLogger("handover.receipt_push")

#: How long a claimed receipt is left to the process that claimed it.
LEASE = timedelta(minutes=5)
RECEIPTS_PATH = "/peer/v1/receipts"


class PeerJsonClient(Protocol):
    """``transfer.transport.base.PeerTransport``, as far as this sweep uses it."""

    async def request_json(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...


@dataclass(frozen=True)
class _Due:
    receipt_id: str
    package_id: str
    kind: str
    data: bytes
    attempts: int
    issued_at: datetime
    from_org: str
    to_org: str


class ReceiptPusher:
    """Pushes issued receipts back to the senders' nodes."""

    def __init__(
        self,
        *,
        store: Store,
        client: PeerJsonClient,
        config: Config,
        audit_log: AuditLog | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.client = client
        self.config = config
        self.audit_log = audit_log
        self._sessions: async_sessionmaker[AsyncSession] = sessionmaker(store.engine)
        self._clock = clock or store.now
        self._sqlite = is_sqlite(str(store.engine.url))

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    async def _claim(self, limit: int) -> list[_Due]:
        now = self.now()
        async with self._sessions() as s, s.begin():
            q = (
                select(
                    IssuedReceipt, IncomingPackage.recipient_org_id, IncomingPackage.sender_org_id
                )
                .join(IncomingPackage, IncomingPackage.id == IssuedReceipt.package_id)
                .where(
                    IssuedReceipt.push_state == PUSH_PENDING,
                    or_(
                        IssuedReceipt.next_attempt_at.is_(None),
                        IssuedReceipt.next_attempt_at <= now,
                    ),
                )
                .order_by(IssuedReceipt.next_attempt_at, IssuedReceipt.id)
                .limit(limit)
            )
            if not self._sqlite:
                q = q.with_for_update(skip_locked=True, of=IssuedReceipt)
            rows = (await s.execute(q)).all()
            due: list[_Due] = []
            for receipt, from_org, to_org in rows:
                # The lease: another sweep skips it until it runs out.
                result = await s.execute(
                    update(IssuedReceipt)
                    .where(
                        IssuedReceipt.id == receipt.id,
                        IssuedReceipt.push_state == PUSH_PENDING,
                        IssuedReceipt.next_attempt_at == receipt.next_attempt_at,
                    )
                    .values(next_attempt_at=now + LEASE)
                )
                if getattr(result, "rowcount", 0) != 1:
                    continue
                due.append(
                    _Due(
                        receipt.id,
                        receipt.package_id,
                        receipt.kind,
                        bytes(receipt.data),
                        receipt.attempts,
                        receipt.issued_at,
                        from_org,
                        to_org,
                    )
                )
        return due

    async def push_due(self, *, limit: int = 20) -> int:
        """Push what is due; how many receipts reached their sender's node."""
        pushed = 0
        for item in await self._claim(limit):
            if await self._push(item):
                pushed += 1
        return pushed

    async def _push(self, item: _Due) -> bool:
        targets = {"package": item.package_id, "receipt": item.receipt_id}
        try:
            checkpoint = None
            if self.audit_log is not None:
                checkpoint = (await self.audit_log.for_peer(None)).to_json()
            body = {"receipt": json.loads(item.data), "checkpoint": checkpoint}
            await self.client.request_json(item.from_org, item.to_org, "POST", RECEIPTS_PATH, body)
        except HandoverError as err:
            await self._failed(item, err)
            return False
        now = self.now()
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(IssuedReceipt)
                .where(IssuedReceipt.id == item.receipt_id)
                .values(
                    push_state=PUSH_DONE,
                    pushed_at=now,
                    attempts=item.attempts + 1,
                    last_error=None,
                    next_attempt_at=None,
                )
            )
        await self.store.record_event(
            "receipt.pushed",
            None,
            item.from_org,
            targets,
            kind=item.kind,
            to=item.to_org,
            attempts=item.attempts + 1,
        )
        return True

    async def _failed(self, item: _Due, err: HandoverError) -> None:
        now = self.now()
        attempts = item.attempts + 1
        give_up = should_give_up(item.issued_at, now, self.config.transfer.give_up_hours)
        reason = f"{err.slug}: {err.diagnostics()}"[:500]
        values: dict[str, Any] = {"attempts": attempts, "last_error": reason}
        if give_up:
            values.update(push_state=PUSH_FAILED, next_attempt_at=None)
        else:
            values["next_attempt_at"] = next_attempt_at(
                now,
                attempts,
                base=self.config.transfer.retry_base_seconds,
                cap=self.config.transfer.retry_max_seconds,
            )
        async with self._sessions() as s, s.begin():
            await s.execute(
                update(IssuedReceipt).where(IssuedReceipt.id == item.receipt_id).values(**values)
            )
        level = logging.WARNING if isinstance(err, TransportError) else logging.ERROR
        log.log(
            level,
            "receipt %s for package %s not pushed to %s (attempt %d): %s",
            item.receipt_id,
            item.package_id,
            item.to_org,
            attempts,
            err.slug,
        )
        await self.store.record_event(
            "receipt.pushed",
            None,
            item.from_org,
            {"package": item.package_id, "receipt": item.receipt_id},
            outcome="failed",
            kind=item.kind,
            to=item.to_org,
            attempts=attempts,
            reason=err.slug,
            gave_up=give_up,
        )
