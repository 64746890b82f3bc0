"""The outbox's tables (created by migration ``outbox_0001``; never by ``create_all``).

``outgoing_packages`` holds one row per package this node sends: its state,
the delivery lease (``claimed_by``, ``lease_until``) that lets several
``serve`` processes share the work, and the retry schedule. Every change of
state is a row in ``outgoing_events``; every verified receipt is kept, its
signed bytes exactly, in ``outgoing_receipts``. No safeguarding text is kept
here: the package itself is ciphertext in ``data_dir/outgoing/``.
"""

from __future__ import annotations

import sqlalchemy as sa

from transfer.store.db import Base
from transfer.store.models import UTCDateTime

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

outgoing_packages = sa.Table(
    "outgoing_packages",
    Base.metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    #: The sending organisation (on this node) and the receiving one (from the directory).
    sa.Column("org_id", sa.String(64), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("to_org_id", sa.String(64), nullable=False),
    #: The receiver's name in the directory when the package was queued.
    sa.Column("to_name", sa.String(200), nullable=False),
    sa.Column("kind", sa.String(40), nullable=False),
    #: draft, queued, delivered, viewed, accepted, rejected, failed, cancelled.
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("ciphertext_size", sa.BigInteger(), nullable=True),
    sa.Column("ciphertext_sha256", sa.String(64), nullable=True),
    sa.Column("manifest_sha256", sa.String(64), nullable=True),
    sa.Column("created_by", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    #: When it was (last) queued: the give-up time counts from here.
    sa.Column("queued_at", UTCDateTime(), nullable=True),
    sa.Column("state_changed_at", UTCDateTime(), nullable=False),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("claimed_by", sa.String(100), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    #: The last passing error (shown to the DSL), and the reason it failed for good.
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Column("failure_reason", sa.String(500), nullable=True),
    #: When to ask the receiver for receipts next (a fall-back to their push).
    sa.Column("next_pull_at", UTCDateTime(), nullable=True),
    sa.Column("pulls", sa.Integer(), nullable=False),
    #: Why the sender had to give a reason to send it ("repeat", "not_destination", comma
    #: separated), or NULL. The reason itself is sealed under the pupil's data key
    #: (``sealed_fields``, record table ``outgoing_packages``, field ``send_reason``).
    sa.Column("reasons_needed", sa.String(60), nullable=True),
    sa.Index("ix_outgoing_packages_state_next", "state", "next_attempt_at"),
    sa.Index("ix_outgoing_packages_org_id", "org_id"),
)

outgoing_pupils = sa.Table(
    "outgoing_pupils",
    Base.metadata,
    sa.Column(
        "package_id",
        sa.String(36),
        sa.ForeignKey("outgoing_packages.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("pupil_id", sa.String(36), primary_key=True),
    sa.Index("ix_outgoing_pupils_pupil_id", "pupil_id"),
)

outgoing_events = sa.Table(
    "outgoing_events",
    Base.metadata,
    sa.Column("id", _ID, primary_key=True, autoincrement=True),
    sa.Column(
        "package_id",
        sa.String(36),
        sa.ForeignKey("outgoing_packages.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("at", UTCDateTime(), nullable=False),
    #: queued, sent, delivered, viewed, accepted, rejected, failed, cancelled, retry, resent...
    sa.Column("event", sa.String(40), nullable=False),
    sa.Column("state", sa.String(20), nullable=False),
    #: The staff member who caused it; NULL when the node itself did.
    sa.Column("actor", sa.String(36), nullable=True),
    sa.Column("detail", sa.String(500), nullable=True),
)

outgoing_receipts = sa.Table(
    "outgoing_receipts",
    Base.metadata,
    sa.Column("receipt_id", sa.String(36), primary_key=True),
    sa.Column(
        "package_id",
        sa.String(36),
        sa.ForeignKey("outgoing_packages.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("issued_at", UTCDateTime(), nullable=False),
    sa.Column("received_at", UTCDateTime(), nullable=False),
    #: The signed body, byte for byte, and its minisign signature.
    sa.Column("body", sa.LargeBinary(), nullable=False),
    sa.Column("signature", sa.Text(), nullable=False),
)

OUTBOX_TABLES = frozenset(
    {"outgoing_packages", "outgoing_pupils", "outgoing_events", "outgoing_receipts"}
)
