"""What the casework pages (pupil, concern, triage, search) share: records in words, and
dates and times as typed in a form (in England), read into values the services take."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Final

from transfer.errors import InputError, NotFoundError
from transfer.web.rendering import ENGLAND

DECISIONS: Final = {
    "refer_social_care": "Refer to children's social care (MASH)",
    "refer_early_help": "Refer for early help",
    "refer_lado": "Refer to the LADO",
    "refer_police": "Refer to the police",
    "monitor": "Monitor",
    "no_referral": "Decided not to refer",
    "no_further_action": "No further action",
}
KINDS: Final = {
    "concern": "Concern",
    "triage": "Triage decision",
    "action": "Action",
    "contact": "Contact with an agency",
    "document": "Document",
    "event": "Transfer or referral",
}
SIDES: Final = {"front": "Front of the body", "back": "Back of the body"}


def category_label(key: str, labels: dict[str, str]) -> str:
    return labels.get(key, key.replace("_", " ").capitalize())


def person(name: str | None, role: str | None) -> str:
    """``Sam Patel (DSL)``; never an id."""
    if not name:
        return "someone no longer known here"
    return f"{name} ({role})" if role else name


def shorten(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def not_found_for_bad_ids(err: InputError) -> NotFoundError:
    """A malformed UPN or id in a web address is a page that does not exist (a plain 404)."""
    return NotFoundError(f"no such page ({err.slug})")


class BadDate(ValueError):
    """A date or time typed in a form that is not one; the message is for the field."""


def read_date(value: str, what: str) -> date | None:
    """``2026-12-06`` (what a date field sends) or ``6/12/2026``; empty is None."""
    text = value.strip()
    if not text:
        return None
    for parse in (_iso, _day_first):
        found = parse(text)
        if found is not None:
            return found
    raise BadDate(f"{what} must be a real date, for example 6/12/2026")


def _iso(text: str) -> date | None:
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def _day_first(text: str) -> date | None:
    parts = text.replace("-", "/").replace(".", "/").split("/")
    if len(parts) != 3 or not all(p.isdigit() for p in parts):
        return None
    day, month, year = (int(p) for p in parts)
    try:
        return date(year, month, day)
    except ValueError:
        return None


def read_time(value: str, what: str) -> time | None:
    """``14:30``, ``9:05`` or ``9`` (24-hour, what a time field sends); empty is None."""
    text = value.strip().lower().replace(".", ":")
    if not text:
        return None
    hours, _, minutes = text.partition(":")
    if hours.isdigit() and (minutes.isdigit() or not minutes) and len(minutes) in (0, 2):
        h, m = int(hours), int(minutes or 0)
        if 0 <= h < 24 and 0 <= m < 60:
            return time(h, m)
    raise BadDate(f"{what} must be a time, for example 14:30")


def moment(day: date, at: time | None) -> datetime:
    """A day and time typed in England, as an aware UTC datetime."""
    local = datetime.combine(day, at or time(0, 0), tzinfo=ENGLAND)
    return local.astimezone(UTC)


def local_day(value: datetime) -> date:
    return value.astimezone(ENGLAND).date()


@dataclass(frozen=True)
class Values:
    """A form's values as typed: from the POST, from a kept form, or empty."""

    fields: dict[str, str]

    @classmethod
    def of(cls, source: Any, names: tuple[str, ...]) -> Values:
        get = source.value if hasattr(source, "value") else source.get
        return cls({n: str(get(n, "") if not hasattr(source, "value") else get(n)) for n in names})

    def __getattr__(self, name: str) -> str:
        return self.fields.get(name, "")

    def __getitem__(self, name: str) -> str:
        return self.fields.get(name, "")
