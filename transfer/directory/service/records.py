"""What the directory answers (the pinned authority, the held document, the listing),
its errors, and the small helpers its parts share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, NamedTuple
from urllib.parse import urlsplit, urlunsplit

from keys import minisign
from schemas.directory import DirectoryEntry, OrgKind
from schemas.manifest import canonical_json
from transfer.directory.document import (
    DirectoryImportError,
)
from transfer.errors import (
    AuthenticationError,
    NotFoundError,
    PolicyError,
)

Source = Literal["own", "authority", "local"]


class UnknownOrganisationError(NotFoundError):
    """The directory lists no organisation with that id."""


class UnknownSignerError(AuthenticationError):
    """No organisation in the directory has that signing key."""


class NoAuthorityError(PolicyError, DirectoryImportError):
    """No directory authority key is pinned on this node yet."""

    reason = "no-authority"


class FingerprintMismatchError(PolicyError):
    """The fingerprint confirmed by the operator is not the fingerprint of the keys given."""


@dataclass(frozen=True)
class PinnedAuthority:
    public_key: minisign.PublicKey
    fingerprint: str
    name: str | None
    pinned_at: datetime


@dataclass(frozen=True)
class HeldDocument:
    serial: int
    authority_name: str
    issued_at: datetime
    next_update: datetime
    imported_at: datetime
    source: str
    sha256: str
    organisations: int
    revocations: int


@dataclass(frozen=True)
class DirectoryImported:
    serial: int
    organisations: int
    revocations: int
    #: True when the node already held this very document.
    unchanged: bool
    next_update: datetime


@dataclass(frozen=True)
class ListedEntry:
    entry: DirectoryEntry
    source: Source
    #: True when an entry of higher precedence for the same organisation hides it.
    shadowed: bool


class _OrgRow(NamedTuple):
    """An organisation's row, as far as its own directory entry shows it."""

    id: str
    name: str
    kind: str
    urn: str | None
    laestab: str | None


_OWN_KIND: dict[str, OrgKind] = {
    "school": "school",
    "social_care": "social_care",
    "lado": "lado",
    "police": "police",
    "other_agency": "other",
}


def _safe_source(source: str) -> str:
    """A URL without credentials or query (they may hold a secret), or a file path."""
    if "://" not in source:
        return source[:500]
    parts = urlsplit(source)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))[:500]


def _entry_text(entry: DirectoryEntry) -> str:
    return canonical_json(entry.model_dump(mode="json")).decode("utf-8")
