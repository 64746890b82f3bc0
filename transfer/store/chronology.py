"""The store's pupil events and the pupil's chronology (every record about a pupil, in order)."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from schemas.records import (
    ActionRecord,
    BodyMapMark,
    ChronologyEntry,
    ChronologyLine,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    PersonRecord,
    PupilEventRecord,
    TriageRecord,
)
from transfer.errors import InputError, NotFoundError
from transfer.store import people
from transfer.store._common import _new_id, _Sealed
from transfer.store.concerns import ConcernStore
from transfer.store.db import Base
from transfer.store.keyring import KeyRing
from transfer.store.permissions import (
    OPERATOR,
    Actor,
    Permission,
    PermissionDenied,
    can_read_concern,
    roles_in_words,
)
from transfer.store.tables import (
    Action,
    BodyMapMarkRow,
    Concern,
    ConcernPupil,
    Contact,
    Document,
    Pupil,
    PupilEvent,
    Triage,
)

_EVENT_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")
MAX_EVENT_SUMMARY: Final = 2000
#: Who may write a pupil event as a person (the node itself may always).
_EVENT_WRITERS: Final = (
    Permission.SEND_TRANSFER,
    Permission.RECEIVE_TRANSFER,
    Permission.SEND_REFERRAL,
)


class Bundle:
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


class ChronologyStore(ConcernStore):
    """Pupil events and chronology."""

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
    ) -> Bundle:
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
        b = Bundle()
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
