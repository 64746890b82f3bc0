"""Records of the concern store, as they cross a boundary (API, transfer package, export).

Every record carries ``schema_version`` (:data:`SCHEMA_VERSION`). Records are
frozen and refuse unknown fields. ``New*`` models are the inputs to the store's
services (and the HTTP request bodies built on them).
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Final, Literal

from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field

from schemas.text import Line, Prose

SCHEMA_VERSION: Final = 1

OrganisationKind = Literal["school", "social_care", "lado", "police", "other_agency"]
ConcernStatus = Literal["open", "under_review", "monitoring", "closed"]
TriageDecision = Literal[
    "refer_social_care",
    "refer_early_help",
    "refer_lado",
    "refer_police",
    "monitor",
    "no_referral",
    "no_further_action",
]
BodySide = Literal["front", "back"]
DestinationKind = Literal["school", "unknown", "outside-maintained", "local-authority"]

_Text = Annotated[Prose, Field(max_length=100_000)]
_Short = Annotated[Line, Field(min_length=1, max_length=200)]
#: The shapes of the identifiers (the server checks more: a UPN's check letter, a
#: recognised LA code; the OpenAPI document spells the LA codes out).
UPN_PATTERN: Final = r"^[A-Z][0-9]{11}[0-9A-Z]$"
URN_PATTERN: Final = r"^[0-9]{6}$"
LAESTAB_PATTERN: Final = r"^[0-9]{7}$"
#: The server checks these itself (``transfer.identifiers``, whose messages name the rule
#: broken, as the DfE's do); the schema only says so, for clients.
_Upn = Annotated[
    str,
    Field(
        json_schema_extra={"pattern": UPN_PATTERN},
        description="A Unique Pupil Number: check letter, LA code, establishment number, "
        "year, serial (a temporary UPN ends in a letter); the check letter must be right",
    ),
]
_Id = Annotated[str, Field(min_length=1, max_length=64)]
_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Record(_Model):
    schema_version: Literal[1] = SCHEMA_VERSION


class Provenance(_Model):
    """Where a record came from when it was received from another organisation."""

    source_org_id: _Id
    source_org_name: str
    package_id: _Id
    received_at: AwareDatetime
    original_id: _Id
    #: When this record replaced an earlier version from the same sender: when that earlier
    #: version was received (both are kept; the earlier one has this record as its successor).
    amends_received_at: AwareDatetime | None = None
    #: True when a later version of this record was received (this one is kept as it was).
    superseded: bool = False


class OrganisationRecord(_Record):
    id: _Id
    name: str
    kind: OrganisationKind
    urn: str | None = None
    laestab: str | None = None
    created_at: AwareDatetime


class StaffRecord(_Record):
    id: _Id
    org_id: _Id
    username: str
    display_name: str
    email: str | None = None
    roles: tuple[str, ...]
    active: bool
    created_at: AwareDatetime


class CategoryRecord(_Record):
    key: str
    label: str
    restricted: bool
    active: bool = True


class Destination(_Model):
    kind: DestinationKind
    urn: str | None = None
    laestab: str | None = None
    name: str | None = None


class NewDestination(Destination):
    """A destination as given to the API: a URN of 6 digits, a LAESTAB of 7 (no ``/``)."""

    urn: Annotated[str, Field(json_schema_extra={"pattern": URN_PATTERN})] | None = None
    laestab: Annotated[str, Field(json_schema_extra={"pattern": LAESTAB_PATTERN})] | None = None
    name: Annotated[Line, Field(max_length=200)] | None = None


def _as_new_destination(value: object) -> object:
    """A :class:`Destination` built in code (a CTF import) is checked as a new one."""
    if isinstance(value, Destination) and not isinstance(value, NewDestination):
        return value.model_dump()
    return value


_NewDestination = Annotated[NewDestination, BeforeValidator(_as_new_destination)]


class PupilRecord(_Record):
    id: _Id
    org_id: _Id
    upn: str | None
    surname: str
    forename: str
    dob: date | None
    sex: str
    year_group: str | None = None
    on_roll_from: date | None = None
    leaving_date: date | None = None
    destination: Destination | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    erased_at: AwareDatetime | None = None


class BodyMapMark(_Record):
    """A mark on the front or back body outline; ``x``/``y`` are fractions of its width/height."""

    id: _Id
    pupil_id: _Id
    side: BodySide
    x: Annotated[float, Field(ge=0.0, le=1.0)]
    y: Annotated[float, Field(ge=0.0, le=1.0)]
    description: str


class ConcernRecord(_Record):
    id: _Id
    org_id: _Id
    pupil_ids: tuple[str, ...]
    category: str
    restricted: bool
    happened_at: AwareDatetime
    recorded_at: AwareDatetime
    recorded_by: _Id
    location: str
    account: str
    people_involved: str
    body_map: tuple[BodyMapMark, ...] = ()
    status: ConcernStatus
    provenance: Provenance | None = None


class ConcernSummary(_Record):
    """A concern without its content (for lists)."""

    id: _Id
    pupil_ids: tuple[str, ...]
    category: str
    restricted: bool
    happened_at: AwareDatetime
    recorded_at: AwareDatetime
    recorded_by: _Id
    status: ConcernStatus


class TriageRecord(_Record):
    id: _Id
    concern_id: _Id
    decision: TriageDecision
    reason: str
    decided_at: AwareDatetime
    decided_by: _Id
    provenance: Provenance | None = None


class ActionRecord(_Record):
    id: _Id
    concern_id: _Id
    text: str
    assignee_id: str | None = None
    due_on: date | None = None
    done_at: AwareDatetime | None = None
    created_at: AwareDatetime
    created_by: _Id
    provenance: Provenance | None = None


class ContactRecord(_Record):
    id: _Id
    concern_id: _Id
    agency: str
    contacted_at: AwareDatetime
    outcome: str
    recorded_at: AwareDatetime
    recorded_by: _Id
    provenance: Provenance | None = None


class DocumentRef(_Record):
    id: _Id
    pupil_id: _Id
    concern_id: str | None = None
    sha256: _Sha256
    size: Annotated[int, Field(ge=0)]
    media_type: str
    filename: str
    uploaded_at: AwareDatetime
    uploaded_by: _Id
    provenance: Provenance | None = None


class PupilEventRecord(_Record):
    """A chronology line about something that happened to the pupil's file: a transfer or a
    referral sent, delivered, accepted... ``kind`` names it (``transfer.delivered``),
    ``summary`` says it for a person, ``ref`` points at the thing (a package id).
    ``recorded_by`` is None when the node itself recorded it."""

    id: _Id
    pupil_id: _Id
    kind: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*$", max_length=64)]
    summary: str
    ref: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    recorded_by: _Id | None = None


ChronologyKind = Literal["concern", "triage", "action", "contact", "document", "event"]


class ChronologyEntry(_Record):
    """One line of a pupil's chronology; ``record`` is the full record of ``kind``."""

    kind: ChronologyKind
    id: _Id
    pupil_id: _Id
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    concern_id: str | None = None
    record: (
        ConcernRecord | TriageRecord | ActionRecord | ContactRecord | DocumentRef | PupilEventRecord
    )
    provenance: Provenance | None = None


