"""The directory: who is who among the organisations that exchange packages.

A directory document (``directory.json``) is published by a directory
authority (a local authority, a consortium) and signed with its minisign key
(``directory.json.minisig``). It lists each organisation's id, name, town, kind,
node endpoint, current ``age1…`` recipient and minisign signing key, the
earlier signing keys that still stand for signatures made while they were
current, and the revocations of signing keys. See ``docs/directory.md``.

The models check shape (patterns, lengths, times in order, nothing listed
twice). The checks that need the key formats (each ``key_id`` is the id inside
its minisign key, the ``fingerprint`` is the fingerprint of the keys, the audit
key is a valid verifier key named after its origin) are made by
:func:`transfer.directory.document.check_entry_keys` wherever an entry or a
document is read or made, so this module stays a leaf (pydantic and the
standard library only).

Pure: no I/O.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from schemas.manifest import format_rfc3339
from schemas.text import Line, Prose

__all__ = [
    "DOCUMENT_TYPE",
    "DOCUMENT_VERSION",
    "AuditKey",
    "Authority",
    "DirectoryDocument",
    "DirectoryEntry",
    "OrgKind",
    "PreviousSigningKey",
    "Revocation",
    "entry_json_schema",
    "json_schema",
]

DOCUMENT_TYPE: Final = "handover.directory"
DOCUMENT_VERSION: Final = 1

OrgKind = Literal["school", "social_care", "lado", "police", "other"]

_OrgId = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,63}$")
]
_Name = Annotated[Line, Field(min_length=1, max_length=200)]
_Town = Annotated[
    Line,
    Field(
        min_length=1,
        max_length=100,
        description="The town the organisation is in, as people name it (Bristol, Yate).",
    ),
]
_KeyId = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-F]{16}$",
        description="A minisign key id, as minisign prints it (16 upper-case hex digits).",
    ),
]
_Fingerprint = Annotated[
    str,
    Field(
        pattern=r"^[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-"
        r"[0-9A-HJKMNP-TV-Z]{4}$",
        description="The organisation's key fingerprint (keys.fingerprint), grouped 4-4-4-4.",
    ),
]
_SigningKey = Annotated[
    str,
    Field(
        pattern=r"^RW[A-Za-z0-9+/]{54}$",
        description="A minisign public key in its one-line base64 form (as `minisign -P`).",
    ),
]
_Recipient = Annotated[
    str, Field(pattern=r"^age1[02-9ac-hj-np-z]{58}$", description="An age X25519 recipient.")
]
_Endpoint = Annotated[
    str,
    Field(
        max_length=500,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="The base URL of the organisation's node, without a trailing query.",
    ),
]
_Email = Annotated[str, Field(max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")]
_UtcTime = Annotated[
    AwareDatetime,
    PlainSerializer(format_rfc3339, return_type=str, when_used="json"),
]


def _utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PreviousSigningKey(_Model):
    """An earlier signing key: it stands for signatures dated from ``valid_from`` to
    ``valid_until`` (when it was replaced), unless revoked."""

    signing_key: _SigningKey
    key_id: _KeyId
    valid_from: _UtcTime
    valid_until: _UtcTime

    @field_validator("valid_from", "valid_until")
    @classmethod
    def _utc_times(cls, value: datetime) -> datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _consistent(self) -> PreviousSigningKey:
        if self.valid_until < self.valid_from:
            raise ValueError("an earlier key's valid_until is before its valid_from")
        return self


class AuditKey(_Model):
    """The verifier key of an organisation's node's audit log (C2SP signed-note ``vkey``).

    With it, a counterpart checks the checkpoints the organisation's receipts carry and keeps
    them (witnessing, ``docs/audit-log.md``). ``origin`` is the log's origin line, which is
    also the key's name; the ``vkey`` must carry that name.
    """

    origin: Annotated[
        str,
        Field(
            min_length=1,
            max_length=200,
            pattern=r"^[^\s+]+$",
            description="The audit log's origin line and key name, e.g. school-a.example/audit.",
        ),
    ]
    vkey: Annotated[
        str,
        Field(
            min_length=1,
            max_length=300,
            pattern=r"^[^\s+]+\+[0-9a-f]{8}\+[A-Za-z0-9+/]+={0,2}$",
            description="The C2SP note verifier key: <name>+<8 hex key hash>+<base64 key>.",
        ),
    ]

    @classmethod
    def from_vkey(cls, vkey: str) -> AuditKey:
        """The key from its ``vkey`` text (origin = the key's name)."""
        return cls(origin=vkey.partition("+")[0], vkey=vkey)


class DirectoryEntry(_Model):
    """One organisation: who it is, where its node is, and its public keys."""

    org_id: _OrgId
    name: _Name
    #: The town, to tell apart schools of the same name; None: not given (omitted from
    #: the canonical bytes when None, so directories signed before the field existed keep
    #: their bytes).
    town: _Town | None = None
    kind: OrgKind
    urn: Annotated[str, Field(pattern=r"^[0-9]{6}$")] | None = None
    laestab: Annotated[str, Field(pattern=r"^[0-9]{7}$")] | None = None
    #: The node's base URL (``https://...``); None: the organisation has no node.
    endpoint: _Endpoint | None = None
    recipient: _Recipient
    signing_key: _SigningKey
    key_id: _KeyId
    fingerprint: _Fingerprint
    #: A registered address (for pickup-portal links), or None.
    email: _Email | None = None
    valid_from: _UtcTime
    valid_until: _UtcTime | None = None
    previous_keys: Annotated[tuple[PreviousSigningKey, ...], Field(max_length=100)] = ()
    #: The node's audit-log verifier key, to keep the checkpoints its receipts carry; None:
    #: not published (omitted from the canonical bytes when None, so directories signed
    #: before the field existed keep their bytes).
    audit_key: AuditKey | None = None

    @field_validator("valid_from")
    @classmethod
    def _utc_from(cls, value: datetime) -> datetime:
        return _utc(value)

    @field_validator("valid_until")
    @classmethod
    def _utc_until(cls, value: datetime | None) -> datetime | None:
        return None if value is None else _utc(value)

    @model_validator(mode="after")
    def _consistent(self) -> DirectoryEntry:
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        ids = [self.key_id, *(p.key_id for p in self.previous_keys)]
        if len(set(ids)) != len(ids):
            raise ValueError("a signing key is listed twice in the entry")
        return self

    def key_ids(self) -> tuple[str, ...]:
        """Every signing key id of the entry, current first."""
        return (self.key_id, *(p.key_id for p in self.previous_keys))


class Revocation(_Model):
    """A signing key revoked from ``revoked_at``: signatures dated at or after it are refused;
    those dated before it still stand."""

    org_id: _OrgId
    key_id: _KeyId
    revoked_at: _UtcTime
    reason: Annotated[Prose, Field(min_length=1, max_length=500)]

    @field_validator("revoked_at")
    @classmethod
    def _utc_at(cls, value: datetime) -> datetime:
        return _utc(value)


class Authority(_Model):
    """The directory authority: its name and the id of the minisign key it signs with."""

    name: _Name
    key_id: _KeyId


class DirectoryDocument(_Model):
    """The signed directory (``directory.json``)."""

    type: Literal["handover.directory"] = DOCUMENT_TYPE
    version: Literal[1] = DOCUMENT_VERSION
    authority: Authority
    #: Increases with every signed issue; a node refuses a lower one than it holds.
    serial: Annotated[int, Field(ge=0, le=2**53)]
    issued_at: _UtcTime
    #: The authority promises a new issue by then; nodes refuse the document after it
    #: (plus a grace period).
    next_update: _UtcTime
    organisations: Annotated[tuple[DirectoryEntry, ...], Field(max_length=100_000)] = ()
    revocations: Annotated[tuple[Revocation, ...], Field(max_length=100_000)] = ()

    @field_validator("issued_at", "next_update")
    @classmethod
    def _utc_times(cls, value: datetime) -> datetime:
        return _utc(value)

    @model_validator(mode="after")
    def _consistent(self) -> DirectoryDocument:
        if self.next_update <= self.issued_at:
            raise ValueError("next_update must be after issued_at")
        seen: set[str] = set()
        key_owner: dict[str, str] = {}
        for entry in self.organisations:
            if entry.org_id in seen:
                raise ValueError(f"organisation {entry.org_id} is listed twice")
            seen.add(entry.org_id)
            for key_id in entry.key_ids():
                if key_id in key_owner:
                    raise ValueError(
                        f"signing key {key_id} is listed for both {key_owner[key_id]} and "
                        f"{entry.org_id}"
                    )
                key_owner[key_id] = entry.org_id
        revoked: set[tuple[str, str]] = set()
        for r in self.revocations:
            if (r.org_id, r.key_id) in revoked:
                raise ValueError(f"key {r.key_id} of {r.org_id} is revoked twice")
            revoked.add((r.org_id, r.key_id))
        return self

    def entry(self, org_id: str) -> DirectoryEntry | None:
        for e in self.organisations:
            if e.org_id == org_id:
                return e
        return None


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the directory document (``schemas/json/directory.schema.json``)."""
    schema = DirectoryDocument.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://handover.invalid/schemas/directory.schema.json"
    return schema


def entry_json_schema() -> dict[str, Any]:
    """The JSON Schema of one entry, as ``export-entry`` writes it."""
    schema = DirectoryEntry.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://handover.invalid/schemas/directory-entry.schema.json"
    return schema
