"""Tables of the chain indexer (docs/indexer.md).

Raw events are the truth the indexer keeps; every projection table is a pure function of the canonical
event sequence, so a rollback deletes the orphaned events and re-projects, and a rebuild starts from an
empty database.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import BigInteger, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from edgeledger.db import Base, UTCDateTime, utcnow


class IndexerCursor(Base):
    """The last block whose events are applied (one row per indexer name)."""

    __tablename__ = "indexer_cursor"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(String(66))
    reorgs: Mapped[int] = mapped_column(Integer, default=0)
    last_reorg_depth: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class IndexedBlock(Base):
    """Hash of every block that holds an indexed event, and of every cursor position: what a reorg is
    detected against and walked back over."""

    __tablename__ = "indexer_blocks"

    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(66))


class ChainEventRow(Base):
    __tablename__ = "indexer_events"
    __table_args__ = (UniqueConstraint("block_number", "log_index"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    block_hash: Mapped[str] = mapped_column(String(66))
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)
    contract: Mapped[str] = mapped_column(String(40))
    event: Mapped[str] = mapped_column(String(60))
    args_json: Mapped[str] = mapped_column(Text)  # canonical JSON; bytes as 0x-hex, ints as decimal text


class IndexedAsset(Base):
    __tablename__ = "indexed_assets"

    asset_id: Mapped[str] = mapped_column(String(78), primary_key=True)  # uint256 as decimal text
    content_hash: Mapped[str] = mapped_column(String(66))
    creator: Mapped[str] = mapped_column(String(42))
    owner: Mapped[str] = mapped_column(String(42))
    parent_id: Mapped[str] = mapped_column(String(78))
    aigc: Mapped[bool] = mapped_column(default=False)
    content_cid: Mapped[str] = mapped_column(String(120))
    # The IPFS import profile the CIDs were cut with, as registered (edgeledger.ledger.registration)
    import_profile: Mapped[str] = mapped_column(
        String(32), default="legacy-cidv1", server_default="legacy-cidv1"
    )
    metadata_cid: Mapped[str] = mapped_column(String(120))
    title: Mapped[str | None] = mapped_column(Text)  # from the metadata JSON on IPFS
    # What became of the metadata read (service.MetadataState): "ok", or why it was skipped, with the
    # reason; "timeout" and "unavailable" are tried again up to INDEXER_METADATA_ATTEMPTS times.
    metadata_state: Mapped[str] = mapped_column(String(16), default="ok", server_default="ok")
    metadata_error: Mapped[str | None] = mapped_column(String(300))
    metadata_attempts: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    status: Mapped[str] = mapped_column(String(16), default="active")
    royalty_bps: Mapped[int] = mapped_column(Integer, default=0)
    split_json: Mapped[str] = mapped_column(Text, default="[]")
    registered_block: Mapped[int] = mapped_column(BigInteger)
    registered_tx: Mapped[str] = mapped_column(String(66))


class IndexedSource(Base):
    __tablename__ = "indexed_sources"

    source_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    operator: Mapped[str] = mapped_column(String(42))
    signer: Mapped[str] = mapped_column(String(42))
    jurisdiction: Mapped[str] = mapped_column(String(2))
    status: Mapped[str] = mapped_column(String(16), default="active")
    batch_count: Mapped[int] = mapped_column(Integer, default=0)
    last_manifest_hash: Mapped[str | None] = mapped_column(String(66))
    chain_broken: Mapped[bool] = mapped_column(default=False)  # a manifest's prev did not link
    registered_block: Mapped[int] = mapped_column(BigInteger)


class IndexedBatch(Base):
    __tablename__ = "indexed_batches"

    batch_id: Mapped[str] = mapped_column(String(66), primary_key=True)
    source_id: Mapped[str] = mapped_column(String(66), index=True)
    root: Mapped[str] = mapped_column(String(66))
    period_start: Mapped[int] = mapped_column(BigInteger)
    period_end: Mapped[int] = mapped_column(BigInteger)
    leaf_count: Mapped[int] = mapped_column(BigInteger)
    total_bytes: Mapped[str] = mapped_column(String(40))  # uint128 as decimal text
    manifest_hash: Mapped[str] = mapped_column(String(66))
    prev_manifest_hash: Mapped[str] = mapped_column(String(66))
    kind: Mapped[int] = mapped_column(Integer)
    block_number: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))


class IndexedSettlement(Base):
    __tablename__ = "indexed_settlements"

    period_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    merchant: Mapped[str] = mapped_column(String(42), primary_key=True)
    token: Mapped[str] = mapped_column(String(42))
    root: Mapped[str] = mapped_column(String(66))
    total: Mapped[str] = mapped_column(String(78))  # token minor units, decimal text (uint256)
    claimed: Mapped[str] = mapped_column(String(78), default="0")
    claims: Mapped[int] = mapped_column(Integer, default=0)
    claims_open_at: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))  # posted | challenged | upheld | cancelled
    block_number: Mapped[int] = mapped_column(BigInteger)
    tx_hash: Mapped[str] = mapped_column(String(66))


class IndexerStatus(BaseModel):
    cursor_block: int | None
    cursor_hash: str | None
    head: int | None
    lag_blocks: int | None
    confirmations: int
    events: int
    reorgs: int
    last_reorg_depth: int
