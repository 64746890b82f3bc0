from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from transfer.deadlines import (
    AlertState,
    CalendarError,
    DayUnit,
    SchoolCalendar,
    Term,
    alert_state,
    bank_holidays_from_json,
    calendar_from_json,
    default_bank_holidays,
    default_calendar,
    retention_until,
    transfer_due_date,
    working_days_after,
)
from transfer.errors import ConfigError, InputError

D = date.fromisoformat


@pytest.fixture
def cal() -> SchoolCalendar:
    return default_calendar()


# ------------------------------------------------------------ KCSIE, school days


@pytest.mark.parametrize(
    ("leaving", "due", "why"),
    [
        ("2026-03-04", "2026-03-11", "in-year, Wednesday: weekend skipped"),
        ("2026-03-07", "2026-03-13", "in-year, left on a Saturday"),
        ("2026-04-29", "2026-05-07", "in-year across the Early May bank holiday"),
        ("2026-10-22", "2026-11-05", "in-year across half-term"),
        ("2026-10-27", "2026-11-06", "left during half-term: still in-year"),
        ("2026-02-13", "2026-02-27", "last day before spring half-term"),
        ("2026-07-22", "2026-09-08", "July leaver: first 5 days of the autumn term"),
        ("2026-08-10", "2026-09-08", "left in the summer holiday"),
        ("2026-12-18", "2027-01-08", "last day of autumn term"),
        ("2026-04-01", "2026-04-17", "left in the Easter holiday"),
        ("2027-12-17", "2028-01-10", "new term starts after a substitute bank holiday"),
        ("2025-08-01", "2025-09-09", "before the first term in the data"),
    ],
)
def test_school_day_deadline(cal: SchoolCalendar, leaving: str, due: str, why: str) -> None:
    assert transfer_due_date(D(leaving), cal) == D(due), why


def test_due_date_is_always_a_school_day(cal: SchoolCalendar) -> None:
    day = D("2025-09-01")
    while day < D("2028-06-30"):
        due = transfer_due_date(day, cal)
        assert cal.is_school_day(due), day
        assert due > day
        day += timedelta(days=1)


def test_configurable_count(cal: SchoolCalendar) -> None:
    assert transfer_due_date(D("2026-07-22"), cal, days=1) == D("2026-09-02")
    assert transfer_due_date(D("2026-03-04"), cal, days=1) == D("2026-03-05")
    assert transfer_due_date(D("2026-03-04"), cal, days=10) == D("2026-03-18")
    with pytest.raises(InputError):
        transfer_due_date(D("2026-03-04"), cal, days=0)


def test_calendar_days(cal: SchoolCalendar) -> None:
    cd = DayUnit.CALENDAR
    assert transfer_due_date(D("2026-03-04"), cal, cd) == D("2026-03-09")
    # Weekends and bank holidays count as days.
    assert transfer_due_date(D("2026-04-29"), cal, cd) == D("2026-05-04")
    # End of term: the first 5 days of the new term are 2-6 September.
    assert transfer_due_date(D("2026-07-22"), cal, cd) == D("2026-09-06")
    assert transfer_due_date(D("2026-07-22"), cal, "calendar") == D("2026-09-06")  # type: ignore[arg-type]


def test_last_school_day_not_term_end() -> None:
    # The term's nominal last day is an INSET day: Thursday is the last school day.
    cal = SchoolCalendar(
        terms=(
            Term("T1", D("2026-03-02"), D("2026-03-27")),
            Term("T2", D("2026-04-13"), D("2026-07-22")),
        ),
        closures=frozenset({D("2026-03-27")}),
    )
    assert transfer_due_date(D("2026-03-26"), cal) == D("2026-04-17")  # end-of-term rule
    # In-year: day 1 is Thursday 26 March, then 13-16 April.
    assert transfer_due_date(D("2026-03-25"), cal) == D("2026-04-16")
    assert not cal.is_school_day(D("2026-03-27"))


