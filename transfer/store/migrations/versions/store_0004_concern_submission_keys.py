"""Concerns remember the one-time key of the form that sent them.

Adds ``concerns.submission_key`` (NULL for every concern already kept, and for
those sent without a key) and a unique constraint on (``recorded_by``,
``submission_key``), so that the same person sending the same form twice (a
double click, a browser resubmitting) gets the concern already saved instead of
a second copy, however the two requests interleave. NULLs never collide, so the
rows already there are carried forward unchanged.

Revision ID: store_0004
Revises: store_0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0004"
down_revision = "store_0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("concerns") as batch:
        batch.add_column(sa.Column("submission_key", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_concerns_recorded_by", ["recorded_by", "submission_key"])


def downgrade() -> None:
    with op.batch_alter_table("concerns") as batch:
        batch.drop_constraint("uq_concerns_recorded_by", type_="unique")
        batch.drop_column("submission_key")
