"""The exchange's tables: the receiving side's (incoming packages, issued receipts, the
replay table), the sending side's (outgoing packages, their events and receipts) and
the transfer requests'. Each section says which migration creates it; none is ever
made by ``create_all`` (a test checks that the two agree).
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import sqlalchemy as sa
from sqlalchemy import BigInteger, ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from transfer.states.incoming import INCOMING, Incoming, IncomingEvent
from transfer.store.db import Base
from transfer.store.tables import UTCDateTime

# --- The receiving side --------------------------------------------------------------
# The receiving side's tables: incoming packages, the receipts issued for them, and the
# replay table of signed peer requests.
#
# Created by the Alembic migration ``inbox_0001`` (never by ``create_all``); a test
# checks that the two agree. No package content is ever a column here: a package's
# ciphertext lives in ``data_dir/incoming`` then ``data_dir/inbox`` until it is
# accepted or rejected; a receipt is the signed JSON that was sent.

#: The states of an incoming package (transfer/states/incoming.py is the machine).
RECEIVING: Final = Incoming.RECEIVING.value
DELIVERED: Final = Incoming.DELIVERED.value
VIEWED: Final = Incoming.VIEWED.value
ACCEPTED: Final = Incoming.ACCEPTED.value
REJECTED: Final = Incoming.REJECTED.value
#: The upload completed but the package failed a check (hash, signature, addressee): deleted.
REFUSED: Final = Incoming.REFUSED.value
STATES = tuple(state.value for state in Incoming)
#: States in which a DSL may still accept or reject.
OPEN_STATES = tuple(state.value for state in INCOMING.sources(IncomingEvent.ACCEPT))

#: Push states of an issued receipt.
PUSH_NONE: Final = "none"  # delivered receipts: returned in the response to ``complete``
PUSH_PENDING: Final = "pending"
PUSH_DONE: Final = "pushed"
PUSH_FAILED: Final = "failed"


class IncomingPackage(Base):
    """A package another organisation is sending (or has sent) to one of ours."""

    __tablename__ = "incoming_packages"
    __table_args__ = (Index("ix_incoming_packages_recipient_state", "recipient_org_id", "state"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    recipient_org_id: Mapped[str] = mapped_column(ForeignKey("organisations.id"))
    sender_org_id: Mapped[str] = mapped_column(String(64))
    sender_name: Mapped[str] = mapped_column(String(200))
    #: The signing key id of the request that offered the package.
    sender_key_id: Mapped[str] = mapped_column(String(16))
    package_kind: Mapped[str] = mapped_column(String(40))
    size: Mapped[int] = mapped_column(BigInteger)
    ciphertext_sha256: Mapped[str] = mapped_column(String(64))
    #: Bytes received, written and fsynced (the resume point).
    received: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(20))
    manifest_sha256: Mapped[str | None] = mapped_column(String(64))
    entries: Mapped[int | None] = mapped_column(Integer)
    content_size: Mapped[int | None] = mapped_column(BigInteger)
    offered_at: Mapped[datetime] = mapped_column(UTCDateTime())
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    viewed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    #: The staff member (of the recipient organisation) who accepted or rejected it.
    decided_by: Mapped[str | None] = mapped_column(String(36))
    #: The pupil the package was imported into.
    pupil_id: Mapped[str | None] = mapped_column(String(36))
    #: Why the package was refused (a problem slug and a short reason, never content).
    refused_reason: Mapped[str | None] = mapped_column(String(300))


class IssuedReceipt(Base):
    """A signed receipt this node issued, and its delivery back to the sender's node."""

    __tablename__ = "inbox_receipts"
    __table_args__ = (Index("ix_inbox_receipts_push", "push_state", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    package_id: Mapped[str] = mapped_column(ForeignKey("incoming_packages.id"), index=True)
    kind: Mapped[str] = mapped_column(String(20))
    #: ``SignedReceipt.to_json()``, exactly as sent.
    data: Mapped[bytes] = mapped_column(LargeBinary)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime())
    push_state: Mapped[str] = mapped_column(String(20))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    last_error: Mapped[str | None] = mapped_column(String(500))
    pushed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PeerNonce(Base):
    """A nonce of a signed peer request, kept while a replay of it could still be accepted."""

    __tablename__ = "peer_nonces"

    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(128), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)