class ChronologyLine(ChronologyEntry):
    """A chronology entry as the staff API shows it: also who recorded it, by name and role.

    ``recorded_by_name`` is a member of staff's name, or words for who else it was (the
    node itself; staff of the organisation a received record came from, whose names this
    node does not hold). Not a package record: packages carry :class:`ChronologyEntry`.
    """

    recorded_by_name: str | None = None
    recorded_by_role: str | None = None


class PersonRecord(_Record):
    """A member of the sending organisation's staff named (by id) in a package's records,
    so the receiver can say who recorded what (``records/people.json``); also the people of
    a subject access export. ``role`` is their most senior role (``dsl``, ``deputy_dsl``,
    ``head_teacher``, ``administrator``, ``auditor``, ``staff``)."""

    id: _Id
    name: _Short
    role: str | None = None


class TombstoneRecord(_Record):
    id: _Id
    org_id: _Id
    pupil_id: _Id
    erased_at: AwareDatetime
    policy: str
    erased_by: str
    erased: dict[str, int]


class CTFImportResult(_Record):
    source_urn: str | None
    source_laestab: str
    created: int
    updated: int
    pupil_ids: tuple[str, ...]
    #: The CTF came from this school: it recorded leavers (leaving dates, destinations).
    leavers: bool = False


class RetentionPolicyRecord(_Record):
    """Erase a pupil's records at ``basis`` + ``years`` (``org_id`` None: the node default)."""

    key: str
    org_id: str | None
    description: str
    basis: Literal["dob"]
    years: int


class RetentionReport(_Record):
    ran_at: AwareDatetime
    erased_pupils: tuple[str, ...]
    tombstones: tuple[TombstoneRecord, ...]


