"""One-time invitation links for new staff accounts.

An administrator invites a person by a link instead of typing a first
password; only the SHA-256 of the link's token is kept. A new table:
existing accounts are carried forward unchanged.

Revision ID: auth_0004
Revises: auth_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "auth_0004"
down_revision = "auth_0003"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "auth_invitations",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("staff_id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        _ts("used_at", nullable=True),
        _ts("withdrawn_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_auth_invitations"),
        sa.UniqueConstraint("token_hash", name="uq_auth_invitations_token_hash"),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name="fk_auth_invitations_staff_id_staff"
        ),
    )
    op.create_index("ix_auth_invitations_staff_id", "auth_invitations", ["staff_id"])


def downgrade() -> None:
    op.drop_index("ix_auth_invitations_staff_id", table_name="auth_invitations")
    op.drop_table("auth_invitations")
