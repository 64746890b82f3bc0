"""Referrals: drafts, lifecycle and timed events (text sealed in sealed_fields).

Revision ID: referrals_0001
Revises:
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "referrals_0001"
down_revision = None
branch_labels = ("referrals",)
depends_on = "store_0001"


def _ts(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    op.create_table(
        "referrals",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("pupil_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("agency_org_id", sa.String(64), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("route", sa.String(20), nullable=True),
        sa.Column("due_on", sa.Date(), nullable=True),
        sa.Column("sent_without_consent", sa.Boolean(), nullable=False),
        sa.Column("consent_reason", sa.String(40), nullable=True),
        sa.Column("package_id", sa.String(36), nullable=True),
        sa.Column("ciphertext_sha256", sa.String(64), nullable=True),
        sa.Column("manifest_sha256", sa.String(64), nullable=True),
        sa.Column("agency_reference", sa.String(100), nullable=True),
        _ts("created_at"),
        sa.Column("created_by", sa.String(36), nullable=False),
        _ts("updated_at"),
        sa.PrimaryKeyConstraint("id", name="pk_referrals"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_referrals_org_id_organisations"
        ),
        sa.ForeignKeyConstraint(["pupil_id"], ["pupils.id"], name="fk_referrals_pupil_id_pupils"),
    )
    op.create_index("ix_referrals_org_id_state", "referrals", ["org_id", "state"])
    op.create_index("ix_referrals_pupil_id", "referrals", ["pupil_id"])
    op.create_index("ix_referrals_package_id", "referrals", ["package_id"])
    op.create_table(
        "referral_events",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("referral_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("action", sa.String(40), nullable=False),
        sa.Column("actor", sa.String(36), nullable=True),
        sa.Column("note", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_referral_events"),
        sa.ForeignKeyConstraint(
            ["referral_id"], ["referrals.id"], name="fk_referral_events_referral_id_referrals"
        ),
        sa.UniqueConstraint("referral_id", "seq", name="uq_referral_events_referral_id"),
    )


def downgrade() -> None:
    op.drop_table("referral_events")
    op.drop_index("ix_referrals_package_id", table_name="referrals")
    op.drop_index("ix_referrals_pupil_id", table_name="referrals")
    op.drop_index("ix_referrals_org_id_state", table_name="referrals")
    op.drop_table("referrals")
