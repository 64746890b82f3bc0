"""Applying redaction marks to the text of selected records. Pure: no I/O.

A mark is either a string (every exact, case-sensitive occurrence in every
redactable text field of every selected record) or a span (``start``/``end``
in characters of one field of one record). Each marked stretch is replaced by
:data:`REDACTED`; overlapping or touching stretches become one. The store's
records are never changed: redaction makes new copies, and those copies are
what the referral package holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

from pydantic import BaseModel

from schemas.records import (
    ActionRecord,
    BodyMapMark,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    TriageRecord,
)
from schemas.referrals import NewRedaction
from transfer.errors import InputError

__all__ = [
    "REDACTABLE_FIELDS",
    "REDACTED",
    "RedactionError",
    "RedactionPlan",
    "redact_record",
    "redact_text",
]

REDACTED: Final = "[redacted]"

#: The free-text fields of each record kind that may hold third-party names.
REDACTABLE_FIELDS: Final[Mapping[str, tuple[str, ...]]] = {
    "concern": ("account", "location", "people_involved"),
    "triage": ("reason",),
    "action": ("text",),
    "contact": ("agency", "outcome"),
    "document": ("filename",),
}

_KIND_OF: Final[Mapping[type[BaseModel], str]] = {
    ConcernRecord: "concern",
    TriageRecord: "triage",
    ActionRecord: "action",
    ContactRecord: "contact",
    DocumentRef: "document",
}

R = TypeVar("R", bound=BaseModel)


class RedactionError(InputError):
    """A redaction mark does not fit the text it is meant for."""

    slug = "invalid-redaction"
    title = "The redaction does not fit the record"


def _merge(intervals: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def _occurrences(text: str, needle: str) -> Iterable[tuple[int, int]]:
    start = text.find(needle)
    while start != -1:
        yield start, start + len(needle)
        start = text.find(needle, start + 1)


def redact_text(
    text: str, *, spans: Sequence[tuple[int, int]] = (), strings: Sequence[str] = ()
) -> str:
    """``text`` with every span and every occurrence of every string replaced by ``[redacted]``.

    A span outside the text is refused with :class:`RedactionError`.
    """
    intervals: list[tuple[int, int]] = []
    for start, end in spans:
        if not 0 <= start < end <= len(text):
            raise RedactionError(
                f"the span {start}-{end} is outside the text (which is {len(text)} characters)"
            )
        intervals.append((start, end))
    for needle in strings:
        if needle:
            intervals.extend(_occurrences(text, needle))
    if not intervals:
        return text
    parts: list[str] = []
    at = 0
    for start, end in _merge(intervals):
        parts.append(text[at:start])
        parts.append(REDACTED)
        at = end
    parts.append(text[at:])
    return "".join(parts)


@dataclass
class RedactionPlan:
    """The marks of one referral, applied record by record; tracks which strings matched."""

    marks: Sequence[NewRedaction]
    _matched: set[str] = field(default_factory=set)

    @property
    def strings(self) -> list[str]:
        return [m.text for m in self.marks if m.text is not None]

    def spans_for(self, kind: str, record_id: str, field_name: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for m in self.marks:
            if (
                m.record is not None
                and m.record.kind == kind
                and m.record.id == record_id
                and m.field == field_name
                and m.start is not None
                and m.end is not None
            ):
                out.append((m.start, m.end))
        return out

    def text(self, kind: str, record_id: str, field_name: str, value: str) -> str:
        strings = [s for s in self.strings if s in value]
        self._matched.update(strings)
        return redact_text(
            value, spans=self.spans_for(kind, record_id, field_name), strings=strings
        )

    def check_marks(self, selected: Iterable[tuple[str, str]]) -> None:
        """Refuse a span mark on a record or field that is not selected or not redactable."""
        chosen = set(selected)
        for m in self.marks:
            if m.record is None:
                continue
            if (m.record.kind, m.record.id) not in chosen:
                raise RedactionError(
                    f"a redaction marks {m.record.kind} {m.record.id}, which is not selected "
                    "to go with this referral"
                )
            if m.field not in REDACTABLE_FIELDS[m.record.kind]:
                allowed = ", ".join(REDACTABLE_FIELDS[m.record.kind])
                raise RedactionError(
                    f"a redaction marks the field {m.field!r} of a {m.record.kind}; "
                    f"the text fields of a {m.record.kind} are: {allowed}"
                )

    def unmatched_strings(self) -> list[str]:
        """The string marks found nowhere in what was redacted so far."""
        return [s for s in self.strings if s not in self._matched]


def redact_record(record: R, plan: RedactionPlan) -> R:
    """A copy of ``record`` with its redactable text fields redacted per ``plan``."""
    kind = _KIND_OF.get(type(record))
    if kind is None:
        raise TypeError(f"cannot redact a {type(record).__name__}")
    record_id = str(getattr(record, "id"))  # noqa: B009 - every record kind has an id
    changes: dict[str, object] = {}
    for name in REDACTABLE_FIELDS[kind]:
        value = getattr(record, name)
        redacted = plan.text(kind, record_id, name, value)
        if redacted != value:
            changes[name] = redacted
    if isinstance(record, ConcernRecord) and record.body_map:
        marks: list[BodyMapMark] = []
        for mark in record.body_map:
            text = plan.text(kind, record_id, f"body_map.{mark.id}", mark.description)
            marks.append(mark.model_copy(update={"description": text}))
        changes["body_map"] = tuple(marks)
    if not changes:
        return record
    return record.model_copy(update=changes)
