"""A chronology as a DSL reads it: in time order, dates in words, who recorded each line.

Pure: takes records and the words for the people and categories they name, returns a
:class:`ReadableFile` (a pydantic model, so the API can hand it over as it is and the CLI,
or later the web app, can print it). Used by the inbox preview of a received file
(:meth:`transfer.exchange.inbox.Inbox.show`).

Times are shown in England's time (Europe/London), dates like "6 December 2026".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import date, datetime
from typing import Final
from zoneinfo import ZoneInfo

from pydantic import AwareDatetime, BaseModel, ConfigDict

from schemas.records import (
    ActionRecord,
    ChronologyEntry,
    ChronologyKind,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    PupilEventRecord,
    TriageRecord,
)
from transfer.store.people import Person

__all__ = [
    "TRIAGE_LABELS",
    "ReadableDocument",
    "ReadableFile",
    "ReadableLine",
    "about_line",
    "category_label",
    "date_in_words",
    "readable_file",
    "size_in_words",
]

ENGLAND: Final = ZoneInfo("Europe/London")
_MONTHS: Final = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)

TRIAGE_LABELS: Final[Mapping[str, str]] = {
    "refer_social_care": "Refer to children's social care",
    "refer_early_help": "Refer for early help",
    "refer_lado": "Refer to the LADO",
    "refer_police": "Refer to the police",
    "monitor": "Monitor",
    "no_referral": "No referral",
    "no_further_action": "No further action",
}
_STATUS: Final[Mapping[str, str]] = {
    "open": "open",
    "under_review": "under review",
    "monitoring": "monitoring",
    "closed": "closed",
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ReadableLine(_Model):
    """One line of the chronology, as words."""

    id: str
    kind: ChronologyKind
    concern_id: str | None = None
    #: When it happened (the instant; ``date`` and ``time`` say it in England's time).
    at: AwareDatetime
    date: str
    time: str
    #: What it is: "Concern: Child protection", "Triage decision: Monitor", "Action"...
    heading: str
    #: The main text: the account, the reason, the action, the outcome, the summary.
    text: str = ""
    #: Further facts, each a short phrase: "Where: Playground", "Due 6 December 2026".
    details: tuple[str, ...] = ()
    #: Who recorded it (decided, created, uploaded): "Sam Patel (DSL)".
    recorded_by: str


class ReadableDocument(_Model):
    name: str
    size: str
    size_bytes: int
    media_type: str | None = None


class ReadableFile(_Model):
    """A chronology and its documents, as a DSL reads them."""

    #: Who it is about: "Amara Okafor, born 3 November 2014, UPN H801200001001".
    about: str
    lines: tuple[ReadableLine, ...]
    documents: tuple[ReadableDocument, ...] = ()


def date_in_words(when: date | datetime) -> str:
    """``6 December 2026`` (a datetime: its date in England)."""
    if isinstance(when, datetime):
        when = when.astimezone(ENGLAND).date()
    return f"{when.day} {_MONTHS[when.month - 1]} {when.year}"


def size_in_words(size: int) -> str:
    """``512 bytes``, ``300 KiB``, ``1.2 MiB``, ``2.0 GiB``."""
    if size < 1024:
        return f"{size} byte{'s' if size != 1 else ''}"
    if size < 1024**2:
        return f"{round(size / 1024)} KiB"
    if size < 1024**3:
        return f"{size / 1024**2:.1f} MiB"
    return f"{size / 1024**3:.1f} GiB"


def category_label(key: str, labels: Mapping[str, str]) -> str:
    """A concern category as people say it (from ``labels``, else from its key)."""
    label = labels.get(key)
    if label:
        return label
    words = key.replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else key


def about_line(forename: str, surname: str, dob: date | None, upn: str | None) -> str:
    born = f"born {date_in_words(dob)}" if dob else "date of birth not given"
    return f"{forename} {surname}, {born}" + (f", UPN {upn}" if upn else "")


def _line(
    entry: ChronologyEntry,
    who: Person,
    categories: Mapping[str, str],
    name_of: Callable[[str], str | None],
) -> ReadableLine:
    r = entry.record
    text = ""
    details: list[str] = []
    if isinstance(r, ConcernRecord):
        heading = f"Concern: {category_label(r.category, categories)}"
        if r.restricted:
            heading += " (restricted category)"
        text = r.account
        if r.location:
            details.append(f"Where: {r.location}")
        if r.people_involved:
            details.append(f"Others involved: {r.people_involved}")
        details += [f"Body map, {m.side}: {m.description}" for m in r.body_map]
        details.append(f"Status: {_STATUS.get(r.status, r.status)}")
    elif isinstance(r, TriageRecord):
        heading = f"Triage decision: {TRIAGE_LABELS.get(r.decision, r.decision)}"
        text = r.reason
    elif isinstance(r, ActionRecord):
        heading = "Action"
        text = r.text
        if r.assignee_id and name_of(r.assignee_id):
            details.append(f"For {name_of(r.assignee_id)}")
        if r.due_on:
            details.append(f"Due {date_in_words(r.due_on)}")
        details.append(f"Done {date_in_words(r.done_at)}" if r.done_at else "Not done yet")
    elif isinstance(r, ContactRecord):
        heading = f"Contact with {r.agency}"
        text = r.outcome
    elif isinstance(r, DocumentRef):
        heading = f"Document: {r.filename}"
        details.append(f"{size_in_words(r.size)}, {r.media_type}")
    else:
        assert isinstance(r, PupilEventRecord)
        heading = r.kind.split(".", 1)[0].replace("_", " ").capitalize()
        text = r.summary
    if entry.provenance is not None:
        prov = entry.provenance
        details.append(f"Received from {prov.source_org_name} on {date_in_words(prov.received_at)}")
        if prov.amends_received_at is not None:
            details.append(
                "A changed version of the record received on "
                f"{date_in_words(prov.amends_received_at)} (both are kept)"
            )
        if prov.superseded:
            details.append("A changed version of this record was received later (both are kept)")
    local = entry.occurred_at.astimezone(ENGLAND)
    return ReadableLine(
        id=entry.id,
        kind=entry.kind,
        concern_id=entry.concern_id,
        at=entry.occurred_at,
        date=date_in_words(local),
        time=f"{local:%H:%M}",
        heading=heading,
        text=text,
        details=tuple(details),
        recorded_by=who.describe(),
    )


def readable_file(
    *,
    about: str,
    chronology: Sequence[ChronologyEntry],
    who: Callable[[ChronologyEntry], Person],
    categories: Mapping[str, str],
    documents: Sequence[ReadableDocument] = (),
    name_of: Callable[[str], str | None] = lambda _id: None,
) -> ReadableFile:
    """The chronology in time order (when each thing happened, then when recorded), each
    line in words; ``who`` says who recorded a line, ``name_of`` names a person by id."""
    ordered = sorted(chronology, key=lambda e: (e.occurred_at, e.recorded_at, e.id))
    return ReadableFile(
        about=about,
        lines=tuple(_line(e, who(e), categories, name_of) for e in ordered),
        documents=tuple(documents),
    )
