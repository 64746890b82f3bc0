"""The outbox: packages this node sends to other nodes, and what became of each.

A DSL queues a leaver's file (:meth:`Outbox.queue_leaver_file`): the package
is built from the store, signed with the organisation's key and encrypted to
the receiver's ``age1…`` recipient from the directory, into
``data_dir/outgoing/<id>.age.tmp``, fsynced and renamed to ``<id>.age``.
Packages built elsewhere (referrals) come in through :meth:`Outbox.queue_file`.

States (``docs/delivery.md``)::

    draft -> queued -> delivered -> viewed -> accepted | rejected
               |  ^
               v  | resend
             failed          queued/failed -> cancelled (only before delivery)

The delivery sweep (:meth:`Outbox.deliver_due`) claims due items with a
lease (``claimed_by``, ``lease_until``): on PostgreSQL inside a
``SELECT ... FOR UPDATE SKIP LOCKED`` transaction, on SQLite by a conditional
``UPDATE``; so several ``serve`` processes never deliver one item at the same
time, and the item of a killed process is picked up again when its lease
runs out (the receiver answers the same package id with the same receipt, so
nothing arrives twice). An upload resumes from the offset the receiver holds
and streams the file chunk by chunk; it ends with the receiver's signed
``delivered`` receipt, verified before it is recorded. Every change of state
has a time, is a row in ``outgoing_events``, is audited and is a line in each
pupil's chronology.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import hmac
import json
import logging
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final, Literal, Protocol, cast
from uuid import UUID

from pydantic import BaseModel, ConfigDict
from sqlalchemy import ColumnElement, and_, delete, insert, or_, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import CursorResult, Row

from keys import minisign
from keys.keyset import parse_key_id
from schemas.directory import DirectoryEntry
from schemas.manifest import PackageKind, Recipient, Sender
from schemas.receipt import ReceiptBody, ReceiptDecodeError
from schemas.records import Destination, PupilRecord
from transfer.config import Config
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
    IntegrityError,
    NotFoundError,
    PolicyError,
    TransportError,
)
from transfer.exchange import backoff
from transfer.exchange.client import PeerClient, PeerRefused
from transfer.exchange.outbox_tables import (
    outgoing_events,
    outgoing_packages,
    outgoing_pupils,
    outgoing_receipts,
)
from transfer.httpsig import DigestHasher, digest_header
from transfer.package.build import BuiltPackage
from transfer.receipts import (
    ReceiptContradictionError,
    ReceiptError,
    SignedReceipt,
    contradicts_final,
    verify_receipt,
)
from transfer.states.outgoing import OUTGOING, Outgoing
from transfer.states.outgoing import OutgoingEvent as On
from transfer.store.db import is_sqlite
from transfer.store.models import SealedField
from transfer.store.permissions import Actor, Permission, PermissionDenied, require
from transfer.wording import plural

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncSession

    from keys.store import KeyStore
    from transfer.store.base import AuditIntent
    from transfer.store.service import Store

__all__ = [
    "OUTGOING_DIR",
    "LeaseLostError",
    "Outbox",
    "OutboxDirectory",
    "OutgoingEvent",
    "OutgoingReceipt",
    "OutgoingRecord",
    "PackageState",
    "ReceiptListener",
    "SendChecks",
]

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
#: The machine's event for each kind of receipt (a receipt only ever moves an item forward).
_RECEIPT_EVENTS: Final = {
    "delivered": On.RECEIPT_DELIVERED,
    "viewed": On.RECEIPT_VIEWED,
    "accepted": On.RECEIPT_ACCEPTED,
    "rejected": On.RECEIPT_REJECTED,
}
_LABELS: Final[dict[str, str]] = {
    "leaver_file": "Leaver's file",
    "referral_social_care": "Referral to children's social care",
    "referral_lado": "Referral to the LADO",
    "referral_police": "Referral to the police",
    "other": "Package",
}
#: The sender reads its package file in pieces of this size (one worker-thread hop each).
_READ_PIECE: Final = 1024 * 1024
#: A draft left by a process killed while building is discarded after this long.
STALE_DRAFT: Final = timedelta(hours=1)
#: Consecutive "wrong offset" answers tolerated before the attempt is given up.
_MAX_OFFSET_CONFLICTS: Final = 3

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


class _RacedError(Exception):
    """The row changed between reading and writing it; the transaction is rolled back."""


class _DraftGoneError(Exception):
    """The draft being queued is no longer a draft (removed or cancelled meanwhile)."""


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
_REACHED: Final = ("delivered", "viewed", "accepted", "rejected")
#: Why a reason is needed, as stored in ``reasons_needed`` and shown to the DSL.
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


def _receipt_from_json(value: object) -> SignedReceipt:
    """A signed receipt given in a peer's JSON answer (an object, or its JSON text)."""
    try:
        if isinstance(value, dict):
            return SignedReceipt.from_dict(value)
        if isinstance(value, str):
            return SignedReceipt.from_json(value.encode("utf-8"))
    except InputError as exc:
        raise ReceiptError(f"the other node sent a malformed receipt: {exc.message}") from None
    raise ReceiptError("the other node's answer holds no receipt")


def _digest_range(path: Path, offset: int, length: int) -> str:
    hasher = DigestHasher()
    with path.open("rb") as fh:
        fh.seek(offset)
        left = length
        while left:
            piece = fh.read(min(_READ_PIECE, left))
            if not piece:
                raise PackageFileMissingError(
                    f"the package file {path.name} is shorter than recorded"
                )
            hasher.update(piece)
            left -= len(piece)
    return hasher.header()


class _ChunkDigests:
    """Each upload chunk's ``Content-Digest``; the next one is hashed ahead, in a worker thread.

    The digest must be in the request's headers (the signature covers it), so a
    chunk is read twice: once to hash it, once to send it. Hashing chunk *k + 1*
    while chunk *k* is sent keeps the wire busy; ``hashlib`` releases the GIL.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._ahead: tuple[int, int, asyncio.Task[str]] | None = None

    async def get(self, offset: int, length: int) -> str:
        """The digest of ``length`` bytes at ``offset`` (hashed ahead if it was foreseen)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            if ahead[0] == offset and ahead[1] == length:
                return await ahead[2]
            _drop(ahead[2])  # the peer asked for another offset
        return await asyncio.to_thread(_digest_range, self._path, offset, length)

    def prefetch(self, offset: int, length: int) -> None:
        """Start hashing the chunk likely to come next (nothing if there is none)."""
        if self._ahead is not None:
            _drop(self._ahead[2])
            self._ahead = None
        if length > 0:
            task = asyncio.create_task(asyncio.to_thread(_digest_range, self._path, offset, length))
            self._ahead = (offset, length, task)

    def close(self) -> None:
        """Forget a digest hashed ahead but not needed (the upload ended or failed)."""
        if self._ahead is not None:
            _drop(self._ahead[2])
            self._ahead = None


