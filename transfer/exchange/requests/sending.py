"""Sending what this node owes the other (a request or a decision): a leased sweep with
exponential back-off until ``transfer.give_up_hours``."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from transfer.errors import (
    HandoverError,
    TransportError,
)
from transfer.exchange import backoff
from transfer.exchange.requests.core import TransferRequestsCore
from transfer.exchange.requests.models import (
    PEER_PATH,
    _rowcount,
    _short,
)
from transfer.exchange.tables import transfer_requests as _t
from transfer.states.request import REQUEST
from transfer.states.request import RequestEvent as On

log = logging.getLogger("handover.requests")


class Sending(TransferRequestsCore):
    """The sweep that sends requests and decisions."""

    # ------------------------------------------------------------ sending

    def _body(self, row: Any) -> tuple[str, str, str, dict[str, Any]]:
        """(from org, to org, path, body) of what ``row`` owes the other node."""
        if row.outbound == "request":
            return (
                row.requester_org_id,
                row.holder_org_id,
                PEER_PATH,
                {
                    "request_id": row.request_id,
                    "requester_org_id": row.requester_org_id,
                    "holder_org_id": row.holder_org_id,
                    "upn": row.upn,
                    "dob": row.dob.isoformat() if row.dob else None,
                    "surname": row.surname,
                    "forename": row.forename,
                    "note": row.note,
                },
            )
        return (
            row.holder_org_id,
            row.requester_org_id,
            f"{PEER_PATH}/{row.request_id}/decision",
            {"decision": row.state, "reason": row.reason, "package_id": row.package_id},
        )

    async def _claim(self, request_id: str, org_id: str, now: datetime) -> bool:
        async with self.store.sessions() as s, s.begin():
            result = await s.execute(
                sa.update(_t)
                .where(
                    _t.c.request_id == request_id,
                    _t.c.org_id == org_id,
                    _t.c.outbound.is_not(None),
                    sa.or_(_t.c.lease_until.is_(None), _t.c.lease_until < now),
                )
                .values(lease_until=now + self.lease)
            )
        return _rowcount(result) == 1

    async def send_due(self, *, limit: int = 20) -> int:
        """Sweep: send every request or decision that is due. Returns how many went."""
        now = self._now()
        async with self.store.sessions() as s:
            due = (
                await s.execute(
                    sa.select(_t.c.request_id, _t.c.org_id)
                    .where(
                        _t.c.outbound.is_not(None),
                        _t.c.next_attempt_at <= now,
                        sa.or_(_t.c.lease_until.is_(None), _t.c.lease_until < now),
                    )
                    .order_by(_t.c.next_attempt_at)
                    .limit(limit)
                )
            ).all()
        sent = 0
        for request_id, org_id in due:
            if await self.send_one(request_id, org_id):
                sent += 1
        return sent

    async def send_one(self, request_id: str, org_id: str) -> bool:
        """Send what this row owes now (if no other process is); True if the peer took it."""
        now = self._now()
        if not await self._claim(request_id, org_id, now):
            return False
        row = await self._row(request_id, org_id)
        if row is None or row.outbound is None:  # pragma: no cover - answered meanwhile
            return False
        from_org, to_org, path, body = self._body(row)
        kind = row.outbound
        action = "request.sent" if kind == "request" else "request.decision.sent"
        targets = {"request": request_id, "peer": to_org}
        try:
            await self.client.request_json(from_org, to_org, "POST", path, body)
        except TransportError as err:
            attempt = row.attempts + 1
            started = row.created_at if kind == "request" else (row.decided_at or row.created_at)
            if backoff.should_give_up(started, self._now(), self.config.transfer.give_up_hours):
                await self._failed(row, kind, action, targets, err)
                return False
            kwargs: dict[str, Any] = {}
            if self._uniform is not None:
                kwargs["uniform"] = self._uniform
            next_at = backoff.next_attempt_at(
                self._now(),
                attempt,
                base=self.config.transfer.retry_base_seconds,
                cap=self.config.transfer.retry_max_seconds,
                **kwargs,
            )
            async with self.store.sessions() as s, s.begin():
                await s.execute(
                    sa.update(_t)
                    .where(_t.c.request_id == request_id, _t.c.org_id == org_id)
                    .values(
                        attempts=attempt,
                        next_attempt_at=next_at,
                        lease_until=None,
                        last_error=_short(err.diagnostics()),
                    )
                )
            log.info(
                "%s %s not sent yet (%s); next try at %s",
                kind,
                request_id,
                err.diagnostics(),
                next_at.isoformat(),
            )
            return False
        except HandoverError as err:
            await self._failed(row, kind, action, targets, err)
            return False
        done = self._now()
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                sa.update(_t)
                .where(_t.c.request_id == request_id, _t.c.org_id == org_id, _t.c.outbound == kind)
                .values(
                    outbound=None,
                    lease_until=None,
                    last_error=None,
                    updated_at=done,
                    attempts=row.attempts + 1,
                )
            )
            if kind == "request":
                sources, target = REQUEST.update(On.HANDED_OVER)
                await s.execute(
                    sa.update(_t)
                    .where(
                        _t.c.request_id == request_id,
                        _t.c.org_id == org_id,
                        _t.c.state.in_([x.value for x in sources]),
                    )
                    .values(state=target.value)
                )
        await self._audit(action, "node", org_id, targets)
        if kind == "request":
            holder = await self._name(to_org)
            await self._chronology(
                row.pupil_id,
                "transfer.request.sent",
                f"Asked {holder} for this pupil's child-protection file",
                request_id,
            )
        return True

    async def _failed(
        self, row: Any, kind: str, action: str, targets: dict[str, str], err: HandoverError
    ) -> None:
        """The other node refused (or never answered in time): stop trying, tell the DSL."""
        reason = _short(err.diagnostics())
        values: dict[str, Any] = {
            "outbound": None,
            "lease_until": None,
            "last_error": reason,
            "updated_at": self._now(),
            "attempts": row.attempts + 1,
        }
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                sa.update(_t)
                .where(_t.c.request_id == row.request_id, _t.c.org_id == row.org_id)
                .values(**values)
            )
            if kind == "request":
                sources, target = REQUEST.update(On.GIVE_UP)
                await s.execute(
                    sa.update(_t)
                    .where(
                        _t.c.request_id == row.request_id,
                        _t.c.org_id == row.org_id,
                        _t.c.state.in_([x.value for x in sources]),
                    )
                    .values(state=target.value)
                )
        await self._audit(action, "node", row.org_id, targets, "failed", reason=err.slug)
        log.warning("%s %s could not be sent: %s", kind, row.request_id, reason)
        what = "transfer request" if kind == "request" else "answer to a transfer request"
        await self._alert(
            row.org_id,
            row.request_id,
            f"A {what} could not be delivered",
            f"Handover could not deliver your {what} {row.request_id} to "
            f"{await self._name(targets['peer'])}: {reason[:400]}",
            row.pupil_id,
        )
