"""What a period's computation reads from the database and the chain: the merchant's receipts (from the
sources it authorises), what is not billed and why, the block its assets' terms are read at, the
settlement currency and platform address, and the reconciliation of the CDN's bill (flows.py drives
them; nothing here writes a settlement).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, Select, case, func, select, true
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries.hosts import authorised_source_pks
from edgeledger.deliveries.models import (
    ANCHORED_STATES,
    BatchState,
    DeliveryBatch,
    DeliveryReceipt,
    DeliveryRecordRow,
    DeliverySource,
    FraudFlag,
    MerchantHost,
)
from edgeledger.deliveries.receipts import open_flag_cover
from edgeledger.ledger.hashing import hex32
from edgeledger.ledger.ids import merchant_id_for
from edgeledger.settlement import SettlementError
from edgeledger.settlement.billing import Usage, reconcile, usage_from_receipts, utc_day
from edgeledger.settlement.models import (
    BillingImport,
    BillingUsageRow,
    ReconciliationCase,
    SettlementAccount,
)
from edgeledger.settlement.payouts import Receipt
from edgeledger.settlement.rates import BPS, INT64_MAX, Currency, FxTable
from edgeledger.settlement.service import merchant_key
from edgeledger.settlement.terms import terms_block

# ----------------------------------------------------------------------------------------------
# Inputs from the database
# ----------------------------------------------------------------------------------------------


@dataclass
class PeriodData:
    receipts: list[Receipt]
    batch_ids: list[str]
    #: (region, day) -> [bytes, requests]
    usage: dict[tuple[str, str], list[int]]
    #: (source name, region, day) -> [bytes, requests]: each source's volume, compared with the CDN's bill
    #: (batches under review included: the CDN delivered them)
    source_usage: dict[tuple[str, str, str], list[int]] = field(default_factory=dict)
    #: receipts of batches under a fraud review (:func:`under_review`): not billed by this settlement, but
    #: compared with the CDN's bill with the rest, so a review opens no reconciliation case (a case
    #: adjusted for them would charge them twice once a correction bills them)
    reviewed: list[Receipt] = field(default_factory=list)
    #: the block a period that bills nothing now records for its batches under review (flows.py
    #: ``_inputs``): the correction that bills them once the review is decided prices them at it
    terms_block: int | None = None


def receipt_key(batch_id: str, asset_id: int, region: str, country: str) -> str:
    """``<batch id>:<asset id>:<region>:<country>``: the receipt's batch, hence its proofs. The part of
    a receipt split at a licence boundary ``b`` (:func:`split_at_licence`) is keyed ``<key>:<b>``."""
    return f"{batch_id}:{asset_id}:{region}:{country}"


def merchant_ids_of(session: Session, merchant_user_id: int) -> list[str]:
    """The merchant ids (keccak of each host, hex) a merchant's deliveries are recorded under."""
    hosts = session.scalars(
        select(MerchantHost.host).where(MerchantHost.merchant_user_id == merchant_user_id)
    )
    return [hex32(merchant_id_for(h)) for h in hosts]


def merchant_raw_ids(session: Session, merchant_user_id: int) -> list[bytes]:
    """:func:`merchant_ids_of` as the bytes the records' ``merchant_id`` column holds."""
    return [bytes.fromhex(m.removeprefix("0x")) for m in merchant_ids_of(session, merchant_user_id)]


def receipt_records(merchant_ids: list[bytes]) -> tuple[ColumnElement[bool], ...]:
    """The records a receipt of these merchant ids counts (deliveries/receipts.py ``compute_receipts``):
    theirs, and excluded by no fraud flag. What a split (:func:`split_at_licence`) divides, and what an
    audit package proves behind it."""
    return (DeliveryRecordRow.merchant_id.in_(merchant_ids), DeliveryRecordRow.excluded.is_(False))


