"""The pickup portal: links close after acknowledgement; authenticator replacement is guarded.

``portal_pickups.downloads`` counts the documents released through a link; the
release and the count are one conditional update, so a download and an
acknowledgement cannot both win. ``portal_agency_users.totp_failed_count``
counts wrong codes from an address's current authenticator app given to
replace it (counted before the check; a DSL's reset clears it).

Revision ID: portal_0002
Revises: portal_0001
Create Date: 2027-01-18
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "portal_0002"
down_revision = "portal_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("portal_pickups") as batch:
        batch.add_column(
            sa.Column("downloads", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )
    with op.batch_alter_table("portal_agency_users") as batch:
        batch.add_column(
            sa.Column(
                "totp_failed_count", sa.Integer(), nullable=False, server_default=sa.text("0")
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("portal_agency_users") as batch:
        batch.drop_column("totp_failed_count")
    with op.batch_alter_table("portal_pickups") as batch:
        batch.drop_column("downloads")
