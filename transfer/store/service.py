"""The concern store's services: one facade, :class:`Store`, over an async engine.

Every method is one transaction, checks the actor's permissions here (not at
the HTTP edge), seals and unseals through a :class:`KeyRing` that lives for
that call only, and reports to the :class:`AuditSink` after its transaction
(never any text). The public API is described in ``docs/store.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import uuid
from collections import defaultdict
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, cast

from sqlalchemy import ColumnElement, delete, event, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from keys import aead
from schemas.auditing import AuditEvent, AuditSink, IntentSink, Outcome, event_to_json
from schemas.records import (
    ActionRecord,
    AmendmentRecord,
    BodyMapMark,
    CategoryRecord,
    ChronologyEntry,
    ChronologyLine,
    ConcernRecord,
    ConcernStatus,
    ConcernSummary,
    ContactRecord,
    CTFImportResult,
    Destination,
    DocumentRef,
    NewAction,
    NewAmendment,
    NewConcern,
    NewContact,
    NewDestination,
    NewPupil,
    NewTriage,
    OrganisationKind,
    OrganisationRecord,
    PersonRecord,
    Provenance,
    PupilChanges,
    PupilEventRecord,
    PupilRecord,
    RetentionPolicyRecord,
    RetentionReport,
    ReviewItem,
    StaffRecord,
    SubjectAccessExport,
    TombstoneRecord,
    TriageRecord,
)
from transfer.audit.tables import audit_intents
from transfer.ctf import CtfDestination, CTFDocument, CTFPupil, parse_ctf
from transfer.deadlines import retention_until
from transfer.errors import (
    ConflictError,
    HandoverError,
    InputError,
    NotFoundError,
    PolicyError,
    TransportError,
)
from transfer.identifiers import (
    UPN_LENGTH,
    validate_agency_id,
    validate_laestab,
    validate_upn,
    validate_urn,
)
from transfer.media import SNIFF_BYTES, UnsupportedDocumentType, sniff_media_type
from transfer.space import SpaceWatch
from transfer.store import blobs, exports, people
from transfer.store.changes import StoreChange, StoreListener
from transfer.store.db import Base, is_sqlite, make_engine, migrate, sessionmaker
from transfer.store.keyring import KeyDestroyed, KeyRing, open_field, sealed_field
from transfer.store.models import (
    Action,
    BodyMapMarkRow,
    Category,
    Concern,
    ConcernAmendment,
    ConcernPupil,
    Contact,
    Document,
    Organisation,
    ProvenanceRow,
    Pupil,
    PupilEvent,
    PupilKey,
    RetentionPolicy,
    SealedField,
    Staff,
    Tombstone,
    Triage,
)
from transfer.store.permissions import (
    OPERATOR,
    Actor,
    Permission,
    PermissionDenied,
    Role,
    audit_actor,
    can_read_concern,
    holds_protected,
    require,
    roles_in_words,
    touches_protected,
)
from transfer.wording import plural

Clock = Callable[[], datetime]
log = logging.getLogger("handover.store")

_NEEDS_APPROVAL: Final = (
    "granting or removing the DSL, deputy DSL or head teacher role needs a DSL's approval: "
    "ask for it through the accounts service (PATCH /api/v1/staff/{id}), which a DSL approves"
)

#: Default categories seeded for every new organisation: key -> (label, restricted).
DEFAULT_CATEGORIES: Final[dict[str, tuple[str, bool]]] = {
    "child_protection": ("Child protection", False),
    "safeguarding": ("Safeguarding", False),
    "bullying": ("Bullying", False),
    "behaviour": ("Behaviour", False),
    "send": ("SEND", False),
    "medical": ("Medical", False),
    "attendance": ("Attendance", False),
    "domestic_abuse": ("Domestic abuse", True),
    "online_safety": ("Online safety", False),
    "mental_health": ("Mental health", False),
    "child_on_child_abuse": ("Child-on-child abuse", False),
    "radicalisation_prevent": ("Radicalisation (Prevent)", True),
    "neglect": ("Neglect", False),
    "self_harm": ("Self-harm", False),
}

#: How far ahead of this node's clock a reported time may be (another device's clock).
FUTURE_ALLOWANCE: Final = timedelta(minutes=5)


class CTFAddressedElsewhereError(ConflictError):
    """The CTF is addressed to another school; it is imported only when the importer confirms."""

    slug = "ctf-addressed-elsewhere"
    title = "The CTF is addressed to another school"


AGENCY_KINDS: Final = frozenset({"social_care", "lado", "police", "other_agency"})
DEFAULT_MAX_DOCUMENT_BYTES: Final = 2 * 1024**3
_CATEGORY_KEY = re.compile(r"[a-z][a-z0-9_]{1,63}")
log = logging.getLogger("handover.store")

_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")

# Sealed fields per record table.
CONCERN_FIELDS: Final = ("account", "location", "people_involved")
MARK_FIELDS: Final = ("description",)
TRIAGE_FIELDS: Final = ("reason",)
ACTION_FIELDS: Final = ("text",)
CONTACT_FIELDS: Final = ("agency", "outcome")
DOCUMENT_FIELDS: Final = ("filename",)
EVENT_FIELDS: Final = ("summary",)

_EVENT_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
MAX_EVENT_SUMMARY: Final = 2000
#: Who may write a pupil event as a person (the node itself may always).
_EVENT_WRITERS: Final = (
    Permission.SEND_TRANSFER,
    Permission.RECEIVE_TRANSFER,
    Permission.SEND_REFERRAL,
)


def utc_now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


def _submission_id(record_id: str | None) -> str:
    """The id of a new record: a form's own (so that a form sent twice is stored once), or
    a new one."""
    if record_id is None:
        return _new_id()
    try:
        return str(uuid.UUID(record_id))
    except ValueError:
        raise InputError(
            "this form's own reference is not valid; reload the page and try again"
        ) from None


def organisation_name(name: str) -> str:
    """An organisation's name, stripped, or :class:`InputError`."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InputError("an organisation's name must be 1 to 200 characters")
    return name


def new_school(*, name: str, urn: str, laestab: str) -> tuple[str, str, str]:
    """The (name, URN, LAESTAB) of a school to create, checked; what :meth:`create_school` checks.

    ``handover init`` checks every organisation with this before it creates any.
    """
    return organisation_name(name), validate_urn(urn), validate_laestab(laestab)


def new_agency(*, agency_id: str, name: str, kind: str) -> tuple[str, str, OrganisationKind]:
    """The (name, id, kind) of an agency to create, checked; what :meth:`create_agency` checks."""
    if kind not in AGENCY_KINDS:
        raise InputError(f"agency kind must be one of {', '.join(sorted(AGENCY_KINDS))}")
    return organisation_name(name), validate_agency_id(agency_id), cast(OrganisationKind, kind)


def staff_username(username: str) -> str:
    """A username, stripped, or :class:`InputError` (the rule every staff record follows)."""
    username = username.strip()
    if not username or len(username) > 100:
        raise InputError("a username must be 1 to 100 characters")
    return username


def _roles(values: Iterable[str]) -> list[str]:
    out: list[str] = []
    for value in values:
        try:
            role = Role(value)
        except ValueError:
            raise InputError(
                f"unknown role {value[:40]!r}; roles are: {', '.join(r.value for r in Role)}"
            ) from None
        if role.value not in out:
            out.append(role.value)
    if not out:
        raise InputError("a staff record needs at least one role")
    return out


def _org_record(org: Organisation) -> OrganisationRecord:
    return OrganisationRecord(
        id=org.id,
        name=org.name,
        kind=org.kind,
        urn=org.urn,
        laestab=org.laestab,
        created_at=org.created_at,
    )


def _staff_record(staff: Staff) -> StaffRecord:
    return StaffRecord(
        id=staff.id,
        org_id=staff.org_id,
        username=staff.username,
        display_name=staff.display_name,
        email=staff.email,
        roles=tuple(staff.roles),
        active=staff.active,
        created_at=staff.created_at,
    )


def _pupil_record(p: Pupil) -> PupilRecord:
    destination = None
    if p.destination_kind is not None:
        destination = Destination(
            kind=p.destination_kind,
            urn=p.destination_urn,
            laestab=p.destination_laestab,
            name=p.destination_name,
        )
    return PupilRecord(
        id=p.id,
        org_id=p.org_id,
        upn=p.upn,
        surname=p.surname,
        forename=p.forename,
        dob=p.dob,
        sex=p.sex,
        year_group=p.year_group,
        on_roll_from=p.on_roll_from,
        leaving_date=p.leaving_date,
        destination=destination,
        created_at=p.created_at,
        updated_at=p.updated_at,
        erased_at=p.erased_at,
    )


def _set_destination(p: Pupil, d: Destination | None) -> None:
    p.destination_kind = d.kind if d else None
    p.destination_urn = d.urn if d else None
    p.destination_laestab = d.laestab if d else None
    p.destination_name = d.name if d else None


def _from_ctf_destination(
    d: CtfDestination | None, own_urn: str | None, own_laestab: str | None
) -> NewDestination | None:
    """A CTF pupil's next school; none when the file names our own school (a roll file sent
    from the school to itself names it as every pupil's destination)."""
    if d is None:
        return None
    school = d.school
    if school is not None and (
        (school.urn is not None and school.urn == own_urn)
        or (school.laestab is not None and school.laestab == own_laestab)
    ):
        return None
    return NewDestination(
        kind=d.kind.value,
        urn=school.urn if school else None,
        laestab=school.laestab if school else None,
        name=school.name if school else None,
    )


async def _sniffing(
    chunks: AsyncIterable[bytes], filename: str, found: list[str]
) -> AsyncIterator[bytes]:
    """Pass ``chunks`` through once their start says what kind of file it is (appended to
    ``found``); refuse a kind not allowed before any of it is written."""
    head = bytearray()
    source = aiter(chunks)
    complete = False
    while len(head) < SNIFF_BYTES:
        try:
            head += await anext(source)
        except StopAsyncIteration:
            complete = True
            break
    whole = complete and len(head) <= SNIFF_BYTES
    found.append(sniff_media_type(bytes(head[:SNIFF_BYTES]), filename, complete=whole))
    if head:
        yield bytes(head)
    if not complete:
        async for piece in source:
            yield piece


def _summary(c: Concern, pupil_ids: Sequence[str]) -> ConcernSummary:
    return ConcernSummary(
        id=c.id,
        pupil_ids=tuple(pupil_ids),
        category=c.category_key,
        restricted=c.restricted,
        happened_at=c.happened_at,
        recorded_at=c.recorded_at,
        recorded_by=c.recorded_by,
        status=c.status,
    )


class _Sealed:
    """Sealed-field access for one operation."""

    def __init__(self, session: AsyncSession, ring: KeyRing) -> None:
        self.session = session
        self.ring = ring

    async def put(
        self, table: str, record_id: str, pupil_ids: Iterable[str], fields: dict[str, str]
    ) -> None:
        for pupil_id in pupil_ids:
            key = await self.ring.pupil_key(self.session, pupil_id)
            for name, value in fields.items():
                self.session.add(sealed_field(key, table, name, record_id, pupil_id, value))

    async def for_pupil(self, pupil_id: str) -> _PupilFields:
        """Every sealed field held for one pupil, still sealed; opened only when asked for."""
        # Plain Core rows, not ORM objects: a long chronology has thousands.
        conn = await self.session.connection()
        result = await conn.execute(
            select(
                SealedField.record_table,
                SealedField.record_id,
                SealedField.field,
                SealedField.sealed,
            ).where(SealedField.pupil_id == pupil_id)
        )
        rows: list[tuple[str, str, str, bytes]] = [tuple(r) for r in result]  # type: ignore[misc]
        key = await self.ring.pupil_key(self.session, pupil_id) if rows else b""
        return _PupilFields(pupil_id, key, rows)

    async def one(self, table: str, record_id: str, pupil_id: str) -> dict[str, str]:
        rows = (
            await self.session.scalars(
                select(SealedField).where(
                    SealedField.record_table == table,
                    SealedField.record_id == record_id,
                    SealedField.pupil_id == pupil_id,
                )
            )
        ).all()
        key = await self.ring.pupil_key(self.session, pupil_id)
        return {
            r.field: open_field(key, table, r.field, record_id, pupil_id, r.sealed) for r in rows
        }


class _PupilFields:
    """One pupil's sealed fields, unsealed one record at a time on demand."""

    def __init__(
        self, pupil_id: str, key: bytes, rows: Iterable[tuple[str, str, str, bytes]]
    ) -> None:
        self.pupil_id = pupil_id
        self.key = key
        self.rows: dict[tuple[str, str], list[tuple[str, bytes]]] = defaultdict(list)
        for table, record_id, name, sealed in rows:
            self.rows[(table, record_id)].append((name, sealed))

    def __getitem__(self, where: tuple[str, str]) -> dict[str, str]:
        table, record_id = where
        rows = self.rows.get(where)
        if not rows:
            raise NotFoundError(f"the sealed content of a {table} record is missing")
        return {
            name: open_field(self.key, table, name, record_id, self.pupil_id, sealed)
            for name, sealed in rows
        }


class _Bundle:
    """Everything readable about one pupil, opened (for chronology and export)."""

    def __init__(self) -> None:
        self.concerns: list[ConcernRecord] = []
        self.triage: list[TriageRecord] = []
        self.actions: list[ActionRecord] = []
        self.contacts: list[ContactRecord] = []
        self.documents: list[DocumentRef] = []
        self.events: list[PupilEventRecord] = []
        #: Each document's file name in the pupil's directory, by document id.
        self.files: dict[str, str] = {}

    def records(
        self,
    ) -> tuple[
        list[ConcernRecord],
        list[TriageRecord],
        list[ActionRecord],
        list[ContactRecord],
        list[DocumentRef],
        list[PupilEventRecord],
    ]:
        return (
            self.concerns,
            self.triage,
            self.actions,
            self.contacts,
            self.documents,
            self.events,
        )


@dataclass(frozen=True)
class SubjectAccessArchive:
    """A subject access export for its caller: the records, and the whole export (records
    and decrypted documents) as a tar stream. Nothing of it is on the node's disk."""

    export: SubjectAccessExport
    #: The folder every entry is in (``sar-<pupil id>-<time>``); ``<name>.tar`` to save it.
    name: str
    chunks: AsyncIterator[bytes] = field(repr=False)


