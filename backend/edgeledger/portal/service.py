"""View models of the auditor portal. Every ``Badge`` comes from the chain at render time."""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.assets import service as assets_service
from edgeledger.assets.models import Asset
from edgeledger.auth.models import User
from edgeledger.auth.service import AuditScope
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.deliveries.models import (
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    FraudFlag,
)
from edgeledger.ledger.hashing import bytes32
from edgeledger.ledger.vault import SettlementStatus
from edgeledger.settlement.charts import bytes_chart_svg, payees_chart_svg, seconds_chart_svg
from edgeledger.settlement.models import (
    ReconciliationCase,
    Settlement,
    SettlementAccount,
    SettlementPayout,
)
from edgeledger.settlement.payouts import Statement
from edgeledger.settlement.service import related_settlements
from edgeledger.settlement.statements import format_amount

ANCHORED = (BatchState.anchored, BatchState.final)
ON_CHAIN_SETTLEMENT_STATES = ("posted", "challenged", "claimable", "cancelled")
MAX_ROWS = 200


@dataclass(frozen=True)
class Badge:
    """What the chain says right now: ``ok`` True (verified), False (contradicted), None (unreachable)."""

    ok: bool | None
    text: str

    @property
    def css(self) -> str:
        return {True: "ok", False: "bad", None: "unknown"}[self.ok]


def _badge(check: Callable[[], tuple[bool, str]]) -> Badge:
    try:
        ok, text = check()
    except ChainError:
        return Badge(None, "unverified (chain unreachable)")
    return Badge(ok, text)