def _drop(task: asyncio.Task[str]) -> None:
    """Cancel an unneeded hashing task; an error it already had is seen, not logged as lost."""
    if task.done():
        if not task.cancelled():
            task.exception()
    else:
        task.cancel()


async def _read_range(path: Path, offset: int, length: int) -> AsyncIterator[bytes]:
    """``length`` bytes of ``path`` from ``offset``, in pieces; the next piece is read (in a
    worker thread) while this one is sent."""
    fh = await asyncio.to_thread(path.open, "rb")
    ahead: asyncio.Future[bytes] | None = None
    try:
        await asyncio.to_thread(fh.seek, offset)
        left = length
        ahead = asyncio.ensure_future(asyncio.to_thread(fh.read, min(_READ_PIECE, left)))
        while left and ahead is not None:
            piece = await ahead
            ahead = None
            if not piece:
                raise PackageFileMissingError(
                    f"the package file {path.name} is shorter than recorded"
                )
            left -= len(piece)
            if left:
                ahead = asyncio.ensure_future(asyncio.to_thread(fh.read, min(_READ_PIECE, left)))
            yield piece
    finally:
        if ahead is not None:
            # A read still running in its thread must end before the file is closed.
            await asyncio.wait([ahead])
            if not ahead.cancelled():
                ahead.exception()
        await asyncio.to_thread(fh.close)


def _file_sha256(path: Path) -> tuple[int, str]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while piece := fh.read(1024 * 1024):
            h.update(piece)
            size += len(piece)
    return size, h.hexdigest()


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _offset(value: object, size: int, where: str) -> int:
    try:
        n = int(str(value))
    except ValueError:
        raise IntegrityError(f"{where} gave an upload offset that is not a number") from None
    if not 0 <= n <= size:
        raise IntegrityError(f"{where} gave the upload offset {n}, outside 0..{size}")
    return n


