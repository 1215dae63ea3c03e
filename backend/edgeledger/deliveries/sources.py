"""Delivery sources on chain: edge nodes and CDN provider accounts registered in the DeliveryLedger, their
status and their manifest signers; and, off chain, the log format each one declares.

A source row is a journal: written ("registering") and committed before ``registerSource`` is sent, so a
retry first asks the chain whether the registration landed (docs/anchoring.md). The declared log format
(:class:`LogFormatDeclaration`: format, host, edge location, Akamai field ids) is checked against what the
format needs before it is stored, so an upload never meets a half-declared source
(docs/log-formats.md, "Declared or detected").
"""

from __future__ import annotations

import ipaddress
import json
from typing import Any, Literal

from eth_account import Account
from eth_utils import is_address, to_checksum_address
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.auth.models import User
from edgeledger.chain.client import ChainClient, ContractRevert
from edgeledger.config import Settings
from edgeledger.deliveries.models import (
    DeliverySource,
    SourceKind,
    SourceStatus,
)
from edgeledger.deliveries.parsers import (
    AKAMAI_REQUIRED_IDS,
    FORMATS,
    NEEDS_EDGE,
    NEEDS_FIELDS,
    NEEDS_HOST,
    SourceSite,
)
from edgeledger.deliveries.parsers.accesslog import checked_site
from edgeledger.deliveries.service import DeliveryError
from edgeledger.ledger.abis import DELIVERY_LEDGER
from edgeledger.ledger.hashing import bytes32, hex32
from edgeledger.ledger.ids import source_id_for
from edgeledger.territories import UnknownTerritoryError, decode_territories, encode_territories

PROVIDERS = ("cloudfront", "cloudflare", "fastly", "edgeledger", "akamai", "aliyun", "tencent")


class LogFormatDeclaration(BaseModel):
    """What a source declares about its logs (docs/log-formats.md, "Declared or detected")."""

    log_format: str | None = Field(
        None, description="One of the log formats; null: detected per file, only when exactly one fits"
    )
    site_host: str | None = Field(
        None, max_length=255, description="The merchant host of lines that name none (nginx, Fastly CLF)"
    )
    site_edge_location: str | None = Field(
        None, max_length=16, description="The edge location of lines that name none (1-16 ASCII chars)"
    )
    log_fields: list[int] | None = Field(
        None, max_length=200, description="Akamai structured: the data set field ids of the columns, in order"
    )


CHAIN_KIND = {SourceKind.edge_node: 0, SourceKind.cdn_provider: 1}


CHAIN_STATUS = {0: SourceStatus.active, 1: SourceStatus.suspended}


class SourceCreate(LogFormatDeclaration):
    name: str = Field(min_length=1, max_length=100)
    kind: SourceKind
    provider: Literal["cloudfront", "cloudflare", "fastly", "edgeledger", "akamai", "aliyun", "tencent"]
    operator: str | None = Field(None, description="Payout address; CDN providers default to the platform")
    signer: str | None = Field(None, description="Edge nodes: the node's manifest key (required)")
    regions: list[str] = Field(min_length=1, description="ISO 3166-1 alpha-2 codes served, or *")
    jurisdiction: str = Field(min_length=2, max_length=2)
    node_ips: list[str] = Field(default_factory=list)
    operator_user_id: int | None = None


class SourceRead(LogFormatDeclaration):
    id: int
    source_id: str
    name: str
    kind: str
    provider: str
    operator: str
    signer: str
    regions: list[str]
    jurisdiction: str
    node_ips: list[str]
    operator_user_id: int | None
    status: str
    tx_hash: str | None
    block_number: int | None


class SignerRotation(BaseModel):
    signer: str


def _address(value: str, what: str) -> str:
    if not is_address(value):
        raise DeliveryError(f"{what} {value!r} is not an address", code="invalid_address", field=what)
    address = to_checksum_address(value)
    if int(address, 16) == 0:
        raise DeliveryError(f"{what} must not be the zero address", code="invalid_address", field=what)
    return address


def regions_bitmap(codes: list[str]) -> int:
    try:
        bitmap = encode_territories(codes)
    except UnknownTerritoryError as exc:
        raise DeliveryError(str(exc), code="unknown_region", codes=exc.codes) from None
    if bitmap == 0:
        raise DeliveryError("name at least one region", code="unknown_region", codes=codes)
    return bitmap


def _node_ips(values: list[str]) -> list[str]:
    try:
        return [str(ipaddress.ip_address(v.strip())) for v in values]
    except ValueError as exc:
        raise DeliveryError(str(exc), code="invalid_node_ip") from None


