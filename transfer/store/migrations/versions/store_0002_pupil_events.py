"""Pupil events: chronology lines about transfers and referrals (summary sealed).

Revision ID: store_0002
Revises: store_0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0002"
down_revision = "store_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pupil_events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("pupil_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("ref", sa.String(200), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("recorded_by", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pupil_events"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_pupil_events_org_id_organisations"
        ),
        sa.ForeignKeyConstraint(
            ["pupil_id"], ["pupils.id"], name="fk_pupil_events_pupil_id_pupils"
        ),
    )
    op.create_index("ix_pupil_events_pupil_id", "pupil_events", ["pupil_id"])


def downgrade() -> None:
    op.drop_index("ix_pupil_events_pupil_id", table_name="pupil_events")
    op.drop_table("pupil_events")
