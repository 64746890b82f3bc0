"""Tables of the directory (created by the Alembic migration ``directory_0001``).

- ``directory_authority``: the one pinned authority key (row id 1).
- ``directory_document``: the directory this node holds (row id 1): its exact
  bytes and signature, kept as evidence and for rollback protection.
- ``directory_entries``: the entries in force, one per (source, organisation):
  ``authority`` rows are replaced by each import, ``local`` rows are added by hand.
- ``directory_revocations``: revoked signing keys. Sticky: an import adds to
  them or moves a time earlier, never removes one.

The node's own organisations are not stored here: they come from its key files.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from transfer.store.db import Base
from transfer.store.tables import UTCDateTime

__all__ = [
    "DIRECTORY_TABLES",
    "SOURCE_AUTHORITY",
    "SOURCE_LOCAL",
    "AuthorityRow",
    "DocumentRow",
    "EntryRow",
    "RevocationRow",
]

SOURCE_AUTHORITY = "authority"
SOURCE_LOCAL = "local"


class AuthorityRow(Base):
    __tablename__ = "directory_authority"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    #: The minisign public key, one-line base64 form (``RW...``).
    public_key: Mapped[str] = mapped_column(String(100))
    key_id: Mapped[str] = mapped_column(String(16))
    #: The authority's name, as its latest imported directory gives it.
    name: Mapped[str | None] = mapped_column(String(200))
    pinned_at: Mapped[datetime] = mapped_column(UTCDateTime())
    pinned_by: Mapped[str | None] = mapped_column(String(100))


class DocumentRow(Base):
    __tablename__ = "directory_document"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    serial: Mapped[int] = mapped_column(BigInteger)
    authority_key_id: Mapped[str] = mapped_column(String(16))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    signature: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str] = mapped_column(String(64))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    next_update: Mapped[datetime] = mapped_column(UTCDateTime())
    imported_at: Mapped[datetime] = mapped_column(UTCDateTime())
    source: Mapped[str] = mapped_column(String(500))


class EntryRow(Base):
    __tablename__ = "directory_entries"

    source: Mapped[str] = mapped_column(String(16), primary_key=True)
    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The entry's canonical JSON.
    entry: Mapped[str] = mapped_column(Text)
    fingerprint: Mapped[str] = mapped_column(String(19))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime())
    added_by: Mapped[str | None] = mapped_column(String(100))


class RevocationRow(Base):
    __tablename__ = "directory_revocations"

    org_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    revoked_at: Mapped[datetime] = mapped_column(UTCDateTime())
    reason: Mapped[str] = mapped_column(String(500))
    #: The serial of the directory that first carried it.
    serial: Mapped[int] = mapped_column(BigInteger)


DIRECTORY_TABLES = frozenset(
    {"directory_authority", "directory_document", "directory_entries", "directory_revocations"}
)
