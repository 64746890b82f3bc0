"""The tamper-evident audit log: entries, subtree hashes, head, key, checkpoints, witnessed.

Revision ID: audit_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "audit_0001"
down_revision = None
branch_labels = ("audit",)
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("compact", sa.LargeBinary(), nullable=False),
        sa.Column("last_leaf", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_audit_head"),
    )
    op.bulk_insert(head, [{"id": 1, "size": 0, "compact": b"", "last_leaf": bytes(32)}])
    op.create_table(
        "audit_entries",
        sa.Column("seq", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(), nullable=False),
        _ts("at"),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("actor", sa.String(100), nullable=True),
        sa.Column("org", sa.String(100), nullable=True),
        sa.Column("pupil", sa.String(100), nullable=True),
        sa.Column("person", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_entries"),
    )
    for col in ("at", "action", "actor", "org", "pupil", "person"):
        op.create_index(f"ix_audit_entries_{col}", "audit_entries", [col])
    op.create_table(
        "audit_nodes",
        sa.Column("level", sa.SmallInteger(), nullable=False, autoincrement=False),
        sa.Column("idx", sa.BigInteger(), nullable=False, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx", name="pk_audit_nodes"),
    )
    op.create_table(
        "audit_key",
        sa.Column("id", sa.Integer(), nullable=False, autoincrement=False),
        sa.Column("origin", sa.String(200), nullable=False),
        sa.Column("public_key", sa.LargeBinary(), nullable=False),
        sa.Column("sealed_seed", sa.LargeBinary(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_key"),
    )
    op.create_table(
        "audit_checkpoints",
        sa.Column("id", _ID, nullable=False, autoincrement=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_checkpoints"),
    )
    op.create_index("ix_audit_checkpoints_size", "audit_checkpoints", ["size"])
    op.create_table(
        "audit_witnessed",
        sa.Column("id", _ID, nullable=False, autoincrement=True),
        sa.Column("from_org", sa.String(100), nullable=False),
        sa.Column("origin", sa.String(200), nullable=False),
        sa.Column("vkey", sa.String(300), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("prev_size", sa.BigInteger(), nullable=True),
        sa.Column("proof", sa.Text(), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        _ts("received_at"),
        sa.PrimaryKeyConstraint("id", name="pk_audit_witnessed"),
    )
    op.create_index("ix_audit_witnessed_from_org", "audit_witnessed", ["from_org"])
    op.create_index("ix_audit_witnessed_origin", "audit_witnessed", ["origin"])


def downgrade() -> None:
    for table in (
        "audit_witnessed",
        "audit_checkpoints",
        "audit_key",
        "audit_nodes",
        "audit_entries",
        "audit_head",
    ):
        op.drop_table(table)
