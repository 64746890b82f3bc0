"""Importing an accepted leaver's file into the receiving organisation's store.

Three steps, driven by :class:`transfer.exchange.inbox.Inbox`:

1. :func:`parse_records` reads the JSON records of a verified package
   (``records/pupil.json`` and ``records/<kind>/<id>.json``) into models.
2. :meth:`Importer.plan` decides which pupil the file goes to: the pupil
   with the same UPN *and* date of birth and name, or a new pupil when no
   pupil has that UPN. A pupil with the UPN but another date of birth or name
   is a mismatch: refused with a :class:`PupilMismatchError` that shows both,
   unless the DSL names the pupil (``pupil_id``) or asks for a new one
   (``create_new``). The plan holds the pupil's data key, so documents can be
   encrypted into the store (:meth:`Importer.write_document`) while the package
   streams, never touching disk in plaintext.
3. :meth:`Importer.commit` writes the pupil (if new) and every record in one
   transaction, each with its :class:`Provenance` (which organisation, which
   package, when received, its id there), text sealed under the pupil's key
   exactly as the store seals its own records.

Ids from the sending organisation (its pupil and staff ids) are not ids here:
the pupil is linked to ours, concerns keep only our pupil, an action's
assignee is dropped, and ``recorded_by``/``decided_by``/``created_by`` keep the
sender's staff id, which the provenance marks as the sender's.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import shutil
import uuid
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from keys import aead
from schemas import jsontext
from schemas.manifest import Subject, canonical_json
from schemas.records import (
    ActionRecord,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    PupilEventRecord,
    PupilRecord,
    TriageRecord,
)
from schemas.text import first_hidden, where
from transfer.errors import ConflictError, InputError, IntegrityError, NotFoundError, PolicyError
from transfer.identifiers import validate_upn
from transfer.store import blobs
from transfer.store.base import utc_now
from transfer.store.db import sessionmaker
from transfer.store.keyring import KeyRing, sealed_field
from transfer.store.models import (
    Action,
    BodyMapMarkRow,
    Category,
    Concern,
    ConcernPupil,
    Contact,
    Document,
    ProvenanceRow,
    Pupil,
    PupilEvent,
    PupilKey,
    Triage,
)
from transfer.store.permissions import Actor
from transfer.store.service import Store

__all__ = [
    "ImportPlan",
    "Importer",
    "PackageRecords",
    "PupilMismatchError",
    "RecordTooLargeError",
    "RecordsError",
    "RecordsImported",
    "parse_records",
]

M = TypeVar("M", bound=BaseModel)

_DIRS: dict[str, type[BaseModel]] = {
    "concerns": ConcernRecord,
    "triage": TriageRecord,
    "actions": ActionRecord,
    "contacts": ContactRecord,
    "documents": DocumentRef,
    "events": PupilEventRecord,
}


class PupilMismatchError(ConflictError):
    """The package's pupil and ours with the same UPN differ (date of birth or name)."""

    slug = "pupil-mismatch"
    title = "The pupil in the package does not match ours"


class RecordsError(IntegrityError):
    """The signed records of a package are not records this node can read."""

    slug = "bad-records"
    title = "The package's records cannot be read"


class RecordTooLargeError(RecordsError):
    """A record of a package, or its records together, are bigger than this node opens
    (``transfer.max_record_bytes``, ``transfer.max_records_bytes``)."""

    slug = "record-too-large"
    title = "The package's records are too large to open"


# ------------------------------------------------------------------ parsing


@dataclass
class PackageRecords:
    """The records of a leaver's file, as the sender wrote them."""

    pupil: PupilRecord | None
    concerns: list[ConcernRecord] = field(default_factory=list)
    triage: list[TriageRecord] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    contacts: list[ContactRecord] = field(default_factory=list)
    documents: list[DocumentRef] = field(default_factory=list)
    events: list[PupilEventRecord] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "concerns": len(self.concerns),
            "triage": len(self.triage),
            "actions": len(self.actions),
            "contacts": len(self.contacts),
            "documents": len(self.documents),
            "events": len(self.events),
        }


#: Fields of a received record that a DSL reads as a name or a label: one plain line
#: (``schemas.text.Line``), whatever the sending node let through.
_READ_AS_LINES: Final = (
    "surname",
    "forename",
    "upn",
    "year_group",
    "sex",
    "category",
    "agency",
    "filename",
    "media_type",
)


