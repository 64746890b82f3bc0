"""Failed sign-ins at unknown usernames, in the database (shared by every serve process).

They were counted in each process's memory: two ``serve`` processes on one
PostgreSQL each allowed the full number of attempts, so an unknown username
locked later than a real one and the answers told them apart. Nothing to carry
forward: the old counters lived in memory only.

Revision ID: auth_0002
Revises: auth_0001
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "auth_0002"
down_revision = "auth_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "auth_unknown_signins",
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("key_hash", name="pk_auth_unknown_signins"),
    )
    op.create_index(
        "ix_auth_unknown_signins_last_failed_at", "auth_unknown_signins", ["last_failed_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_auth_unknown_signins_last_failed_at", table_name="auth_unknown_signins")
    op.drop_table("auth_unknown_signins")
