"""Settlement statements: JSON, CSV and a printable HTML page with server-side SVG charts.

Renders a :class:`~edgeledger.settlement.payouts.Statement` (computed by
:func:`~edgeledger.settlement.payouts.compute_payouts`) for the merchant or for one payee. Everything here
is pure: no database, chain or clock; the caller passes the statement and a :class:`StatementContext`
(settlement row, token, usage for the chart). Every amount is an ``int`` of minor units, shown next to an
exact decimal string made by integer arithmetic (:func:`format_amount`); floats appear only in chart
geometry. Formats and CSV columns: docs/settlement.md, "Statements".

Receipt keys are ``"<batch id>:<asset id>:<region>:<country>"`` (see ``period_inputs.receipt_key``),
with a fifth part ``:<b>`` for a receipt's part from licence boundary ``b`` on
(``period_inputs.split_at_licence``); each line links to the batch (anchoring transaction) and to the
batch's export (every leaf with its proof). A key
keeps naming its asset when the receipt was priced as unregistered content because the asset was
registered after the period's terms block (a correction's late records, settlement/corrections.py
``registered_at``); :func:`priced_unregistered` finds those receipts in the statement itself and their
entries say so, so the merchant does not read a registered asset without its royalty unexplained.
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

from edgeledger.deliveries.regions import REGION_CODES, region_of
from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import UNREGISTERED, Decision, HeldBack, LineItem, Statement, Violation
from edgeledger.settlement.rates import Currency, FxSnapshot

__all__ = [
    "CSV_COLUMNS",
    "LINKS_AUTHENTICATION",
    "ReceiptKey",
    "ReceiptLinks",
    "StatementContext",
    "context_from_json",
    "format_amount",
    "merchant_statement_csv",
    "merchant_statement_json",
    "parse_receipt_key",
    "payee_statement_csv",
    "payee_statement_json",
    "priced_unregistered",
    "receipt_link",
    "settlement_link",
]

#: Columns of the CSV statements, in order (docs/settlement.md, "Statements").
CSV_COLUMNS: tuple[str, ...] = (
    "kind",
    "source",
    "via",
    "payee",
    "amount_minor",
    "amount",
    "currency",
    "receipt_count",
    "batch_ids",
    "first_batch_link",
)
#: How to open a statement's links outside the browser session it came from (JSON "links", HTML footer).
LINKS_AUTHENTICATION = (
    "Batch, proof and settlement links are API URLs: send 'Authorization: Bearer <session token>' (from "
    "POST /auth/siwe/verify) or 'X-API-Key: <key>' (from POST /auth/api-keys) as a merchant, payee, "
    "auditor or admin. Each batch's proofs export verifies offline with 'edgeledger verify'."
)
#: Payees drawn one bar each in the payouts chart; the rest are summed into one "others" bar.
TOP_PAYEES = 20
_BATCH_ID = re.compile(r"0x[0-9a-fA-F]{64}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_ASSET_ID = re.compile(r"[^\s:/?#]+")
_PART_FROM = re.compile(r"[1-9][0-9]{0,18}")


@dataclass(frozen=True)
class StatementContext:
    settlement_id: int
    period_id: int  # on-chain period number
    period_start: int  # unix seconds
    period_end: int
    merchant_name: str
    merchant_address: str  # escrow address on chain
    token_address: str
    token_symbol: str  # e.g. "tUSDC"
    token_decimals: int  # e.g. 6
    state: str  # settlement state (computed, posted, claimable, ...)
    root: str | None  # 0x payout Merkle root
    tx_hash: str | None  # post transaction
    claims_open_at: int | None
    #: (region, "YYYY-MM-DD") -> (bytes, requests) of the settled receipts, for the chart
    usage_by_region_day: Mapping[tuple[str, str], tuple[int, int]]
    #: base URL path of the API (e.g. "" or "/api"), used to build links
    api_base: str = ""
    #: the block the assets' terms were read at (settlement/terms.py)
    terms_block: int | None = None
    #: batches holding this merchant's records of the period that are not billed (abandoned: who, when,
    #: why, and the merchant's records, requests and bytes in them)
    unbillable: Sequence[Mapping[str, Any]] = ()
    #: the other settlements of the same period (the period itself, its corrections and releases):
    #: ``{"settlement_id", "kind", "sequence", "period_id", "state", "total"}`` each, linked by
    #: :func:`settlement_link`
    related: Sequence[Mapping[str, Any]] = ()
    #: a payee statement's running ledger in this token across all periods (schemas.EarningTotals as a
    #: dict: earned, released, claimed, unclaimed, claimable, pending, not_posted), read when rendered
    payee_ledger: Mapping[str, int] | None = None


# ----------------------------------------------------------------------------------------------
# Amounts, receipt keys and links
# ----------------------------------------------------------------------------------------------


def format_amount(minor: int, decimals: int) -> str:
    """``minor`` units as an exact decimal string with ``decimals`` digits after the point.

    Integer arithmetic only: ``format_amount(1234567, 6) == "1.234567"``, ``format_amount(-5, 2) ==
    "-0.05"``, ``format_amount(42, 0) == "42"``. Every decimal is kept (``1000000, 6 -> "1.000000"``).
    """
    if isinstance(minor, bool) or not isinstance(minor, int):
        raise TypeError(f"amount must be an int of minor units, not {type(minor).__name__}")
    if isinstance(decimals, bool) or not isinstance(decimals, int) or decimals < 0:
        raise ValueError(f"decimals must be a non-negative int, not {decimals!r}")
    sign = "-" if minor < 0 else ""
    whole, fraction = divmod(abs(minor), 10**decimals)
    if decimals == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}.{fraction:0{decimals}d}"


@dataclass(frozen=True)
class ReceiptKey:
    """The parts of a receipt key ``"<batch id>:<asset id>:<region>:<country>[:<from>]"``; batch id
    lower-cased. ``part_from`` (unix seconds) names the part of a receipt split at a licence boundary
    inside its period that was delivered from that second on (docs/settlement.md, "Licences"); the part
    from the period's start has a four-part key, as every receipt not split."""

    batch_id: str
    asset_id: str
    region: str
    country: str
    part_from: int | None = None


