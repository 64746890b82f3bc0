"""The governors' report as figures, and how each figure is shown: pure, no I/O.

:class:`GovernorsFigures` holds exact counts (what the store's queries return).
:func:`present` turns them into :class:`Section` tables for one audience:

* the **DSL team's own view** (``exact=True``): every count as it is, the page marked
  "not for sharing";
* the **governors' version** (``exact=False``; also every PDF and CSV, which leave the
  DSL team): a count from 1 to 4 is shown as "fewer than 5", so no child can be
  identified; a share whose base or part is so suppressed is not shown; a total whose
  parts include a suppressed count is rounded to the nearest 5 ("about 40"); and the
  concern breakdowns (category, year group, month) that would otherwise add up to the
  exact number each hide their smallest figure too ("not shown"), so the hidden count
  cannot be worked out by subtraction from another breakdown; any other figure made of
  parts (actions due, files sent or received, requests answered) is rounded when one of
  its parts, shown or not, is small. Zero is shown: it identifies nobody.

Periods come from the school calendar (``transfer.deadlines``): each term, and each
school year (autumn to summer).
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Final, Literal
from zoneinfo import ZoneInfo

from transfer.deadlines import SchoolCalendar
from transfer.errors import NotFoundError

#: Counts from 1 to this one are suppressed outside the DSL team.
SMALL: Final = 4
SUPPRESSED: Final = "fewer than 5"
#: A figure of 5 or more hidden so that a suppressed one cannot be worked out from it.
NOT_SHOWN: Final = "not shown"
NOT_FOR_SHARING: Final = "Exact figures for the DSL team: not for sharing"
ENGLAND: Final = ZoneInfo("Europe/London")

PeriodKind = Literal["term", "year"]


# ------------------------------------------------------------------ periods


@dataclass(frozen=True, slots=True)
class Period:
    """A term or a school year: first to last day inclusive, days in England."""

    key: str
    label: str
    kind: PeriodKind
    start: date
    end: date

    @property
    def lower(self) -> datetime:
        """The first instant of the period (midnight in England, as an aware datetime)."""
        return datetime.combine(self.start, time(), ENGLAND)

    @property
    def upper(self) -> datetime:
        """The first instant after the period."""
        return datetime.combine(self.end + timedelta(days=1), time(), ENGLAND)

    def months(self) -> list[tuple[str, datetime, datetime]]:
        """Each calendar month the period touches: its name and its instants (clipped)."""
        out: list[tuple[str, datetime, datetime]] = []
        first = self.start.replace(day=1)
        while first <= self.end:
            following = (first + timedelta(days=32)).replace(day=1)
            lo = max(first, self.start)
            hi = min(following, self.end + timedelta(days=1))
            out.append(
                (
                    first.strftime("%B %Y"),
                    datetime.combine(lo, time(), ENGLAND),
                    datetime.combine(hi, time(), ENGLAND),
                )
            )
            first = following
        return out


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def school_year_of(day: date) -> int:
    """The calendar year a school year starts in (September to August)."""
    return day.year if day.month >= 8 else day.year - 1


def periods(calendar: SchoolCalendar) -> list[Period]:
    """Every term of the calendar and every school year it covers, most recent first
    (terms of a year after their year)."""
    years: dict[int, list[Period]] = {}
    for term in calendar.terms:
        p = Period(_slug(term.name), term.name, "term", term.start, term.end)
        years.setdefault(school_year_of(term.start), []).append(p)
    out: list[Period] = []
    for year in sorted(years, reverse=True):
        terms = years[year]
        out.append(
            Period(
                f"year-{year}",
                f"School year {year} to {year + 1}",
                "year",
                terms[0].start,
                terms[-1].end,
            )
        )
        out.extend(reversed(terms))
    return out


def find_period(calendar: SchoolCalendar, key: str) -> Period:
    for p in periods(calendar):
        if p.key == key:
            return p
    raise NotFoundError("there is no such term or school year in the school calendar")


def current_period(calendar: SchoolCalendar, today: date) -> Period | None:
    """The term ``today`` is in, else the last term before it (else none)."""
    terms = [p for p in periods(calendar) if p.kind == "term"]
    for p in terms:  # most recent first
        if p.start <= today:
            return p
    return None


# ------------------------------------------------------------------ figures


@dataclass(frozen=True, slots=True)
class Count:
    """One labelled count (a bar of a chart, a row of a table)."""

    label: str
    value: int


@dataclass(frozen=True, slots=True)
class ActionFigures:
    """Actions due in the period (those with a due date)."""

    due: int = 0
    on_time: int = 0
    late: int = 0
    overdue: int = 0
    not_yet_due: int = 0


@dataclass(frozen=True, slots=True)
class LeaverFigures:
    """Leavers' child-protection files sent (queued) in the period, and those received."""

    sent: int = 0
    #: Reached the new school (its first receipt) by the KCSIE due date.
    in_time: int = 0
    late: int = 0
    #: Not delivered yet, and the due date has passed.
    overdue: int = 0
    #: Not delivered yet, still in time.
    waiting: int = 0
    #: No leaving date, or the calendar does not reach the due date.
    unknown: int = 0
    received: int = 0
    accepted: int = 0


