"""The receiving side: incoming packages, issued receipts, and the peer-request nonce table.

Revision ID: inbox_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "inbox_0001"
down_revision = None
branch_labels = ("inbox",)
depends_on = "store_0001"


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "incoming_packages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("recipient_org_id", sa.String(64), nullable=False),
        sa.Column("sender_org_id", sa.String(64), nullable=False),
        sa.Column("sender_name", sa.String(200), nullable=False),
        sa.Column("sender_key_id", sa.String(16), nullable=False),
        sa.Column("package_kind", sa.String(40), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("ciphertext_sha256", sa.String(64), nullable=False),
        sa.Column("received", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("entries", sa.Integer(), nullable=True),
        sa.Column("content_size", sa.BigInteger(), nullable=True),
        _ts("offered_at"),
        _ts("delivered_at", nullable=True),
        _ts("viewed_at", nullable=True),
        _ts("decided_at", nullable=True),
        sa.Column("decided_by", sa.String(36), nullable=True),
        sa.Column("pupil_id", sa.String(36), nullable=True),
        sa.Column("refused_reason", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_incoming_packages"),
        sa.ForeignKeyConstraint(
            ["recipient_org_id"],
            ["organisations.id"],
            name="fk_incoming_packages_recipient_org_id_organisations",
        ),
    )
    op.create_index(
        "ix_incoming_packages_recipient_state", "incoming_packages", ["recipient_org_id", "state"]
    )
    op.create_table(
        "inbox_receipts",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("package_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        _ts("issued_at"),
        sa.Column("push_state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        _ts("pushed_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_inbox_receipts"),
        sa.ForeignKeyConstraint(
            ["package_id"],
            ["incoming_packages.id"],
            name="fk_inbox_receipts_package_id_incoming_packages",
        ),
    )
    op.create_index("ix_inbox_receipts_package_id", "inbox_receipts", ["package_id"])
    op.create_index("ix_inbox_receipts_push", "inbox_receipts", ["push_state", "next_attempt_at"])
    op.create_table(
        "peer_nonces",
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("nonce", sa.String(128), nullable=False),
        _ts("expires_at"),
        sa.PrimaryKeyConstraint("key_id", "nonce", name="pk_peer_nonces"),
    )
    op.create_index("ix_peer_nonces_expires_at", "peer_nonces", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_peer_nonces_expires_at", table_name="peer_nonces")
    op.drop_table("peer_nonces")
    op.drop_index("ix_inbox_receipts_push", table_name="inbox_receipts")
    op.drop_index("ix_inbox_receipts_package_id", table_name="inbox_receipts")
    op.drop_table("inbox_receipts")
    op.drop_index("ix_incoming_packages_recipient_state", table_name="incoming_packages")
    op.drop_table("incoming_packages")
