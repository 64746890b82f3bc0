"""The inbox's vocabulary: who calls, its errors, and the models its answers are made of."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from schemas.directory import DirectoryEntry
from schemas.manifest import Subject
from schemas.receipt import MAX_REFERENCE
from schemas.records import ChronologyEntry, PersonRecord, PupilRecord
from transfer.errors import ConflictError, InputError
from transfer.exchange.tables import IncomingPackage
from transfer.package.layout import SenderKeys
from transfer.store.readable import ReadableFile

#: Where a DSL acted from (written in the audit entries).
Via = Literal["api", "cli", "web"]


class InboxDirectory(Protocol):
    """What the inbox needs from the directory (``transfer.directory.service.Directory``)."""

    async def entry(self, org_id: str) -> DirectoryEntry: ...

    async def sender_keys(self) -> SenderKeys: ...


@dataclass(frozen=True)
class PeerCaller:
    """The organisation a verified peer request comes from."""

    org_id: str
    name: str
    key_id: str


class OffsetMismatchError(ConflictError):
    """The chunk does not start where the upload stands."""

    slug = "upload-offset-mismatch"
    title = "The chunk does not start at the offset held"


class UploadBusyError(ConflictError):
    """Another request is writing to the same upload just now."""

    slug = "upload-busy"
    title = "Another upload of this package is in progress"


class ReferenceRequiredError(InputError):
    """A referral is accepted only with the agency's own reference number."""

    http_status = 422
    slug = "reference-required"
    title = "The agency's reference number is required"


def is_referral(package_kind: str) -> bool:
    """Whether a package of this kind is a referral (kept, never imported)."""
    return package_kind.startswith("referral_")


def clean_reference(reference: str | None) -> str | None:
    """The reference with its spacing normalised; InputError if it cannot go in a receipt."""
    if reference is None:
        return None
    text = " ".join(reference.split())
    if not text or len(text) > MAX_REFERENCE or not text.isprintable():
        raise InputError(
            f"the reference must be 1 to {MAX_REFERENCE} printable characters "
            "(your own case or reference number; it goes to the sender)"
        )
    return text


class PackageRefusedError(ConflictError):
    """The package was refused earlier; it will not be taken again under the same id."""

    slug = "package-refused"
    title = "The package was refused"


# ----------------------------------------------------------------- models


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class IncomingSummary(_Model):
    """An incoming package as the inbox lists it (no content)."""

    package_id: str
    state: str
    package_kind: str
    sender_org_id: str
    sender_name: str
    recipient_org_id: str
    size: int
    received: int
    ciphertext_sha256: str
    manifest_sha256: str | None = None
    entries: int | None = None
    content_size: int | None = None
    offered_at: AwareDatetime
    delivered_at: AwareDatetime | None = None
    viewed_at: AwareDatetime | None = None
    decided_at: AwareDatetime | None = None
    decided_by: str | None = None
    pupil_id: str | None = None
    #: The receiver's own reference given on accepting (required for a referral).
    reference: str | None = None


class PreviewDocument(_Model):
    path: str
    size: int
    sha256: str
    filename: str | None = None
    media_type: str | None = None


class PupilMatch(_Model):
    """Our pupil with the package's UPN, and whether date of birth and name agree."""

    pupil_id: str
    matches: bool
    upn: str | None
    surname: str
    forename: str
    dob: str | None


class InboxPreview(_Model):
    """What a DSL sees before accepting: checked in full, shown from memory."""

    package: IncomingSummary
    subject: Subject
    manifest: dict[str, Any]
    counts: dict[str, int]
    pupil: PupilRecord | None
    chronology: tuple[ChronologyEntry, ...]
    documents: tuple[PreviewDocument, ...]
    match: PupilMatch | None
    #: A referral's form (``records/referral.json``), checked against its schema.
    referral: dict[str, Any] | None = None
    #: Who the sender's staff ids in the records are (``records/people.json``; empty for a
    #: package from a node that does not send it).
    people: tuple[PersonRecord, ...] = ()
    #: The chronology and documents as a DSL reads them: in time order, dates in words,
    #: categories, who recorded each line, triage decisions, actions, documents by name.
    readable: ReadableFile | None = None


class AcceptOutcome(_Model):
    package: IncomingSummary
    pupil_id: str
    new_pupil: bool
    matched_by: str
    counts: dict[str, int]
    skipped: int
    #: Records already held from the same sender, unchanged: not imported again.
    held: int = 0
    #: Changed versions of records already held: kept beside the earlier version.
    amended: int = 0


class InboxAcceptance(_Model):
    """What accepting did: a leaver's file imported (pupil, counts), or a referral kept."""

    package: IncomingSummary
    #: False for a referral: kept as verified ciphertext, nothing imported.
    imported: bool
    reference: str | None = None
    pupil_id: str | None = None
    new_pupil: bool | None = None
    matched_by: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    skipped: int = 0
    #: Records already held from the same sender, unchanged: not imported again.
    held: int = 0
    #: Changed versions of records already held: kept beside the earlier version.
    amended: int = 0


def summary(row: IncomingPackage, reference: str | None = None) -> IncomingSummary:
    return IncomingSummary(
        package_id=row.id,
        state=row.state,
        package_kind=row.package_kind,
        sender_org_id=row.sender_org_id,
        sender_name=row.sender_name,
        recipient_org_id=row.recipient_org_id,
        size=row.size,
        received=row.received,
        ciphertext_sha256=row.ciphertext_sha256,
        manifest_sha256=row.manifest_sha256,
        entries=row.entries,
        content_size=row.content_size,
        offered_at=row.offered_at,
        delivered_at=row.delivered_at,
        viewed_at=row.viewed_at,
        decided_at=row.decided_at,
        decided_by=row.decided_by,
        pupil_id=row.pupil_id,
        reference=reference,
    )


@dataclass(frozen=True)
class RecordLimits:
    """How much of a package's records opening it reads into memory (see ``docs/operations.md``,
    ``transfer.max_record_bytes`` and ``transfer.max_records_bytes``)."""

    per_record: int
    total: int


def summaries_json(items: Sequence[IncomingSummary]) -> list[Mapping[str, Any]]:
    return [i.model_dump(mode="json") for i in items]
