"""Audit intents: entries promised by a committed change, appended exactly once.

Revision ID: audit_0002
Revises: audit_0001
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0002"
down_revision = "audit_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_intents",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_intents"),
    )
    op.create_index("ix_audit_intents_created_at", "audit_intents", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_audit_intents_created_at", table_name="audit_intents")
    op.drop_table("audit_intents")