def test_runs_out_of_term_dates(cal: SchoolCalendar) -> None:
    with pytest.raises(CalendarError, match="run out"):
        transfer_due_date(D("2028-07-21"), cal)
    with pytest.raises(CalendarError, match="run out"):
        transfer_due_date(D("2028-07-18"), cal)
    assert isinstance(CalendarError("x"), ConfigError)


# ------------------------------------------------------------------ working days


@pytest.mark.parametrize(
    ("start", "n", "expected"),
    [
        ("2026-03-06", 1, "2026-03-09"),  # Friday -> Monday
        ("2026-04-02", 1, "2026-04-07"),  # over Good Friday, weekend, Easter Monday
        ("2026-08-10", 1, "2026-08-11"),  # school holidays still have working days
        ("2026-12-24", 1, "2026-12-29"),  # Christmas Day, weekend, substitute Boxing Day
        ("2026-03-04", 3, "2026-03-09"),
        ("2026-03-07", 0, "2026-03-07"),
    ],
)
def test_working_days_after(cal: SchoolCalendar, start: str, n: int, expected: str) -> None:
    assert working_days_after(D(start), n, cal) == D(expected)


def test_working_days_negative(cal: SchoolCalendar) -> None:
    with pytest.raises(InputError):
        working_days_after(D("2026-03-04"), -1, cal)


# -------------------------------------------------------------------- alerts


@pytest.mark.parametrize(
    ("today", "warn", "state"),
    [
        ("2026-03-08", 2, AlertState.OK),
        ("2026-03-09", 2, AlertState.DUE_SOON),
        ("2026-03-11", 2, AlertState.DUE_SOON),
        ("2026-03-12", 2, AlertState.OVERDUE),
        ("2026-05-01", 2, AlertState.OVERDUE),
        ("2026-03-10", 0, AlertState.OK),
        ("2026-03-11", 0, AlertState.DUE_SOON),
        ("2026-03-01", 10, AlertState.DUE_SOON),
    ],
)
def test_alert_state(today: str, warn: int, state: AlertState) -> None:
    assert alert_state(D("2026-03-11"), D(today), warn_days=warn) is state


def test_alert_state_values_are_the_documented_strings() -> None:
    assert alert_state(D("2026-03-11"), D("2026-01-01")) == "ok"
    assert alert_state(D("2026-03-11"), D("2026-03-11")) == "due_soon"
    assert alert_state(D("2026-03-11"), D("2026-03-12")) == "overdue"


# ------------------------------------------------------------------- retention


def test_retention_until() -> None:
    assert retention_until(D("2014-11-03")) == D("2039-11-03")
    assert retention_until(D("2014-11-03"), years=6) == D("2020-11-03")
    # 29 February into a common year: 1 March (never earlier than the real anniversary).
    assert retention_until(D("2016-02-29")) == D("2041-03-01")
    assert retention_until(D("2016-02-29"), years=24) == D("2040-02-29")
    with pytest.raises(InputError):
        retention_until(D("2016-02-29"), years=-1)


# -------------------------------------------------------------- shipped data


