"""Indexes for the governors' report: a school's concerns by when they happened, and by id.

The report counts a school's concerns in a term or school year (by category, year
group, month, and the triage decisions about them). With only ``concerns.org_id``
indexed, each count reads every concern the school has ever logged; with
(``org_id``, ``happened_at``) it reads the period's. The actions due in the period are
found through the school's concerns: (``org_id``, ``id``) gives their ids from the index
alone, without reading each concern's row (at 1,000,000 concerns that query went from
34 ms to 10 ms of SQLite's time; ``docs/benchmarks.md``, "Governors' report"). Plain
CREATE INDEX: no row changes, existing data carried forward as is.

Revision ID: store_0007
Revises: store_0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "store_0007"
down_revision = "store_0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_concerns_org_happened", "concerns", ["org_id", "happened_at"])
    op.create_index("ix_concerns_org_concern", "concerns", ["org_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_concerns_org_concern", table_name="concerns")
    op.drop_index("ix_concerns_org_happened", table_name="concerns")
