"""Why a leaver's file needed a reason to go (sent again, or not to the recorded destination).

Revision ID: outbox_0002
Revises: outbox_0001
Create Date: 2026-12-06

Existing packages keep NULL: none of them was asked for a reason.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "outbox_0002"
down_revision = "outbox_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outgoing_packages") as batch:
        batch.add_column(sa.Column("reasons_needed", sa.String(60), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outgoing_packages") as batch:
        batch.drop_column("reasons_needed")