@dataclass(frozen=True)
class AuditIntent:
    """An audit entry promised in a transaction (:meth:`Store.intend`), to :meth:`Store.settle`."""

    id: str
    event: AuditEvent
    at: datetime


class Store:
    """The concern store of one node. Make one with :meth:`open`."""

    def __init__(
        self,
        engine: AsyncEngine,
        kek: bytes,
        audit: AuditSink,
        *,
        data_dir: Path,
        clock: Clock | None = None,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
    ) -> None:
        if len(kek) != aead.KEY_SIZE:
            raise ValueError("the key-encryption key must be 32 bytes")
        self.engine = engine
        self.sessions: async_sessionmaker[AsyncSession] = sessionmaker(engine)
        self._kek = kek
        self._audit_sink = audit
        self.data_dir = data_dir
        self.documents_dir = data_dir / "documents"
        self._clock = clock or utc_now
        self.max_document_bytes = max_document_bytes
        #: Whether this node ran out of storage space lately (``transfer.space``): the faces
        #: note each refusal here, the scheduler alerts the DSL teams.
        self.space = SpaceWatch()
        #: Called after a change is committed and audited (``transfer.store.changes``):
        #: the node wires the DSL team's alerts here; the store holds no alert logic.
        self.listeners: list[StoreListener] = []

    @classmethod
    async def open(
        cls,
        url: str,
        kek: bytes,
        audit: AuditSink,
        *,
        data_dir: Path,
        clock: Clock | None = None,
        max_document_bytes: int = DEFAULT_MAX_DOCUMENT_BYTES,
        run_migrations: bool = True,
    ) -> Store:
        engine = make_engine(url)
        if is_sqlite(url):

            @event.listens_for(engine.sync_engine, "connect")
            def _secure_delete(dbapi_conn: Any, _record: Any) -> None:
                cur = dbapi_conn.cursor()
                cur.execute("PRAGMA secure_delete=ON")
                cur.close()

        try:
            if run_migrations:
                await migrate(engine)
        except BaseException:
            await engine.dispose()
            raise
        store = cls(
            engine,
            kek,
            audit,
            data_dir=data_dir,
            clock=clock,
            max_document_bytes=max_document_bytes,
        )
        if run_migrations:
            await store.finish_upgrade()
        return store

    async def finish_upgrade(self) -> None:
        """What an upgrade does to files once the schema is migrated (``docs/operations.md``,
        Upgrading): rename documents to their keyed names, remove plaintext exports left by
        earlier versions. :meth:`open` runs it after migrating; a caller that migrates the
        schema itself (``Node.open``, after checking the database and the KEK) runs it then."""
        await self._name_legacy_documents()
        await self._remove_legacy_exports()

    async def _name_legacy_documents(self) -> int:
        """Finish ``store_0003``: rename document files written before it (named by the SHA-256
        of their plaintext) to their keyed names, and seal that SHA-256.

        Crash-safe and idempotent, one document at a time: the file is renamed (an atomic
        ``rename``), then the row is updated and the SHA-256 sealed in one transaction,
        only if no other process did it first. Killed between the two, the next run finds
        the file already renamed and finishes the row. Returns how many rows were done.
        """
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Document.id, Document.org_id, Document.pupil_id, Document.sha256).where(
                        Document.name.is_(None), Document.sha256.is_not(None)
                    )
                )
            ).all()
        if not rows:
            return 0
        ring = self._ring()
        done = 0
        for doc_id, org_id, pupil_id, legacy in rows:
            sha = str(legacy)
            async with self._writing() as s:
                key = await ring.pupil_key(s, pupil_id)
                name = blobs.document_name(key, pupil_id, sha)
                directory = self._blob_dir(org_id, pupil_id)
                await asyncio.to_thread(_rename_if_there, directory / sha, directory / name)
                result = await s.execute(
                    update(Document)
                    .where(Document.id == doc_id, Document.name.is_(None))
                    .values(name=name, sha256=None)
                )
                if getattr(result, "rowcount", 0):
                    await _Sealed(s, ring).put("documents", doc_id, [pupil_id], {"sha256": sha})
                    done += 1
        log.info("renamed %d document file(s) to keyed names (store_0003)", done)
        if self.engine.dialect.name == "sqlite":
            # The old names were in rows now rewritten: keep them out of the WAL too.
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return done

    async def _remove_legacy_exports(self) -> None:
        """Delete the plaintext subject access exports earlier versions left on disk."""
        pupils = await asyncio.to_thread(exports.remove_legacy_exports, self.data_dir)
        if not pupils:
            return
        log.warning(
            "removed %d subject access export(s) that an earlier version left in plaintext "
            "under %s; export again to get them (exports are now streamed to whoever asks)",
            len(pupils),
            self.data_dir / exports.EXPORTS_DIR,
        )
        async with self.sessions() as s:
            orgs = dict(
                (await s.execute(select(Pupil.id, Pupil.org_id).where(Pupil.id.in_(pupils)))).all()
            )
        for pupil_id in pupils:
            await self._audit("store.sar.removed", "node", orgs.get(pupil_id), {"pupil": pupil_id})

    async def close(self) -> None:
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ----------------------------------------------------------------- plumbing

    def now(self) -> datetime:
        value = self._clock()
        if value.tzinfo is None:
            raise ValueError("the store's clock must return an aware datetime")
        return value.astimezone(UTC)

    def _check_not_future(self, when: datetime, what: str) -> None:
        """Refuse a time of something that happened which is later than now (beyond the
        small allowance for clocks that disagree): a mistyped year, or a.m. for p.m."""
        if when > self.now() + FUTURE_ALLOWANCE:
            minutes = int(FUTURE_ALLOWANCE.total_seconds() // 60)
            raise InputError(
                f"{what} is dated in the future ({when.astimezone(UTC):%Y-%m-%d %H:%M} UTC); "
                f"give the time it happened (at most {plural(minutes, 'minute')} ahead of "
                "this node's clock)"
            )

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        """A session in one write transaction; a constraint violation is a conflict."""
        try:
            async with self.sessions() as s, s.begin():
                yield s
        except sa_exc.IntegrityError:
            raise ConflictError(
                "the records changed while this was being saved (another change or an "
                "erasure came first); reload and try again"
            ) from None

    def _ring(self) -> KeyRing:
        return KeyRing(self._kek)

    async def _audit(
        self,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str] | None = None,
        outcome: Outcome = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        who: str | None
        if not isinstance(actor, Actor):
            who = actor
        else:
            # The operator acting for someone is recorded as the operator, never as them.
            who, kind = audit_actor(actor)
            detail = {**detail, **kind}
        await self._audit_sink.record(
            AuditEvent(
                action=action,
                actor=who,
                org=org,
                targets=dict(targets or {}),
                outcome=outcome,
                detail=dict(detail),
            )
        )

    #: The store's audit door for other areas acting on its records (packaging).
    record_event = _audit

    async def intend(
        self,
        session: AsyncSession,
        action: str,
        actor: Actor | str | None,
        org: str | None,
        targets: dict[str, str] | None = None,
        outcome: Outcome = "ok",
        **detail: str | int | bool | None,
    ) -> AuditIntent:
        """Promise an audit entry in ``session``'s transaction (the change it records).

        The intent row commits (or rolls back) with the change; :meth:`settle` then
        appends the entry and deletes the row together. A process killed in between
        leaves the row, and the entry is appended when the log replays it (``serve``
        at start-up and on its sweeps): a committed change never lacks its entry
        (``docs/reliability.md``, ``docs/adr/0011-audit-intents.md``).
        """
        who: str | None
        if not isinstance(actor, Actor):
            who = actor
        else:
            who, kind = audit_actor(actor)
            detail = {**detail, **kind}
        event = AuditEvent(
            action=action,
            actor=who,
            org=org,
            targets=dict(targets or {}),
            outcome=outcome,
            detail=dict(detail),
        )
        intent = AuditIntent(str(uuid.uuid4()), event, self.now())
        await session.execute(
            audit_intents.insert().values(
                id=intent.id, event=event_to_json(event), created_at=intent.at
            )
        )
        return intent

    async def settle(self, *intents: AuditIntent) -> None:
        """Append the entries promised by committed intents (each once), in order."""
        sink = self._audit_sink
        for intent in intents:
            if isinstance(sink, IntentSink) and await sink.record_intent(
                intent.event, intent.id, intent.at
            ):
                continue
            # A sink without intents (tests' MemoryAudit): record, then drop the row.
            await sink.record(intent.event)
            async with self.sessions() as s, s.begin():
                await s.execute(audit_intents.delete().where(audit_intents.c.id == intent.id))

    async def _leaving_changed(self, actor: Actor, pupil_ids: tuple[str, ...]) -> None:
        await self._changed(StoreChange("pupil.leaving", actor.org_id, pupil_ids, actor=actor))

    async def _changed(self, change: StoreChange) -> None:
        """Tell the listeners; one that fails is logged, and the change stands."""
        for listener in list(self.listeners):
            try:
                await listener(change)
            except Exception:
                log.exception(
                    "a listener failed after %s in %s (the change is saved; the next sweep "
                    "catches up)",
                    change.kind,
                    change.org_id,
                )

    async def seal_notes(
        self, table: str, record_id: str, pupil_id: str, fields: dict[str, str]
    ) -> None:
        """Keep text another area holds about a pupil sealed under the pupil's data key.

        For words a person typed that may carry safeguarding detail (the reason a
        file was sent again): never a plain column. Erasing the pupil erases them.
        """
        ring = self._ring()
        async with self._writing() as s:
            await s.execute(
                delete(SealedField).where(
                    SealedField.record_table == table,
                    SealedField.record_id == record_id,
                    SealedField.pupil_id == pupil_id,
                    SealedField.field.in_(list(fields)),
                )
            )
            await _Sealed(s, ring).put(table, record_id, [pupil_id], fields)

    async def open_notes(self, table: str, record_id: str, pupil_id: str) -> dict[str, str]:
        """The notes :meth:`seal_notes` kept; empty when there are none or the pupil is erased."""
        ring = self._ring()
        async with self.sessions() as s:
            try:
                return await _Sealed(s, ring).one(table, record_id, pupil_id)
            except KeyDestroyed:
                return {}

    async def _require(
        self, actor: Actor, permission: Permission, action: str, targets: dict[str, str]
    ) -> None:
        try:
            require(actor, permission)
        except PermissionDenied:
            await self._audit(action, actor, actor.org_id, targets, "refused")
            raise

    async def _refuse(self, actor: Actor, action: str, targets: dict[str, str]) -> None:
        await self._audit(action, actor, actor.org_id, targets, "refused")

    # ------------------------------------------------------------ organisations

    async def _create_org(
        self,
        *,
        org_id: str,
        name: str,
        kind: OrganisationKind,
        urn: str | None,
        laestab: str | None,
        operator: str,
    ) -> OrganisationRecord:
        name = organisation_name(name)
        ring = self._ring()
        async with self._writing() as s:
            if await s.get(Organisation, org_id) is not None:
                raise ConflictError(f"organisation {org_id!r} already exists on this node")
            org = Organisation(
                id=org_id,
                name=name,
                kind=kind,
                urn=urn,
                laestab=laestab,
                sealed_key=ring.seal_org_key(org_id, aead.new_key()),
                created_at=self.now(),
            )
            s.add(org)
            await s.flush()
            for key, (label, restricted) in DEFAULT_CATEGORIES.items():
                s.add(
                    Category(
                        id=_new_id(),
                        org_id=org_id,
                        key=key,
                        label=label,
                        restricted=restricted,
                        active=True,
                    )
                )
            record = _org_record(org)
        await self._audit("store.organisation.create", operator, org_id, {"org": org_id})
        return record

    async def create_school(
        self, *, name: str, urn: str, laestab: str, operator: str = "operator"
    ) -> OrganisationRecord:
        """Add a school (its id is its URN) and make its sealed key."""
        name, urn, laestab = new_school(name=name, urn=urn, laestab=laestab)
        return await self._create_org(
            org_id=urn, name=name, kind="school", urn=urn, laestab=laestab, operator=operator
        )

    async def create_agency(
        self, *, agency_id: str, name: str, kind: str, operator: str = "operator"
    ) -> OrganisationRecord:
        """Add an agency (children's social care, LADO, police, other) by its assigned id."""
        name, agency_id, org_kind = new_agency(agency_id=agency_id, name=name, kind=kind)
        return await self._create_org(
            org_id=agency_id,
            name=name,
            kind=org_kind,
            urn=None,
            laestab=None,
            operator=operator,
        )

    async def get_organisation(self, org_id: str) -> OrganisationRecord:
        async with self.sessions() as s:
            org = await s.get(Organisation, org_id)
            if org is None:
                raise NotFoundError(f"organisation {org_id[:64]!r} is not on this node")
            return _org_record(org)

    async def list_organisations(self) -> list[OrganisationRecord]:
        async with self.sessions() as s:
            rows = (await s.scalars(select(Organisation).order_by(Organisation.id))).all()
            return [_org_record(o) for o in rows]

    # -------------------------------------------------------------------- staff

    @staticmethod
    def check_staff_fields(
        username: str, display_name: str, roles: Iterable[str], email: str | None
    ) -> tuple[str, str, list[str]]:
        """Check a staff record's fields: the username and name stripped, the roles in order."""
        username = staff_username(username)
        display_name = display_name.strip()
        if not display_name or len(display_name) > 200:
            raise InputError("a display name must be 1 to 200 characters")
        if email is not None and (len(email) > 320 or "@" not in email):
            raise InputError("the email address is not valid")
        return username, display_name, _roles(roles)

    async def _add_staff(
        self,
        s: AsyncSession,
        org_id: str,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None,
    ) -> Staff:
        username, display_name, role_list = self.check_staff_fields(
            username, display_name, roles, email
        )
        if await s.get(Organisation, org_id) is None:
            raise NotFoundError(f"organisation {org_id[:64]!r} is not on this node")
        clash = await s.scalar(
            select(Staff.id).where(Staff.org_id == org_id, Staff.username == username)
        )
        if clash is not None:
            raise ConflictError(f"the username {username!r} is already taken in this organisation")
        staff = Staff(
            id=_new_id(),
            org_id=org_id,
            username=username,
            display_name=display_name,
            email=email,
            roles=role_list,
            active=True,
            created_at=self.now(),
        )
        s.add(staff)
        return staff

    async def add_staff_row(
        self,
        s: AsyncSession,
        org_id: str,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None,
    ) -> Staff:
        """Add a staff record inside the caller's transaction, without a permission check.

        Only for the accounts service applying an account a DSL has approved
        (``transfer.auth.approvals``); it audits the creation itself.
        """
        return await self._add_staff(s, org_id, username, display_name, roles, email)

    async def bootstrap_staff(
        self,
        org_id: str,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None = None,
        operator: str = "operator",
    ) -> StaffRecord:
        """Operator action (``handover init``): add a staff record without an Actor."""
        async with self._writing() as s:
            staff = await self._add_staff(s, org_id, username, display_name, roles, email)
            record = _staff_record(staff)
        await self._audit("store.staff.create", operator, org_id, {"staff": record.id})
        return record

    async def create_staff(
        self,
        actor: Actor,
        *,
        username: str,
        display_name: str,
        roles: Iterable[str],
        email: str | None = None,
    ) -> StaffRecord:
        await self._require(actor, Permission.MANAGE_STAFF, "store.staff.create", {})
        roles = list(roles)
        if holds_protected(roles):
            await self._refuse(actor, "store.staff.create", {})
            raise PermissionDenied(_NEEDS_APPROVAL)
        async with self._writing() as s:
            staff = await self._add_staff(s, actor.org_id, username, display_name, roles, email)
            record = _staff_record(staff)
        await self._audit("store.staff.create", actor, actor.org_id, {"staff": record.id})
        return record

    async def _staff_in_org(self, s: AsyncSession, actor: Actor, staff_id: str) -> Staff:
        staff = await s.get(Staff, staff_id)
        if staff is None or staff.org_id != actor.org_id:
            raise NotFoundError("no such staff member in your organisation")
        return staff

    async def update_staff(
        self,
        actor: Actor,
        staff_id: str,
        *,
        roles: Iterable[str] | None = None,
        display_name: str | None = None,
        email: str | None = None,
    ) -> StaffRecord:
        targets = {"staff": staff_id}
        await self._require(actor, Permission.MANAGE_STAFF, "store.staff.update", targets)
        if roles is not None and staff_id == actor.staff_id:
            await self._refuse(actor, "store.staff.update", targets)
            raise PermissionDenied("nobody may change their own roles; ask another administrator")
        wanted = _roles(roles) if roles is not None else None
        if wanted is not None:
            async with self.sessions() as s:
                current = list((await self._staff_in_org(s, actor, staff_id)).roles)
            if touches_protected(current, wanted):
                await self._refuse(actor, "store.staff.update", targets)
                raise PermissionDenied(_NEEDS_APPROVAL)
        async with self._writing() as s:
            staff = await self._staff_in_org(s, actor, staff_id)
            if wanted is not None:
                if touches_protected(staff.roles, wanted):
                    raise ConflictError("the roles changed meanwhile; reload and try again")
                staff.roles = wanted
            if display_name is not None:
                display_name = display_name.strip()
                if not display_name or len(display_name) > 200:
                    raise InputError("a display name must be 1 to 200 characters")
                staff.display_name = display_name
            if email is not None:
                if len(email) > 320 or "@" not in email:
                    raise InputError("the email address is not valid")
                staff.email = email
            record = _staff_record(staff)
        await self._audit(
            "store.staff.update", actor, actor.org_id, targets, roles=",".join(record.roles)
        )
        return record

    async def deactivate_staff(self, actor: Actor, staff_id: str) -> StaffRecord:
        targets = {"staff": staff_id}
        await self._require(actor, Permission.MANAGE_STAFF, "store.staff.deactivate", targets)
        async with self._writing() as s:
            staff = await self._staff_in_org(s, actor, staff_id)
            staff.active = False
            record = _staff_record(staff)
        await self._audit("store.staff.deactivate", actor, actor.org_id, targets)
        return record

    async def get_staff(self, actor: Actor, staff_id: str) -> StaffRecord:
        targets = {"staff": staff_id}
        if staff_id != actor.staff_id:
            await self._require(actor, Permission.MANAGE_STAFF, "store.staff.read", targets)
        async with self.sessions() as s:
            record = _staff_record(await self._staff_in_org(s, actor, staff_id))
        await self._audit("store.staff.read", actor, actor.org_id, targets)
        return record

    async def list_staff(self, actor: Actor) -> list[StaffRecord]:
        await self._require(actor, Permission.MANAGE_STAFF, "store.staff.list", {})
        async with self.sessions() as s:
            rows = await s.scalars(
                select(Staff).where(Staff.org_id == actor.org_id).order_by(Staff.username)
            )
            records = [_staff_record(r) for r in rows]
        await self._audit("store.staff.list", actor, actor.org_id, {}, count=len(records))
        return records

    async def find_staff(self, org_id: str, username: str) -> StaffRecord | None:
        """For sign-in: the staff record with this username in ``org_id``, if any."""
        async with self.sessions() as s:
            staff = await s.scalar(
                select(Staff).where(Staff.org_id == org_id, Staff.username == username.strip())
            )
            return _staff_record(staff) if staff else None

    async def actor_for(self, staff_id: str) -> Actor:
        """The :class:`Actor` for an active staff member (after authentication)."""
        async with self.sessions() as s:
            staff = await s.get(Staff, staff_id)
            if staff is None:
                raise NotFoundError("no such staff member")
            if not staff.active:
                raise PolicyError("this account has been deactivated")
            return Actor(
                staff_id=staff.id,
                org_id=staff.org_id,
                roles=frozenset(Role(r) for r in staff.roles),
                display_name=staff.display_name,
            )

    # --------------------------------------------------------------- categories

    async def list_categories(self, actor: Actor) -> list[CategoryRecord]:
        async with self.sessions() as s:
            rows = await s.scalars(
                select(Category).where(Category.org_id == actor.org_id).order_by(Category.key)
            )
            return [
                CategoryRecord(key=c.key, label=c.label, restricted=c.restricted, active=c.active)
                for c in rows
            ]

    async def concern_categories(self, actor: Actor) -> list[CategoryRecord]:
        """The categories a concern may be logged under (active ones), for someone who may
        log a concern; anyone else is refused (and the refusal audited)."""
        await self._require(actor, Permission.RECORD_CONCERN, "store.concern.form", {})
        return [c for c in await self.list_categories(actor) if c.active]

    async def add_category(
        self, actor: Actor, *, key: str, label: str, restricted: bool = False
    ) -> CategoryRecord:
        targets = {"category": key[:64]}
        await self._require(actor, Permission.MANAGE_CATEGORIES, "store.category.add", targets)
        if not _CATEGORY_KEY.fullmatch(key):
            raise InputError("a category key is 2-64 lower-case letters, digits or underscores")
        label = label.strip()
        if not label or len(label) > 200:
            raise InputError("a category label must be 1 to 200 characters")
        async with self._writing() as s:
            exists = await s.scalar(
                select(Category.id).where(Category.org_id == actor.org_id, Category.key == key)
            )
            if exists is not None:
                raise ConflictError(f"category {key!r} already exists")
            s.add(
                Category(
                    id=_new_id(),
                    org_id=actor.org_id,
                    key=key,
                    label=label,
                    restricted=restricted,
                    active=True,
                )
            )
        await self._audit("store.category.add", actor, actor.org_id, targets, restricted=restricted)
        return CategoryRecord(key=key, label=label, restricted=restricted)

    async def set_category_restricted(
        self, actor: Actor, key: str, restricted: bool
    ) -> CategoryRecord:
        targets = {"category": key[:64]}
        await self._require(actor, Permission.MANAGE_CATEGORIES, "store.category.update", targets)
        async with self._writing() as s:
            cat = await s.scalar(
                select(Category).where(Category.org_id == actor.org_id, Category.key == key)
            )
            if cat is None:
                raise NotFoundError(f"no category {key[:64]!r}")
            cat.restricted = restricted
            await s.execute(
                update(Concern)
                .where(Concern.org_id == actor.org_id, Concern.category_key == key)
                .values(restricted=restricted)
            )
            record = CategoryRecord(
                key=cat.key, label=cat.label, restricted=restricted, active=cat.active
            )
        await self._audit(
            "store.category.update", actor, actor.org_id, targets, restricted=restricted
        )
        return record

    # ------------------------------------------------------------------- pupils

    async def _pupil_in_org(
        self, s: AsyncSession, actor: Actor, pupil_id: str, *, lock: bool = False
    ) -> Pupil:
        pupil = await s.get(Pupil, pupil_id, with_for_update=lock)
        if pupil is None or pupil.org_id != actor.org_id:
            raise NotFoundError("no such pupil in your organisation")
        return pupil

    async def pupil_id_for(self, actor: Actor, ref: str) -> str:
        """The id of the pupil a person named: by UPN (as staff know a pupil) or by id.

        A UPN is checked by the DfE's rules first (a wrong check letter, an
        unknown LA code... is :class:`~transfer.identifiers.InvalidUPN`, 400),
        then looked up in the actor's organisation (404 when no pupil of yours
        has it). An id (a UUID) is returned as it is: the operation that uses
        it finds the pupil, or answers that there is no such pupil, itself.
        Nothing is audited here; the operation the pupil was named for is.
        """
        return (await self.pupil_ids_for(actor, [ref]))[0]

    async def pupil_ids_for(self, actor: Actor, refs: Sequence[str]) -> list[str]:
        """:meth:`pupil_id_for` for several pupils at once (in the order given)."""
        out: list[str | None] = []
        upns: dict[str, str] = {}
        for ref in refs:
            text = ref.strip()
            if len(text) != UPN_LENGTH:
                try:
                    out.append(str(uuid.UUID(text)))
                    continue
                except ValueError:
                    pass
            upns[text] = validate_upn(text)
            out.append(None)
        if upns:
            await self._require(actor, Permission.READ_PUPILS, "store.pupil.find", {})
            async with self.sessions() as s:
                rows = await s.execute(
                    select(Pupil.upn, Pupil.id).where(
                        Pupil.org_id == actor.org_id, Pupil.upn.in_(set(upns.values()))
                    )
                )
                found = {upn: pupil_id for upn, pupil_id in rows.all()}
            for i, ref in enumerate(refs):
                if out[i] is None:
                    upn = upns[ref.strip()]
                    if upn not in found:
                        raise NotFoundError(f"no pupil with UPN {upn} in your organisation")
                    out[i] = found[upn]
        return [x for x in out if x is not None]

    @staticmethod
    async def _lock_live_pupils(s: AsyncSession, pupil_ids: Sequence[str]) -> None:
        """Lock the pupils' rows for this write and refuse erased ones.

        Called at the start of a write (PostgreSQL: ``FOR UPDATE``, so an erasure,
        which locks the same row, waits for us or we wait for it and then see it)
        and again after our rows are flushed (SQLite: the driver only begins the
        transaction at the first write, so this re-check runs under the write
        lock and sees an erasure that committed in between).
        """
        await s.flush()
        rows = (
            await s.execute(
                select(Pupil.id, Pupil.erased_at)
                .where(Pupil.id.in_(list(pupil_ids)))
                .order_by(Pupil.id)
                .with_for_update()
            )
        ).all()
        if len(rows) != len(set(pupil_ids)) or any(erased for _, erased in rows):
            raise KeyDestroyed("a pupil named here has been erased")

    async def _insert_pupil(
        self, s: AsyncSession, ring: KeyRing, org_id: str, data: NewPupil, upn: str
    ) -> Pupil:
        now = self.now()
        pupil = Pupil(
            id=_new_id(),
            org_id=org_id,
            upn=upn,
            surname=data.surname,
            forename=data.forename,
            dob=data.dob,
            sex=data.sex,
            year_group=data.year_group,
            on_roll_from=data.on_roll_from,
            leaving_date=data.leaving_date,
            created_at=now,
            updated_at=now,
        )
        _set_destination(pupil, data.destination)
        s.add(pupil)
        sealed = await ring.new_pupil_key(s, org_id, pupil.id)
        # The unit of work inserts pupils before pupil_keys (foreign-key order).
        s.add(PupilKey(pupil_id=pupil.id, sealed_key=sealed, created_at=now))
        return pupil

    async def create_pupil(self, actor: Actor, data: NewPupil) -> PupilRecord:
        await self._require(actor, Permission.MANAGE_PUPILS, "store.pupil.create", {})
        upn = validate_upn(data.upn)
        ring = self._ring()
        async with self._writing() as s:
            clash = await s.scalar(
                select(Pupil.id).where(Pupil.org_id == actor.org_id, Pupil.upn == upn)
            )
            if clash is not None:
                raise ConflictError("a pupil with this UPN is already in your organisation")
            pupil = await self._insert_pupil(s, ring, actor.org_id, data, upn)
            record = _pupil_record(pupil)
        await self._audit("store.pupil.create", actor, actor.org_id, {"pupil": record.id})
        if record.leaving_date is not None:
            await self._leaving_changed(actor, (record.id,))
        return record

    async def update_pupil(self, actor: Actor, pupil_id: str, changes: PupilChanges) -> PupilRecord:
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.MANAGE_PUPILS, "store.pupil.update", targets)
        async with self._writing() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id)
            if pupil.erased_at is not None:
                raise PolicyError("this pupil's records have been erased")
            for name in changes.model_fields_set:
                value = getattr(changes, name)
                if name == "destination":
                    _set_destination(pupil, value)
                elif value is not None:
                    setattr(pupil, name, value)
            pupil.updated_at = self.now()
            record = _pupil_record(pupil)
        await self._audit("store.pupil.update", actor, actor.org_id, targets)
        if changes.model_fields_set & {"leaving_date", "destination"}:
            await self._leaving_changed(actor, (record.id,))
        return record

    async def get_pupil(self, actor: Actor, pupil_id: str) -> PupilRecord:
        """One pupil of the actor's organisation, named by id or by UPN."""
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.READ_PUPILS, "store.pupil.read", targets)
        async with self.sessions() as s:
            record = _pupil_record(await self._pupil_in_org(s, actor, pupil_id))
        await self._audit("store.pupil.read", actor, actor.org_id, targets)
        return record

    async def pupil_names(self, actor: Actor, pupil_ids: Iterable[str]) -> dict[str, str]:
        """The names of these pupils of the actor's organisation, as lists show them.

        For the other areas' lists (alerts) that name the child for a reader with
        ``pupil.read``: they keep only the pupil's id and ask here when they are read,
        so no copy of a pupil's details lives outside the store. An erased pupil is
        "(erased)"; ids of other organisations' pupils are left out.
        """
        wanted = set(pupil_ids)
        if not wanted:
            return {}
        require(actor, Permission.READ_PUPILS)
        async with self.sessions() as s:
            rows = (
                await s.execute(
                    select(Pupil.id, Pupil.forename, Pupil.surname, Pupil.erased_at).where(
                        Pupil.org_id == actor.org_id, Pupil.id.in_(wanted)
                    )
                )
            ).all()
        return {
            r.id: ("(erased)" if r.erased_at else f"{r.forename} {r.surname}".strip()) for r in rows
        }

    async def find_pupil(self, actor: Actor, upn: str) -> PupilRecord:
        await self._require(actor, Permission.READ_PUPILS, "store.pupil.read", {})
        upn = validate_upn(upn)
        async with self.sessions() as s:
            pupil = await s.scalar(
                select(Pupil).where(Pupil.org_id == actor.org_id, Pupil.upn == upn)
            )
            if pupil is None:
                raise NotFoundError("no pupil with this UPN in your organisation")
            record = _pupil_record(pupil)
        await self._audit("store.pupil.read", actor, actor.org_id, {"pupil": record.id})
        return record

    async def list_pupils(self, actor: Actor, *, include_erased: bool = False) -> list[PupilRecord]:
        await self._require(actor, Permission.READ_PUPILS, "store.pupil.list", {})
        async with self.sessions() as s:
            query = select(Pupil).where(Pupil.org_id == actor.org_id)
            if not include_erased:
                query = query.where(Pupil.erased_at.is_(None))
            rows = await s.scalars(query.order_by(Pupil.surname, Pupil.forename, Pupil.id))
            records = [_pupil_record(p) for p in rows]
        await self._audit("store.pupil.list", actor, actor.org_id, {}, count=len(records))
        return records

    async def import_ctf(
        self, actor: Actor, data: bytes, *, force: bool = False
    ) -> CTFImportResult:
        """Import a CTF whole (one transaction), upserting pupils by UPN.

        A CTF addressed to another school (our own leavers' CTF, say) is imported
        only with ``force``: :class:`CTFAddressedElsewhereError` names that school.
        """
        await self._require(actor, Permission.IMPORT_CTF, "store.ctf.import", {})
        try:
            result = await self._import_ctf(actor, parse_ctf(data), force=force)
        except HandoverError as exc:
            await self._audit(
                "store.ctf.import", actor, actor.org_id, {}, "failed", reason=exc.slug
            )
            raise
        await self._audit(
            "store.ctf.import",
            actor,
            actor.org_id,
            {},
            created=result.created,
            updated=result.updated,
        )
        if result.leavers and result.pupil_ids:
            await self._leaving_changed(actor, result.pupil_ids)
        return result

    async def _import_ctf(
        self, actor: Actor, doc: CTFDocument, *, force: bool = False
    ) -> CTFImportResult:
        ring = self._ring()
        created = updated = 0
        ids: list[str] = []
        async with self._writing() as s:
            org = await s.get(Organisation, actor.org_id)
            if org is None or org.kind != "school":
                raise PolicyError("only a school imports Common Transfer Files")
            source = doc.header.source
            dest = doc.header.destination
            leavers = source.urn == org.urn or source.laestab == org.laestab
            joiners = (
                dest is not None
                and dest.school is not None
                and (dest.school.urn == org.urn or dest.school.laestab == org.laestab)
            )
            if not (leavers or joiners):
                raise InputError(
                    "this CTF is neither from nor addressed to your school "
                    f"(source LAESTAB {source.laestab})"
                )
            if not joiners and dest is not None and dest.school is not None and not force:
                there = dest.school
                laestab = there.laestab
                raise CTFAddressedElsewhereError(
                    f"this CTF is addressed to {there.name or 'another school'} "
                    f"(URN {there.urn or 'not given'}, LAESTAB {laestab}), not to your school: "
                    "it is the file sent to them. Import it here only to record your leavers' "
                    "leaving dates and destinations, and then confirm it (force)",
                    detail={
                        "destination_urn": there.urn,
                        "destination_laestab": laestab,
                        "destination_name": there.name,
                    },
                )
            upns = [cp.upn for cp in doc.pupils]
            existing: dict[str, Pupil] = {}
            for start in range(0, len(upns), 500):
                found = await s.scalars(
                    select(Pupil).where(
                        Pupil.org_id == org.id, Pupil.upn.in_(upns[start : start + 500])
                    )
                )
                existing.update((p.upn or "", p) for p in found)
            for cp in doc.pupils:
                pupil = existing.get(cp.upn)
                if pupil is None:
                    pupil = await self._insert_pupil(
                        s, ring, org.id, self._ctf_new_pupil(cp, leavers, org), cp.upn
                    )
                    created += 1
                else:
                    if pupil.dob != cp.dob:
                        raise ConflictError(
                            f"CTF line {cp.line}: UPN {cp.upn} is already on your roll with a "
                            "different date of birth; check the file (nothing was imported)",
                            detail={"line": cp.line},
                        )
                    pupil.surname = cp.surname
                    pupil.forename = cp.forename
                    pupil.sex = cp.sex
                    pupil.year_group = cp.year_group or pupil.year_group
                    if leavers:
                        pupil.leaving_date = cp.leaving_date or pupil.leaving_date
                        # As for the leaving date: a file without one keeps what is recorded.
                        next_school = _from_ctf_destination(cp.destination, org.urn, org.laestab)
                        if next_school is not None:
                            _set_destination(pupil, next_school)
                    pupil.updated_at = self.now()
                    updated += 1
                ids.append(pupil.id)
        return CTFImportResult(
            source_urn=doc.header.source.urn,
            source_laestab=doc.header.source.laestab,
            created=created,
            updated=updated,
            pupil_ids=tuple(ids),
            leavers=leavers,
        )

    @staticmethod
    def _ctf_new_pupil(cp: CTFPupil, leavers: bool, org: Organisation) -> NewPupil:
        return NewPupil(
            upn=cp.upn,
            surname=cp.surname,
            forename=cp.forename,
            dob=cp.dob,
            sex=cp.sex,
            year_group=cp.year_group,
            leaving_date=cp.leaving_date if leavers else None,
            destination=(
                _from_ctf_destination(cp.destination, org.urn, org.laestab) if leavers else None
            ),
        )

    # ----------------------------------------------------------------- concerns

    async def _category(self, s: AsyncSession, org_id: str, key: str) -> Category:
        cat = await s.scalar(
            select(Category).where(
                Category.org_id == org_id, Category.key == key, Category.active.is_(True)
            )
        )
        if cat is None:
            raise InputError(f"unknown category {key[:64]!r}")
        return cat

    async def record_concern(self, actor: Actor, data: NewConcern) -> ConcernRecord:
        await self._require(actor, Permission.RECORD_CONCERN, "store.concern.record", {})
        # Pupils may be named by UPN, in the concern and in its body-map marks alike.
        named = await self.pupil_ids_for(
            actor, [*data.pupil_ids, *(m.pupil_id for m in data.body_map)]
        )
        pupil_ids = tuple(dict.fromkeys(named[: len(data.pupil_ids)]))
        mark_pupils = named[len(data.pupil_ids) :]
        self._check_not_future(data.happened_at, "the concern")
        if data.submission_key is not None:
            earlier = await self._already_sent(actor, data.submission_key)
            if earlier is not None:
                return earlier
        try:
            return await self._record_concern(actor, data, pupil_ids, mark_pupils)
        except ConflictError:
            # The same form sent twice at once: the other request saved it first.
            if data.submission_key is not None:
                earlier = await self._already_sent(actor, data.submission_key)
                if earlier is not None:
                    return earlier
            raise

    async def _already_sent(self, actor: Actor, submission_key: str) -> ConcernRecord | None:
        """The concern this person already saved from the form with ``submission_key``."""
        ring = self._ring()
        async with self.sessions() as s:
            concern = await s.scalar(
                select(Concern).where(
                    Concern.org_id == actor.org_id,
                    Concern.recorded_by == actor.staff_id,
                    Concern.submission_key == submission_key,
                )
            )
            if concern is None:
                return None
            pupils = (
                await s.scalars(
                    select(ConcernPupil.pupil_id)
                    .where(ConcernPupil.concern_id == concern.id)
                    .order_by(ConcernPupil.pupil_id)
                )
            ).all()
            record = await self._concern_record(s, _Sealed(s, ring), concern, list(pupils))
        await self._audit(
            "store.concern.record",
            actor,
            actor.org_id,
            {"concern": concern.id},
            repeated=True,
        )
        return record

    async def _record_concern(
        self,
        actor: Actor,
        data: NewConcern,
        pupil_ids: tuple[str, ...],
        mark_pupils: Sequence[str],
    ) -> ConcernRecord:
        ring = self._ring()
        concern_id = _new_id()
        async with self._writing() as s:
            for pid in pupil_ids:
                await self._pupil_in_org(s, actor, pid)
            await self._lock_live_pupils(s, pupil_ids)
            for pid in mark_pupils:
                if pid not in pupil_ids:
                    raise InputError("a body-map mark names a pupil who is not in the concern")
            cat = await self._category(s, actor.org_id, data.category)
            concern = Concern(
                id=concern_id,
                org_id=actor.org_id,
                category_key=cat.key,
                restricted=cat.restricted,
                happened_at=data.happened_at,
                recorded_at=self.now(),
                recorded_by=actor.staff_id,
                status=data.status,
                submission_key=data.submission_key,
            )
            s.add(concern)
            await s.flush()
            for pid in pupil_ids:
                s.add(ConcernPupil(concern_id=concern_id, pupil_id=pid))
            sealed = _Sealed(s, ring)
            await sealed.put(
                "concerns",
                concern_id,
                pupil_ids,
                {
                    "account": data.account,
                    "location": data.location,
                    "people_involved": data.people_involved,
                },
            )
            marks: list[BodyMapMark] = []
            for m, mark_pupil in zip(data.body_map, mark_pupils, strict=True):
                mark_id = _new_id()
                s.add(
                    BodyMapMarkRow(
                        id=mark_id,
                        concern_id=concern_id,
                        pupil_id=mark_pupil,
                        side=m.side,
                        x=m.x,
                        y=m.y,
                    )
                )
                await sealed.put(
                    "body_map_marks", mark_id, [mark_pupil], {"description": m.description}
                )
                marks.append(
                    BodyMapMark(
                        id=mark_id,
                        pupil_id=mark_pupil,
                        side=m.side,
                        x=m.x,
                        y=m.y,
                        description=m.description,
                    )
                )
            await self._lock_live_pupils(s, pupil_ids)
            record = ConcernRecord(
                id=concern_id,
                org_id=actor.org_id,
                pupil_ids=pupil_ids,
                category=cat.key,
                restricted=cat.restricted,
                happened_at=concern.happened_at,
                recorded_at=concern.recorded_at,
                recorded_by=actor.staff_id,
                location=data.location,
                account=data.account,
                people_involved=data.people_involved,
                body_map=tuple(marks),
                status=data.status,
            )
        await self._audit(
            "store.concern.record",
            actor,
            actor.org_id,
            {"concern": concern_id, "pupils": ",".join(pupil_ids)},
            category=cat.key,
        )
        await self._changed(
            StoreChange(
                "concern.recorded",
                actor.org_id,
                pupil_ids,
                record_id=concern_id,
                actor=actor,
                category=cat.key,
            )
        )
        return record

    async def _readable_concern(
        self, s: AsyncSession, actor: Actor, concern_id: str, action: str
    ) -> tuple[Concern, list[str]]:
        """The concern if ``actor`` may read it; refuse (and audit) otherwise."""
        targets = {"concern": concern_id}
        if not (actor.has(Permission.RECORD_CONCERN) or actor.has(Permission.READ_ALL_CONCERNS)):
            await self._refuse(actor, action, targets)
            raise PermissionDenied("your role does not allow reading concerns")
        concern = await s.get(Concern, concern_id)
        if (
            concern is None
            or concern.org_id != actor.org_id
            or not can_read_concern(
                actor, recorded_by=concern.recorded_by, restricted=concern.restricted
            )
        ):
            if concern is not None:
                await self._refuse(actor, action, targets)
            raise NotFoundError("no such concern (or you may not see it)")
        pupils = (
            await s.scalars(
                select(ConcernPupil.pupil_id)
                .where(ConcernPupil.concern_id == concern_id)
                .order_by(ConcernPupil.pupil_id)
            )
        ).all()
        return concern, list(pupils)

    async def _provenances(
        self, s: AsyncSession, ids: Iterable[str | None]
    ) -> dict[str, Provenance]:
        wanted = {i for i in ids if i is not None}
        if not wanted:
            return {}
        rows = list(await s.scalars(select(ProvenanceRow).where(ProvenanceRow.id.in_(wanted))))
        earlier_ids = {r.amends_id for r in rows if r.amends_id is not None}
        earlier = (
            {
                pid: at
                for pid, at in (
                    await s.execute(
                        select(ProvenanceRow.id, ProvenanceRow.received_at).where(
                            ProvenanceRow.id.in_(earlier_ids)
                        )
                    )
                ).all()
            }
            if earlier_ids
            else {}
        )
        superseded = set(
            await s.scalars(
                select(ProvenanceRow.amends_id).where(ProvenanceRow.amends_id.in_(wanted))
            )
        )
        return {
            r.id: Provenance(
                source_org_id=r.source_org_id,
                source_org_name=r.source_org_name,
                package_id=r.package_id,
                received_at=r.received_at,
                original_id=r.original_id,
                amends_received_at=earlier.get(r.amends_id) if r.amends_id else None,
                superseded=r.id in superseded,
            )
            for r in rows
        }

    async def _concern_record(
        self,
        s: AsyncSession,
        sealed: _Sealed,
        concern: Concern,
        pupil_ids: list[str],
        *,
        marks_of: Iterable[str] | None = None,
    ) -> ConcernRecord:
        if not pupil_ids:
            raise NotFoundError("no such concern (or you may not see it)")
        fields = await sealed.one("concerns", concern.id, pupil_ids[0])
        mark_pupils = list(pupil_ids if marks_of is None else marks_of)
        mark_rows = (
            await s.scalars(
                select(BodyMapMarkRow)
                .where(
                    BodyMapMarkRow.concern_id == concern.id,
                    BodyMapMarkRow.pupil_id.in_(mark_pupils),
                )
                .order_by(BodyMapMarkRow.id)
            )
        ).all()
        marks = []
        for m in mark_rows:
            desc = await sealed.one("body_map_marks", m.id, m.pupil_id)
            marks.append(
                BodyMapMark(
                    id=m.id,
                    pupil_id=m.pupil_id,
                    side=m.side,
                    x=m.x,
                    y=m.y,
                    description=desc["description"],
                )
            )
        prov = await self._provenances(s, [concern.provenance_id])
        return ConcernRecord(
            id=concern.id,
            org_id=concern.org_id,
            pupil_ids=tuple(pupil_ids),
            category=concern.category_key,
            restricted=concern.restricted,
            happened_at=concern.happened_at,
            recorded_at=concern.recorded_at,
            recorded_by=concern.recorded_by,
            location=fields["location"],
            account=fields["account"],
            people_involved=fields["people_involved"],
            body_map=tuple(marks),
            status=concern.status,
            provenance=prov.get(concern.provenance_id or ""),
        )

    async def get_concern(self, actor: Actor, concern_id: str) -> ConcernRecord:
        ring = self._ring()
        async with self.sessions() as s:
            concern, pupils = await self._readable_concern(
                s, actor, concern_id, "store.concern.read"
            )
            record = await self._concern_record(s, _Sealed(s, ring), concern, pupils)
        await self._audit("store.concern.read", actor, actor.org_id, {"concern": concern_id})
        return record

    async def list_concerns(
        self,
        actor: Actor,
        *,
        pupil_id: str | None = None,
        status: ConcernStatus | None = None,
        limit: int | None = None,
    ) -> list[ConcernSummary]:
        """Concerns the actor may read (without content), newest first.

        ``status`` keeps only concerns in that state (``open``: not triaged yet);
        ``limit`` keeps only the newest ones.
        """
        if pupil_id is not None:
            pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id} if pupil_id else {}
        if not (actor.has(Permission.RECORD_CONCERN) or actor.has(Permission.READ_ALL_CONCERNS)):
            await self._refuse(actor, "store.concern.list", targets)
            raise PermissionDenied("your role does not allow reading concerns")
        async with self.sessions() as s:
            query = select(Concern).where(Concern.org_id == actor.org_id)
            if pupil_id is not None:
                query = query.where(
                    Concern.id.in_(
                        select(ConcernPupil.concern_id).where(ConcernPupil.pupil_id == pupil_id)
                    )
                )
            if not actor.has(Permission.READ_ALL_CONCERNS):
                query = query.where(Concern.recorded_by == actor.staff_id)
            if not actor.has(Permission.READ_RESTRICTED):
                query = query.where(
                    (Concern.restricted.is_(False)) | (Concern.recorded_by == actor.staff_id)
                )
            if status is not None:
                query = query.where(Concern.status == status)
            query = query.order_by(Concern.happened_at.desc(), Concern.id)
            if limit is not None:
                query = query.limit(max(0, limit))
            concerns = [
                c
                for c in (await s.scalars(query)).all()
                if can_read_concern(actor, recorded_by=c.recorded_by, restricted=c.restricted)
            ]
            links = await self._links(s, [c.id for c in concerns])
            out = [_summary(c, links.get(c.id, [])) for c in concerns]
        await self._audit("store.concern.list", actor, actor.org_id, targets, count=len(out))
        return out

    async def _links(self, s: AsyncSession, concern_ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = defaultdict(list)
        for start in range(0, len(concern_ids), 500):
            rows = await s.execute(
                select(ConcernPupil.concern_id, ConcernPupil.pupil_id)
                .where(ConcernPupil.concern_id.in_(concern_ids[start : start + 500]))
                .order_by(ConcernPupil.pupil_id)
            )
            for cid, pid in rows:
                out[cid].append(pid)
        return out

    async def set_concern_status(
        self, actor: Actor, concern_id: str, status: ConcernStatus
    ) -> ConcernRecord:
        targets = {"concern": concern_id}
        await self._require(actor, Permission.TRIAGE, "store.concern.status", targets)
        if status not in ("open", "under_review", "monitoring", "closed"):
            raise InputError("status must be open, under_review, monitoring or closed")
        ring = self._ring()
        async with self._writing() as s:
            concern, pupils = await self._readable_concern(
                s, actor, concern_id, "store.concern.status"
            )
            concern.status = status
            await s.flush()
            record = await self._concern_record(s, _Sealed(s, ring), concern, pupils)
        await self._audit("store.concern.status", actor, actor.org_id, targets, status=status)
        return record

    async def amend_concern(
        self, actor: Actor, concern_id: str, data: NewAmendment, *, record_id: str | None = None
    ) -> ConcernRecord:
        """Change a concern's text (account, location, people involved), keeping the text as
        it read before in an amendment (who, when, why): never a silent overwrite.

        Its author may, and the DSL team (``concern.triage``); a concern received from
        another school may not be changed here. ``record_id`` (a form's own id): an
        amendment sent twice is stored once. Changing nothing is refused.
        """
        targets = {"concern": concern_id}
        if not (actor.has(Permission.RECORD_CONCERN) or actor.has(Permission.TRIAGE)):
            await self._refuse(actor, "store.concern.amend", targets)
            raise PermissionDenied("your role does not allow changing concerns")
        new_id = _submission_id(record_id)
        if record_id is not None and await self._sent_before(
            ConcernAmendment, new_id, concern_id, actor
        ):
            return await self._concern_now(actor, concern_id)
        try:
            record = await self._amend(actor, concern_id, data, new_id)
        except ConflictError:
            if record_id is not None and await self._sent_before(
                ConcernAmendment, new_id, concern_id, actor
            ):
                return await self._concern_now(actor, concern_id)
            raise
        await self._audit(
            "store.concern.amend", actor, actor.org_id, {**targets, "amendment": new_id}
        )
        return record

    async def _concern_now(self, actor: Actor, concern_id: str) -> ConcernRecord:
        ring = self._ring()
        async with self.sessions() as s:
            concern, pupils = await self._readable_concern(
                s, actor, concern_id, "store.concern.amend"
            )
            return await self._concern_record(s, _Sealed(s, ring), concern, pupils)

    async def _amend(
        self, actor: Actor, concern_id: str, data: NewAmendment, new_id: str
    ) -> ConcernRecord:
        targets = {"concern": concern_id}
        ring = self._ring()
        async with self._writing() as s:
            concern, pupils = await self._readable_concern(
                s, actor, concern_id, "store.concern.amend"
            )
            if not (actor.has(Permission.TRIAGE) or concern.recorded_by == actor.staff_id):
                await self._refuse(actor, "store.concern.amend", targets)
                raise PermissionDenied(
                    "only the person who logged a concern, or the DSL team, may change it"
                )
            if concern.provenance_id is not None:
                raise ConflictError(
                    "this concern was received from another school; its text cannot be "
                    "changed here (add an action or a note instead)"
                )
            # The amendment's own row first: a form sent twice at once clashes here.
            s.add(
                ConcernAmendment(
                    id=new_id,
                    concern_id=concern.id,
                    amended_at=self.now(),
                    amended_by=actor.staff_id,
                )
            )
            await s.flush()
            await self._lock_live_pupils(s, pupils)
            sealed = _Sealed(s, ring)
            earlier = await sealed.one("concerns", concern.id, pupils[0])
            now = {
                "location": data.location,
                "account": data.account,
                "people_involved": data.people_involved,
            }
            if all(earlier.get(k, "") == v for k, v in now.items()):
                raise InputError("nothing was changed: change the text before saving")
            await sealed.put(
                "concern_amendments",
                new_id,
                pupils,
                {**{k: earlier.get(k, "") for k in now}, "reason": data.reason},
            )
            await s.execute(
                delete(SealedField).where(
                    SealedField.record_table == "concerns",
                    SealedField.record_id == concern.id,
                    SealedField.field.in_(list(now)),
                )
            )
            await sealed.put("concerns", concern.id, pupils, now)
            await self._lock_live_pupils(s, pupils)
            await s.flush()
            return await self._concern_record(s, sealed, concern, pupils)

    async def concern_amendments(self, actor: Actor, concern_id: str) -> list[AmendmentRecord]:
        """A concern's earlier texts, oldest change first, for whoever may read the concern."""
        ring = self._ring()
        async with self.sessions() as s:
            _, pupils = await self._readable_concern(s, actor, concern_id, "store.concern.history")
            rows = (
                await s.scalars(
                    select(ConcernAmendment)
                    .where(ConcernAmendment.concern_id == concern_id)
                    .order_by(ConcernAmendment.amended_at, ConcernAmendment.id)
                )
            ).all()
            sealed = _Sealed(s, ring)
            out = []
            for row in rows:
                f = await sealed.one("concern_amendments", row.id, pupils[0])
                out.append(
                    AmendmentRecord(
                        id=row.id,
                        concern_id=row.concern_id,
                        amended_at=row.amended_at,
                        amended_by=row.amended_by,
                        reason=f["reason"],
                        earlier_location=f["location"],
                        earlier_account=f["account"],
                        earlier_people_involved=f["people_involved"],
                    )
                )
        if out:
            await self._audit(
                "store.concern.history",
                actor,
                actor.org_id,
                {"concern": concern_id},
                count=len(out),
            )
        return out

    async def action_owners(self, actor: Actor) -> tuple[PersonRecord, ...]:
        """The active staff of the actor's organisation an action may be given to, by name
        and role (for the DSL team choosing an owner, who may not list accounts)."""
        await self._require(actor, Permission.MANAGE_ACTIONS, "store.action.owners", {})
        async with self.sessions() as s:
            rows = await s.execute(
                select(Staff.id, Staff.display_name, Staff.roles)
                .where(Staff.org_id == actor.org_id, Staff.active.is_(True))
                .order_by(Staff.display_name, Staff.id)
            )
            return tuple(
                PersonRecord(id=str(i), name=str(n)[:200], role=people.main_role(r or []))
                for i, n, r in rows
            )

    async def triage_concern(
        self, actor: Actor, concern_id: str, data: NewTriage, *, record_id: str | None = None
    ) -> TriageRecord:
        """Record a triage decision. ``record_id`` (a form's own id, a UUID): a decision sent
        twice with the same id is stored once, the second call returning the first record."""
        targets = {"concern": concern_id}
        await self._require(actor, Permission.TRIAGE, "store.triage.record", targets)
        new_id = _submission_id(record_id)
        if record_id is not None and await self._sent_before(Triage, new_id, concern_id, actor):
            return await self._stored_triage(actor, concern_id, new_id)
        try:
            return await self._triage(actor, concern_id, data, new_id)
        except ConflictError:
            if record_id is not None and await self._sent_before(Triage, new_id, concern_id, actor):
                return await self._stored_triage(actor, concern_id, new_id)
            raise

    async def _stored_triage(self, actor: Actor, concern_id: str, triage_id: str) -> TriageRecord:
        ring = self._ring()
        async with self.sessions() as s:
            _, pupils = await self._readable_concern(s, actor, concern_id, "store.triage.record")
            row = await s.get(Triage, triage_id)
            assert row is not None
            reason = (await _Sealed(s, ring).one("triage_decisions", row.id, pupils[0]))["reason"]
        return TriageRecord(
            id=row.id,
            concern_id=row.concern_id,
            decision=cast(Any, row.decision),
            reason=reason,
            decided_at=row.decided_at,
            decided_by=row.decided_by,
        )

    async def _sent_before(
        self,
        model: type[Triage] | type[Action] | type[Contact] | type[ConcernAmendment],
        record_id: str,
        concern_id: str,
        actor: Actor,
    ) -> bool:
        """Whether a form with ``record_id`` was stored already (by this person, for this
        concern); a clash with anything else is refused."""
        async with self.sessions() as s:
            row = await s.get(model, record_id)
        if row is None:
            return False
        by = {
            Triage: "decided_by",
            Action: "created_by",
            Contact: "recorded_by",
            ConcernAmendment: "amended_by",
        }[model]
        found: Any = row
        if found.concern_id != concern_id or getattr(found, by) != actor.staff_id:
            raise ConflictError("this form was used for something else; reload the page")
        return True

    async def _triage(
        self, actor: Actor, concern_id: str, data: NewTriage, new_id: str
    ) -> TriageRecord:
        targets = {"concern": concern_id}
        ring = self._ring()
        async with self._writing() as s:
            concern, pupils = await self._readable_concern(
                s, actor, concern_id, "store.triage.record"
            )
            await self._lock_live_pupils(s, pupils)
            row = Triage(
                id=new_id,
                concern_id=concern.id,
                decision=data.decision,
                decided_at=self.now(),
                decided_by=actor.staff_id,
            )
            s.add(row)
            await _Sealed(s, ring).put("triage_decisions", row.id, pupils, {"reason": data.reason})
            await self._lock_live_pupils(s, pupils)
            if concern.status == "open":
                concern.status = "under_review"
            record = TriageRecord(
                id=row.id,
                concern_id=concern.id,
                decision=data.decision,
                reason=data.reason,
                decided_at=row.decided_at,
                decided_by=actor.staff_id,
            )
        await self._audit(
            "store.triage.record",
            actor,
            actor.org_id,
            {**targets, "triage": record.id},
            decision=data.decision,
        )
        await self._changed(StoreChange("concern.triaged", actor.org_id, (), concern_id, actor))
        return record

    async def add_action(
        self, actor: Actor, concern_id: str, data: NewAction, *, record_id: str | None = None
    ) -> ActionRecord:
        """Add an action (``record_id``: as for :meth:`triage_concern`, stored once)."""
        targets = {"concern": concern_id}
        await self._require(actor, Permission.MANAGE_ACTIONS, "store.action.add", targets)
        new_id = _submission_id(record_id)
        if record_id is not None and await self._sent_before(Action, new_id, concern_id, actor):
            return await self._stored_action(actor, new_id)
        try:
            return await self._add_action(actor, concern_id, data, new_id)
        except ConflictError:
            if record_id is not None and await self._sent_before(Action, new_id, concern_id, actor):
                return await self._stored_action(actor, new_id)
            raise

    async def _stored_action(self, actor: Actor, action_id: str) -> ActionRecord:
        ring = self._ring()
        async with self.sessions() as s:
            row = await s.get(Action, action_id)
            assert row is not None
            _, pupils = await self._readable_concern(s, actor, row.concern_id, "store.action.add")
            text = (await _Sealed(s, ring).one("actions", row.id, pupils[0]))["text"]
        return ActionRecord(
            id=row.id,
            concern_id=row.concern_id,
            text=text,
            assignee_id=row.assignee_id,
            due_on=row.due_on,
            done_at=row.done_at,
            created_at=row.created_at,
            created_by=row.created_by,
        )

    async def _add_action(
        self, actor: Actor, concern_id: str, data: NewAction, new_id: str
    ) -> ActionRecord:
        targets = {"concern": concern_id}
        ring = self._ring()
        async with self._writing() as s:
            concern, pupils = await self._readable_concern(s, actor, concern_id, "store.action.add")
            await self._lock_live_pupils(s, pupils)
            if data.assignee_id is not None:
                assignee = await s.get(Staff, data.assignee_id)
                if assignee is None or assignee.org_id != actor.org_id:
                    raise InputError("the assignee is not a staff member of your organisation")
            row = Action(
                id=new_id,
                concern_id=concern.id,
                assignee_id=data.assignee_id,
                due_on=data.due_on,
                created_at=self.now(),
                created_by=actor.staff_id,
            )
            s.add(row)
            await _Sealed(s, ring).put("actions", row.id, pupils, {"text": data.text})
            await self._lock_live_pupils(s, pupils)
            record = ActionRecord(
                id=row.id,
                concern_id=concern.id,
                text=data.text,
                assignee_id=data.assignee_id,
                due_on=data.due_on,
                created_at=row.created_at,
                created_by=actor.staff_id,
            )
        await self._audit("store.action.add", actor, actor.org_id, {**targets, "action": record.id})
        await self._changed(
            StoreChange("action.added", actor.org_id, tuple(pupils), record.id, actor=actor)
        )
        return record

    async def complete_action(self, actor: Actor, action_id: str) -> ActionRecord:
        targets = {"action": action_id}
        await self._require(actor, Permission.MANAGE_ACTIONS, "store.action.complete", targets)
        ring = self._ring()
        async with self._writing() as s:
            row = await s.get(Action, action_id)
            if row is None:
                raise NotFoundError("no such action")
            _, pupils = await self._readable_concern(
                s, actor, row.concern_id, "store.action.complete"
            )
            if row.done_at is None:
                row.done_at = self.now()
            text = (await _Sealed(s, ring).one("actions", row.id, pupils[0]))["text"]
            record = ActionRecord(
                id=row.id,
                concern_id=row.concern_id,
                text=text,
                assignee_id=row.assignee_id,
                due_on=row.due_on,
                done_at=row.done_at,
                created_at=row.created_at,
                created_by=row.created_by,
            )
        await self._audit("store.action.complete", actor, actor.org_id, targets)
        await self._changed(
            StoreChange("action.completed", actor.org_id, tuple(pupils), record.id, actor=actor)
        )
        return record

    async def open_actions(self, actor: Actor) -> list[ActionRecord]:
        """The organisation's actions not yet done, those due soonest first (undated last).

        For the DSL team (``action.manage``), who may read every concern the actions hang
        on; actions of erased pupils are gone with their records.
        """
        await self._require(actor, Permission.MANAGE_ACTIONS, "store.action.list", {})
        ring = self._ring()
        async with self.sessions() as s:
            first_pupil = (
                select(func.min(ConcernPupil.pupil_id))
                .where(ConcernPupil.concern_id == Action.concern_id)
                .scalar_subquery()
            )
            rows = (
                await s.execute(
                    select(Action, first_pupil)
                    .join(Concern, Concern.id == Action.concern_id)
                    .where(Concern.org_id == actor.org_id, Action.done_at.is_(None))
                    .order_by(Action.due_on.is_(None), Action.due_on, Action.created_at, Action.id)
                )
            ).all()
            erased = set(
                (
                    await s.scalars(
                        select(Pupil.id).where(
                            Pupil.id.in_({p for _, p in rows if p}), Pupil.erased_at.is_not(None)
                        )
                    )
                ).all()
            )
            live = [(row, p) for row, p in rows if p is not None and p not in erased]
            # Every action's sealed text in one query (the first pupil's copy of each).
            texts: dict[str, bytes] = {}
            wanted = {(row.id, p) for row, p in live}
            for start in range(0, len(live), 500):
                chunk = [row.id for row, _ in live[start : start + 500]]
                for record_id, pupil_id, value in (
                    await s.execute(
                        select(
                            SealedField.record_id, SealedField.pupil_id, SealedField.sealed
                        ).where(
                            SealedField.record_table == "actions",
                            SealedField.field == "text",
                            SealedField.record_id.in_(chunk),
                        )
                    )
                ).all():
                    if (record_id, pupil_id) in wanted:
                        texts[record_id] = value
            await ring.load_pupil_keys(s, [p for _, p in live if p is not None])
            out = []
            for row, pupil_id in live:
                assert pupil_id is not None
                key = await ring.pupil_key(s, pupil_id)
                held = texts.get(row.id)
                text = (
                    open_field(key, "actions", "text", row.id, pupil_id, held)
                    if held is not None
                    else ""
                )
                out.append(
                    ActionRecord(
                        id=row.id,
                        concern_id=row.concern_id,
                        text=text,
                        assignee_id=row.assignee_id,
                        due_on=row.due_on,
                        done_at=row.done_at,
                        created_at=row.created_at,
                        created_by=row.created_by,
                    )
                )
        await self._audit("store.action.list", actor, actor.org_id, {}, count=len(out))
        return out

    async def add_contact(
        self, actor: Actor, concern_id: str, data: NewContact, *, record_id: str | None = None
    ) -> ContactRecord:
        """Record a contact with an agency (``record_id``: as for :meth:`triage_concern`)."""
        targets = {"concern": concern_id}
        await self._require(actor, Permission.MANAGE_CONTACTS, "store.contact.add", targets)
        self._check_not_future(data.contacted_at, "the contact")
        new_id = _submission_id(record_id)
        if record_id is not None and await self._sent_before(Contact, new_id, concern_id, actor):
            return await self._stored_contact(actor, concern_id, new_id)
        try:
            return await self._add_contact(actor, concern_id, data, new_id)
        except ConflictError:
            if record_id is not None and await self._sent_before(
                Contact, new_id, concern_id, actor
            ):
                return await self._stored_contact(actor, concern_id, new_id)
            raise

    async def _stored_contact(
        self, actor: Actor, concern_id: str, contact_id: str
    ) -> ContactRecord:
        ring = self._ring()
        async with self.sessions() as s:
            _, pupils = await self._readable_concern(s, actor, concern_id, "store.contact.add")
            row = await s.get(Contact, contact_id)
            assert row is not None
            f = await _Sealed(s, ring).one("external_contacts", row.id, pupils[0])
        return ContactRecord(
            id=row.id,
            concern_id=row.concern_id,
            agency=f["agency"],
            contacted_at=row.contacted_at,
            outcome=f["outcome"],
            recorded_at=row.recorded_at,
            recorded_by=row.recorded_by,
        )

    async def _add_contact(
        self, actor: Actor, concern_id: str, data: NewContact, new_id: str
    ) -> ContactRecord:
        targets = {"concern": concern_id}
        ring = self._ring()
        async with self._writing() as s:
            concern, pupils = await self._readable_concern(
                s, actor, concern_id, "store.contact.add"
            )
            await self._lock_live_pupils(s, pupils)
            row = Contact(
                id=new_id,
                concern_id=concern.id,
                contacted_at=data.contacted_at,
                recorded_at=self.now(),
                recorded_by=actor.staff_id,
            )
            s.add(row)
            await _Sealed(s, ring).put(
                "external_contacts",
                row.id,
                pupils,
                {"agency": data.agency, "outcome": data.outcome},
            )
            await self._lock_live_pupils(s, pupils)
            record = ContactRecord(
                id=row.id,
                concern_id=concern.id,
                agency=data.agency,
                contacted_at=row.contacted_at,
                outcome=data.outcome,
                recorded_at=row.recorded_at,
                recorded_by=actor.staff_id,
            )
        await self._audit(
            "store.contact.add", actor, actor.org_id, {**targets, "contact": record.id}
        )
        return record

    # ---------------------------------------------------------------- documents

    def _blob_dir(self, org_id: str, pupil_id: str) -> Path:
        return self.documents_dir / org_id / pupil_id

    async def add_document(
        self,
        actor: Actor,
        pupil_id: str,
        chunks: AsyncIterable[bytes],
        *,
        filename: str,
        concern_id: str | None = None,
    ) -> DocumentRef:
        """Stream a document in, encrypted under the pupil's key, content-addressed.

        Its media type is read from its first bytes (:func:`transfer.media.sniff_media_type`),
        never taken from the upload; a kind of file not on the allow-list is refused
        (:class:`transfer.media.UnsupportedDocumentType`) and nothing is kept.

        The DSL team adds documents to any record; whoever logged a concern may attach
        files to that concern (a photograph of a note, a letter) without being able to
        read documents back.
        """
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        authoring = (
            not actor.has(Permission.MANAGE_DOCUMENTS)
            and concern_id is not None
            and actor.has(Permission.RECORD_CONCERN)
        )
        if not authoring:
            await self._require(
                actor, Permission.MANAGE_DOCUMENTS, "store.document.upload", targets
            )
        if not filename or len(filename) > 255:
            raise InputError("a document's file name must be 1 to 255 characters")
        sniffed: list[str] = []
        ring = self._ring()
        async with self.sessions() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id)
            if concern_id is not None:
                concern, pupils = await self._readable_concern(
                    s, actor, concern_id, "store.document.upload"
                )
                if authoring and concern.recorded_by != actor.staff_id:
                    await self._refuse(
                        actor, "store.document.upload", {**targets, "concern": concern_id}
                    )
                    raise PermissionDenied(
                        "only the DSL team or the concern's author may attach files to it"
                    )
                if pupil_id not in pupils:
                    raise InputError("the concern is not about this pupil")
            key = await ring.pupil_key(s, pupil.id)
        try:
            blob = await blobs.write_encrypted(
                _sniffing(chunks, filename, sniffed),
                key,
                pupil_id,
                self._blob_dir(actor.org_id, pupil_id),
                self.max_document_bytes,
            )
        except UnsupportedDocumentType as exc:
            await self._audit(
                "store.document.upload", actor, actor.org_id, targets, "refused", reason=exc.slug
            )
            raise
        except TransportError:
            # The pupil's directory goes when the pupil is erased mid-upload.
            async with self.sessions() as s:
                await self._lock_live_pupils(s, [pupil_id])
            raise
        media_type = sniffed[0]
        try:
            async with self._writing() as s:
                await self._lock_live_pupils(s, [pupil_id])
                row = Document(
                    id=_new_id(),
                    org_id=actor.org_id,
                    pupil_id=pupil_id,
                    concern_id=concern_id,
                    name=blob.name,
                    sha256=None,
                    size=blob.size,
                    media_type=media_type,
                    uploaded_at=self.now(),
                    uploaded_by=actor.staff_id,
                )
                s.add(row)
                await _Sealed(s, ring).put(
                    "documents", row.id, [pupil_id], {"filename": filename, "sha256": blob.sha256}
                )
                await self._lock_live_pupils(s, [pupil_id])
                ref = self._document_ref(row, filename, blob.sha256, None)
        except BaseException:
            await self._drop_unreferenced(blob)
            raise
        await self._audit(
            "store.document.upload",
            actor,
            actor.org_id,
            {**targets, "document": ref.id},
            size=blob.size,
            media_type=media_type,
        )
        return ref

    async def _drop_unreferenced(self, blob: blobs.StoredBlob) -> None:
        """Remove a just-written file that no document row refers to (the insert failed)."""
        pupil_id = blob.path.parent.name
        async with self.sessions() as s:
            used = await s.scalar(
                select(Document.id).where(Document.pupil_id == pupil_id, Document.name == blob.name)
            )
        if used is None:
            await asyncio.to_thread(blob.path.unlink, True)

    @staticmethod
    def _document_ref(
        row: Document, filename: str, sha256: str, prov: Provenance | None
    ) -> DocumentRef:
        return DocumentRef(
            id=row.id,
            pupil_id=row.pupil_id,
            concern_id=row.concern_id,
            sha256=sha256,
            size=row.size,
            media_type=row.media_type,
            filename=filename,
            uploaded_at=row.uploaded_at,
            uploaded_by=row.uploaded_by,
            provenance=prov,
        )

    async def read_document(
        self, actor: Actor, document_id: str
    ) -> tuple[DocumentRef, AsyncIterator[bytes]]:
        """The document's reference and an iterator over its decrypted bytes."""
        targets = {"document": document_id}
        await self._require(actor, Permission.MANAGE_DOCUMENTS, "store.document.download", targets)
        ring = self._ring()
        async with self.sessions() as s:
            row = await s.get(Document, document_id)
            if row is None or row.org_id != actor.org_id:
                raise NotFoundError("no such document")
            if row.concern_id is not None:
                await self._readable_concern(s, actor, row.concern_id, "store.document.download")
            sealed = await _Sealed(s, ring).one("documents", row.id, row.pupil_id)
            sha = sealed.get("sha256") or row.sha256 or ""
            prov = await self._provenances(s, [row.provenance_id])
            ref = self._document_ref(
                row, sealed["filename"], sha, prov.get(row.provenance_id or "")
            )
            key = await ring.pupil_key(s, row.pupil_id)
        await self._audit(
            "store.document.download", actor, actor.org_id, {**targets, "pupil": ref.pupil_id}
        )
        path = self._blob_dir(row.org_id, row.pupil_id) / (row.name or sha)
        return ref, blobs.read_decrypted(path, key, row.pupil_id, sha)

    # ------------------------------------------------------------- pupil events

    async def add_pupil_event(
        self,
        actor: Actor | None,
        pupil_id: str,
        *,
        kind: str,
        summary: str,
        ref: str | None = None,
        at: datetime | None = None,
    ) -> PupilEventRecord:
        """A line in the pupil's chronology about a transfer or referral (kind ``event``).

        ``kind`` is dotted lower-case words (``transfer.delivered``), ``summary`` a
        sentence for the chronology (sealed under the pupil's data key like all
        text), ``ref`` what it is about (a package id), ``at`` when it happened
        (default: now). ``actor`` None means the node itself recorded it (a receipt
        arriving, a sweep); a person needs a transfer or referral permission.
        """
        targets = {"pupil": pupil_id}
        if actor is not None and not any(actor.has(p) for p in _EVENT_WRITERS):
            await self._refuse(actor, "store.event.add", targets)
            raise PermissionDenied(
                "your role does not allow recording transfer or referral events; ask your DSL"
            )
        if len(kind) > 64 or not _EVENT_KIND.fullmatch(kind):
            raise InputError(
                "an event kind must be 1 to 64 characters of dotted lower-case words, "
                "like 'transfer.delivered'"
            )
        summary = summary.strip()
        if not summary or len(summary) > MAX_EVENT_SUMMARY:
            raise InputError(f"an event summary must be 1 to {MAX_EVENT_SUMMARY} characters")
        recorded_by = actor.staff_id if actor is not None else None
        if actor is not None and actor.operator:
            # The operator acting for someone from the command line: shown as such, never
            # as that person (``recorded_by`` is ``operator``, the line says for whom).
            recorded_by = OPERATOR
            who = actor.display_name or "a member of staff"
            roles = roles_in_words(sorted(r.value for r in actor.roles))
            summary = f"{summary} (by the server operator, acting for {who}, {roles})"[
                :MAX_EVENT_SUMMARY
            ]
        if ref is not None and not (1 <= len(ref) <= 200 and ref.isprintable()):
            raise InputError("an event reference must be 1 to 200 printable characters")
        if at is not None and at.tzinfo is None:
            raise InputError("an event time must carry a time zone (use UTC)")
        now = self.now()
        occurred = at.astimezone(UTC) if at is not None else now
        ring = self._ring()
        event_id = _new_id()
        async with self._writing() as s:
            pupil = await s.get(Pupil, pupil_id)
            if pupil is None or (actor is not None and pupil.org_id != actor.org_id):
                raise NotFoundError(
                    "no such pupil in your organisation" if actor else "no such pupil on this node"
                )
            org_id = pupil.org_id
            await self._lock_live_pupils(s, [pupil_id])
            s.add(
                PupilEvent(
                    id=event_id,
                    org_id=org_id,
                    pupil_id=pupil_id,
                    kind=kind,
                    ref=ref,
                    occurred_at=occurred,
                    recorded_at=now,
                    recorded_by=recorded_by,
                )
            )
            await _Sealed(s, ring).put("pupil_events", event_id, [pupil_id], {"summary": summary})
            await self._lock_live_pupils(s, [pupil_id])
        record = PupilEventRecord(
            id=event_id,
            pupil_id=pupil_id,
            kind=kind,
            summary=summary,
            ref=ref,
            occurred_at=occurred,
            recorded_at=now,
            recorded_by=recorded_by,
        )
        await self._audit(
            "store.event.add",
            actor if actor is not None else "node",
            org_id,
            {**targets, "event": event_id},
            kind=kind,
            ref=ref,
        )
        return record

    # --------------------------------------------------------------- chronology

    async def _bundle(
        self, s: AsyncSession, ring: KeyRing, actor: Actor, pupil_id: str, *, everything: bool
    ) -> _Bundle:
        """Every record about ``pupil_id`` that ``actor`` may read, opened with its key.

        Built for long chronologies: one Core query per table (plain rows, no ORM
        identity map or unit of work), one data-key unwrap for the pupil, fields
        unsealed straight from those rows. Records are built with their normal
        constructors: pydantic-core's compiled validation measured faster than
        ``model_construct`` (pure Python) here; see ``docs/store.md``.
        """
        sealed = _Sealed(s, ring)
        fields = await sealed.for_pupil(pupil_id)
        conn = await s.connection()
        linked = select(ConcernPupil.concern_id).where(ConcernPupil.pupil_id == pupil_id)
        concerns = [
            c
            for c in await _rows(conn, Concern, Concern.id.in_(linked))
            if everything
            or can_read_concern(actor, recorded_by=c.recorded_by, restricted=c.restricted)
        ]
        visible = {c.id for c in concerns}
        links: dict[str, list[str]] = defaultdict(list)
        for cid, pid in await conn.execute(
            select(ConcernPupil.concern_id, ConcernPupil.pupil_id)
            .where(ConcernPupil.concern_id.in_(linked))
            .order_by(ConcernPupil.pupil_id)
        ):
            if cid in visible:
                links[cid].append(pid)
        marks = sorted(
            await _rows(conn, BodyMapMarkRow, BodyMapMarkRow.pupil_id == pupil_id),
            key=lambda m: str(m.id),
        )
        marks_by: dict[str, list[BodyMapMark]] = defaultdict(list)
        for m in marks:
            if m.concern_id not in visible:
                continue
            marks_by[m.concern_id].append(
                BodyMapMark(
                    id=m.id,
                    pupil_id=pupil_id,
                    side=m.side,
                    x=m.x,
                    y=m.y,
                    description=fields[("body_map_marks", m.id)]["description"],
                )
            )
        triage = await _rows(conn, Triage, Triage.concern_id.in_(linked))
        actions = await _rows(conn, Action, Action.concern_id.in_(linked))
        contacts = await _rows(conn, Contact, Contact.concern_id.in_(linked))
        docs = await _rows(conn, Document, Document.pupil_id == pupil_id)
        events = await _rows(conn, PupilEvent, PupilEvent.pupil_id == pupil_id)
        prov = await self._provenances(
            s,
            [
                r.provenance_id
                for group in (concerns, triage, actions, contacts, docs)
                for r in group
            ],
        )
        b = _Bundle()
        for c in concerns:
            f = fields[("concerns", c.id)]
            b.concerns.append(
                ConcernRecord(
                    id=c.id,
                    org_id=c.org_id,
                    pupil_ids=tuple(links.get(c.id, [pupil_id])),
                    category=c.category_key,
                    restricted=c.restricted,
                    happened_at=c.happened_at,
                    recorded_at=c.recorded_at,
                    recorded_by=c.recorded_by,
                    location=f["location"],
                    account=f["account"],
                    people_involved=f["people_involved"],
                    body_map=tuple(marks_by.get(c.id, [])),
                    status=c.status,
                    provenance=prov.get(c.provenance_id or ""),
                )
            )
        for t in triage:
            if t.concern_id in visible:
                b.triage.append(
                    TriageRecord(
                        id=t.id,
                        concern_id=t.concern_id,
                        decision=t.decision,
                        reason=fields[("triage_decisions", t.id)]["reason"],
                        decided_at=t.decided_at,
                        decided_by=t.decided_by,
                        provenance=prov.get(t.provenance_id or ""),
                    )
                )
        for a in actions:
            if a.concern_id in visible:
                b.actions.append(
                    ActionRecord(
                        id=a.id,
                        concern_id=a.concern_id,
                        text=fields[("actions", a.id)]["text"],
                        assignee_id=a.assignee_id,
                        due_on=a.due_on,
                        done_at=a.done_at,
                        created_at=a.created_at,
                        created_by=a.created_by,
                        provenance=prov.get(a.provenance_id or ""),
                    )
                )
        for k in contacts:
            if k.concern_id in visible:
                f = fields[("external_contacts", k.id)]
                b.contacts.append(
                    ContactRecord(
                        id=k.id,
                        concern_id=k.concern_id,
                        agency=f["agency"],
                        contacted_at=k.contacted_at,
                        outcome=f["outcome"],
                        recorded_at=k.recorded_at,
                        recorded_by=k.recorded_by,
                        provenance=prov.get(k.provenance_id or ""),
                    )
                )
        for d in docs:
            if d.concern_id is None or d.concern_id in visible:
                f = fields[("documents", d.id)]
                sha = f.get("sha256") or d.sha256 or ""
                b.files[d.id] = d.name or sha
                b.documents.append(
                    DocumentRef(
                        id=d.id,
                        pupil_id=d.pupil_id,
                        concern_id=d.concern_id,
                        sha256=sha,
                        size=d.size,
                        media_type=d.media_type,
                        filename=f["filename"],
                        uploaded_at=d.uploaded_at,
                        uploaded_by=d.uploaded_by,
                        provenance=prov.get(d.provenance_id or ""),
                    )
                )
        for e in events:
            b.events.append(
                PupilEventRecord(
                    id=e.id,
                    pupil_id=pupil_id,
                    kind=e.kind,
                    summary=fields[("pupil_events", e.id)]["summary"],
                    ref=e.ref,
                    occurred_at=e.occurred_at,
                    recorded_at=e.recorded_at,
                    recorded_by=e.recorded_by,
                )
            )
        return b

    async def chronology(self, actor: Actor, pupil_id: str) -> list[ChronologyEntry]:
        """The pupil's concerns, triage, actions, contacts, documents and events in time order."""
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.READ_CHRONOLOGY, "store.chronology.read", targets)
        ring = self._ring()
        async with self.sessions() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id)
            if pupil.erased_at is not None:
                raise NotFoundError("this pupil's records have been erased")
            b = await self._bundle(s, ring, actor, pupil_id, everything=False)
        entries: list[ChronologyEntry] = []
        for c in b.concerns:
            entries.append(
                ChronologyEntry(
                    kind="concern",
                    id=c.id,
                    pupil_id=pupil_id,
                    occurred_at=c.happened_at,
                    recorded_at=c.recorded_at,
                    concern_id=c.id,
                    record=c,
                    provenance=c.provenance,
                )
            )
        for t in b.triage:
            entries.append(
                ChronologyEntry(
                    kind="triage",
                    id=t.id,
                    pupil_id=pupil_id,
                    occurred_at=t.decided_at,
                    recorded_at=t.decided_at,
                    concern_id=t.concern_id,
                    record=t,
                    provenance=t.provenance,
                )
            )
        for a in b.actions:
            entries.append(
                ChronologyEntry(
                    kind="action",
                    id=a.id,
                    pupil_id=pupil_id,
                    occurred_at=a.created_at,
                    recorded_at=a.created_at,
                    concern_id=a.concern_id,
                    record=a,
                    provenance=a.provenance,
                )
            )
        for k in b.contacts:
            entries.append(
                ChronologyEntry(
                    kind="contact",
                    id=k.id,
                    pupil_id=pupil_id,
                    occurred_at=k.contacted_at,
                    recorded_at=k.recorded_at,
                    concern_id=k.concern_id,
                    record=k,
                    provenance=k.provenance,
                )
            )
        for d in b.documents:
            entries.append(
                ChronologyEntry(
                    kind="document",
                    id=d.id,
                    pupil_id=pupil_id,
                    occurred_at=d.uploaded_at,
                    recorded_at=d.uploaded_at,
                    concern_id=d.concern_id,
                    record=d,
                    provenance=d.provenance,
                )
            )
        for ev in b.events:
            entries.append(
                ChronologyEntry(
                    kind="event",
                    id=ev.id,
                    pupil_id=pupil_id,
                    occurred_at=ev.occurred_at,
                    recorded_at=ev.recorded_at,
                    record=ev,
                )
            )
        entries.sort(key=lambda e: (e.occurred_at, e.recorded_at, _KIND_ORDER[e.kind], e.id))
        await self._audit(
            "store.chronology.read", actor, actor.org_id, targets, entries=len(entries)
        )
        return entries

    async def chronology_lines(self, actor: Actor, pupil_id: str) -> list[ChronologyLine]:
        """:meth:`chronology`, each line also saying who recorded it, by name and role."""
        entries = await self.chronology(actor, pupil_id)
        async with self.sessions() as s:
            staff = await people.staff_people(
                await s.connection(),
                (people.recorded_by(e.record) or "" for e in entries),
                org_id=actor.org_id,
            )
        out: list[ChronologyLine] = []
        for e in entries:
            who = _recorder(e, staff)
            fields = {name: getattr(e, name) for name in ChronologyEntry.model_fields}
            out.append(
                ChronologyLine(**fields, recorded_by_name=who.name, recorded_by_role=who.role)
            )
        return out

    async def people_named(
        self, actor: Actor, ids: Iterable[str | None]
    ) -> tuple[PersonRecord, ...]:
        """The members of the actor's organisation among ``ids``, by name and role (for a
        package or an export: who the ids in its records are). Others are left out."""
        async with self.sessions() as s:
            return await people.people_records(
                await s.connection(), (i for i in ids if i), org_id=actor.org_id
            )

    # ------------------------------------------------------ retention / erasure

    async def _erase(
        self, s: AsyncSession, pupil: Pupil, policy: str, by: str
    ) -> tuple[TombstoneRecord, Path] | None:
        if pupil.erased_at is not None:
            return None
        now = self.now()
        pid = pupil.id
        linked = (
            await s.scalars(select(ConcernPupil.concern_id).where(ConcernPupil.pupil_id == pid))
        ).all()
        counts: dict[str, int] = {"concerns": len(linked)}
        counts["sealed_fields"] = int(
            await s.scalar(
                select(func.count()).select_from(SealedField).where(SealedField.pupil_id == pid)
            )
            or 0
        )
        counts["documents"] = int(
            await s.scalar(
                select(func.count()).select_from(Document).where(Document.pupil_id == pid)
            )
            or 0
        )
        counts["body_map_marks"] = int(
            await s.scalar(
                select(func.count())
                .select_from(BodyMapMarkRow)
                .where(BodyMapMarkRow.pupil_id == pid)
            )
            or 0
        )
        await s.execute(
            update(PupilKey)
            .where(PupilKey.pupil_id == pid)
            .values(sealed_key=None, destroyed_at=now)
        )
        counts["pupil_events"] = int(
            await s.scalar(
                select(func.count()).select_from(PupilEvent).where(PupilEvent.pupil_id == pid)
            )
            or 0
        )
        await s.execute(delete(SealedField).where(SealedField.pupil_id == pid))
        await s.execute(delete(PupilEvent).where(PupilEvent.pupil_id == pid))
        await s.execute(delete(BodyMapMarkRow).where(BodyMapMarkRow.pupil_id == pid))
        await s.execute(delete(Document).where(Document.pupil_id == pid))
        await s.execute(delete(ConcernPupil).where(ConcernPupil.pupil_id == pid))
        still = (
            set(
                (
                    await s.scalars(
                        select(ConcernPupil.concern_id).where(ConcernPupil.concern_id.in_(linked))
                    )
                ).all()
            )
            if linked
            else set()
        )
        orphans = [c for c in linked if c not in still]
        counts["concerns_deleted"] = len(orphans)
        if orphans:
            for model in (Triage, Action, Contact, ConcernAmendment):
                await s.execute(delete(model).where(model.concern_id.in_(orphans)))
            await s.execute(delete(Document).where(Document.concern_id.in_(orphans)))
            await s.execute(delete(Concern).where(Concern.id.in_(orphans)))
        pupil.upn = None
        pupil.surname = ""
        pupil.forename = ""
        pupil.dob = None
        pupil.sex = "U"
        pupil.year_group = None
        pupil.on_roll_from = None
        pupil.leaving_date = None
        _set_destination(pupil, None)
        pupil.erased_at = now
        pupil.updated_at = now
        tomb = Tombstone(
            id=_new_id(),
            org_id=pupil.org_id,
            pupil_id=pid,
            erased_at=now,
            policy=policy,
            erased_by=by,
            erased=counts,
        )
        s.add(tomb)
        return _tombstone_record(tomb), self._blob_dir(pupil.org_id, pid)

    async def _after_erasure(self, directory: Path) -> None:
        """Remove the pupil's document files, any subject access export of the pupil an
        earlier version left on disk, and, on SQLite, old page images in the WAL."""
        await asyncio.to_thread(shutil.rmtree, directory, True)
        await asyncio.to_thread(exports.remove_legacy_exports, self.data_dir, directory.name)
        if self.engine.dialect.name == "sqlite":
            # secure_delete zeroes freed content in the database pages; the WAL still
            # holds the pages as they were until a checkpoint truncates it.
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

    async def erase_pupil(self, actor: Actor, pupil_id: str) -> TombstoneRecord:
        """A DSL's decision to erase a pupil now (e.g. after a confirmed transfer)."""
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.erase", targets)
        async with self._writing() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id, lock=True)
            done = await self._erase(s, pupil, "manual", actor.staff_id)
            if done is None:
                existing = await s.scalar(select(Tombstone).where(Tombstone.pupil_id == pupil_id))
                if existing is None:
                    raise ConflictError("this pupil is marked erased but has no tombstone")
                return _tombstone_record(existing)
        record, directory = done
        await self._after_erasure(directory)
        await self._audit(
            "store.retention.erase", actor, actor.org_id, targets, policy=record.policy
        )
        return record

    async def run_retention(self, now: datetime | None = None) -> RetentionReport:
        """Erase every pupil whose retention date has passed. Idempotent; per pupil."""
        at = (now or self.now()).astimezone(UTC)
        today = at.date()
        async with self.sessions() as s:
            policies = (await s.scalars(select(RetentionPolicy))).all()
            default = next((p for p in policies if p.org_id is None), None)
            by_org = {p.org_id: p for p in policies if p.org_id is not None}
            if default is None and not by_org:
                return RetentionReport(ran_at=at, erased_pupils=(), tombstones=())
            shortest = min(p.years for p in policies)
            cutoff = date(today.year - shortest, 12, 31)
            candidates = (
                await s.execute(
                    select(Pupil.id, Pupil.org_id, Pupil.dob).where(
                        Pupil.erased_at.is_(None), Pupil.dob.is_not(None), Pupil.dob <= cutoff
                    )
                )
            ).all()
        due: list[tuple[str, RetentionPolicy]] = []
        for pid, org_id, dob in candidates:
            policy = by_org.get(org_id, default)
            if (
                policy is not None
                and dob is not None
                and retention_until(dob, policy.years) <= today
            ):
                due.append((pid, policy))
        tombs: list[TombstoneRecord] = []
        for pid, policy in due:
            async with self._writing() as s:
                pupil = await s.get(Pupil, pid, with_for_update=True)
                if pupil is None:
                    continue
                done = await self._erase(s, pupil, policy.key, "retention")
            if done is None:
                continue
            record, directory = done
            await self._after_erasure(directory)
            await self._audit(
                "store.retention.erase",
                "retention",
                record.org_id,
                {"pupil": pid},
                policy=policy.key,
            )
            tombs.append(record)
        return RetentionReport(
            ran_at=at, erased_pupils=tuple(t.pupil_id for t in tombs), tombstones=tuple(tombs)
        )

    async def retention_policy(self, actor: Actor) -> RetentionPolicyRecord:
        """The policy that applies to the actor's organisation (its own, or the node's)."""
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.policy", {})
        async with self.sessions() as s:
            own = await s.scalar(
                select(RetentionPolicy).where(RetentionPolicy.org_id == actor.org_id)
            )
            policy = own or await s.scalar(
                select(RetentionPolicy).where(RetentionPolicy.org_id.is_(None))
            )
            if policy is None:
                raise NotFoundError("no retention policy is configured on this node")
            return _policy_record(policy)

    async def set_retention_policy(
        self, actor: Actor, *, years: int, description: str
    ) -> RetentionPolicyRecord:
        """Give the actor's organisation its own policy: erase at date of birth + ``years``."""
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.policy.set", {})
        if not 1 <= years <= 120:
            raise InputError("a retention period must be 1 to 120 years")
        description = description.strip()
        if not description or len(description) > 500:
            raise InputError("a policy description must be 1 to 500 characters")
        async with self._writing() as s:
            await s.execute(delete(RetentionPolicy).where(RetentionPolicy.org_id == actor.org_id))
            policy = RetentionPolicy(
                id=_new_id(),
                org_id=actor.org_id,
                key=f"{actor.org_id}-dob-{years}",
                description=description,
                basis="dob",
                years=years,
            )
            s.add(policy)
            record = _policy_record(policy)
        await self._audit(
            "store.retention.policy.set", actor, actor.org_id, {"policy": record.key}, years=years
        )
        return record

    async def due_for_erasure(
        self, actor: Actor, *, within_days: int = 0
    ) -> list[tuple[PupilRecord, date]]:
        """The organisation's pupils whose retention date (by its policy) is on or before
        today + ``within_days``, with that date, soonest first (``retention.run``).

        The retention sweep erases those due today on its next run; the DSL may erase one
        sooner (:meth:`erase_pupil`). No policy: nobody is due.
        """
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.due", {})
        limit = self.now().astimezone(UTC).date() + timedelta(days=max(0, within_days))
        async with self.sessions() as s:
            own = await s.scalar(
                select(RetentionPolicy).where(RetentionPolicy.org_id == actor.org_id)
            )
            policy = own or await s.scalar(
                select(RetentionPolicy).where(RetentionPolicy.org_id.is_(None))
            )
            if policy is None:
                return []
            rows = await s.scalars(
                select(Pupil).where(
                    Pupil.org_id == actor.org_id,
                    Pupil.erased_at.is_(None),
                    Pupil.dob.is_not(None),
                    Pupil.dob <= date(limit.year - policy.years, 12, 31),
                )
            )
            due = [
                (_pupil_record(p), retention_until(p.dob, policy.years))
                for p in rows
                if p.dob is not None and retention_until(p.dob, policy.years) <= limit
            ]
        due.sort(key=lambda pair: (pair[1], pair[0].surname, pair[0].forename))
        await self._audit("store.retention.due", actor, actor.org_id, {}, count=len(due))
        return due

    async def tombstones(self, actor: Actor) -> list[TombstoneRecord]:
        await self._require(actor, Permission.RUN_RETENTION, "store.retention.list", {})
        async with self.sessions() as s:
            rows = await s.scalars(
                select(Tombstone)
                .where(Tombstone.org_id == actor.org_id)
                .order_by(Tombstone.erased_at)
            )
            return [_tombstone_record(t) for t in rows]

    # ------------------------------------------------------- subject access export

    async def export_subject_access(
        self, actor: Actor, pupil_id: str, *, delivered_as: str = "tar"
    ) -> SubjectAccessArchive:
        """Everything held about one pupil, for review, as a tar stream for the caller.

        ``delivered_as`` (``tar``, ``json``, ``pdf``) is how the caller hands it over,
        recorded in the audit entry.

        The records are read and opened now (and audited); the documents are
        decrypted one chunk at a time while ``chunks`` is read. Nothing is
        written to disk. If the pupil is erased before the stream ends, it stops
        short (``KeyDestroyed``) rather than delivering an erased pupil's file.
        """
        pupil_id = await self.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id}
        await self._require(actor, Permission.EXPORT_SUBJECT_ACCESS, "store.sar.export", targets)
        ring = self._ring()
        now = self.now()
        async with self.sessions() as s:
            pupil = await self._pupil_in_org(s, actor, pupil_id)
            record = _pupil_record(pupil)
            tombs = [
                _tombstone_record(t)
                for t in (
                    await s.scalars(select(Tombstone).where(Tombstone.pupil_id == pupil_id))
                ).all()
            ]
            if pupil.erased_at is None:
                b = await self._bundle(s, ring, actor, pupil_id, everything=True)
                key = await ring.pupil_key(s, pupil_id)
            else:  # erased: only the pupil row and the tombstone remain, no documents
                b, key = _Bundle(), b""
        name = f"sar-{pupil_id}-{now.strftime('%Y%m%dT%H%M%SZ')}"
        documents = tuple(sorted(b.documents, key=lambda d: (d.uploaded_at, d.id)))
        files: dict[str, str] = {}
        for d in documents:
            safe = _SAFE_NAME.sub("_", d.filename).strip("._") or "document"
            files[d.id] = f"documents/{d.id}-{safe[:100]}"
        review = [
            ReviewItem(record="concern", id=c.id, field=f)
            for c in b.concerns
            for f in ("account", "people_involved")
        ]
        review += [
            ReviewItem(record="concern", id=c.id, field="pupil_ids")
            for c in b.concerns
            if len(c.pupil_ids) > 1
        ]
        review += [ReviewItem(record="contact", id=k.id, field="outcome") for k in b.contacts]
        review += [ReviewItem(record="document", id=d.id, field="content") for d in b.documents]
        named = [
            actor.staff_id,
            *(people.recorded_by(r) for group in b.records() for r in group),
            *(a.assignee_id for a in b.actions),
            *(t.erased_by for t in tombs),
        ]
        export = SubjectAccessExport(
            people=await self.people_named(actor, named),
            exported_at=now,
            exported_by=actor.staff_id,
            pupil=record,
            concerns=tuple(sorted(b.concerns, key=lambda c: (c.happened_at, c.id))),
            triage=tuple(sorted(b.triage, key=lambda t: (t.decided_at, t.id))),
            actions=tuple(sorted(b.actions, key=lambda a: (a.created_at, a.id))),
            contacts=tuple(sorted(b.contacts, key=lambda k: (k.contacted_at, k.id))),
            documents=documents,
            events=tuple(sorted(b.events, key=lambda e: (e.occurred_at, e.id))),
            tombstones=tuple(tombs),
            review=tuple(review),
            archive=name,
            files=files,
        )
        blob_dir = self._blob_dir(actor.org_id, pupil_id)

        def reader(d: DocumentRef) -> Callable[[], AsyncIterator[bytes]]:
            path = blob_dir / b.files[d.id]
            return lambda: blobs.read_decrypted(path, key, pupil_id, d.sha256)

        async def still_live() -> None:
            async with self.sessions() as s:
                erased = await s.scalar(select(Pupil.erased_at).where(Pupil.id == pupil_id))
            if erased is not None and record.erased_at is None:
                raise KeyDestroyed("this pupil was erased while the export was being sent")

        chunks = exports.tar_stream(
            name,
            export.model_dump_json(indent=2).encode("utf-8"),
            [exports.ArchiveFile(files[d.id], d.size, reader(d)) for d in documents],
            still_allowed=still_live,
            mtime=int(now.timestamp()),
        )
        await self._audit(
            "store.sar.export",
            actor,
            actor.org_id,
            targets,
            documents=len(b.documents),
            concerns=len(b.concerns),
            events=len(b.events),
            delivered_as=delivered_as,
        )
        return SubjectAccessArchive(export=export, name=name, chunks=chunks)