def _easter(year: int) -> date:
    """Anonymous Gregorian computus (Meeus/Jones/Butcher)."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    f = (b + 8) // 25
    g = (b - f + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l_ = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l_) // 451
    month = (h + l_ - 7 * m + 114) // 31
    day = (h + l_ - 7 * m + 114) % 31 + 1
    return date(year, month, day)


def _mondays(year: int, month: int) -> list[date]:
    day = date(year, month, 1)
    out = []
    while day.month == month:
        if day.weekday() == 0:
            out.append(day)
        day += timedelta(days=1)
    return out


def _expected_holidays(year: int) -> set[date]:
    def substitute(day: date, taken: set[date]) -> date:
        while day.weekday() >= 5 or day in taken:
            day += timedelta(days=1)
        return day

    out: set[date] = set()
    out.add(substitute(date(year, 1, 1), out))
    easter = _easter(year)
    out |= {easter - timedelta(days=2), easter + timedelta(days=1)}
    out |= {_mondays(year, 5)[0], _mondays(year, 5)[-1], _mondays(year, 8)[-1]}
    out.add(substitute(date(year, 12, 25), out))
    out.add(substitute(date(year, 12, 26), out))
    return out


def test_bank_holidays_match_the_statutory_pattern() -> None:
    shipped = default_bank_holidays()
    for year in (2025, 2026, 2027, 2028):
        assert {d for d in shipped if d.year == year} == _expected_holidays(year), year
    assert D("2026-12-28") in shipped  # Boxing Day 2026 falls on a Saturday


def test_default_calendar_shape(cal: SchoolCalendar) -> None:
    assert len(cal.terms) == 9
    assert cal.bank_holidays == default_bank_holidays()
    for term in cal.terms:
        assert term.start.weekday() < 5 and term.end.weekday() < 5
        assert cal.is_school_day(cal.terms[0].start)
    assert not cal.is_school_day(D("2025-10-29"))  # half-term
    assert not cal.is_school_day(D("2026-05-25"))  # bank holiday in half-term
    assert not cal.is_school_day(D("2026-08-12"))  # summer holiday
    assert cal.is_school_day(D("2026-03-04"))


def test_calendar_from_json_with_own_dates() -> None:
    doc = {
        "name": "Test LA",
        "bank_holidays": ["2026-05-04"],
        "closures": ["2026-04-30"],
        "terms": [
            {
                "name": "Summer",
                "start": "2026-04-13",
                "end": "2026-07-22",
                "breaks": [{"start": "2026-05-25", "end": "2026-05-29"}],
            }
        ],
    }
    cal = calendar_from_json(json.dumps(doc))
    assert cal.name == "Test LA"
    assert cal.bank_holidays == frozenset({D("2026-05-04")})
    # INSET 30 April and the bank holiday are skipped.
    assert transfer_due_date(D("2026-04-28"), cal) == D("2026-05-07")
    assert transfer_due_date(D("2026-05-21"), cal) == D("2026-06-04")


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("not json", "not valid JSON"),
        (b"\xff\xfe{", "UTF-8"),
        ("[]", "list of 'terms'"),
        ('{"terms": [{"start": "2026-01-05", "end": "2026-13-01"}]}', r"terms\[0\]\.end"),
        ('{"terms": [{"start": "2026-01-05"}]}', r"terms\[0\]\.end"),
        ('{"terms": [{"start": "2026-03-05", "end": "2026-01-05"}]}', "before it starts"),
        (
            '{"terms": [{"start": "2026-01-05", "end": "2026-03-27"},'
            ' {"start": "2026-03-20", "end": "2026-07-01"}]}',
            "overlap",
        ),
        (
            '{"terms": [{"start": "2026-01-05", "end": "2026-03-27",'
            ' "breaks": [{"start": "2026-03-23", "end": "2026-04-03"}]}]}',
            r"breaks\[0\]",
        ),
        ('{"terms": [], "closures": ["5 May"]}', r"closures\[0\]"),
        ('{"terms": [], "bank_holidays": "atlantis"}', "atlantis"),
        ('{"terms": [], "bank_holidays": 5}', "bank_holidays"),
    ],
)
def test_calendar_from_json_refuses_mistakes(doc: str | bytes, message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        calendar_from_json(doc)


def test_bank_holidays_from_json_format() -> None:
    doc = {
        "england-and-wales": {"division": "england-and-wales", "events": [{"date": "2026-05-04"}]}
    }
    assert bank_holidays_from_json(json.dumps(doc)) == frozenset({D("2026-05-04")})
    with pytest.raises(CalendarError):
        bank_holidays_from_json(json.dumps(doc), division="scotland")
