"""What the outbox holds and answers: its states, errors and records, and the rows it
reads (the queue, delivery and receipts modules share them; :mod:`transfer.exchange.outbox`
re-exports the public names)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, cast

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.engine import CursorResult, Row

from schemas.directory import DirectoryEntry
from schemas.records import Destination
from transfer.errors import (
    InputError,
    IntegrityError,
    PolicyError,
    TransportError,
)
from transfer.exchange.tables import (
    outgoing_packages,
)
from transfer.receipts import (
    SignedReceipt,
)
from transfer.states.outgoing import OUTGOING
from transfer.states.outgoing import OutgoingEvent as On
from transfer.store.permissions import Permission

if TYPE_CHECKING:
    pass

log = logging.getLogger("handover.outbox")


log = logging.getLogger("handover.outbox")

OUTGOING_DIR: Final = "outgoing"
PackageState = Literal[
    "draft", "queued", "delivered", "viewed", "accepted", "rejected", "failed", "cancelled"
]
STATES: Final[tuple[str, ...]] = (
    "draft",
    "queued",
    "delivered",
    "viewed",
    "accepted",
    "rejected",
    "failed",
    "cancelled",
)
_LABELS: Final[dict[str, str]] = {
    "leaver_file": "Leaver's file",
    "referral_social_care": "Referral to children's social care",
    "referral_lado": "Referral to the LADO",
    "referral_police": "Referral to the police",
    "other": "Package",
}
#: A draft left by a process killed while building is discarded after this long.
STALE_DRAFT: Final = timedelta(hours=1)

_p = outgoing_packages


def _crashed_draft(now: datetime) -> ColumnElement[bool]:
    """A draft whose builder is gone: its build lease ran out (the builder renews it), or,
    written before drafts had a lease, it is older than :data:`STALE_DRAFT`."""
    return and_(
        _p.c.state == "draft",
        or_(
            _p.c.lease_until < now,
            and_(_p.c.lease_until.is_(None), _p.c.created_at < now - STALE_DRAFT),
        ),
    )


class OutboxDirectory(Protocol):
    """What the outbox needs from the directory (``transfer.directory.service.Directory``)."""

    async def entry(self, org_id: str) -> DirectoryEntry: ...

    async def signing_public_key(self, key_id: str, at: datetime) -> bytes: ...

    async def signer(self, key_id: str, at: datetime) -> tuple[DirectoryEntry, bytes]: ...


class LeaseLostError(TransportError):
    """Another process took the item over (this process's lease ran out)."""


class PackageFileMissingError(IntegrityError):
    """The package's file is no longer in the outgoing directory."""


class PackageFileDamagedError(IntegrityError):
    """The package's file on this node no longer matches the hash recorded when it was built.

    This node's disk (or someone with access to it) changed the file: sending it would only
    have the receiver refuse it as "altered on the way", blaming the network.
    """

    slug = "package-file-damaged"
    title = "The copy of the package on this server is damaged"


#: Where the reason given for sending a leaver's file is sealed (``sealed_fields``).
REASON_TABLE: Final = "outgoing_packages"
REASON_FIELD: Final = "send_reason"
MAX_REASON: Final = 500
#: Earlier packages in these states reached the receiving school: sending again needs a reason.
ReasonNeeded = Literal["repeat", "not_destination"]


class LeaverFileToAgencyError(PolicyError):
    """A leaver's child-protection file goes to the pupil's next school, never to an agency."""

    slug = "not-a-school"
    title = "A leaver's file goes to a school"


class ReasonRequiredError(InputError):
    """Sending this needs a reason from the sender (it is recorded): the message says why."""

    http_status = 422
    slug = "reason-required"
    title = "A reason is needed to send this"


@dataclass(frozen=True)
class _Pending:
    id: str
    state: str


@dataclass(frozen=True)
class SendChecks:
    """What sending a leaver's file to one organisation asks (:meth:`Outbox.send_checks`)."""

    entry: DirectoryEntry
    #: A leaver's file goes to a school only: False means it would be refused.
    is_school: bool
    #: Why a reason is needed (codes), and the same in words, one sentence each.
    needed: tuple[ReasonNeeded, ...]
    why: tuple[str, ...]
    #: A file for this pupil already waiting to go there (draft or queued), if any.
    pending: _Pending | None = None


def check_reason(reason: str | None) -> str | None:
    """The reason with its spacing normalised, or None; InputError if it cannot be kept."""
    if reason is None:
        return None
    text = " ".join(reason.split())
    if not text:
        return None
    if len(text) > MAX_REASON or not text.isprintable():
        raise InputError(f"the reason must be 1 to {MAX_REASON} printable characters")
    return text


def is_destination(destination: Destination | None, entry: DirectoryEntry) -> bool:
    """Whether the pupil's recorded destination is the school of this directory entry."""
    if destination is None or destination.kind != "school":
        return False
    urns = {u for u in (entry.urn, entry.org_id) if u}
    return bool(
        (destination.urn and destination.urn in urns)
        or (destination.laestab and entry.laestab and destination.laestab == entry.laestab)
    )


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class OutgoingEvent(_Model):
    """One change of an outgoing package: when, what, the state after it, who."""

    at: datetime
    event: str
    state: str
    actor: str | None = None
    detail: str | None = None


class OutgoingReceipt(_Model):
    """A verified receipt held for an outgoing package (its signed body and signature)."""

    receipt_id: str
    kind: str
    issued_at: datetime
    received_at: datetime
    acted_by: dict[str, str] | None = None
    reason: str | None = None
    reference: str | None = None
    body: dict[str, Any]
    signature: str


class OutgoingRecord(_Model):
    """A package this node sends, with its state, history and receipts."""

    id: str
    org_id: str
    to_org_id: str
    to_name: str
    kind: str
    state: PackageState
    pupil_ids: tuple[str, ...]
    ciphertext_size: int | None
    ciphertext_sha256: str | None
    manifest_sha256: str | None
    created_by: str | None
    created_at: datetime
    queued_at: datetime | None
    state_changed_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    failure_reason: str | None
    #: Why the sender had to give a reason ("repeat": the file had reached this school
    #: before; "not_destination": not the pupil's recorded destination), and the reason.
    reasons_needed: tuple[ReasonNeeded, ...] = ()
    send_reason: str | None = None
    events: tuple[OutgoingEvent, ...] = ()
    receipts: tuple[OutgoingReceipt, ...] = ()


ReceiptListener = Callable[[OutgoingRecord, SignedReceipt], Awaitable[None]]


def _permission_for(kind: str) -> Permission:
    return Permission.SEND_TRANSFER if kind == "leaver_file" else Permission.SEND_REFERRAL


def _label(kind: str) -> str:
    return _LABELS.get(kind, "Package")


def _rowcount(result: object) -> int:
    return cast("CursorResult[Any]", result).rowcount


def _short(text: str, limit: int = 500) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _file_sha256(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while piece := fh.read(1024 * 1024):
            h.update(piece)
            size += len(piece)
    return size, h.hexdigest()


async def check_own_copy(path: Path, size: int, sha256: str) -> None:
    """Before anything is sent: the file still holds the bytes recorded when it was built.

    Streamed (1 MiB at a time, in a worker thread); a size that differs is caught by
    ``stat`` without reading. A damaged copy is this node's fault, not the network's.
    """

    def check() -> str | None:
        held = path.stat().st_size
        if held != size:
            return f"it holds {held} bytes, not the {size} it was built with"
        _, digest = _file_sha256(path)
        if not hmac.compare_digest(digest, sha256):
            return "its bytes no longer match the SHA-256 recorded when it was built"
        return None

    problem = await asyncio.to_thread(check)
    if problem is not None:
        raise PackageFileDamagedError(
            f"the copy of this file on this server is damaged ({path.name}: {problem}), "
            "so it was not sent; build it again (send the file again: a new package is "
            "built) and have this server's disk checked"
        )


@dataclass(frozen=True)
class PackageRow:
    """One ``outgoing_packages`` row, with the ids of the pupils it is about."""

    id: str
    org_id: str
    to_org_id: str
    to_name: str
    kind: str
    state: PackageState
    ciphertext_size: int | None
    ciphertext_sha256: str | None
    manifest_sha256: str | None
    created_by: str | None
    created_at: datetime
    queued_at: datetime | None
    state_changed_at: datetime
    attempts: int
    next_attempt_at: datetime | None
    claimed_by: str | None
    lease_until: datetime | None
    last_error: str | None
    failure_reason: str | None
    next_pull_at: datetime | None
    pulls: int
    reasons_needed: str | None
    pupils: tuple[str, ...] = ()

    @classmethod
    def of(cls, row: Row[Any], pupils: tuple[str, ...] = ()) -> PackageRow:
        """The typed row of a ``select(outgoing_packages)`` result row."""
        m = row._mapping
        return cls(
            id=m["id"],
            org_id=m["org_id"],
            to_org_id=m["to_org_id"],
            to_name=m["to_name"],
            kind=m["kind"],
            state=m["state"],
            ciphertext_size=m["ciphertext_size"],
            ciphertext_sha256=m["ciphertext_sha256"],
            manifest_sha256=m["manifest_sha256"],
            created_by=m["created_by"],
            created_at=m["created_at"],
            queued_at=m["queued_at"],
            state_changed_at=m["state_changed_at"],
            attempts=m["attempts"],
            next_attempt_at=m["next_attempt_at"],
            claimed_by=m["claimed_by"],
            lease_until=m["lease_until"],
            last_error=m["last_error"],
            failure_reason=m["failure_reason"],
            next_pull_at=m["next_pull_at"],
            pulls=m["pulls"],
            reasons_needed=m["reasons_needed"],
            pupils=pupils,
        )

    def built(self) -> tuple[int, str]:
        """The size and SHA-256 of the package's file (recorded when it was queued)."""
        if self.ciphertext_size is None or self.ciphertext_sha256 is None:
            raise IntegrityError(f"package {self.id} has not been built (no size or SHA-256)")
        return int(self.ciphertext_size), self.ciphertext_sha256


@dataclass(frozen=True)
class EventRow:
    """One ``outgoing_events`` row."""

    at: datetime
    event: str
    state: str
    actor: str | None
    detail: str | None

    @classmethod
    def of(cls, row: Row[Any]) -> EventRow:
        m = row._mapping
        return cls(
            at=m["at"], event=m["event"], state=m["state"], actor=m["actor"], detail=m["detail"]
        )


@dataclass(frozen=True)
class ReceiptRow:
    """One ``outgoing_receipts`` row: a held receipt's signed bytes and signature."""

    receipt_id: str
    kind: str
    issued_at: datetime
    received_at: datetime
    body: bytes
    signature: str

    @classmethod
    def of(cls, row: Row[Any]) -> ReceiptRow:
        m = row._mapping
        return cls(
            receipt_id=m["receipt_id"],
            kind=m["kind"],
            issued_at=m["issued_at"],
            received_at=m["received_at"],
            body=bytes(m["body"]),
            signature=m["signature"],
        )


def _moves(event: On) -> tuple[ColumnElement[bool]]:
    """The ``WHERE`` of the conditional update applying ``event`` (its machine's sources)."""
    sources, _ = OUTGOING.update(event)
    return (_p.c.state.in_([state.value for state in sources]),)


def _to(event: On) -> dict[str, str]:
    """The ``SET state = ...`` of the conditional update applying ``event``."""
    return {"state": OUTGOING.update(event)[1].value}


def _needed_text(codes: str | None) -> str:
    words = {"repeat": "sent again", "not_destination": "not the recorded destination"}
    return ", ".join(words.get(c, c) for c in (codes or "").split(",") if c)


def _to_record(
    row: PackageRow,
    events: Sequence[EventRow],
    receipts: Sequence[ReceiptRow],
    reason: str | None = None,
) -> OutgoingRecord:
    held: list[OutgoingReceipt] = []
    for r in receipts:
        body = json.loads(r.body)
        acted = body.get("acted_by")
        held.append(
            OutgoingReceipt(
                receipt_id=r.receipt_id,
                kind=r.kind,
                issued_at=r.issued_at,
                received_at=r.received_at,
                acted_by=acted,
                reason=body.get("reason"),
                reference=body.get("reference"),
                body=body,
                signature=r.signature,
            )
        )
    return OutgoingRecord(
        id=row.id,
        org_id=row.org_id,
        to_org_id=row.to_org_id,
        to_name=row.to_name,
        kind=row.kind,
        state=row.state,
        pupil_ids=row.pupils,
        ciphertext_size=row.ciphertext_size,
        ciphertext_sha256=row.ciphertext_sha256,
        manifest_sha256=row.manifest_sha256,
        created_by=row.created_by,
        created_at=row.created_at,
        queued_at=row.queued_at,
        state_changed_at=row.state_changed_at,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_error=row.last_error,
        failure_reason=row.failure_reason,
        reasons_needed=tuple(c for c in (row.reasons_needed or "").split(",") if c),
        send_reason=reason,
        events=tuple(
            OutgoingEvent(at=e.at, event=e.event, state=e.state, actor=e.actor, detail=e.detail)
            for e in events
        ),
        receipts=tuple(held),
    )