@dataclass(frozen=True, slots=True)
class RequestFigures:
    """Transfer requests: other schools asking us for a file, and ours to them."""

    received: int = 0
    answered: int = 0
    authorised: int = 0
    declined: int = 0
    made: int = 0
    made_answered: int = 0


@dataclass(frozen=True, slots=True)
class GovernorsFigures:
    organisation: str
    period: Period
    concerns: int
    by_category: tuple[Count, ...]
    by_year_group: tuple[Count, ...]
    by_month: tuple[Count, ...]
    outcomes: tuple[Count, ...]
    referrals: tuple[Count, ...]
    actions: ActionFigures
    leavers: LeaverFigures
    requests: RequestFigures
    #: The KCSIE rule used, in words ("5 school days").
    deadline_rule: str = "5 school days"


# ------------------------------------------------------------------ presenting


@dataclass(frozen=True, slots=True)
class Cell:
    label: str
    #: The exact figure (for the chart's length when shown); None for a share.
    value: int | None
    shown: str
    suppressed: bool = False


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    cells: tuple[Cell, ...]
    #: What the figures count, in a sentence.
    note: str = ""
    total: Cell | None = None
    #: Drawn as a bar chart beside its table.
    chart: bool = False
    #: The column heading of the figures.
    column: str = "Number"


@dataclass(frozen=True, slots=True)
class PresentedReport:
    title: str
    organisation: str
    period: Period
    exact: bool
    sections: tuple[Section, ...]
    notes: tuple[str, ...] = field(default=())

    def section(self, key: str) -> Section:
        return next(s for s in self.sections if s.key == key)


def small(value: int) -> bool:
    return 0 < value <= SMALL


def shown(value: int, exact: bool) -> Cell:
    """A count as shown: exact in the DSL's view; 1-4 as "fewer than 5" otherwise."""
    if not exact and small(value):
        return Cell("", value, SUPPRESSED, suppressed=True)
    return Cell("", value, f"{value:,}")


def _cell(label: str, value: int, exact: bool) -> Cell:
    c = shown(value, exact)
    return Cell(label, c.value, c.shown, c.suppressed)


def rounded_total(label: str, value: int, exact: bool, parts_suppressed: bool) -> Cell:
    """A total: exact, or "fewer than 5", or rounded to the nearest 5 when a part of it
    is suppressed (so that the part cannot be worked out by subtraction)."""
    c = _cell(label, value, exact)
    if exact or c.suppressed or not parts_suppressed:
        return c
    return Cell(label, None, f"about {5 * round(value / 5):,}", suppressed=True)


def share(label: str, part: int, whole: int, exact: bool) -> Cell:
    """``part`` of ``whole`` as a percentage; not shown outside the DSL team when either
    count is suppressed."""
    if whole == 0:
        return Cell(label, None, "none to count")
    if not exact and (small(part) or small(whole) or small(whole - part)):
        return Cell(label, None, "not shown (small numbers)", suppressed=True)
    return Cell(label, None, f"{round(100 * part / whole)}%")


