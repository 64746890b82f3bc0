"""Deadline arithmetic: the KCSIE transfer deadline, working days, retention dates.

Pure functions over a :class:`SchoolCalendar`; the only I/O is reading the
JSON data shipped in ``transfer/data/`` (and whatever bytes the caller passes
to :func:`calendar_from_json`).

The KCSIE rule
--------------
KCSIE asks for the child-protection file to reach the new school "within 5
days for an in-year transfer, or within the first 5 days of the start of a new
term". :func:`transfer_due_date` reads it as follows (``days`` and ``unit``
are configurable; the default is 5 school days):

* **In-year**: the leaving date falls inside a term and before that term's
  last school day (weekends, half-term and other closures inside the term
  count as in-year). The file is due on the ``days``-th counted day *after*
  the leaving date (leaving on Monday, 5 school days: due the next Monday).
* **End of term**: the leaving date is the term's last school day or later
  (a July leaver, or a date in the holidays). The file is due on the
  ``days``-th counted day *of* the next term, its first day being day 1
  (the first 5 school days of the autumn term: due on the 5th).

A *school day* is a Monday-Friday inside a term that is neither a bank
holiday nor a closure (half-term, INSET...). A *calendar day* is any day. A
*working day* (for "one working day" rules such as LADO referrals) is a
Monday-Friday that is not a bank holiday, regardless of terms.

Calendar data
-------------
``bank_holidays.json`` uses the GOV.UK ``/bank-holidays.json`` format, so an
operator can replace it with a fresh download. ``term_dates_england.json`` is
an illustrative English calendar (terms with their half-terms); term dates
vary by local authority and INSET days by school, so an operator supplies its
own file in the same format (see :func:`calendar_from_json`).
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any, Final

from schemas import jsontext
from transfer.errors import ConfigError, InputError

KCSIE_DAYS: Final = 5
BANK_HOLIDAYS_FILE: Final = "bank_holidays.json"
TERM_DATES_FILE: Final = "term_dates_england.json"
DEFAULT_DIVISION: Final = "england-and-wales"
_ONE_DAY = timedelta(days=1)


class DayUnit(StrEnum):
    """How deadline days are counted."""

    SCHOOL = "school"
    CALENDAR = "calendar"


class AlertState(StrEnum):
    """How close a deadline is. Members compare equal to their string values."""

    OK = "ok"
    DUE_SOON = "due_soon"
    OVERDUE = "overdue"


class CalendarError(ConfigError):
    """The term calendar or bank-holiday data is wrong or does not cover a date."""

    slug = "invalid-calendar"
    title = "The school calendar is not valid"


@dataclass(frozen=True, slots=True)
class Term:
    """A school term, first to last day inclusive (holidays inside it are closures)."""

    name: str
    start: date
    end: date

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.start <= day <= self.end


@dataclass(frozen=True, slots=True)
class SchoolCalendar:
    """Terms in date order, days the school is closed within them, and bank holidays."""

    terms: tuple[Term, ...]
    closures: frozenset[date] = frozenset()
    bank_holidays: frozenset[date] = frozenset()
    name: str = "school calendar"

    def __post_init__(self) -> None:
        for term in self.terms:
            if term.end < term.start:
                raise CalendarError(f"Term '{term.name}' ends ({term.end}) before it starts.")
        for before, after in zip(self.terms, self.terms[1:], strict=False):
            if after.start <= before.end:
                raise CalendarError(
                    f"Terms '{before.name}' and '{after.name}' overlap or are out of order."
                )

    # ---------------------------------------------------------------- queries

    def term_of(self, day: date) -> Term | None:
        """The term containing ``day`` (holidays inside a term included), if any."""
        i = bisect.bisect_right([t.start for t in self.terms], day) - 1
        if i >= 0 and day in self.terms[i]:
            return self.terms[i]
        return None

    def next_term(self, day: date) -> Term | None:
        """The first term starting strictly after ``day``."""
        for term in self.terms:
            if term.start > day:
                return term
        return None

    def is_working_day(self, day: date) -> bool:
        return day.weekday() < 5 and day not in self.bank_holidays

    def is_school_day(self, day: date) -> bool:
        return (
            self.is_working_day(day) and day not in self.closures and self.term_of(day) is not None
        )

    def school_days(self, term: Term) -> Iterator[date]:
        day = term.start
        while day <= term.end:
            if self.is_school_day(day):
                yield day
            day += _ONE_DAY

    def last_school_day(self, term: Term) -> date | None:
        day = term.end
        while day >= term.start:
            if self.is_school_day(day):
                return day
            day -= _ONE_DAY
        return None

    def _check_covered(self, day: date) -> None:
        if not self.terms or day > self.terms[-1].end:
            last = self.terms[-1].end.isoformat() if self.terms else "nothing"
            raise CalendarError(
                f"The term dates in '{self.name}' run out ({last}) before {day.isoformat()}: "
                "add the next year's term dates."
            )

    def nth_school_day_after(self, start: date, n: int) -> date:
        """The ``n``-th school day strictly after ``start`` (``n`` >= 0; 0 gives ``start``)."""
        _check_count(n)
        day, remaining = start, n
        while remaining:
            day += _ONE_DAY
            self._check_covered(day)
            if self.is_school_day(day):
                remaining -= 1
        return day


def _check_count(n: int) -> None:
    if n < 0:
        raise InputError(f"A number of days cannot be negative (got {n}).")


def working_days_after(start: date, n: int, calendar: SchoolCalendar) -> date:
    """The ``n``-th working day (Mon-Fri, not a bank holiday) strictly after ``start``.

    ``n`` = 0 returns ``start`` itself. Terms play no part: LADO's "one working
    day" runs through school holidays.
    """
    _check_count(n)
    day, remaining = start, n
    while remaining:
        day += _ONE_DAY
        if calendar.is_working_day(day):
            remaining -= 1
    return day


def transfer_due_date(
    leaving_date: date,
    calendar: SchoolCalendar,
    unit: DayUnit = DayUnit.SCHOOL,
    days: int = KCSIE_DAYS,
) -> date:
    """When a leaver's child-protection file is due at the new school (see module docs)."""
    if days < 1:
        raise InputError(f"The transfer deadline must be at least 1 day (got {days}).")
    unit = DayUnit(unit)
    term = calendar.term_of(leaving_date)
    if term is not None:
        last = calendar.last_school_day(term)
        if last is not None and leaving_date < last:
            if unit is DayUnit.CALENDAR:
                return leaving_date + timedelta(days=days)
            return calendar.nth_school_day_after(leaving_date, days)
    new_term = calendar.next_term(leaving_date)
    if new_term is None:
        ends = calendar.terms[-1].end.isoformat() if calendar.terms else "nothing"
        raise CalendarError(
            f"The term dates in '{calendar.name}' run out ({ends}): no term starts after "
            f"{leaving_date.isoformat()}; add the next year's term dates."
        )
    if unit is DayUnit.CALENDAR:
        return new_term.start + timedelta(days=days - 1)
    # Day 1 is the first school day of the new term.
    return calendar.nth_school_day_after(new_term.start - _ONE_DAY, days)


