"""chain indexer: cursor, block hashes, raw events, projections

Revision ID: 0005
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "indexer_cursor",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("reorgs", sa.Integer(), nullable=False),
        sa.Column("last_reorg_depth", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "indexer_blocks",
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_table(
        "indexer_events",
        sa.Column("id", BIGINT_PK, nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.Column("contract", sa.String(length=40), nullable=False),
        sa.Column("event", sa.String(length=60), nullable=False),
        sa.Column("args_json", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("block_number", "log_index"),
    )
    op.create_index(op.f("ix_indexer_events_block_number"), "indexer_events", ["block_number"], unique=False)
    op.create_table(
        "indexed_assets",
        sa.Column("asset_id", sa.String(length=78), nullable=False),
        sa.Column("content_hash", sa.String(length=66), nullable=False),
        sa.Column("creator", sa.String(length=42), nullable=False),
        sa.Column("owner", sa.String(length=42), nullable=False),
        sa.Column("parent_id", sa.String(length=78), nullable=False),
        sa.Column("aigc", sa.Boolean(), nullable=False),
        sa.Column("content_cid", sa.String(length=120), nullable=False),
        sa.Column("metadata_cid", sa.String(length=120), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("royalty_bps", sa.Integer(), nullable=False),
        sa.Column("split_json", sa.Text(), nullable=False),
        sa.Column("registered_block", sa.BigInteger(), nullable=False),
        sa.Column("registered_tx", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("asset_id"),
    )
    op.create_table(
        "indexed_sources",
        sa.Column("source_id", sa.String(length=66), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("operator", sa.String(length=42), nullable=False),
        sa.Column("signer", sa.String(length=42), nullable=False),
        sa.Column("jurisdiction", sa.String(length=2), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("batch_count", sa.Integer(), nullable=False),
        sa.Column("last_manifest_hash", sa.String(length=66), nullable=True),
        sa.Column("chain_broken", sa.Boolean(), nullable=False),
        sa.Column("registered_block", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("source_id"),
    )
    op.create_table(
        "indexed_batches",
        sa.Column("batch_id", sa.String(length=66), nullable=False),
        sa.Column("source_id", sa.String(length=66), nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("leaf_count", sa.BigInteger(), nullable=False),
        sa.Column("total_bytes", sa.String(length=40), nullable=False),
        sa.Column("manifest_hash", sa.String(length=66), nullable=False),
        sa.Column("prev_manifest_hash", sa.String(length=66), nullable=False),
        sa.Column("kind", sa.Integer(), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_index(op.f("ix_indexed_batches_source_id"), "indexed_batches", ["source_id"], unique=False)
    op.create_table(
        "indexed_settlements",
        sa.Column("period_id", sa.BigInteger(), nullable=False),
        sa.Column("merchant", sa.String(length=42), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("total", sa.String(length=78), nullable=False),
        sa.Column("claimed", sa.String(length=78), nullable=False),
        sa.Column("claims", sa.Integer(), nullable=False),
        sa.Column("claims_open_at", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.PrimaryKeyConstraint("period_id", "merchant"),
    )


def downgrade() -> None:
    op.drop_table("indexed_settlements")
    op.drop_index(op.f("ix_indexed_batches_source_id"), table_name="indexed_batches")
    op.drop_table("indexed_batches")
    op.drop_table("indexed_sources")
    op.drop_table("indexed_assets")
    op.drop_index(op.f("ix_indexer_events_block_number"), table_name="indexer_events")
    op.drop_table("indexer_events")
    op.drop_table("indexer_blocks")
    op.drop_table("indexer_cursor")