def parse_receipt_key(key: str) -> ReceiptKey:
    """Split a receipt key; anything else is ``SettlementError(code="receipt_key_invalid")``.

    The batch id is ``0x`` and 64 hex digits, the asset id is non-empty (no whitespace, ``:``, ``/``,
    ``?`` or ``#``), the region is a pricing region code, the country is empty or an alpha-2 code
    of that region (any other two letters only in ``ZZ``), and the optional fifth part, a receipt part's
    first second, is a positive decimal without leading zeros.
    """
    if not isinstance(key, str):
        raise SettlementError("receipt key must be a string", code="receipt_key_invalid", key=repr(key))
    return _parse_key(key)


@functools.lru_cache(maxsize=1 << 16)
def _parse_key(key: str) -> ReceiptKey:
    """:func:`parse_receipt_key` once per key: a statement names a key in several lines."""
    parts = key.split(":")
    problem: str | None = None
    part_from = parts.pop() if len(parts) == 5 else None
    if len(parts) != 4:
        problem = "expected <batch id>:<asset id>:<region>:<country>[:<from>]"
    elif part_from is not None and not _PART_FROM.fullmatch(part_from):
        problem = "the part's first second is not a positive decimal"
    else:
        batch_id, asset_id, region, country = parts
        if not _BATCH_ID.fullmatch(batch_id):
            problem = "batch id is not 0x and 64 hex digits"
        elif not _ASSET_ID.fullmatch(asset_id):
            problem = "asset id is empty or has forbidden characters"
        elif region not in REGION_CODES:
            problem = f"unknown region {region!r}"
        elif country and (not _COUNTRY.fullmatch(country) or region_of(country) != region):
            problem = f"country {country!r} is not in region {region}"
    if problem is not None:
        raise SettlementError(f"invalid receipt key {key!r}: {problem}", code="receipt_key_invalid", key=key)
    return ReceiptKey(
        batch_id=batch_id.lower(),
        asset_id=asset_id,
        region=region,
        country=country.upper(),
        part_from=None if part_from is None else int(part_from),
    )


class ReceiptLinks(TypedDict):
    """Where a receipt's evidence is: ``batch`` (batch detail with its anchoring transaction) and
    ``export`` (every leaf of the batch with its Merkle proof)."""

    batch_id: str
    batch: str
    export: str