def under_review(merchant_ids: list[str]) -> Select[tuple[int]]:
    """Primary keys of the batches with an open fraud flag over records of these merchants (hex ids).

    Such a batch is counted by no settlement until every such flag is decided: its records wait for the
    review, then the period (if still unsettled) or a correction counts the batch with what the review
    left billable. Counting it before would fix the batch to the settlement that counted it, and
    records a dismissal cleared afterwards would never be billed (a batch belongs to one settlement)."""
    raw = [bytes.fromhex(m.removeprefix("0x")) for m in merchant_ids]
    # the receipts listing reads the same cover (deliveries/receipts.py): it shows what waits here
    return open_flag_cover(FraudFlag.batch_pk).where(DeliveryRecordRow.merchant_id.in_(raw))


def period_receipts(
    session: Session,
    account: SettlementAccount,
    period_start: int,
    exclude: frozenset[str] | set[str] = frozenset(),
) -> PeriodData:
    """The merchant's anchored, non-excluded deliveries in the period, per (batch, asset, region,
    country): one receipt each, paid to the batch's source operator; asset 0 (content not registered)
    pays the delivery fee only. Batches in ``exclude`` (counted by another settlement of the period,
    settlement/corrections.py) are left out. Read from the
    receipts deliveries computes when a batch is anchored or a fraud flag on it is reviewed
    (deliveries/receipts.py): the records themselves are aggregated once, there."""
    merchant_ids = merchant_ids_of(session, account.merchant_user_id)
    authorised = authorised_source_pks(session, account.merchant_user_id)
    data = PeriodData([], [], {})
    if not merchant_ids or not authorised:
        return data
    receipt = DeliveryReceipt
    reviewed = set(session.scalars(under_review(merchant_ids)))
    rows = session.execute(
        select(
            DeliveryBatch.id,
            DeliveryBatch.batch_id,
            receipt.asset_id,
            receipt.region,
            receipt.country,
            DeliverySource.operator,
            DeliverySource.name,
            func.sum(receipt.requests),
            func.sum(receipt.bytes_delivered),
        )
        .join(DeliveryBatch, receipt.batch_pk == DeliveryBatch.id)
        .join(DeliverySource, DeliveryBatch.source_pk == DeliverySource.id)
        .where(
            DeliveryBatch.period_start == period_start,
            DeliveryBatch.state.in_(sorted(ANCHORED_STATES)),
            DeliveryBatch.source_pk.in_(authorised),
            receipt.merchant_id.in_(merchant_ids),
            receipt.requests > 0,
            DeliveryBatch.batch_id.not_in(sorted(exclude)) if exclude else true(),
        )
        .group_by(
            DeliveryBatch.id,
            DeliveryBatch.batch_id,
            receipt.asset_id,
            receipt.region,
            receipt.country,
            DeliverySource.operator,
            DeliverySource.name,
        )
        .order_by(DeliveryBatch.batch_id, receipt.asset_id, receipt.region, receipt.country)
    )

    merchant = merchant_key(account)
    day = utc_day(period_start)
    batch_ids: set[str] = set()
    values: list[tuple[Any, ...]] = []  # in RECEIPT_ROW order
    waiting: list[tuple[Any, ...]] = []  # of batches under review
    for batch_pk, batch_id, asset_id, region, country, operator, source, requests, nbytes in rows:
        nbytes, requests = int(nbytes or 0), int(requests)
        key = receipt_key(batch_id, asset_id, region, country)
        row = (key, str(asset_id), merchant, region, country, period_start, period_start, operator.lower())
        totals = [data.source_usage.setdefault((source, region, day), [0, 0])]
        if batch_pk in reviewed:
            waiting.append((*row, requests, nbytes))
        else:
            batch_ids.add(batch_id)
            values.append((*row, requests, nbytes))
            totals.append(data.usage.setdefault((region, day), [0, 0]))
        for counts in totals:
            counts[0] += nbytes
            counts[1] += requests
    data.receipts = Receipt.from_rows(values)
    data.reviewed = Receipt.from_rows(waiting)
    data.batch_ids = sorted(batch_ids)
    return data


