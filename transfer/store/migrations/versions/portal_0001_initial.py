"""The pickup portal: pickups, agency sessions, receipt events, agency users' TOTP.

Revision ID: portal_0001
Revises:
Depends on: store_0001 (the ``organisations`` table)
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "portal_0001"
down_revision = None
branch_labels = ("portal",)
depends_on = "store_0001"

_SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "portal_pickups",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("referral_id", sa.String(64), nullable=False),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("agency_name", sa.String(200), nullable=True),
        sa.Column("package_id", sa.String(36), nullable=False),
        sa.Column("package_kind", sa.String(32), nullable=False),
        sa.Column("stored_sha256", sa.String(64), nullable=False),
        sa.Column("stored_size", sa.BigInteger(), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("identity_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("passcode_hash", sa.String(256), nullable=False),
        sa.Column("emailed", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(36), nullable=False),
        _ts("created_at"),
        _ts("expires_at"),
        sa.Column("failed_count", sa.Integer(), nullable=False),
        _ts("locked_at", nullable=True),
        _ts("revoked_at", nullable=True),
        sa.Column("revoked_by", sa.String(36), nullable=True),
        _ts("first_opened_at", nullable=True),
        _ts("acknowledged_at", nullable=True),
        sa.Column("ack_name", sa.String(200), nullable=True),
        sa.Column("ack_reference", sa.String(100), nullable=True),
        sa.Column("ack_ip", sa.String(64), nullable=True),
        _ts("swept_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_portal_pickups"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_portal_pickups_org_id_organisations"
        ),
        sa.UniqueConstraint("token_hash", name="uq_portal_pickups_token_hash"),
    )
    op.create_index("ix_portal_pickups_org_id", "portal_pickups", ["org_id"])
    op.create_table(
        "portal_sessions",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("pickup_id", sa.String(36), nullable=False),
        sa.Column("identity_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("via", sa.String(16), nullable=False),
        sa.Column("ip", sa.String(64), nullable=True),
        _ts("created_at"),
        _ts("last_seen_at"),
        _ts("expires_at"),
        _ts("ended_at", nullable=True),
        sa.Column("opened", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_portal_sessions"),
        sa.ForeignKeyConstraint(
            ["pickup_id"], ["portal_pickups.id"], name="fk_portal_sessions_pickup_id_portal_pickups"
        ),
        sa.UniqueConstraint("secret_hash", name="uq_portal_sessions_secret_hash"),
    )
    op.create_index("ix_portal_sessions_pickup_id", "portal_sessions", ["pickup_id"])
    op.create_table(
        "portal_events",
        sa.Column("seq", _SEQ, nullable=False, autoincrement=True),
        sa.Column("pickup_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        _ts("at"),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("who", sa.String(254), nullable=True),
        sa.Column("what", sa.String(300), nullable=True),
        sa.PrimaryKeyConstraint("seq", name="pk_portal_events"),
        sa.ForeignKeyConstraint(
            ["pickup_id"], ["portal_pickups.id"], name="fk_portal_events_pickup_id_portal_pickups"
        ),
    )
    op.create_index("ix_portal_events_pickup_id", "portal_events", ["pickup_id"])
    op.create_table(
        "portal_agency_users",
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("totp_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("totp_pending_sealed", sa.LargeBinary(), nullable=True),
        sa.Column("totp_last_step", sa.BigInteger(), nullable=True),
        _ts("created_at"),
        _ts("enrolled_at", nullable=True),
        sa.PrimaryKeyConstraint("email", name="pk_portal_agency_users"),
    )


def downgrade() -> None:
    op.drop_table("portal_agency_users")
    for table in ("portal_events", "portal_sessions"):
        op.drop_index(f"ix_{table}_pickup_id", table_name=table)
        op.drop_table(table)
    op.drop_index("ix_portal_pickups_org_id", table_name="portal_pickups")
    op.drop_table("portal_pickups")
