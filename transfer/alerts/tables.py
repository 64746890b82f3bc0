"""The alerts table (created by migration ``requests_0001``; never by ``create_all``).

One row per alert raised: an organisation, a ``key`` naming what it is about
(``transfer-deadline:<pupil id>:<leaving date>``), a level and the day it was
raised. The unique constraint on (org, key, level, day) is what makes raising
idempotent, across processes too: a second sweep the same day inserts nothing.
Subjects and messages are written by the node itself and never carry
safeguarding text (no names, no concern content); they name pupils by id only.
"""

from __future__ import annotations

import sqlalchemy as sa

from transfer.store.db import Base
from transfer.store.tables import UTCDateTime

alerts = sa.Table(
    "alerts",
    Base.metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("org_id", sa.String(64), sa.ForeignKey("organisations.id"), nullable=False),
    sa.Column("key", sa.String(200), nullable=False),
    #: upcoming, due, overdue, info.
    sa.Column("level", sa.String(20), nullable=False),
    #: The day (Europe/London) it was raised: one alert per key, level and day.
    sa.Column("day", sa.Date(), nullable=False),
    sa.Column("subject", sa.String(200), nullable=False),
    sa.Column("message", sa.String(1000), nullable=False),
    sa.Column("pupil_id", sa.String(36), nullable=True),
    sa.Column("ref", sa.String(200), nullable=True),
    sa.Column("raised_at", UTCDateTime(), nullable=False),
    #: NULL while open; set when resolved (by the node), superseded or dismissed (by a DSL).
    sa.Column("closed_at", UTCDateTime(), nullable=True),
    sa.Column("closed_reason", sa.String(20), nullable=True),
    sa.Column("closed_by", sa.String(36), nullable=True),
    #: off (no SMTP), none (no DSL address), sending, sent, failed.
    sa.Column("mail_state", sa.String(10), nullable=False),
    sa.Column("mail_attempts", sa.Integer(), nullable=False),
    #: A member of staff the alert also concerns (an overdue action's owner), who sees it in
    #: the app and is e-mailed too; NULL: the DSL team's alone (migration ``requests_0002``).
    sa.Column("staff_id", sa.String(36), nullable=True),
    sa.UniqueConstraint("org_id", "key", "level", "day", name="uq_alerts_org_key_level_day"),
    sa.Index("ix_alerts_org_key", "org_id", "key"),
    sa.Index("ix_alerts_org_closed", "org_id", "closed_at"),
    sa.Index("ix_alerts_org_staff", "org_id", "staff_id"),
)

ALERT_TABLES = frozenset({"alerts"})
