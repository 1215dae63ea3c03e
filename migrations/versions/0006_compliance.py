"""compliance: event log, residency policies, extra batch leaves, record redaction

Revision ID: 0006
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "batch_extra_leaves",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("batch_pk", sa.Integer(), nullable=False),
        sa.Column("leaf", sa.LargeBinary(length=32), nullable=False),
        sa.ForeignKeyConstraint(["batch_pk"], ["delivery_batches.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_batch_extra_leaves_batch_pk"), "batch_extra_leaves", ["batch_pk"], unique=False)
    op.create_table(
        "compliance_events",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("event_id", sa.String(length=66), nullable=False),
        sa.Column("occurred_at_ms", sa.BigInteger(), nullable=False),
        sa.Column("actor", sa.String(length=120), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=300), nullable=False),
        sa.Column("legal_basis", sa.String(length=300), nullable=False),
        sa.Column("detail_json", sa.Text(), nullable=False),
        sa.Column("leaf", sa.LargeBinary(length=32), nullable=False),
        sa.Column("batch_pk", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["batch_pk"], ["delivery_batches.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_id"),
    )
    op.create_index(op.f("ix_compliance_events_action"), "compliance_events", ["action"], unique=False)
    op.create_index(op.f("ix_compliance_events_batch_pk"), "compliance_events", ["batch_pk"], unique=False)
    op.create_index(
        op.f("ix_compliance_events_occurred_at_ms"), "compliance_events", ["occurred_at_ms"], unique=False
    )
    op.create_table(
        "compliance_residency_policies",
        sa.Column("zone", sa.String(length=8), nullable=False),
        sa.Column("storage_zones", sa.String(length=400), nullable=False),
        sa.Column("export_zones", sa.String(length=400), nullable=False),
        sa.Column("updated_by", sa.String(length=120), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("zone"),
    )
    with op.batch_alter_table("delivery_records") as batch:
        batch.add_column(sa.Column("redacted_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_records") as batch:
        batch.drop_column("redacted_at")
    op.drop_table("compliance_residency_policies")
    op.drop_index(op.f("ix_compliance_events_occurred_at_ms"), table_name="compliance_events")
    op.drop_index(op.f("ix_compliance_events_batch_pk"), table_name="compliance_events")
    op.drop_index(op.f("ix_compliance_events_action"), table_name="compliance_events")
    op.drop_table("compliance_events")
    op.drop_index(op.f("ix_batch_extra_leaves_batch_pk"), table_name="batch_extra_leaves")
    op.drop_table("batch_extra_leaves")