def split_at_licence(
    session: Session,
    account: SettlementAccount,
    receipts: list[Receipt],
    boundaries: dict[str, tuple[int, ...]],
) -> list[Receipt]:
    """``receipts`` with each receipt of an asset in ``boundaries`` (asset id -> the seconds inside the
    period where its licence starts or stops covering deliveries, ``payouts.licence_boundaries``) split
    there by its records' times: the records delivered before the first boundary stay under the
    receipt's key, judged at the period's start; those from boundary ``b`` on (to the next) become a
    receipt keyed ``<key>:<b>`` judged at ``b``. Empty parts are left out; the parts of a receipt sum to
    it exactly (``receipts_inconsistent`` otherwise: the records and the receipt computed from them
    disagree). A record's time counts in whole seconds, as ``isLicensedFor`` judges a timestamp.

    Rare (an asset registered, or a licence ending, during the period), so one grouped query of the
    records of the affected batches per such asset; every other receipt is returned as it was."""
    split_assets = {a for a in boundaries if any(r.asset_id == a for r in receipts)}
    if not split_assets:
        return receipts
    raw_ids = merchant_raw_ids(session, account.merchant_user_id)
    record = DeliveryRecordRow
    parts: dict[str, list[tuple[int, int, int]]] = {}  # receipt key -> [(part start, requests, bytes)]
    for asset_id in sorted(split_assets, key=int):
        edges = boundaries[asset_id]
        wanted = {r.key: r for r in receipts if r.asset_id == asset_id}
        batch_ids = sorted({k.split(":", 1)[0] for k in wanted})
        bucket = case(
            *[(record.timestamp_ms < edge * 1000, index) for index, edge in enumerate(edges)],
            else_=len(edges),
        ).label("part")
        rows = session.execute(
            select(
                DeliveryBatch.batch_id,
                record.region,
                record.country,
                bucket,
                func.count(record.id),
                func.coalesce(func.sum(record.bytes_delivered), 0),
            )
            .join(DeliveryBatch, record.batch_pk == DeliveryBatch.id)
            .where(
                DeliveryBatch.batch_id.in_(batch_ids),
                record.asset_id == int(asset_id),
                *receipt_records(raw_ids),
            )
            .group_by(DeliveryBatch.batch_id, record.region, record.country, bucket)
        )
        for batch_id, region, country, index, requests, nbytes in rows:
            key = receipt_key(batch_id, int(asset_id), region, country)
            if key in wanted and int(requests):
                start = wanted[key].at if int(index) == 0 else edges[int(index) - 1]
                parts.setdefault(key, []).append((start, int(requests), int(nbytes)))
    out: list[Receipt] = []
    for receipt in receipts:
        if receipt.asset_id not in split_assets:
            out.append(receipt)
            continue
        found = sorted(parts.get(receipt.key, []))
        if sum(p[1] for p in found) != receipt.requests or sum(p[2] for p in found) != receipt.bytes:
            raise SettlementError(
                f"receipt {receipt.key} does not match its records: it cannot be split at the licence's "
                "boundaries",
                code="receipts_inconsistent",
            )
        out += [
            receipt.model_copy(
                update={
                    "key": receipt.key if start == receipt.at else f"{receipt.key}:{start}",
                    "at": start,
                    "requests": requests,
                    "bytes": nbytes,
                }
            )
            for start, requests, nbytes in found
        ]
    return out


def unbillable_batches(
    session: Session, account: SettlementAccount, period_start: int
) -> list[dict[str, Any]]:
    """What the statement lists as not billed: abandoned batches of the period holding the merchant's
    records (who gave up on them, when, why; the merchant's records and bytes in each), and anchored
    batches of sources the merchant does not authorise that carry records for its hosts."""
    hex_ids = merchant_ids_of(session, account.merchant_user_id)
    merchant_ids = [bytes.fromhex(m[2:]) for m in hex_ids]
    if not merchant_ids:
        return []
    abandoned = _records_per_batch(
        session,
        period_start,
        merchant_ids,
        DeliveryBatch.state == BatchState.abandoned,
        columns=(DeliveryBatch.abandoned_by, DeliveryBatch.abandoned_at, DeliveryBatch.abandon_reason),
    )
    authorised = authorised_source_pks(session, account.merchant_user_id)
    # batches of authorised sources waiting on a fraud review of the merchant's records (under_review):
    # not billed yet, billed by a correction once the flags are decided
    reviewed = _records_per_batch(
        session,
        period_start,
        merchant_ids,
        DeliveryBatch.state.in_(sorted(ANCHORED_STATES)),
        DeliveryBatch.id.in_(under_review(hex_ids)),
        DeliveryBatch.source_pk.in_(authorised),
    )
    review = "records under fraud review: billed by a correction once the flags are decided"
    return (
        [
            _unbilled(batch_id, source, "abandoned", count, nbytes, reason, by, at)
            for batch_id, source, by, at, reason, count, nbytes in abandoned
        ]
        + _unauthorised(session, period_start, hex_ids, authorised)
        + [
            _unbilled(batch_id, source, "fraud_review", count, nbytes, review)
            for batch_id, source, count, nbytes in reviewed
        ]
    )


