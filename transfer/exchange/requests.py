"""Transfer requests: a receiving school asks the previous school for a pupil's file.

The requesting school's DSL names a pupil on its roll (by UPN) and the school
the pupil came from. The request travels as a signed peer request
(``POST /peer/v1/transfer-requests``) to the holder's node, where it is
matched to the holder's pupil by UPN only: a request for a UPN the holder does
not know is shown as such, and nothing about any other pupil is revealed. The
holder's DSL authorises it (the leaver's file is queued through
:meth:`transfer.exchange.outbox.Outbox.queue_leaver_file`; the package id goes
back in the decision) or declines it with a reason; the decision travels back
(``POST /peer/v1/transfer-requests/{id}/decision``).

Everything this node still owes the other node (a request or a decision) is
kept in the database (``transfer_requests.outbound``) and sent by
:meth:`TransferRequests.send_due`, a sweep safe to run in several processes
(a lease per row), with exponential back-off until ``transfer.give_up_hours``.

Audited on both sides: ``request.created``, ``request.sent``,
``request.received``, ``request.authorised``, ``request.declined``,
``request.decision.sent``, ``request.decision.received`` (ids only; never the
names, the note or the reason, which are kept in the table and the pupils'
chronologies).
"""

from __future__ import annotations

import builtins
import logging
import uuid
from collections.abc import Mapping
from datetime import date, datetime, timedelta
from typing import Any, Final, Literal, Protocol, TypeVar, cast
from uuid import UUID

import sqlalchemy as sa
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.engine import CursorResult

from schemas.manifest import PackageKind
from schemas.peer import MAX_NOTE, MAX_REASON, PeerDecision, PeerTransferRequest
from schemas.text import Prose, where
from transfer.alerts import Alerts
from transfer.config import Config
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
    NotFoundError,
    PolicyError,
    TransportError,
)
from transfer.exchange import backoff
from transfer.exchange.tables import transfer_requests as _t
from transfer.identifiers import validate_upn
from transfer.states.request import REQUEST
from transfer.states.request import RequestEvent as On
from transfer.states.request import RequestState as St
from transfer.store.permissions import Actor, Permission, PermissionDenied, require
from transfer.store.service import Store
from transfer.store.tables import Organisation, Pupil

log = logging.getLogger("handover.requests")

Side = Literal["sent", "received"]
RequestState = Literal[
    "pending", "sent", "received", "authorising", "authorised", "declined", "failed"
]
PEER_PATH: Final = "/peer/v1/transfer-requests"
#: How long an "authorising" claim holds before another DSL may take the request over.
AUTHORISING_GRACE: Final = timedelta(minutes=10)
M = TypeVar("M", bound=BaseModel)


# --------------------------------------------------------------- what others give us


class DirectoryLookup(Protocol):
    """``transfer.directory.service.Directory``, as far as requests need it."""

    async def entry(self, org_id: str) -> Any: ...


class LeaverFileQueue(Protocol):
    """``transfer.exchange.outbox.Outbox``, as far as requests need it."""

    async def queue_leaver_file(
        self,
        actor: Actor,
        pupil_id: str,
        to_org_id: str,
        *,
        via: str | None = None,
        reason: str | None = None,
    ) -> Any: ...

    async def latest_for_pupil(
        self, org_id: str, pupil_id: str, kind: PackageKind = "leaver_file"
    ) -> Any: ...


class PeerJsonClient(Protocol):
    """``transfer.transport.base.PeerTransport``, as far as requests need it."""

    async def request_json(
        self,
        from_org: str,
        to_org: str,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]: ...


# -------------------------------------------------------------------- models


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class NewTransferRequest(_Body):
    """What a DSL gives to ask another school for a pupil's file (API body)."""

    upn: str = Field(min_length=1, max_length=20)
    from_org_id: str = Field(min_length=1, max_length=64)
    note: Prose | None = Field(default=None, max_length=MAX_NOTE)


class AuthoriseRequest(_Body):
    """Authorise a received request; ``pupil_id`` when the UPN matched none of ours."""

    pupil_id: str | None = Field(default=None, max_length=36)


class DeclineRequest(_Body):
    reason: Prose = Field(min_length=1, max_length=MAX_REASON)


class TransferRequestRecord(BaseModel):
    """A transfer request as one side's DSL team sees it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    request_id: str
    org_id: str
    side: Side
    requester_org_id: str
    holder_org_id: str
    upn: str
    dob: date | None
    surname: str
    forename: str
    note: str | None
    #: Our pupil (requester: the new pupil; holder: the one whose UPN matched, if any).
    pupil_id: str | None
    #: Holder side: whether the UPN matched one of our pupils (None on the sent side).
    matched: bool | None = None
    #: Holder side: whether our pupil's date of birth is the one the requester gave.
    dob_matches: bool | None = None
    state: RequestState
    reason: str | None
    package_id: str | None
    created_by: str | None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    decided_at: AwareDatetime | None
    decided_by: str | None
    #: What this node still has to send the other one ("request", "decision"), if anything.
    outbound: str | None
    attempts: int
    next_attempt_at: AwareDatetime | None
    last_error: str | None


def _parse(model: type[M], body: Mapping[str, Any], what: str) -> M:
    try:
        return model.model_validate(dict(body))
    except ValidationError as err:
        first = err.errors()[0]
        at = where(first["loc"], "body")
        raise InputError(f"the {what} is not valid: {at} {first['msg']}") from None


def _rowcount(result: object) -> int:
    return cast("CursorResult[Any]", result).rowcount


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _clean_text(value: str | None, what: str, limit: int) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    if len(value) > limit or "\x00" in value:
        raise InputError(f"the {what} must be at most {limit} characters")
    return value


def alert_key(request_id: str) -> str:
    return f"transfer-request:{request_id}"


class TransferRequests:
    """Both sides of transfer requests on one node."""

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