class ReviewItem(_Model):
    """A field of the export that holds third-party data to review before release."""

    record: str
    id: str
    field: str


class SubjectAccessExport(_Record):
    exported_at: AwareDatetime
    exported_by: _Id
    pupil: PupilRecord
    concerns: tuple[ConcernRecord, ...]
    triage: tuple[TriageRecord, ...]
    actions: tuple[ActionRecord, ...]
    contacts: tuple[ContactRecord, ...]
    documents: tuple[DocumentRef, ...]
    events: tuple[PupilEventRecord, ...] = ()
    tombstones: tuple[TombstoneRecord, ...]
    review: tuple[ReviewItem, ...]
    #: The folder the export's files are in, in the archive handed to the caller.
    archive: str
    #: Each document's file in the archive (``documents/<id>-<file name>``), by document id.
    files: dict[str, str] = Field(default_factory=dict)
    #: Who the ids in the records (``recorded_by``, ``decided_by``, ``exported_by``...) are.
    people: tuple[PersonRecord, ...] = ()


# --------------------------------------------------------------------- inputs


class NewPupil(_Model):
    upn: _Upn
    surname: _Short
    forename: _Short
    dob: date
    sex: Literal["M", "F", "U", "O", "X"]
    year_group: Annotated[Line, Field(max_length=10)] | None = None
    on_roll_from: date | None = None
    leaving_date: date | None = None
    destination: _NewDestination | None = None


class PupilChanges(_Model):
    """Only the fields given change; ``None`` leaves a field as it is, except
    ``destination``, where an explicit ``null`` clears it."""

    surname: _Short | None = None
    forename: _Short | None = None
    dob: date | None = None
    sex: Literal["M", "F", "U", "O", "X"] | None = None
    year_group: Annotated[Line, Field(max_length=10)] | None = None
    on_roll_from: date | None = None
    leaving_date: date | None = None
    destination: _NewDestination | None = None


class NewBodyMapMark(_Model):
    pupil_id: _Id
    side: BodySide
    x: Annotated[float, Field(ge=0.0, le=1.0)]
    y: Annotated[float, Field(ge=0.0, le=1.0)]
    description: _Text


class NewConcern(_Model):
    pupil_ids: Annotated[tuple[_Id, ...], Field(min_length=1, max_length=50)]
    category: _Short
    happened_at: AwareDatetime
    location: _Text = ""
    account: Annotated[Prose, Field(min_length=1, max_length=100_000)]
    people_involved: _Text = ""
    body_map: tuple[NewBodyMapMark, ...] = ()
    status: ConcernStatus = "open"
    #: A one-time key the sending form carries: the same person sending the same key
    #: again (a double click, a resubmit) gets the concern already saved, not a second one.
    submission_key: Annotated[
        str | None, Field(default=None, pattern=r"^[A-Za-z0-9_-]{16,64}$")
    ] = None


class NewTriage(_Model):
    decision: TriageDecision
    reason: Annotated[Prose, Field(min_length=1, max_length=100_000)]


class NewAction(_Model):
    text: Annotated[Prose, Field(min_length=1, max_length=100_000)]
    assignee_id: _Id | None = None
    due_on: date | None = None


class NewAmendment(_Model):
    """A concern's text as it should now read, and why it changed (the earlier text is kept)."""

    location: _Text = ""
    account: Annotated[Prose, Field(min_length=1, max_length=100_000)]
    people_involved: _Text = ""
    reason: Annotated[Prose, Field(min_length=1, max_length=10_000)]


class AmendmentRecord(_Record):
    """One change to a concern's text: the text as it read before, who changed it, when, why."""

    id: _Id
    concern_id: _Id
    amended_at: AwareDatetime
    amended_by: _Id
    reason: str
    earlier_location: str
    earlier_account: str
    earlier_people_involved: str


class NewContact(_Model):
    agency: _Short
    contacted_at: AwareDatetime
    outcome: _Text = ""


SCHEMAS: dict[str, type[BaseModel]] = {
    "pupil": PupilRecord,
    "concern": ConcernRecord,
    "triage": TriageRecord,
    "action": ActionRecord,
    "contact": ContactRecord,
    "document": DocumentRef,
    "pupil-event": PupilEventRecord,
    "chronology-entry": ChronologyEntry,
    "person": PersonRecord,
    "tombstone": TombstoneRecord,
    "subject-access-export": SubjectAccessExport,
}
