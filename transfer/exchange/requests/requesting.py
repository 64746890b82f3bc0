"""The requesting school's side: ask for a pupil's file, take in the holder's decision."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import sqlalchemy as sa

from schemas.peer import MAX_NOTE, MAX_REASON, PeerDecision
from transfer.errors import (
    ConflictError,
    InputError,
    NotFoundError,
)
from transfer.exchange.requests.core import TransferRequestsCore
from transfer.exchange.requests.models import (
    TransferRequestRecord,
    _clean_text,
    _parse,
)
from transfer.exchange.tables import transfer_requests as _t
from transfer.states.request import REQUEST
from transfer.states.request import RequestEvent as On
from transfer.states.request import RequestState as St
from transfer.store.permissions import Actor, Permission


class RequestingSide(TransferRequestsCore):
    """Create requests; receive the decisions on them."""

    # ----------------------------------------------------- the requesting school

    async def create(
        self,
        actor: Actor,
        *,
        upn: str,
        from_org_id: str,
        note: str | None = None,
        via: str | None = None,
    ) -> TransferRequestRecord:
        """Ask ``from_org_id`` for the file of our pupil ``upn`` (queued to send at once)."""
        targets: dict[str, str] = {"holder": from_org_id[:64]}
        await self._require(actor, (Permission.RECEIVE_TRANSFER,), "request.created", targets)
        from_org_id = from_org_id.strip()
        if from_org_id == actor.org_id:
            raise InputError("a transfer request goes to the previous school, not your own")
        note = _clean_text(note, "note", MAX_NOTE)
        await self.directory.entry(from_org_id)  # the school must be in the directory
        pupil = await self.store.find_pupil(actor, upn)
        if pupil.upn is None:  # pragma: no cover - found by UPN, so it has one
            raise NotFoundError("no pupil with this UPN in your organisation")
        async with self.store.sessions() as s:
            open_one = (
                await s.execute(
                    sa.select(_t.c.request_id).where(
                        _t.c.org_id == actor.org_id,
                        _t.c.side == "sent",
                        _t.c.upn == pupil.upn,
                        _t.c.holder_org_id == from_org_id,
                        _t.c.state.in_((St.PENDING.value, St.SENT.value)),
                    )
                )
            ).first()
        if open_one is not None:
            raise ConflictError(
                f"this pupil's file has already been asked for from that school (request "
                f"{open_one[0]}); wait for its answer"
            )
        now = self._now()
        request_id = str(uuid.uuid4())
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                sa.insert(_t).values(
                    request_id=request_id,
                    org_id=actor.org_id,
                    side="sent",
                    requester_org_id=actor.org_id,
                    holder_org_id=from_org_id,
                    upn=pupil.upn,
                    dob=pupil.dob,
                    surname=pupil.surname,
                    forename=pupil.forename,
                    note=note,
                    pupil_id=pupil.id,
                    state=St.PENDING.value,
                    created_by=actor.staff_id,
                    created_at=now,
                    updated_at=now,
                    outbound="request",
                    attempts=0,
                    next_attempt_at=now,
                )
            )
        await self._audit(
            "request.created",
            actor,
            actor.org_id,
            {"request": request_id, "pupil": pupil.id, "holder": from_org_id},
            via=via,
        )
        row = await self._row(request_id, actor.org_id)
        return await self._record(row)

    async def receive_decision(
        self, sender_org_id: str, request_id: UUID, body: Mapping[str, Any]
    ) -> None:
        """The holder's answer to one of our requests (called by the peer server)."""
        data = _parse(PeerDecision, body, "transfer request decision")
        rid = str(request_id)
        reason = _clean_text(data.reason, "reason", MAX_REASON)
        if data.decision == "declined" and reason is None:
            raise InputError("a declined request must carry a reason")
        if data.decision == "authorised" and data.package_id is None:
            raise InputError("an authorised request must carry the package id of the file")
        package_id = str(data.package_id) if data.decision == "authorised" else None
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            row = (
                await s.execute(sa.select(_t).where(_t.c.request_id == rid, _t.c.side == "sent"))
            ).first()
            if row is None or row.holder_org_id != sender_org_id:
                raise NotFoundError("there is no such transfer request from this node to you")
            event = On.ANSWER_AUTHORISED if data.decision == "authorised" else On.ANSWER_DECLINED
            state = St(row.state)
            if REQUEST.is_final(state) or not REQUEST.can(state, event):
                if REQUEST.can(state, event) and row.package_id == package_id:
                    return  # the same answer again (a retry): nothing changes
                raise ConflictError(
                    f"this request was already answered ({row.state}); a different answer "
                    "cannot replace it"
                )
            sources, target = REQUEST.update(event)
            await s.execute(
                sa.update(_t)
                .where(
                    _t.c.request_id == rid,
                    _t.c.org_id == row.org_id,
                    _t.c.state.in_([x.value for x in sources]),
                )
                .values(
                    state=target.value,
                    reason=reason,
                    package_id=package_id,
                    decided_at=now,
                    updated_at=now,
                    outbound=None,
                    lease_until=None,
                    next_attempt_at=None,
                    last_error=None,
                )
            )
        org_id = row.org_id
        targets = {"request": rid, "holder": sender_org_id}
        if row.pupil_id:
            targets["pupil"] = row.pupil_id
        if package_id:
            targets["package"] = package_id
        await self._audit(
            "request.decision.received",
            f"peer:{sender_org_id}",
            org_id,
            targets,
            decision=data.decision,
        )
        holder = await self._name(sender_org_id)
        if data.decision == "authorised":
            summary = (
                f"{holder} authorised our request for this pupil's child-protection file; "
                f"it is on its way (package {package_id})"
            )
            subject = "A school authorised your request for a pupil's file"
            message = (
                f"{holder} authorised your transfer request {rid}. The file will appear in "
                "your inbox when it arrives."
            )
        else:
            summary = f"{holder} declined our request for this pupil's file: {reason}"
            subject = "A school declined your request for a pupil's file"
            message = (
                f"{holder} declined your transfer request {rid}. Sign in to Handover to read "
                "their reason."
            )
        await self._chronology(row.pupil_id, f"transfer.request.{data.decision}", summary, rid)
        await self._alert(org_id, rid, subject, message, row.pupil_id)
