"""ORM models of the concern store.

The schema is created by the Alembic migration ``store_0001`` (never by
``create_all``); a test checks that the two agree. Sensitive text is never a
column here: it lives sealed in :class:`SealedField` (one row per record,
field and pupil), see ``docs/store.md``.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from transfer.store.db import Base
from transfer.store.types import UTCDateTime as UTCDateTime


class Organisation(Base):
    __tablename__ = "organisations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(20))
    urn: Mapped[str | None] = mapped_column(String(6))
    laestab: Mapped[str | None] = mapped_column(String(7))
    sealed_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Staff(Base):
    __tablename__ = "staff"
    __table_args__ = (UniqueConstraint("org_id", "username"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    username: Mapped[str] = mapped_column(String(100))
    display_name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str | None] = mapped_column(String(320))
    roles: Mapped[list[str]] = mapped_column(JSON)
    active: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())


class Category(Base):
    __tablename__ = "categories"
    __table_args__ = (UniqueConstraint("org_id", "key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    key: Mapped[str] = mapped_column(String(64))
    label: Mapped[str] = mapped_column(String(200))
    restricted: Mapped[bool] = mapped_column(Boolean)
    active: Mapped[bool] = mapped_column(Boolean)


class RetentionPolicy(Base):
    __tablename__ = "retention_policies"
    __table_args__ = (UniqueConstraint("org_id", "key"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    #: NULL: the node's default policy.
    org_id: Mapped[str | None] = mapped_column(ForeignKey("organisations.id"))
    key: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(500))
    #: What the period counts from: only "dob" so far.
    basis: Mapped[str] = mapped_column(String(20))
    years: Mapped[int] = mapped_column(Integer)


class Pupil(Base):
    __tablename__ = "pupils"
    __table_args__ = (UniqueConstraint("org_id", "upn"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    upn: Mapped[str | None] = mapped_column(String(13))
    surname: Mapped[str] = mapped_column(String(200))
    forename: Mapped[str] = mapped_column(String(200))
    dob: Mapped[date | None] = mapped_column(Date, index=True)
    sex: Mapped[str] = mapped_column(String(1))
    year_group: Mapped[str | None] = mapped_column(String(10))
    on_roll_from: Mapped[date | None] = mapped_column(Date)
    leaving_date: Mapped[date | None] = mapped_column(Date)
    destination_kind: Mapped[str | None] = mapped_column(String(20))
    destination_urn: Mapped[str | None] = mapped_column(String(6))
    destination_laestab: Mapped[str | None] = mapped_column(String(7))
    destination_name: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PupilKey(Base):
    """A pupil's data key, sealed under the organisation key; NULL once destroyed."""

    __tablename__ = "pupil_keys"

    pupil_id: Mapped[str] = mapped_column(ForeignKey("pupils.id"), primary_key=True)
    sealed_key: Mapped[bytes | None] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class ProvenanceRow(Base):
    """Where a received record came from (another organisation's package)."""

    __tablename__ = "provenances"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    source_org_id: Mapped[str] = mapped_column(String(64))
    source_org_name: Mapped[str] = mapped_column(String(200))
    package_id: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(UTCDateTime())
    original_id: Mapped[str] = mapped_column(String(64))
    #: Keyed hash of the record as the sender wrote it (None: received before store_0005).
    digest: Mapped[str | None] = mapped_column(String(64))
    #: The earlier version of the same record from the same sender, when this one changed it.
    amends_id: Mapped[str | None] = mapped_column(String(36))

    __table_args__ = (
        Index("ix_provenances_source_original", "org_id", "source_org_id", "original_id"),
    )


class Concern(Base):
    __tablename__ = "concerns"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"), index=True)
    category_key: Mapped[str] = mapped_column(String(64))
    restricted: Mapped[bool] = mapped_column(Boolean)
    happened_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(36), index=True)
    status: Mapped[str] = mapped_column(String(20))
    provenance_id: Mapped[str | None] = mapped_column(ForeignKey("provenances.id"))
    #: The one-time key of the form that sent it (``NewConcern.submission_key``), or NULL.
    submission_key: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        Index("uq_concerns_recorded_by", "recorded_by", "submission_key", unique=True),
        #: The governors' report counts a school's concerns in a period, and finds the
        #: actions due through the school's concerns' ids (store_0007).
        Index("ix_concerns_org_happened", "org_id", "happened_at"),
        Index("ix_concerns_org_concern", "org_id", "id"),
    )


class ConcernPupil(Base):
    __tablename__ = "concern_pupils"

    concern_id: Mapped[str] = mapped_column(ForeignKey("concerns.id"), primary_key=True)
    pupil_id: Mapped[str] = mapped_column(ForeignKey("pupils.id"), primary_key=True, index=True)


