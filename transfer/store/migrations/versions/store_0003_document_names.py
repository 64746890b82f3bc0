"""Documents are named by a keyed hash, not by the SHA-256 of their plaintext.

Adds ``documents.name`` (the file's new name) and lets ``documents.sha256`` be
NULL. Computing a name needs the pupil's data key, so the key-encryption key:
Alembic does not have it. ``Store.open`` therefore finishes the job after this
migration, row by row, crash-safe and idempotent: it renames each file to its
keyed name, seals the SHA-256 into ``sealed_fields`` and clears ``sha256``
(``docs/store.md``).

Revision ID: store_0003
Revises: store_0002
Create Date: 2027-01-18
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0003"
down_revision = "store_0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.add_column(sa.Column("name", sa.String(64), nullable=True))
        batch.alter_column("sha256", existing_type=sa.String(64), nullable=True)


def downgrade() -> None:
    with op.batch_alter_table("documents") as batch:
        batch.alter_column("sha256", existing_type=sa.String(64), nullable=False)
        batch.drop_column("name")
