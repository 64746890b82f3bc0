"""Received records are matched by provenance, so importing twice never duplicates.

Adds to ``provenances``: ``digest`` (a keyed hash of the record as the sender
wrote it, under a key derived from the pupil's data key, so it confirms nothing
to someone without that key and is meaningless after erasure), ``amends_id``
(the earlier version of the same record from the same sender, when a changed
version was received) and an index on (org_id, source_org_id, original_id).
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
    with op.batch_alter_table("provenances") as batch:
        batch.add_column(sa.Column("digest", sa.String(64), nullable=True))
        batch.add_column(sa.Column("amends_id", sa.String(36), nullable=True))
        batch.create_foreign_key("fk_provenances_amends_id", "provenances", ["amends_id"], ["id"])
    op.create_index(
        "ix_provenances_source_original",
        "provenances",
        ["org_id", "source_org_id", "original_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_provenances_source_original", table_name="provenances")
    with op.batch_alter_table("provenances") as batch:
        batch.drop_constraint("fk_provenances_amends_id", type_="foreignkey")
        batch.drop_column("amends_id")
        batch.drop_column("digest")
