"""Concern amendments: a concern's text can be changed with the earlier text kept.

Each amendment is a row (who, when) whose earlier text and reason are sealed in
``sealed_fields`` under ``concern_amendments``. Existing concerns have never been
amended: their current text is their only text, and stays where it is.

Revision ID: store_0004
Revises: store_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0004"
down_revision = "store_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "concern_amendments",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("concern_id", sa.String(36), nullable=False),
        sa.Column("amended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amended_by", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_concern_amendments"),
        sa.ForeignKeyConstraint(
            ["concern_id"], ["concerns.id"], name="fk_concern_amendments_concern_id_concerns"
        ),
    )
    op.create_index("ix_concern_amendments_concern_id", "concern_amendments", ["concern_id"])


def downgrade() -> None:
    op.drop_index("ix_concern_amendments_concern_id", table_name="concern_amendments")
    op.drop_table("concern_amendments")