def _records_per_batch(
    session: Session, period_start: int, merchant_ids: list[bytes], *where: Any, columns: tuple[Any, ...] = ()
) -> list[Any]:
    """Per batch of the period matching ``where``: its id, its source's name, ``columns``, and the count
    and bytes of the merchant's records in it."""
    record = DeliveryRecordRow
    return list(
        session.execute(
            select(
                DeliveryBatch.batch_id,
                DeliverySource.name,
                *columns,
                func.count(record.id),
                func.coalesce(func.sum(record.bytes_delivered), 0),
            )
            .join(record, record.batch_pk == DeliveryBatch.id)
            .join(DeliverySource, DeliveryBatch.source_pk == DeliverySource.id)
            .where(DeliveryBatch.period_start == period_start, record.merchant_id.in_(merchant_ids), *where)
            .group_by(DeliveryBatch.batch_id, DeliverySource.name, *columns)
            .order_by(DeliveryBatch.batch_id)
        )
    )


def _unbilled(
    batch_id: str,
    source: str,
    kind: str,
    records: int,
    nbytes: int | None,
    reason: str | None,
    by: str | None = None,
    at: Any = None,
) -> dict[str, Any]:
    """One line of the statement's list of what was not billed."""
    return {
        "batch_id": batch_id,
        "source": source,
        "kind": kind,
        "abandoned_by": by,
        "abandoned_at": at.isoformat() if at is not None else None,
        "reason": reason,
        "records": int(records),
        "bytes": int(nbytes or 0),
    }


def _unauthorised(
    session: Session, period_start: int, merchant_ids: list[str], authorised: list[int]
) -> list[dict[str, Any]]:
    """Anchored batches of sources the merchant does not authorise that carry records for its hosts: not
    charged, listed (and counted per batch) so the merchant and the source's operator can see them."""
    receipt = DeliveryReceipt
    rows = session.execute(
        select(
            DeliveryBatch.batch_id,
            DeliverySource.name,
            func.sum(receipt.requests),
            func.sum(receipt.bytes_delivered),
        )
        .join(DeliveryBatch, receipt.batch_pk == DeliveryBatch.id)
        .join(DeliverySource, DeliveryBatch.source_pk == DeliverySource.id)
        .where(
            DeliveryBatch.period_start == period_start,
            DeliveryBatch.state.in_(sorted(ANCHORED_STATES)),
            DeliveryBatch.source_pk.not_in(authorised),
            receipt.merchant_id.in_(merchant_ids),
            receipt.requests > 0,
        )
        .group_by(DeliveryBatch.batch_id, DeliverySource.name)
        .order_by(DeliveryBatch.batch_id)
    )
    return [
        _unbilled(
            batch_id,
            source,
            "unauthorised_source",
            requests,
            nbytes,
            f"{source} is not authorised to bill this merchant",
        )
        for batch_id, source, requests, nbytes in rows
    ]


def chain_terms_block(chain: ChainClient, settings: Settings, period_end: int) -> int:
    """The block this attempt reads the assets' terms at (settlement/terms.py): the latest final one,
    once it is past the period's end."""
    latest = chain.block_number()

    def timestamp_of(number: int) -> int:
        with chain.rpc("eth_getBlockByNumber"):
            return int(chain.w3.eth.get_block(number)["timestamp"])

    return terms_block(latest, settings.chain_confirmations, timestamp_of, period_end)


