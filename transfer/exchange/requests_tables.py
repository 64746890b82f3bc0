"""The transfer-request table (created by migration ``requests_0001``).

A request has one row per organisation on this node that takes part in it:
the requesting school's row (``side`` "sent") and the holding school's row
(``side`` "received"). Both carry the same ``request_id``; when both schools
are hosted on one node there are two rows, one per organisation.

``outbound`` says what this node still owes the other side ("request" or
"decision"); the send sweep works on rows where it is set and due, with a
lease (``lease_until``) so that several ``serve`` processes never send one at
the same time, and an exponential back-off (``attempts``, ``next_attempt_at``).
"""

from __future__ import annotations

import sqlalchemy as sa

from transfer.store.db import Base
from transfer.store.models import UTCDateTime

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