class Outbox:
    """The packages one node sends. One per process; several processes may share a database."""

    def __init__(
        self,
        *,
        store: Store,
        keys: KeyStore,
        directory: OutboxDirectory,
        client: PeerClient,
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
        row: Any,
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        pupils: Sequence[str] = getattr(row, "_pupils", ())
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
        row: Any,
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> AuditIntent:
        """The audit entry of a change (as :meth:`_audit`), promised in the change's own
        transaction: committed with it, appended by :meth:`Store.settle` or on replay."""
        pupils: Sequence[str] = getattr(row, "_pupils", ())
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

    async def _row(self, package_id: str) -> Any:
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
        return _with_pupils(row, tuple(pupils))

    async def _row_for(self, actor: Actor, package_id: str) -> Any:
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
    ) -> Any:
        return insert(outgoing_events).values(
            package_id=package_id,
            at=at,
            event=event,
            state=state,
            actor=actor.staff_id if actor else None,
            detail=_short(detail) if detail else None,
        )

    # ------------------------------------------------------------------ queueing

    async def send_checks(self, actor: Actor, pupil_id: str, to_org_id: str) -> SendChecks:
        """What sending the pupil's leaver's file to ``to_org_id`` would ask, without making
        anything: the receiver's directory entry, whether it is a school, a file already
        waiting to go there, and the reasons needed (with why, in words). The same checks
        :meth:`queue_leaver_file` makes; the actor needs ``transfer.send``."""
        pupil_id = await self.store.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id, "recipient": to_org_id}
        await self._require(actor, "leaver_file", "transfer.read", targets)
        entry = await self.directory.entry(to_org_id)
        pupil = await self.store.get_pupil(actor, pupil_id)
        return await self._checks(pupil, entry)

    async def _checks(self, pupil: PupilRecord, entry: DirectoryEntry) -> SendChecks:
        async with self.store.sessions() as s:
            earlier = (
                await s.execute(
                    select(_p.c.id, _p.c.state, _p.c.queued_at)
                    .join(outgoing_pupils, outgoing_pupils.c.package_id == _p.c.id)
                    .where(
                        outgoing_pupils.c.pupil_id == pupil.id,
                        _p.c.to_org_id == entry.org_id,
                        _p.c.kind == "leaver_file",
                        _p.c.state.in_(("draft", "queued", *_REACHED)),
                    )
                    .order_by(_p.c.created_at.desc())
                )
            ).all()
        pending = next((r for r in earlier if r.state in ("draft", "queued")), None)
        reached = [r for r in earlier if r.state in _REACHED]
        needed: list[ReasonNeeded] = []
        why: list[str] = []
        if reached:
            last = reached[0]
            needed.append("repeat")
            sent = f" on {last.queued_at:%d %B %Y}" if last.queued_at else ""
            why.append(
                f"{pupil.forename} {pupil.surname}'s file was already sent to {entry.name}"
                f"{sent} (package {last.id}, {last.state})"
            )
        if not is_destination(pupil.destination, entry):
            needed.append("not_destination")
            d = pupil.destination
            recorded = (
                "no destination is recorded"
                if d is None or d.kind == "unknown"
                else f"the recorded destination is {d.name or d.urn or d.laestab or d.kind}"
            )
            why.append(
                f"{entry.name} is not {pupil.forename} {pupil.surname}'s recorded next school "
                f"({recorded})"
            )
        return SendChecks(
            entry=entry,
            is_school=entry.kind == "school",
            needed=tuple(needed),
            why=tuple(why),
            pending=_Pending(pending.id, pending.state) if pending is not None else None,
        )

    async def queue_leaver_file(
        self,
        actor: Actor,
        pupil_id: str,
        to_org_id: str,
        *,
        via: str | None = None,
        reason: str | None = None,
    ) -> OutgoingRecord:
        """Build the pupil's leaver's file for ``to_org_id`` and queue it for delivery.

        ``pupil_id`` may be the pupil's UPN. The file goes only to a school. Sending
        it again to a school it already reached, or to a school that is not the
        pupil's recorded destination, needs a ``reason`` (:class:`ReasonRequiredError`
        says which, and nothing is made); the reason is kept sealed with the package
        and in the pupil's chronology, and the audit records that one was needed.
        """
        from transfer.age import X25519Recipient
        from transfer.package.from_store import build_leaver_package

        pupil_id = await self.store.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id, "recipient": to_org_id}
        await self._require(actor, "leaver_file", "transfer.queued", targets)
        reason = check_reason(reason)
        if to_org_id == actor.org_id:
            raise InputError("a leaver's file is sent to another organisation, not to your own")
        entry = await self.directory.entry(to_org_id)
        if entry.kind != "school":
            await self.store.record_event(
                "transfer.queued", actor, actor.org_id, targets, "refused", reason="not_a_school"
            )
            raise LeaverFileToAgencyError(
                f"{entry.name} is not a school: a leaver's child-protection file goes only to "
                "the pupil's next school. To share information with an agency, make a referral "
                "('handover referral new'), which carries only what the agency needs."
            )
        pupil = await self.store.get_pupil(actor, pupil_id)
        checks = await self._checks(pupil, entry)
        pending = checks.pending
        if pending is not None and pending.state == "draft":
            if await self.discard_stale_drafts(package_id=pending.id):
                # Left by a process killed while building it: gone now, so this one goes.
                checks = await self._checks(pupil, entry)
                pending = checks.pending
            else:
                raise ConflictError(
                    f"a leaver's file for this pupil to {entry.name} is being built right now "
                    f"(package {pending.id}); it is queued in a moment: cancel it then to send "
                    "a new one"
                )
        if pending is not None:
            raise ConflictError(
                f"a leaver's file for this pupil is already waiting to go to {entry.name} "
                f"(package {pending.id}); cancel it first to send a new one"
            )
        needed, why = list(checks.needed), list(checks.why)
        if needed and reason is None:
            await self.store.record_event(
                "transfer.queued",
                actor,
                actor.org_id,
                targets,
                "refused",
                reason="reason_required",
                reasons_needed=",".join(needed),
            )
            raise ReasonRequiredError(
                "; ".join(why) + ". Check, then give the reason for sending it (it is recorded).",
                detail={"reasons_needed": list(needed)},
            )
        keyset = await asyncio.to_thread(self.keys.load, actor.org_id)
        package_id = str(uuid.uuid4())
        now = self._now()
        await self._insert_draft(
            actor, package_id, entry, "leaver_file", [pupil.id], now, reasons_needed=needed
        )
        tmp = self.outgoing_dir / f"{package_id}.age.tmp"
        # The build lease says a live process is building this draft (see _crashed_draft).
        keeper = asyncio.ensure_future(self._keep_draft(package_id))
        try:
            if needed and reason is not None:
                await self.store.seal_notes(
                    REASON_TABLE, package_id, pupil.id, {REASON_FIELD: reason}
                )
            fh = await asyncio.to_thread(self._create_tmp, tmp)
            try:
                built = await build_leaver_package(
                    self.store,
                    actor,
                    pupil.id,
                    fh,
                    sender=Sender(
                        org_id=keyset.org_id,
                        key_fingerprint=keyset.fingerprint,
                        signing_key_id=keyset.key_id_hex,
                    ),
                    recipient=Recipient(org_id=entry.org_id, key_fingerprint=entry.fingerprint),
                    signer=keyset.minisign_secret_key(),
                    recipients=[X25519Recipient.from_string(entry.recipient)],
                    package_id=UUID(package_id),
                )
                await asyncio.to_thread(self._seal_file, fh, tmp, self.path_of(package_id))
            finally:
                await asyncio.to_thread(fh.close)
        except BaseException as exc:
            keeper.cancel()
            await asyncio.shield(self._drop_draft(package_id, tmp))
            if isinstance(exc, HandoverError):
                await self.store.record_event(
                    "transfer.queued",
                    actor,
                    actor.org_id,
                    {**targets, "package": package_id},
                    "failed",
                    reason=exc.slug,
                )
            if isinstance(exc, OSError):
                raise TransportError(
                    f"cannot write the package to {self.outgoing_dir}: {exc.strerror}"
                ) from None
            raise
        finally:
            keeper.cancel()
            await asyncio.gather(keeper, return_exceptions=True)
        return await self._queue(
            actor, package_id, built, via=via, reason=reason if needed else None
        )

    async def queue_file(
        self,
        actor: Actor,
        *,
        package_path: Path,
        built: BuiltPackage,
        to_org_id: str,
        pupil_ids: Sequence[str],
        kind: PackageKind,
        via: str | None = None,
    ) -> OutgoingRecord:
        """Queue a package built elsewhere (a referral); the outbox takes the file over.

        ``package_path`` must be under ``data_dir/outgoing/``; its size and
        SHA-256 must be those of ``built``, which must be addressed from the
        actor's organisation to ``to_org_id``.
        """
        package_id = str(built.manifest.package_id)
        targets = {"package": package_id, "recipient": to_org_id}
        await self._require(actor, kind, "transfer.queued", targets)
        m = built.manifest
        if m.kind != kind or m.sender.org_id != actor.org_id or m.recipient.org_id != to_org_id:
            raise InputError(
                "the package's manifest does not match what it is queued as (kind, sender or "
                "recipient differ)"
            )
        if not pupil_ids:
            raise InputError("a queued package names at least one pupil")
        src = await asyncio.to_thread(Path(package_path).resolve)
        if src.parent != await asyncio.to_thread(self.outgoing_dir.resolve):
            raise InputError(f"a package to queue must be built under {self.outgoing_dir}")
        try:
            size, sha = await asyncio.to_thread(_file_sha256, src)
        except OSError as exc:
            raise InputError(f"cannot read the package {src.name}: {exc.strerror}") from None
        if size != built.ciphertext_size or not hmac.compare_digest(sha, built.ciphertext_sha256):
            raise IntegrityError(
                "the package file is not the one that was built (its size or SHA-256 differ)"
            )
        entry = await self.directory.entry(to_org_id)
        await self._insert_draft(actor, package_id, entry, kind, list(pupil_ids), self._now())
        try:
            await asyncio.to_thread(self._adopt, src, self.path_of(package_id))
        except OSError as exc:
            await self._drop_draft(package_id, None)
            raise TransportError(
                f"cannot move the package into the outbox: {exc.strerror}"
            ) from None
        return await self._queue(actor, package_id, built, via=via)

    def _create_tmp(self, tmp: Path) -> BinaryIO:
        self.outgoing_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        return os.fdopen(fd, "wb")

    def _seal_file(self, fh: BinaryIO, tmp: Path, final: Path) -> None:
        fh.flush()
        os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.outgoing_dir)

    def _adopt(self, src: Path, final: Path) -> None:
        with src.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(src, final)
        _fsync_dir(self.outgoing_dir)

    async def _insert_draft(
        self,
        actor: Actor,
        package_id: str,
        entry: DirectoryEntry,
        kind: str,
        pupil_ids: Sequence[str],
        now: datetime,
        *,
        reasons_needed: Sequence[str] = (),
    ) -> None:
        try:
            async with self.store.sessions() as s, s.begin():
                await s.execute(
                    insert(_p).values(
                        id=package_id,
                        org_id=actor.org_id,
                        to_org_id=entry.org_id,
                        to_name=entry.name[:200],
                        kind=kind,
                        state="draft",
                        created_by=actor.staff_id,
                        created_at=now,
                        state_changed_at=now,
                        attempts=0,
                        pulls=0,
                        claimed_by=self.worker_id,
                        lease_until=now + self.lease,
                        reasons_needed=",".join(reasons_needed) or None,
                    )
                )
                for pupil_id in dict.fromkeys(pupil_ids):
                    await s.execute(
                        insert(outgoing_pupils).values(package_id=package_id, pupil_id=pupil_id)
                    )
                await s.execute(self._event(package_id, "draft", "draft", now, actor))
        except sa_exc.IntegrityError:
            raise ConflictError(f"package {package_id} is already in the outbox") from None

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

    async def _queue(
        self,
        actor: Actor,
        package_id: str,
        built: BuiltPackage,
        *,
        via: str | None,
        reason: str | None = None,
    ) -> OutgoingRecord:
        try:
            return await self._queue_built(actor, package_id, built, via=via, reason=reason)
        except _DraftGoneError:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self.path_of(package_id).unlink, True)
            raise ConflictError(
                f"package {package_id} was removed while it was being built (its build took "
                "too long, or it was cancelled); send it again"
            ) from None

    async def _queue_built(
        self,
        actor: Actor,
        package_id: str,
        built: BuiltPackage,
        *,
        via: str | None,
        reason: str | None,
    ) -> OutgoingRecord:
        now = self._now()
        draft = await self._row(package_id)
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == package_id, *_moves(On.BUILT))
                .values(
                    **_to(On.BUILT),
                    queued_at=now,
                    state_changed_at=now,
                    next_attempt_at=now,
                    claimed_by=None,
                    lease_until=None,
                    ciphertext_size=built.ciphertext_size,
                    ciphertext_sha256=built.ciphertext_sha256,
                    manifest_sha256=built.manifest_sha256,
                )
            )
            if draft is None or _rowcount(done) != 1:
                # Cancelled or removed meanwhile (its build lease had run out): not queued.
                raise _DraftGoneError(package_id)
            await s.execute(
                self._event(
                    package_id,
                    "queued",
                    "queued",
                    now,
                    actor,
                    detail="reason given" if reason is not None else None,
                )
            )
            intent = await self._intend(
                s,
                "transfer.queued",
                actor,
                draft,
                ciphertext_sha256=built.ciphertext_sha256,
                size=built.ciphertext_size,
                via=via,
                reasons_needed=draft.reasons_needed,
            )
        await self.store.settle(intent)
        row = await self._row(package_id)
        summary = f"{_label(row.kind)} queued for {row.to_name}"
        if reason is not None:
            summary += f" ({_needed_text(row.reasons_needed)}; the reason given: {reason})"
        await self._chronology(actor, row._pupils, "queued", summary, package_id, now)
        return await self._record(row)

    async def _keep_draft(self, package_id: str) -> None:
        """Renew the build lease of a draft while this process builds it (until cancelled)."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            async with self.store.sessions() as s, s.begin():
                await s.execute(
                    update(_p)
                    .where(
                        _p.c.id == package_id,
                        _p.c.state == "draft",
                        _p.c.claimed_by == self.worker_id,
                    )
                    .values(lease_until=self._now() + self.lease)
                )

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
            rows = (await s.execute(query)).all()
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

    async def _record(self, row: Any) -> OutgoingRecord:
        reason = None
        if row.reasons_needed and row._pupils:
            notes = await self.store.open_notes(REASON_TABLE, row.id, row._pupils[0])
            reason = notes.get(REASON_FIELD)
        async with self.store.sessions() as s:
            events = (
                await s.execute(
                    select(outgoing_events)
                    .where(outgoing_events.c.package_id == row.id)
                    .order_by(outgoing_events.c.id)
                )
            ).all()
            receipts = (
                await s.execute(
                    select(outgoing_receipts)
                    .where(outgoing_receipts.c.package_id == row.id)
                    .order_by(outgoing_receipts.c.issued_at, outgoing_receipts.c.receipt_id)
                )
            ).all()
        return _to_record(row, events, receipts, reason)

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
        self, query: Any, *, with_reasons: bool = False
    ) -> builtins.list[OutgoingRecord]:
        """The packages ``query`` selects, with pupils, events and receipts (and, with
        ``with_reasons``, the reason given for each, unsealed: for the people who read them)."""
        async with self.store.sessions() as s:
            rows = (await s.execute(query)).all()
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
            events: dict[str, builtins.list[Any]] = {}
            for e in (
                await s.execute(
                    select(outgoing_events)
                    .where(outgoing_events.c.package_id.in_(ids))
                    .order_by(outgoing_events.c.id)
                )
            ).all():
                events.setdefault(e.package_id, []).append(e)
            receipts: dict[str, builtins.list[Any]] = {}
            for r in (
                await s.execute(
                    select(outgoing_receipts)
                    .where(outgoing_receipts.c.package_id.in_(ids))
                    .order_by(outgoing_receipts.c.issued_at, outgoing_receipts.c.receipt_id)
                )
            ).all():
                receipts.setdefault(r.package_id, []).append(r)
        reasons: dict[str, str | None] = {}
        for row in rows:
            held = pupils.get(row.id)
            if with_reasons and row.reasons_needed and held:
                notes = await self.store.open_notes(REASON_TABLE, row.id, held[0])
                reasons[row.id] = notes.get(REASON_FIELD)
        return [
            _to_record(
                _with_pupils(row, tuple(pupils.get(row.id, ()))),
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

    # ------------------------------------------------------------ cancel, resend

    async def cancel(
        self, actor: Actor, package_id: str, *, via: str | None = None
    ) -> OutgoingRecord:
        """Stop a package that has not been delivered; its file is deleted."""
        row = await self._row_for(actor, package_id)
        await self._require(actor, row.kind, "transfer.cancelled", {"package": row.id})
        now = self._now()
        # A draft is cancelled only when its build was cut short (one being built is busy).
        cancel_from, _ = OUTGOING.update(On.CANCEL)
        built_sources = [state.value for state in cancel_from if state is not Outgoing.DRAFT]
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(
                    _p.c.id == row.id,
                    or_(
                        and_(
                            _p.c.state.in_(built_sources),
                            or_(_p.c.lease_until.is_(None), _p.c.lease_until < now),
                        ),
                        _crashed_draft(now),  # left by a build that was cut short
                    ),
                )
                .values(
                    **_to(On.CANCEL),
                    state_changed_at=now,
                    next_attempt_at=None,
                    claimed_by=None,
                    lease_until=None,
                )
            )
            intents = []
            if _rowcount(done) == 1:
                await s.execute(self._event(row.id, "cancelled", "cancelled", now, actor))
                intents.append(await self._intend(s, "transfer.cancelled", actor, row, via=via))
        await self.store.settle(*intents)
        if _rowcount(done) != 1:
            current = await self._row(row.id)
            await self._audit("transfer.cancelled", actor, current, "refused", state=current.state)
            if current.state in ("queued", "failed"):
                raise ConflictError(
                    "this package is being delivered right now; try again in a few minutes"
                )
            if current.state == "draft":
                raise ConflictError(
                    "this package is being built right now; it is queued in a moment: cancel "
                    "it then"
                )
            raise ConflictError(
                f"this package is {current.state}, so it cannot be cancelled (only a package not "
                "yet delivered can be); if it was delivered, ask the receiver to reject it"
            )
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.path_of(row.id).unlink, True)
            await asyncio.to_thread((self.outgoing_dir / f"{row.id}.age.tmp").unlink, True)
        await self._chronology(
            actor,
            row._pupils,
            "cancelled",
            f"{_label(row.kind)} to {row.to_name} cancelled",
            row.id,
            now,
        )
        return await self._record(await self._row(row.id))

    async def resend(
        self, actor: Actor, package_id: str, *, via: str | None = None
    ) -> OutgoingRecord:
        """Queue a failed package again: the same package id and the same bytes."""
        row = await self._row_for(actor, package_id)
        await self._require(actor, row.kind, "transfer.resent", {"package": row.id})
        if not OUTGOING.can(Outgoing(row.state), On.RESEND):
            await self._audit("transfer.resent", actor, row, "refused", state=row.state)
            raise ConflictError(
                f"this package is {row.state}; only a failed package can be sent again"
            )
        path = self.path_of(row.id)
        if not await asyncio.to_thread(path.is_file):
            await self._audit("transfer.resent", actor, row, "refused", reason="file-missing")
            raise ConflictError(
                "the package's file is no longer in the outbox, so it cannot be sent again; "
                "queue a new one"
            )
        try:
            await self._check_own_copy(path, int(row.ciphertext_size), row.ciphertext_sha256)
        except PackageFileDamagedError as exc:
            await self._audit("transfer.resent", actor, row, "refused", reason="file-damaged")
            raise ConflictError(exc.message) from None
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == row.id, *_moves(On.RESEND))
                .values(
                    **_to(On.RESEND),
                    queued_at=now,
                    state_changed_at=now,
                    next_attempt_at=now,
                    attempts=0,
                    last_error=None,
                    failure_reason=None,
                    claimed_by=None,
                    lease_until=None,
                )
            )
            intents = []
            if _rowcount(done) == 1:
                await s.execute(self._event(row.id, "resent", "queued", now, actor))
                intents.append(await self._intend(s, "transfer.resent", actor, row, via=via))
        await self.store.settle(*intents)
        if _rowcount(done) != 1:
            raise ConflictError("this package changed meanwhile; reload it and try again")
        await self._chronology(
            actor,
            row._pupils,
            "resent",
            f"{_label(row.kind)} to {row.to_name} queued again",
            row.id,
            now,
        )
        return await self._record(await self._row(row.id))

    # ------------------------------------------------------------------ delivery

    async def claim(self, limit: int) -> builtins.list[str]:
        """Claim up to ``limit`` due items for this process (a lease of ``self.lease``)."""
        now = self._now()
        lease = now + self.lease
        due = and_(
            _p.c.state == "queued",
            or_(_p.c.next_attempt_at.is_(None), _p.c.next_attempt_at <= now),
            or_(_p.c.lease_until.is_(None), _p.c.lease_until < now),
        )
        order = (_p.c.next_attempt_at, _p.c.created_at, _p.c.id)
        claim = {"claimed_by": self.worker_id, "lease_until": lease}
        if not self._sqlite:
            async with self.store.sessions() as s, s.begin():
                ids = list(
                    (
                        await s.execute(
                            select(_p.c.id)
                            .where(due)
                            .order_by(*order)
                            .limit(limit)
                            .with_for_update(skip_locked=True)
                        )
                    ).scalars()
                )
                if ids:
                    await s.execute(update(_p).where(_p.c.id.in_(ids)).values(**claim))
            return ids
        async with self.store.sessions() as s:
            candidates = list(
                (
                    await s.execute(select(_p.c.id).where(due).order_by(*order).limit(limit))
                ).scalars()
            )
        claimed: builtins.list[str] = []
        for package_id in candidates:
            async with self.store.sessions() as s, s.begin():
                done = await s.execute(update(_p).where(_p.c.id == package_id, due).values(**claim))
            if _rowcount(done) == 1:
                claimed.append(package_id)
        return claimed

    async def _renew(self, package_id: str) -> None:
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(
                    _p.c.id == package_id, _p.c.claimed_by == self.worker_id, _p.c.state == "queued"
                )
                .values(lease_until=now + self.lease)
            )
        if _rowcount(done) != 1:
            raise LeaseLostError(
                f"package {package_id} was taken over by another process or changed state"
            )

    async def deliver_due(self, *, limit: int = 10) -> int:
        """One delivery sweep: claim up to ``limit`` due items and try each (concurrently).

        Returns how many items were tried. Safe to run in several processes at once.
        """
        await self.discard_stale_drafts()
        ids = await self.claim(limit)
        if ids:
            await asyncio.gather(*(self._deliver(package_id) for package_id in ids))
        return len(ids)

    async def _deliver(self, package_id: str) -> None:
        row = await self._row(package_id)
        if row is None or row.claimed_by != self.worker_id:
            return
        try:
            await self._upload(row)
        except LeaseLostError as exc:
            log.warning("package %s: %s", package_id, exc.message)
        except PeerRefused as exc:
            await self._fail(row, exc.message, slug=exc.slug, status=exc.status)
        except TransportError as exc:
            await self._retry(row, exc.message, slug=exc.slug)
        except IntegrityError as exc:
            if isinstance(exc, (PackageFileMissingError, PackageFileDamagedError)):
                await self._fail(row, exc.message, slug=exc.slug)
            else:
                # A receipt that does not verify, or an answer that makes no sense: the
                # receiver may be mid-way through a key change; try again, give up in time.
                await self._retry(row, exc.message, slug=exc.slug)
        except HandoverError as exc:
            await self._fail(row, exc.message, slug=exc.slug)
        except Exception:
            log.exception("package %s: unexpected error while delivering", package_id)
            await self._retry(row, "an unexpected error on this node (see its log)", slug="error")

    async def _upload(self, row: Any) -> None:
        path = self.path_of(row.id)
        if not await asyncio.to_thread(path.is_file):
            raise PackageFileMissingError(
                f"the package file {path.name} is no longer in the outbox; queue a new package"
            )
        size = int(row.ciphertext_size)
        await self._check_own_copy(path, size, row.ciphertext_sha256)
        frm, to = row.org_id, row.to_org_id
        where = f"{row.to_name} ({to})"
        await self._attempt_started(row)
        start = await self.client.request_json(
            frm,
            to,
            "POST",
            "/peer/v1/packages",
            {
                "package_id": row.id,
                "package_kind": row.kind,
                "sender_org_id": frm,
                "recipient_org_id": to,
                "size": size,
                "ciphertext_sha256": row.ciphertext_sha256,
            },
        )
        if start.get("state") == "delivered" and start.get("receipt") is not None:
            await self._accept_delivery(row, start["receipt"])
            return
        offset = _offset(start.get("offset"), size, where)
        # The lease is renewed every third of its length while the upload runs; a lost lease
        # stops the upload at once.
        sending = asyncio.ensure_future(self._send_body(row, path, offset, where))
        keeper = asyncio.ensure_future(self._keep_lease(row.id))
        try:
            await asyncio.wait({sending, keeper}, return_when=asyncio.FIRST_COMPLETED)
            if not sending.done():
                keeper.result()  # the keeper only ends by failing: the lease was lost
            await sending
        finally:
            for task in (sending, keeper):
                task.cancel()
            await asyncio.gather(sending, keeper, return_exceptions=True)
        if not await self._has_event(row.id, "sent"):
            now = self._now()
            async with self.store.sessions() as s, s.begin():
                await s.execute(self._event(row.id, "sent", "queued", now))
                intent = await self._intend(s, "transfer.sent", None, row, size=size)
            await self.store.settle(intent)
        target = f"/peer/v1/packages/{row.id}/complete"
        done = await self.client.request_json(frm, to, "POST", target, {})
        await self._accept_delivery(row, done.get("receipt"))

    async def _check_own_copy(self, path: Path, size: int, sha256: str) -> None:
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

    async def _keep_lease(self, package_id: str) -> None:
        """Renew this process's lease on an item until cancelled; raises once it is lost."""
        interval = self.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(interval)
            await self._renew(package_id)

    async def _send_body(self, row: Any, path: Path, offset: int, where: str) -> None:
        """``PATCH`` the package's bytes from ``offset`` until the receiver holds them all.

        Each request carries at most ``transfer.chunk_bytes``; by default the whole rest of
        the package. Its ``Content-Digest`` must be in the headers (the signature covers it):
        for the whole package from offset 0 it is the package's known SHA-256, otherwise the
        range is hashed first (the next range while this one is on the wire).
        """
        size = int(row.ciphertext_size)
        frm, to = row.org_id, row.to_org_id
        chunk = self.config.transfer.chunk_bytes
        target = f"/peer/v1/packages/{row.id}"
        digests = _ChunkDigests(path)
        conflicts = 0
        try:
            while offset < size:
                n = min(chunk, size - offset)
                if offset == 0 and n == size:
                    digest = digest_header(bytes.fromhex(row.ciphertext_sha256))
                else:
                    digest = await digests.get(offset, n)
                    # The next chunk is hashed while this one is on the wire.
                    digests.prefetch(offset + n, min(chunk, size - offset - n))
                try:
                    resp = await self.client.request(
                        frm,
                        to,
                        "PATCH",
                        target,
                        data=_read_range(path, offset, n),
                        digest=digest,
                        headers={
                            "Content-Type": "application/offset+octet-stream",
                            "Upload-Offset": str(offset),
                            "Content-Length": str(n),
                        },
                    )
                except PeerRefused as exc:
                    if exc.status != 409 or conflicts >= _MAX_OFFSET_CONFLICTS:
                        raise
                    conflicts += 1
                    held = exc.problem.get("offset")
                    if held is None:
                        head = await self.client.request(frm, to, "HEAD", target)
                        held = head.headers.get("Upload-Offset")
                    offset = _offset(held, size, where)
                    continue
                conflicts = 0
                self.bytes_sent += n
                offset = _offset(resp.headers.get("Upload-Offset"), size, where)
        finally:
            digests.close()

    async def _attempt_started(self, row: Any) -> None:
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == row.id, _p.c.claimed_by == self.worker_id)
                .values(attempts=_p.c.attempts + 1)
            )
        if _rowcount(done) != 1:
            raise LeaseLostError(f"package {row.id} was taken over by another process")

    async def _has_event(self, package_id: str, event: str) -> bool:
        async with self.store.sessions() as s:
            found = (
                await s.execute(
                    select(outgoing_events.c.id)
                    .where(
                        outgoing_events.c.package_id == package_id, outgoing_events.c.event == event
                    )
                    .limit(1)
                )
            ).first()
        return found is not None

    async def _accept_delivery(self, row: Any, value: object) -> None:
        signed = _receipt_from_json(value)
        if signed.body.kind != "delivered":
            raise IntegrityError(
                f"the other node answered the upload with a {signed.body.kind} receipt, "
                "not a delivered one"
            )
        await self.record_receipt(signed)
        await self._release(row.id)

    async def _release(self, package_id: str) -> None:
        async with self.store.sessions() as s, s.begin():
            await s.execute(
                update(_p)
                .where(_p.c.id == package_id, _p.c.claimed_by == self.worker_id)
                .values(claimed_by=None, lease_until=None)
            )

    async def _retry(self, row: Any, message: str, *, slug: str) -> None:
        now = self._now()
        current = await self._row(row.id)
        if current is None or current.claimed_by != self.worker_id or current.state != "queued":
            await self._release(row.id)
            return
        queued_at = current.queued_at or current.created_at
        if backoff.should_give_up(queued_at, now, self.config.transfer.give_up_hours):
            hours = self.config.transfer.give_up_hours
            await self._fail(
                current,
                f"not delivered within {plural(hours, 'hour')}; the last error was: {message}",
                slug=slug,
                gave_up=True,
            )
            return
        when = self._delay(max(1, int(current.attempts)))
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == row.id, _p.c.claimed_by == self.worker_id, _p.c.state == "queued")
                .values(
                    next_attempt_at=when,
                    last_error=_short(message),
                    claimed_by=None,
                    lease_until=None,
                )
            )
            intents = []
            if _rowcount(done) == 1:
                await s.execute(self._event(row.id, "retry", "queued", now, detail=message))
                attempt = await self._intend(
                    s,
                    "transfer.attempt",
                    None,
                    current,
                    "failed",
                    reason=slug,
                    attempt=int(current.attempts),
                    next_attempt=when.isoformat(),
                )
                intents.append(attempt)
        log.info("package %s not delivered yet (%s); next try at %s", row.id, message, when)
        await self.store.settle(*intents)

    async def _fail(
        self,
        row: Any,
        message: str,
        *,
        slug: str,
        status: int | None = None,
        gave_up: bool = False,
    ) -> None:
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            done = await s.execute(
                update(_p)
                .where(_p.c.id == row.id, _p.c.claimed_by == self.worker_id, *_moves(On.GIVE_UP))
                .values(
                    **_to(On.GIVE_UP),
                    state_changed_at=now,
                    failure_reason=_short(message),
                    last_error=_short(message),
                    next_attempt_at=None,
                    claimed_by=None,
                    lease_until=None,
                )
            )
            intents = []
            if _rowcount(done) == 1:
                await s.execute(self._event(row.id, "failed", "failed", now, detail=message))
                failed = await self._intend(
                    s,
                    "transfer.failed",
                    None,
                    row,
                    "failed",
                    reason=slug,
                    peer_status=status,
                    gave_up=gave_up,
                )
                intents.append(failed)
        if _rowcount(done) != 1:
            await self._release(row.id)
            return
        log.warning("package %s failed: %s", row.id, message)
        await self.store.settle(*intents)
        await self._chronology(
            None,
            row._pupils,
            "failed",
            f"{_label(row.kind)} to {row.to_name} could not be delivered: {message}"[:1000],
            row.id,
            now,
        )

    # ------------------------------------------------------------------ receipts

    async def record_receipt(self, signed: SignedReceipt) -> None:
        """Verify a receipt for one of our packages and record it (see :meth:`take_receipt`)."""
        await self.take_receipt(signed)

    async def take_receipt(self, signed: SignedReceipt) -> bool:
        """Verify a receipt for one of our packages and record it; move the state on.

        Idempotent: a receipt already held changes nothing (returns False).
        Returns True when the receipt is new. A receipt that does not verify,
        or is not for a package this node sent to its issuer, is refused
        (:class:`~transfer.errors.IntegrityError` or :class:`NotFoundError`),
        audited as ``receipt.refused``, and changes nothing; so is a receipt that
        contradicts the package's final state (a rejected receipt for a package
        already accepted, or the other way round:
        :class:`~transfer.receipts.ReceiptContradictionError`).
        """
        body = signed.body
        package_id = str(body.package_id)
        row = await self._row(package_id)
        if row is None:
            await self.store.record_event(
                "receipt.refused",
                None,
                None,
                {"package": package_id, "receipt": str(body.receipt_id)},
                "refused",
                reason="unknown-package",
                issuer=body.receiver_org_id,
            )
            raise NotFoundError(f"this node sent no package {package_id}")
        try:
            await self._verify(row, signed)
        except HandoverError as exc:
            await self._audit(
                "receipt.refused",
                None,
                row,
                "refused",
                reason=exc.slug,
                receipt=str(body.receipt_id),
                receipt_kind=body.kind,
            )
            raise
        new_state = body.kind
        for _ in range(3):
            try:
                stored = await self._store_receipt(signed, row)
            except _RacedError:
                continue  # another process moved the state at the same moment: look again
            except sa_exc.IntegrityError:
                stored = None  # another process stored this receipt at the same moment
            except ReceiptContradictionError as exc:
                await self._audit(
                    "receipt.refused",
                    None,
                    row,
                    "refused",
                    reason=exc.slug,
                    receipt=str(body.receipt_id),
                    receipt_kind=body.kind,
                )
                raise
            break
        else:
            raise ConflictError(
                "the package kept changing while the receipt was being recorded; send it again"
            )
        if stored is None:
            return False
        moved, intents = stored
        await self.store.settle(*intents)
        if moved:
            await self._chronology(
                None,
                row._pupils,
                new_state,
                _receipt_summary(row, body),
                package_id,
                body.issued_at,
            )
        record = await self._record(await self._row(package_id))
        for listener in list(self.on_receipt):
            try:
                await listener(record, signed)
            except Exception:
                log.exception("a receipt listener failed for package %s", package_id)
        return True

    async def _store_receipt(
        self, signed: SignedReceipt, row: Any
    ) -> tuple[bool, builtins.list[AuditIntent]] | None:
        """Keep the receipt, move the state on and promise their audit entries, in one
        transaction.

        None: the receipt was already held. Otherwise whether the state moved, and the
        audit entries to settle. A package that reaches a final state without holding
        every earlier receipt the receiver may have issued (the delivered one, whose
        answer was lost; the viewed one, pushed later) is due for one more pull.
        """
        body = signed.body
        package_id = str(row.id)
        now = self._now()
        async with self.store.sessions() as s, s.begin():
            exists = (
                await s.execute(
                    select(outgoing_receipts.c.receipt_id).where(
                        outgoing_receipts.c.receipt_id == str(body.receipt_id)
                    )
                )
            ).first()
            if exists is not None:
                return None
            await s.execute(
                insert(outgoing_receipts).values(
                    receipt_id=str(body.receipt_id),
                    package_id=package_id,
                    kind=body.kind,
                    issued_at=body.issued_at,
                    received_at=now,
                    body=signed.body_bytes,
                    signature=signed.signature_text,
                )
            )
            current = (
                await s.execute(select(_p.c.state).where(_p.c.id == package_id))
            ).scalar_one()
            event = _RECEIPT_EVENTS[body.kind]
            if not OUTGOING.can(Outgoing(current), event) and contradicts_final(current, body.kind):
                # Raised inside the transaction: the receipt inserted above is rolled back.
                raise ReceiptContradictionError(
                    f"package {package_id} was already {current} by the receiver; a "
                    f"{body.kind} receipt for it contradicts that, so it was refused and not "
                    "kept (the attempt is in the audit log)"
                )
            moved = False
            step = (
                OUTGOING.step(Outgoing(current), event)
                if OUTGOING.can(Outgoing(current), event)
                else None  # a draft's receipt (it cannot have been sent): kept, no move
            )
            if step is not None and step.changes:
                values: dict[str, Any] = {
                    "state": step.target.value,
                    "state_changed_at": now,
                    "next_attempt_at": None,
                    "failure_reason": None,
                }
                if OUTGOING.is_final(step.target):
                    held = await s.execute(
                        select(outgoing_receipts.c.kind).where(
                            outgoing_receipts.c.package_id == package_id
                        )
                    )
                    missing = not {"delivered", "viewed"} <= set(held.scalars())
                    values.update(next_pull_at=now if missing else None, pulls=0)
                done = await s.execute(
                    update(_p).where(_p.c.id == package_id, _p.c.state == current).values(**values)
                )
                if _rowcount(done) != 1:
                    raise _RacedError
                moved = True
            await s.execute(
                self._event(
                    package_id, f"receipt.{body.kind}", body.kind if moved else current, now
                )
            )
            verified = await self._intend(
                s,
                "receipt.verified",
                None,
                row,
                receipt=str(body.receipt_id),
                receipt_kind=body.kind,
                issued_at=body.issued_at.isoformat(),
            )
            intents = [verified]
            if moved:
                intents.append(
                    await self._intend(
                        s, f"transfer.{body.kind}", None, row, receipt=str(body.receipt_id)
                    )
                )
        return moved, intents

    async def _verify(self, row: Any, signed: SignedReceipt) -> None:
        body = signed.body
        if row.state == "draft" or row.ciphertext_sha256 is None:
            raise ConflictError("the package this receipt names has not been queued yet")
        if body.sender_org_id != row.org_id or body.package_kind != row.kind:
            raise IntegrityError(
                "the receipt does not match the package sent (sender or kind differ)"
            )
        entry = await self.directory.entry(row.to_org_id)
        if body.receiver_key_id not in entry.key_ids():
            raise IntegrityError(
                f"the receipt is signed with key {body.receiver_key_id}, which is not a key of "
                f"{row.to_name} ({row.to_org_id}) in the directory"
            )
        raw = await self.directory.signing_public_key(body.receiver_key_id, body.issued_at)
        public = minisign.PublicKey(key_id=parse_key_id(body.receiver_key_id), key=raw)
        verify_receipt(
            signed,
            public_key=public,
            package_id=UUID(row.id),
            ciphertext_sha256=row.ciphertext_sha256,
            receiver_org_id=row.to_org_id,
        )
        if body.ciphertext_size != row.ciphertext_size:
            raise IntegrityError("the receipt names a different package size from the one sent")
        if (
            body.kind == "accepted"
            and row.manifest_sha256 is not None
            and not hmac.compare_digest(str(body.manifest_sha256), row.manifest_sha256)
        ):
            raise IntegrityError(
                "the accepted receipt names a different manifest from the one sent"
            )

    def stored_receipt(self, body: bytes, signature: str) -> SignedReceipt:
        """A held receipt as a :class:`SignedReceipt` (its exact signed bytes)."""
        try:
            parsed = ReceiptBody.from_bytes(body)
        except ReceiptDecodeError as exc:
            raise IntegrityError(f"a stored receipt is damaged: {exc}") from None
        return SignedReceipt(body=parsed, body_bytes=body, signature_text=signature)

    async def pull_receipts(self, *, limit: int = 50) -> int:
        """Ask receivers for the receipts of packages that may still lack some.

        Packages delivered and not yet accepted or rejected, and those that reached
        accepted or rejected without holding every earlier receipt (``next_pull_at``
        set by :meth:`_store_receipt`; cleared by the first pull that is answered).
        A fall-back to receipts pushed by the receiver: each package is asked
        again after a growing pause. Returns how many new receipts were recorded.
        """
        now = self._now()
        async with self.store.sessions() as s:
            rows = (
                await s.execute(
                    select(_p)
                    .where(
                        or_(
                            and_(
                                _p.c.state.in_(("delivered", "viewed")),
                                or_(_p.c.next_pull_at.is_(None), _p.c.next_pull_at <= now),
                            ),
                            and_(
                                _p.c.state.in_(("accepted", "rejected")),
                                _p.c.next_pull_at <= now,
                            ),
                        )
                    )
                    .order_by(_p.c.next_pull_at, _p.c.id)
                    .limit(limit)
                )
            ).all()
        base = max(self.config.transfer.sweep_seconds, self.config.transfer.retry_base_seconds)
        recorded = 0
        for row in rows:
            pulls = int(row.pulls) + 1
            async with self.store.sessions() as s, s.begin():
                await s.execute(
                    update(_p)
                    .where(_p.c.id == row.id)
                    .values(pulls=pulls, next_pull_at=self._delay(pulls, base))
                )
            try:
                answer = await self.client.request_json(
                    row.org_id, row.to_org_id, "GET", f"/peer/v1/packages/{row.id}/receipts"
                )
            except HandoverError as exc:
                log.info("package %s: cannot pull receipts yet (%s)", row.id, exc.message)
                continue
            items = answer.get("receipts")
            if not isinstance(items, list):
                log.warning("package %s: the receiver's receipt list is malformed", row.id)
                continue
            # Oldest first: a delivered receipt is recorded before the ones that follow it.
            for item in items[:100]:
                try:
                    if await self.take_receipt(_receipt_from_json(item)):
                        recorded += 1
                except HandoverError as exc:
                    log.warning("package %s: a pulled receipt was refused: %s", row.id, exc.message)
            if row.state in ("accepted", "rejected"):
                # The receiver answered after its final word: it has nothing more to give.
                async with self.store.sessions() as s, s.begin():
                    await s.execute(
                        update(_p)
                        .where(_p.c.id == row.id, _p.c.state.in_(("accepted", "rejected")))
                        .values(next_pull_at=None)
                    )
        return recorded


