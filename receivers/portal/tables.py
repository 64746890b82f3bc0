"""The pickup portal's tables (migrations ``portal_0001``, ``portal_0002``; never ``create_all``).

No secret is stored in the clear: link tokens and session secrets as
SHA-256, the passcode as Argon2id, the per-pickup X25519 identity sealed
under the KEK and the link token (or the session secret), TOTP secrets
sealed under the KEK.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from transfer.store.db import Base
from transfer.store.tables import UTCDateTime

_SEQ = BigInteger().with_variant(Integer(), "sqlite")


class PortalPickup(Base):
    """One referral package offered to one agency address through a one-time link."""

    __tablename__ = "portal_pickups"
    __table_args__ = (Index("ix_portal_pickups_org_id", "org_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    referral_id: Mapped[str] = mapped_column(String(64))
    email: Mapped[str] = mapped_column(String(254))
    agency_name: Mapped[str | None] = mapped_column(String(200))
    package_id: Mapped[str] = mapped_column(String(36))
    package_kind: Mapped[str] = mapped_column(String(32))
    #: SHA-256 and size of the stored ciphertext (encrypted to the pickup identity).
    stored_sha256: Mapped[str] = mapped_column(String(64))
    stored_size: Mapped[int] = mapped_column(BigInteger())
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    #: NULL once revoked or expired and swept (the package can no longer be opened).
    identity_sealed: Mapped[bytes | None] = mapped_column(LargeBinary())
    passcode_hash: Mapped[str] = mapped_column(String(256))
    emailed: Mapped[bool] = mapped_column(Boolean())
    created_by: Mapped[str] = mapped_column(String(36))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    failed_count: Mapped[int] = mapped_column(Integer())
    locked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(36))
    first_opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    acknowledged_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    ack_name: Mapped[str | None] = mapped_column(String(200))
    ack_reference: Mapped[str | None] = mapped_column(String(100))
    ack_ip: Mapped[str | None] = mapped_column(String(64))
    #: Documents released through this link (the release is a conditional update of this
    #: count, so nothing is released once the link has closed).
    downloads: Mapped[int] = mapped_column(Integer(), server_default=text("0"))
    swept_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PortalSession(Base):
    """A signed-in agency user's browser session on one pickup."""

    __tablename__ = "portal_sessions"
    __table_args__ = (Index("ix_portal_sessions_pickup_id", "pickup_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    pickup_id: Mapped[str] = mapped_column(ForeignKey("portal_pickups.id"))
    identity_sealed: Mapped[bytes | None] = mapped_column(LargeBinary())
    via: Mapped[str] = mapped_column(String(16))
    ip: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    opened: Mapped[bool] = mapped_column(Boolean())


class PortalEvent(Base):
    """The receipt trail of a pickup: who did what, when, from which address."""

    __tablename__ = "portal_events"
    __table_args__ = (Index("ix_portal_events_pickup_id", "pickup_id"),)

    #: Insertion order (events of one instant keep the order they happened in).
    seq: Mapped[int] = mapped_column(_SEQ, primary_key=True, autoincrement=True)
    pickup_id: Mapped[str] = mapped_column(ForeignKey("portal_pickups.id"))
    kind: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    ip: Mapped[str | None] = mapped_column(String(64))
    #: The agency address (or, for an acknowledgement, the name given).
    who: Mapped[str | None] = mapped_column(String(254))
    #: What: a document's path and SHA-256, the agency's reference; never content.
    what: Mapped[str | None] = mapped_column(String(300))


class PortalAgencyUser(Base):
    """An agency address that comes back: its TOTP enrolment."""

    __tablename__ = "portal_agency_users"

    email: Mapped[str] = mapped_column(String(254), primary_key=True)
    totp_sealed: Mapped[bytes | None] = mapped_column(LargeBinary())
    #: No longer written: a set-up secret travels sealed in the set-up form (``portal_0002``).
    totp_pending_sealed: Mapped[bytes | None] = mapped_column(LargeBinary())
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger())
    #: Wrong codes from the current app given to replace it (counted before the check).
    totp_failed_count: Mapped[int] = mapped_column(Integer(), server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    enrolled_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


PORTAL_TABLES = frozenset(
    {"portal_pickups", "portal_sessions", "portal_events", "portal_agency_users"}
)
