"""The referral tables (created by migration ``referrals_0001``; never by ``create_all``).

No safeguarding text is a column here. The form, the selection, the
redaction marks, the rejection reason, the outcome, the hand-over note and
the acknowledging person's name are sealed under the pupil's data key in the
store's ``sealed_fields`` table (``record_table`` = ``referrals``), so erasing
the pupil (destroying its key and its sealed fields) erases them too.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Boolean, Date, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from transfer.store.db import Base
from transfer.store.tables import UTCDateTime

__all__ = ["REFERRAL_TABLES", "Referral", "ReferralEvent"]

REFERRAL_TABLES = frozenset({"referrals", "referral_events"})


class Referral(Base):
    __tablename__ = "referrals"
    __table_args__ = (
        Index("ix_referrals_org_id_state", "org_id", "state"),
        Index("ix_referrals_pupil_id", "pupil_id"),
        Index("ix_referrals_package_id", "package_id"),
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    pupil_id: Mapped[str] = mapped_column(ForeignKey("pupils.id"))
    kind: Mapped[str] = mapped_column(String(20))
    agency_org_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(20))
    route: Mapped[str | None] = mapped_column(String(20))
    due_on: Mapped[date | None] = mapped_column(Date())
    sent_without_consent: Mapped[bool] = mapped_column(Boolean(), default=False)
    #: The form's no_consent_reason code when sent without consent (a code, not text).
    consent_reason: Mapped[str | None] = mapped_column(String(40))
    package_id: Mapped[str | None] = mapped_column(String(36))
    ciphertext_sha256: Mapped[str | None] = mapped_column(String(64))
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    agency_reference: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime())


class ReferralEvent(Base):
    """One timed step of a referral's life (``note`` is a short code-like text, never content)."""

    __tablename__ = "referral_events"
    __table_args__ = (UniqueConstraint("referral_id", "seq"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    referral_id: Mapped[str] = mapped_column(ForeignKey("referrals.id"))
    #: 1, 2, 3... per referral: the order of the steps (times may tie).
    seq: Mapped[int] = mapped_column(Integer())
    at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str | None] = mapped_column(String(36))
    note: Mapped[str] = mapped_column(String(200), default="")