def _load(model: type[M], path: str, data: bytes) -> M:
    try:
        jsontext.refuse_duplicate_keys(data)
    except jsontext.JSONRefused as exc:
        raise RecordsError(f"{path} in the package is not acceptable JSON: {exc}") from None
    try:
        record = model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        raise RecordsError(
            f"{path} in the package is not a {model.__name__} this node can read "
            f"({where(first['loc'])}: {first['msg']}); the sender may use a newer record format"
        ) from None
    for name in _READ_AS_LINES:
        value = getattr(record, name, None)
        found = first_hidden(value) if isinstance(value, str) else None
        if found is not None:
            raise RecordsError(
                f"{path} in the package has a {name} with an invisible or direction-changing "
                f"character ({found}): a DSL reading it would not see what it says"
            )
    return record


def is_record_path(path: str) -> bool:
    """Whether a package entry is a JSON record :func:`parse_records` reads."""
    if path == "records/pupil.json":
        return True
    parts = path.split("/")
    return (
        len(parts) == 3 and parts[0] == "records" and parts[1] in _DIRS and path.endswith(".json")
    )


def parse_records(raw: Mapping[str, bytes]) -> PackageRecords:
    """The records among a package's entries (path -> bytes), checked against the schemas."""
    pupil_bytes = raw.get("records/pupil.json")
    out = PackageRecords(
        pupil=_load(PupilRecord, "records/pupil.json", pupil_bytes) if pupil_bytes else None
    )
    lists: dict[str, list[Any]] = {
        "concerns": out.concerns,
        "triage": out.triage,
        "actions": out.actions,
        "contacts": out.contacts,
        "documents": out.documents,
        "events": out.events,
    }
    for path in sorted(raw):
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "records" and parts[1] in _DIRS:
            lists[parts[1]].append(_load(_DIRS[parts[1]], path, raw[path]))
    return out


# ----------------------------------------------------------------- matching


def _same_name(a: str, b: str) -> bool:
    return " ".join(a.split()).casefold() == " ".join(b.split()).casefold()


def _describe(upn: str | None, surname: str, forename: str, dob: date | None) -> dict[str, Any]:
    return {
        "upn": upn,
        "surname": surname,
        "forename": forename,
        "dob": dob.isoformat() if dob else None,
    }


def _says(d: Mapping[str, Any]) -> str:
    born = f"born {d['dob']}" if d["dob"] else "date of birth not known"
    return f"{d['forename']} {d['surname']}, {born}"


@dataclass(frozen=True)
class _Incoming:
    """Who the package is about: its pupil record, else its manifest's subject."""

    upn: str | None
    surname: str
    forename: str
    dob: date | None
    sex: str
    source_id: str | None

    @classmethod
    def of(cls, records: PackageRecords, subject: Subject) -> _Incoming:
        p = records.pupil
        if p is not None:
            return cls(p.upn, p.surname, p.forename, p.dob, p.sex, p.id)
        return cls(subject.upn, subject.surname, subject.forename, subject.dob, "U", None)


@dataclass
class ImportPlan:
    """Where the file goes: an existing pupil, or a new one (with its sealed data key)."""

    org_id: str
    pupil_id: str
    new_pupil: bool
    #: The pupil's data key (kept for this import only).
    key: bytes = field(repr=False)
    sealed_key: bytes | None = field(default=None, repr=False)
    upn: str | None = None
    incoming: _Incoming | None = None
    matched_by: str = "upn"
    written: dict[str, blobs.StoredBlob] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordsImported:
    """What an import wrote. ``counts``: records imported, by kind (new ones and changed
    versions); ``held``: records already held from the same sender, unchanged, not imported
    again; ``amended``: changed versions kept beside the earlier one (both are kept)."""

    pupil_id: str
    new_pupil: bool
    matched_by: str
    counts: dict[str, int]
    skipped: int
    held: int = 0
    amended: int = 0


# ----------------------------------------------------------------- importing

#: The purpose label of the key that hashes received records (derived from the pupil's key).
PROVENANCE_DIGEST_LABEL: Final = b"handover:provenance-digest:v1"


@dataclass(frozen=True)
class _Held:
    """A record this pupil already holds from the same sender: its latest version here."""

    provenance_id: str
    record_id: str
    digest: str | None


def _provenanced(records: PackageRecords) -> tuple[list[Any], ...]:
    return (records.concerns, records.triage, records.actions, records.contacts, records.documents)


