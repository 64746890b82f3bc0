"""Alerts and transfer requests.

Revision ID: requests_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "requests_0001"
down_revision = None
branch_labels = ("requests",)
depends_on = "store_0001"


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("level", sa.String(20), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("subject", sa.String(200), nullable=False),
        sa.Column("message", sa.String(1000), nullable=False),
        sa.Column("pupil_id", sa.String(36), nullable=True),
        sa.Column("ref", sa.String(200), nullable=True),
        _ts("raised_at"),
        _ts("closed_at", nullable=True),
        sa.Column("closed_reason", sa.String(20), nullable=True),
        sa.Column("closed_by", sa.String(36), nullable=True),
        sa.Column("mail_state", sa.String(10), nullable=False),
        sa.Column("mail_attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_alerts"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_alerts_org_id_organisations"
        ),
        sa.UniqueConstraint("org_id", "key", "level", "day", name="uq_alerts_org_key_level_day"),
    )
    op.create_index("ix_alerts_org_key", "alerts", ["org_id", "key"])
    op.create_index("ix_alerts_org_closed", "alerts", ["org_id", "closed_at"])
    op.create_table(
        "transfer_requests",
        sa.Column("request_id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("side", sa.String(10), nullable=False),
        sa.Column("requester_org_id", sa.String(64), nullable=False),
        sa.Column("holder_org_id", sa.String(64), nullable=False),
        sa.Column("upn", sa.String(13), nullable=False),
        sa.Column("dob", sa.Date(), nullable=True),
        sa.Column("surname", sa.String(200), nullable=False),
        sa.Column("forename", sa.String(200), nullable=False),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("pupil_id", sa.String(36), nullable=True),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(500), nullable=True),
        sa.Column("package_id", sa.String(36), nullable=True),
        sa.Column("created_by", sa.String(36), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("decided_at", nullable=True),
        sa.Column("decided_by", sa.String(36), nullable=True),
        sa.Column("outbound", sa.String(10), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        _ts("lease_until", nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("request_id", "org_id", name="pk_transfer_requests"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_transfer_requests_org_id_organisations"
        ),
    )
    op.create_index(
        "ix_transfer_requests_outbound", "transfer_requests", ["outbound", "next_attempt_at"]
    )
    op.create_index("ix_transfer_requests_org_state", "transfer_requests", ["org_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_transfer_requests_org_state", table_name="transfer_requests")
    op.drop_index("ix_transfer_requests_outbound", table_name="transfer_requests")
    op.drop_table("transfer_requests")
    op.drop_index("ix_alerts_org_closed", table_name="alerts")
    op.drop_index("ix_alerts_org_key", table_name="alerts")
    op.drop_table("alerts")
