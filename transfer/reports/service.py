"""The reports service: the governors' report of one school for a term or a school year,
and a pupil's chronology for printing. Permission-checked here, whatever the face.

Every figure is counted by the database (``GROUP BY``, ``count``, ``sum(CASE ...)``):
nothing loads the concerns themselves, so a report over a local authority's store of a
million concerns reads a few dozen rows (``docs/benchmarks.md``). Only the KCSIE due
dates are worked out here, once per distinct leaving date, because term dates and bank
holidays are data (``transfer.deadlines``), not SQL.

Who may: ``report.read`` (the DSL team and the head teacher). The exact figures (the
DSL's own view) only for the DSL team; everyone else, and every PDF and CSV, gets the
governors' version with small counts suppressed (:mod:`transfer.reports.figures`).
Each report read is audited (``report.governors.read``), as is each refusal.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any, Final

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from schemas.records import ChronologyLine, PupilRecord
from transfer.config import TransferSection
from transfer.deadlines import CalendarError, DayUnit, SchoolCalendar, transfer_due_date
from transfer.exchange.deadlines_sweep import Calendars
from transfer.exchange.tables import (
    IncomingPackage,
    outgoing_packages,
    outgoing_pupils,
    outgoing_receipts,
    transfer_requests,
)
from transfer.referrals.tables import Referral, ReferralEvent
from transfer.reports.figures import (
    ActionFigures,
    Count,
    GovernorsFigures,
    LeaverFigures,
    Period,
    RequestFigures,
    find_period,
    periods,
)
from transfer.store.permissions import Actor, Permission, PermissionDenied, require
from transfer.store.service import Store
from transfer.store.tables import Action, Category, Concern, ConcernPupil, Pupil, Triage
from transfer.wording import plural

#: Triage decisions in the order the report lists them, in plain words.
OUTCOMES: Final = {
    "refer_social_care": "Referral to children's social care (MASH)",
    "refer_early_help": "Early help",
    "refer_lado": "Referral to the LADO",
    "refer_police": "Referral to the police",
    "monitor": "Monitoring",
    "no_referral": "Decided not to refer",
    "no_further_action": "No further action",
}
REFERRAL_KINDS: Final = {
    "social_care": "Children's social care (MASH)",
    "lado": "The LADO",
    "police": "The police",
}
#: Outgoing package states that never left (not counted as sent).
_NOT_SENT: Final = ("draft", "cancelled")
_RECEIVED_STATES: Final = ("delivered", "viewed", "accepted", "rejected")


def _year_order(label: str) -> tuple[int, str]:
    digits = "".join(ch for ch in label if ch.isdigit())
    if label.upper() in ("N", "N1", "N2", "NURSERY"):
        return (-2, label)
    if label.upper() in ("R", "RECEPTION"):
        return (-1, label)
    return (int(digits), label) if digits else (99, label)


def _day_of(column: Any, dialect: str) -> Any:
    """The UTC day of a stored instant, as a date both engines compare with a ``Date``."""
    if dialect == "sqlite":
        return sa.func.date(column)
    return sa.cast(sa.func.timezone(sa.literal_column("'UTC'"), column), sa.Date)


def _named(label: str) -> Any:
    """A GROUP BY on a selected expression's name: the expression itself would be sent
    again with fresh parameters, which PostgreSQL does not take for the same one."""
    return sa.literal_column(label)


def _as_date(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


class Reports:
    """Reports over one node's store (see the module's docs)."""

    def __init__(
        self,
        store: Store,
        transfer: TransferSection | None = None,
        calendars: Calendars | None = None,
    ) -> None:
        self.store = store
        self.transfer = transfer or TransferSection()
        self.calendars = calendars or Calendars(store.data_dir)

    # ------------------------------------------------------------ permissions

    async def _allowed(
        self, actor: Actor, action: str, targets: dict[str, str], *, exact: bool = False
    ) -> None:
        try:
            require(actor, Permission.READ_REPORTS)
            if exact and not actor.in_dsl_team:
                raise PermissionDenied(
                    "only the DSL team sees the exact figures; the governors' version is "
                    "open to you"
                )
        except PermissionDenied:
            await self.store.record_event(action, actor, actor.org_id, targets, "refused")
            raise

    def calendar(self, org_id: str) -> SchoolCalendar:
        return self.calendars.for_org(org_id)

    async def periods(self, actor: Actor) -> list[Period]:
        """The terms and school years a report can cover (from the school's calendar)."""
        await self._allowed(actor, "report.periods", {})
        return periods(self.calendar(actor.org_id))

    # ------------------------------------------------------------ the report

    async def governors_report(
        self, actor: Actor, period_key: str, *, exact: bool = False, copy: str = "page"
    ) -> GovernorsFigures:
        """The governors' report of the actor's school for a term or school year.

        ``exact``: the DSL team's own view (refused to anyone else). The figures are
        exact either way; :func:`transfer.reports.figures.present` suppresses them for
        anything that leaves the DSL team. ``copy`` (``page``, ``pdf``, ``csv``) is what
        the audit entry says was made of it.
        """
        targets = {"period": period_key[:40]}
        await self._allowed(actor, "report.governors.read", targets, exact=exact)
        period = find_period(self.calendar(actor.org_id), period_key)
        org = await self.store.get_organisation(actor.org_id)
        async with self.store.engine.connect() as conn:
            figures = await self._figures(conn, actor.org_id, org.name, period)
        await self.store.record_event(
            "report.governors.read", actor, actor.org_id, targets, exact=exact, copy=copy[:10]
        )
        return figures

    async def _figures(
        self, conn: AsyncConnection, org_id: str, org_name: str, period: Period
    ) -> GovernorsFigures:
        dialect = conn.dialect.name
        lo, hi = period.lower, period.upper
        here = sa.and_(
            Concern.org_id == org_id,
            Concern.provenance_id.is_(None),
            Concern.happened_at >= lo,
            Concern.happened_at < hi,
        )
        # Concerns by category (labels from the school's own categories).
        labels = dict(
            (
                await conn.execute(
                    sa.select(Category.key, Category.label).where(Category.org_id == org_id)
                )
            ).all()
        )
        by_cat = (
            await conn.execute(
                sa.select(Concern.category_key, sa.func.count())
                .where(here)
                .group_by(Concern.category_key)
            )
        ).all()
        categories = sorted(
            (Count(labels.get(k, k.replace("_", " ").capitalize()), n) for k, n in by_cat),
            key=lambda c: (-c.value, c.label),
        )
        total = sum(c.value for c in categories)
        # By month, bucketed by the months' own boundaries (midnight in England).
        months = period.months()
        bucket = sa.case(
            *(
                (sa.and_(Concern.happened_at >= a, Concern.happened_at < b), i)
                for i, (_, a, b) in enumerate(months)
            ),
            else_=-1,
        ).label("month")
        per_month: dict[int, int] = dict(
            (
                await conn.execute(
                    sa.select(bucket, sa.func.count()).where(here).group_by(_named("month"))
                )
            ).all()
        )
        by_month = tuple(Count(name, per_month.get(i, 0)) for i, (name, _, _) in enumerate(months))
        # By year group: each pupil named in a concern (a concern about two, once each).
        year = sa.func.coalesce(Pupil.year_group, sa.literal_column("''")).label("year_group")
        by_year = (
            await conn.execute(
                sa.select(year, sa.func.count(sa.distinct(Concern.id)))
                .select_from(Concern)
                .join(ConcernPupil, ConcernPupil.concern_id == Concern.id)
                .join(Pupil, Pupil.id == ConcernPupil.pupil_id)
                .where(here)
                .group_by(_named("year_group"))
            )
        ).all()
        year_groups = tuple(
            Count(f"Year {g}" if g and g[0].isdigit() else (g or "Year group not known"), n)
            for g, n in sorted(by_year, key=lambda r: _year_order(r[0] or "zz"))
        )
        # What the concerns led to: triage decisions about them.
        decided = dict(
            (
                await conn.execute(
                    sa.select(Triage.decision, sa.func.count(sa.distinct(Triage.concern_id)))
                    .join(Concern, Concern.id == Triage.concern_id)
                    .where(here)
                    .group_by(Triage.decision)
                )
            ).all()
        )
        outcomes = tuple(Count(label, decided.get(key, 0)) for key, label in OUTCOMES.items())
        # Referrals sent in the period (their "sent" step).
        sent_refs = dict(
            (
                await conn.execute(
                    sa.select(Referral.kind, sa.func.count(sa.distinct(Referral.id)))
                    .join(ReferralEvent, ReferralEvent.referral_id == Referral.id)
                    .where(
                        Referral.org_id == org_id,
                        ReferralEvent.action == "sent",
                        ReferralEvent.at >= lo,
                        ReferralEvent.at < hi,
                    )
                    .group_by(Referral.kind)
                )
            ).all()
        )
        referrals = tuple(Count(label, sent_refs.get(k, 0)) for k, label in REFERRAL_KINDS.items())
        return GovernorsFigures(
            organisation=org_name,
            period=period,
            concerns=total,
            by_category=tuple(categories),
            by_year_group=year_groups,
            by_month=by_month,
            outcomes=outcomes,
            referrals=referrals,
            actions=await self._actions(conn, org_id, period, dialect),
            leavers=await self._leavers(conn, org_id, period, dialect),
            requests=await self._requests(conn, org_id, period),
            deadline_rule=self._rule(),
        )

    def _unit(self) -> DayUnit:
        return DayUnit.SCHOOL if self.transfer.deadline_unit == "school_days" else DayUnit.CALENDAR

    def _rule(self) -> str:
        unit = "school day" if self._unit() is DayUnit.SCHOOL else "calendar day"
        return plural(self.transfer.deadline_days, unit)

    async def _actions(
        self, conn: AsyncConnection, org_id: str, period: Period, dialect: str
    ) -> ActionFigures:
        today = self.store.now().date()
        done_day = _day_of(Action.done_at, dialect)
        done = Action.done_at.is_not(None)

        def n(cond: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)

        row = (
            await conn.execute(
                sa.select(
                    sa.func.count(),
                    n(sa.and_(done, done_day <= Action.due_on)),
                    n(sa.and_(done, done_day > Action.due_on)),
                    n(sa.and_(~done, Action.due_on < today)),
                    n(sa.and_(~done, Action.due_on >= today)),
                )
                .join(Concern, Concern.id == Action.concern_id)
                .where(
                    Concern.org_id == org_id,
                    Action.provenance_id.is_(None),
                    Action.due_on >= period.start,
                    Action.due_on <= period.end,
                )
            )
        ).one()
        return ActionFigures(*(int(v) for v in row))

    async def _leavers(
        self, conn: AsyncConnection, org_id: str, period: Period, dialect: str
    ) -> LeaverFigures:
        lo, hi = period.lower, period.upper
        r = outgoing_receipts.c
        # Each file's first receipt, looked up per file (its index), never over the node's
        # every receipt.
        first = (
            sa.select(sa.func.min(r.issued_at))
            .where(r.package_id == outgoing_packages.c.id, r.kind.in_(("delivered", "accepted")))
            .scalar_subquery()
        )
        files = (
            sa.select(Pupil.leaving_date.label("leaving"), _day_of(first, dialect).label("reached"))
            .select_from(outgoing_packages)
            .join(outgoing_pupils, outgoing_pupils.c.package_id == outgoing_packages.c.id)
            .join(Pupil, Pupil.id == outgoing_pupils.c.pupil_id, isouter=True)
            .where(
                outgoing_packages.c.org_id == org_id,
                outgoing_packages.c.kind == "leaver_file",
                outgoing_packages.c.state.not_in(_NOT_SENT),
                outgoing_packages.c.queued_at >= lo,
                outgoing_packages.c.queued_at < hi,
            )
            .subquery()
        )
        rows = (
            await conn.execute(
                sa.select(files.c.leaving, files.c.reached, sa.func.count()).group_by(
                    files.c.leaving, files.c.reached
                )
            )
        ).all()
        calendar = self.calendar(org_id)
        today = self.store.now().date()
        counts = {"sent": 0, "in_time": 0, "late": 0, "overdue": 0, "waiting": 0, "unknown": 0}
        dues: dict[date, date | None] = {}
        for leaving_raw, reached_raw, n in rows:
            leaving, got = _as_date(leaving_raw), _as_date(reached_raw)
            counts["sent"] += n
            due = None
            if leaving is not None:
                if leaving not in dues:
                    try:
                        dues[leaving] = transfer_due_date(
                            leaving, calendar, self._unit(), self.transfer.deadline_days
                        )
                    except CalendarError:
                        dues[leaving] = None
                due = dues[leaving]
            if due is None:
                counts["unknown"] += n
            elif got is not None:
                counts["in_time" if got <= due else "late"] += n
            else:
                counts["overdue" if today > due else "waiting"] += n
        received = (
            await conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.coalesce(
                        sa.func.sum(sa.case((IncomingPackage.state == "accepted", 1), else_=0)), 0
                    ),
                ).where(
                    IncomingPackage.recipient_org_id == org_id,
                    IncomingPackage.package_kind == "leaver_file",
                    IncomingPackage.state.in_(_RECEIVED_STATES),
                    IncomingPackage.delivered_at >= lo,
                    IncomingPackage.delivered_at < hi,
                )
            )
        ).one()
        return LeaverFigures(**counts, received=int(received[0]), accepted=int(received[1]))

    async def _requests(self, conn: AsyncConnection, org_id: str, period: Period) -> RequestFigures:
        t = transfer_requests.c

        def n(cond: Any) -> Any:
            return sa.func.coalesce(sa.func.sum(sa.case((cond, 1), else_=0)), 0)

        answered = t.state.in_(("authorised", "declined"))
        rows = (
            await conn.execute(
                sa.select(
                    t.side,
                    sa.func.count(),
                    n(answered),
                    n(t.state == "authorised"),
                    n(t.state == "declined"),
                )
                .where(
                    t.org_id == org_id, t.created_at >= period.lower, t.created_at < period.upper
                )
                .group_by(t.side)
            )
        ).all()
        by_side = {side: tuple(int(v) for v in rest) for side, *rest in rows}
        got = by_side.get("received", (0, 0, 0, 0))
        made = by_side.get("sent", (0, 0, 0, 0))
        return RequestFigures(
            received=got[0],
            answered=got[1],
            authorised=got[2],
            declined=got[3],
            made=made[0],
            made_answered=made[1],
        )

    # ------------------------------------------------------------ chronology

    async def chronology_for_print(
        self, actor: Actor, pupil_ref: str
    ) -> tuple[PupilRecord, list[ChronologyLine]]:
        """A pupil's whole chronology to print (for a conference or a court): the store
        checks ``chronology.read`` and audits the read; the printing is audited too
        (``store.chronology.print``), so the DPO sees who printed whose file."""
        pupil = await self.store.get_pupil(actor, pupil_ref)
        lines = await self.store.chronology_lines(actor, pupil.id)
        await self.store.record_event(
            "store.chronology.print",
            actor,
            actor.org_id,
            {"pupil": pupil.id},
            entries=len(lines),
        )
        return pupil, lines

    async def names(self, actor: Actor, ids: Sequence[str | None]) -> dict[str, str]:
        """People named in a chronology (action owners), by name and role."""
        from transfer.store.people import role_label

        found = await self.store.people_named(actor, ids)
        out = {}
        for p in found:
            role = role_label(p.role)
            out[p.id] = f"{p.name} ({role})" if role else p.name
        return out


__all__ = ["OUTCOMES", "REFERRAL_KINDS", "Reports"]
