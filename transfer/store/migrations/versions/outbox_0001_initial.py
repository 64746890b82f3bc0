"""The outbox: packages this node sends, their state changes, leases and receipts.

Revision ID: outbox_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "outbox_0001"
down_revision = None
branch_labels = ("outbox",)
depends_on = "store_0001"

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _package_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["package_id"],
        ["outgoing_packages.id"],
        name=f"fk_{table}_package_id_outgoing_packages",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "outgoing_packages",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("to_org_id", sa.String(64), nullable=False),
        sa.Column("to_name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("ciphertext_size", sa.BigInteger(), nullable=True),
        sa.Column("ciphertext_sha256", sa.String(64), nullable=True),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("created_by", sa.String(36), nullable=True),
        _ts("created_at"),
        _ts("queued_at", nullable=True),
        _ts("state_changed_at"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        _ts("next_attempt_at", nullable=True),
        sa.Column("claimed_by", sa.String(100), nullable=True),
        _ts("lease_until", nullable=True),
        sa.Column("last_error", sa.String(500), nullable=True),
        sa.Column("failure_reason", sa.String(500), nullable=True),
        _ts("next_pull_at", nullable=True),
        sa.Column("pulls", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outgoing_packages"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_outgoing_packages_org_id_organisations"
        ),
    )
    op.create_index(
        "ix_outgoing_packages_state_next", "outgoing_packages", ["state", "next_attempt_at"]
    )
    op.create_index("ix_outgoing_packages_org_id", "outgoing_packages", ["org_id"])
    op.create_table(
        "outgoing_pupils",
        sa.Column("package_id", sa.String(36), nullable=False),
        sa.Column("pupil_id", sa.String(36), nullable=False),
        sa.PrimaryKeyConstraint("package_id", "pupil_id", name="pk_outgoing_pupils"),
        _package_fk("outgoing_pupils"),
    )
    op.create_index("ix_outgoing_pupils_pupil_id", "outgoing_pupils", ["pupil_id"])
    op.create_table(
        "outgoing_events",
        sa.Column("id", _ID, nullable=False, autoincrement=True),
        sa.Column("package_id", sa.String(36), nullable=False),
        _ts("at"),
        sa.Column("event", sa.String(40), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("actor", sa.String(36), nullable=True),
        sa.Column("detail", sa.String(500), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outgoing_events"),
        _package_fk("outgoing_events"),
    )
    op.create_index("ix_outgoing_events_package_id", "outgoing_events", ["package_id"])
    op.create_table(
        "outgoing_receipts",
        sa.Column("receipt_id", sa.String(36), nullable=False),
        sa.Column("package_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        _ts("issued_at"),
        _ts("received_at"),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("signature", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("receipt_id", name="pk_outgoing_receipts"),
        _package_fk("outgoing_receipts"),
    )
    op.create_index("ix_outgoing_receipts_package_id", "outgoing_receipts", ["package_id"])


def downgrade() -> None:
    for table in ("outgoing_receipts", "outgoing_events", "outgoing_pupils"):
        op.drop_table(table)
    op.drop_index("ix_outgoing_packages_org_id", table_name="outgoing_packages")
    op.drop_index("ix_outgoing_packages_state_next", table_name="outgoing_packages")
    op.drop_table("outgoing_packages")
