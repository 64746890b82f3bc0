"""Received records are matched by provenance, so importing twice never duplicates.

Adds to ``provenances``: ``digest`` (a keyed hash of the record as the sender
wrote it, under a key derived from the pupil's data key, so it confirms nothing
to someone without that key and is meaningless after erasure), ``amends_id``
(the earlier version of the same record from the same sender, when a changed
version was received; written by the importer in the same transaction) and an
index on (org_id, source_org_id, original_id).
Rows received before this migration have no digest: a record already held with
no digest is treated as held (never imported again), see ``docs/store.md``.

Revision ID: store_0005
Revises: store_0004
Create Date: 2027-01-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0005"
down_revision = "store_0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN and CREATE INDEX, never a batch copy of the table: on SQLite a batch
    # drops and recreates ``provenances``, which every received record points at, and with
    # foreign keys on that DROP TABLE is refused as soon as any record was received.
    op.add_column("provenances", sa.Column("digest", sa.String(64), nullable=True))
    op.add_column("provenances", sa.Column("amends_id", sa.String(36), nullable=True))
    op.create_index(
        "ix_provenances_source_original",
        "provenances",
        ["org_id", "source_org_id", "original_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_provenances_source_original", table_name="provenances")
    op.drop_column("provenances", "amends_id")
    op.drop_column("provenances", "digest")
