"""A referral as an agency reads it: sections in the form's order, label and value rows.

The pickup page and its PDF are both drawn from one :class:`ReadableReferral`, built
here once, so the two cannot say different things. The order is the form's: the reason
and the risk first, then the child (or, for the LADO, the adult), the family and
household, what is known (the chronology entries the school chose, as redacted), consent,
and the school's contact. Labels and values come from :mod:`transfer.referrals.labels`;
dates read as dates ("4 March 2014"), times in England ("7 September 2026 at 10:15am");
an optional field left empty is left out.

A form this code does not know (another version, or not a form at all) is still shown,
field by field with its keys in words, under a note that says so.

Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.records import (
    ActionRecord,
    ChronologyEntry,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    PersonRecord,
    PupilEventRecord,
    TriageRecord,
)
from schemas.referrals import (
    Consent,
    LadoReferral,
    MashReferral,
    PoliceReferral,
    Referrer,
)
from transfer.printing import PrintDocument, PrintedBy
from transfer.referrals.forms import FormError, parse_form
from transfer.referrals.labels import (
    KIND_TITLES,
    RECORD_WORDS,
    is_hidden,
    label,
    value_words,
    words_of,
)
from transfer.wording import plural

__all__ = [
    "Group",
    "ReadableReferral",
    "Row",
    "Section",
    "date_and_time",
    "long_date",
    "readable_referral",
    "referral_pdf",
]

ENGLAND: Final = ZoneInfo("Europe/London")
_CHRONOLOGY = TypeAdapter(list[ChronologyEntry])
_PEOPLE = TypeAdapter(list[PersonRecord])


@dataclass(frozen=True, slots=True)
class Row:
    """One labelled value: ``Date of birth`` — ``4 March 2014``."""

    label: str
    value: str

    @property
    def long(self) -> bool:
        """Prose (several lines, or more than a line of print), or a label too long for the
        label column: the value is shown under its label, full width."""
        return "\n" in self.value or len(self.value) > 60 or len(self.label) > 30


@dataclass(frozen=True, slots=True)
class Group:
    """A titled set of rows inside a section: one carer, one disclosure, one record."""

    title: str
    rows: tuple[Row, ...]


@dataclass(frozen=True, slots=True)
class Section:
    key: str
    title: str
    rows: tuple[Row, ...] = ()
    groups: tuple[Group, ...] = ()
    #: Said when the section has nothing else ("No records were chosen").
    note: str = ""


@dataclass(frozen=True, slots=True)
class ReadableReferral:
    title: str
    sections: tuple[Section, ...]
    #: Why the form is shown field by field as sent (it is not a form known here).
    problem: str = ""


# -------------------------------------------------------------------- values


def long_date(value: date | datetime) -> str:
    """``4 March 2014``; a moment in time, on its day in England."""
    if isinstance(value, datetime):
        value = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(ENGLAND)
    return f"{value.day} {value:%B %Y}"


def date_and_time(value: datetime) -> str:
    """``7 September 2026 at 10:15am`` (in England)."""
    moment = (value if value.tzinfo else value.replace(tzinfo=UTC)).astimezone(ENGLAND)
    if moment.hour == 0 and moment.minute == 0:
        clock = "midnight"
    elif moment.hour == 12 and moment.minute == 0:
        clock = "midday"
    else:
        hour = moment.hour % 12 or 12
        suffix = "am" if moment.hour < 12 else "pm"
        clock = f"{hour}{suffix}" if moment.minute == 0 else f"{hour}:{moment.minute:02d}{suffix}"
    return f"{long_date(moment)} at {clock}"


def _size(size: int) -> str:
    if size < 1024:
        return plural(size, "byte")
    if size < 1024 * 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def _text(model: type[BaseModel], name: str, value: Any) -> str:
    """A field's value in words; "" for an empty optional field (left out)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, datetime):
        return date_and_time(value)
    if isinstance(value, date):
        return long_date(value)
    if isinstance(value, tuple | list):
        return "\n".join(_text(model, name, item) for item in value)
    if isinstance(value, str):
        return value_words(model, name, value) if _has_words(model, name) else value
    return str(value)


def _has_words(model: type[BaseModel], name: str) -> bool:
    return name in words_of(model)


