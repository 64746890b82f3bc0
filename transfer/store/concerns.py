"""The store's concerns: recording, reading, listing, status and amendments."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from schemas.records import (
    AmendmentRecord,
    BodyMapMark,
    ConcernRecord,
    ConcernStatus,
    ConcernSummary,
    NewAmendment,
    NewConcern,
    Provenance,
)
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.store._common import _new_id, _Sealed, _submission_id
from transfer.store.changes import StoreChange
from transfer.store.permissions import Actor, Permission, PermissionDenied, can_read_concern
from transfer.store.pupils import PupilStore
from transfer.store.tables import (
    Action,
    BodyMapMarkRow,
    Category,
    Concern,
    ConcernAmendment,
    ConcernPupil,
    Contact,
    ProvenanceRow,
    SealedField,
    Triage,
)


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


class ConcernStore(PupilStore):
    """Concerns, and the reading checks the records hung on a concern use."""

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
