"""The directory: pinned authority, held document, entries, revocations.

Revision ID: directory_0001
Revises:
Depends on: store_0001
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "directory_0001"
down_revision = None
branch_labels = ("directory",)
depends_on = "store_0001"


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "directory_authority",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("public_key", sa.String(100), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("name", sa.String(200), nullable=True),
        _ts("pinned_at"),
        sa.Column("pinned_by", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_directory_authority"),
    )
    op.create_table(
        "directory_document",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("serial", sa.BigInteger(), nullable=False),
        sa.Column("authority_key_id", sa.String(16), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        _ts("issued_at"),
        _ts("next_update"),
        _ts("imported_at"),
        sa.Column("source", sa.String(500), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_directory_document"),
    )
    op.create_table(
        "directory_entries",
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(19), nullable=False),
        _ts("added_at"),
        sa.Column("added_by", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("source", "org_id", name="pk_directory_entries"),
    )
    op.create_table(
        "directory_revocations",
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        _ts("revoked_at"),
        sa.Column("reason", sa.String(500), nullable=False),
        sa.Column("serial", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("org_id", "key_id", name="pk_directory_revocations"),
    )


def downgrade() -> None:
    for table in (
        "directory_revocations",
        "directory_entries",
        "directory_document",
        "directory_authority",
    ):
        op.drop_table(table)