def ingest_signer_address(settings: Settings) -> str:
    key = settings.resolved_ingest_signer_key
    if key is None:
        raise DeliveryError(
            "no ingest key configured (INGEST_SIGNER_PRIVATE_KEY or SIGNER_PRIVATE_KEY)",
            code="ingest_key_missing",
            status=503,
        )
    return Account.from_key(key.get_secret_value()).address


def source_read(source: DeliverySource) -> SourceRead:
    return SourceRead(
        id=source.id,
        source_id=source.source_id,
        name=source.name,
        kind=source.kind,
        provider=source.provider,
        operator=source.operator,
        signer=source.signer,
        regions=decode_territories(int(source.regions_bitmap, 16)),
        jurisdiction=source.jurisdiction,
        node_ips=json.loads(source.node_ips_json),
        operator_user_id=source.operator_user_id,
        status=source.status,
        tx_hash=source.tx_hash,
        block_number=source.block_number,
        log_format=source.log_format,
        site_host=source.site_host,
        site_edge_location=source.site_edge_location,
        log_fields=json.loads(source.log_fields_json) if source.log_fields_json else None,
    )


def apply_declaration(source: DeliverySource, params: LogFormatDeclaration) -> None:
    """Checks ``params`` against what its format needs and stores it on ``source`` (not committed).

    422 ``bad_log_format`` (unknown format), ``invalid_log_declaration`` (a host or edge location the
    records could not carry, a field id list without a field a record needs) and
    ``log_declaration_incomplete`` (the format needs a host, edge location or field ids not given).
    """
    log_format = params.log_format
    if log_format is not None and log_format not in FORMATS:
        raise DeliveryError(
            f"log format must be one of {', '.join(FORMATS)}", code="bad_log_format", log_format=log_format
        )
    try:
        site = checked_site(SourceSite(params.site_host, params.site_edge_location), host=False, edge=False)
    except ValueError as exc:
        raise DeliveryError(str(exc), code="invalid_log_declaration") from None
    fields = params.log_fields or []
    missing = [
        name
        for name, needed, given in (
            ("site_host", NEEDS_HOST, site.host),
            ("site_edge_location", NEEDS_EDGE, site.edge_location),
            ("log_fields", NEEDS_FIELDS, fields),
        )
        if log_format in needed and not given
    ]
    if missing:
        raise DeliveryError(
            f"a {log_format} source must declare {', '.join(missing)}",
            code="log_declaration_incomplete",
            log_format=log_format,
            missing=missing,
        )
    if fields:
        lacking = [field_id for field_id in AKAMAI_REQUIRED_IDS if field_id not in fields]
        if lacking or any(not 0 <= field_id < 100_000 for field_id in fields):
            raise DeliveryError(
                f"log_fields must name the data set fields {', '.join(map(str, AKAMAI_REQUIRED_IDS))}",
                code="invalid_log_declaration",
                lacking=lacking,
            )
    source.log_format = log_format
    source.site_host = site.host
    source.site_edge_location = site.edge_location
    source.log_fields_json = json.dumps(fields) if fields else None


def declare_log_format(
    session: Session, source: DeliverySource, params: LogFormatDeclaration
) -> DeliverySource:
    """PUT .../log-format: replaces what the source declares (a declared format always wins over
    detection; all null goes back to detection)."""
    apply_declaration(source, params)
    session.commit()
    return source


def register_source(
    session: Session, chain: ChainClient, settings: Settings, params: SourceCreate
) -> DeliverySource:
    """Journal the source, register it on chain, mark it active. Re-posting a source stuck in
    "registering" with the same name resumes it (see :func:`finish_registration`)."""
    if params.operator_user_id is not None and session.get(User, params.operator_user_id) is None:
        raise DeliveryError(
            f"no user {params.operator_user_id}", code="unknown_user", user_id=params.operator_user_id
        )
    existing = session.scalar(select(DeliverySource).where(DeliverySource.name == params.name))
    if existing is not None:
        if existing.status != SourceStatus.registering:
            raise DeliveryError(
                f"source {params.name!r} already exists",
                code="source_exists",
                status=409,
                source=existing.name,
            )
        return finish_registration(session, chain, existing)
    source = _new_source_row(settings, params)
    session.add(source)
    session.commit()  # the journal entry: a crash from here on is resumed by finish_registration
    return finish_registration(session, chain, source)


