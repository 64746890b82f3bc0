"""The referral service: drafts, selection, redaction, sealing, lifecycle, outcomes, deadlines.

:class:`Referrals` works over the concern store (its engine, key ring and
audit door), the node's key store (the school's signing key) and the
directory (the agency's kind and ``age1…`` recipient). Every method checks
the actor (:mod:`transfer.referrals.consent`), is one transaction, audits
``referral.*`` events (codes and ids only, never text) and writes the steps a
DSL needs to see into the pupil's chronology (``referral.sent``...).

Lifecycle: ``draft`` → ``sent`` → ``delivered`` → ``accepted`` (with the
agency's reference) or ``rejected`` (with a reason) → ``closed`` (outcome
recorded). Each step is timed in ``referral_events``.

The routes (``receivers/``) call :meth:`Referrals.seal` to make the package
and then deliver it their way; receipts and acknowledgements come back through
:meth:`record_delivery`, :meth:`record_acknowledgement` and
:meth:`record_rejection`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, BinaryIO, Final, Literal, Protocol

from pydantic import TypeAdapter
from sqlalchemy import delete, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from keys.keyset import KeySet
from keys.store import KeyStore
from receivers.agencies import ENGLAND, check_addressee, due_on
from schemas.manifest import Recipient, Sender
from schemas.records import ChronologyEntry
from schemas.referrals import (
    LadoReferral,
    MashReferral,
    NewRedaction,
    PoliceReferral,
    RedactionRecord,
    ReferralEventRecord,
    ReferralForm,
    ReferralOutcome,
    ReferralRecord,
    ReferralSummary,
    SelectedItem,
)
from transfer.age import Recipient as AgeRecipient
from transfer.age import X25519Recipient, parse_recipient
from transfer.deadlines import SchoolCalendar, default_calendar
from transfer.errors import ConflictError, HandoverError, InputError, NotFoundError
from transfer.package.build import BuiltPackage
from transfer.package.from_store import PEOPLE_PATH
from transfer.referrals.consent import check_send, require_draft
from transfer.referrals.package import (
    CHRONOLOGY_PATH,
    FORM_PATH,
    ReferralContent,
    referral_entries,
    seal_referral,
)
from transfer.referrals.reading import ReadableReferral, readable_referral
from transfer.referrals.tables import Referral, ReferralEvent
from transfer.states.referral import REFERRAL, ReferralState
from transfer.states.referral import ReferralEvent as On
from transfer.store import people
from transfer.store.keyring import KeyRing, open_field, sealed_field
from transfer.store.models import SealedField
from transfer.store.permissions import Actor, PermissionDenied
from transfer.store.service import Store
from transfer.wording import plural

__all__ = [
    "AgencyDirectory",
    "AgencyEntry",
    "DeadlineAlerts",
    "Referrals",
    "SealedReferral",
    "referral_deadline_sweep",
]

Form = MashReferral | LadoReferral | PoliceReferral
Outcome = Any  # MashOutcome | LadoOutcome | PoliceOutcome (a discriminated union)
Route = Literal["node", "portal", "offline"]

TABLE: Final = "referrals"
_FORM: TypeAdapter[Form] = TypeAdapter(ReferralForm)
_OUTCOME: TypeAdapter[Any] = TypeAdapter(ReferralOutcome)
_SELECTION = TypeAdapter(tuple[SelectedItem, ...])
_REDACTIONS = TypeAdapter(tuple[RedactionRecord, ...])
_LABELS: Final = {
    "social_care": "children's social care / MASH referral",
    "lado": "LADO referral",
    "police": "police referral",
}


class AgencyEntry(Protocol):
    """What the service needs of a directory entry (``schemas.directory.DirectoryEntry``)."""

    @property
    def org_id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...


class AgencyDirectory(Protocol):
    """``transfer.directory.service.Directory`` (or anything with its ``entry``)."""

    async def entry(self, org_id: str) -> AgencyEntry: ...


class DeadlineAlerts(Protocol):
    """``transfer.alerts.Alerts``."""

    async def notify(
        self,
        org_id: str,
        *,
        key: str,
        level: Literal["upcoming", "due", "overdue", "info"],
        subject: str,
        message: str,
        pupil_id: str | None = None,
        ref: str | None = None,
    ) -> bool: ...

    async def resolve(self, org_id: str, key: str) -> None: ...


@dataclass(frozen=True)
class SealedReferral:
    """A referral package just written: what was built and the referral, now ``sent``."""

    built: BuiltPackage
    referral: ReferralRecord
    #: The agency's directory entry at the time of sealing.
    agency_name: str
    agency_org_id: str


def _new_id() -> str:
    return str(uuid.uuid4())


class NothingSelectedError(InputError):
    """A referral with no chronology entry chosen is sent only when the DSL confirms it."""

    http_status = 422
    slug = "nothing-selected"
    title = "No chronology entry is chosen"


def check_selection(record: ReferralRecord, *, form_only: bool) -> None:
    """Refuse to seal a referral carrying no chronology entry unless ``form_only`` says the
    DSL means to send the form alone; refuse ``form_only`` when entries were chosen."""
    if not record.selection and not form_only:
        raise NothingSelectedError(
            "no chronology entry is chosen for this referral, so the agency would get the "
            "form alone: choose the entries it needs, or confirm sending the form only",
            detail={"selected": 0},
        )
    if record.selection and form_only:
        raise InputError(
            f"{len(record.selection)} chronology "
            f"{'entry is' if len(record.selection) == 1 else 'entries are'} chosen: "
            "remove them to send the form only, or send without asking for the form only"
        )


def _check_line(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit or not value.isprintable():
        raise InputError(f"{what} must be 1 to {limit} printable characters on one line")
    return value


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def alert_key(referral_id: str) -> str:
    return f"referral:{referral_id}"


class Referrals:
    """The referrals of the organisations on one node."""

    def __init__(
        self,
        store: Store,
        keys: KeyStore,
        directory: AgencyDirectory,
        *,
        calendar: SchoolCalendar | None = None,
        alerts: DeadlineAlerts | None = None,
    ) -> None:
        self.store = store
        self.keys = keys
        self.directory = directory
        self.calendar = calendar or default_calendar()
        self.alerts = alerts

    # ------------------------------------------------------------- plumbing

    @contextlib.asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncSession]:
        try:
            async with self.store.sessions() as s, s.begin():
                yield s
        except sa_exc.IntegrityError:
            raise ConflictError(
                "the referral changed while this was being saved; reload it and try again"
            ) from None

    def _ring(self) -> KeyRing:
        return self.store._ring()

    async def _audit(
        self,
        action: str,
        actor: Actor | None,
        org_id: str,
        targets: dict[str, str],
        outcome: Literal["ok", "refused", "failed"] = "ok",
        **detail: str | int | bool | None,
    ) -> None:
        await self.store.record_event(action, actor, org_id, targets, outcome, **detail)

    async def _require_team(self, actor: Actor, action: str, targets: dict[str, str]) -> None:
        try:
            require_draft(actor)
        except PermissionDenied:
            await self._audit(action, actor, actor.org_id, targets, "refused")
            raise

    @staticmethod
    async def _seal(s: AsyncSession, ring: KeyRing, row: Referral, fields: dict[str, str]) -> None:
        key = await ring.pupil_key(s, row.pupil_id)
        await s.execute(
            delete(SealedField).where(
                SealedField.record_table == TABLE,
                SealedField.record_id == row.id,
                SealedField.field.in_(list(fields)),
            )
        )
        for name, value in fields.items():
            s.add(sealed_field(key, TABLE, name, row.id, row.pupil_id, value))

    @staticmethod
    async def _unseal(s: AsyncSession, ring: KeyRing, row: Referral) -> dict[str, str]:
        rows = (
            await s.scalars(
                select(SealedField).where(
                    SealedField.record_table == TABLE,
                    SealedField.record_id == row.id,
                    SealedField.pupil_id == row.pupil_id,
                )
            )
        ).all()
        if not rows:
            return {}
        key = await ring.pupil_key(s, row.pupil_id)
        return {
            r.field: open_field(key, TABLE, r.field, row.id, row.pupil_id, r.sealed) for r in rows
        }

    async def _row(
        self, s: AsyncSession, actor: Actor | None, referral_id: str, *, lock: bool = False
    ) -> Referral:
        query = select(Referral).where(Referral.id == referral_id)
        if lock and self.store.engine.dialect.name != "sqlite":
            query = query.with_for_update()
        row = (await s.scalars(query)).one_or_none()
        if row is None or (actor is not None and row.org_id != actor.org_id):
            raise NotFoundError("no such referral in your organisation")
        return row

    async def _event(
        self, s: AsyncSession, row: Referral, action: str, actor: Actor | None, note: str = ""
    ) -> datetime:
        now = self.store.now()
        seq = await s.scalar(
            select(func.coalesce(func.max(ReferralEvent.seq), 0)).where(
                ReferralEvent.referral_id == row.id
            )
        )
        s.add(
            ReferralEvent(
                id=_new_id(),
                referral_id=row.id,
                seq=int(seq or 0) + 1,
                at=now,
                action=action,
                actor=actor.staff_id if actor else None,
                note=note[:200],
            )
        )
        row.updated_at = now
        return now

    async def _record(self, s: AsyncSession, ring: KeyRing, row: Referral) -> ReferralRecord:
        fields = await self._unseal(s, ring, row)
        events = (
            await s.scalars(
                select(ReferralEvent)
                .where(ReferralEvent.referral_id == row.id)
                .order_by(ReferralEvent.seq)
            )
        ).all()
        outcome = _OUTCOME.validate_json(fields["outcome"]) if "outcome" in fields else None
        handover = json.loads(fields["handover"]) if "handover" in fields else None
        who = await people.staff_people(
            await s.connection(), (e.actor for e in events if e.actor), org_id=row.org_id
        )

        def event(e: ReferralEvent) -> ReferralEventRecord:
            person = people.NODE if e.actor is None else who.get(e.actor) or people.unknown(e.actor)
            return ReferralEventRecord(
                at=e.at,
                action=e.action,
                actor=e.actor,
                note=e.note,
                actor_name=person.name,
                actor_role=person.role,
            )

        agency = await self._agency_name(row.agency_org_id)
        return ReferralRecord(
            **_summary(row).model_dump(),
            form=_FORM.validate_json(fields["form"]),
            selection=_SELECTION.validate_json(fields.get("selection", "[]")),
            redactions=_REDACTIONS.validate_json(fields.get("redactions", "[]")),
            sent_without_consent=row.sent_without_consent,
            consent_reason=row.consent_reason,
            ciphertext_sha256=row.ciphertext_sha256,
            agency_reference=row.agency_reference,
            acknowledged_by=fields.get("acknowledged_by"),
            rejection_reason=fields.get("rejection_reason"),
            outcome=outcome,
            handover=handover,
            events=tuple(event(e) for e in events),
            agency_name=agency if agency != row.agency_org_id else None,
        )

    async def _chronicle(
        self,
        actor: Actor | None,
        row: Referral | ReferralSummary,
        kind: str,
        summary: str,
        at: datetime,
    ) -> None:
        await self.store.add_pupil_event(
            actor, row.pupil_id, kind=kind, summary=summary[:2000], ref=row.id, at=at
        )

    async def _agency_name(self, org_id: str) -> str:
        try:
            return (await self.directory.entry(org_id)).name
        except NotFoundError:
            return org_id

    # --------------------------------------------------------------- drafts

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
        marks = tuple(RedactionRecord(id=_new_id(), **m.model_dump()) for m in redactions)
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
                id=_new_id(),
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
                    "selection": _SELECTION.dump_json(chosen).decode(),
                    "redactions": _REDACTIONS.dump_json(marks).decode(),
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
            f"{_cap(_LABELS[form.kind])} to {entry.name} drafted",
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

    async def _check_content(
        self,
        actor: Actor,
        record: ReferralRecord,
        selection: Sequence[SelectedItem],
        redactions: Sequence[NewRedaction],
    ) -> ReferralContent:
        return await referral_entries(
            self.store,
            actor,
            record.pupil_id,
            form=record.form,
            selection=selection,
            redactions=redactions,
        )

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
            {"selection": _SELECTION.dump_json(unique).decode()},
            items=len(unique),
        )

    async def add_redaction(
        self, actor: Actor, referral_id: str, mark: NewRedaction
    ) -> ReferralRecord:
        """Mark a third-party name (text or span) to hide in what is sealed."""
        current = await self._current_draft(actor, referral_id)
        marks = (*current.redactions, RedactionRecord(id=_new_id(), **mark.model_dump()))
        await self._check_content(actor, current, current.selection, marks)
        return await self._change_draft(
            actor,
            referral_id,
            "referral.redaction_marked",
            {"redactions": _REDACTIONS.dump_json(marks).decode()},
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
            {"redactions": _REDACTIONS.dump_json(marks).decode()},
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
            summary = _summary(row).model_copy(update={"state": str(gone)})
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
            f"{_cap(_LABELS[summary.kind])} to {agency} discarded before it was sent",
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

    # --------------------------------------------------------------- reading

    async def get(self, actor: Actor, referral_id: str) -> ReferralRecord:
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.read", targets)
        ring = self._ring()
        async with self.store.sessions() as s:
            row = await self._row(s, actor, referral_id)
            return await self._record(s, ring, row)

    async def list(
        self, actor: Actor, *, state: str | None = None, pupil_id: str | None = None
    ) -> list[ReferralSummary]:
        await self._require_team(actor, "referral.list", {})
        query = select(Referral).where(Referral.org_id == actor.org_id)
        if state is not None:
            query = query.where(Referral.state == state)
        if pupil_id is not None:
            pupil_id = await self.store.pupil_id_for(actor, pupil_id)
            query = query.where(Referral.pupil_id == pupil_id)
        async with self.store.sessions() as s:
            rows = (await s.scalars(query.order_by(Referral.created_at, Referral.id))).all()
            return [_summary(r) for r in rows]

    async def find_by_package(self, package_id: str) -> ReferralSummary | None:
        """The referral sealed into ``package_id`` (for receipts), if any."""
        async with self.store.sessions() as s:
            row = (
                await s.scalars(select(Referral).where(Referral.package_id == package_id))
            ).one_or_none()
            return _summary(row) if row is not None else None

    # --------------------------------------------------------------- sending

    async def seal(
        self,
        actor: Actor,
        referral_id: str,
        out: BinaryIO,
        *,
        route: Route,
        recipients: Sequence[AgeRecipient] | None = None,
        package_id: uuid.UUID | None = None,
        form_only: bool = False,
    ) -> SealedReferral:
        """Write the referral's package to ``out`` and mark the referral ``sent``.

        A referral with no chronology entry chosen goes only with ``form_only`` (the
        DSL confirmed sending the form alone: :class:`NothingSelectedError` otherwise).
        Checks the consent rule (only the DSL sends without consent), builds
        the package from the selection with its redactions, signs it with the
        school's key and encrypts it to ``recipients`` (default: the agency's
        registered ``age1…`` recipient). On any error the referral stays a
        draft and ``out`` holds an unfinished age stream: discard it.
        """
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.sent", targets)
        record = await self.get(actor, referral_id)
        targets["pupil"] = record.pupil_id
        if record.state != ReferralState.DRAFT.value:
            raise ConflictError(
                f"this referral was already sealed and is {record.state}; "
                "to send again, start a new referral"
            )
        try:
            check_selection(record, form_only=form_only)
        except HandoverError as exc:
            await self._audit(
                "referral.sent", actor, actor.org_id, targets, "refused", reason=exc.slug
            )
            raise
        try:
            decision = check_send(actor, record.form.consent)
        except PermissionDenied:
            await self._audit(
                "referral.sent", actor, actor.org_id, targets, "refused", reason="consent"
            )
            raise
        entry = await self.directory.entry(record.agency_org_id)
        rule = check_addressee(record.form, entry.kind, entry.name)
        keyset: KeySet = await asyncio.to_thread(self.keys.load, actor.org_id)
        if recipients is None:
            agency_key = parse_recipient(entry.recipient)
            if not isinstance(agency_key, X25519Recipient):
                raise InputError(f"the directory's key for {entry.name} is not an age1 recipient")
            recipients = [agency_key]
        content = await self._check_content(actor, record, record.selection, record.redactions)
        pid = package_id or uuid.uuid4()
        try:
            built = await seal_referral(
                out,
                content,
                kind=rule.package_kind,
                sender=Sender(
                    org_id=keyset.org_id,
                    key_fingerprint=keyset.fingerprint,
                    signing_key_id=keyset.key_id_hex,
                ),
                recipient=Recipient(org_id=entry.org_id, key_fingerprint=entry.fingerprint),
                signer=keyset.minisign_secret_key(),
                recipients=recipients,
                package_id=pid,
                created_at=self.store.now(),
            )
        except Exception as exc:
            slug = getattr(exc, "slug", type(exc).__name__)
            await self._audit(
                "referral.sent", actor, actor.org_id, targets, "failed", reason=str(slug)
            )
            raise
        ring = self._ring()
        async with self._writing() as s:
            row = await self._row(s, actor, referral_id, lock=True)
            if not REFERRAL.can(ReferralState(row.state), On.SEAL):
                raise ConflictError("this referral was sent by someone else meanwhile")
            row.state = REFERRAL.step(ReferralState(row.state), On.SEAL).target
            row.route = route
            row.package_id = str(pid)
            row.ciphertext_sha256 = built.ciphertext_sha256
            row.manifest_sha256 = built.manifest_sha256
            row.sent_without_consent = not decision.with_consent
            row.consent_reason = decision.reason
            at = await self._event(s, row, "sent", actor, f"route={route} package={pid}")
            sent = await self._record(s, ring, row)
        documents = sum(1 for e in content.chronology if e.kind == "document")
        await self._audit(
            "referral.sent",
            actor,
            actor.org_id,
            {**targets, "package": str(pid), "agency": entry.org_id},
            kind=record.kind,
            route=route,
            consent=decision.audit_value,
            consent_reason=decision.reason,
            entries=len(content.chronology),
            documents=documents,
            ciphertext_sha256=built.ciphertext_sha256,
        )
        drew_on = [
            f"{e.kind} of {e.occurred_at.astimezone(ENGLAND).date().isoformat()} ({e.id})"
            for e in content.chronology
        ]
        summary = (
            f"{_cap(_LABELS[record.kind])} sent to {entry.name} ({route})"
            + ("" if decision.with_consent else ", without parental consent")
            + (
                f"; it drew on {plural(len(drew_on), 'entry')}: " + "; ".join(drew_on)
                if drew_on
                else ""
            )
        )
        if len(summary) > 2000:
            summary = summary[:1980].rsplit(";", 1)[0] + "; and more"
        await self._chronicle(actor, row, "referral.sent", summary, at)
        if self.alerts is not None and record.due_on is not None:
            await self.alerts.resolve(actor.org_id, alert_key(referral_id))
        return SealedReferral(
            built=built, referral=sent, agency_name=entry.name, agency_org_id=entry.org_id
        )

    async def unsend(self, actor: Actor | None, referral_id: str, *, reason: str) -> None:
        """Put a referral whose package never left (the route failed to take it) back to draft."""
        async with self._writing() as s:
            row = await self._row(s, actor, referral_id, lock=True)
            if not REFERRAL.can(ReferralState(row.state), On.UNSEND):
                return
            row.state = REFERRAL.step(ReferralState(row.state), On.UNSEND).target
            row.route = None
            row.package_id = None
            row.ciphertext_sha256 = None
            row.manifest_sha256 = None
            await self._event(s, row, "unsent", actor, reason[:100])
            org_id = row.org_id
        await self._audit(
            "referral.unsent", actor, org_id, {"referral": referral_id}, reason=reason[:100]
        )

    async def withdraw(self, actor: Actor, referral_id: str, *, reason: str) -> ReferralRecord:
        """A DSL takes back a sealed referral that never reached the agency: back to draft.

        Only from ``sent`` (a delivered referral is the agency's now). The
        caller has checked that the route let go of the package (the bundle
        destroyed, the portal link withdrawn, the outbox's send cancelled).
        ``reason`` goes into the child's chronology only (sealed), not the audit.
        """
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.withdrawn", targets)
        reason = _check_line(reason, "the reason for taking it back", 500)
        current = await self.get(actor, referral_id)
        if current.state != ReferralState.SENT.value:
            raise ConflictError(
                f"this referral is {current.state}; only a referral that was sent and has not "
                "reached the agency can be taken back"
            )
        route = current.route or "unknown"
        await self.unsend(actor, referral_id, reason=f"withdrawn from route {route}")
        record = await self.get(actor, referral_id)
        if record.state != ReferralState.DRAFT.value:
            raise ConflictError("this referral moved on meanwhile; it was not taken back")
        await self._audit(
            "referral.withdrawn",
            actor,
            actor.org_id,
            {**targets, "pupil": record.pupil_id},
            route=route,
        )
        agency = await self._agency_name(record.agency_org_id)
        await self._chronicle(
            actor,
            record,
            "referral.withdrawn",
            f"{_cap(_LABELS[record.kind])} to {agency} taken back before it reached them "
            f"({route}): {reason}",
            record.updated_at,
        )
        return record

    # ------------------------------------------------------------- lifecycle

    async def _move(
        self,
        actor: Actor | None,
        referral_id: str,
        event: On,
        *,
        note: str = "",
        sealed: dict[str, str] | None = None,
        reference: str | None = None,
        at: datetime | None = None,
        package_id: str | None = None,
    ) -> tuple[ReferralRecord, datetime, bool]:
        """Apply ``event`` through the referral machine; (record, when, changed).

        A repeated event, or news older than the referral's state (a delivery after the
        agency accepted it), changes nothing; an event that does not apply raises
        :class:`IllegalTransition`. Each effect of the step is written to the referral's
        history. With ``package_id``, the referral must be the one sealed into that package.
        """
        ring = self._ring()
        async with self._writing() as s:
            row = await self._row(s, actor, referral_id, lock=True)
            if package_id is not None and row.package_id != package_id:
                raise NotFoundError("no referral was sealed into this package")
            step = REFERRAL.step(ReferralState(row.state), event)
            if not step.changes:
                return await self._record(s, ring, row), row.updated_at, False
            row.state = step.target
            if reference is not None:
                row.agency_reference = reference
            if sealed:
                await self._seal(s, ring, row, sealed)
            when = row.updated_at
            for effect in step.effects:
                when = await self._event(s, row, effect.removeprefix("referral."), actor, note)
            if at is not None:
                when = at
            record = await self._record(s, ring, row)
        return record, when, True

    async def record_delivery(
        self,
        referral_id: str,
        *,
        at: datetime | None = None,
        via: str = "node",
        package_id: str | None = None,
    ) -> ReferralRecord:
        """The agency has the package (a delivered receipt, a portal view or download).

        Idempotent, and no change once the referral is further on (accepted,
        rejected, closed), so a late or repeated delivery is harmless. With
        ``package_id``, :class:`NotFoundError` unless the referral was sealed
        into that package (the portal passes the pickup's package).
        """
        record, when, changed = await self._move(
            None,
            referral_id,
            On.DELIVER,
            note=f"via={via}",
            at=at,
            package_id=package_id,
        )
        if changed:
            await self._audit(
                "referral.delivered",
                None,
                record.org_id,
                {"referral": referral_id, "pupil": record.pupil_id},
                via=via,
            )
            name = await self._agency_name(record.agency_org_id)
            await self._chronicle(
                None,
                record,
                "referral.delivered",
                f"{_cap(_LABELS[record.kind])} delivered to {name} ({via})",
                when,
            )
        return record

    async def record_acknowledgement(
        self,
        referral_id: str,
        *,
        name: str,
        agency_reference: str,
        at: datetime | None = None,
        via: str = "portal",
        actor: Actor | None = None,
    ) -> ReferralRecord:
        """The agency accepted the referral: who (``name``) and its reference number.

        Called by the pickup portal (the agency user's acknowledgement), by the
        node route (an ``accepted`` receipt), and through :meth:`acknowledge`
        when a DSL records an acknowledgement received by phone or e-mail.
        Moves a ``sent`` or ``delivered`` referral to ``accepted``; repeating
        it with the same reference changes nothing.
        """
        name = _check_line(name, "the name of who acknowledged it", 200)
        reference = _check_line(agency_reference, "the agency's reference", 100)
        record, when, changed = await self._move(
            actor,
            referral_id,
            On.ACCEPT,
            note=f"via={via}",
            sealed={"acknowledged_by": name},
            reference=reference,
            at=at,
        )
        if not changed:
            if record.agency_reference != reference:
                raise ConflictError(
                    "this referral was already accepted under another agency reference"
                )
            return record
        await self._audit(
            "referral.accepted",
            actor,
            record.org_id,
            {"referral": referral_id, "pupil": record.pupil_id},
            via=via,
        )
        agency = await self._agency_name(record.agency_org_id)
        await self._chronicle(
            actor,
            record,
            "referral.accepted",
            f"{_cap(_LABELS[record.kind])} accepted by {agency} ({name}), "
            f"their reference {reference}",
            when,
        )
        return record

    async def acknowledge(
        self,
        actor: Actor,
        referral_id: str,
        *,
        name: str,
        agency_reference: str,
        via: str = "offline",
    ) -> ReferralRecord:
        """A DSL records the agency's acknowledgement received outside Handover."""
        await self._require_team(actor, "referral.accepted", {"referral": referral_id})
        await self.get(actor, referral_id)
        return await self.record_acknowledgement(
            referral_id, name=name, agency_reference=agency_reference, via=via, actor=actor
        )

    async def record_rejection(
        self,
        referral_id: str,
        *,
        reason: str,
        at: datetime | None = None,
        via: str = "node",
        actor: Actor | None = None,
    ) -> ReferralRecord:
        """The agency declined the referral, with its reason (sealed)."""
        reason = reason.strip()
        if not reason or len(reason) > 10_000:
            raise InputError("a rejection needs a reason of 1 to 10000 characters")
        if actor is not None:
            await self._require_team(actor, "referral.rejected", {"referral": referral_id})
        record, when, changed = await self._move(
            actor,
            referral_id,
            On.REJECT,
            note=f"via={via}",
            sealed={"rejection_reason": reason},
            at=at,
        )
        if changed:
            await self._audit(
                "referral.rejected",
                actor,
                record.org_id,
                {"referral": referral_id, "pupil": record.pupil_id},
                via=via,
            )
            agency = await self._agency_name(record.agency_org_id)
            await self._chronicle(
                actor,
                record,
                "referral.rejected",
                f"{_cap(_LABELS[record.kind])} rejected by {agency}: {reason}",
                when,
            )
        return record

    async def record_handover(
        self,
        actor: Actor,
        referral_id: str,
        *,
        to_whom: str,
        how: str,
        at: datetime | None = None,
    ) -> ReferralRecord:
        """The DSL records handing an offline bundle over: to whom, how, when."""
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.handed_over", targets)
        to_whom = _check_line(to_whom, "who it was handed to", 200)
        how = _check_line(how, "how it was handed over", 200)
        when = (at or self.store.now()).astimezone(UTC)
        current = await self.get(actor, referral_id)
        if current.route != "offline":
            raise ConflictError(
                "only an offline bundle's hand-over is recorded by hand; this referral went "
                f"{'by ' + current.route if current.route else 'nowhere yet'}"
            )
        handover = json.dumps({"to": to_whom, "how": how, "at": when.isoformat()})
        record, _, changed = await self._move(
            actor,
            referral_id,
            On.HAND_OVER,
            note="via=offline",
            sealed={"handover": handover},
            at=when,
        )
        if not changed:
            raise ConflictError("this bundle's hand-over is already recorded")
        await self._audit(
            "referral.handed_over", actor, actor.org_id, {**targets, "pupil": record.pupil_id}
        )
        agency = await self._agency_name(record.agency_org_id)
        await self._chronicle(
            actor,
            record,
            "referral.handed_over",
            f"Offline bundle of the {_LABELS[record.kind]} handed to {to_whom} of {agency} ({how})",
            when,
        )
        return record

    async def record_outcome(
        self, actor: Actor, referral_id: str, outcome: Outcome
    ) -> ReferralRecord:
        """The agency's outcome (MASH RAG and decision; LADO meeting and outcome; crime ref)."""
        targets = {"referral": referral_id}
        await self._require_team(actor, "referral.outcome", targets)
        current = await self.get(actor, referral_id)
        if outcome.kind != current.kind:
            raise InputError(
                f"this is a {current.kind} referral; the outcome given is for a {outcome.kind} one"
            )
        record, when, _ = await self._move(
            actor,
            referral_id,
            On.OUTCOME,
            note=_outcome_note(outcome),
            sealed={"outcome": outcome.model_dump_json()},
        )
        await self._audit(
            "referral.outcome",
            actor,
            actor.org_id,
            {**targets, "pupil": record.pupil_id},
            kind=record.kind,
        )
        await self._chronicle(
            actor,
            record,
            "referral.outcome",
            f"Outcome of the {_LABELS[record.kind]}: {_outcome_text(outcome)}",
            when,
        )
        return record

    # -------------------------------------------------------------- deadlines

    async def overdue(self, today: date) -> builtins.list[ReferralSummary]:
        """Drafts whose deadline is today or past (across every organisation on the node)."""
        async with self.store.sessions() as s:
            rows = (
                await s.scalars(
                    select(Referral)
                    .where(Referral.state == ReferralState.DRAFT, Referral.due_on.is_not(None))
                    .where(Referral.due_on <= today)
                    .order_by(Referral.due_on)
                )
            ).all()
            return [_summary(r) for r in rows]


def _summary(row: Referral) -> ReferralSummary:
    return ReferralSummary(
        id=row.id,
        org_id=row.org_id,
        pupil_id=row.pupil_id,
        kind=row.kind,
        agency_org_id=row.agency_org_id,
        state=row.state,
        route=row.route,
        package_id=row.package_id,
        due_on=row.due_on,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _outcome_note(outcome: Outcome) -> str:
    if outcome.kind == "social_care":
        return f"rag={outcome.rag} decision={outcome.decision}"
    if outcome.kind == "lado":
        return f"outcome={outcome.outcome} dbs={outcome.dbs_referral}"
    return "crime_reference"


def _outcome_text(outcome: Outcome) -> str:
    if outcome.kind == "social_care":
        return f"MASH rating {outcome.rag.upper()}, decision {outcome.decision.replace('_', ' ')}"
    if outcome.kind == "lado":
        meeting = (
            f"strategy meeting {outcome.strategy_meeting_at.date().isoformat()}, "
            if outcome.strategy_meeting_at
            else ""
        )
        dbs = ", referred to the DBS" if outcome.dbs_referral else ""
        return f"{meeting}allegation {outcome.outcome}{dbs}"
    return f"crime reference {outcome.crime_reference}"


async def referral_deadline_sweep(
    referrals: Referrals, alerts: DeadlineAlerts, *, now: datetime | None = None
) -> int:
    """Alert the DSL team of every draft referral due today or overdue; the number raised.

    The coordinator runs this from the node's scheduler. Idempotent per day
    (``Alerts.notify`` is). The alert names the referral and its deadline,
    never the child or the allegation.
    """
    today = (now or referrals.store.now()).astimezone(ENGLAND).date()
    raised = 0
    for r in await referrals.overdue(today):
        assert r.due_on is not None
        late = r.due_on < today
        label = _LABELS[r.kind]
        ok = await alerts.notify(
            r.org_id,
            key=alert_key(r.id),
            level="overdue" if late else "due",
            subject=f"{_cap(label)} {'overdue' if late else 'due today'}",
            message=(
                f"A {label} drafted on {r.created_at.astimezone(ENGLAND).date().isoformat()} "
                f"had to be sent by the end of {r.due_on.isoformat()}"
                + (" and has not been sent." if late else ": send it today.")
                + f" Referral {r.id}."
            ),
            pupil_id=r.pupil_id,
            ref=r.id,
        )
        raised += int(ok)
    return raised