def _naive_utc(value: datetime) -> datetime:
    """The same instant as a naive UTC time (databases give back aware or naive times)."""
    return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)


class Importer:
    """Imports verified records into ``store`` (sealing with the node's KEK)."""

    def __init__(self, store: Store, kek: bytes) -> None:
        self.store = store
        self._kek = kek
        self._sessions: async_sessionmaker[AsyncSession] = sessionmaker(store.engine)

    def _blob_dir(self, org_id: str, pupil_id: str) -> Path:
        return self.store.documents_dir / org_id / pupil_id

    async def plan(
        self,
        actor: Actor,
        records: PackageRecords,
        subject: Subject,
        *,
        pupil_id: str | None = None,
        create_new: bool = False,
    ) -> ImportPlan:
        """Choose the pupil; refuse a mismatch unless the DSL chose explicitly."""
        if pupil_id is not None and create_new:
            raise InputError("choose either an existing pupil (pupil_id) or create_new, not both")
        incoming = _Incoming.of(records, subject)
        upn = validate_upn(incoming.upn) if incoming.upn else None
        ring = KeyRing(self._kek)
        async with self._sessions() as s:
            if pupil_id is not None:
                chosen = await s.get(Pupil, pupil_id)
                if chosen is None or chosen.org_id != actor.org_id:
                    raise NotFoundError("no such pupil in your organisation")
                if chosen.erased_at is not None:
                    raise PolicyError("this pupil's records have been erased; choose another")
                key = await ring.pupil_key(s, chosen.id)
                return ImportPlan(
                    actor.org_id, chosen.id, False, key, None, upn, incoming, "chosen"
                )
            same_upn = None
            if upn is not None:
                same_upn = await s.scalar(
                    select(Pupil).where(Pupil.org_id == actor.org_id, Pupil.upn == upn)
                )
            if same_upn is not None and not create_new:
                ours = _describe(same_upn.upn, same_upn.surname, same_upn.forename, same_upn.dob)
                theirs = _describe(upn, incoming.surname, incoming.forename, incoming.dob)
                if (
                    same_upn.dob is None
                    or same_upn.dob != incoming.dob
                    or not _same_name(same_upn.surname, incoming.surname)
                    or not _same_name(same_upn.forename, incoming.forename)
                ):
                    raise PupilMismatchError(
                        f"the package's pupil ({_says(theirs)}) does not match our pupil with "
                        f"UPN {upn} ({_says(ours)}); check, then accept into a pupil you choose "
                        "(pupil_id) or as a new pupil (create_new)",
                        detail={
                            "package_pupil": theirs,
                            "our_pupil": {"id": same_upn.id, **ours},
                        },
                    )
                if same_upn.erased_at is not None:
                    raise PolicyError(
                        "our pupil with this UPN has been erased; accept as a new pupil "
                        "(create_new) if that is right"
                    )
                key = await ring.pupil_key(s, same_upn.id)
                return ImportPlan(actor.org_id, same_upn.id, False, key, None, upn, incoming, "upn")
            new_id = str(uuid.uuid4())
            sealed = await ring.new_pupil_key(s, actor.org_id, new_id)
            key = await ring.pupil_key(s, new_id)
        # A new pupil whose UPN is already used here (create_new chosen) is created without
        # one: the UPN stays in the provenance and the package.
        return ImportPlan(
            actor.org_id,
            new_id,
            True,
            key,
            sealed,
            None if same_upn is not None else upn,
            incoming,
            "new",
        )

    async def write_document(
        self, plan: ImportPlan, sha256: str, chunks: AsyncIterable[bytes], max_bytes: int
    ) -> blobs.StoredBlob:
        """Encrypt one document into the store's document files (under the pupil's key)."""
        blob = await blobs.write_encrypted(
            chunks, plan.key, plan.pupil_id, self._blob_dir(plan.org_id, plan.pupil_id), max_bytes
        )
        if blob.sha256 != sha256:
            raise IntegrityError("a document's bytes do not match its SHA-256 in the package")
        plan.written[sha256] = blob
        return blob

    async def discard(self, plan: ImportPlan) -> None:
        """Remove what :meth:`write_document` wrote (the import did not commit)."""
        if plan.new_pupil:
            await asyncio.to_thread(shutil.rmtree, self._blob_dir(plan.org_id, plan.pupil_id), True)
            return
        async with self._sessions() as s:
            for blob in plan.written.values():
                used = await s.scalar(
                    select(Document.id).where(
                        Document.pupil_id == plan.pupil_id, Document.name == blob.name
                    )
                )
                if used is None:
                    await asyncio.to_thread(blob.path.unlink, True)

    async def commit(
        self,
        actor: Actor,
        plan: ImportPlan,
        records: PackageRecords,
        *,
        package_id: str,
        source_org_id: str,
        source_org_name: str,
        received_at: datetime,
        claim: Callable[[AsyncSession], Awaitable[None]],
        after: Callable[[AsyncSession, RecordsImported], Awaitable[None]] | None = None,
    ) -> RecordsImported:
        """Write the pupil (if new) and every record with provenance, in one transaction.

        ``claim`` runs first in the same transaction (the inbox moves the package to
        "accepted" there, so two DSLs accepting at once import it once); ``after`` runs
        last in it, with the result (the inbox promises its audit entries there).
        """
        try:
            async with self._sessions() as s, s.begin():
                await claim(s)
                writer = _Writer(
                    s, plan, actor, package_id, source_org_id, source_org_name, received_at
                )
                await writer.pupil()
                result = await writer.records(records)
                if after is not None:
                    await after(s, result)
        except sa_exc.IntegrityError:
            raise ConflictError(
                "the pupil's records changed while the package was being imported (a pupil with "
                "this UPN was added, or the pupil was erased); try again"
            ) from None
        return result