def receipt_link(key: str, api_base: str = "") -> ReceiptLinks:
    """Links to the batch and the proofs behind a receipt key.

    Returns ``{"batch_id": ..., "batch": "{api_base}/deliveries/batches/{batch_id}", "export":
    "{api_base}/deliveries/batches/{batch_id}/export"}``; a trailing ``/`` of ``api_base`` is dropped.
    Raises ``SettlementError(code="receipt_key_invalid")`` for a malformed key.
    """
    return _batch_links(parse_receipt_key(key).batch_id, api_base)


def _batch_links(batch_id: str, api_base: str) -> ReceiptLinks:
    batch = f"{api_base.rstrip('/')}/deliveries/batches/{batch_id}"
    return ReceiptLinks(batch_id=batch_id, batch=batch, export=f"{batch}/export")


def settlement_link(settlement_id: int, api_base: str = "") -> str:
    """The merchant statement of another settlement (a correction or release of the same period)."""
    return f"{api_base.rstrip('/')}/settlement/settlements/{settlement_id}/statement"


#: ``priced_as`` of a receipt entry priced as unregistered content though its key names an asset
PRICED_UNREGISTERED = "unregistered"


def priced_unregistered(statement: Statement) -> dict[str, str]:
    """Receipt key -> the asset id the key names, for every receipt the statement priced as unregistered
    content (asset ``"0"``: the delivery fee, no royalty) although its key names an asset: a correction's
    late records of content the registry did not know at the period's terms block (registered after it,
    so unregistered when delivered; settlement/corrections.py ``registered_at``).

    Read from the statement alone, so a verifier that recomputes the statement from its inputs finds the
    same receipts: ``compute_payouts`` puts every receipt in its region's delivery lines, and every receipt
    of an asset it has terms for either in ``royalties`` (under that asset, even at a zero amount) or in
    ``violations`` (under its key); a key of the delivery lines naming an asset that is in neither was
    priced as asset ``"0"``. A release has no delivery lines, hence none."""
    violated = {v.receipt_key for v in statement.violations}
    delivery = [item for item in statement.line_items if item.kind in ("delivery", "delivery_margin")]
    keys = {k for item in delivery for k in item.receipt_keys}
    found: dict[str, str] = {}
    for key in sorted(keys - violated):
        asset_id = parse_receipt_key(key).asset_id
        if asset_id != UNREGISTERED and asset_id not in statement.royalties:
            found[key] = asset_id
    return found


def unregistered_note(asset_id: str, terms_block: int | None) -> str:
    """Why a receipt naming ``asset_id`` earned no royalty (:func:`priced_unregistered`)."""
    block = f"terms block {terms_block}" if terms_block is not None else "terms block"
    return (
        f"priced as unregistered content (delivery fee only, no royalty): asset {asset_id} was registered "
        f"after this period's {block}, so it was not registered when delivered"
    )


def _related_json(ctx: StatementContext) -> list[dict[str, Any]]:
    return [
        {
            **{k: r[k] for k in ("settlement_id", "kind", "sequence", "period_id", "state", "total")},
            "statement": settlement_link(int(r["settlement_id"]), ctx.api_base),
        }
        for r in ctx.related
    ]


def _batches(keys: Iterable[str], api_base: str) -> list[ReceiptLinks]:
    """Links of the distinct batches behind ``keys``, sorted by batch id."""
    ids = sorted({parse_receipt_key(k).batch_id for k in keys})
    return [_batch_links(batch_id, api_base) for batch_id in ids]