def utc(ts: int | float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M") if ts is not None else "-"


# --- sources and batches -------------------------------------------------------------------------


@dataclass
class SourceView:
    source: DeliverySource
    batches: list[DeliveryBatch]
    links_ok: bool
    head: Badge


def _visible_sources(session: Session, scope: AuditScope) -> list[DeliverySource]:
    rows = session.scalars(select(DeliverySource).order_by(DeliverySource.name))
    return [s for s in rows if scope.allows_source(s.source_id)]


def source_views(session: Session, chain: ChainClient, scope: AuditScope) -> list[SourceView]:
    views = []
    for source in _visible_sources(session, scope):
        batches = list(
            session.scalars(
                select(DeliveryBatch)
                .where(DeliveryBatch.source_pk == source.id, DeliveryBatch.state.in_(ANCHORED))
                .order_by(DeliveryBatch.block_number, DeliveryBatch.id)
            )
        )
        links_ok = all(
            later.prev_manifest_hash == earlier.manifest_hash for earlier, later in pairwise(batches)
        )
        views.append(
            SourceView(source, batches[-MAX_ROWS:], links_ok, chain_head_badge(chain, source, batches))
        )
    return views


def chain_head_badge(chain: ChainClient, source: DeliverySource, batches: list[DeliveryBatch]) -> Badge:
    """The source's last manifest hash on chain must be the last anchored batch's in our records."""

    def check() -> tuple[bool, str]:
        on_chain = chain.call(chain.contract("DeliveryLedger").functions.getSource(bytes32(source.source_id)))
        head = "0x" + bytes(on_chain[5]).hex()
        ours = batches[-1].manifest_hash if batches else "0x" + "00" * 32
        if head == ours:
            return True, f"chain head matches ({len(batches)} batches)"
        return False, f"chain head {head[:10]}… differs from our last batch"

    return _badge(check)


def batch_root_badge(chain: ChainClient, batch: DeliveryBatch) -> Badge:
    def check() -> tuple[bool, str]:
        if batch.root is None:
            return False, "no root"
        ledger = chain.contract("DeliveryLedger").functions
        anchored = bool(chain.call(ledger.isBatchRoot(bytes32(batch.batch_id), bytes32(batch.root))))
        return anchored, "root anchored on chain" if anchored else "root NOT anchored on chain"

    return _badge(check)


@dataclass
class BatchView:
    batch: DeliveryBatch
    source: DeliverySource
    badge: Badge
    flags: list[FraudFlag]
    lag_seconds: int | None


def batch_view(session: Session, chain: ChainClient, batch: DeliveryBatch) -> BatchView:
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    flags = list(
        session.scalars(select(FraudFlag).where(FraudFlag.batch_pk == batch.id).order_by(FraudFlag.id))
    )
    lag = int(batch.anchored_at.timestamp()) - batch.period_end if batch.anchored_at else None
    return BatchView(batch, source, batch_root_badge(chain, batch), flags, lag)


# --- settlements, cases, assets ----------------------------------------------------------------------


@dataclass
class SettlementView:
    settlement: Settlement
    badge: Badge
    #: the merchant's name, and the total in its token (``0.310301 tUSDC``; minor units when unknown)
    merchant: str = ""
    total: str = ""


def settlement_badge(chain: ChainClient, settlement: Settlement) -> Badge:
    if settlement.state not in ON_CHAIN_SETTLEMENT_STATES or settlement.root is None:
        return Badge(None, f"not on chain ({settlement.state})")

    def check() -> tuple[bool, str]:
        vault = chain.contract("SettlementVault").functions
        root, _token, _opens, status, total, remaining = chain.call(
            vault.settlementOf(settlement.period_id, settlement.merchant_address)
        )
        same = "0x" + bytes(root).hex() == settlement.root and int(total) == settlement.total
        if same:
            return True, f"vault holds this root; {int(total) - int(remaining)} of {int(total)} claimed"
        return False, "the vault holds another root or total" if int(
            status
        ) != SettlementStatus.NONE else "not in the vault"

    return _badge(check)


def settlement_views(session: Session, chain: ChainClient, scope: AuditScope) -> list[SettlementView]:
    rows = [
        s
        for s in session.scalars(
            select(Settlement).order_by(Settlement.period_start.desc(), Settlement.id.desc()).limit(MAX_ROWS)
        )
        if scope.allows_merchant(s.merchant_user_id)
    ]
    merchant_ids = {s.merchant_user_id for s in rows}
    names = dict(session.execute(select(User.id, User.name).where(User.id.in_(merchant_ids))).all())
    accounts = {
        a.merchant_user_id: a
        for a in session.scalars(
            select(SettlementAccount).where(SettlementAccount.merchant_user_id.in_(merchant_ids))
        )
    }
    return [
        SettlementView(
            s,
            settlement_badge(chain, s),
            merchant=f"{names.get(s.merchant_user_id, 'merchant')} (#{s.merchant_user_id})",
            total=Token.of(s, accounts.get(s.merchant_user_id)).amount(int(s.total)),
        )
        for s in rows
    ]


@dataclass(frozen=True)
class Token:
    """The token a settlement pays in, to print its amounts: ``0.310301 tUSDC``."""

    address: str
    symbol: str | None
    decimals: int | None

    @classmethod
    def of(cls, settlement: Settlement, account: SettlementAccount | None) -> Token:
        """The merchant's account names the token (while it still settles in it); else the statement's
        currency; else only minor units can be shown."""
        if account is not None and account.token.lower() == settlement.token.lower():
            return cls(settlement.token, account.token_symbol, account.token_decimals)
        if settlement.statement_json is not None:
            currency = Statement.model_validate_json(settlement.statement_json).currency
            return cls(settlement.token, currency.code, currency.decimals)
        return cls(settlement.token, None, None)

    def amount(self, minor: int) -> str:
        if self.symbol is None or self.decimals is None:
            return f"{minor} (minor units)"
        return f"{format_amount(minor, self.decimals)} {self.symbol}"


@dataclass
class SettlementDetail:
    """One settlement's page: what it is, what it pays, where it is on chain, what relates to it."""

    settlement: Settlement
    badge: Badge
    merchant: str
    token: Token
    #: the challenge window in words (from the state and the vault's claims-open time)
    challenge: str
    #: the other settlements of the merchant's period (attempts, corrections, releases), and the
    #: settlement whose held reserve funds this one (a release)
    related: list[dict[str, Any]]
    funded_by: Settlement | None
    batch_ids: list[str]


def _challenge_window(settlement: Settlement) -> str:
    opens = utc(settlement.claims_open_at)
    if settlement.state == "posted":
        return f"running: claims open at {opens} unless the settlement is challenged"
    if settlement.state == "challenged":
        return "challenged: claims are frozen until an admin upholds or cancels it"
    if settlement.state == "claimable":
        return f"closed: claims open since {opens}"
    if settlement.state == "cancelled":
        return "cancelled on chain: nothing can be claimed"
    return f"not posted yet ({settlement.state})"


def settlement_detail(session: Session, chain: ChainClient, settlement: Settlement) -> SettlementDetail:
    merchant = session.get(User, settlement.merchant_user_id)
    account = session.scalar(
        select(SettlementAccount).where(SettlementAccount.merchant_user_id == settlement.merchant_user_id)
    )
    name = merchant.name if merchant is not None and merchant.name else "merchant"
    funded_by = session.get(Settlement, settlement.funded_by_pk) if settlement.funded_by_pk else None
    return SettlementDetail(
        settlement=settlement,
        badge=settlement_badge(chain, settlement),
        merchant=f"{name} (#{settlement.merchant_user_id})",
        token=Token.of(settlement, account),
        challenge=_challenge_window(settlement),
        related=related_settlements(session, settlement),
        funded_by=funded_by,
        batch_ids=[str(b) for b in json.loads(settlement.batch_ids_json or "[]")],
    )


def cases(session: Session, scope: AuditScope) -> list[ReconciliationCase]:
    rows = session.scalars(select(ReconciliationCase).order_by(ReconciliationCase.id.desc()).limit(MAX_ROWS))
    return [c for c in rows if scope.allows_merchant(c.merchant_user_id)]


@dataclass
class AssetView:
    asset: Asset
    badge: Badge
    ancestors: list[Asset] = field(default_factory=list)
    derivatives: list[Asset] = field(default_factory=list)


def asset_badge(chain: ChainClient, asset: Asset) -> Badge:
    def check() -> tuple[bool, str]:
        record = assets_service.read_on_chain(chain, asset.id)
        if assets_service.matches_chain(asset, record):
            return True, "registry record matches"
        return False, "the registry says otherwise"

    return _badge(check)


def asset_views(session: Session, chain: ChainClient) -> list[AssetView]:
    rows = session.scalars(select(Asset).order_by(Asset.id.desc()).limit(MAX_ROWS))
    return [AssetView(a, asset_badge(chain, a)) for a in rows]


def asset_view(session: Session, chain: ChainClient, asset: Asset) -> AssetView:
    return AssetView(
        asset,
        asset_badge(chain, asset),
        assets_service.ancestors(session, asset),
        assets_service.derivatives(session, asset),
    )


# --- charts ----------------------------------------------------------------------------------------


@dataclass
class Charts:
    usage_svg: str
    payees_svg: str
    lag_svg: str


def charts(session: Session, scope: AuditScope) -> Charts:
    """Bytes and requests by region and day; payouts by payee; anchoring lag (anchored_at - period end)."""
    visible = [s.id for s in _visible_sources(session, scope)]
    rows = session.execute(
        select(
            func.floor(DeliveryRecordRow.timestamp_ms / 86_400_000),
            DeliveryRecordRow.region,
            func.sum(DeliveryRecordRow.bytes_delivered),
            func.count(DeliveryRecordRow.id),
        )
        .where(DeliveryRecordRow.source_pk.in_(visible))
        .group_by(func.floor(DeliveryRecordRow.timestamp_ms / 86_400_000), DeliveryRecordRow.region)
    ).all()
    usage: dict[tuple[str, str], tuple[int, int]] = {}
    for day_number, region, nbytes, requests in rows:
        label = datetime.fromtimestamp(int(day_number) * 86_400, UTC).strftime("%Y-%m-%d")
        usage[(region, label)] = (int(nbytes or 0), int(requests))  # bytes_chart_svg: (region, day)
    payees: dict[str, int] = defaultdict(int)
    settlements = [
        s
        for s in session.scalars(select(Settlement).where(Settlement.state.in_(ON_CHAIN_SETTLEMENT_STATES)))
        if scope.allows_merchant(s.merchant_user_id) and s.state != "cancelled"
    ]
    for payout in session.scalars(
        select(SettlementPayout).where(SettlementPayout.settlement_pk.in_([s.id for s in settlements]))
    ):
        payees[payout.payee] += int(payout.amount)
    lags: dict[str, int] = {}
    for batch in session.scalars(
        select(DeliveryBatch)
        .where(DeliveryBatch.source_pk.in_(visible), DeliveryBatch.anchored_at.is_not(None))
        .order_by(DeliveryBatch.anchored_at.desc())
        .limit(20)
    ):
        assert batch.anchored_at is not None
        lags[f"{batch.batch_id[:10]}… {utc(batch.period_end)}"] = max(
            0, int(batch.anchored_at.timestamp()) - batch.period_end
        )
    decimals = 6
    return Charts(
        usage_svg=bytes_chart_svg(usage, "Bytes delivered by region and day"),
        payees_svg=payees_chart_svg(dict(payees), "Payouts by payee (token minor units)", decimals, "tokens"),
        lag_svg=seconds_chart_svg(lags, "Anchoring lag: anchored minus period end"),
    )


def proof_json(proof: Any) -> str:
    """The proof document for the page's script, safe inside a <script type=application/json>."""
    return json.dumps(proof.model_dump(mode="json")).replace("</", "<\\/")
