"""Concerns remember the one-time key of the form that sent them.

Adds ``concerns.submission_key`` (NULL for every concern already kept, and for
those sent without a key) and a unique constraint on (``recorded_by``,
``submission_key``), so that the same person sending the same form twice (a
double click, a browser resubmitting) gets the concern already saved instead of
a second copy, however the two requests interleave. NULLs never collide, so the
rows already there are carried forward unchanged.

Revision ID: store_0006
Revises: store_0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0006"
down_revision = "store_0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN and a unique index, not a batch copy of ``concerns`` (on SQLite that drops
    # the table every concern's pupils, triage and actions point at, refused with foreign
    # keys on as soon as a concern exists).
    op.add_column("concerns", sa.Column("submission_key", sa.String(64), nullable=True))
    op.create_index(
        "uq_concerns_recorded_by", "concerns", ["recorded_by", "submission_key"], unique=True
    )


def downgrade() -> None:
    op.drop_index("uq_concerns_recorded_by", table_name="concerns")
    op.drop_column("concerns", "submission_key")
