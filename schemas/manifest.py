"""The manifest of a transfer package (``manifest.json``), format ``handover-package/1``.

The manifest is the first file of the tar stream inside a package's age
encryption. It names the sender and the intended recipient, the subject, and
every other file of the package with its size and SHA-256, so that a receiver
can check each file as it streams. It is signed (``manifest.json.minisig``)
over its exact bytes, which are always the canonical form produced by
:meth:`Manifest.canonical_bytes`: JSON, keys sorted, no insignificant
whitespace, UTF-8. See ``docs/package-format.md``.

Pure: no I/O.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, date, datetime
from typing import Annotated, Any, Final, Literal
from uuid import UUID

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from schemas import jsontext
from schemas.text import Line, where

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_PATH",
    "MAX_ENTRIES",
    "MAX_PATH_LENGTH",
    "RESERVED_PATHS",
    "SIGNATURE_PATH",
    "Manifest",
    "ManifestDecodeError",
    "ManifestEntry",
    "PackageKind",
    "Recipient",
    "Sender",
    "Subject",
    "canonical_json",
    "format_rfc3339",
    "json_schema",
    "json_schema_text",
]

#: The value of ``format`` in every manifest of this version.
FORMAT_VERSION: Final = "handover-package/1"
#: Name of the manifest inside the tar stream (always the first member).
MANIFEST_PATH: Final = "manifest.json"
#: Name of the manifest's minisign signature (always the second member).
SIGNATURE_PATH: Final = "manifest.json.minisig"
RESERVED_PATHS: Final = frozenset({MANIFEST_PATH, SIGNATURE_PATH})
#: Longest path of an entry, in characters (all ASCII).
MAX_PATH_LENGTH: Final = 200
#: Most entries in one package.
MAX_ENTRIES: Final = 100_000

PackageKind = Literal[
    "leaver_file", "referral_social_care", "referral_lado", "referral_police", "other"
]

_PATH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*(?:/[A-Za-z0-9][A-Za-z0-9._-]*)*")

_OrgId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")
]
_Fingerprint = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-"
        r"[0-9A-HJKMNP-TV-Z]{4}$",
        description="The organisation's key fingerprint (keys.fingerprint), grouped 4-4-4-4.",
    ),
]
_KeyId = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-F]{16}$",
        description="The minisign key id of the signing key, as minisign prints it.",
    ),
]
_Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
_Name = Annotated[Line, Field(min_length=1, max_length=200)]


def format_rfc3339(when: datetime) -> str:
    """``when`` in UTC as RFC 3339 with ``Z`` (microseconds only when not zero)."""
    utc = when.astimezone(UTC)
    text = utc.strftime("%Y-%m-%dT%H:%M:%S")
    if utc.microsecond:
        text += f".{utc.microsecond:06d}"
    return text + "Z"


_UtcTime = Annotated[
    AwareDatetime,
    PlainSerializer(format_rfc3339, return_type=str, when_used="json"),
]


class ManifestDecodeError(ValueError):
    """The bytes are not a manifest in canonical form; the message says why (one line)."""


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Sender(_Model):
    """Who made and signed the package."""

    org_id: _OrgId
    key_fingerprint: _Fingerprint
    signing_key_id: _KeyId


class Recipient(_Model):
    """Whom the package is for. Signed, so it cannot be re-addressed by re-encrypting."""

    org_id: _OrgId
    key_fingerprint: _Fingerprint


class Subject(_Model):
    """The pupil (or other person) the package is about."""

    upn: Annotated[str, Field(pattern=r"^[A-Z][0-9]{11}[0-9A-Z]$")] | None = None
    surname: _Name
    forename: _Name
    dob: date | None = None


class ManifestEntry(_Model):
    """One file of the package other than the manifest and its signature."""

    path: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_PATH_LENGTH,
            json_schema_extra={"pattern": "^" + _PATH_RE.pattern + "$"},
        ),
    ]
    size: Annotated[int, Field(ge=0, le=2**63 - 1)]
    sha256: _Sha256

    @field_validator("path")
    @classmethod
    def _safe_path(cls, value: str) -> str:
        if not _PATH_RE.fullmatch(value):
            raise ValueError(
                "an entry path is relative, '/'-separated, and each part starts with a letter "
                "or digit followed by letters, digits, '.', '_' or '-'"
            )
        if value in RESERVED_PATHS:
            raise ValueError(f"{value} is reserved for the manifest and its signature")
        return value


class Manifest(_Model):
    """The signed table of contents of a package."""

    format: Literal["handover-package/1"] = FORMAT_VERSION
    package_id: UUID
    kind: PackageKind
    sender: Sender
    recipient: Recipient
    subject: Subject
    created_at: _UtcTime
    entries: Annotated[tuple[ManifestEntry, ...], Field(max_length=MAX_ENTRIES)]
    #: Record type -> schema version of the JSON records in the package (e.g. ``{"pupil": 1}``).
    records_schema: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")], int] = Field(
        default_factory=dict
    )

    @field_validator("created_at")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.astimezone(UTC)

    @model_validator(mode="after")
    def _unique_paths(self) -> Manifest:
        seen: set[str] = set()
        for entry in self.entries:
            folded = entry.path.casefold()
            if folded in seen:
                raise ValueError(f"the entry {entry.path} is listed twice (names ignore case)")
            seen.add(folded)
        for entry in self.entries:
            parts = entry.path.casefold().split("/")
            for i in range(1, len(parts)):
                if "/".join(parts[:i]) in seen:
                    raise ValueError(f"the entry {entry.path} is inside another entry's name")
        return self

    # ------------------------------------------------------------- canonical

    @property
    def total_size(self) -> int:
        """The sum of the sizes of all entries."""
        return sum(e.size for e in self.entries)

    def entry(self, path: str) -> ManifestEntry | None:
        for e in self.entries:
            if e.path == path:
                return e
        return None

    def canonical_bytes(self) -> bytes:
        """The exact bytes of ``manifest.json``: sorted keys, compact, UTF-8, no newline."""
        return canonical_json(self.model_dump(mode="json"))

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        """Parse ``manifest.json``; it must be valid and exactly in canonical form.

        Raises :class:`ManifestDecodeError` with a one-line reason.
        """
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise ManifestDecodeError("manifest.json is not UTF-8 text") from None
        try:
            raw = jsontext.loads(text)
        except (json.JSONDecodeError, RecursionError, ValueError) as exc:
            raise ManifestDecodeError(f"manifest.json is not valid JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ManifestDecodeError("manifest.json is not a JSON object")
        if raw.get("format") != FORMAT_VERSION:
            raise ManifestDecodeError(
                f"manifest.json is of format {str(raw.get('format'))[:40]!r}, "
                f"not {FORMAT_VERSION!r}"
            )
        try:
            manifest = cls.model_validate(raw)
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ManifestDecodeError(
                f"manifest.json is not valid: {where(first['loc'])}: {first['msg']}"
            ) from None
        if manifest.canonical_bytes() != data:
            raise ManifestDecodeError("manifest.json is not in canonical form")
        return manifest


def canonical_json(value: Any) -> bytes:
    """JSON with sorted keys, ``,`` and ``:`` separators, UTF-8 (not ``\\u``-escaped)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the manifest (as kept in ``schemas/json/manifest.schema.json``)."""
    schema = Manifest.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://handover.invalid/schemas/manifest.schema.json"
    return schema


def json_schema_text() -> str:
    """The schema file's exact text."""
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