def settlement_currency(account: SettlementAccount) -> Currency:
    """The token as a currency: its symbol upper-cased (rate cards and FX rates name it so)."""
    return Currency(code=account.token_symbol.upper(), decimals=account.token_decimals)


def platform_address(settings: Settings, chain_signer: str | None) -> str:
    address = settings.settlement_platform_address or chain_signer
    if not address:
        raise SettlementError(
            "no platform fee address: set SETTLEMENT_PLATFORM_ADDRESS or a server signer",
            code="platform_address_missing",
        )
    return address.lower()


# ----------------------------------------------------------------------------------------------
# Reconciliation
# ----------------------------------------------------------------------------------------------


def _billing_usage(session: Session, billing: BillingImport, merchant: str) -> dict[Any, Usage]:
    rows = session.scalars(select(BillingUsageRow).where(BillingUsageRow.import_pk == billing.id))
    return {(merchant, r.region, r.day): Usage(r.bytes, r.requests, r.amount, r.currency) for r in rows}


def source_volumes(
    source_usage: dict[tuple[str, str, str], list[int]],
    region: str,
    day: str,
    billed_bytes: int,
    tolerance: int,
) -> tuple[list[dict[str, Any]], bool]:
    """Each source's own volume at (region, day), and whether one alone delivered more than the CDN
    billed for the key beyond the tolerance (``over_bill``: it reports deliveries the bill does not have)."""
    volumes = []
    for (source, r, d), (nbytes, requests) in sorted(source_usage.items()):
        if (r, d) != (region, day):
            continue
        over = nbytes * BPS > billed_bytes * (BPS + tolerance)
        volumes.append({"source": source, "bytes": nbytes, "requests": requests, "over_bill": over})
    return volumes, any(v["over_bill"] for v in volumes)


def reconcile_period(
    session: Session,
    account: SettlementAccount,
    billing: BillingImport,
    data: PeriodData,
    card: Any,
    fx: FxTable | None = None,
) -> None:
    """Opens a case for every (region, day) beyond the tolerance, or where one authorised source alone
    reports more than the bill, once per billing import; each case lists every source's own volume."""
    if billing.reconciled_at is not None:
        return
    merchant = merchant_key(account)
    ours = usage_from_receipts([*data.receipts, *data.reviewed], card)
    billed = _billing_usage(session, billing, merchant)
    deltas = reconcile(
        ours,
        billed,
        account.tolerance_bps,
        ours_decimals=card.currency.decimals,
        fx=fx,
        at=billing.period_end,
        ours_currency=card.currency.code,
    )
    for delta in deltas:
        _merchant, region, day = delta.key
        volumes, over = source_volumes(
            data.source_usage, region, day, delta.theirs.bytes, account.tolerance_bps
        )
        if not delta.flagged and not over:
            continue
        reasons = (*delta.reasons, "source_over_bill") if over else delta.reasons
        figures = (
            delta.ours.bytes,
            delta.ours.requests,
            delta.ours.amount or 0,
            delta.theirs.amount or 0,
            delta.theirs_converted or 0,
        )
        if max(figures) > INT64_MAX:  # the case's columns are signed 64-bit (the card's units)
            raise SettlementError(
                f"reconciliation of {region} {day}: an amount beyond {INT64_MAX} (docs/limits.md)",
                code="amount_too_large",
            )
        session.add(
            ReconciliationCase(
                merchant_user_id=account.merchant_user_id,
                period_start=billing.period_start,
                import_pk=billing.id,
                region=region,
                day=day,
                reasons=",".join(reasons),
                sources_json=json.dumps(volumes),
                ours_bytes=delta.ours.bytes,
                theirs_bytes=delta.theirs.bytes,
                ours_requests=delta.ours.requests,
                theirs_requests=delta.theirs.requests,
                ours_amount=delta.ours.amount,
                theirs_amount=delta.theirs.amount,
                currency=delta.theirs.currency or delta.ours.currency,
                theirs_amount_converted=delta.theirs_converted,
                fx_json=delta.fx.model_dump_json() if delta.fx is not None else None,
            )
        )
    billing.reconciled_at = utcnow()
    session.flush()
