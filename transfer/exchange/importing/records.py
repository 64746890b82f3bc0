"""Reading the JSON records of a verified package into models, checked against the schemas.

``records/pupil.json`` and ``records/<kind>/<id>.json``; a record that is not acceptable
JSON, not of its schema, or that hides characters a DSL would not see, is refused with
:class:`RecordsError`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

from pydantic import BaseModel, ValidationError

from schemas import jsontext
from schemas.records import (
    ActionRecord,
    ConcernRecord,
    ContactRecord,
    DocumentRef,
    PupilEventRecord,
    PupilRecord,
    TriageRecord,
)
from schemas.text import first_hidden, where
from transfer.errors import IntegrityError

M = TypeVar("M", bound=BaseModel)

_DIRS: dict[str, type[BaseModel]] = {
    "concerns": ConcernRecord,
    "triage": TriageRecord,
    "actions": ActionRecord,
    "contacts": ContactRecord,
    "documents": DocumentRef,
    "events": PupilEventRecord,
}


class RecordsError(IntegrityError):
    """The signed records of a package are not records this node can read."""

    slug = "bad-records"
    title = "The package's records cannot be read"


class RecordTooLargeError(RecordsError):
    """A record of a package, or its records together, are bigger than this node opens
    (``transfer.max_record_bytes``, ``transfer.max_records_bytes``)."""

    slug = "record-too-large"
    title = "The package's records are too large to open"


@dataclass
class PackageRecords:
    """The records of a leaver's file, as the sender wrote them."""

    pupil: PupilRecord | None
    concerns: list[ConcernRecord] = field(default_factory=list)
    triage: list[TriageRecord] = field(default_factory=list)
    actions: list[ActionRecord] = field(default_factory=list)
    contacts: list[ContactRecord] = field(default_factory=list)
    documents: list[DocumentRef] = field(default_factory=list)
    events: list[PupilEventRecord] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return {
            "concerns": len(self.concerns),
            "triage": len(self.triage),
            "actions": len(self.actions),
            "contacts": len(self.contacts),
            "documents": len(self.documents),
            "events": len(self.events),
        }


#: Fields of a received record that a DSL reads as a name or a label: one plain line
#: (``schemas.text.Line``), whatever the sending node let through.
_READ_AS_LINES: Final = (
    "surname",
    "forename",
    "upn",
    "year_group",
    "sex",
    "category",
    "agency",
    "filename",
    "media_type",
)


def _load(model: type[M], path: str, data: bytes) -> M:
    try:
        jsontext.refuse_duplicate_keys(data)
    except jsontext.JSONRefused as exc:
        raise RecordsError(f"{path} in the package is not acceptable JSON: {exc}") from None
    try:
        record = model.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False)[0]
        raise RecordsError(
            f"{path} in the package is not a {model.__name__} this node can read "
            f"({where(first['loc'])}: {first['msg']}); the sender may use a newer record format"
        ) from None
    for name in _READ_AS_LINES:
        value = getattr(record, name, None)
        found = first_hidden(value) if isinstance(value, str) else None
        if found is not None:
            raise RecordsError(
                f"{path} in the package has a {name} with an invisible or direction-changing "
                f"character ({found}): a DSL reading it would not see what it says"
            )
    return record


def is_record_path(path: str) -> bool:
    """Whether a package entry is a JSON record :func:`parse_records` reads."""
    if path == "records/pupil.json":
        return True
    parts = path.split("/")
    return (
        len(parts) == 3 and parts[0] == "records" and parts[1] in _DIRS and path.endswith(".json")
    )


def parse_records(raw: Mapping[str, bytes]) -> PackageRecords:
    """The records among a package's entries (path -> bytes), checked against the schemas."""
    pupil_bytes = raw.get("records/pupil.json")
    out = PackageRecords(
        pupil=_load(PupilRecord, "records/pupil.json", pupil_bytes) if pupil_bytes else None
    )
    lists: dict[str, list[Any]] = {
        "concerns": out.concerns,
        "triage": out.triage,
        "actions": out.actions,
        "contacts": out.contacts,
        "documents": out.documents,
        "events": out.events,
    }
    for path in sorted(raw):
        parts = path.split("/")
        if len(parts) == 3 and parts[0] == "records" and parts[1] in _DIRS:
            lists[parts[1]].append(_load(_DIRS[parts[1]], path, raw[path]))
    return out


def records_json(raw: bytes) -> Any:
    """A record file's JSON (for previews), refusing what is not JSON."""
    try:
        return jsontext.loads(raw)
    except ValueError:
        raise RecordsError("a record in the package is not valid JSON") from None
