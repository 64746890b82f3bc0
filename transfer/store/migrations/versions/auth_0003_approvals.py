"""Account changes waiting for a DSL's approval (the two-person rule).

An administrator could make themselves a DSL, or reset a DSL's password and
authenticator and take the account over. Such changes now wait in
``auth_approvals`` until a DSL other than the requester approves them. A new
table: existing accounts are carried forward unchanged.

Revision ID: auth_0003
Revises: auth_0002
Create Date: 2026-12-14
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "auth_0003"
down_revision = "auth_0002"
branch_labels = None
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "auth_approvals",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pending_key", sa.String(200), nullable=True),
        sa.Column("staff_id", sa.String(36), nullable=True),
        sa.Column("username", sa.String(100), nullable=True),
        sa.Column("display_name", sa.String(200), nullable=True),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=True),
        sa.Column("roles_before", sa.JSON(), nullable=True),
        sa.Column("password_hash", sa.String(256), nullable=True),
        sa.Column("requested_by", sa.String(36), nullable=True),
        sa.Column("requested_as", sa.String(16), nullable=False),
        _ts("requested_at"),
        _ts("expires_at"),
        sa.Column("decided_by", sa.String(36), nullable=True),
        _ts("decided_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_auth_approvals"),
        sa.UniqueConstraint("pending_key", name="uq_auth_approvals_pending_key"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_auth_approvals_org_id_organisations"
        ),
        sa.ForeignKeyConstraint(
            ["staff_id"], ["staff.id"], name="fk_auth_approvals_staff_id_staff"
        ),
    )
    op.create_index("ix_auth_approvals_org_id", "auth_approvals", ["org_id"])
    op.create_index("ix_auth_approvals_staff_id", "auth_approvals", ["staff_id"])


def downgrade() -> None:
    op.drop_index("ix_auth_approvals_staff_id", table_name="auth_approvals")
    op.drop_index("ix_auth_approvals_org_id", table_name="auth_approvals")
    op.drop_table("auth_approvals")
