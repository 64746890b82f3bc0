"""The store's casework on a concern: triage decisions, actions and contacts with agencies."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import func, select

from schemas.records import (
    ActionRecord,
    ContactRecord,
    NewAction,
    NewContact,
    NewTriage,
    PersonRecord,
    TriageRecord,
)
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.store import people
from transfer.store._common import _Sealed, _submission_id
from transfer.store.changes import StoreChange
from transfer.store.concerns import ConcernStore
from transfer.store.keyring import open_field
from transfer.store.permissions import Actor, Permission
from transfer.store.tables import (
    Action,
    Concern,
    ConcernPupil,
    Contact,
    Pupil,
    SealedField,
    Staff,
    Triage,
)


class CaseworkStore(ConcernStore):
    """Triage, actions and contacts."""

    # ------------------------------------------------------------------- triage

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

    # ------------------------------------------------------------------ actions

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

    # ----------------------------------------------------------------- contacts

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
