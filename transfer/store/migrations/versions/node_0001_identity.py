"""The node's identity: its id and a check value sealed under the KEK.

Existing nodes get their row the first time they are opened after this
migration, once the KEK has opened a value sealed before (``transfer.identity``):
a migration has no KEK, so it creates the table only.

Revision ID: node_0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "node_0001"
down_revision = None
branch_labels = ("node",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "node_identity",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("node_id", sa.String(36), nullable=False),
        sa.Column("kek_check", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_node_identity"),
    )


def downgrade() -> None:
    op.drop_table("node_identity")
