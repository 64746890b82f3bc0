"""Drafting a referral: the form, the chronology entries chosen, redaction marks, and
throwing a draft away; previews of what would be sealed."""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import delete

from receivers.agencies import check_addressee, due_on
from schemas.records import ChronologyEntry
from schemas.referrals import (
    NewRedaction,
    RedactionRecord,
    ReferralRecord,
    ReferralSummary,
    SelectedItem,
)
from transfer.errors import ConflictError, HandoverError, InputError, NotFoundError
from transfer.package.from_store import PEOPLE_PATH
from transfer.referrals.base import (
    LABELS,
    REDACTIONS,
    SELECTION,
    TABLE,
    Form,
    ReferralsBase,
    cap,
    new_id,
    summary_of,
)
from transfer.referrals.deadlines import alert_key
from transfer.referrals.package import CHRONOLOGY_PATH, FORM_PATH, referral_entries
from transfer.referrals.reading import ReadableReferral, readable_referral
from transfer.referrals.tables import Referral, ReferralEvent
from transfer.states.referral import REFERRAL, ReferralState
from transfer.states.referral import ReferralEvent as On
from transfer.store.permissions import Actor
from transfer.store.tables import SealedField


class ReferralDrafts(ReferralsBase):
    """Drafts: made, changed and discarded by the DSL team before anything is sealed."""

    async def may_start(self, actor: Actor, pupil_id: str) -> None:
        """Refuse, and audit as a refused ``referral.drafted``, a member of staff outside
        the DSL team at the first step of a new referral about ``pupil_id`` (the web app's
        agency choice and form), before anything of it is shown."""
        pupil_id = await self.store.pupil_id_for(actor, pupil_id)
        await self._require_team(actor, "referral.drafted", {"pupil": pupil_id})

    async def draft(
        self,
        actor: Actor,
        *,
        pupil_id: str,
        agency_org_id: str,
        form: Form,
        selection: Sequence[SelectedItem] = (),
        redactions: Sequence[NewRedaction] = (),
    ) -> ReferralRecord:
        """Start a referral about ``pupil_id`` (an id or the pupil's UPN) to ``agency_org_id``
        with its form and, optionally, the chronology entries chosen and the redaction marks.

        Everything is checked first (the agency takes this kind of referral, the pupil is
        ours, every chosen entry exists, every mark fits what is chosen); only then is the
        draft made, whole, in one transaction: a refusal leaves no draft behind.
        """
        pupil_id = await self.store.pupil_id_for(actor, pupil_id)
        targets = {"pupil": pupil_id, "agency": agency_org_id[:64]}
        await self._require_team(actor, "referral.drafted", targets)
        entry = await self.directory.entry(agency_org_id)
        check_addressee(form, entry.kind, entry.name)
        await self.store.get_pupil(actor, pupil_id)
        chosen = tuple(dict.fromkeys(selection))
        marks = tuple(RedactionRecord(id=new_id(), **m.model_dump()) for m in redactions)
        if chosen or marks:
            try:
                await referral_entries(
                    self.store, actor, pupil_id, form=form, selection=chosen, redactions=marks
                )
            except HandoverError as exc:
                await self._audit(
                    "referral.drafted", actor, actor.org_id, targets, "refused", reason=exc.slug
                )
                raise
        due = due_on(form, self.calendar)
        ring = self._ring()
        now = self.store.now()
        async with self._writing() as s:
            row = Referral(
                id=new_id(),
                org_id=actor.org_id,
                pupil_id=pupil_id,
                kind=form.kind,
                agency_org_id=entry.org_id,
                state=ReferralState.DRAFT,
                route=None,
                due_on=due,
                sent_without_consent=False,
                consent_reason=None,
                created_at=now,
                created_by=actor.staff_id,
                updated_at=now,
            )
            s.add(row)
            await s.flush()
            await self._seal(
                s,
                ring,
                row,
                {
                    "form": form.model_dump_json(),
                    "selection": SELECTION.dump_json(chosen).decode(),
                    "redactions": REDACTIONS.dump_json(marks).decode(),
                },
            )
            await self._event(s, row, "drafted", actor, f"due_on={due.isoformat()}" if due else "")
            record = await self._record(s, ring, row)
        await self._audit(
            "referral.drafted",
            actor,
            actor.org_id,
            {**targets, "referral": row.id},
            kind=form.kind,
            due_on=due.isoformat() if due else None,
            items=len(chosen),
            marks=len(marks),
        )
        await self._chronicle(
            actor,
            row,
            "referral.drafted",
            f"{cap(LABELS[form.kind])} to {entry.name} drafted",
            now,
        )
        return record

    async def _change_draft(
        self,
        actor: Actor,
        referral_id: str,
        action: str,
        fields: dict[str, str],
        **detail: str | int | bool | None,
    ) -> ReferralRecord:
        targets = {"referral": referral_id}
        await self._require_team(actor, action, targets)
        ring = self._ring()
        async with self._writing() as s:
            row = await self._row(s, actor, referral_id, lock=True)
            if row.state != ReferralState.DRAFT:
                raise ConflictError(
                    f"this referral is {row.state}, not a draft: what was sent cannot change"
                )
            await self._seal(s, ring, row, fields)
            await self._event(s, row, action.removeprefix("referral."), actor)
            record = await self._record(s, ring, row)
        await self._audit(
            action, actor, actor.org_id, {**targets, "pupil": row.pupil_id}, "ok", **detail
        )
        return record

    async def update_form(self, actor: Actor, referral_id: str, form: Form) -> ReferralRecord:
        """Replace the draft's form (same kind of referral, same agency)."""
        current = await self._current_draft(actor, referral_id)
        if form.kind != current.kind:
            raise InputError(
                f"this draft is a {current.kind} referral; the new form is a {form.kind} one: "
                "start a new referral instead"
            )
        due = due_on(form, self.calendar)
        record = await self._change_draft(
            actor, referral_id, "referral.form_changed", {"form": form.model_dump_json()}
        )
        if due != record.due_on:
            async with self._writing() as s:
                row = await self._row(s, actor, referral_id)
                row.due_on = due
            record = record.model_copy(update={"due_on": due})
        return record

    async def _current_draft(self, actor: Actor, referral_id: str) -> ReferralRecord:
        record = await self.get(actor, referral_id)
        if record.state != ReferralState.DRAFT.value:
            raise ConflictError(
                f"this referral is {record.state}, not a draft: what was sent cannot change"
            )
        return record

    async def select(
        self, actor: Actor, referral_id: str, items: Sequence[SelectedItem]
    ) -> ReferralRecord:
        """Choose exactly which chronology entries go (replaces the previous choice)."""
        unique = tuple(dict.fromkeys(items))
        current = await self._current_draft(actor, referral_id)
        await self._check_content(actor, current, unique, current.redactions)
        return await self._change_draft(
            actor,
            referral_id,
            "referral.selected",
            {"selection": SELECTION.dump_json(unique).decode()},
            items=len(unique),
        )

    async def add_redaction(
        self, actor: Actor, referral_id: str, mark: NewRedaction
    ) -> ReferralRecord:
        """Mark a third-party name (text or span) to hide in what is sealed."""
        current = await self._current_draft(actor, referral_id)
        marks = (*current.redactions, RedactionRecord(id=new_id(), **mark.model_dump()))
        await self._check_content(actor, current, current.selection, marks)
        return await self._change_draft(
            actor,
            referral_id,
            "referral.redaction_marked",
            {"redactions": REDACTIONS.dump_json(marks).decode()},
            marks=len(marks),
        )

    async def remove_redaction(
        self, actor: Actor, referral_id: str, mark_id: str
    ) -> ReferralRecord:
        current = await self._current_draft(actor, referral_id)
        marks = tuple(m for m in current.redactions if m.id != mark_id)
        if len(marks) == len(current.redactions):
            raise NotFoundError("this referral has no such redaction mark")
        return await self._change_draft(
            actor,
            referral_id,
            "referral.redaction_removed",
            {"redactions": REDACTIONS.dump_json(marks).decode()},
            marks=len(marks),
        )

    async def discard(self, actor: Actor, referral_id: str) -> ReferralSummary:
        """Throw a draft away: the referral and its sealed form, selection and marks go.

        Only a draft (what was sealed is the agency's record, or is taken back with
        :meth:`withdraw` first). The audit and the child's chronology keep that it
        was drafted and discarded, and by whom; the returned summary says what it was.
        """
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.discarded", targets)
        async with self._writing() as s:
            row = await self._row(s, actor, referral_id, lock=True)
            if not REFERRAL.can(ReferralState(row.state), On.DISCARD):
                raise ConflictError(
                    f"this referral is {row.state}, not a draft: only a draft can be "
                    "discarded (take a sealed one back first, if it has not reached the agency)"
                )
            gone = REFERRAL.step(ReferralState(row.state), On.DISCARD).target
            summary = summary_of(row).model_copy(update={"state": str(gone)})
            await s.execute(
                delete(SealedField).where(
                    SealedField.record_table == TABLE, SealedField.record_id == row.id
                )
            )
            await s.execute(delete(ReferralEvent).where(ReferralEvent.referral_id == row.id))
            await s.delete(row)
        now = self.store.now()
        await self._audit(
            "referral.discarded",
            actor,
            actor.org_id,
            {**targets, "pupil": summary.pupil_id},
            kind=summary.kind,
        )
        agency = await self._agency_name(summary.agency_org_id)
        await self._chronicle(
            actor,
            summary,
            "referral.discarded",
            f"{cap(LABELS[summary.kind])} to {agency} discarded before it was sent",
            now,
        )
        if self.alerts is not None:
            await self.alerts.resolve(actor.org_id, alert_key(referral_id))
        return summary

    async def preview(self, actor: Actor, referral_id: str) -> list[ChronologyEntry]:
        """The selected chronology entries exactly as they would be sealed (redacted)."""
        record = await self.get(actor, referral_id)
        content = await self._check_content(actor, record, record.selection, record.redactions)
        return list(content.chronology)

    async def as_the_agency_reads_it(self, actor: Actor, referral_id: str) -> ReadableReferral:
        """The draft as the agency will read it: :func:`readable_referral` (the pickup page's
        and its PDF's) over the very records that would be sealed now (the form, the chosen
        chronology lines redacted, and who recorded them)."""
        record = await self.get(actor, referral_id)
        content = await self._check_content(actor, record, record.selection, record.redactions)
        head = {
            e.path: json.loads(b"".join(e.opener()))
            for e in content.entries
            if e.path in (FORM_PATH, CHRONOLOGY_PATH, PEOPLE_PATH)
        }
        return readable_referral(
            head[FORM_PATH], chronology=head[CHRONOLOGY_PATH], people=head[PEOPLE_PATH]
        )