def _rows(part: BaseModel | None, names: Iterable[str] | None = None) -> tuple[Row, ...]:
    """The part's plain fields in the form's order (or ``names``' order), empty ones left
    out; fields that are parts or lists of parts are the caller's."""
    if part is None:
        return ()
    model = type(part)
    out = []
    for name in names if names is not None else model.model_fields:
        if is_hidden(model, name):
            continue
        value = getattr(part, name)
        if isinstance(value, BaseModel) or (
            isinstance(value, tuple) and value and isinstance(value[0], BaseModel)
        ):
            continue
        if value is False and not model.model_fields[name].is_required():
            continue  # an optional "no" (no interpreter, not after restraint) is left out
        text = _text(model, name, value)
        if text:
            out.append(Row(label(model, name), text))
    return tuple(out)


def _groups(owner: type[BaseModel], name: str, parts: Sequence[BaseModel]) -> tuple[Group, ...]:
    title = label(owner, name)
    if len(parts) == 1:
        return (Group(title, _rows(parts[0])),)
    return tuple(Group(f"{title} {n}", _rows(p)) for n, p in enumerate(parts, 1))


# ------------------------------------------------------------- form sections


def _consent(consent: Consent) -> Section:
    rows = [Row(label(Consent, "parents_aware"), _text(Consent, "", consent.parents_aware))]
    if consent.consent_given:
        rows.append(Row(label(Consent, "consent_given"), "Given by the parents or carers"))
    elif consent.no_consent_reason is not None:
        rows.append(
            Row(
                label(Consent, "consent_given"),
                value_words(Consent, "no_consent_reason", consent.no_consent_reason),
            )
        )
    if consent.explanation:
        rows.append(Row(label(Consent, "explanation"), consent.explanation))
    return Section("consent", "Consent", tuple(rows))


def _contact(referrer: Referrer, extra: tuple[Group, ...] = ()) -> Section:
    return Section("contact", "The school's contact", _rows(referrer), extra)


def _mash(form: MashReferral, known: tuple[Group, ...]) -> tuple[Section, ...]:
    family = (
        _groups(MashReferral, "carers", form.carers)
        + _groups(MashReferral, "household", form.household)
        + _groups(MashReferral, "significant_adults", form.significant_adults)
    )
    return (
        Section(
            "reason",
            "Reason for referral and risk",
            _rows(
                form,
                (
                    "request",
                    "reason",
                    "harm_types",
                    "impact_on_child",
                    "risk_rating",
                    "risk_reasons",
                ),
            ),
            _groups(MashReferral, "disclosures", form.disclosures),
        ),
        Section("child", "The child", _rows(form.child)),
        Section("family", "Family and household", (), family),
        _known(_rows(form, ("previous_involvement", "other_professionals")), (), known),
        _consent(form.consent),
        _contact(form.referrer),
    )


def _lado(form: LadoReferral, known: tuple[Group, ...]) -> tuple[Section, ...]:
    return (
        Section(
            "reason",
            "The allegation and why it is referred",
            _rows(form.allegation) + _rows(form, ("criteria",)),
        ),
        Section("adult", "The adult the allegation is about", _rows(form.adult)),
        Section(
            "children", "Children involved", (), _groups(LadoReferral, "children", form.children)
        ),
        _known(_rows(form, ("actions_so_far", "others_told")), (), known),
        _consent(form.consent),
        _contact(form.referrer, (Group(label(LadoReferral, "employer"), _rows(form.employer)),)),
    )


def _police(form: PoliceReferral, known: tuple[Group, ...]) -> tuple[Section, ...]:
    offender = _rows(form.alleged_offender)
    return (
        Section(
            "reason",
            "What happened and the risk",
            _rows(
                form,
                ("immediate_risk", "what_happened", "happened_at", "place", "existing_reference"),
            ),
        ),
        Section("child", "The child", _rows(form.child)),
        Section(
            "offender",
            "The alleged offender",
            offender,
            note="" if offender else "The school does not know who the alleged offender is.",
        ),
        _known(
            _rows(form, ("other_agencies_informed",)),
            _groups(PoliceReferral, "evidence", form.evidence),
            known,
        ),
        _consent(form.consent),
        _contact(form.referrer),
    )


def _known(rows: tuple[Row, ...], groups: tuple[Group, ...], known: tuple[Group, ...]) -> Section:
    return Section(
        "known",
        "What is known",
        rows,
        groups + known,
        note="" if known else "The school chose no records from its chronology to send.",
    )


