"""The inserts of one import, inside the one transaction that commits it.

Every record is written with its provenance (which organisation, which package, when
received, its id there) and its text sealed under the pupil's key exactly as the store
seals its own records. A record already held from the same sender, unchanged, is not
imported again; a changed one is kept as a new version beside the earlier.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pydantic import BaseModel
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from keys import aead
from schemas.manifest import canonical_json
from transfer.errors import IntegrityError, PolicyError
from transfer.exchange.importing.plan import ImportPlan, RecordsImported
from transfer.exchange.importing.records import PackageRecords
from transfer.store.base import utc_now
from transfer.store.keyring import sealed_field
from transfer.store.permissions import Actor
from transfer.store.tables import (
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


class RecordsWriter:
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