def _breakdown(
    key: str,
    title: str,
    counts: Sequence[Count],
    total: int,
    exact: bool,
    note: str,
    total_label: str,
) -> Section:
    cells = tuple(_cell(c.label, c.value, exact) for c in counts)
    hidden = any(c.suppressed for c in cells)
    return Section(
        key,
        title,
        cells,
        note=note,
        chart=True,
        total=rounded_total(total_label, total, exact, hidden),
    )


def present(f: GovernorsFigures, *, exact: bool) -> PresentedReport:
    """The figures as tables for the DSL team (``exact``) or for governors."""
    e = exact
    cat = _breakdown(
        "categories",
        "Concerns by category",
        f.by_category,
        f.concerns,
        e,
        "Concerns logged at the school that happened in the period.",
        "All concerns",
    )
    year = _breakdown(
        "year-groups",
        "Concerns by year group",
        f.by_year_group,
        sum(c.value for c in f.by_year_group),
        e,
        "By each pupil's year group now; a concern about two pupils counts for each of them.",
        "All pupils named in concerns",
    )
    month = _breakdown(
        "months",
        "Concerns by month",
        f.by_month,
        f.concerns,
        e,
        "By the month in which it happened.",
        "All concerns",
    )
    any_hidden = any(c.suppressed for s in (cat, year, month) for c in s.cells)
    if any_hidden:
        # A breakdown with nothing hidden would add up to the exact total and give the
        # hidden count of another away: its smallest figure is hidden too.
        cat, year, month = (_hide_one(s) for s in (cat, year, month))
        year = Section(
            year.key,
            year.title,
            year.cells,
            year.note,
            rounded_total(
                year.total.label if year.total else "",
                sum(c.value for c in f.by_year_group),
                e,
                True,
            ),
            year.chart,
        )
    headline = rounded_total("Concerns logged", f.concerns, e, any_hidden)
    cat = _with_total(cat, headline)
    month = _with_total(month, headline)
    outcomes = Section(
        "outcomes",
        "What the concerns led to",
        tuple(_cell(c.label, c.value, e) for c in f.outcomes),
        note="Concerns logged in the period by the DSL's triage decisions about them "
        "(a concern with two decisions counts under each).",
    )
    referrals = Section(
        "referrals",
        "Referrals sent through Handover",
        tuple(_cell(c.label, c.value, e) for c in f.referrals),
        note="Referrals sent to an agency in the period.",
    )

    def whole(label: str, value: int, parts: Sequence[int]) -> Cell:
        """A figure made of ``parts`` (shown or not): rounded when one of them is small,
        so that it cannot be worked out by subtraction."""
        return rounded_total(label, value, e, any(small(p) for p in parts))

    a = f.actions
    actions = Section(
        "actions",
        "Actions",
        (
            whole(
                "Actions due in the period", a.due, (a.on_time, a.late, a.overdue, a.not_yet_due)
            ),
            _cell("Done on time (by the day they were due)", a.on_time, e),
            _cell("Done late", a.late, e),
            _cell("Not done and overdue", a.overdue, e),
            _cell("Not done, not yet due", a.not_yet_due, e),
            share("Share done on time", a.on_time, a.due, e),
        ),
        note="Actions with a due date in the period; a day ends at midnight UTC.",
    )
    lv = f.leavers
    leavers = Section(
        "leavers",
        "Leavers' child-protection files",
        (
            whole("Files sent", lv.sent, (lv.in_time, lv.late, lv.overdue, lv.waiting, lv.unknown)),
            _cell(
                f"Reached the new school within the KCSIE deadline ({f.deadline_rule})",
                lv.in_time,
                e,
            ),
            _cell("Reached the new school after the deadline", lv.late, e),
            _cell("Not yet delivered, deadline passed", lv.overdue, e),
            _cell("Not yet delivered, still in time", lv.waiting, e),
            _cell("Deadline not known (no leaving date)", lv.unknown, e),
            share("Share that met the KCSIE deadline", lv.in_time, lv.sent, e),
            whole(
                "Files received from other schools",
                lv.received,
                (lv.accepted, lv.received - lv.accepted),
            ),
            _cell("Files received and accepted", lv.accepted, e),
        ),
        note="Files sent in the period; 'reached' is the first signed receipt from the "
        "new school. Files received are those delivered here in the period.",
    )
    r = f.requests
    requests = Section(
        "requests",
        "Transfer requests",
        (
            whole(
                "Other schools asked us for a file",
                r.received,
                (r.answered, r.received - r.answered),
            ),
            whole("Answered", r.answered, (r.authorised, r.declined)),
            _cell("Sent (authorised)", r.authorised, e),
            _cell("Declined", r.declined, e),
            whole(
                "We asked other schools for a file",
                r.made,
                (r.made_answered, r.made - r.made_answered),
            ),
            _cell("Answered by them", r.made_answered, e),
        ),
        note="Requests made in the period.",
    )
    summary = Section("summary", "In brief", (headline,), note="")
    return PresentedReport(
        title="Safeguarding report to governors",
        organisation=f.organisation,
        period=f.period,
        exact=exact,
        sections=(summary, cat, year, month, outcomes, referrals, actions, leavers, requests),
        notes=(NOT_FOR_SHARING,)
        if exact
        else (
            "Counts from 1 to 4 are shown as 'fewer than 5', so that no child can be "
            "identified; where a total includes such a count it is rounded to the nearest 5, "
            "and in a breakdown that would add up to it one more figure is 'not shown'.",
        ),
    )