# ------------------------------------------------------------ the chronology


def _person(people: Mapping[str, PersonRecord], staff_id: str | None) -> str:
    if not staff_id:
        return ""
    who = people.get(staff_id)
    if who is None:
        return "A member of the school's staff"
    role = RECORD_WORDS["role"].get(who.role or "", "")
    return f"{who.name} ({role.lower()})" if role else who.name


def _present(rows: Iterable[tuple[str, str]]) -> tuple[Row, ...]:
    return tuple(Row(lab, value) for lab, value in rows if value)


def _entry(entry: ChronologyEntry, people: Mapping[str, PersonRecord]) -> Group:
    record = entry.record
    kind = RECORD_WORDS["kind"].get(entry.kind, entry.kind)
    title = f"{kind}, {long_date(entry.occurred_at)}"
    rows: tuple[Row, ...]
    if isinstance(record, ConcernRecord):
        marks = "\n".join(
            f"{RECORD_WORDS['side'].get(m.side, m.side)}: {m.description}" for m in record.body_map
        )
        rows = _present(
            (
                ("Category", record.category.replace("_", " ").capitalize()),
                ("When it happened", date_and_time(record.happened_at)),
                ("Where", record.location),
                ("What happened", record.account),
                ("Who was involved", record.people_involved),
                ("Marks on the body map", marks),
                ("Status", RECORD_WORDS["status"].get(record.status, record.status)),
                ("Recorded by", _person(people, record.recorded_by)),
                ("Recorded on", date_and_time(record.recorded_at)),
            )
        )
    elif isinstance(record, TriageRecord):
        rows = _present(
            (
                ("Decision", RECORD_WORDS["decision"].get(record.decision, record.decision)),
                ("Why", record.reason),
                ("Decided by", _person(people, record.decided_by)),
                ("Decided on", date_and_time(record.decided_at)),
            )
        )
    elif isinstance(record, ActionRecord):
        rows = _present(
            (
                ("What is to be done", record.text),
                ("Due by", long_date(record.due_on) if record.due_on else ""),
                ("Done on", date_and_time(record.done_at) if record.done_at else "Not yet"),
                ("Set by", _person(people, record.created_by)),
            )
        )
    elif isinstance(record, ContactRecord):
        rows = _present(
            (
                ("Agency", record.agency),
                ("When", date_and_time(record.contacted_at)),
                ("Outcome", record.outcome),
                ("Recorded by", _person(people, record.recorded_by)),
            )
        )
    elif isinstance(record, DocumentRef):
        rows = _present(
            (
                ("File", record.filename),
                ("Size", _size(record.size)),
                ("Added by", _person(people, record.uploaded_by)),
                ("Added on", date_and_time(record.uploaded_at)),
            )
        )
    else:
        assert isinstance(record, PupilEventRecord)
        rows = _present(
            (("What happened", record.summary), ("When", date_and_time(record.occurred_at)))
        )
    source = entry.provenance or getattr(record, "provenance", None)
    if source is not None:
        rows += (
            Row("Received from", f"{source.source_org_name}, on {long_date(source.received_at)}"),
        )
    return Group(title, rows)


def _chronology(chronology: Any, people: Any) -> tuple[Group, ...] | None:
    """The chosen chronology entries in time order, or None if they cannot be read."""
    if chronology is None:
        return ()
    try:
        entries = _CHRONOLOGY.validate_python(chronology)
    except ValidationError:
        return None
    try:
        named = {p.id: p for p in _PEOPLE.validate_python(people or [])}
    except ValidationError:
        named = {}
    entries.sort(key=lambda e: (e.occurred_at, e.recorded_at))
    return tuple(_entry(e, named) for e in entries)


# ------------------------------------------------------- a form not known here


def _words(key: str) -> str:
    words = " ".join(str(key).replace("_", " ").replace("-", " ").split())
    return words[:1].upper() + words[1:] if words else str(key)


def _plain(value: Any) -> str:
    if value is None or value == "":
        return ""
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, dict):
        return "\n".join(f"{_words(k)}: {_plain(v)}" for k, v in value.items() if _plain(v))
    if isinstance(value, list):
        return "\n".join(_plain(v) for v in value if _plain(v))
    return str(value)


