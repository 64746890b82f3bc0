"""The KCSIE deadline sweep: alert a DSL team before and after a leaver's file is due.

For every pupil on this node with a leaving date and a known destination (not
"unknown"), not erased, and who left less than :data:`HISTORY_DAYS` ago, the
due date is :func:`transfer.deadlines.transfer_due_date` (``transfer.deadline_days``
school or calendar days, from leaving or from the start of the next term).
Then, by the day in England:

* ``upcoming``: within :data:`WARN_DAYS` days before the due date (each day);
* ``due``: on the due date;
* ``overdue``: every day after it,

until the sending organisation's outbox holds an **accepted** receipt for the
pupil's latest leaver's file; then the alert is resolved. Raising goes
through :meth:`transfer.alerts.Alerts.notify`, idempotent per key, level and
day, so the sweep can run as often as wanted, in several processes.

The calendar: ``<data dir>/calendars/<org id>.json`` if present, else
``<data dir>/calendar.json``, else the shipped English calendar; a
``<data dir>/bank-holidays.json`` in GOV.UK format replaces the shipped bank
holidays (see ``docs/deadlines.md``). Files are read at every run, so an
operator can replace them without restarting the node.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Final, Protocol

import sqlalchemy as sa

from schemas.manifest import PackageKind
from transfer.alerts import AlertLevel, Alerts
from transfer.config import TransferSection
from transfer.deadlines import (
    DEFAULT_DIVISION,
    CalendarError,
    DayUnit,
    SchoolCalendar,
    bank_holidays_from_json,
    calendar_from_json,
    default_calendar,
    transfer_due_date,
)
from transfer.store.service import Store
from transfer.store.tables import Pupil
from transfer.wording import plural

log = logging.getLogger("handover.deadlines")

#: Days before the due date on which an "upcoming" alert is raised.
WARN_DAYS: Final = 2
#: Leavers whose leaving date is older than this are no longer chased.
HISTORY_DAYS: Final = 400
CALENDAR_FILE: Final = "calendar.json"
CALENDARS_DIR: Final = "calendars"
BANK_HOLIDAYS_FILE: Final = "bank-holidays.json"


class _HasState(Protocol):
    @property
    def state(self) -> str: ...


class LeaverFiles(Protocol):
    """The part of the outbox the sweep needs (``transfer.exchange.outbox.Outbox``)."""

    async def latest_for_pupil(
        self, org_id: str, pupil_id: str, kind: PackageKind = "leaver_file"
    ) -> _HasState | None: ...


def deadline_key(pupil_id: str, leaving_date: date) -> str:
    """The alert key of one pupil's leaving (a new leaving date starts a new deadline)."""
    return f"{deadline_prefix(pupil_id)}{leaving_date.isoformat()}"


#: What the key of every leaver's-file deadline alert starts with.
DEADLINE_PREFIX: Final = "transfer-deadline:"


def deadline_prefix(pupil_id: str) -> str:
    """What the keys of every deadline alert of one pupil start with."""
    return f"{DEADLINE_PREFIX}{pupil_id}:"


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise CalendarError(f"cannot read {path}: {exc.strerror}") from None


