"""Alerts that also concern one member of staff (an overdue action's owner).

Revision ID: requests_0002
Revises: requests_0001
Create Date: 2026-12-06

Existing alerts keep NULL: they are the DSL team's only, as before.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "requests_0002"
down_revision = "requests_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.add_column(sa.Column("staff_id", sa.String(36), nullable=True))
        batch.create_index("ix_alerts_org_staff", ["org_id", "staff_id"])


def downgrade() -> None:
    with op.batch_alter_table("alerts") as batch:
        batch.drop_index("ix_alerts_org_staff")
        batch.drop_column("staff_id")
