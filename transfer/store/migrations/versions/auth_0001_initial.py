"""Staff accounts and sign-in: credentials, recovery codes, sessions, API tokens.

Revision ID: auth_0001
Revises:
Depends on: store_0001 (the ``staff`` table)
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.schema import SchemaItem

revision = "auth_0001"
down_revision = None
branch_labels = ("auth",)
depends_on = "store_0001"


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _staff_fk(table: str) -> list[SchemaItem]:
    return [
        sa.Column("staff_id", sa.String(36), nullable=False),
        sa.ForeignKeyConstraint(["staff_id"], ["staff.id"], name=f"fk_{table}_staff_id_staff"),
    ]


def upgrade() -> None:
    op.create_table(
        "auth_credentials",
        *_staff_fk("auth_credentials"),
        sa.Column("password_hash", sa.String(256), nullable=False),
        _ts("password_changed_at"),
        sa.Column("totp_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("totp_pending_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        _ts("last_failed_at", nullable=True),
        _ts("locked_until", nullable=True),
        sa.PrimaryKeyConstraint("staff_id", name="pk_auth_credentials"),
    )
    op.create_table(
        "auth_recovery_codes",
        sa.Column("id", sa.String(36), nullable=False),
        *_staff_fk("auth_recovery_codes"),
        sa.Column("code_hash", sa.String(64), nullable=False),
        _ts("created_at"),
        _ts("used_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_auth_recovery_codes"),
    )
    op.create_index("ix_auth_recovery_codes_staff_id", "auth_recovery_codes", ["staff_id"])
    op.create_table(
        "auth_sessions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        *_staff_fk("auth_sessions"),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        _ts("created_at"),
        _ts("last_seen_at"),
        _ts("expires_at"),
        _ts("ended_at", nullable=True),
        sa.Column("ended_reason", sa.String(32), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_auth_sessions"),
        sa.UniqueConstraint("token_hash", name="uq_auth_sessions_token_hash"),
    )
    op.create_index("ix_auth_sessions_staff_id", "auth_sessions", ["staff_id"])
    op.create_table(
        "auth_api_tokens",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        *_staff_fk("auth_api_tokens"),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        _ts("created_at"),
        _ts("expires_at", nullable=True),
        _ts("last_used_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_auth_api_tokens"),
        sa.UniqueConstraint("token_hash", name="uq_auth_api_tokens_token_hash"),
    )
    op.create_index("ix_auth_api_tokens_staff_id", "auth_api_tokens", ["staff_id"])


def downgrade() -> None:
    for table in ("auth_api_tokens", "auth_sessions", "auth_recovery_codes"):
        op.drop_index(f"ix_{table}_staff_id", table_name=table)
        op.drop_table(table)
    op.drop_table("auth_credentials")
