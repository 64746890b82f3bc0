"""What an import is to do (:class:`ImportPlan`) and what it did (:class:`RecordsImported`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from schemas.manifest import Subject
from transfer.exchange.importing.records import PackageRecords
from transfer.store import blobs


@dataclass(frozen=True)
class Incoming:
    """Who the package is about: its pupil record, else its manifest's subject."""

    upn: str | None
    surname: str
    forename: str
    dob: date | None
    sex: str
    source_id: str | None

    @classmethod
    def of(cls, records: PackageRecords, subject: Subject) -> Incoming:
        p = records.pupil
        if p is not None:
            return cls(p.upn, p.surname, p.forename, p.dob, p.sex, p.id)
        return cls(subject.upn, subject.surname, subject.forename, subject.dob, "U", None)


@dataclass
class ImportPlan:
    """Where the file goes: an existing pupil, or a new one (with its sealed data key)."""

    org_id: str
    pupil_id: str
    new_pupil: bool
    #: The pupil's data key (kept for this import only).
    key: bytes = field(repr=False)
    sealed_key: bytes | None = field(default=None, repr=False)
    upn: str | None = None
    incoming: Incoming | None = None
    matched_by: str = "upn"
    written: dict[str, blobs.StoredBlob] = field(default_factory=dict)


@dataclass(frozen=True)
class RecordsImported:
    """What an import wrote. ``counts``: records imported, by kind (new ones and changed
    versions); ``held``: records already held from the same sender, unchanged, not imported
    again; ``amended``: changed versions kept beside the earlier one (both are kept)."""

    pupil_id: str
    new_pupil: bool
    matched_by: str
    counts: dict[str, int]
    skipped: int
    held: int = 0
    amended: int = 0