def _moves(event: On) -> tuple[ColumnElement[bool]]:
    """The ``WHERE`` of the conditional update applying ``event`` (its machine's sources)."""
    sources, _ = OUTGOING.update(event)
    return (_p.c.state.in_([state.value for state in sources]),)


def _to(event: On) -> dict[str, str]:
    """The ``SET state = ...`` of the conditional update applying ``event``."""
    return {"state": OUTGOING.update(event)[1].value}


def _receipt_summary(row: Any, body: ReceiptBody) -> str:
    label, to = _label(row.kind), row.to_name
    who = f" by {body.acted_by.name} ({body.acted_by.role})" if body.acted_by else ""
    if body.kind == "delivered":
        return f"{label} delivered to {to} (signed receipt verified)"
    if body.kind == "viewed":
        return f"{label} opened at {to}{who}"
    if body.kind == "accepted":
        return f"{label} accepted by {to}{who}"
    return f"{label} rejected by {to}{who}: {body.reason}"[:1000]


class _RowWithPupils:
    """A package row with its pupil ids attached (``row._pupils``)."""

    def __init__(self, row: Row[Any], pupils: tuple[str, ...]) -> None:
        self._row = row
        self._pupils = pupils

    def __getattr__(self, name: str) -> Any:
        return getattr(self._row, name)


def _with_pupils(row: Row[Any], pupils: tuple[str, ...]) -> Any:
    return _RowWithPupils(row, pupils)


def _needed_text(codes: str | None) -> str:
    words = {"repeat": "sent again", "not_destination": "not the recorded destination"}
    return ", ".join(words.get(c, c) for c in (codes or "").split(",") if c)


def _to_record(
    row: Any, events: Sequence[Any], receipts: Sequence[Any], reason: str | None = None
) -> OutgoingRecord:
    held: list[OutgoingReceipt] = []
    for r in receipts:
        body = json.loads(bytes(r.body))
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
        pupil_ids=tuple(row._pupils),
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