def _rename_if_there(old: Path, new: Path) -> None:
    """Rename ``old`` to ``new`` if ``old`` is still there (idempotent, atomic)."""
    with contextlib.suppress(FileNotFoundError):
        os.replace(old, new)


async def _rows(
    conn: AsyncConnection, model: type[Base], where: ColumnElement[bool]
) -> Sequence[Any]:
    """A model's rows as plain named tuples through Core (far cheaper than ORM objects in bulk)."""
    return (await conn.execute(select(*model.__table__.c).where(where))).all()


def _recorder(entry: ChronologyEntry, staff: Mapping[str, people.Person]) -> people.Person:
    """Who recorded a chronology line: our staff by name and role, the node itself, or
    (a record received from another organisation, whose staff we do not know) its staff."""
    provenance = entry.provenance or getattr(entry.record, "provenance", None)
    if provenance is not None:
        return people.staff_of_org(provenance.source_org_name)
    staff_id = people.recorded_by(entry.record)
    if staff_id is None:
        return people.NODE
    return staff.get(staff_id) or people.unknown(staff_id)


_KIND_ORDER: Final = {
    "concern": 0,
    "triage": 1,
    "action": 2,
    "contact": 3,
    "document": 4,
    "event": 5,
}


def _policy_record(p: RetentionPolicy) -> RetentionPolicyRecord:
    return RetentionPolicyRecord(
        key=p.key, org_id=p.org_id, description=p.description, basis="dob", years=p.years
    )


def _tombstone_record(t: Tombstone) -> TombstoneRecord:
    return TombstoneRecord(
        id=t.id,
        org_id=t.org_id,
        pupil_id=t.pupil_id,
        erased_at=t.erased_at,
        policy=t.policy,
        erased_by=t.erased_by,
        erased=dict(t.erased),
    )