def _new_source_row(settings: Settings, params: SourceCreate) -> DeliverySource:
    jurisdiction = params.jurisdiction.upper()
    if not (jurisdiction.isascii() and jurisdiction.isalpha()):
        raise DeliveryError("jurisdiction must be an ISO 3166-1 alpha-2 code", code="invalid_jurisdiction")
    if params.kind == SourceKind.edge_node:
        if params.signer is None or params.operator is None:
            raise DeliveryError("edge nodes need an operator and a signer address", code="signer_required")
        signer = _address(params.signer, "signer")
        operator = _address(params.operator, "operator")
    else:
        # CDN provider manifests are signed with the platform's ingest key.
        signer = _address(params.signer, "signer") if params.signer else ingest_signer_address(settings)
        operator = _address(params.operator, "operator") if params.operator else signer
    source = DeliverySource(
        source_id=source_id_for(params.name),
        name=params.name,
        kind=params.kind,
        provider=params.provider,
        operator=operator,
        signer=signer,
        regions_bitmap=hex(regions_bitmap(params.regions)),
        jurisdiction=jurisdiction,
        node_ips_json=json.dumps(_node_ips(params.node_ips)),
        operator_user_id=params.operator_user_id,
        status=SourceStatus.registering,
    )
    apply_declaration(source, params)
    return source


def chain_source(chain: ChainClient, source_id: str) -> dict[str, Any] | None:
    """``getSource`` as a dict, or None when the chain does not know the source."""
    try:
        raw = chain.call(chain.contract(DELIVERY_LEDGER).functions.getSource(bytes32(source_id)))
    except ContractRevert as exc:
        if exc.error == "UnknownSource":
            return None
        raise
    signer, index, batch_count, kind, status, last, operator, jurisdiction, regions = raw
    return {
        "signer": to_checksum_address(signer),
        "index": index,
        "batch_count": batch_count,
        "kind": kind,
        "status": CHAIN_STATUS[status],
        "last_manifest_hash": hex32(bytes(last)),
        "operator": to_checksum_address(operator),
        "jurisdiction": bytes(jurisdiction).decode("ascii"),
        "regions": regions,
    }


def finish_registration(session: Session, chain: ChainClient, source: DeliverySource) -> DeliverySource:
    """Completes a "registering" source: if the chain already has it (an earlier attempt landed), just
    mark it active; otherwise send ``registerSource`` and wait for it."""
    on_chain = chain_source(chain, source.source_id)
    if on_chain is None:
        fn = chain.contract(DELIVERY_LEDGER).functions.registerSource(
            bytes32(source.source_id),
            CHAIN_KIND[SourceKind(source.kind)],
            source.operator,
            source.signer,
            int(source.regions_bitmap, 16),
            source.jurisdiction.encode("ascii"),
        )
        result = chain.transact(fn)
        source.tx_hash, source.block_number = result.tx_hash, result.block_number
    else:
        source.signer = on_chain["signer"]
        source.status = on_chain["status"]
    if source.status == SourceStatus.registering:
        source.status = SourceStatus.active
    session.commit()
    return source


def set_source_status(
    session: Session, chain: ChainClient, source: DeliverySource, target: SourceStatus
) -> DeliverySource:
    """Suspend or reactivate: on chain first, then the database (which mirrors the chain)."""
    if source.status == SourceStatus.registering:
        raise DeliveryError("the source is still registering", code="source_registering", status=409)
    on_chain = chain_source(chain, source.source_id)
    current = on_chain["status"] if on_chain else source.status
    if current != target:
        ledger = chain.contract(DELIVERY_LEDGER).functions
        fn = ledger.suspendSource if target == SourceStatus.suspended else ledger.reactivateSource
        try:
            chain.transact(fn(bytes32(source.source_id)))
        except ContractRevert as exc:
            raise DeliveryError(
                exc.message, code="invalid_source_status", status=409, error=exc.error
            ) from exc
    source.status = target
    session.commit()
    return source


def sync_source(session: Session, chain: ChainClient, source: DeliverySource) -> DeliverySource:
    """Re-reads signer, operator and status from the chain (after a rotation done with the node's wallet)."""
    on_chain = chain_source(chain, source.source_id)
    if on_chain is None:
        if source.status == SourceStatus.registering:
            return source
        raise DeliveryError("the chain does not know this source", code="source_not_on_chain", status=409)
    source.signer = on_chain["signer"]
    source.operator = on_chain["operator"]
    source.status = on_chain["status"]
    session.commit()
    return source


def rotate_provider_signer(
    session: Session, chain: ChainClient, source: DeliverySource, signer: str
) -> DeliverySource:
    """CDN providers only: the platform (NODE_ADMIN_ROLE) moves the source to a new ingest key."""
    if source.kind != SourceKind.cdn_provider:
        raise DeliveryError(
            "edge-node signers are rotated by the node's operator with rotateSigner from its own wallet, "
            "then POST /deliveries/sources/{ref}/sync",
            code="rotation_not_allowed",
            status=409,
        )
    new = _address(signer, "signer")
    try:
        chain.transact(chain.contract(DELIVERY_LEDGER).functions.rotateSigner(bytes32(source.source_id), new))
    except ContractRevert as exc:
        raise DeliveryError(exc.message, code="rotation_rejected", status=409, error=exc.error) from exc
    return sync_source(session, chain, source)
