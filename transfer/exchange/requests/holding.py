"""The holding school's side: take in a request, authorise it (queue the leaver's
file) or decline it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from schemas.peer import MAX_NOTE, MAX_REASON, PeerTransferRequest
from transfer.errors import (
    ConflictError,
    InputError,
    NotFoundError,
    PolicyError,
)
from transfer.exchange.requests.core import TransferRequestsCore
from transfer.exchange.requests.models import (
    AUTHORISING_GRACE,
    TransferRequestRecord,
    _clean_text,
    _parse,
    _rowcount,
    alert_key,
)
from transfer.exchange.tables import transfer_requests as _t
from transfer.identifiers import validate_upn
from transfer.states.request import REQUEST
from transfer.states.request import RequestEvent as On
from transfer.states.request import RequestState as St
from transfer.store.permissions import Actor, Permission, require
from transfer.store.tables import Organisation, Pupil


class HoldingSide(TransferRequestsCore):
    """Receive requests; authorise or decline them."""

    # ------------------------------------------------------- the holding school

    async def receive(self, sender_org_id: str, body: Mapping[str, Any]) -> None:
        """A request from another school's node (called by the peer server)."""
        data = _parse(PeerTransferRequest, body, "transfer request")
        if data.requester_org_id != sender_org_id:
            raise PolicyError("a transfer request must come from the requesting school's node")
        if data.holder_org_id == data.requester_org_id:
            raise InputError("a school cannot ask itself for a pupil's file")
        upn = validate_upn(data.upn)
        note = _clean_text(data.note, "note", MAX_NOTE)
        rid = str(data.request_id)
        holder = data.holder_org_id
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            if await s.get(Organisation, holder) is None:
                raise NotFoundError(f"organisation {holder!r} is not hosted on this node")
            existing = (
                await s.execute(sa.select(_t).where(_t.c.request_id == rid, _t.c.org_id == holder))
            ).first()
            if existing is not None:
                if (
                    existing.side == "received"
                    and existing.requester_org_id == sender_org_id
                    and existing.upn == upn
                ):
                    return  # the same request again (a retry)
                raise ConflictError("a different transfer request already has this id")
            pupil_id = await s.scalar(
                sa.select(Pupil.id).where(
                    Pupil.org_id == holder, Pupil.upn == upn, Pupil.erased_at.is_(None)
                )
            )
            await s.execute(
                sa.insert(_t).values(
                    request_id=rid,
                    org_id=holder,
                    side="received",
                    requester_org_id=sender_org_id,
                    holder_org_id=holder,
                    upn=upn,
                    dob=data.dob,
                    surname=data.surname,
                    forename=data.forename,
                    note=note,
                    pupil_id=pupil_id,
                    state=St.RECEIVED.value,
                    created_at=now,
                    updated_at=now,
                    attempts=0,
                )
            )
        targets = {"request": rid, "requester": sender_org_id}
        if pupil_id:
            targets["pupil"] = pupil_id
        await self._audit(
            "request.received",
            f"peer:{sender_org_id}",
            holder,
            targets,
            matched=pupil_id is not None,
        )
        requester = await self._name(sender_org_id)
        await self._chronology(
            pupil_id,
            "transfer.request.received",
            f"{requester} asked for this pupil's child-protection file",
            rid,
        )
        match = (
            "The UPN matches one of your pupils."
            if pupil_id
            else "The UPN matches none of the pupils on your roll."
        )
        await self._alert(
            holder,
            rid,
            "A school has asked for a pupil's file",
            f"{requester} asks for the child-protection file of a pupil who has joined them "
            f"(request {rid}). {match} Authorise or decline it in Handover.",
            pupil_id,
        )

    async def _adoptable(self, row: Any, org_id: str, pupil_id: str) -> Any:
        """A leaver's file to the requester queued since the request came (after a crash
        or a race), which the authorisation can point to instead of building another."""
        latest = await self.outbox.latest_for_pupil(org_id, pupil_id, "leaver_file")
        if (
            latest is not None
            and latest.to_org_id == row.requester_org_id
            and latest.state not in ("failed", "cancelled", "rejected")
            and latest.created_at >= row.created_at
        ):
            return latest
        return None

    async def authorise(
        self,
        actor: Actor,
        request_id: str,
        *,
        pupil_id: str | None = None,
        via: str | None = None,
    ) -> TransferRequestRecord:
        """Send the pupil's leaver's file to the requesting school, and tell it so."""
        row = await self._visible(actor, request_id, "request.authorised")
        rid = row.request_id
        targets = {"request": rid}
        if not actor.has(Permission.SEND_TRANSFER):
            await self._audit("request.authorised", actor, actor.org_id, targets, "refused")
            require(actor, Permission.SEND_TRANSFER)
        if row.side != "received":
            raise ConflictError("this is a request your school sent; the other school answers it")
        if REQUEST.is_final(St(row.state)):
            raise ConflictError(f"this request has already been {row.state}")
        chosen = await self.store.pupil_id_for(actor, pupil_id) if pupil_id else row.pupil_id
        if chosen is None:
            raise InputError(
                "the request's UPN matches none of your pupils: choose the pupil it is about "
                "(pupil_id) or decline the request"
            )
        pupil = await self.store.get_pupil(actor, chosen)
        if pupil.erased_at is not None:
            raise ConflictError("that pupil's records have been erased; decline the request")
        now = self._now()
        # Claimed from "received", or taken over from a claim older than the grace period.
        claim_from, claimed_state = REQUEST.update(On.CLAIM)
        async with self.store.sessions() as s, s.begin():
            claimed = await s.execute(
                sa.update(_t)
                .where(
                    _t.c.request_id == rid,
                    _t.c.org_id == actor.org_id,
                    sa.or_(
                        _t.c.state.in_([x.value for x in claim_from]),
                        sa.and_(
                            _t.c.state == claimed_state.value,
                            _t.c.updated_at < now - AUTHORISING_GRACE,
                        ),
                    ),
                )
                .values(state=claimed_state.value, updated_at=now, decided_by=actor.staff_id)
            )
        if _rowcount(claimed) != 1:
            raise ConflictError("someone is authorising this request right now; reload it")
        try:
            package = await self._adoptable(row, actor.org_id, pupil.id)
            if package is None:
                try:
                    # The DSL authorising the school's request is the reason, should one be
                    # needed (a destination not recorded yet, or the file sent before).
                    package = await self.outbox.queue_leaver_file(
                        actor,
                        pupil.id,
                        row.requester_org_id,
                        via=via,
                        reason=f"the school asked for it (transfer request {rid}) and a DSL "
                        "authorised the request",
                    )
                except ConflictError:
                    package = await self._adoptable(row, actor.org_id, pupil.id)
                    if package is None:
                        raise
        except BaseException:
            release_from, released = REQUEST.update(On.RELEASE)
            async with self.store.sessions() as s, s.begin():
                await s.execute(
                    sa.update(_t)
                    .where(
                        _t.c.request_id == rid,
                        _t.c.org_id == actor.org_id,
                        _t.c.state.in_([x.value for x in release_from]),
                    )
                    .values(state=released.value, decided_by=None)
                )
            raise
        done = self._now()
        authorise_from, authorised = REQUEST.update(On.AUTHORISE)
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                sa.update(_t)
                .where(
                    _t.c.request_id == rid,
                    _t.c.org_id == actor.org_id,
                    _t.c.state.in_([x.value for x in authorise_from]),
                )
                .values(
                    state=authorised.value,
                    pupil_id=pupil.id,
                    package_id=package.id,
                    decided_at=done,
                    decided_by=actor.staff_id,
                    updated_at=done,
                    outbound="decision",
                    attempts=0,
                    next_attempt_at=done,
                    lease_until=None,
                    last_error=None,
                )
            )
        await self._audit(
            "request.authorised",
            actor,
            actor.org_id,
            {**targets, "pupil": pupil.id, "package": package.id},
            via=via,
        )
        requester = await self._name(row.requester_org_id)
        await self._chronology(
            pupil.id,
            "transfer.request.authorised",
            f"Request from {requester} authorised; leaver's file queued (package {package.id})",
            rid,
        )
        await self.alerts.resolve(actor.org_id, alert_key(rid))
        return await self._record(await self._row(rid, actor.org_id))

    async def decline(
        self, actor: Actor, request_id: str, reason: str, *, via: str | None = None
    ) -> TransferRequestRecord:
        """Refuse a request, with a reason the requesting school's DSL will read."""
        row = await self._visible(actor, request_id, "request.declined")
        rid = row.request_id
        targets = {"request": rid}
        if not actor.has(Permission.SEND_TRANSFER):
            await self._audit("request.declined", actor, actor.org_id, targets, "refused")
            require(actor, Permission.SEND_TRANSFER)
        cleaned = _clean_text(reason, "reason", MAX_REASON)
        if cleaned is None:
            raise InputError("say why the request is declined (the other school's DSL reads it)")
        if row.side != "received":
            raise ConflictError("this is a request your school sent; the other school answers it")
        now = self._now()
        decline_from, declined = REQUEST.update(On.DECLINE)
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                sa.update(_t)
                .where(
                    _t.c.request_id == rid,
                    _t.c.org_id == actor.org_id,
                    _t.c.state.in_([x.value for x in decline_from]),
                )
                .values(
                    state=declined.value,
                    reason=cleaned,
                    decided_at=now,
                    decided_by=actor.staff_id,
                    updated_at=now,
                    outbound="decision",
                    attempts=0,
                    next_attempt_at=now,
                    lease_until=None,
                    last_error=None,
                )
            )
        if _rowcount(done) != 1:
            raise ConflictError(f"this request can no longer be declined (it is {row.state})")
        if row.pupil_id:
            targets["pupil"] = row.pupil_id
        await self._audit("request.declined", actor, actor.org_id, targets, via=via)
        requester = await self._name(row.requester_org_id)
        await self._chronology(
            row.pupil_id,
            "transfer.request.declined",
            f"Request from {requester} for this pupil's file declined: {cleaned}",
            rid,
        )
        await self.alerts.resolve(actor.org_id, alert_key(rid))
        return await self._record(await self._row(rid, actor.org_id))