INBOX_TABLES = frozenset({"incoming_packages", "inbox_receipts", "peer_nonces"})

# --- The sending side ----------------------------------------------------------------
# The outbox's tables (created by migration ``outbox_0001``; never by ``create_all``).
#
# ``outgoing_packages`` holds one row per package this node sends: its state,
# the delivery lease (``claimed_by``, ``lease_until``) that lets several
# ``serve`` processes share the work, and the retry schedule. Every change of
# state is a row in ``outgoing_events``; every verified receipt is kept, its
# signed bytes exactly, in ``outgoing_receipts``. No safeguarding text is kept
# here: the package itself is ciphertext in ``data_dir/outgoing/``.

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

# --- Transfer requests ---------------------------------------------------------------
# The transfer-request table (created by migration ``requests_0001``).
#
# A request has one row per organisation on this node that takes part in it:
# the requesting school's row (``side`` "sent") and the holding school's row
# (``side`` "received"). Both carry the same ``request_id``; when both schools
# are hosted on one node there are two rows, one per organisation.
#
# ``outbound`` says what this node still owes the other side ("request" or
# "decision"); the send sweep works on rows where it is set and due, with a
# lease (``lease_until``) so that several ``serve`` processes never send one at
# the same time, and an exponential back-off (``attempts``, ``next_attempt_at``).

transfer_requests = sa.Table(
    "transfer_requests",
    Base.metadata,
    sa.Column("request_id", sa.String(36), primary_key=True),
    #: The organisation on this node that this row belongs to.
    sa.Column("org_id", sa.String(64), sa.ForeignKey("organisations.id"), primary_key=True),
    #: sent (we asked for a file) or received (we were asked).
    sa.Column("side", sa.String(10), nullable=False),
    sa.Column("requester_org_id", sa.String(64), nullable=False),
    sa.Column("holder_org_id", sa.String(64), nullable=False),
    sa.Column("upn", sa.String(13), nullable=False),
    sa.Column("dob", sa.Date(), nullable=True),
    sa.Column("surname", sa.String(200), nullable=False),
    sa.Column("forename", sa.String(200), nullable=False),
    sa.Column("note", sa.String(500), nullable=True),
    #: Our pupil: the new pupil (sent side) or the one matched by UPN (received side).
    sa.Column("pupil_id", sa.String(36), nullable=True),
    #: sent side: pending, sent, authorised, declined, failed.
    #: received side: received, authorising, authorised, declined.
    sa.Column("state", sa.String(20), nullable=False),
    sa.Column("reason", sa.String(500), nullable=True),
    sa.Column("package_id", sa.String(36), nullable=True),
    sa.Column("created_by", sa.String(36), nullable=True),
    sa.Column("created_at", UTCDateTime(), nullable=False),
    sa.Column("updated_at", UTCDateTime(), nullable=False),
    sa.Column("decided_at", UTCDateTime(), nullable=True),
    sa.Column("decided_by", sa.String(36), nullable=True),
    #: What we still have to send the other node: request, decision, or NULL.
    sa.Column("outbound", sa.String(10), nullable=True),
    sa.Column("attempts", sa.Integer(), nullable=False),
    sa.Column("next_attempt_at", UTCDateTime(), nullable=True),
    sa.Column("lease_until", UTCDateTime(), nullable=True),
    sa.Column("last_error", sa.String(500), nullable=True),
    sa.Index("ix_transfer_requests_outbound", "outbound", "next_attempt_at"),
    sa.Index("ix_transfer_requests_org_state", "org_id", "state"),
)

REQUEST_TABLES = frozenset({"transfer_requests"})
