"""queued ingestion: stored uploads and the worker's claim on an ingest; batch trees in the database

Adds ``batch_tree_pieces`` (a closed batch's tree file, shared by every host; batches closed before
keep being rebuilt from their leaves where a host has no copy), ``ingest_blob_chunks`` (a queued upload
as received, in pieces, until its ingest is final) and the ``ingest_files`` columns the queued mode
uses: ``bytes_read`` (progress), ``claim`` and ``heartbeat_at`` (the worker run that holds the row;
every chunk commit checks it) and ``attempts``. Existing ingests were all run inline: they get
``bytes_read = size_bytes`` and no claim.

Revision ID: 0014
Revises: 0013
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | tuple[str, ...] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ingest_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("bytes_read", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("claim", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE ingest_files SET bytes_read = size_bytes")
    op.create_table(
        "ingest_blob_chunks",
        sa.Column("ingest_file_pk", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["ingest_file_pk"], ["ingest_files.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("ingest_file_pk", "seq"),
    )
    op.create_table(
        "batch_tree_pieces",
        sa.Column("batch_pk", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["batch_pk"], ["delivery_batches.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("batch_pk", "seq"),
    )


def downgrade() -> None:
    op.drop_table("batch_tree_pieces")
    op.drop_table("ingest_blob_chunks")
    with op.batch_alter_table("ingest_files", schema=None) as batch_op:
        batch_op.drop_column("attempts")
        batch_op.drop_column("heartbeat_at")
        batch_op.drop_column("claim")
        batch_op.drop_column("bytes_read")
