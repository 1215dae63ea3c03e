"""View models of the creators' pages: their assets (provenance, licence and split as the registry holds
them now, lineage, deliveries by region and day), and their earnings per token.

Everything is read through the domains' own service functions (assets, settlement.claims); licence,
split and rights holder come from the chain at render time (the registry is the record: a relayed update
shows at once, before the indexer has followed it), with the stored row as the fallback when the chain
cannot be reached. Amounts stay integer minor units; the templates format them with the token's
decimals.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from eth_utils import to_checksum_address
from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from edgeledger.assets import service as assets_service
from edgeledger.assets.models import Asset, OnChainRecord, Registration, SplitShare
from edgeledger.assets.service import AssetError
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.deliveries.models import DeliveryRecordRow
from edgeledger.settlement import claims
from edgeledger.settlement.charts import BytesChartText, bytes_chart_svg
from edgeledger.settlement.models import SettlementAccount
from edgeledger.settlement.schemas import EarningItem, EarningTotals
from edgeledger.territories import TERRITORY_COUNT, WORLDWIDE
from edgeledger.webapp.session import AppUser

MAX_ASSETS = 200


@dataclass(frozen=True)
class Licence:
    territories: list[str]
    valid_from: int
    valid_until: int
    royalty_bps: int
    terms_cid: str

    @property
    def worldwide(self) -> bool:
        return len(self.territories) >= TERRITORY_COUNT or self.territories == [WORLDWIDE]


@dataclass
class AssetDetail:
    asset: Asset
    #: True: the registry's record matches the stored one; False: it contradicts it; None: unreachable
    verified: bool | None
    holder: str
    status: str
    licence: Licence
    split: list[SplitShare]
    ancestors: list[Asset] = field(default_factory=list)
    derivatives: list[Asset] = field(default_factory=list)
    #: (day start in unix seconds, region, requests, bytes), newest day first
    deliveries: list[tuple[int, str, int, int]] = field(default_factory=list)
    total_requests: int = 0
    total_bytes: int = 0
    chart_svg: str = ""


def my_assets(session: Session, user: AppUser) -> list[Asset]:
    """Assets the user created or holds (as stored; newest first)."""
    if user.address is None:
        return []
    address = user.address.lower()
    query = (
        select(Asset)
        .where(or_(func.lower(Asset.creator) == address, func.lower(Asset.owner) == address))
        .order_by(Asset.id.desc())
        .limit(MAX_ASSETS)
    )
    return list(session.scalars(query))


def may_see(user: AppUser, asset: Asset, holder: str | None = None) -> bool:
    if user.role == "admin":
        return True
    mine = {a.lower() for a in (asset.creator, asset.owner, holder or "") if a}
    return user.address is not None and user.address.lower() in mine


def _record(chain: ChainClient, asset: Asset) -> OnChainRecord | None:
    try:
        return assets_service.read_on_chain(chain, asset.id)
    except (ChainError, AssetError):
        return None


def asset_detail(
    session: Session,
    chain: ChainClient,
    asset: Asset,
    chart_title: str,
    chart_text: BytesChartText = BytesChartText(),
) -> AssetDetail:
    record = _record(chain, asset)
    if record is not None:
        licence = Licence(
            record.territories, record.valid_from, record.valid_until, record.royalty_bps, record.terms_cid
        )
        split = record.split
        holder, status = record.rights_holder, str(record.status)
        # Provenance is what cannot change; the stored terms may lag a relayed update for a moment.
        verified: bool | None = (
            record.content_hash == asset.content_hash
            and record.creator.lower() == asset.creator.lower()
            and record.content_cid == asset.content_cid
            and record.metadata_cid == asset.metadata_cid
            and record.parent_id == (asset.parent_id or 0)
            and record.aigc == asset.aigc
        )
    else:
        licence = Licence(
            assets_service.asset_territories(asset),
            asset.valid_from,
            asset.valid_until,
            asset.royalty_bps,
            asset.terms_cid,
        )
        split = [SplitShare(recipient=s.recipient, bps=s.bps) for s in asset.split]
        holder, status, verified = asset.owner, asset.status, None
    detail = AssetDetail(
        asset=asset,
        verified=verified,
        holder=to_checksum_address(holder),
        status=status,
        licence=licence,
        split=split,
        ancestors=assets_service.ancestors(session, asset),
        derivatives=assets_service.derivatives(session, asset),
    )
    _deliveries(session, detail, chart_title, chart_text)
    return detail


def _deliveries(session: Session, detail: AssetDetail, chart_title: str, chart_text: BytesChartText) -> None:
    day = func.floor(DeliveryRecordRow.timestamp_ms / 86_400_000)
    rows = session.execute(
        select(
            day,
            DeliveryRecordRow.region,
            func.count(DeliveryRecordRow.id),
            func.sum(DeliveryRecordRow.bytes_delivered),
        )
        .where(DeliveryRecordRow.asset_id == detail.asset.id)
        .group_by(day, DeliveryRecordRow.region)
    ).all()
    usage: dict[tuple[str, str], tuple[int, int]] = {}
    for day_number, region, requests, nbytes in rows:
        label = datetime.fromtimestamp(int(day_number) * 86_400, UTC).strftime("%Y-%m-%d")
        usage[(region, label)] = (int(nbytes or 0), int(requests))
        detail.deliveries.append((int(day_number) * 86_400, region, int(requests), int(nbytes or 0)))
    detail.deliveries.sort(key=lambda r: (r[0], r[1]), reverse=True)
    detail.total_requests = sum(r[2] for r in detail.deliveries)
    detail.total_bytes = sum(r[3] for r in detail.deliveries)
    if usage:
        detail.chart_svg = bytes_chart_svg(usage, chart_title, chart_text)


def own_registration(session: Session, user: AppUser, registration_id: int) -> Registration:
    reg = session.get(Registration, registration_id)
    mine = reg is not None and user.address is not None and user.address.lower() == reg.creator.lower()
    if reg is None or not (mine or user.role == "admin"):
        raise AssetError(
            f"registration {registration_id} not found", code="registration_not_found", status=404
        )
    return reg


# --- earnings ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Token:
    address: str
    symbol: str
    decimals: int


@dataclass
class TokenEarnings:
    token: Token
    totals: EarningTotals
    items: list[EarningItem]


def token_of(session: Session, address: str) -> Token:
    """The token's symbol and decimals as a settlement account names them (a short address if none)."""
    account = session.scalar(
        select(SettlementAccount).where(func.lower(SettlementAccount.token) == address.lower()).limit(1)
    )
    if account is None:
        return Token(address, address[:8] + "…", 0)
    return Token(address, account.token_symbol, account.token_decimals)


def earnings(session: Session, chain: ChainClient, user: AppUser) -> list[TokenEarnings]:
    """Per token: earned, claimed (paid), claimable now, pending, not yet posted; the periods behind it."""
    if user.address is None:
        return []
    read = claims.earnings_of(session, chain, user.address)
    by_token: dict[str, TokenEarnings] = {}
    for token, totals in read.totals.items():
        by_token[token] = TokenEarnings(token_of(session, token), totals, [])
    for item in read.items:
        if item.token in by_token:
            by_token[item.token].items.append(item)
    return sorted(by_token.values(), key=lambda e: e.token.symbol)