def alert_state(due: date, today: date, warn_days: int = 2) -> AlertState:
    """``overdue`` after the due date, ``due_soon`` within ``warn_days`` calendar days of it
    (the due date itself included), otherwise ``ok``."""
    if warn_days < 0:
        raise InputError(f"The warning window cannot be negative (got {warn_days}).")
    if today > due:
        return AlertState.OVERDUE
    if (due - today).days <= warn_days:
        return AlertState.DUE_SOON
    return AlertState.OK


def retention_until(dob: date, years: int = 25) -> date:
    """Date of birth plus ``years`` years (IRMS: child-protection files, DOB + 25).

    A 29 February birthday lands on **1 March** in a non-leap year: the later
    of the two candidates, so a record is never reviewed or destroyed before
    the person has actually reached that age (in England a person born on
    29 February comes of age on 1 March in a common year).
    """
    if years < 0:
        raise InputError(f"A retention period cannot be negative (got {years}).")
    try:
        return dob.replace(year=dob.year + years)
    except ValueError:  # 29 February into a common year
        return date(dob.year + years, 3, 1)


# ------------------------------------------------------------------ data loading


def _parse_date(value: object, where: str) -> date:
    if not isinstance(value, str):
        raise CalendarError(f"{where} must be a date written YYYY-MM-DD.")
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise CalendarError(f"{where} '{value[:20]}' is not a date written YYYY-MM-DD.") from None


def _days_between(start: date, end: date) -> Iterable[date]:
    day = start
    while day <= end:
        yield day
        day += _ONE_DAY


