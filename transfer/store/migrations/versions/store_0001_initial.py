"""The concern store: organisations, staff, pupils and their sealed records.

Revision ID: store_0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "store_0001"
down_revision = None
branch_labels = ("store",)
depends_on = None


def _ts(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _id(name: str = "id", length: int = 36) -> sa.Column[object]:
    return sa.Column(name, sa.String(length), nullable=False)


def upgrade() -> None:
    op.create_table(
        "organisations",
        _id("id", 64),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("urn", sa.String(6), nullable=True),
        sa.Column("laestab", sa.String(7), nullable=True),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_organisations"),
    )
    op.create_table(
        "staff",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("username", sa.String(100), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("roles", sa.JSON(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        _ts("created_at"),
        sa.PrimaryKeyConstraint("id", name="pk_staff"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_staff_org_id_organisations"
        ),
        sa.UniqueConstraint("org_id", "username", name="uq_staff_org_id"),
    )
    op.create_index("ix_staff_org_id", "staff", ["org_id"])
    op.create_table(
        "categories",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("label", sa.String(200), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_categories"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_categories_org_id_organisations"
        ),
        sa.UniqueConstraint("org_id", "key", name="uq_categories_org_id"),
    )
    retention = op.create_table(
        "retention_policies",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("description", sa.String(500), nullable=False),
        sa.Column("basis", sa.String(20), nullable=False),
        sa.Column("years", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retention_policies"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_retention_policies_org_id_organisations"
        ),
        sa.UniqueConstraint("org_id", "key", name="uq_retention_policies_org_id"),
    )
    op.bulk_insert(
        retention,
        [
            {
                "id": "00000000-0000-4000-8000-000000000025",
                "org_id": None,
                "key": "cp-dob-25",
                "description": "Child-protection file: date of birth + 25 years (IRMS toolkit)",
                "basis": "dob",
                "years": 25,
            }
        ],
    )
    op.create_table(
        "pupils",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("upn", sa.String(13), nullable=True),
        sa.Column("surname", sa.String(200), nullable=False),
        sa.Column("forename", sa.String(200), nullable=False),
        sa.Column("dob", sa.Date(), nullable=True),
        sa.Column("sex", sa.String(1), nullable=False),
        sa.Column("year_group", sa.String(10), nullable=True),
        sa.Column("on_roll_from", sa.Date(), nullable=True),
        sa.Column("leaving_date", sa.Date(), nullable=True),
        sa.Column("destination_kind", sa.String(20), nullable=True),
        sa.Column("destination_urn", sa.String(6), nullable=True),
        sa.Column("destination_laestab", sa.String(7), nullable=True),
        sa.Column("destination_name", sa.String(200), nullable=True),
        _ts("created_at"),
        _ts("updated_at"),
        _ts("erased_at", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_pupils"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_pupils_org_id_organisations"
        ),
        sa.UniqueConstraint("org_id", "upn", name="uq_pupils_org_id"),
    )
    op.create_index("ix_pupils_dob", "pupils", ["dob"])
    op.create_table(
        "pupil_keys",
        _id("pupil_id"),
        sa.Column("sealed_key", sa.LargeBinary(), nullable=True),
        _ts("created_at"),
        _ts("destroyed_at", nullable=True),
        sa.PrimaryKeyConstraint("pupil_id", name="pk_pupil_keys"),
        sa.ForeignKeyConstraint(["pupil_id"], ["pupils.id"], name="fk_pupil_keys_pupil_id_pupils"),
    )
    op.create_table(
        "provenances",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("source_org_id", sa.String(64), nullable=False),
        sa.Column("source_org_name", sa.String(200), nullable=False),
        sa.Column("package_id", sa.String(64), nullable=False),
        _ts("received_at"),
        sa.Column("original_id", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_provenances"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_provenances_org_id_organisations"
        ),
    )
    op.create_table(
        "concerns",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=False),
        sa.Column("category_key", sa.String(64), nullable=False),
        sa.Column("restricted", sa.Boolean(), nullable=False),
        _ts("happened_at"),
        _ts("recorded_at"),
        sa.Column("recorded_by", sa.String(36), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provenance_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_concerns"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_concerns_org_id_organisations"
        ),
        sa.ForeignKeyConstraint(
            ["provenance_id"], ["provenances.id"], name="fk_concerns_provenance_id_provenances"
        ),
    )
    op.create_index("ix_concerns_org_id", "concerns", ["org_id"])
    op.create_index("ix_concerns_recorded_by", "concerns", ["recorded_by"])
    op.create_table(
        "concern_pupils",
        _id("concern_id"),
        _id("pupil_id"),
        sa.PrimaryKeyConstraint("concern_id", "pupil_id", name="pk_concern_pupils"),
        sa.ForeignKeyConstraint(
            ["concern_id"], ["concerns.id"], name="fk_concern_pupils_concern_id_concerns"
        ),
        sa.ForeignKeyConstraint(
            ["pupil_id"], ["pupils.id"], name="fk_concern_pupils_pupil_id_pupils"
        ),
    )
    op.create_index("ix_concern_pupils_pupil_id", "concern_pupils", ["pupil_id"])
    op.create_table(
        "body_map_marks",
        _id(),
        _id("concern_id"),
        _id("pupil_id"),
        sa.Column("side", sa.String(5), nullable=False),
        sa.Column("x", sa.Float(), nullable=False),
        sa.Column("y", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_body_map_marks"),
        sa.ForeignKeyConstraint(
            ["concern_id"], ["concerns.id"], name="fk_body_map_marks_concern_id_concerns"
        ),
        sa.ForeignKeyConstraint(
            ["pupil_id"], ["pupils.id"], name="fk_body_map_marks_pupil_id_pupils"
        ),
    )
    op.create_index("ix_body_map_marks_concern_id", "body_map_marks", ["concern_id"])
    op.create_index("ix_body_map_marks_pupil_id", "body_map_marks", ["pupil_id"])
    op.create_table(
        "triage_decisions",
        _id(),
        _id("concern_id"),
        sa.Column("decision", sa.String(40), nullable=False),
        _ts("decided_at"),
        sa.Column("decided_by", sa.String(36), nullable=False),
        sa.Column("provenance_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_triage_decisions"),
        sa.ForeignKeyConstraint(
            ["concern_id"], ["concerns.id"], name="fk_triage_decisions_concern_id_concerns"
        ),
        sa.ForeignKeyConstraint(
            ["provenance_id"],
            ["provenances.id"],
            name="fk_triage_decisions_provenance_id_provenances",
        ),
    )
    op.create_index("ix_triage_decisions_concern_id", "triage_decisions", ["concern_id"])
    op.create_table(
        "actions",
        _id(),
        _id("concern_id"),
        sa.Column("assignee_id", sa.String(36), nullable=True),
        sa.Column("due_on", sa.Date(), nullable=True),
        _ts("done_at", nullable=True),
        _ts("created_at"),
        sa.Column("created_by", sa.String(36), nullable=False),
        sa.Column("provenance_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_actions"),
        sa.ForeignKeyConstraint(
            ["concern_id"], ["concerns.id"], name="fk_actions_concern_id_concerns"
        ),
        sa.ForeignKeyConstraint(
            ["provenance_id"], ["provenances.id"], name="fk_actions_provenance_id_provenances"
        ),
    )
    op.create_index("ix_actions_concern_id", "actions", ["concern_id"])
    op.create_table(
        "external_contacts",
        _id(),
        _id("concern_id"),
        _ts("contacted_at"),
        _ts("recorded_at"),
        sa.Column("recorded_by", sa.String(36), nullable=False),
        sa.Column("provenance_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_external_contacts"),
        sa.ForeignKeyConstraint(
            ["concern_id"], ["concerns.id"], name="fk_external_contacts_concern_id_concerns"
        ),
        sa.ForeignKeyConstraint(
            ["provenance_id"],
            ["provenances.id"],
            name="fk_external_contacts_provenance_id_provenances",
        ),
    )
    op.create_index("ix_external_contacts_concern_id", "external_contacts", ["concern_id"])
    op.create_table(
        "documents",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=False),
        _id("pupil_id"),
        sa.Column("concern_id", sa.String(36), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("media_type", sa.String(200), nullable=False),
        _ts("uploaded_at"),
        sa.Column("uploaded_by", sa.String(36), nullable=False),
        sa.Column("provenance_id", sa.String(36), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_documents"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_documents_org_id_organisations"
        ),
        sa.ForeignKeyConstraint(["pupil_id"], ["pupils.id"], name="fk_documents_pupil_id_pupils"),
        sa.ForeignKeyConstraint(
            ["concern_id"], ["concerns.id"], name="fk_documents_concern_id_concerns"
        ),
        sa.ForeignKeyConstraint(
            ["provenance_id"], ["provenances.id"], name="fk_documents_provenance_id_provenances"
        ),
    )
    op.create_index("ix_documents_pupil_id", "documents", ["pupil_id"])
    op.create_table(
        "sealed_fields",
        sa.Column("record_table", sa.String(40), nullable=False),
        _id("record_id"),
        _id("pupil_id"),
        sa.Column("field", sa.String(40), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint(
            "record_table", "record_id", "pupil_id", "field", name="pk_sealed_fields"
        ),
        sa.ForeignKeyConstraint(
            ["pupil_id"], ["pupils.id"], name="fk_sealed_fields_pupil_id_pupils"
        ),
    )
    op.create_index("ix_sealed_fields_pupil_id", "sealed_fields", ["pupil_id"])
    op.create_table(
        "tombstones",
        _id(),
        sa.Column("org_id", sa.String(64), nullable=False),
        _id("pupil_id"),
        _ts("erased_at"),
        sa.Column("policy", sa.String(64), nullable=False),
        sa.Column("erased_by", sa.String(64), nullable=False),
        sa.Column("erased", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_tombstones"),
        sa.ForeignKeyConstraint(
            ["org_id"], ["organisations.id"], name="fk_tombstones_org_id_organisations"
        ),
        sa.UniqueConstraint("pupil_id", name="uq_tombstones_pupil_id"),
    )


def downgrade() -> None:
    for table in (
        "tombstones",
        "sealed_fields",
        "documents",
        "external_contacts",
        "actions",
        "triage_decisions",
        "body_map_marks",
        "concern_pupils",
        "concerns",
        "provenances",
        "pupil_keys",
        "pupils",
        "retention_policies",
        "categories",
        "staff",
        "organisations",
    ):
        op.drop_table(table)
