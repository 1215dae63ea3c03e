"""Tables and schemas of the compliance domain."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import BigInteger, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from edgeledger.db import Base, UTCDateTime, utcnow


class Action(StrEnum):
    read_raw = "read_raw"  # raw log data: quarantined lines, a record's URI and request id, proofs
    export = "export"  # any export that carries raw log data (batches, audit packages, raw exports)
    export_refused = "export_refused"  # refused by the residency policy
    upload_refused = "upload_refused"  # storing a source's raw logs here is refused by the policy
    erase = "erase"  # right to erasure
    retention_purge = "retention_purge"  # raw fields past the retention time
    policy_change = "policy_change"
    batch_abandoned = "batch_abandoned"  # an admin gave up anchoring a batch: its records are not billed


class ComplianceEvent(Base):
    """One access to, export of or deletion of personal or raw log data. Append-only; its leaf
    (ledger/compliance_leaf.py) goes into a batch of the compliance source and is anchored on chain."""

    __tablename__ = "compliance_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(66), unique=True)
    occurred_at_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    actor: Mapped[str] = mapped_column(String(120))  # "user:<id>:<role>" or "system:<job>"
    action: Mapped[str] = mapped_column(String(32), index=True)
    subject: Mapped[str] = mapped_column(String(300))  # "batch:0x..", "record:<source>/<request id>", ...
    legal_basis: Mapped[str] = mapped_column(String(300))
    detail_json: Mapped[str] = mapped_column(Text, default="{}")
    leaf: Mapped[bytes] = mapped_column(LargeBinary(32))
    batch_pk: Mapped[int | None] = mapped_column(ForeignKey("delivery_batches.id"), index=True)


class ResidencyPolicy(Base):
    """Where the raw logs of one data zone may be stored and exported (zones: "EU" for the EU/EEA,
    otherwise the ISO country code; "*" is the default row and, in a list, any zone)."""

    __tablename__ = "compliance_residency_policies"

    zone: Mapped[str] = mapped_column(String(8), primary_key=True)
    storage_zones: Mapped[str] = mapped_column(String(400))  # comma-separated
    export_zones: Mapped[str] = mapped_column(String(400))
    updated_by: Mapped[str] = mapped_column(String(120), default="migration")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# --- schemas ---------------------------------------------------------------------------------------


class EventRead(BaseModel):
    event_id: str
    occurred_at_ms: int
    actor: str
    action: str
    subject: str
    legal_basis: str
    detail: dict[str, Any]
    leaf: str
    batch_id: str | None
    batch_state: str | None


class EventPage(BaseModel):
    total: int
    items: list[EventRead]


class EventProof(BaseModel):
    """Everything needed to check one event against the chain without our database."""

    format: str = "edgeledger-compliance-proof/v1"
    event: EventRead
    leaf: str
    proof: list[str]
    root: str
    batch_id: str
    source_id: str
    tx_hash: str | None
    chain_id: int | None
    contract: str | None


class LegalBasis(BaseModel):
    legal_basis: str = Field(min_length=3, max_length=300, description="e.g. 'GDPR Art. 17 request #123'")


class ErasureRequest(LegalBasis):
    client_ip: str = Field(min_length=2, max_length=64, description="The data subject's IP; never stored")
    reference: str = Field("", max_length=120, description="Your ticket or request reference")


class ErasureRead(BaseModel):
    event_id: str
    records_erased: int
    keys_checked: int
    keys_destroyed: int = Field(description="Days whose key is gone: their records were unlinkable already")


class RawExportRequest(LegalBasis):
    source: str = Field(description="Source name or id")
    period_start: int = Field(ge=0)
    period_end: int = Field(gt=0)
    destination: str = Field(min_length=2, max_length=2, description="ISO country code of the recipient")


class PolicyRead(BaseModel):
    zone: str
    storage_zones: list[str]
    export_zones: list[str]
    updated_by: str = Field(description='"default" for a built-in policy no one has changed')
    updated_at: datetime | None


class PolicySet(BaseModel):
    storage_zones: list[str] = Field(min_length=1, max_length=50)
    export_zones: list[str] = Field(min_length=1, max_length=50)


class RetentionRead(BaseModel):
    records_redacted: int
    quarantined_lines_deleted: int
    keys_destroyed: int
    event_id: str | None