def _flat(groups: Iterable[Group]) -> tuple[Row, ...]:
    """Groups inside a group, as rows: ``label: value`` lines under the group's title."""
    return tuple(Row(g.title, "\n".join(f"{r.label}: {r.value}" for r in g.rows)) for g in groups)


def _as_sent(value: Any, title: str) -> tuple[tuple[Row, ...], tuple[Group, ...]]:
    """A record as sent: plain values as rows, parts and lists of parts as groups."""
    if not isinstance(value, dict):
        text = _plain(value)
        return ((Row(title, text),) if text else ()), ()
    rows: list[Row] = []
    groups: list[Group] = []
    for key, item in value.items():
        if key == "schema_version":
            continue
        parts = [item] if isinstance(item, dict) else item if isinstance(item, list) else []
        if parts and all(isinstance(p, dict) for p in parts):
            for n, part in enumerate(parts, 1):
                sub_rows, sub_groups = _as_sent(part, _words(key))
                name = _words(key) if isinstance(item, dict) else f"{_words(key)} {n}"
                groups.append(Group(name, sub_rows + _flat(sub_groups)))
        else:
            text = _plain(item)
            if text:
                rows.append(Row(_words(key), text))
    return tuple(rows), tuple(groups)


# ------------------------------------------------------------------- builder


def readable_referral(
    form: Any,
    *,
    chronology: Any = None,
    people: Any = None,
    records: Sequence[tuple[str, Any]] = (),
) -> ReadableReferral:
    """The referral as an agency reads it.

    ``form`` is ``records/referral.json`` as sent; ``chronology`` and ``people`` are
    ``records/chronology.json`` and ``records/people.json`` (None: not in the package);
    ``records`` are the package's other records, ``(title, value)``, shown as sent only
    when the chronology is missing or cannot be read.
    """
    known = _chronology(chronology, people)
    if known is None or (chronology is None and records):
        known = tuple(
            Group(title, rows + _flat(groups))
            for title, value in records
            for rows, groups in (_as_sent(value, title),)
        )
    try:
        parsed = parse_form(form) if isinstance(form, dict) else None
    except FormError:
        parsed = None
    if isinstance(parsed, MashReferral):
        return ReadableReferral(KIND_TITLES["social_care"], _mash(parsed, known))
    if isinstance(parsed, LadoReferral):
        return ReadableReferral(KIND_TITLES["lado"], _lado(parsed, known))
    if isinstance(parsed, PoliceReferral):
        return ReadableReferral(KIND_TITLES["police"], _police(parsed, known))
    rows, groups = _as_sent(form, "The referral form")
    return ReadableReferral(
        "Referral",
        (
            Section(
                "form",
                "The referral form",
                rows,
                groups,
                note="" if rows or groups else "The form is empty.",
            ),
            _known((), (), known),
        ),
        problem="This form is not one this page knows (it may come from a newer version of "
        "Handover), so it is shown field by field as the school sent it.",
    )


# ------------------------------------------------------------------- on paper


def _print_rows(doc: PrintDocument, rows: Sequence[Row]) -> None:
    """Short values as a label-value table; prose under its label, full width."""
    short: list[tuple[str, str]] = []
    for row in rows:
        if not row.long:
            short.append((row.label, row.value))
            continue
        if short:
            _table(doc, short)
            short = []
        doc.paragraph(row.label, bold=True)
        doc.paragraph(row.value)
    if short:
        _table(doc, short)


def _table(doc: PrintDocument, rows: list[tuple[str, str]]) -> None:
    # A label of up to 30 characters fits its column on one line (longer ones are "long").
    doc.table(("", ""), rows, header=False, widths=(2, 3), bold_first=True)


def referral_pdf(readable: ReadableReferral, printed_by: PrintedBy, *, lead: str) -> bytes:
    """The referral as a PDF (A4, the shared layout): the same sections, rows and order as
    the page, under the same ``lead`` (from whom, about whom, when)."""
    doc = PrintDocument(readable.title, printed_by, subtitle=lead)
    if readable.problem:
        doc.paragraph(readable.problem)
    for section in readable.sections:
        doc.heading(section.title)
        if section.note:
            doc.paragraph(section.note)
        _print_rows(doc, section.rows)
        for group in section.groups:
            doc.paragraph(group.title, bold=True)
            _print_rows(doc, group.rows)
    return doc.finish()