def _hide_one(section: Section) -> Section:
    """``section`` with its smallest non-zero figure hidden, unless one is hidden already."""
    if any(c.suppressed for c in section.cells):
        return section
    shown_ = [c for c in section.cells if c.value]
    if not shown_:
        return section
    smallest = min(shown_, key=lambda c: c.value or 0)
    cells = tuple(
        Cell(c.label, c.value, NOT_SHOWN, suppressed=True) if c is smallest else c
        for c in section.cells
    )
    return Section(
        section.key,
        section.title,
        cells,
        section.note,
        section.total,
        section.chart,
        section.column,
    )


def _with_total(section: Section, total: Cell) -> Section:
    """The section with the report's headline total (so every view of it agrees), unless
    the section's own parts force rounding and the headline does not."""
    own = section.total
    if own is not None and own.suppressed and not total.suppressed:
        return section
    return Section(
        section.key,
        section.title,
        section.cells,
        section.note,
        Cell(own.label if own else total.label, total.value, total.shown, total.suppressed),
        section.chart,
        section.column,
    )


def _not_for_sharing(report: PresentedReport) -> None:
    if report.exact:
        raise ValueError("exact figures never leave the DSL team: present them suppressed")


# ------------------------------------------------------------------ CSV

#: What a spreadsheet takes for the start of a formula (OWASP's list).
_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r", "|", "%")


def csv_safe(text: str) -> str:
    """A cell a spreadsheet shows as text, never runs (a leading ' before a formula)."""
    return "'" + text if text.startswith(_FORMULA_START) else text


def report_csv(report: PresentedReport) -> bytes:
    """The governors' version as CSV (UTF-8 with a byte-order mark, for Excel): one row
    per figure, "section, item, figure", suppressed exactly as on paper."""
    _not_for_sharing(report)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")
    w.writerow(["section", "item", "figure"])
    w.writerow(["Report", "School", csv_safe(report.organisation)])
    w.writerow(
        [
            "Report",
            "Period",
            csv_safe(
                f"{report.period.label} ({report.period.start.isoformat()} to "
                f"{report.period.end.isoformat()})"
            ),
        ]
    )
    for s in report.sections:
        rows: Iterable[Cell] = (*s.cells, *((s.total,) if s.total else ()))
        for c in rows:
            w.writerow([csv_safe(s.title), csv_safe(c.label), csv_safe(c.shown)])
    for note in report.notes:
        w.writerow(["Note", "", csv_safe(note)])
    return ("\ufeff" + out.getvalue()).encode("utf-8")
