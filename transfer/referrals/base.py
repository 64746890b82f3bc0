"""What the referral service's parts share: the store and keys it works over, the
referral's row, its sealed fields and history, auditing, and reading referrals back.

:class:`ReferralsBase` holds the plumbing; :mod:`transfer.referrals.drafts`,
:mod:`transfer.referrals.lifecycle` and :mod:`transfer.referrals.deadlines` add the
steps, and :class:`transfer.referrals.service.Referrals` puts them together.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Final, Literal, Protocol

from pydantic import TypeAdapter
from sqlalchemy import delete, func, select
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from keys.keyfiles import KeyFiles
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
from transfer.deadlines import SchoolCalendar, default_calendar
from transfer.errors import ConflictError, InputError, NotFoundError
from transfer.referrals.consent import require_draft
from transfer.referrals.package import ReferralContent, referral_entries
from transfer.referrals.tables import Referral, ReferralEvent
from transfer.store import people
from transfer.store.keyring import KeyRing, open_field, sealed_field
from transfer.store.permissions import Actor, PermissionDenied
from transfer.store.service import Store
from transfer.store.tables import SealedField

Form = MashReferral | LadoReferral | PoliceReferral
Outcome = Any  # MashOutcome | LadoOutcome | PoliceOutcome (a discriminated union)
Route = Literal["node", "portal", "offline"]

TABLE: Final = "referrals"
_FORM: TypeAdapter[Form] = TypeAdapter(ReferralForm)
_OUTCOME: TypeAdapter[Any] = TypeAdapter(ReferralOutcome)
SELECTION = TypeAdapter(tuple[SelectedItem, ...])
REDACTIONS = TypeAdapter(tuple[RedactionRecord, ...])
LABELS: Final = {
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


def new_id() -> str:
    return str(uuid.uuid4())


def check_line(value: str, what: str, limit: int) -> str:
    value = value.strip()
    if not value or len(value) > limit or not value.isprintable():
        raise InputError(f"{what} must be 1 to {limit} printable characters on one line")
    return value


def cap(text: str) -> str:
    return text[:1].upper() + text[1:]


class ReferralsBase:
    """The referrals of the organisations on one node: plumbing and reading."""

    def __init__(
        self,
        store: Store,
        keys: KeyFiles,
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
                id=new_id(),
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
            **summary_of(row).model_dump(),
            form=_FORM.validate_json(fields["form"]),
            selection=SELECTION.validate_json(fields.get("selection", "[]")),
            redactions=REDACTIONS.validate_json(fields.get("redactions", "[]")),
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
            return [summary_of(r) for r in rows]

    async def find_by_package(self, package_id: str) -> ReferralSummary | None:
        """The referral sealed into ``package_id`` (for receipts), if any."""
        async with self.store.sessions() as s:
            row = (
                await s.scalars(select(Referral).where(Referral.package_id == package_id))
            ).one_or_none()
            return summary_of(row) if row is not None else None


def summary_of(row: Referral) -> ReferralSummary:
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