def _utc(ts: int | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_context(statement: Statement, ctx: StatementContext) -> None:
    currency = statement.currency
    if currency.decimals != ctx.token_decimals or currency.code.upper() != ctx.token_symbol.upper():
        raise SettlementError(
            f"statement is in {currency.code} ({currency.decimals} decimals), the context's token is "
            f"{ctx.token_symbol} ({ctx.token_decimals} decimals)",
            code="statement_context_mismatch",
        )
    if (statement.period_start, statement.period_end) != (ctx.period_start, ctx.period_end):
        raise SettlementError(
            "statement and context periods differ",
            code="statement_context_mismatch",
            settlement=ctx.settlement_id,
        )


def _payee_lines(statement: Statement, payee: str) -> list[LineItem]:
    wanted = payee.lower()
    return [item for item in statement.line_items if item.payee.lower() == wanted]


def _component_amounts(statement: Statement) -> tuple[dict[str, int], dict[str, int]]:
    """The converted charge per delivery region and per royalty asset (line items plus held back)."""
    delivery: dict[str, int] = dict.fromkeys(statement.delivery_fees, 0)
    royalty: dict[str, int] = dict.fromkeys(statement.royalties, 0)
    for item in statement.line_items:
        target = delivery if item.kind in ("delivery", "delivery_margin") else royalty
        target[item.source] = target.get(item.source, 0) + item.amount
    for held in statement.held_back:
        royalty[held.asset_id] = royalty.get(held.asset_id, 0) + held.amount
    return delivery, royalty


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------


def _money(minor: int, decimals: int, currency: str) -> dict[str, Any]:
    return {"minor": minor, "amount": format_amount(minor, decimals), "currency": currency}


def _token_money(minor: int, ctx: StatementContext) -> dict[str, Any]:
    return _money(minor, ctx.token_decimals, ctx.token_symbol)


def _card_money(minor: int, card: Currency) -> dict[str, Any]:
    return _money(minor, card.decimals, card.code)


def _rate_decimal(numerator: int, denominator: int, digits: int = 10) -> str:
    """``n/d`` as a decimal truncated to ``digits`` places (display only; the exact rate is ``n/d``)."""
    return format_amount(numerator * 10**digits // denominator, digits)


def _fx_json(fx: FxSnapshot | None) -> dict[str, Any] | None:
    if fx is None:
        return None
    return {
        "source": fx.source,
        "timestamp": fx.timestamp,
        "timestamp_utc": _utc(fx.timestamp),
        "base": fx.base,
        "quote": fx.quote,
        "numerator": fx.numerator,
        "denominator": fx.denominator,
        "rate": f"{fx.numerator}/{fx.denominator}",
        "rate_decimal": _rate_decimal(fx.numerator, fx.denominator),
        "inverted": fx.inverted,
    }


def _line_json(item: LineItem, ctx: StatementContext) -> dict[str, Any]:
    return {
        "kind": item.kind,
        "source": item.source,
        "via": list(item.via),
        "payee": item.payee,
        "amount": _token_money(item.amount, ctx),
        "receipt_count": len(item.receipt_keys),
        "receipt_keys": list(item.receipt_keys),
        "batches": _batches(item.receipt_keys, ctx.api_base),
    }


def _receipts_json(
    keys: Iterable[str], ctx: StatementContext, unregistered: Mapping[str, str]
) -> dict[str, dict[str, Any]]:
    """Each receipt key's parts and links; one priced as unregistered content though it names an asset
    (``unregistered``, :func:`priced_unregistered`) also has ``priced_as: "unregistered"``, the
    ``terms_block`` it was priced at and a ``note`` saying why (only those: every other entry, and every
    statement without such receipts, reads as before)."""
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(keys)):
        parts = parse_receipt_key(key)
        out[key] = {
            "asset_id": parts.asset_id,
            "region": parts.region,
            "country": parts.country,
            **_batch_links(parts.batch_id, ctx.api_base),
        }
        if parts.part_from is not None:  # only on parts: every other entry reads as before
            out[key]["from"] = parts.part_from
        if key in unregistered:
            out[key].update(
                priced_as=PRICED_UNREGISTERED,
                terms_block=ctx.terms_block,
                note=unregistered_note(parts.asset_id, ctx.terms_block),
            )
    return out


def _decision_json(decision: Decision, card: Currency) -> dict[str, Any]:
    return {
        "region": decision.region,
        "day": decision.day,
        "action": decision.action,
        "adjustment": _card_money(decision.adjustment, card),
        "decided_by": decision.decided_by,
        "decided_at": decision.decided_at,
        "decided_at_utc": _utc(decision.decided_at),
        "reason": decision.reason,
    }


def _violation_json(violation: Violation, ctx: StatementContext) -> dict[str, Any]:
    return {
        "receipt_key": violation.receipt_key,
        "asset_id": violation.asset_id,
        "reason": violation.reason,
        **receipt_link(violation.receipt_key, ctx.api_base),
    }


def _held_json(held: HeldBack, ctx: StatementContext) -> dict[str, Any]:
    return {
        "asset_id": held.asset_id,
        "amount": _token_money(held.amount, ctx),
        "reason": held.reason,
        "via": list(held.via),
        "receipt_count": len(held.receipt_keys),
        "receipt_keys": list(held.receipt_keys),
        "batches": _batches(held.receipt_keys, ctx.api_base),
    }


def _context_json(statement: Statement, ctx: StatementContext) -> dict[str, Any]:
    return {
        "settlement_id": ctx.settlement_id,
        "period_id": ctx.period_id,
        "period_start": ctx.period_start,
        "period_end": ctx.period_end,
        "period_start_utc": _utc(ctx.period_start),
        "period_end_utc": _utc(ctx.period_end),
        "merchant": {"name": ctx.merchant_name, "address": ctx.merchant_address, "key": statement.merchant},
        "token": {"address": ctx.token_address, "symbol": ctx.token_symbol, "decimals": ctx.token_decimals},
        "state": ctx.state,
        "root": ctx.root,
        "tx_hash": ctx.tx_hash,
        "claims_open_at": ctx.claims_open_at,
        "claims_open_at_utc": _utc(ctx.claims_open_at),
        "card": {
            "version": statement.card_version,
            "currency": {"code": statement.card_currency.code, "decimals": statement.card_currency.decimals},
        },
        "fx": _fx_json(statement.fx),
        "terms_block": ctx.terms_block,
        "unbillable": [dict(u) for u in ctx.unbillable],
        "related": _related_json(ctx),
        "links": {"base": ctx.api_base, "authentication": LINKS_AUTHENTICATION},
    }


def context_from_json(document: Mapping[str, Any]) -> StatementContext:
    """The :class:`StatementContext` a merchant statement JSON was rendered with, read back from it: with
    the statement recomputed from the settlement's inputs, ``merchant_statement_json`` must give the
    document again (the audit package verifier checks issued statements this way)."""
    try:
        links = document.get("batches") or []
        suffix = "/deliveries/batches/"
        api_base = links[0]["batch"].split(suffix)[0] if links else ""
        api_base = str((document.get("links") or {}).get("base", api_base))
        return StatementContext(
            settlement_id=int(document["settlement_id"]),
            period_id=int(document["period_id"]),
            period_start=int(document["period_start"]),
            period_end=int(document["period_end"]),
            merchant_name=str(document["merchant"]["name"]),
            merchant_address=str(document["merchant"]["address"]),
            token_address=str(document["token"]["address"]),
            token_symbol=str(document["token"]["symbol"]),
            token_decimals=int(document["token"]["decimals"]),
            state=str(document["state"]),
            root=document["root"],
            tx_hash=document["tx_hash"],
            claims_open_at=document["claims_open_at"],
            usage_by_region_day={
                (str(u["region"]), str(u["day"])): (int(u["bytes"]), int(u["requests"]))
                for u in document["usage"]
            },
            api_base=api_base,
            terms_block=document.get("terms_block"),
            unbillable=tuple(document.get("unbillable") or ()),
            related=tuple(
                {k: v for k, v in r.items() if k != "statement"} for r in document.get("related") or ()
            ),
        )
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise SettlementError(
            f"not a merchant statement document: {exc!r}", code="statement_invalid"
        ) from None


def merchant_statement_json(statement: Statement, ctx: StatementContext) -> dict[str, Any]:
    """The merchant's whole statement as a JSON-serialisable dict (docs/settlement.md, "Statements").

    Amounts are ``{"minor": int, "amount": "exact decimal", "currency": code}``: settlement amounts in
    the token, ``charge_card_currency``, ``delivery_fees[].card_amount``, ``royalties[].card_amount``
    and decision adjustments in the rate card's currency.
    """
    _check_context(statement, ctx)
    card = statement.card_currency
    delivery_settled, royalty_settled = _component_amounts(statement)
    held_total = sum(h.amount for h in statement.held_back)
    line_counts: dict[str, int] = {}
    for item in statement.line_items:
        line_counts[item.payee] = line_counts.get(item.payee, 0) + 1
    keys = [k for item in statement.line_items for k in item.receipt_keys]
    keys += [k for held in statement.held_back for k in held.receipt_keys]
    keys += [v.receipt_key for v in statement.violations]
    return {
        "view": "merchant",
        **_context_json(statement, ctx),
        "charge": _token_money(statement.charge, ctx),
        "charge_card_currency": _card_money(statement.charge_card_currency, card),
        "paid_total": _token_money(sum(statement.payees.values()), ctx),
        "held_back_total": _token_money(held_total, ctx),
        "delivery_fees": [
            {
                "region": region,
                "card_amount": _card_money(fee, card),
                "amount": _token_money(delivery_settled.get(region, 0), ctx),
            }
            for region, fee in sorted(statement.delivery_fees.items())
        ],
        "royalties": [
            {
                "asset_id": asset_id,
                "card_amount": _card_money(amount, card),
                "amount": _token_money(royalty_settled.get(asset_id, 0), ctx),
            }
            for asset_id, amount in sorted(statement.royalties.items())
        ],
        "payees": [
            {"payee": address, "amount": _token_money(amount, ctx), "line_count": line_counts.get(address, 0)}
            for address, amount in sorted(statement.payees.items())
        ],
        "line_items": [_line_json(item, ctx) for item in statement.line_items],
        "violations": [_violation_json(v, ctx) for v in statement.violations],
        "held_back": [_held_json(h, ctx) for h in statement.held_back],
        "decisions": [_decision_json(d, card) for d in statement.decisions],
        "usage": [
            {"region": region, "day": day, "bytes": nbytes, "requests": requests}
            for (region, day), (nbytes, requests) in sorted(ctx.usage_by_region_day.items())
        ],
        "receipts": _receipts_json(keys, ctx, priced_unregistered(statement)),
        "batches": _batches(keys, ctx.api_base),
    }


def payee_statement_json(statement: Statement, ctx: StatementContext, payee: str) -> dict[str, Any]:
    """One payee's part: that payee's line items and total (0 and no lines for a payee not paid)."""
    _check_context(statement, ctx)
    lines = _payee_lines(statement, payee)
    keys = [k for item in lines for k in item.receipt_keys]
    return {
        "view": "payee",
        **_context_json(statement, ctx),
        "payee": payee.lower(),
        "total": _token_money(sum(item.amount for item in lines), ctx),
        "ledger": (
            {name: _token_money(int(v), ctx) for name, v in ctx.payee_ledger.items()}
            if ctx.payee_ledger is not None
            else None
        ),
        "line_items": [_line_json(item, ctx) for item in lines],
        "receipts": _receipts_json(keys, ctx, priced_unregistered(statement)),
        "batches": _batches(keys, ctx.api_base),
    }


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------


def _cell(text: str) -> str:
    """Text that a spreadsheet would take for a formula gets a leading apostrophe."""
    return f"'{text}" if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _csv(lines: Sequence[LineItem], ctx: StatementContext) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for item in lines:
        batches = _batches(item.receipt_keys, ctx.api_base)
        writer.writerow(
            [
                item.kind,
                _cell(item.source),
                _cell(">".join(item.via)),
                _cell(item.payee),
                str(item.amount),
                format_amount(item.amount, ctx.token_decimals),
                ctx.token_symbol,
                str(len(item.receipt_keys)),
                " ".join(b["batch_id"] for b in batches),
                batches[0]["batch"] if batches else "",
            ]
        )
    return buffer.getvalue()


def merchant_statement_csv(statement: Statement, ctx: StatementContext) -> str:
    """Every line item, one row each, under a header of :data:`CSV_COLUMNS` (RFC 4180, CRLF).

    The rows sum to ``charge - held_back``; held-back amounts are in the JSON and HTML statements.
    """
    _check_context(statement, ctx)
    return _csv(statement.line_items, ctx)


def payee_statement_csv(statement: Statement, ctx: StatementContext, payee: str) -> str:
    """That payee's line items (a header only for a payee not paid)."""
    _check_context(statement, ctx)
    return _csv(_payee_lines(statement, payee), ctx)


# ----------------------------------------------------------------------------------------------
# SVG charts (geometry in floats; every label from integers)
# ----------------------------------------------------------------------------------------------


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------
