"""Assets: tables and API schemas.

An :class:`Asset` row exists only once its on-chain record does (it is written from the
``AssetRegistered`` event). Everything before that lives in :class:`Registration`, the journal that
knows every pin we made, so a pin is always either part of a registered asset, still being retried, or
released. A catalogue (many assets in one transaction) is one :class:`Catalogue` row, the state of its
one transaction, over one :class:`Registration` row per item (``catalogue_id``, ``position``): see
edgeledger.assets.catalogues.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from edgeledger.db import Base, UTCDateTime, utcnow
from edgeledger.ipfs.cid import DEFAULT_PROFILE, PROFILES, normalize_cid


class AssetStatus(StrEnum):
    """Mirrors ContentRegistry.Status."""

    active = "active"
    disputed = "disputed"
    taken_down = "taken_down"


CHAIN_STATUS = {0: AssetStatus.active, 1: AssetStatus.disputed, 2: AssetStatus.taken_down}


class RegistrationState(StrEnum):
    pinning = "pinning"  # CIDs known locally, adding to IPFS
    pinned = "pinned"  # pinned and signed by the creator, not yet on chain (will be submitted)
    awaiting_signature = "awaiting_signature"  # the creator signs the registration's typed data
    submitted = "submitted"  # transaction sent, receipt pending
    registered = "registered"  # on chain and in the assets table (terminal)
    released = "released"  # gave up: pins removed, reason recorded (terminal)


OPEN_STATES = (
    RegistrationState.pinning,
    RegistrationState.pinned,
    RegistrationState.awaiting_signature,
    RegistrationState.submitted,
)


class RegistrationMode(StrEnum):
    # Both relay the creator's signed registration through the platform's signer (registerFor); the
    # mode records who uploaded: an admin for a named creator, or the creator signed in with its wallet.
    server = "server"
    wallet = "wallet"


class Asset(Base):
    __tablename__ = "assets"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)  # = on-chain id
    content_hash: Mapped[str] = mapped_column(String(66), unique=True)
    content_cid: Mapped[str] = mapped_column(String(128), index=True)
    #: The IPFS import profile ``content_cid`` was computed and pinned with (edgeledger.ipfs.cid.PROFILES).
    import_profile: Mapped[str] = mapped_column(
        String(32), default=DEFAULT_PROFILE.name, server_default=DEFAULT_PROFILE.name
    )
    metadata_cid: Mapped[str] = mapped_column(String(128))
    creator: Mapped[str] = mapped_column(String(42), index=True)
    owner: Mapped[str] = mapped_column(String(42), index=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"), index=True)
    aigc: Mapped[bool] = mapped_column(Boolean)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    media_type: Mapped[str] = mapped_column(String(100))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    filename: Mapped[str] = mapped_column(String(255), default="")
    territories_bitmap: Mapped[str] = mapped_column(String(66))  # hex of the uint256
    valid_from: Mapped[int] = mapped_column(BigInteger)
    valid_until: Mapped[int] = mapped_column(BigInteger)  # 0 = open-ended
    royalty_bps: Mapped[int] = mapped_column(Integer)
    terms_cid: Mapped[str] = mapped_column(String(128), default="")
    status: Mapped[str] = mapped_column(String(20), default=AssetStatus.active)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    contract_address: Mapped[str] = mapped_column(String(42))
    tx_hash: Mapped[str] = mapped_column(String(66))
    block_number: Mapped[int] = mapped_column(BigInteger)
    log_index: Mapped[int] = mapped_column(Integer)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    #: One row per territory, for searching by territory; reads take the codes from ``territories_bitmap``
    #: (``service.asset_territories``), so the rows are loaded only when accessed.
    territories: Mapped[list[AssetTerritory]] = relationship(
        cascade="all, delete-orphan", order_by="AssetTerritory.code", lazy="select"
    )
    split: Mapped[list[AssetSplitShare]] = relationship(
        cascade="all, delete-orphan", order_by="AssetSplitShare.position", lazy="selectin"
    )


class AssetTerritory(Base):
    """One row per licensed territory, so assets can be searched by territory on any database."""

    __tablename__ = "asset_territories"

    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True)
    code: Mapped[str] = mapped_column(String(2), primary_key=True, index=True)


class AssetSplitShare(Base):
    __tablename__ = "asset_split_shares"

    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.id", ondelete="CASCADE"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(42))
    bps: Mapped[int] = mapped_column(Integer)


class Registration(Base):
    """Journal of one registration attempt, written before anything is pinned."""

    __tablename__ = "asset_registrations"
    __table_args__ = (
        # At most one open attempt per content hash; finished attempts are history.
        Index(
            "uq_asset_registrations_open_hash",
            "content_hash",
            unique=True,
            sqlite_where=text("state IN ('pinning','pinned','awaiting_signature','submitted')"),
            postgresql_where=text("state IN ('pinning','pinned','awaiting_signature','submitted')"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    content_hash: Mapped[str] = mapped_column(String(66), index=True)
    content_cid: Mapped[str] = mapped_column(String(128))
    metadata_cid: Mapped[str | None] = mapped_column(String(128))
    creator: Mapped[str] = mapped_column(String(42), index=True)
    mode: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(20), index=True)
    params_json: Mapped[str] = mapped_column(Text)  # RegistrationParams + file facts, as JSON
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    # the signer's nonce of ``tx_hash``, the one it replaced while that may still wait, and when it was
    # sent: one transaction per nonce, sent again bidding more once stuck (chain/stuck_tx.py)
    tx_nonce: Mapped[int | None] = mapped_column(BigInteger)
    tx_prev_hash: Mapped[str | None] = mapped_column(String(66))
    tx_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    asset_id: Mapped[int | None] = mapped_column(ForeignKey("assets.id"))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[int | None] = mapped_column(Integer)
    #: The catalogue this registration is an item of (None: a registration of its own), and its place.
    catalogue_id: Mapped[int | None] = mapped_column(ForeignKey("asset_catalogues.id"), index=True)
    position: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class CatalogueState(StrEnum):
    spooling = "spooling"  # journal written, the items' files being kept in the spool
    awaiting_signature = "awaiting_signature"  # the creator signs the catalogue's typed data
    signed = "signed"  # signature kept, not yet sent (will be)
    submitted = "submitted"  # registerBatchFor sent, receipt pending
    pinning = "pinning"  # on chain, asset rows written; some items not yet published to IPFS
    registered = "registered"  # on chain, every item published (terminal)
    released = "released"  # gave up: spools dropped, reason recorded (terminal)


CATALOGUE_OPEN_STATES = (
    CatalogueState.spooling,
    CatalogueState.awaiting_signature,
    CatalogueState.signed,
    CatalogueState.submitted,
    CatalogueState.pinning,
)


class Catalogue(Base):
    """Journal of one catalogue registration: the state of its one transaction; its items are
    :class:`Registration` rows naming it."""

    __tablename__ = "asset_catalogues"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    creator: Mapped[str] = mapped_column(String(42), index=True)
    mode: Mapped[str] = mapped_column(String(10))
    state: Mapped[str] = mapped_column(String(20), index=True)
    item_count: Mapped[int] = mapped_column(Integer)
    #: The shared licence and split (CatalogueParams), valid_from, deadline and the creator's signature.
    params_json: Mapped[str] = mapped_column(Text)
    tx_hash: Mapped[str | None] = mapped_column(String(66))
    # as a registration's: the nonce, the replaced transaction, the send time (chain/stuck_tx.py)
    tx_nonce: Mapped[int | None] = mapped_column(BigInteger)
    tx_prev_hash: Mapped[str | None] = mapped_column(String(66))
    tx_sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    first_asset_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)
    requested_by: Mapped[int | None] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    items: Mapped[list[Registration]] = relationship(order_by="Registration.position", lazy="selectin")


# ----------------------------------------------------------------------------------------------
# API schemas
# ----------------------------------------------------------------------------------------------

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


class SplitShare(BaseModel):
    recipient: str = Field(pattern=ADDRESS_PATTERN)
    bps: int = Field(gt=0, le=10_000, description="Basis points; all shares sum to exactly 10,000")


def _terms_cid(value: str) -> str:
    return normalize_cid(value) if value else value


def _territories(value: list[str]) -> list[str]:
    if not value:
        raise ValueError("at least one territory (or '*')")
    return value


def _check_split(split: list[SplitShare] | None) -> None:
    if split is not None:
        if not 1 <= len(split) <= 50:
            raise ValueError("a split has 1 to 50 recipients")
        total = sum(s.bps for s in split)
        if total != 10_000:
            raise ValueError(f"split shares sum to {total} bps, not 10,000")
        if len({s.recipient.lower() for s in split}) != len(split):
            raise ValueError("a recipient appears twice in the split")


class _LicenceAndSplit(BaseModel):
    """What a registration and a catalogue say alike: the creator, the licence and the split (one
    declaration and one set of checks for both)."""

    model_config = ConfigDict(extra="forbid")

    # Each subclass declares its own title; declared here too so that it stays the first field of both
    # schemas (a subclass's redeclaration keeps the base's position).
    title: str | None = Field(None, min_length=1, max_length=200)
    description: str = Field("", max_length=5000)
    creator: str | None = Field(None, pattern=ADDRESS_PATTERN, description="Default: the caller's address")
    territories: list[str] = Field(
        default_factory=lambda: ["*"], description="ISO 3166-1 alpha-2 codes, or '*' for all"
    )
    valid_from: int | None = Field(None, ge=0, description="Unix seconds; default: now")
    valid_until: int = Field(0, ge=0, description="Unix seconds; 0 = open-ended")
    royalty_bps: int = Field(0, ge=0, le=10_000)
    terms_cid: str = Field("", max_length=128)
    split: list[SplitShare] | None = Field(None, description="Default: 100 % to the creator")
    aigc: bool = False
    mode: RegistrationMode = RegistrationMode.server

    @field_validator("terms_cid")
    @classmethod
    def _terms_cid_is_a_cid(cls, value: str) -> str:
        return _terms_cid(value)

    @field_validator("territories")
    @classmethod
    def _non_empty(cls, value: list[str]) -> list[str]:
        return _territories(value)

    @model_validator(mode="after")
    def _split_is_whole(self) -> Self:
        _check_split(self.split)
        return self


class RegistrationParams(_LicenceAndSplit):
    """What a creator says about an upload (the `metadata` form field, JSON)."""

    title: str = Field(min_length=1, max_length=200)
    parent_asset_id: int | None = Field(None, ge=1)


class ChainRef(BaseModel):
    chain_id: int
    contract_address: str
    tx_hash: str
    block_number: int
    log_index: int
    confirmations: int | None = None


class AssetRead(BaseModel):
    id: int
    content_hash: str
    content_cid: str
    import_profile: str = Field(
        description="IPFS import profile content_cid was computed with: "
        + ", ".join(
            f"{p.name} ({p.chunker_size:,}-byte chunks, {p.max_links:,} links per node)"
            for p in PROFILES.values()
        )
    )
    metadata_cid: str
    token_uri: str
    creator: str
    owner: str
    parent_id: int | None
    aigc: bool
    title: str
    description: str
    media_type: str
    size_bytes: int
    filename: str
    territories: list[str]
    valid_from: int
    valid_until: int
    royalty_bps: int
    terms_cid: str
    split: list[SplitShare]
    status: AssetStatus
    registered_at: datetime
    chain: ChainRef


class RegistrationRead(BaseModel):
    id: int
    state: RegistrationState
    mode: RegistrationMode
    content_hash: str
    content_cid: str
    metadata_cid: str | None
    creator: str
    tx_hash: str | None
    asset_id: int | None
    attempts: int
    error_code: str | None
    error_message: str | None
    catalogue_id: int | None = Field(None, description="The catalogue this registration is an item of")
    typed_data: dict[str, Any] | None = Field(
        None,
        description="While awaiting_signature: the EIP-712 typed data the creator signs "
        "(eth_signTypedData_v4; docs/registration.md)",
    )


class RegistrationSignature(BaseModel):
    signature: str = Field(
        pattern=r"^0x[0-9a-fA-F]{2,2048}$",
        description="The creator's signature of the registration's typed data (65-byte ECDSA, or what its "
        "ERC-1271 wallet accepts)",
    )


class CatalogueItemParams(BaseModel):
    """What differs per item of a catalogue (the n-th entry describes the n-th file)."""

    model_config = ConfigDict(extra="forbid")

    title: str | None = Field(None, min_length=1, max_length=200, description="Default: see CatalogueParams")
    description: str | None = Field(None, max_length=5000)
    parent_asset_id: int | None = Field(
        None, ge=1, description="A registered asset this item derives from (not an item of this catalogue)"
    )
    aigc: bool | None = Field(None, description="Default: the catalogue's aigc")


class CatalogueParams(_LicenceAndSplit):
    """What a creator says about a catalogue (the `metadata` form field, JSON): one licence and split for
    every item, as ``registerBatchFor`` stores them."""

    title: str | None = Field(
        None,
        min_length=1,
        max_length=180,
        description="An item without its own title is titled '<title> <n>' (or its file name without one)",
    )
    items: list[CatalogueItemParams] | None = Field(
        None, description="Per file, in upload order (as many entries as files), or none"
    )

    def item(self, index: int, filename: str) -> RegistrationParams:
        """The n-th item as a registration of its own (its metadata document, its asset row)."""
        own = self.items[index] if self.items else CatalogueItemParams.model_validate({})
        stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0].strip()
        title = own.title or (f"{self.title} {index + 1}" if self.title else stem or f"Item {index + 1}")
        return RegistrationParams(
            title=title[:200],
            description=self.description if own.description is None else own.description,
            creator=self.creator,
            territories=self.territories,
            valid_from=self.valid_from,
            valid_until=self.valid_until,
            royalty_bps=self.royalty_bps,
            terms_cid=self.terms_cid,
            split=self.split,
            parent_asset_id=own.parent_asset_id,
            aigc=self.aigc if own.aigc is None else own.aigc,
            mode=self.mode,
        )


class CatalogueItemRead(BaseModel):
    position: int
    registration_id: int
    state: RegistrationState
    filename: str
    content_hash: str
    content_cid: str
    metadata_cid: str | None
    import_profile: str
    asset_id: int | None


class CatalogueRead(BaseModel):
    id: int
    state: CatalogueState
    mode: RegistrationMode
    creator: str
    item_count: int
    tx_hash: str | None
    first_asset_id: int | None
    attempts: int
    error_code: str | None
    error_message: str | None
    items: list[CatalogueItemRead]
    typed_data: dict[str, Any] | None = Field(
        None,
        description="While awaiting_signature: the EIP-712 Catalogue typed data the creator signs "
        "(eth_signTypedData_v4; docs/registration.md)",
    )


class CatalogueRegistered(BaseModel):
    catalogue: CatalogueRead
    assets: list[AssetRead] = Field(description="One asset per item, in catalogue order")


class LineageEntry(BaseModel):
    id: int
    title: str
    creator: str
    aigc: bool
    parent_id: int | None


class OnChainRecord(BaseModel):
    """The registry's own view, read from the chain at request time."""

    asset_id: int
    content_hash: str
    creator: str
    rights_holder: str
    status: AssetStatus
    status_reason_cid: str
    parent_id: int
    aigc: bool
    content_cid: str
    import_profile: str = Field(description="IPFS import profile the CIDs were cut with, as registered")
    metadata_cid: str
    registered_at: int
    registered_block: int
    territories: list[str]
    valid_from: int
    valid_until: int
    royalty_bps: int
    terms_cid: str
    split: list[SplitShare]


class ProvenanceRead(BaseModel):
    asset: AssetRead
    on_chain: OnChainRecord
    matches_chain: bool = Field(description="Whether our database agrees with the chain on every field")
    ancestors: list[LineageEntry]
    derivatives: list[LineageEntry]


class Verification(BaseModel):
    """Whether, when and by whom content was registered, from chain evidence only."""

    content_hash: str
    registered: bool
    asset_id: int | None = None
    creator: str | None = None
    rights_holder: str | None = None
    status: AssetStatus | None = None
    registered_at: datetime | None = None
    content_cid: str | None = None
    metadata_cid: str | None = None
    parent_id: int | None = None
    aigc: bool | None = None
    chain: ChainRef | None = None
    registrar: str | None = None