class _Writer:
    """Inserts for one import, inside one transaction."""

    def __init__(
        self,
        s: AsyncSession,
        plan: ImportPlan,
        actor: Actor,
        package_id: str,
        source_org_id: str,
        source_org_name: str,
        received_at: datetime,
    ) -> None:
        self.s = s
        self.plan = plan
        self.actor = actor
        self.package_id = package_id
        self.source_org_id = source_org_id
        self.source_org_name = source_org_name[:200]
        self.received_at = received_at
        #: Original id -> the latest version this pupil already holds from the same sender.
        self.held: dict[str, _Held] = {}
        self.digest_key = aead.purpose_key(plan.key, PROVENANCE_DIGEST_LABEL)
        self.imported: dict[str, int] = {}
        self.held_count = 0
        self.amended_count = 0
        #: The sender's concern id -> ours (held, or imported now), for the records under it.
        self.concern_local: dict[str, str] = {}

    def _seal(self, table: str, record_id: str, fields: Mapping[str, str]) -> None:
        pid = self.plan.pupil_id
        for name, value in fields.items():
            self.s.add(sealed_field(self.plan.key, table, name, record_id, pid, value))

    def _digest(self, record: BaseModel) -> str:
        """The keyed hash of a record as the sender wrote it (compared, never shown)."""
        data = canonical_json(record.model_dump(mode="json"))
        return hmac.new(self.digest_key, data, hashlib.sha256).hexdigest()

    async def _find_held(self, records: PackageRecords) -> None:
        """The latest version of each incoming record this pupil already holds from the same
        sender (matched by the sender's organisation and its record id)."""
        if self.plan.new_pupil:
            return
        incoming = [r.id for group in _provenanced(records) for r in group]
        if not incoming:
            return
        pid = self.plan.pupil_id
        provs = {
            p.id: p
            for p in await self.s.scalars(
                select(ProvenanceRow).where(
                    ProvenanceRow.org_id == self.plan.org_id,
                    ProvenanceRow.source_org_id == self.source_org_id,
                    ProvenanceRow.original_id.in_(incoming),
                )
            )
        }
        if not provs:
            return
        of_pupil = select(ConcernPupil.concern_id).where(ConcernPupil.pupil_id == pid)
        queries = [
            select(Concern.provenance_id, Concern.id).where(
                Concern.provenance_id.in_(provs), Concern.id.in_(of_pupil)
            ),
            *(
                select(linked.provenance_id, linked.id).where(
                    linked.provenance_id.in_(provs), linked.concern_id.in_(of_pupil)
                )
                for linked in (Triage, Action, Contact)
            ),
            select(Document.provenance_id, Document.id).where(
                Document.provenance_id.in_(provs), Document.pupil_id == pid
            ),
        ]
        local: dict[str, str] = {}
        for query in queries:
            for prov_id, record_id in await self.s.execute(query):
                if prov_id is not None:
                    local[prov_id] = record_id
        superseded = {p.amends_id for p in provs.values() if p.amends_id}
        for prov_id, record_id in local.items():
            p = provs[prov_id]
            if prov_id in superseded:
                continue  # a later version of it is held
            self.held[p.original_id] = _Held(prov_id, record_id, p.digest)
        for c in records.concerns:
            if c.id in self.held:
                self.concern_local[c.id] = self.held[c.id].record_id

    def _version(self, record: BaseModel, original_id: str, kind: str) -> str | None:
        """The provenance id for a record to import, or None when it is already held as is.

        A record held with the same digest (or held from before digests were kept) is not
        imported again; a changed one is imported as a new version pointing at the earlier.
        """
        digest = self._digest(record)
        held = self.held.get(original_id)
        if held is not None and (held.digest is None or hmac.compare_digest(held.digest, digest)):
            self.held_count += 1
            return None
        if held is not None:
            self.amended_count += 1
        self.imported[kind] = self.imported.get(kind, 0) + 1
        prov_id = str(uuid.uuid4())
        self.s.add(
            ProvenanceRow(
                id=prov_id,
                org_id=self.plan.org_id,
                source_org_id=self.source_org_id,
                source_org_name=self.source_org_name,
                package_id=self.package_id,
                received_at=self.received_at,
                original_id=original_id,
                digest=digest,
                amends_id=held.provenance_id if held is not None else None,
            )
        )
        return prov_id

    async def pupil(self) -> None:
        plan = self.plan
        if not plan.new_pupil:
            row = await self.s.get(Pupil, plan.pupil_id, with_for_update=True)
            if row is None or row.erased_at is not None:
                raise PolicyError("the pupil was erased while the package was being imported")
            return
        inc = plan.incoming
        assert inc is not None and plan.sealed_key is not None
        now = utc_now()
        self.s.add(
            Pupil(
                id=plan.pupil_id,
                org_id=plan.org_id,
                upn=plan.upn,
                surname=inc.surname[:200],
                forename=inc.forename[:200],
                dob=inc.dob,
                sex=inc.sex if inc.sex in ("M", "F", "U", "O", "X") else "U",
                year_group=None,
                on_roll_from=None,
                leaving_date=None,
                created_at=now,
                updated_at=now,
            )
        )
        await self.s.flush()
        self.s.add(PupilKey(pupil_id=plan.pupil_id, sealed_key=plan.sealed_key, created_at=now))

    async def _restricted(self, category: str, sent: bool) -> bool:
        local = await self.s.scalar(
            select(Category.restricted).where(
                Category.org_id == self.plan.org_id, Category.key == category
            )
        )
        return sent or bool(local)

    async def records(self, records: PackageRecords) -> RecordsImported:
        pid = self.plan.pupil_id
        source_pid = self.plan.incoming.source_id if self.plan.incoming else None
        skipped = 0
        await self._find_held(records)
        concern_ids = self.concern_local
        for c in records.concerns:
            prov = self._version(c, c.id, "concerns")
            if prov is None:
                continue
            await self.s.flush()
            new_id = str(uuid.uuid4())
            concern_ids[c.id] = new_id
            self.s.add(
                Concern(
                    id=new_id,
                    org_id=self.plan.org_id,
                    category_key=c.category[:64],
                    restricted=await self._restricted(c.category[:64], c.restricted),
                    happened_at=c.happened_at,
                    recorded_at=c.recorded_at,
                    recorded_by=c.recorded_by[:36],
                    status=c.status,
                    provenance_id=prov,
                )
            )
            await self.s.flush()
            self.s.add(ConcernPupil(concern_id=new_id, pupil_id=pid))
            self._seal(
                "concerns",
                new_id,
                {
                    "account": c.account,
                    "location": c.location,
                    "people_involved": c.people_involved,
                },
            )
            for m in c.body_map:
                if source_pid is not None and m.pupil_id != source_pid:
                    continue  # a mark on another child of the same concern: not theirs to send on
                mark_id = str(uuid.uuid4())
                self.s.add(
                    BodyMapMarkRow(
                        id=mark_id, concern_id=new_id, pupil_id=pid, side=m.side, x=m.x, y=m.y
                    )
                )
                self._seal("body_map_marks", mark_id, {"description": m.description})
        await self.s.flush()
        for t in records.triage:
            cid = concern_ids.get(t.concern_id)
            if cid is None:
                skipped += 1
                continue
            prov = self._version(t, t.id, "triage")
            if prov is None:
                continue
            await self.s.flush()
            row_id = str(uuid.uuid4())
            self.s.add(
                Triage(
                    id=row_id,
                    concern_id=cid,
                    decision=t.decision,
                    decided_at=t.decided_at,
                    decided_by=t.decided_by[:36],
                    provenance_id=prov,
                )
            )
            self._seal("triage_decisions", row_id, {"reason": t.reason})
        for a in records.actions:
            cid = concern_ids.get(a.concern_id)
            if cid is None:
                skipped += 1
                continue
            prov = self._version(a, a.id, "actions")
            if prov is None:
                continue
            await self.s.flush()
            row_id = str(uuid.uuid4())
            self.s.add(
                Action(
                    id=row_id,
                    concern_id=cid,
                    assignee_id=None,
                    due_on=a.due_on,
                    done_at=a.done_at,
                    created_at=a.created_at,
                    created_by=a.created_by[:36],
                    provenance_id=prov,
                )
            )
            self._seal("actions", row_id, {"text": a.text})
        for ct in records.contacts:
            cid = concern_ids.get(ct.concern_id)
            if cid is None:
                skipped += 1
                continue
            prov = self._version(ct, ct.id, "contacts")
            if prov is None:
                continue
            await self.s.flush()
            row_id = str(uuid.uuid4())
            self.s.add(
                Contact(
                    id=row_id,
                    concern_id=cid,
                    contacted_at=ct.contacted_at,
                    recorded_at=ct.recorded_at,
                    recorded_by=ct.recorded_by[:36],
                    provenance_id=prov,
                )
            )
            self._seal("external_contacts", row_id, {"agency": ct.agency, "outcome": ct.outcome})
        for d in records.documents:
            blob = self.plan.written.get(d.sha256)
            if blob is None:
                raise IntegrityError(
                    f"the package lists document {d.id} but does not hold its file"
                )
            prov = self._version(d, d.id, "documents")
            if prov is None:
                continue
            await self.s.flush()
            row_id = str(uuid.uuid4())
            self.s.add(
                Document(
                    id=row_id,
                    org_id=self.plan.org_id,
                    pupil_id=pid,
                    concern_id=concern_ids.get(d.concern_id or ""),
                    name=blob.name,
                    sha256=None,
                    size=blob.size,
                    media_type=d.media_type[:200],
                    uploaded_at=d.uploaded_at,
                    uploaded_by=d.uploaded_by[:36],
                    provenance_id=prov,
                )
            )
            self._seal(
                "documents",
                row_id,
                {"filename": d.filename[:255] or "document", "sha256": d.sha256},
            )
        seen_events = set()
        if not self.plan.new_pupil and records.events:
            seen_events = {
                (r.kind, r.ref, _naive_utc(r.occurred_at))
                for r in await self.s.execute(
                    select(PupilEvent.kind, PupilEvent.ref, PupilEvent.occurred_at).where(
                        PupilEvent.pupil_id == pid, PupilEvent.recorded_by.is_(None)
                    )
                )
            }
        for e in records.events:
            if (e.kind, e.ref, _naive_utc(e.occurred_at)) in seen_events:
                self.held_count += 1  # the same line, from an earlier copy of the file
                continue
            self.imported["events"] = self.imported.get("events", 0) + 1
            row_id = str(uuid.uuid4())
            self.s.add(
                PupilEvent(
                    id=row_id,
                    org_id=self.plan.org_id,
                    pupil_id=pid,
                    kind=e.kind,
                    ref=e.ref,
                    occurred_at=e.occurred_at,
                    recorded_at=e.recorded_at,
                    recorded_by=None,
                )
            )
            summary = f"At {self.source_org_name}: {e.summary}"
            self._seal("pupil_events", row_id, {"summary": summary})
        await self.s.flush()
        counts = {kind: self.imported.get(kind, 0) for kind in records.counts()}
        return RecordsImported(
            pid,
            self.plan.new_pupil,
            self.plan.matched_by,
            counts,
            skipped,
            held=self.held_count,
            amended=self.amended_count,
        )


def records_json(raw: bytes) -> Any:
    """A record file's JSON (for previews), refusing what is not JSON."""
    try:
        return jsontext.loads(raw)
    except ValueError:
        raise RecordsError("a record in the package is not valid JSON") from None