class Calendars:
    """The school calendar of each organisation, from the data directory (see module docs)."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._cache: dict[str, SchoolCalendar] = {}

    def _holidays_override(self) -> bytes | None:
        path = self.data_dir / BANK_HOLIDAYS_FILE
        return _read(path) if path.exists() else None

    def for_org(self, org_id: str) -> SchoolCalendar:
        if org_id in self._cache:
            return self._cache[org_id]
        own = self.data_dir / CALENDARS_DIR / f"{org_id}.json"
        shared = self.data_dir / CALENDAR_FILE
        path = own if own.is_file() else shared if shared.is_file() else None
        holidays = self._holidays_override()
        if path is None:
            calendar = default_calendar()
            division = DEFAULT_DIVISION
        else:
            raw = _read(path)
            try:
                calendar = calendar_from_json(raw)
            except CalendarError as err:
                raise CalendarError(f"{path}: {err.message}") from None
            spec = json.loads(raw).get("bank_holidays", DEFAULT_DIVISION)
            division = spec if isinstance(spec, str) else ""
        if holidays is not None and division:
            try:
                days = bank_holidays_from_json(holidays, division)
            except CalendarError as err:
                raise CalendarError(
                    f"{self.data_dir / BANK_HOLIDAYS_FILE}: {err.message}"
                ) from None
            calendar = dataclasses.replace(calendar, bank_holidays=days)
        self._cache[org_id] = calendar
        return calendar


def level_for(due: date, today: date, warn_days: int = WARN_DAYS) -> AlertLevel | None:
    """Which alert (if any) a deadline ``due`` calls for on ``today``."""
    if today > due:
        return "overdue"
    if today == due:
        return "due"
    if (due - today).days <= warn_days:
        return "upcoming"
    return None


_STATE_LINES: Final = {
    None: "It has not been sent yet.",
    "draft": "It has not been sent yet.",
    "queued": "It is queued and waiting to be delivered.",
    "delivered": "It was delivered; the receiving DSL has not accepted it yet.",
    "viewed": "The receiving DSL has opened it but not accepted it yet.",
    "rejected": "The receiving school rejected it: see the outbox for the reason.",
    "failed": "Its delivery failed: see the outbox, then resend it.",
    "cancelled": "It was cancelled.",
}


def _long(day: date) -> str:
    return f"{day:%A} {day.day} {day:%B %Y}"


def alert_text(
    level: AlertLevel, due: date, leaving: date, state: str | None, days: int, unit: DayUnit
) -> tuple[str, str]:
    """Subject and message of a deadline alert (no names: the app shows which pupil)."""
    headline = {
        "upcoming": f"Leaver's file due on {_long(due)}",
        "due": "Leaver's file due today",
        "overdue": f"Leaver's file overdue since {_long(due)}",
        "info": "Leaver's file",
    }[level]
    rule = (
        f"KCSIE: within {plural(days, unit.value + ' day')} of leaving ({_long(leaving)}) "
        "or of the start of the next term."
    )
    line = _STATE_LINES.get(state, f"Its transfer is {state}.")
    message = (
        f"A pupil's child-protection file must reach the new school by {_long(due)}. {rule} {line}"
    )
    return headline, message


@dataclass(frozen=True)
class DeadlineReport:
    #: Leavers looked at.
    checked: int = 0
    #: New alerts raised (at most one per leaver, level and day).
    raised: int = 0
    #: Leavers whose file has been accepted (their alerts resolved).
    accepted: int = 0
    #: Organisations whose calendar could not give a due date.
    problems: int = 0


class DeadlineSweep:
    """One run checks every leaver on the node (see module docs), or the few just changed."""

    def __init__(
        self,
        store: Store,
        alerts: Alerts,
        outbox: LeaverFiles,
        transfer: TransferSection,
        *,
        data_dir: Path | None = None,
    ) -> None:
        self.store = store
        self.alerts = alerts
        self.outbox = outbox
        self.transfer = transfer
        self.data_dir = data_dir or store.data_dir

    async def _forget_changed(self, pupil_ids: Sequence[str]) -> None:
        """Close the deadline alerts of a leaving date that is no longer the pupil's (changed,
        removed, or the destination is now unknown); the run raises the current one. Two
        queries whatever the number of pupils (a CTF of a whole year group)."""
        async with self.store.sessions() as s:
            rows = (
                await s.execute(
                    sa.select(
                        Pupil.id, Pupil.org_id, Pupil.leaving_date, Pupil.destination_kind
                    ).where(Pupil.id.in_(list(pupil_ids)))
                )
            ).all()
        current: dict[str, str | None] = {}
        orgs: set[str] = set()
        for pupil_id, org_id, leaving, destination in rows:
            orgs.add(org_id)
            current[pupil_id] = (
                deadline_key(pupil_id, leaving)
                if leaving is not None and destination not in (None, "unknown")
                else None
            )
        for org_id in sorted(orgs):
            for key in await self.alerts.open_keys(org_id, DEADLINE_PREFIX):
                pupil_id = key[len(DEADLINE_PREFIX) :].split(":", 1)[0]
                if pupil_id in current and key != current[pupil_id]:
                    await self.alerts.resolve(org_id, key)

    @property
    def unit(self) -> DayUnit:
        return DayUnit.SCHOOL if self.transfer.deadline_unit == "school_days" else DayUnit.CALENDAR

    async def run(
        self, today: date | None = None, *, pupil_ids: Sequence[str] | None = None
    ) -> DeadlineReport:
        """Check every leaver on the node (the scheduler), or only ``pupil_ids`` (as soon as
        their leaving date or destination changed, or their file's receipt came back)."""
        today = today or self.alerts.today()
        calendars = Calendars(self.data_dir)
        query = sa.select(Pupil.id, Pupil.org_id, Pupil.leaving_date).where(
            Pupil.erased_at.is_(None),
            Pupil.leaving_date.is_not(None),
            Pupil.leaving_date >= today - timedelta(days=HISTORY_DAYS),
            Pupil.destination_kind.is_not(None),
            Pupil.destination_kind != "unknown",
        )
        if pupil_ids is not None:
            await self._forget_changed(pupil_ids)
            query = query.where(Pupil.id.in_(list(pupil_ids)))
        async with self.store.sessions() as s:
            rows = (
                await s.execute(query.order_by(Pupil.org_id, Pupil.leaving_date, Pupil.id))
            ).all()
        checked = raised = accepted = problems = 0
        broken: set[str] = set()
        for pupil_id, org_id, leaving in rows:
            if org_id in broken or leaving is None:
                continue
            checked += 1
            key = deadline_key(pupil_id, leaving)
            try:
                calendar = calendars.for_org(org_id)
                due = transfer_due_date(leaving, calendar, self.unit, self.transfer.deadline_days)
            except CalendarError as err:
                problems += 1
                broken.add(org_id)
                log.error("deadline sweep for %s: %s", org_id, err.message)
                await self.alerts.notify(
                    org_id,
                    key="calendar",
                    level="info",
                    subject="The school calendar needs attention",
                    message=(
                        "Handover cannot work out leavers' file deadlines: "
                        f"{err.message[:600]} Ask whoever runs the node to update the "
                        "term dates (see docs/deadlines.md)."
                    ),
                )
                continue
            latest = await self.outbox.latest_for_pupil(org_id, pupil_id, "leaver_file")
            state = latest.state if latest is not None else None
            if state == "accepted":
                await self.alerts.resolve(org_id, key)
                accepted += 1
                continue
            level = level_for(due, today)
            if level is None:
                continue
            subject, message = alert_text(
                level, due, leaving, state, self.transfer.deadline_days, self.unit
            )
            if await self.alerts.notify(
                org_id,
                key=key,
                level=level,
                subject=subject,
                message=message,
                pupil_id=pupil_id,
                ref=due.isoformat(),
            ):
                raised += 1
        if pupil_ids is None:
            await self.alerts.retry_mail()
        report = DeadlineReport(checked, raised, accepted, problems)
        if raised or problems:
            log.info(
                "deadline sweep: %s checked, %s raised, %s",
                plural(checked, "leaver"),
                plural(raised, "alert"),
                plural(problems, "problem"),
            )
        return report