def bank_holidays_from_json(data: bytes | str, division: str = DEFAULT_DIVISION) -> frozenset[date]:
    """Bank holidays from a document in the GOV.UK ``bank-holidays.json`` format."""
    try:
        doc = jsontext.loads(data)
        events = doc[division]["events"]
    except (ValueError, KeyError, TypeError):
        raise CalendarError(
            f"The bank-holiday data has no '{division}' events in the GOV.UK format."
        ) from None
    if not isinstance(events, list):
        raise CalendarError(f"The bank-holiday data's '{division}' events are not a list.")
    return frozenset(
        _parse_date(e.get("date") if isinstance(e, dict) else None, f"bank holiday #{i + 1}")
        for i, e in enumerate(events)
    )


@cache
def default_bank_holidays(division: str = DEFAULT_DIVISION) -> frozenset[date]:
    """The bank holidays shipped with Handover (England and Wales, 2025-2028)."""
    raw = resources.files("transfer.data").joinpath(BANK_HOLIDAYS_FILE).read_bytes()
    return bank_holidays_from_json(raw, division)


def calendar_from_json(data: bytes | str) -> SchoolCalendar:
    """A :class:`SchoolCalendar` from a JSON document::

        {"name": "Bristol 2025-26",
         "bank_holidays": "england-and-wales",       # shipped data; or a list of dates
         "closures": ["2025-09-01", "2025-09-02"],    # INSET and other closed days
         "terms": [{"name": "Autumn 2025", "start": "2025-09-03", "end": "2025-12-19",
                    "breaks": [{"name": "half term", "start": "2025-10-27",
                                "end": "2025-10-31"}]}]}

    Every mistake is refused with :class:`CalendarError` naming the entry.
    """
    try:
        doc: Any = jsontext.loads(data)
    except json.JSONDecodeError as exc:
        raise CalendarError(f"The term calendar is not valid JSON ({exc.msg}).") from None
    except UnicodeDecodeError:
        raise CalendarError("The term calendar is not UTF-8 text.") from None
    except jsontext.JSONRefused as exc:
        raise CalendarError(f"The term calendar is not acceptable JSON ({exc}).") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("terms"), list):
        raise CalendarError("The term calendar must be an object with a list of 'terms'.")
    name = str(doc.get("name") or "school calendar")
    terms: list[Term] = []
    closures: set[date] = set()
    for i, raw in enumerate(doc["terms"]):
        where = f"terms[{i}]"
        if not isinstance(raw, dict):
            raise CalendarError(f"{where} must be an object with name, start and end.")
        term = Term(
            name=str(raw.get("name") or f"term {i + 1}"),
            start=_parse_date(raw.get("start"), f"{where}.start"),
            end=_parse_date(raw.get("end"), f"{where}.end"),
        )
        for j, brk in enumerate(raw.get("breaks") or []):
            bwhere = f"{where}.breaks[{j}]"
            if not isinstance(brk, dict):
                raise CalendarError(f"{bwhere} must be an object with start and end.")
            bstart = _parse_date(brk.get("start"), f"{bwhere}.start")
            bend = _parse_date(brk.get("end"), f"{bwhere}.end")
            if bend < bstart or bstart < term.start or bend > term.end:
                raise CalendarError(f"{bwhere} must lie inside its term, start before end.")
            closures.update(_days_between(bstart, bend))
        terms.append(term)
    for i, value in enumerate(doc.get("closures") or []):
        closures.add(_parse_date(value, f"closures[{i}]"))
    holidays_spec = doc.get("bank_holidays", DEFAULT_DIVISION)
    if isinstance(holidays_spec, str):
        try:
            holidays = default_bank_holidays(holidays_spec)
        except CalendarError:
            raise CalendarError(
                f"bank_holidays '{holidays_spec[:40]}' is not a division in the shipped data."
            ) from None
    elif isinstance(holidays_spec, list):
        holidays = frozenset(
            _parse_date(v, f"bank_holidays[{i}]") for i, v in enumerate(holidays_spec)
        )
    else:
        raise CalendarError("bank_holidays must be a division name or a list of dates.")
    return SchoolCalendar(
        terms=tuple(terms), closures=frozenset(closures), bank_holidays=holidays, name=name
    )


@cache
def default_calendar() -> SchoolCalendar:
    """The illustrative English calendar shipped with Handover (2025-26 to 2027-28)."""
    raw = resources.files("transfer.data").joinpath(TERM_DATES_FILE).read_bytes()
    return calendar_from_json(raw)
