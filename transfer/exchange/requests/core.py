"""The requests' plumbing (settings, rows, audit, chronology, alerts) and their reading.

:class:`TransferRequestsCore` is the base of the parts that
:class:`transfer.exchange.requests.TransferRequests` joins."""

from __future__ import annotations

import builtins
import logging
from datetime import datetime, timedelta
from typing import Any, Literal
from uuid import UUID

import sqlalchemy as sa

from transfer.alerts import Alerts
from transfer.config import Config
from transfer.errors import (
    HandoverError,
    NotFoundError,
)
from transfer.exchange import backoff
from transfer.exchange.requests.models import (
    DirectoryLookup,
    LeaverFileQueue,
    PeerJsonClient,
    Side,
    TransferRequestRecord,
    alert_key,
)
from transfer.exchange.tables import transfer_requests as _t
from transfer.store.permissions import Actor, Permission, PermissionDenied
from transfer.store.service import Store
from transfer.store.tables import Pupil

log = logging.getLogger("handover.requests")


class TransferRequestsCore:
    """The state and plumbing the parts of :class:`TransferRequests` share."""

    def __init__(
        self,
        *,
        store: Store,
        outbox: LeaverFileQueue,
        client: PeerJsonClient,
        directory: DirectoryLookup,
        alerts: Alerts,
        config: Config,
        lease_seconds: float = 120.0,
        uniform: backoff.Uniform | None = None,
    ) -> None:
        self.store = store
        self.outbox = outbox
        self.client = client
        self.directory = directory
        self.alerts = alerts
        self.config = config
        self.lease = timedelta(seconds=lease_seconds)
        self._uniform = uniform

    # ------------------------------------------------------------------ plumbing

    def _now(self) -> datetime:
        return self.store.now()

    async def _name(self, org_id: str) -> str:
        try:
            entry = await self.directory.entry(org_id)
        except HandoverError:
            return org_id
        name = getattr(entry, "name", None)
        return f"{name} ({org_id})" if isinstance(name, str) and name else org_id

    async def _audit(
        self,
        action: str,
        actor: Actor | str,
        org_id: str,
        targets: dict[str, str],
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        await self.store.record_event(action, actor, org_id, targets, outcome, **detail)

    async def _require(
        self,
        actor: Actor,
        permissions: tuple[Permission, ...],
        action: str,
        targets: dict[str, str],
    ) -> None:
        if any(actor.has(p) for p in permissions):
            return
        await self._audit(action, actor, actor.org_id, targets, "refused")
        raise PermissionDenied(
            f"your role does not allow this ({' or '.join(p.value for p in permissions)}); "
            "ask your DSL"
        )

    async def _chronology(self, pupil_id: str | None, kind: str, summary: str, ref: str) -> None:
        """A line in our pupil's chronology; never fails the operation it describes."""
        if pupil_id is None:
            return
        try:
            await self.store.add_pupil_event(None, pupil_id, kind=kind, summary=summary, ref=ref)
        except HandoverError as err:
            log.warning("no chronology line for request %s: %s", ref, err.diagnostics())

    async def _alert(
        self, org_id: str, request_id: str, subject: str, message: str, pupil_id: str | None
    ) -> None:
        try:
            await self.alerts.notify(
                org_id,
                key=alert_key(request_id),
                level="info",
                subject=subject,
                message=message,
                pupil_id=pupil_id,
                ref=request_id,
            )
        except HandoverError as err:
            log.warning("no alert for request %s: %s", request_id, err.diagnostics())

    async def _row(self, request_id: str, org_id: str) -> Any:
        async with self.store.sessions() as s:
            return (
                await s.execute(
                    sa.select(_t).where(_t.c.request_id == request_id, _t.c.org_id == org_id)
                )
            ).first()

    async def _record(self, row: Any) -> TransferRequestRecord:
        matched: bool | None = None
        dob_matches: bool | None = None
        if row.side == "received":
            matched = row.pupil_id is not None
            if row.pupil_id is not None and row.dob is not None:
                async with self.store.sessions() as s:
                    ours = await s.scalar(sa.select(Pupil.dob).where(Pupil.id == row.pupil_id))
                dob_matches = ours == row.dob
        return TransferRequestRecord(
            request_id=row.request_id,
            org_id=row.org_id,
            side=row.side,
            requester_org_id=row.requester_org_id,
            holder_org_id=row.holder_org_id,
            upn=row.upn,
            dob=row.dob,
            surname=row.surname,
            forename=row.forename,
            note=row.note,
            pupil_id=row.pupil_id,
            matched=matched,
            dob_matches=dob_matches,
            state=row.state,
            reason=row.reason,
            package_id=row.package_id,
            created_by=row.created_by,
            created_at=row.created_at,
            updated_at=row.updated_at,
            decided_at=row.decided_at,
            decided_by=row.decided_by,
            outbound=row.outbound,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at,
            last_error=row.last_error,
        )

    async def _visible(self, actor: Actor, request_id: str, action: str) -> Any:
        await self._require(
            actor,
            (Permission.SEND_TRANSFER, Permission.RECEIVE_TRANSFER),
            action,
            {"request": request_id[:64]},
        )
        try:
            request_id = str(UUID(request_id))
        except ValueError:
            raise NotFoundError("there is no such transfer request (an id is a UUID)") from None
        row = await self._row(request_id, actor.org_id)
        if row is None:
            raise NotFoundError("there is no such transfer request in your organisation")
        return row

    # ------------------------------------------------------------ reading

    async def get(self, actor: Actor, request_id: str) -> TransferRequestRecord:
        row = await self._visible(actor, request_id, "request.read")
        return await self._record(row)

    async def list(
        self, actor: Actor, *, side: Side | None = None, open_only: bool = False
    ) -> builtins.list[TransferRequestRecord]:
        """The organisation's requests, newest first (``open_only``: still to be answered)."""
        await self._require(
            actor, (Permission.SEND_TRANSFER, Permission.RECEIVE_TRANSFER), "request.list", {}
        )
        query = sa.select(_t).where(_t.c.org_id == actor.org_id)
        if side is not None:
            query = query.where(_t.c.side == side)
        if open_only:
            query = query.where(_t.c.state.in_(("pending", "sent", "received", "authorising")))
        async with self.store.sessions() as s:
            rows = (await s.execute(query.order_by(_t.c.created_at.desc(), _t.c.request_id))).all()
        return [await self._record(r) for r in rows]
