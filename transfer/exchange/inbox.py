"""The receiving school's inbox: uploads from other nodes, then the DSL's preview, accept, reject.

Peer side (called by :mod:`transfer.exchange.peer_server` once a request's
signature has checked):

- :meth:`Inbox.offer` registers a package *before any byte*: the sender is
  the signing organisation, the recipient is hosted here, the size is within
  ``transfer.max_package_bytes``. The same package id again resumes (or, once
  delivered, returns the delivered receipt); the same id with another size,
  hash or sender is a conflict.
- :meth:`Inbox.receive_chunk` streams one chunk to
  ``data_dir/incoming/<id>.part`` at the held offset, hashing as it goes; a
  chunk whose bytes do not match its ``Content-Digest``, or that is cut short,
  is truncated away, so the held offset is always the last good one. The
  chunk is fsynced before the new offset is committed.
- :meth:`Inbox.complete` checks size and SHA-256 of the whole ciphertext,
  decrypts *only the manifest* (in memory), checks its signature, sender and
  addressee, moves the file to ``data_dir/inbox/<id>.age`` and issues the
  signed **delivered** receipt. Idempotent.

DSL side (the recipient organisation's DSL team, ``Permission.RECEIVE_TRANSFER``):
:meth:`list`, :meth:`show` (verify the whole package, preview it with the
plaintext only in memory; first view issues a **viewed** receipt),
:meth:`accept` (verify again and import, :mod:`transfer.exchange.importing`;
**accepted** receipt) and :meth:`reject` (**rejected** receipt, with the
reason). Once accepted or rejected the ciphertext is deleted: the imported
records live in the store, where erasure can reach them.

A **referral** (package kind ``referral_*``, received by an agency: MASH,
the LADO, the police) is not imported: :meth:`accept_referral` verifies it in
full and records the agency's own reference number, which goes back in the
signed accepted receipt; the verified ciphertext stays in ``data_dir/inbox``
for the agency's case work and can be shown again. :meth:`accept_package`
chooses between the two by the package's kind (the API and the CLI use it).

Receipts other than "delivered" are queued and pushed to the sender's node by
:mod:`transfer.exchange.receipt_push`; all of them are also served to the
sender on request.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import hashlib
import hmac
import logging
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from keys.keyset import KeySet
from keys.store import KeyStore
from schemas import jsontext
from schemas.directory import DirectoryEntry
from schemas.manifest import ManifestEntry, Subject
from schemas.peer import OfferBody
from schemas.receipt import MAX_REFERENCE, ReceiptActor, ReceiptBody, ReceiptKind
from schemas.records import ChronologyEntry, PersonRecord, PupilRecord
from schemas.referrals import ReferralForm
from transfer.age import X25519Identity
from transfer.audit.log import AuditLog
from transfer.config import Config
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
    InsufficientStorageError,
    IntegrityError,
    NotFoundError,
    TooLargeError,
    TransportError,
)
from transfer.exchange.importing import (
    Importer,
    ImportPlan,
    PackageRecords,
    RecordsError,
    RecordsImported,
    RecordTooLargeError,
    is_record_path,
    parse_records,
)
from transfer.exchange.inbox_tables import (
    ACCEPTED,
    DELIVERED,
    OPEN_STATES,
    PUSH_NONE,
    PUSH_PENDING,
    RECEIVING,
    REFUSED,
    REJECTED,
    VIEWED,
    IncomingPackage,
    IssuedReceipt,
)
from transfer.httpsig import DigestHasher, DigestMismatchError, check_digest
from transfer.package.layout import Addressee, SenderKeys, VerifiedPackage
from transfer.package.open import inspect_package, verify_package
from transfer.receipts import SignedReceipt, sign_receipt
from transfer.space import as_out_of_space, free_bytes
from transfer.states.incoming import INCOMING, IncomingEvent
from transfer.store import people
from transfer.store.base import AuditIntent
from transfer.store.db import sessionmaker
from transfer.store.organisations import DEFAULT_CATEGORIES
from transfer.store.permissions import Actor, Permission, PermissionDenied, require
from transfer.store.readable import (
    ReadableDocument,
    ReadableFile,
    about_line,
    readable_file,
    size_in_words,
)
from transfer.store.service import Store
from transfer.wording import plural

__all__ = [
    "AcceptOutcome",
    "Inbox",
    "InboxAcceptance",
    "InboxPreview",
    "IncomingSummary",
    "PeerCaller",
    "PupilMatch",
    "ReferenceRequiredError",
    "is_referral",
]

log = logging.getLogger("handover.inbox")

_HASH_CHUNK = 1024 * 1024
#: Pass 2 of an import runs here, not in the default pool, so that its waits on the event
#: loop can never starve the loop's own short file writes of a thread.
_IMPORT_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="handover-import")
_CHRONOLOGY = TypeAdapter(list[ChronologyEntry])
_FORM: TypeAdapter[Any] = TypeAdapter(ReferralForm)
#: The referral form's entry in a referral package (``transfer.referrals.package.FORM_PATH``).
_FORM_PATH = "records/referral.json"
_CHRONOLOGY_PATH = "records/chronology.json"
#: Who the sender's staff ids in the records are (``transfer.package.from_store.PEOPLE_PATH``).
_PEOPLE_PATH = "records/people.json"
_PEOPLE = TypeAdapter(list[PersonRecord])
_CATEGORY_LABELS: Mapping[str, str] = {k: label for k, (label, _) in DEFAULT_CATEGORIES.items()}
_MAX_REASON = 500

Via = Literal["api", "cli", "web"]


def _moves(event: IncomingEvent) -> tuple[ColumnElement[bool]]:
    """The ``WHERE`` of the conditional update applying ``event`` (its machine's sources)."""
    sources, _ = INCOMING.update(event)
    return (IncomingPackage.state.in_([state.value for state in sources]),)


def _to(event: IncomingEvent) -> dict[str, str]:
    """The ``SET state = ...`` of the conditional update applying ``event``."""
    return {"state": INCOMING.update(event)[1].value}


class InboxDirectory(Protocol):
    """What the inbox needs from the directory (``transfer.directory.service.Directory``)."""

    async def entry(self, org_id: str) -> DirectoryEntry: ...

    async def sender_keys(self) -> SenderKeys: ...


@dataclass(frozen=True)
class PeerCaller:
    """The organisation a verified peer request comes from."""

    org_id: str
    name: str
    key_id: str


class OffsetMismatchError(ConflictError):
    """The chunk does not start where the upload stands."""

    slug = "upload-offset-mismatch"
    title = "The chunk does not start at the offset held"


class UploadBusyError(ConflictError):
    """Another request is writing to the same upload just now."""

    slug = "upload-busy"
    title = "Another upload of this package is in progress"


class ReferenceRequiredError(InputError):
    """A referral is accepted only with the agency's own reference number."""

    http_status = 422
    slug = "reference-required"
    title = "The agency's reference number is required"


def is_referral(package_kind: str) -> bool:
    """Whether a package of this kind is a referral (kept, never imported)."""
    return package_kind.startswith("referral_")


def _clean_reference(reference: str | None) -> str | None:
    """The reference with its spacing normalised; InputError if it cannot go in a receipt."""
    if reference is None:
        return None
    text = " ".join(reference.split())
    if not text or len(text) > MAX_REFERENCE or not text.isprintable():
        raise InputError(
            f"the reference must be 1 to {MAX_REFERENCE} printable characters "
            "(your own case or reference number; it goes to the sender)"
        )
    return text


class PackageRefusedError(ConflictError):
    """The package was refused earlier; it will not be taken again under the same id."""

    slug = "package-refused"
    title = "The package was refused"


# ----------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IncomingSummary(_Model):
    """An incoming package as the inbox lists it (no content)."""

    package_id: str
    state: str
    package_kind: str
    sender_org_id: str
    sender_name: str
    recipient_org_id: str
    size: int
    received: int
    ciphertext_sha256: str
    manifest_sha256: str | None = None
    entries: int | None = None
    content_size: int | None = None
    offered_at: AwareDatetime
    delivered_at: AwareDatetime | None = None
    viewed_at: AwareDatetime | None = None
    decided_at: AwareDatetime | None = None
    decided_by: str | None = None
    pupil_id: str | None = None
    #: The receiver's own reference given on accepting (required for a referral).
    reference: str | None = None


class PreviewDocument(_Model):
    path: str
    size: int
    sha256: str
    filename: str | None = None
    media_type: str | None = None


class PupilMatch(_Model):
    """Our pupil with the package's UPN, and whether date of birth and name agree."""

    pupil_id: str
    matches: bool
    upn: str | None
    surname: str
    forename: str
    dob: str | None


class InboxPreview(_Model):
    """What a DSL sees before accepting: checked in full, shown from memory."""

    package: IncomingSummary
    subject: Subject
    manifest: dict[str, Any]
    counts: dict[str, int]
    pupil: PupilRecord | None
    chronology: tuple[ChronologyEntry, ...]
    documents: tuple[PreviewDocument, ...]
    match: PupilMatch | None
    #: A referral's form (``records/referral.json``), checked against its schema.
    referral: dict[str, Any] | None = None
    #: Who the sender's staff ids in the records are (``records/people.json``; empty for a
    #: package from a node that does not send it).
    people: tuple[PersonRecord, ...] = ()
    #: The chronology and documents as a DSL reads them: in time order, dates in words,
    #: categories, who recorded each line, triage decisions, actions, documents by name.
    readable: ReadableFile | None = None


class AcceptOutcome(_Model):
    package: IncomingSummary
    pupil_id: str
    new_pupil: bool
    matched_by: str
    counts: dict[str, int]
    skipped: int
    #: Records already held from the same sender, unchanged: not imported again.
    held: int = 0
    #: Changed versions of records already held: kept beside the earlier version.
    amended: int = 0


class InboxAcceptance(_Model):
    """What accepting did: a leaver's file imported (pupil, counts), or a referral kept."""

    package: IncomingSummary
    #: False for a referral: kept as verified ciphertext, nothing imported.
    imported: bool
    reference: str | None = None
    pupil_id: str | None = None
    new_pupil: bool | None = None
    matched_by: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    skipped: int = 0
    #: Records already held from the same sender, unchanged: not imported again.
    held: int = 0
    #: Changed versions of records already held: kept beside the earlier version.
    amended: int = 0


def _summary(row: IncomingPackage, reference: str | None = None) -> IncomingSummary:
    return IncomingSummary(
        package_id=row.id,
        state=row.state,
        package_kind=row.package_kind,
        sender_org_id=row.sender_org_id,
        sender_name=row.sender_name,
        recipient_org_id=row.recipient_org_id,
        size=row.size,
        received=row.received,
        ciphertext_sha256=row.ciphertext_sha256,
        manifest_sha256=row.manifest_sha256,
        entries=row.entries,
        content_size=row.content_size,
        offered_at=row.offered_at,
        delivered_at=row.delivered_at,
        viewed_at=row.viewed_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        pupil_id=row.pupil_id,
        reference=reference,
    )


def _package_id(text: str | uuid.UUID) -> str:
    try:
        return str(text if isinstance(text, uuid.UUID) else uuid.UUID(str(text)))
    except ValueError:
        raise NotFoundError("there is no such package (a package id is a UUID)") from None


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while block := f.read(_HASH_CHUNK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _hash_and_write(fd: int, hasher: DigestHasher, piece: bytes, offset: int) -> int:
    """Hash ``piece`` and write it at ``offset``, on the event loop; the bytes written.

    Each piece of a received body is hashed and written where it is read, as a plain
    aiohttp upload handler writes its file: measured on the two-core machine, handing
    batches to a worker thread made a 1 GiB upload about 1.5 times slower (the worker
    and the event loop passed the GIL to and fro, and three busy threads shared two
    cores). Writing into the page cache does not wait for the disk; the fsyncs of the
    checkpoints run in a worker.
    """
    hasher.update(piece)
    view = memoryview(piece)
    total = 0
    while total < len(view):
        n = os.pwrite(fd, view[total:], offset + total)
        if n <= 0:
            raise OSError(errno.EIO, "the disk accepted no more of the chunk")
        total += n
    return total


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _role_of(actor: Actor) -> str:
    return people.main_role(r.value for r in actor.roles) or "staff"


@dataclass(frozen=True)
class RecordLimits:
    """How much of a package's records opening it reads into memory (see ``docs/operations.md``,
    ``transfer.max_record_bytes`` and ``transfer.max_records_bytes``)."""

    per_record: int
    total: int


@dataclass
class _Read:
    """What one full verification pass kept, parsed: the records (and, when asked, the
    chronology; for a referral, its form), and the documents' entries."""

    verified: VerifiedPackage
    records: PackageRecords
    chronology: tuple[ChronologyEntry, ...]
    form: dict[str, Any] | None
    documents: list[ManifestEntry]
    people: tuple[PersonRecord, ...] = ()
    #: With the chronology: the preview as a DSL reads it.
    readable: ReadableFile | None = None


# ------------------------------------------------------------------ the inbox


class Inbox:
    """The incoming packages of every organisation hosted on this node."""

    def __init__(
        self,
        *,
        store: Store,
        kek: bytes,
        keys: KeyStore,
        directory: InboxDirectory,
        config: Config,
        data_dir: Path,
        audit_log: AuditLog | None = None,
        clock: Callable[[], datetime] | None = None,
        free_space: Callable[[Path], int] = free_bytes,
    ) -> None:
        self.store = store
        self.keys = keys
        self.directory = directory
        self.config = config
        self.audit_log = audit_log
        self.importer = Importer(store, kek)
        self._sessions: async_sessionmaker[AsyncSession] = sessionmaker(store.engine)
        self._clock = clock or store.now
        self.incoming_dir = data_dir / "incoming"
        self.inbox_dir = data_dir / "inbox"
        #: Bytes free on the file system holding a path (``transfer.space.free_bytes``).
        self.free_space = free_space
        #: Uploads whose whole body came in one request from offset 0, with its checked
        #: digest: ``complete`` need not read the file again (in this process only).
        self._whole_sha256: dict[str, str] = {}

    # ---------------------------------------------------------------- plumbing

    def now(self) -> datetime:
        return self._clock().astimezone(UTC)

    def part_path(self, package_id: str) -> Path:
        return self.incoming_dir / f"{package_id}.part"

    def inbox_path(self, package_id: str) -> Path:
        return self.inbox_dir / f"{package_id}.age"

    async def _audit(
        self,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str],
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        await self.store.record_event(action, actor, org, targets, outcome=outcome, **detail)

    async def _intend(
        self,
        session: AsyncSession,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str],
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> AuditIntent:
        """The audit entry of a change, promised in the change's own transaction."""
        return await self.store.intend(session, action, actor, org, targets, outcome, **detail)

    @staticmethod
    async def _push_delivered_too(session: AsyncSession, package_id: str, now: datetime) -> None:
        """A later receipt is pushed: push the delivered one with it, in case the answer
        to ``complete`` that carried it never reached the sender (it keeps it once)."""
        await session.execute(
            update(IssuedReceipt)
            .where(
                IssuedReceipt.package_id == package_id,
                IssuedReceipt.kind == DELIVERED,
                IssuedReceipt.push_state == PUSH_NONE,
            )
            .values(push_state=PUSH_PENDING, next_attempt_at=now)
        )

    async def _row(self, package_id: str) -> IncomingPackage:
        async with self._sessions() as s:
            row = await s.get(IncomingPackage, package_id)
        if row is None:
            raise NotFoundError("there is no such package on this node")
        return row

    async def _keyset(self, org_id: str) -> KeySet:
        return await asyncio.to_thread(self.keys.load, org_id)

    async def _checkpoint_text(self) -> str | None:
        if self.audit_log is None:
            return None
        return (await self.audit_log.checkpoint()).note

    async def _sign(
        self,
        row: IncomingPackage,
        kind: ReceiptKind,
        *,
        acted_by: Actor | None = None,
        reason: str | None = None,
        manifest_sha256: str | None = None,
        reference: str | None = None,
    ) -> SignedReceipt:
        keyset = await self._keyset(row.recipient_org_id)
        body = ReceiptBody(
            receipt_id=uuid.uuid4(),
            kind=kind,
            package_id=uuid.UUID(row.id),
            package_kind=row.package_kind,
            sender_org_id=row.sender_org_id,
            receiver_org_id=row.recipient_org_id,
            receiver_key_id=keyset.key_id_hex,
            ciphertext_sha256=row.ciphertext_sha256,
            ciphertext_size=row.size,
            manifest_sha256=manifest_sha256,
            acted_by=(
                None
                if acted_by is None
                else ReceiptActor(
                    name=acted_by.display_name or acted_by.staff_id, role=_role_of(acted_by)
                )
            ),
            reason=reason,
            reference=reference,
            issued_at=self.now(),
            checkpoint=await self._checkpoint_text(),
        )
        return sign_receipt(body, keyset)

    @staticmethod
    def _receipt_row(signed: SignedReceipt, push: bool, now: datetime) -> IssuedReceipt:
        return IssuedReceipt(
            id=str(signed.body.receipt_id),
            package_id=str(signed.body.package_id),
            kind=signed.body.kind,
            data=signed.to_json(),
            issued_at=signed.body.issued_at,
            push_state=PUSH_PENDING if push else PUSH_NONE,
            attempts=0,
            next_attempt_at=now if push else None,
        )

    # ------------------------------------------------------------- peer: upload

    async def offer(self, caller: PeerCaller, offer: OfferBody) -> tuple[int, dict[str, Any]]:
        """Register (or resume) an upload; the answer's status and body (contracts §5)."""
        pid = str(offer.package_id)
        targets = {"package": pid}
        if offer.sender_org_id != caller.org_id:
            await self._audit(
                "transfer.offer",
                None,
                offer.recipient_org_id,
                targets,
                "refused",
                sender=caller.org_id,
                reason="sender-mismatch",
            )
            raise PermissionDenied(
                f"the request is signed by {caller.org_id} but offers a package from "
                f"{offer.sender_org_id}; an organisation may only send its own packages"
            )
        hosted = await asyncio.to_thread(self.keys.exists, offer.recipient_org_id)
        if hosted:
            try:
                await self.store.get_organisation(offer.recipient_org_id)
            except NotFoundError:
                hosted = False
        if not hosted:
            await self._audit(
                "transfer.offer",
                None,
                None,
                targets,
                "refused",
                sender=caller.org_id,
                reason="recipient-not-hosted",
            )
            raise NotFoundError(
                f"organisation {offer.recipient_org_id} is not hosted on this node; check its "
                "endpoint in the directory"
            )
        limit = self.config.transfer.max_package_bytes
        if offer.size > limit:
            await self._audit(
                "transfer.offer",
                None,
                offer.recipient_org_id,
                targets,
                "refused",
                sender=caller.org_id,
                reason="too-large",
                size=offer.size,
            )
            raise TooLargeError(
                f"the package is {offer.size} bytes, over this node's limit of {limit} bytes"
            )
        await self._check_room(caller, offer)
        now = self.now()
        row = IncomingPackage(
            id=pid,
            recipient_org_id=offer.recipient_org_id,
            sender_org_id=caller.org_id,
            sender_name=caller.name[:200],
            sender_key_id=caller.key_id,
            package_kind=offer.package_kind,
            size=offer.size,
            ciphertext_sha256=offer.ciphertext_sha256,
            received=0,
            state=RECEIVING,
            offered_at=now,
        )
        created = False
        intent: AuditIntent | None = None
        try:
            async with self._sessions() as s, s.begin():
                if await s.get(IncomingPackage, pid) is None:
                    s.add(row)
                    intent = await self._intend(
                        s,
                        "transfer.offer",
                        None,
                        offer.recipient_org_id,
                        targets,
                        sender=caller.org_id,
                        size=offer.size,
                        kind=offer.package_kind,
                    )
                    created = True
        except sa_exc.IntegrityError:
            created = False
        if not created:
            row = await self._row(pid)
            same = (
                row.sender_org_id == caller.org_id
                and row.recipient_org_id == offer.recipient_org_id
                and row.size == offer.size
                and row.package_kind == offer.package_kind
                and hmac.compare_digest(row.ciphertext_sha256, offer.ciphertext_sha256)
            )
            if not same:
                await self._audit(
                    "transfer.offer",
                    None,
                    offer.recipient_org_id,
                    targets,
                    "refused",
                    sender=caller.org_id,
                    reason="id-conflict",
                )
                raise ConflictError(
                    f"package {pid} is already known here with another sender, recipient, size "
                    "or hash; a package id is used for one package only"
                )
            if row.state == REFUSED:
                raise PackageRefusedError(
                    f"package {pid} was refused earlier "
                    f"({row.refused_reason or 'it failed a check'}); build a new package to send "
                    "again",
                )
            if row.state != RECEIVING:
                receipt = await self._delivered_receipt(row)
                return 200, {"state": DELIVERED, "receipt": receipt.to_dict()}
        if created and intent is not None:
            await self.store.settle(intent)
        await asyncio.to_thread(self._ensure_part, pid)
        if created:
            return 201, {"offset": 0, "state": RECEIVING}
        return 200, {"offset": await self._resume_point(row), "state": RECEIVING}

    async def _check_room(self, caller: PeerCaller, offer: OfferBody) -> None:
        """Refuse (507) an upload this node's disk cannot hold while keeping its reserve.

        What is still to come (the whole package, or the rest of an upload being resumed)
        plus ``transfer.disk_reserve_bytes`` must be free on the file system holding
        ``incoming/``; otherwise the upload would fill the disk and stop smaller packages
        (and everything else the node writes). The sender keeps the package and offers it
        again on its retry schedule.
        """
        pid = str(offer.package_id)
        held = 0
        async with self._sessions() as s:
            row = await s.get(IncomingPackage, pid)
        if row is not None:
            if row.state != RECEIVING or row.sender_org_id != caller.org_id:
                return  # already here, or not this sender's: the offer's own checks answer
            held = min(row.received, offer.size)
        needed = offer.size - held
        reserve = self.config.transfer.disk_reserve_bytes
        free = await asyncio.to_thread(self.free_space, self.incoming_dir)
        if free - needed >= reserve:
            return
        await self._audit(
            "transfer.offer",
            None,
            offer.recipient_org_id,
            {"package": pid},
            "refused",
            sender=caller.org_id,
            reason="insufficient-storage",
            size=offer.size,
            needed=needed,
            free=free,
            reserve=reserve,
        )
        log.warning(
            "package %s from %s refused for now: %d more bytes would leave %d free, under the "
            "reserve of %d (transfer.disk_reserve_bytes); free space on the disk of %s",
            pid,
            caller.org_id,
            needed,
            max(0, free - needed),
            reserve,
            self.incoming_dir,
        )
        raise InsufficientStorageError(
            f"this node cannot hold package {pid} ({needed} more bytes) just now: it has "
            f"{max(free, 0)} bytes free and keeps {reserve} in reserve; offer it again later",
            detail={"needed": needed},
        )

    def _ensure_part(self, pid: str) -> None:
        self.incoming_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.part_path(pid), os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)

    async def _resume_point(self, row: IncomingPackage) -> int:
        """The held offset, lowered to 0 if the file behind it is gone (the operator removed it)."""
        path = self.part_path(row.id)
        size = await asyncio.to_thread(lambda: path.stat().st_size if path.exists() else -1)
        if size < row.received:
            await asyncio.to_thread(self._ensure_part, row.id)
            async with self._sessions() as s, s.begin():
                await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == row.id, IncomingPackage.state == RECEIVING)
                    .values(received=0)
                )
            log.warning("the partial upload of package %s was missing; restarting it", row.id)
            return 0
        return row.received

    def _own(self, row: IncomingPackage, caller: PeerCaller) -> None:
        if row.sender_org_id != caller.org_id:
            raise NotFoundError("there is no such package from your organisation on this node")

    async def upload_offset(self, caller: PeerCaller, package_id: str) -> int:
        """``HEAD``: how many bytes of the upload are held (its size once delivered)."""
        row = await self._row(_package_id(package_id))
        self._own(row, caller)
        if row.state == REFUSED:
            raise PackageRefusedError(f"package {row.id} was refused: {row.refused_reason}")
        if row.state != RECEIVING:
            return row.size
        return await self._resume_point(row)

    async def receive_chunk(
        self,
        caller: PeerCaller,
        package_id: str,
        offset: int,
        digest_header: str,
        chunks: AsyncIterator[bytes],
    ) -> int:
        """Write one chunk at ``offset``; the new offset. All of the chunk or none of it."""
        pid = _package_id(package_id)
        row = await self._row(pid)
        self._own(row, caller)
        if row.state != RECEIVING:
            raise ConflictError(
                f"package {pid} is already complete here; nothing more is needed",
                detail={"offset": row.size},
            )
        try:
            fd = await asyncio.to_thread(os.open, self.part_path(pid), os.O_RDWR)
        except FileNotFoundError:
            held = await self._resume_point(row)
            raise OffsetMismatchError(
                f"the upload must continue from offset {held}", detail={"offset": held}
            ) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise UploadBusyError(
                        f"another upload of package {pid} is in progress; try again shortly",
                        detail={"offset": row.received},
                    ) from None
                raise
            row = await self._row(pid)  # fresh, now that we hold the file
            if row.state != RECEIVING:
                raise ConflictError(
                    f"package {pid} is already complete here", detail={"offset": row.size}
                )
            held = row.received
            if offset != held:
                raise OffsetMismatchError(
                    f"the chunk starts at offset {offset} but this node holds {held} bytes of "
                    f"package {pid}; continue from {held}",
                    detail={"offset": held},
                )
            return await self._write_chunk(fd, row, digest_header, chunks)
        finally:
            await asyncio.to_thread(os.close, fd)  # also releases the lock

    async def _write_chunk(
        self, fd: int, row: IncomingPackage, digest_header: str, chunks: AsyncIterator[bytes]
    ) -> int:
        """Stream one request's body to the file at the held offset; the new held offset.

        Every ``transfer.checkpoint_bytes`` the bytes so far are fsynced and the held offset
        committed, so a break (a dropped connection, a killed process) resumes from the last
        checkpoint instead of the request's start. Bytes kept that way are checked against
        the offered SHA-256 of the whole package at ``complete``; a request whose body does
        not match its signed ``Content-Digest`` is undone back to where it started.
        """
        start = row.received
        await asyncio.to_thread(os.ftruncate, fd, start)
        every = self.config.transfer.checkpoint_bytes
        hasher = DigestHasher()
        queued = start  # start + every byte written so far
        committed = start  # the held offset in the database (fsynced bytes before it)
        # A checkpoint's fsync and commit run while the next bytes are read and written; the
        # next checkpoint first waits for it (at most one in flight).
        pending: asyncio.Task[int] | None = None
        mark = start  # where the last checkpoint (committed or in flight) is
        try:
            async for piece in chunks:
                if queued + len(piece) > row.size:
                    raise TooLargeError(
                        f"the chunk goes beyond the package's declared size of {row.size} bytes"
                    )
                if not piece:
                    continue
                queued += _hash_and_write(fd, hasher, piece, queued)
                if queued - mark >= every:
                    if pending is not None:
                        committed = await pending
                    pending = asyncio.create_task(self._hold(fd, row.id, committed, queued))
                    mark = queued
            if pending is not None:
                committed = await pending
                pending = None
            check_digest(digest_header, hasher.digest())
            new = await self._hold(fd, row.id, committed, queued)
            if start == 0 and new == row.size:
                # This body was the whole package: its digest is the package's SHA-256.
                self._whole_sha256[row.id] = hasher.digest().hex()
            return new
        except BaseException as exc:
            if pending is not None:
                # Let the checkpoint in flight end: what it committed is held.
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    committed = await asyncio.shield(pending)
            keep = committed
            if isinstance(exc, (TooLargeError, DigestMismatchError)) and committed != start:
                # The body is not what the sender signed: none of it is kept.
                keep = await self._unhold(row.id, committed, start)
            # Keep only what was committed: the held offset stays good.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, keep)
            if isinstance(exc, OSError):
                full = as_out_of_space(exc, str(self.incoming_dir))
                if full is not None:
                    full.detail["offset"] = keep
                    raise full from None
                raise TransportError(f"could not store the chunk: {exc.strerror}") from None
            if isinstance(exc, TransportError) and keep != start:
                raise TransportError(
                    f"{exc.message} ({keep} bytes are held)", detail={"offset": keep}
                ) from None
            raise

    async def _hold(self, fd: int, pid: str, held: int, new: int) -> int:
        """Make the bytes up to ``new`` durable, then commit ``new`` as the held offset."""
        await asyncio.to_thread(os.fsync, fd)
        if not await self._move_held(pid, held, new):
            raise UploadBusyError(
                f"package {pid} changed while this chunk was written; ask for the "
                "offset and continue",
                detail={"offset": held},
            )
        return new

    async def _unhold(self, pid: str, held: int, back_to: int) -> int:
        """Put the held offset back to ``back_to`` (a checkpointed body proved bad)."""
        return back_to if await self._move_held(pid, held, back_to) else held

    async def _move_held(self, pid: str, held: int, to: int) -> bool:
        """Set the held offset of a receiving upload from ``held`` to ``to``; whether it was."""
        async with self._sessions() as s, s.begin():
            result = await s.execute(
                update(IncomingPackage)
                .where(
                    IncomingPackage.id == pid,
                    IncomingPackage.received == held,
                    IncomingPackage.state == RECEIVING,
                )
                .values(received=to)
            )
        return bool(getattr(result, "rowcount", 1) == 1)

    async def complete(self, caller: PeerCaller, package_id: str) -> SignedReceipt:
        """Check the whole upload and its manifest; store it as delivered; the receipt."""
        pid = _package_id(package_id)
        row = await self._row(pid)
        self._own(row, caller)
        if row.state == REFUSED:
            raise PackageRefusedError(f"package {pid} was refused: {row.refused_reason}")
        if row.state != RECEIVING:
            return await self._delivered_receipt(row)
        part = self.part_path(pid)
        try:
            fd = await asyncio.to_thread(os.open, part, os.O_RDWR)
        except FileNotFoundError:
            if self.inbox_path(pid).exists():
                fd = await asyncio.to_thread(os.open, self.inbox_path(pid), os.O_RDONLY)
                part = self.inbox_path(pid)
            else:
                held = await self._resume_point(row)
                raise OffsetMismatchError(
                    f"the upload of package {pid} is not complete; continue from offset {held}",
                    detail={"offset": held},
                ) from None
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            row = await self._row(pid)
            if row.state == REFUSED:
                raise PackageRefusedError(f"package {pid} was refused: {row.refused_reason}")
            if row.state != RECEIVING:
                return await self._delivered_receipt(row)
            return await self._check_and_deliver(row, part)
        finally:
            await asyncio.to_thread(os.close, fd)

    def _held_sha256(self, pid: str, part: Path) -> tuple[str, int]:
        """SHA-256 and size of the held file (worker thread).

        Read and hashed again unless one request brought the whole file in this process;
        then the digest checked on that request's body is the file's.
        """
        known = self._whole_sha256.pop(pid, None)
        if known is not None:
            return known, part.stat().st_size
        return _sha256_file(part)

    async def _refuse(self, row: IncomingPackage, part: Path, err: HandoverError) -> None:
        reason = f"{err.slug}: {err.diagnostics()}"[:300]
        intents: list[AuditIntent] = []
        async with self._sessions() as s, s.begin():
            done = await s.execute(
                update(IncomingPackage)
                .where(IncomingPackage.id == row.id, *_moves(IncomingEvent.REFUSE))
                .values(**_to(IncomingEvent.REFUSE), refused_reason=reason)
            )
            if getattr(done, "rowcount", 0) == 1:
                intents.append(
                    await self._intend(
                        s,
                        "transfer.received",
                        None,
                        row.recipient_org_id,
                        {"package": row.id},
                        "refused",
                        sender=row.sender_org_id,
                        reason=err.slug,
                    )
                )
        await self.store.settle(*intents)
        await asyncio.to_thread(part.unlink, True)

    async def _check_and_deliver(self, row: IncomingPackage, part: Path) -> SignedReceipt:
        pid = row.id
        if row.received != row.size:
            raise OffsetMismatchError(
                f"the upload of package {pid} is not complete: {row.received} of {row.size} "
                f"bytes held; continue from offset {row.received}",
                detail={"offset": row.received},
            )
        sha, size = await asyncio.to_thread(self._held_sha256, pid, part)
        if size != row.size or not hmac.compare_digest(sha, row.ciphertext_sha256):
            # The bytes held are not the package offered: start again from nothing.
            await asyncio.to_thread(os.truncate, part, 0)
            async with self._sessions() as s, s.begin():
                await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == pid, IncomingPackage.state == RECEIVING)
                    .values(received=0)
                )
            await self._audit(
                "transfer.received",
                None,
                row.recipient_org_id,
                {"package": pid},
                "refused",
                sender=row.sender_org_id,
                reason="hash-mismatch",
            )
            raise IntegrityError(
                f"the {size} bytes received do not have the SHA-256 offered for package {pid}; "
                "they were discarded: upload the package again from offset 0",
                detail={"offset": 0},
            )
        try:
            keyset = await self._keyset(row.recipient_org_id)
            sender_keys = await self.directory.sender_keys()
            verified = await asyncio.to_thread(_inspect_file, part, keyset, sender_keys)
            m = verified.manifest
            if str(m.package_id) != pid:
                raise IntegrityError(
                    f"the package's signed manifest names package {m.package_id}, not {pid}"
                )
            if m.sender.org_id != row.sender_org_id:
                raise PermissionDenied(
                    f"the package's manifest is from {m.sender.org_id}, but it was sent by "
                    f"{row.sender_org_id}; an organisation may only deliver its own packages"
                )
            if m.kind != row.package_kind:
                raise IntegrityError(
                    f"the package's manifest says it is a {m.kind}, but it was offered as a "
                    f"{row.package_kind}"
                )
        except TransportError:
            raise  # a passing failure here (disk, database): the sender completes again later
        except HandoverError as err:
            await self._refuse(row, part, err)
            raise
        target = self.inbox_path(pid)
        if part != target:

            def move() -> None:
                self.inbox_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                os.replace(part, target)
                _fsync_dir(self.inbox_dir)

            await asyncio.to_thread(move)
        # The state, the delivered receipt and their audit entries commit together: a
        # process killed at any moment leaves either none of them or all of them.
        signed = await self._sign(row, DELIVERED)
        now = self.now()
        intents: list[AuditIntent] = []
        async with self._sessions() as s, s.begin():
            moved = await s.execute(
                update(IncomingPackage)
                .where(IncomingPackage.id == pid, *_moves(IncomingEvent.CHECKED))
                .values(
                    **_to(IncomingEvent.CHECKED),
                    delivered_at=now,
                    manifest_sha256=verified.manifest_sha256,
                    entries=len(verified.manifest.entries),
                    content_size=verified.manifest.total_size,
                )
            )
            if getattr(moved, "rowcount", 0) == 1:
                s.add(self._receipt_row(signed, False, now))
                intents.append(
                    await self._intend(
                        s,
                        "transfer.received",
                        None,
                        row.recipient_org_id,
                        {"package": pid},
                        sender=row.sender_org_id,
                        size=row.size,
                        ciphertext_sha256=row.ciphertext_sha256,
                        kind=row.package_kind,
                    )
                )
                intents.append(
                    await self._intend(
                        s,
                        "receipt.issued",
                        None,
                        row.recipient_org_id,
                        {"package": pid, "receipt": str(signed.body.receipt_id)},
                        kind=DELIVERED,
                        to=row.sender_org_id,
                    )
                )
        if not intents:  # another process delivered it at the same moment: its receipt
            return await self._delivered_receipt(await self._row(pid))
        await self.store.settle(*intents)
        return signed

    async def _delivered_receipt(self, row: IncomingPackage) -> SignedReceipt:
        """The one delivered receipt of a package (issued the first time it is asked for)."""
        async with self._sessions() as s:
            data = await s.scalar(
                select(IssuedReceipt.data).where(
                    IssuedReceipt.package_id == row.id, IssuedReceipt.kind == DELIVERED
                )
            )
        if data is not None:
            return SignedReceipt.from_json(bytes(data))
        # Only a package delivered by an earlier version lacks it (it was issued on demand).
        signed = await self._sign(row, DELIVERED)
        intent: AuditIntent | None = None
        try:
            async with self._sessions() as s, s.begin():
                existing = await s.scalar(
                    select(IssuedReceipt.id).where(
                        IssuedReceipt.package_id == row.id, IssuedReceipt.kind == DELIVERED
                    )
                )
                if existing is None:
                    s.add(self._receipt_row(signed, False, self.now()))
                    intent = await self._intend(
                        s,
                        "receipt.issued",
                        None,
                        row.recipient_org_id,
                        {"package": row.id, "receipt": str(signed.body.receipt_id)},
                        kind=DELIVERED,
                        to=row.sender_org_id,
                    )
        except sa_exc.IntegrityError:
            existing = "raced"
        if existing is not None or intent is None:
            return await self._delivered_receipt(row)
        await self.store.settle(intent)
        return signed

    async def receipts_for_sender(self, caller: PeerCaller, package_id: str) -> list[SignedReceipt]:
        """Every receipt issued for the package, oldest first (only to its sender)."""
        row = await self._row(_package_id(package_id))
        self._own(row, caller)
        async with self._sessions() as s:
            rows = (
                await s.scalars(
                    select(IssuedReceipt.data)
                    .where(IssuedReceipt.package_id == row.id)
                    .order_by(IssuedReceipt.issued_at, IssuedReceipt.id)
                )
            ).all()
        return [SignedReceipt.from_json(bytes(d)) for d in rows]

    # ------------------------------------------------------------------ DSL side

    async def _for_dsl(
        self, actor: Actor, package_id: str, action: str, via: Via
    ) -> IncomingPackage:
        targets = {"package": str(package_id)[:64]}
        try:
            require(actor, Permission.RECEIVE_TRANSFER)
        except PermissionDenied:
            await self._audit(action, actor, actor.org_id, targets, "refused", via=via)
            raise
        try:
            row = await self._row(_package_id(package_id))
        except NotFoundError:
            raise NotFoundError("there is no such package in your inbox") from None
        if row.recipient_org_id != actor.org_id or row.state in (RECEIVING, REFUSED):
            raise NotFoundError("there is no such package in your inbox")
        return row

    async def list(
        self, actor: Actor, *, state: str | None = None, via: Via = "api"
    ) -> list[IncomingSummary]:
        """The organisation's delivered packages (newest first); ``state`` filters."""
        try:
            require(actor, Permission.RECEIVE_TRANSFER)
        except PermissionDenied:
            await self._audit("transfer.inbox.list", actor, actor.org_id, {}, "refused", via=via)
            raise
        shown = (DELIVERED, VIEWED, ACCEPTED, REJECTED)
        if state is not None and state not in shown:
            raise InputError(f"state must be one of {', '.join(shown)}")
        async with self._sessions() as s:
            q = select(IncomingPackage).where(
                IncomingPackage.recipient_org_id == actor.org_id,
                IncomingPackage.state.in_([state] if state else list(shown)),
            )
            rows = (await s.scalars(q.order_by(IncomingPackage.delivered_at.desc()))).all()
        references = await self._references([r.id for r in rows if r.state == ACCEPTED])
        out = [_summary(r, references.get(r.id)) for r in rows]
        await self._audit("transfer.inbox.list", actor, actor.org_id, {}, count=len(out), via=via)
        return out

    async def subjects(
        self, actor: Actor, package_ids: Sequence[str], *, via: Via = "web"
    ) -> dict[str, Subject]:
        """Who each open package says it is about (its signed manifest's subject), for the
        inbox list: only the manifest is decrypted (in memory, in a worker thread), never
        the records. A package whose manifest no longer checks is left out (opening it in
        full says why). Audited with the number named, never the names."""
        try:
            require(actor, Permission.RECEIVE_TRANSFER)
        except PermissionDenied:
            await self._audit(
                "transfer.inbox.subjects", actor, actor.org_id, {}, "refused", via=via
            )
            raise
        wanted = [str(p)[:64] for p in package_ids]
        if not wanted:
            return {}
        async with self._sessions() as s:
            rows = (
                await s.scalars(
                    select(IncomingPackage).where(
                        IncomingPackage.id.in_(wanted),
                        IncomingPackage.recipient_org_id == actor.org_id,
                        IncomingPackage.state.in_(OPEN_STATES),
                    )
                )
            ).all()
        out: dict[str, Subject] = {}
        if not rows:
            return out
        keyset = await self._keyset(actor.org_id)
        sender_keys = await self.directory.sender_keys()
        for row in rows:
            try:
                verified = await asyncio.to_thread(
                    _inspect_file, self.inbox_path(row.id), keyset, sender_keys
                )
            except (HandoverError, OSError) as err:
                log.info(
                    "the manifest of package %s could not be read for the inbox list: %s",
                    row.id,
                    getattr(err, "slug", type(err).__name__),
                )
                continue
            out[row.id] = verified.manifest.subject
        await self._audit(
            "transfer.inbox.subjects", actor, actor.org_id, {}, count=len(out), via=via
        )
        return out

    async def _references(self, package_ids: Sequence[str]) -> dict[str, str]:
        """The reference given on accepting each package (read from its accepted receipt)."""
        out: dict[str, str] = {}
        if not package_ids:
            return out
        async with self._sessions() as s:
            rows = (
                await s.execute(
                    select(IssuedReceipt.package_id, IssuedReceipt.data).where(
                        IssuedReceipt.package_id.in_(list(package_ids)),
                        IssuedReceipt.kind == ACCEPTED,
                    )
                )
            ).all()
        for package_id, data in rows:
            reference = SignedReceipt.from_json(bytes(data)).body.reference
            if reference is not None:
                out[package_id] = reference
        return out

    async def _summary_of(self, package_id: str) -> IncomingSummary:
        row = await self._row(package_id)
        references = await self._references([row.id] if row.state == ACCEPTED else [])
        return _summary(row, references.get(row.id))

    @property
    def record_limits(self) -> RecordLimits:
        t = self.config.transfer
        return RecordLimits(per_record=t.max_record_bytes, total=t.max_records_bytes)

    async def _read_full(self, row: IncomingPackage, *, chronology: bool = False) -> _Read:
        """Verify the whole package (pass 1), keeping its records (within
        :attr:`record_limits`) and its documents' entries; the records are parsed in the
        worker thread too, never on the event loop."""
        keyset = await self._keyset(row.recipient_org_id)
        sender_keys = await self.directory.sender_keys()
        path = self.inbox_path(row.id)
        if not path.exists():
            raise IntegrityError(
                f"the package file of {row.id} is missing from the inbox; ask the sender to "
                "send it again"
            )
        read = await asyncio.to_thread(
            _verify_collecting,
            path,
            keyset,
            sender_keys,
            self.record_limits,
            _Wanted(row.id, row.package_kind, chronology, row.sender_name),
        )
        if read.verified.ciphertext_sha256 != row.ciphertext_sha256 or (
            row.manifest_sha256 and read.verified.manifest_sha256 != row.manifest_sha256
        ):
            raise IntegrityError(
                f"the package file of {row.id} is not the one delivered (its hash changed)"
            )
        return read

    async def show(self, actor: Actor, package_id: str, *, via: Via = "api") -> InboxPreview:
        """Verify the whole package and preview it; the first view sends a viewed receipt."""
        row = await self._for_dsl(actor, package_id, "transfer.viewed", via)
        targets = {"package": row.id}
        referral = is_referral(row.package_kind)
        # An accepted referral is kept for the agency's case work: it can be shown again.
        if row.state not in OPEN_STATES and not (referral and row.state == ACCEPTED):
            raise ConflictError(
                f"package {row.id} was {row.state}; its file is no longer kept"
                + (f" (see pupil {row.pupil_id})" if row.pupil_id else "")
            )
        try:
            read = await self._read_full(row, chronology=True)
        except HandoverError as err:
            await self._audit(
                "transfer.viewed", actor, actor.org_id, targets, "failed", reason=err.slug, via=via
            )
            raise
        records, form, chronology = read.records, read.form, read.chronology
        manifest = read.verified.manifest
        documents = _preview_documents(read)
        match = None if referral else await self._match(actor, records, manifest.subject)
        intents: list[AuditIntent] = []
        if row.state == DELIVERED:
            signed = await self._sign(row, VIEWED, acted_by=actor)
            now = self.now()
            async with self._sessions() as s, s.begin():
                result = await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == row.id, *_moves(IncomingEvent.VIEW))
                    .values(**_to(IncomingEvent.VIEW), viewed_at=now)
                )
                if getattr(result, "rowcount", 0) == 1:
                    s.add(self._receipt_row(signed, True, now))
                    await self._push_delivered_too(s, row.id, now)
                    intents.append(
                        await self._intend(
                            s,
                            "receipt.issued",
                            actor,
                            actor.org_id,
                            {**targets, "receipt": str(signed.body.receipt_id)},
                            kind=VIEWED,
                            to=row.sender_org_id,
                            via=via,
                        )
                    )
                    intents.append(
                        await self._intend(
                            s,
                            "transfer.viewed",
                            actor,
                            actor.org_id,
                            targets,
                            sender=row.sender_org_id,
                            via=via,
                        )
                    )
            row = await self._row(row.id)
        if intents:
            await self.store.settle(*intents)
        else:
            await self._audit(
                "transfer.viewed", actor, actor.org_id, targets, sender=row.sender_org_id, via=via
            )
        return InboxPreview(
            package=await self._summary_of(row.id),
            subject=manifest.subject,
            manifest=manifest.model_dump(mode="json"),
            counts=records.counts(),
            pupil=records.pupil,
            chronology=chronology,
            documents=documents,
            match=match,
            referral=form,
            people=read.people,
            readable=read.readable,
        )

    async def _match(
        self, actor: Actor, records: PackageRecords, subject: Subject
    ) -> PupilMatch | None:
        from transfer.store.models import Pupil

        upn = records.pupil.upn if records.pupil else subject.upn
        if not upn:
            return None
        async with self._sessions() as s:
            ours = await s.scalar(
                select(Pupil).where(Pupil.org_id == actor.org_id, Pupil.upn == upn.upper())
            )
        if ours is None:
            return None
        surname = records.pupil.surname if records.pupil else subject.surname
        forename = records.pupil.forename if records.pupil else subject.forename
        dob = records.pupil.dob if records.pupil else subject.dob

        def same(a: str, b: str) -> bool:
            return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()

        return PupilMatch(
            pupil_id=ours.id,
            matches=bool(
                ours.dob is not None
                and ours.dob == dob
                and same(ours.surname, surname)
                and same(ours.forename, forename)
            ),
            upn=ours.upn,
            surname=ours.surname,
            forename=ours.forename,
            dob=ours.dob.isoformat() if ours.dob else None,
        )

    async def accept(
        self,
        actor: Actor,
        package_id: str,
        *,
        pupil_id: str | None = None,
        create_new: bool = False,
        reference: str | None = None,
        via: Via = "api",
    ) -> AcceptOutcome:
        """Verify the package again and import it; the accepted receipt is queued for the sender.

        ``reference`` (optional here) is our own reference, sent in the accepted receipt. A
        referral is never imported: it is accepted with :meth:`accept_referral`.
        """
        row = await self._for_dsl(actor, package_id, "transfer.accepted", via)
        targets = {"package": row.id}
        if is_referral(row.package_kind):
            raise InputError(
                f"package {row.id} is a referral ({row.package_kind}): it is not imported into "
                "the pupil store; accept it with your reference number instead"
            )
        if row.state not in OPEN_STATES:
            raise ConflictError(f"package {row.id} was already {row.state}")
        reference = _clean_reference(reference)
        if pupil_id is not None:
            # The DSL names the pupil to import into as staff know pupils: by UPN (or id).
            pupil_id = await self.store.pupil_id_for(actor, pupil_id)
        plan: ImportPlan | None = None
        try:
            read = await self._read_full(row)
            records = read.records
            if records.pupil is None:
                raise InputError(
                    f"package {row.id} ({row.package_kind}) holds no pupil record to import; "
                    "only a leaver's file can be accepted into the store"
                )
            plan = await self.importer.plan(
                actor,
                records,
                read.verified.manifest.subject,
                pupil_id=pupil_id,
                create_new=create_new,
            )
            await self._import_documents(row, plan, records, read.verified.ciphertext_sha256)
            signed = await self._sign(
                row,
                ACCEPTED,
                acted_by=actor,
                manifest_sha256=read.verified.manifest_sha256,
                reference=reference,
            )
            now = self.now()
            chosen = plan
            intents: list[AuditIntent] = []

            async def promise(s: AsyncSession, done: RecordsImported) -> None:
                intents.append(
                    await self._intend(
                        s,
                        "transfer.accepted",
                        actor,
                        actor.org_id,
                        {**targets, "pupil": done.pupil_id},
                        sender=row.sender_org_id,
                        new_pupil=done.new_pupil,
                        matched_by=done.matched_by,
                        records=sum(done.counts.values()),
                        via=via,
                    )
                )
                intents.append(
                    await self._intend(
                        s,
                        "receipt.issued",
                        actor,
                        actor.org_id,
                        {**targets, "receipt": str(signed.body.receipt_id)},
                        kind=ACCEPTED,
                        to=row.sender_org_id,
                        via=via,
                    )
                )

            async def claim(s: AsyncSession) -> None:
                result = await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == row.id, *_moves(IncomingEvent.ACCEPT))
                    .values(
                        **_to(IncomingEvent.ACCEPT),
                        decided_at=now,
                        decided_by=actor.staff_id,
                        pupil_id=chosen.pupil_id,
                    )
                )
                if getattr(result, "rowcount", 0) != 1:
                    raise ConflictError(
                        f"package {row.id} was accepted or rejected by someone else meanwhile"
                    )
                s.add(self._receipt_row(signed, True, now))
                await self._push_delivered_too(s, row.id, now)

            result = await self.importer.commit(
                actor,
                plan,
                records,
                package_id=row.id,
                source_org_id=row.sender_org_id,
                source_org_name=row.sender_name,
                received_at=row.delivered_at or now,
                claim=claim,
                after=promise,
            )
        except HandoverError as err:
            if plan is not None:
                await self.importer.discard(plan)
            await self._audit(
                "transfer.accepted",
                actor,
                actor.org_id,
                targets,
                "refused",
                reason=err.slug,
                via=via,
            )
            raise
        except BaseException:
            if plan is not None:
                await self.importer.discard(plan)
            raise
        await self.store.settle(*intents)
        await asyncio.to_thread(self.inbox_path(row.id).unlink, True)
        await self._note_in_chronology(
            actor,
            result.pupil_id,
            "transfer.accepted",
            f"File received from {row.sender_name} ({row.package_kind.replace('_', ' ')}) "
            "accepted and imported",
            row.id,
        )
        return AcceptOutcome(
            package=await self._summary_of(row.id),
            pupil_id=result.pupil_id,
            new_pupil=result.new_pupil,
            matched_by=result.matched_by,
            counts=result.counts,
            skipped=result.skipped,
            held=result.held,
            amended=result.amended,
        )

    async def accept_referral(
        self, actor: Actor, package_id: str, *, reference: str | None, via: Via = "api"
    ) -> IncomingSummary:
        """Accept a referral with the agency's reference: verified in full, kept, not imported.

        The accepted receipt (naming the manifest and carrying ``reference``) is queued for
        the sender; the ciphertext stays in the inbox for the agency's case work.
        """
        row = await self._for_dsl(actor, package_id, "transfer.accepted", via)
        targets = {"package": row.id}
        if not is_referral(row.package_kind):
            raise InputError(
                f"package {row.id} is a {row.package_kind.replace('_', ' ')}, not a referral: "
                "accept it into the pupil store"
            )
        if row.state not in OPEN_STATES:
            raise ConflictError(f"package {row.id} was already {row.state}")
        try:
            if reference is None or not reference.strip():
                raise ReferenceRequiredError(
                    f"package {row.id} is a referral: give your reference number for it "
                    "(reference) to accept it; it goes back to the sender in the signed receipt"
                )
            reference = _clean_reference(reference)
            read = await self._read_full(row)  # a referral: its form is parsed and checked
            signed = await self._sign(
                row,
                ACCEPTED,
                acted_by=actor,
                manifest_sha256=read.verified.manifest_sha256,
                reference=reference,
            )
            now = self.now()
            async with self._sessions() as s, s.begin():
                result = await s.execute(
                    update(IncomingPackage)
                    .where(IncomingPackage.id == row.id, *_moves(IncomingEvent.ACCEPT))
                    .values(**_to(IncomingEvent.ACCEPT), decided_at=now, decided_by=actor.staff_id)
                )
                if getattr(result, "rowcount", 0) != 1:
                    raise ConflictError(
                        f"package {row.id} was accepted or rejected by someone else meanwhile"
                    )
                s.add(self._receipt_row(signed, True, now))
                await self._push_delivered_too(s, row.id, now)
                intents = [
                    await self._intend(
                        s,
                        "transfer.accepted",
                        actor,
                        actor.org_id,
                        targets,
                        sender=row.sender_org_id,
                        kind=row.package_kind,
                        kept=True,
                        via=via,
                    ),
                    await self._intend(
                        s,
                        "receipt.issued",
                        actor,
                        actor.org_id,
                        {**targets, "receipt": str(signed.body.receipt_id)},
                        kind=ACCEPTED,
                        to=row.sender_org_id,
                        via=via,
                    ),
                ]
        except HandoverError as err:
            await self._audit(
                "transfer.accepted",
                actor,
                actor.org_id,
                targets,
                "refused",
                reason=err.slug,
                via=via,
            )
            raise
        await self.store.settle(*intents)
        return await self._summary_of(row.id)

    async def accept_package(
        self,
        actor: Actor,
        package_id: str,
        *,
        pupil_id: str | None = None,
        create_new: bool = False,
        reference: str | None = None,
        via: Via = "api",
    ) -> InboxAcceptance:
        """Accept whatever the package is: a referral with ``reference``, else import it."""
        row = await self._for_dsl(actor, package_id, "transfer.accepted", via)
        if is_referral(row.package_kind):
            if pupil_id is not None or create_new:
                raise InputError(
                    f"package {row.id} is a referral: it is not imported into the pupil store, "
                    "so pupil_id and create_new do not apply"
                )
            summary = await self.accept_referral(actor, row.id, reference=reference, via=via)
            return InboxAcceptance(package=summary, imported=False, reference=summary.reference)
        outcome = await self.accept(
            actor, row.id, pupil_id=pupil_id, create_new=create_new, reference=reference, via=via
        )
        return InboxAcceptance(
            package=outcome.package,
            imported=True,
            reference=outcome.package.reference,
            pupil_id=outcome.pupil_id,
            new_pupil=outcome.new_pupil,
            matched_by=outcome.matched_by,
            counts=outcome.counts,
            skipped=outcome.skipped,
            held=outcome.held,
            amended=outcome.amended,
        )

    async def _note_in_chronology(
        self, actor: Actor, pupil_id: str, kind: str, summary: str, ref: str
    ) -> None:
        add = getattr(self.store, "add_pupil_event", None)
        if add is None:
            return
        try:
            await add(actor, pupil_id, kind=kind, summary=summary, ref=ref)
        except HandoverError as err:
            log.warning("could not note %s in pupil %s's chronology: %s", kind, pupil_id, err.slug)

    async def _import_documents(
        self, row: IncomingPackage, plan: ImportPlan, records: PackageRecords, first_sha: str | None
    ) -> None:
        """Pass 2: decrypt the package again, streaming each document into the store encrypted."""
        wanted = {d.sha256 for d in records.documents}
        if not wanted:
            return
        keyset = await self._keyset(row.recipient_org_id)
        sender_keys = await self.directory.sender_keys()
        loop = asyncio.get_running_loop()
        limit = self.store.max_document_bytes
        importer = self.importer

        def on_entry(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
            if not entry.path.startswith("documents/") or entry.sha256 not in wanted:
                return
            if entry.sha256 in plan.written:
                return
            _stream_to_loop(
                loop,
                chunks,
                lambda source: importer.write_document(plan, entry.sha256, source, limit),
            )

        path = self.inbox_path(row.id)
        verified = await loop.run_in_executor(
            _IMPORT_THREADS, lambda: _verify_file(path, keyset, sender_keys, on_entry)
        )
        if verified.ciphertext_sha256 != first_sha:
            raise IntegrityError(f"the package file of {row.id} changed while it was imported")
        missing = wanted - set(plan.written)
        if missing:
            raise IntegrityError(
                f"the package lists {plural(len(missing), 'document')} whose files it does not hold"
            )

    async def reject(
        self, actor: Actor, package_id: str, reason: str, *, via: Via = "api"
    ) -> IncomingSummary:
        """Refuse the package with a reason; the rejected receipt is queued for the sender."""
        row = await self._for_dsl(actor, package_id, "transfer.rejected", via)
        reason = " ".join(reason.split())
        if not reason or len(reason) > _MAX_REASON:
            raise InputError(
                f"give a reason of 1 to {_MAX_REASON} characters (it goes to the sender)"
            )
        if row.state not in OPEN_STATES:
            raise ConflictError(f"package {row.id} was already {row.state}")
        signed = await self._sign(row, REJECTED, acted_by=actor, reason=reason)
        now = self.now()
        async with self._sessions() as s, s.begin():
            result = await s.execute(
                update(IncomingPackage)
                .where(IncomingPackage.id == row.id, *_moves(IncomingEvent.REJECT))
                .values(**_to(IncomingEvent.REJECT), decided_at=now, decided_by=actor.staff_id)
            )
            if getattr(result, "rowcount", 0) != 1:
                raise ConflictError(
                    f"package {row.id} was accepted or rejected by someone else meanwhile"
                )
            s.add(self._receipt_row(signed, True, now))
            await self._push_delivered_too(s, row.id, now)
            targets = {"package": row.id}
            intents = [
                await self._intend(
                    s,
                    "transfer.rejected",
                    actor,
                    actor.org_id,
                    targets,
                    sender=row.sender_org_id,
                    via=via,
                ),
                await self._intend(
                    s,
                    "receipt.issued",
                    actor,
                    actor.org_id,
                    {**targets, "receipt": str(signed.body.receipt_id)},
                    kind=REJECTED,
                    to=row.sender_org_id,
                    via=via,
                ),
            ]
        await self.store.settle(*intents)
        await asyncio.to_thread(self.inbox_path(row.id).unlink, True)
        return await self._summary_of(row.id)


# ------------------------------------------------------------ worker-thread parts


def _identities(keyset: KeySet) -> list[X25519Identity]:
    return [X25519Identity.from_private_bytes(k.secret) for k in keyset.decryption_keys()]


def _inspect_file(path: Path, keyset: KeySet, sender_keys: SenderKeys) -> VerifiedPackage:
    with path.open("rb") as f:
        verified = inspect_package(
            f,
            identities=_identities(keyset),
            sender_keys=sender_keys,
            addressee=Addressee.for_keyset(keyset),
        )
    return verified


def _verify_file(
    path: Path,
    keyset: KeySet,
    sender_keys: SenderKeys,
    on_entry: Callable[[ManifestEntry, Iterator[bytes]], None],
) -> VerifiedPackage:
    with path.open("rb") as f:
        return verify_package(
            f,
            identities=_identities(keyset),
            sender_keys=sender_keys,
            addressee=Addressee.for_keyset(keyset),
            on_entry=on_entry,
        )


@dataclass(frozen=True)
class _Wanted:
    """Which package is being opened, and what to parse beside its records (with the
    chronology: the preview as a DSL reads it, which names ``sender_name``)."""

    package_id: str
    package_kind: str
    chronology: bool
    sender_name: str = ""


def _size(n: int) -> str:
    return f"{n / 1024**2:.1f} MiB" if n >= 1024**2 else f"{-(-n // 1024)} KiB"


def _verify_collecting(
    path: Path, keyset: KeySet, sender_keys: SenderKeys, limits: RecordLimits, wanted: _Wanted
) -> _Read:
    """Verify the package and keep its records, refusing any past ``limits`` before its
    bytes are read (each entry's size is in the signed manifest and checked as it streams),
    then parse them: all in the calling worker thread."""
    raw: dict[str, bytes] = {}
    documents: list[ManifestEntry] = []
    kept = 0
    pid = wanted.package_id

    def keep(entry: ManifestEntry, chunks: Iterator[bytes]) -> None:
        nonlocal kept
        if is_record_path(entry.path) or entry.path in (_CHRONOLOGY_PATH, _FORM_PATH, _PEOPLE_PATH):
            if entry.size > limits.per_record:
                raise RecordTooLargeError(
                    f"{entry.path} in package {pid} is {_size(entry.size)}, more than the "
                    f"{_size(limits.per_record)} this node opens for one record "
                    "(transfer.max_record_bytes): reject the package, or ask the node's "
                    "operator to raise the limit"
                )
            kept += entry.size
            if kept > limits.total:
                raise RecordTooLargeError(
                    f"the records of package {pid} come to more than the "
                    f"{_size(limits.total)} this node opens for one package "
                    "(transfer.max_records_bytes): reject the package, or ask the node's "
                    "operator to raise the limit"
                )
            raw[entry.path] = _read_record(chunks, entry.size)
        elif entry.path.startswith("documents/"):
            documents.append(entry)

    verified = _verify_file(path, keyset, sender_keys, keep)
    return _parse_read(verified, raw, documents, wanted)


def _read_record(chunks: Iterator[bytes], size: int) -> bytes:
    """A record's bytes, never more than its declared ``size`` (the package reader also
    holds it to that size)."""
    buf = bytearray()
    for chunk in chunks:
        if len(buf) + len(chunk) > size:
            raise IntegrityError("a record in the package is longer than its manifest says")
        buf += chunk
    return bytes(buf)


def _parse_read(
    verified: VerifiedPackage,
    raw: dict[str, bytes],
    documents: list[ManifestEntry],
    wanted: _Wanted,
) -> _Read:
    records = parse_records(raw)
    chronology: tuple[ChronologyEntry, ...] = ()
    raw_chronology = raw.get(_CHRONOLOGY_PATH)
    if wanted.chronology and raw_chronology is not None:
        try:
            jsontext.refuse_duplicate_keys(raw_chronology)
            chronology = tuple(_CHRONOLOGY.validate_json(raw_chronology))
        except (ValidationError, jsontext.JSONRefused):
            raise RecordsError(
                f"{_CHRONOLOGY_PATH} in the package is not a chronology this node reads"
            ) from None
    form = _parse_form(wanted, raw.get(_FORM_PATH)) if is_referral(wanted.package_kind) else None
    named: tuple[PersonRecord, ...] = ()
    raw_people = raw.get(_PEOPLE_PATH)
    if raw_people is not None:
        try:
            jsontext.refuse_duplicate_keys(raw_people)
            named = tuple(_PEOPLE.validate_json(raw_people))
        except (ValidationError, jsontext.JSONRefused):
            raise RecordsError(
                f"{_PEOPLE_PATH} in the package is not a list of people this node reads"
            ) from None
    read = _Read(verified, records, chronology, form, documents, named)
    if wanted.chronology:
        read.readable = _readable(read, wanted)
    return read


def _preview_documents(read: _Read) -> tuple[PreviewDocument, ...]:
    refs = {d.sha256: d for d in read.records.documents}
    return tuple(
        PreviewDocument(
            path=e.path,
            size=e.size,
            sha256=e.sha256,
            filename=refs[e.sha256].filename if e.sha256 in refs else None,
            media_type=refs[e.sha256].media_type if e.sha256 in refs else None,
        )
        for e in read.documents
    )


def _readable(read: _Read, wanted: _Wanted) -> ReadableFile:
    """The received chronology as a DSL reads it (in the worker thread: it can be long)."""
    named = {p.id: people.person_from_record(p) for p in read.people}
    sender = wanted.sender_name or "the sending organisation"
    someone_there = people.staff_of_org(sender)

    def who(entry: ChronologyEntry) -> people.Person:
        provenance = entry.provenance or getattr(entry.record, "provenance", None)
        if provenance is not None:  # the sender had received it from another organisation
            return people.staff_of_org(provenance.source_org_name)
        staff_id = people.recorded_by(entry.record)
        if staff_id is None:
            return people.Person(f"{sender} (recorded automatically)", kind="node")
        return named.get(staff_id, someone_there)

    def name_of(staff_id: str) -> str | None:
        return named[staff_id].describe() if staff_id in named else None

    pupil, subject = read.records.pupil, read.verified.manifest.subject
    if pupil is not None:
        about = about_line(pupil.forename, pupil.surname, pupil.dob, pupil.upn)
    else:
        about = about_line(subject.forename, subject.surname, subject.dob, subject.upn)
    documents = [
        ReadableDocument(
            name=d.filename or d.path.rsplit("/", 1)[-1],
            size=size_in_words(d.size),
            size_bytes=d.size,
            media_type=d.media_type,
        )
        for d in _preview_documents(read)
    ]
    return readable_file(
        about=about,
        chronology=read.chronology,
        who=who,
        categories=_CATEGORY_LABELS,
        documents=documents,
        name_of=name_of,
    )


def _parse_form(wanted: _Wanted, raw: bytes | None) -> dict[str, Any]:
    """A referral package's form, checked against the referral schemas."""
    pid, kind = wanted.package_id, wanted.package_kind
    if raw is None:
        raise RecordsError(f"the referral package {pid} holds no {_FORM_PATH}")
    try:
        jsontext.refuse_duplicate_keys(raw)
        form = _FORM.validate_json(raw)
    except (ValidationError, jsontext.JSONRefused):
        raise RecordsError(
            f"{_FORM_PATH} in package {pid} is not a referral form this node reads; the "
            "sender may use a newer form"
        ) from None
    dumped: dict[str, Any] = form.model_dump(mode="json")
    if f"referral_{dumped['kind']}" != kind:
        raise RecordsError(f"package {pid} is a {kind} but its form is a {dumped['kind']} referral")
    return dumped


_END = object()


def _stream_to_loop(
    loop: asyncio.AbstractEventLoop,
    chunks: Iterator[bytes],
    consume: Callable[[AsyncIterator[bytes]], Any],
) -> None:
    """From a worker thread: feed ``chunks`` to the coroutine ``consume(source)`` on ``loop``.

    A small bounded queue carries the chunks, so memory stays at a few chunks;
    if the consumer fails, the producer stops at once and the error is raised
    here; if the producer fails (the package fails its check mid-entry), the
    consumer's source raises too, so it discards what it wrote.
    """
    holder: dict[str, Any] = {}

    async def start() -> None:
        queue: asyncio.Queue[object] = asyncio.Queue(maxsize=4)

        async def source() -> AsyncIterator[bytes]:
            while True:
                item = await queue.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, bytes)
                yield item

        holder["queue"] = queue
        holder["task"] = asyncio.ensure_future(consume(source()))

    asyncio.run_coroutine_threadsafe(start(), loop).result()
    queue: asyncio.Queue[object] = holder["queue"]
    task: asyncio.Future[Any] = holder["task"]

    async def put(item: object) -> bool:
        putting = asyncio.ensure_future(queue.put(item))
        done, _ = await asyncio.wait({putting, task}, return_when=asyncio.FIRST_COMPLETED)
        if putting not in done:
            putting.cancel()
            return False
        return True

    def send(item: object) -> bool:
        return asyncio.run_coroutine_threadsafe(put(item), loop).result()

    try:
        for chunk in chunks:
            if not send(chunk):
                break
        else:
            send(_END)
    except BaseException as exc:
        send(IntegrityError("the package failed a check while a document was being stored"))
        asyncio.run_coroutine_threadsafe(_settle(task), loop).result()
        raise exc
    asyncio.run_coroutine_threadsafe(_settle(task), loop).result()
    task.result()


async def _settle(task: asyncio.Future[Any]) -> None:
    with contextlib.suppress(BaseException):
        await task


def summaries_json(items: Sequence[IncomingSummary]) -> list[Mapping[str, Any]]:
    return [i.model_dump(mode="json") for i in items]