class BodyMapMarkRow(Base):
    __tablename__ = "body_map_marks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    concern_id: Mapped[str] = mapped_column(ForeignKey("concerns.id"), index=True)
    pupil_id: Mapped[str] = mapped_column(ForeignKey("pupils.id"), index=True)
    side: Mapped[str] = mapped_column(String(5))
    x: Mapped[float] = mapped_column(Float)
    y: Mapped[float] = mapped_column(Float)


class Triage(Base):
    __tablename__ = "triage_decisions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    concern_id: Mapped[str] = mapped_column(ForeignKey("concerns.id"), index=True)
    decision: Mapped[str] = mapped_column(String(40))
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime())
    decided_by: Mapped[str] = mapped_column(String(36))
    provenance_id: Mapped[str | None] = mapped_column(ForeignKey("provenances.id"))


class Action(Base):
    __tablename__ = "actions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    concern_id: Mapped[str] = mapped_column(ForeignKey("concerns.id"), index=True)
    assignee_id: Mapped[str | None] = mapped_column(String(36))
    due_on: Mapped[date | None] = mapped_column(Date)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(36))
    provenance_id: Mapped[str | None] = mapped_column(ForeignKey("provenances.id"))


class ConcernAmendment(Base):
    """A concern's text was changed: who, when; the earlier text (and why it changed) is
    sealed in :class:`SealedField` under ``concern_amendments``, so nothing is overwritten
    silently."""

    __tablename__ = "concern_amendments"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    concern_id: Mapped[str] = mapped_column(ForeignKey("concerns.id"), index=True)
    amended_at: Mapped[datetime] = mapped_column(UTCDateTime())
    amended_by: Mapped[str] = mapped_column(String(36))


class Contact(Base):
    __tablename__ = "external_contacts"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    concern_id: Mapped[str] = mapped_column(ForeignKey("concerns.id"), index=True)
    contacted_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_by: Mapped[str] = mapped_column(String(36))
    provenance_id: Mapped[str | None] = mapped_column(ForeignKey("provenances.id"))


class Document(Base):
    __tablename__ = "documents"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    pupil_id: Mapped[str] = mapped_column(ForeignKey("pupils.id"), index=True)
    concern_id: Mapped[str | None] = mapped_column(ForeignKey("concerns.id"))
    #: The file's name under ``documents/<org>/<pupil>/``: a keyed hash of the plaintext's
    #: SHA-256 (``blobs.document_name``). NULL only in rows written before ``store_0003``,
    #: until ``Store.open`` renames their files.
    name: Mapped[str | None] = mapped_column(String(64))
    #: The plaintext's SHA-256 in rows written before ``store_0003`` (it was the file
    #: name); moved into ``sealed_fields`` and set to NULL by ``Store.open``.
    sha256: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger)
    media_type: Mapped[str] = mapped_column(String(200))
    uploaded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    uploaded_by: Mapped[str] = mapped_column(String(36))
    provenance_id: Mapped[str | None] = mapped_column(ForeignKey("provenances.id"))


class SealedField(Base):
    """One sealed field of one record, for one pupil (under that pupil's data key)."""

    __tablename__ = "sealed_fields"
    __table_args__ = (Index("ix_sealed_fields_pupil_id", "pupil_id"),)

    record_table: Mapped[str] = mapped_column(String(40), primary_key=True)
    record_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    pupil_id: Mapped[str] = mapped_column(ForeignKey("pupils.id"), primary_key=True)
    field: Mapped[str] = mapped_column(String(40), primary_key=True)
    sealed: Mapped[bytes] = mapped_column(LargeBinary)


class PupilEvent(Base):
    """A line in a pupil's chronology about a transfer or referral (its summary is sealed)."""

    __tablename__ = "pupil_events"
    __table_args__ = (Index("ix_pupil_events_pupil_id", "pupil_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    pupil_id: Mapped[str] = mapped_column(ForeignKey("pupils.id"))
    kind: Mapped[str] = mapped_column(String(64))
    ref: Mapped[str | None] = mapped_column(String(200))
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    #: The staff member who caused it; NULL when the node itself recorded it.
    recorded_by: Mapped[str | None] = mapped_column(String(36))


class Tombstone(Base):
    __tablename__ = "tombstones"
    __table_args__ = (UniqueConstraint("pupil_id"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    pupil_id: Mapped[str] = mapped_column(String(36))
    erased_at: Mapped[datetime] = mapped_column(UTCDateTime())
    policy: Mapped[str] = mapped_column(String(64))
    erased_by: Mapped[str] = mapped_column(String(64))
    erased: Mapped[dict[str, int]] = mapped_column(JSON)


STORE_TABLES = frozenset(
    {
        "organisations",
        "staff",
        "categories",
        "retention_policies",
        "pupils",
        "pupil_keys",
        "provenances",
        "concerns",
        "concern_pupils",
        "body_map_marks",
        "triage_decisions",
        "actions",
        "external_contacts",
        "documents",
        "sealed_fields",
        "tombstones",
        "pupil_events",
        "concern_amendments",
    }
)
