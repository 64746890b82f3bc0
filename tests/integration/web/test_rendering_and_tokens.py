"""The pure parts of the web app: dates and times as people read them, the static files'
fingerprints, CSRF tokens, owner marks and kept forms."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from transfer.web.rendering import age, clock_time, date_and_time, long_date
from transfer.web.static import StaticFiles, accepted_coding
from transfer.web.tokens import WebKeys

KEYS = WebKeys.from_web_key(bytes(range(32)))
NOW = datetime(2026, 12, 6, 15, 5, tzinfo=UTC)


def test_dates_and_times_in_england() -> None:
    assert long_date(date(2026, 12, 6)) == "6 December 2026"
    assert long_date(datetime(2026, 12, 6, 23, 30, tzinfo=UTC)) == "6 December 2026"
    # British Summer Time: 23:30 UTC on 1 July is 00:30 on 2 July in England.
    assert long_date(datetime(2026, 7, 1, 23, 30, tzinfo=UTC)) == "2 July 2026"
    assert clock_time(NOW) == "3:05pm"
    assert clock_time(datetime(2026, 7, 1, 14, 0, tzinfo=UTC)) == "3pm"
    assert clock_time(datetime(2026, 12, 6, 12, 0, tzinfo=UTC)) == "midday"
    assert clock_time(datetime(2026, 12, 6, 0, 0, tzinfo=UTC)) == "midnight"
    assert clock_time(datetime(2026, 12, 6, 9, 7, tzinfo=UTC)) == "9:07am"
    assert date_and_time(NOW) == "6 December 2026 at 3:05pm"


def test_ages_in_the_largest_whole_unit() -> None:
    assert age(NOW - timedelta(seconds=20), NOW) == "less than a minute"
    assert age(NOW - timedelta(minutes=1), NOW) == "1 minute"
    assert age(NOW - timedelta(hours=5, minutes=3), NOW) == "5 hours"
    assert age(NOW - timedelta(days=2, hours=1), NOW) == "2 days"
    assert age(NOW - timedelta(days=13), NOW) == "13 days"
    assert age(NOW - timedelta(days=15), NOW) == "2 weeks"
    assert age(date(2026, 12, 3), NOW) == "3 days"


def test_static_files_are_fingerprinted_and_modules_refer_to_fingerprints() -> None:
    files = StaticFiles()
    css = files.url("govuk/govuk-frontend.min.css")
    assert css.startswith("/static/") and css.endswith("/govuk/govuk-frontend.min.css")
    script = files.files["handover.js"].body.decode()
    assert f'from "{files.url("govuk/govuk-frontend.min.js")}"' in script
    assert "@static(" not in script
    # No url() to a file we do not ship, no GOV.UK font or crown.
    text = files.files["govuk/govuk-frontend.min.css"].body.decode()
    assert "url(" not in text and "GDS Transport" not in text and "@font-face" not in text
    assert "MIT License" in files.files["govuk/LICENSE.txt"].body.decode()
    assert accepted_coding("gzip, deflate, br") == "br"
    assert accepted_coding("gzip, deflate") == "gzip"
    assert accepted_coding("identity") is None


def test_csrf_tokens_are_per_session_and_checked_in_constant_time() -> None:
    a, b = KEYS.csrf_token("hos_session_a"), KEYS.csrf_token("hos_session_b")
    assert a != b and len(a) == 64
    assert KEYS.csrf_valid("hos_session_a", a)
    assert not KEYS.csrf_valid("hos_session_a", b)
    assert not KEYS.csrf_valid("hos_session_a", "")
    assert not KEYS.csrf_valid("", a)
    other = WebKeys.from_web_key(bytes(32))
    assert not other.csrf_valid("hos_session_a", a)


def test_kept_forms_open_for_their_owner_until_they_expire() -> None:
    mark = KEYS.owner_mark("hos_token", "staff-1")
    assert KEYS.owner_of("hos_token", mark) == "staff-1"
    assert KEYS.owner_of("hos_other", mark) is None
    assert KEYS.owner_of("hos_token", mark[:-2] + "AA") is None
    sealed = KEYS.keep_form(
        path="/account/tokens/new",
        fields=[("name", "Nightly"), ("scopes", "a"), ("scopes", "b")],
        owner="staff-1",
        now=NOW,
        minutes=60,
    )
    assert "Nightly" not in sealed
    kept = KEYS.open_kept(sealed, NOW + timedelta(minutes=59))
    assert kept is not None and kept.owner == "staff-1"
    assert kept.value("name") == "Nightly" and kept.values("scopes") == ["a", "b"]
    assert KEYS.open_kept(sealed, NOW + timedelta(minutes=60)) is None
    assert KEYS.open_kept(sealed[:-3] + "abc", NOW) is None
    assert WebKeys.from_web_key(bytes(32)).open_kept(sealed, NOW) is None
