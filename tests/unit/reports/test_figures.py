"""The report's pure rules: periods from the school calendar, and what governors see."""

from __future__ import annotations

from datetime import date

import pytest

from transfer.deadlines import default_calendar
from transfer.errors import NotFoundError
from transfer.reports.figures import (
    NOT_SHOWN,
    SUPPRESSED,
    ActionFigures,
    Count,
    GovernorsFigures,
    LeaverFigures,
    RequestFigures,
    find_period,
    periods,
    present,
    rounded_total,
    share,
)


def test_terms_and_school_years_come_from_the_calendar() -> None:
    found = {p.key: p for p in periods(default_calendar())}
    autumn = found["autumn-2026"]
    assert (autumn.kind, autumn.start, autumn.end) == ("term", date(2026, 9, 2), date(2026, 12, 18))
    year = found["year-2026"]
    assert (year.label, year.start, year.end) == (
        "School year 2026 to 2027",
        date(2026, 9, 2),
        date(2027, 7, 21),
    )
    assert [m[0] for m in autumn.months()] == [
        "September 2026",
        "October 2026",
        "November 2026",
        "December 2026",
    ]
    # Months are clipped to the period: September starts on the 2nd, at midnight in England.
    first = autumn.months()[0]
    assert first[1].isoformat() == "2026-09-02T00:00:00+01:00"
    with pytest.raises(NotFoundError):
        find_period(default_calendar(), "spring-1999")


def test_shares_and_totals_never_give_a_small_count_away() -> None:
    assert share("s", 5, 10, exact=False).shown == "50%"
    assert share("s", 4, 20, exact=False).suppressed  # 4 of 20 would be 20%
    assert share("s", 16, 20, exact=False).suppressed  # the other 4 are given away too
    assert share("s", 4, 20, exact=True).shown == "20%"
    assert share("s", 0, 0, exact=False).shown == "none to count"
    assert rounded_total("t", 18, exact=False, parts_suppressed=True).shown == "about 20"
    assert rounded_total("t", 18, exact=False, parts_suppressed=False).shown == "18"
    assert rounded_total("t", 3, exact=False, parts_suppressed=True).shown == SUPPRESSED


def test_the_governors_version_agrees_with_itself() -> None:
    period = find_period(default_calendar(), "autumn-2026")
    f = GovernorsFigures(
        "Harbourside Primary",
        period,
        9,
        (Count("Bullying", 5), Count("Neglect", 4)),
        (Count("Year 3", 9),),
        (Count("September 2026", 9), *(Count(m, 0) for m in ("October", "November", "December"))),
        (),
        (),
        ActionFigures(),
        LeaverFigures(),
        RequestFigures(),
    )
    gov = present(f, exact=False)
    cells = {c.label: c.shown for c in gov.section("categories").cells}
    assert cells == {"Bullying": "5", "Neglect": SUPPRESSED}
    # The category total would give the 4 away: rounded, and so is the headline everywhere.
    assert gov.section("categories").total.shown == "about 10"  # type: ignore[union-attr]
    assert gov.section("summary").cells[0].shown == "about 10"
    assert gov.section("months").total.shown == "about 10"  # type: ignore[union-attr]
    # September's 9 would be the exact total, and 9 - 5 the hidden neglect count: the
    # breakdowns with nothing small in them hide their smallest figure too.
    assert [c.shown for c in gov.section("months").cells] == [NOT_SHOWN, "0", "0", "0"]
    assert [c.shown for c in gov.section("year-groups").cells] == [NOT_SHOWN]
    assert gov.section("year-groups").total.shown == "about 10"  # type: ignore[union-attr]
    own = present(f, exact=True)
    assert own.section("categories").total.shown == "9"  # type: ignore[union-attr]
    assert own.notes[0].endswith("not for sharing")


def test_a_figure_made_of_parts_is_rounded_when_a_part_is_small() -> None:
    period = find_period(default_calendar(), "autumn-2026")
    f = GovernorsFigures(
        "Harbourside Primary",
        period,
        0,
        (),
        (),
        (),
        (),
        (),
        ActionFigures(due=23, on_time=15, late=3, overdue=5, not_yet_due=0),
        LeaverFigures(sent=12, in_time=12, received=9, accepted=7),
        RequestFigures(received=10, answered=10, authorised=7, declined=3, made=6, made_answered=6),
    )
    gov = {c.label: c.shown for s in present(f, exact=False).sections for c in s.cells}
    # 3 done late: hidden, and the 23 due rounded (23 - 15 - 5 would give it away).
    assert gov["Done late"] == SUPPRESSED and gov["Actions due in the period"] == "about 25"
    assert gov["Files sent"] == "12"  # every part 0 or 5+
    # 2 received but not accepted: the 9 received is rounded; 7 accepted is shown.
    assert gov["Files received from other schools"] == "about 10"
    assert gov["Files received and accepted"] == "7"
    # 3 declined: "answered" (7 + 3) is rounded; "asked" is not (10 answered, none not).
    assert gov["Answered"] == "about 10" and gov["Declined"] == SUPPRESSED
    assert gov["Other schools asked us for a file"] == "10"
    assert gov["We asked other schools for a file"] == "6"
    own = {c.label: c.shown for s in present(f, exact=True).sections for c in s.cells}
    assert own["Actions due in the period"] == "23" and own["Done late"] == "3"
