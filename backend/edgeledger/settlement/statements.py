"""Settlement statements: JSON, CSV and a printable HTML page with server-side SVG charts.

Renders a :class:`~edgeledger.settlement.payouts.Statement` (computed by
:func:`~edgeledger.settlement.payouts.compute_payouts`) for the merchant or for one payee. Everything here
is pure: no database, chain or clock; the caller passes the statement and a :class:`StatementContext`
(settlement row, token, usage for the chart). Every amount is an ``int`` of minor units, shown next to an
exact decimal string made by integer arithmetic (:func:`format_amount`); floats appear only in chart
geometry. Formats and CSV columns: docs/settlement.md, "Statements".

Receipt keys are ``"<batch id>:<asset id>:<region>:<country>"`` (see ``flows.receipt_key``); each line
links to the batch (anchoring transaction) and to the batch's export (every leaf with its proof).
"""

from __future__ import annotations

import csv
import functools
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any, TypedDict

from edgeledger.deliveries.regions import REGION_CODES, region_of
from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import Decision, HeldBack, LineItem, Statement, Violation
from edgeledger.settlement.rates import Currency, FxSnapshot

__all__ = [
    "CSV_COLUMNS",
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
    "receipt_link",
    "statement_html",
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
#: Payees drawn one bar each in the payouts chart; the rest are summed into one "others" bar.
TOP_PAYEES = 20
_BATCH_ID = re.compile(r"0x[0-9a-fA-F]{64}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_ASSET_ID = re.compile(r"[^\s:/?#]+")


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
    """The parts of a receipt key ``"<batch id>:<asset id>:<region>:<country>"``; batch id lower-cased."""

    batch_id: str
    asset_id: str
    region: str
    country: str


def parse_receipt_key(key: str) -> ReceiptKey:
    """Split a receipt key; anything else is ``SettlementError(code="receipt_key_invalid")``.

    The batch id is ``0x`` and 64 hex digits, the asset id is non-empty (no whitespace, ``:``, ``/``,
    ``?`` or ``#``), the region is a pricing region code, and the country is empty or an alpha-2 code
    of that region (any other two letters only in ``ZZ``).
    """
    if not isinstance(key, str):
        raise SettlementError("receipt key must be a string", code="receipt_key_invalid", key=repr(key))
    return _parse_key(key)


@functools.lru_cache(maxsize=1 << 16)
def _parse_key(key: str) -> ReceiptKey:
    """:func:`parse_receipt_key` once per key: a statement names a key in several lines."""
    parts = key.split(":")
    problem: str | None = None
    if len(parts) != 4:
        problem = "expected <batch id>:<asset id>:<region>:<country>"
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
    return ReceiptKey(batch_id=batch_id.lower(), asset_id=asset_id, region=region, country=country.upper())


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


def _receipts_json(keys: Iterable[str], ctx: StatementContext) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for key in sorted(set(keys)):
        parts = parse_receipt_key(key)
        out[key] = {
            "asset_id": parts.asset_id,
            "region": parts.region,
            "country": parts.country,
            **_batch_links(parts.batch_id, ctx.api_base),
        }
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
    }


def context_from_json(document: Mapping[str, Any]) -> StatementContext:
    """The :class:`StatementContext` a merchant statement JSON was rendered with, read back from it: with
    the statement recomputed from the settlement's inputs, ``merchant_statement_json`` must give the
    document again (the audit package verifier checks issued statements this way)."""
    try:
        links = document.get("batches") or []
        suffix = "/deliveries/batches/"
        api_base = links[0]["batch"].split(suffix)[0] if links else ""
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
        "receipts": _receipts_json(keys, ctx),
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
        "line_items": [_line_json(item, ctx) for item in lines],
        "receipts": _receipts_json(keys, ctx),
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

#: One colour per pricing region (REGION_CODES order), distinguishable in print.
_PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
_GB = 10**9
#: Fonts set on the SVG itself so a chart saved on its own renders like in the page.
_SVG_FONT = 'font-family="Helvetica, Arial, sans-serif" font-size="11"'


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _f(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _gb_exact(nbytes: int) -> str:
    """Bytes in GB (10^9), exact, trailing zeros dropped: 1,500,000,000 -> "1.5"."""
    text = format_amount(nbytes, 9)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _gb_rounded(nbytes: int, digits: int = 3) -> str:
    """Bytes in GB rounded half up to ``digits`` decimals, by integer arithmetic."""
    unit = 10 ** (9 - digits)
    return format_amount((nbytes + unit // 2) // unit, digits)


def _gb_label(nbytes: int) -> str:
    """A bar's value: 3 decimals from 1 GB, 6 from 1 MB, exact below (never "0.000" for some bytes)."""
    if nbytes >= _GB:
        return _gb_rounded(nbytes, 3)
    if nbytes >= 10**6:
        return _gb_rounded(nbytes, 6)
    return _gb_exact(nbytes)


def _thousands(value: int) -> str:
    return f"{value:,}"


def _nice_step(maximum: int, ticks: int = 5) -> int:
    """An integer step of 1, 2 or 5 times a power of ten with at most ``ticks`` steps up to ``maximum``."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if factor * step * ticks >= maximum:
                return factor * step
        step *= 10


def _region_colour(region: str) -> str:
    index = REGION_CODES.index(region) if region in REGION_CODES else len(REGION_CODES)
    return _PALETTE[index % len(_PALETTE)]


def bytes_chart_svg(usage: Mapping[tuple[str, str], tuple[int, int]], title: str) -> str:
    """Grouped bars: one group per UTC day, one bar per region delivered that day, height in GB."""
    days = sorted({day for _, day in usage})
    # Many days: "MM-DD" labels (the year goes in the axis title), every k-th day so they do not overlap.
    years = sorted({day[:4] for day in days})
    short = len(days) > 7 and len(years) == 1
    regions = sorted({region for region, _ in usage}, key=lambda r: (r not in REGION_CODES, _region_key(r)))
    width, height = 760.0, 320.0
    left, right, top, bottom = 70.0, 20.0, 40.0, 70.0
    plot_w, plot_h = width - left - right, height - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-bytes" role="img" {_SVG_FONT} '
        f'viewBox="0 0 {_f(width)} {_f(height)}" width="100%" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
    ]
    if not usage:
        parts.append(
            f'<text x="{_f(width / 2)}" y="{_f(height / 2)}" text-anchor="middle">No deliveries</text>'
        )
        parts.append("</svg>")
        return "".join(parts)
    peak = max(nbytes for nbytes, _ in usage.values())
    step = _nice_step(max(peak, 1))
    scale_max = step * max(1, -(-peak // step))
    # Grid and ticks in GB (exact labels), then the axes over them.
    for tick in range(0, scale_max + 1, step):
        y = top + plot_h - plot_h * tick / scale_max
        parts.append(
            f'<line class="grid" x1="{_f(left)}" y1="{_f(y)}" x2="{_f(left + plot_w)}" y2="{_f(y)}" '
            f'stroke="#ddd"/><text class="tick" x="{_f(left - 6)}" y="{_f(y + 4)}" '
            f'text-anchor="end">{_gb_exact(tick)}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{_f(left)}" y1="{_f(top)}" x2="{_f(left)}" y2="{_f(top + plot_h)}" '
        f'stroke="#333"/><line class="axis" x1="{_f(left)}" y1="{_f(top + plot_h)}" '
        f'x2="{_f(left + plot_w)}" y2="{_f(top + plot_h)}" stroke="#333"/>'
    )
    parts.append(
        f'<text class="axis-label" transform="translate(16 {_f(top + plot_h / 2)}) rotate(-90)" '
        f'text-anchor="middle">GB delivered (10^9 bytes)</text>'
        f'<text class="axis-label" x="{_f(left + plot_w / 2)}" y="{_f(height - 12)}" '
        f'text-anchor="middle">day (UTC{", " + _e(years[0]) if short else ""})</text>'
    )
    group_w = plot_w / len(days)
    bar_w = group_w * 0.8 / len(regions)
    every = max(1, math.ceil((40 if short else 80) / group_w))
    for d, day in enumerate(days):
        group_x = left + d * group_w + group_w * 0.1
        if d % every == 0:
            parts.append(
                f'<text class="tick" x="{_f(left + d * group_w + group_w / 2)}" y="{_f(top + plot_h + 16)}" '
                f'text-anchor="middle">{_e(day[5:] if short else day)}</text>'
            )
        for r, region in enumerate(regions):
            if (region, day) not in usage:
                continue
            nbytes, requests = usage[region, day]
            bar_h = plot_h * nbytes / scale_max
            x, y = group_x + r * bar_w, top + plot_h - bar_h
            label = (
                f"{region} {day}: {_gb_label(nbytes)} GB "
                f"({_thousands(nbytes)} bytes, {_thousands(requests)} requests)"
            )
            parts.append(
                f'<rect class="bar" data-region="{_e(region)}" data-day="{_e(day)}" data-bytes="{nbytes}" '
                f'x="{_f(x)}" y="{_f(y)}" width="{_f(max(bar_w - 1, 0.5))}" height="{_f(bar_h)}" '
                f'fill="{_region_colour(region)}"><title>{_e(label)}</title></rect>'
            )
            if bar_w >= 34:
                parts.append(
                    f'<text class="value" x="{_f(x + bar_w / 2)}" y="{_f(y - 3)}" '
                    f'text-anchor="middle">{_gb_label(nbytes)}</text>'
                )
    # Legend, one swatch per region, under the day labels.
    for r, region in enumerate(regions):
        x = left + r * 64
        parts.append(
            f'<g class="legend"><rect x="{_f(x)}" y="{_f(height - 40)}" width="10" height="10" '
            f'fill="{_region_colour(region)}"/>'
            f'<text x="{_f(x + 14)}" y="{_f(height - 31)}">{_e(region)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _region_key(region: str) -> int:
    return REGION_CODES.index(region) if region in REGION_CODES else len(REGION_CODES)


@dataclass(frozen=True)
class _Bar:
    key: str
    label: str
    amount: int


def _hbar_chart_svg(bars: Sequence[_Bar], title: str, decimals: int, symbol: str, attr: str) -> str:
    """Horizontal bars, one per entry, labelled left and valued right (exact decimal amounts)."""
    label_w, bar_area, value_w = 330.0, 300.0, 130.0
    row_h, top = 22.0, 30.0
    width = label_w + bar_area + value_w
    height = top + row_h * max(len(bars), 1) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart chart-payees" role="img" {_SVG_FONT} '
        f'viewBox="0 0 {_f(width)} {_f(height)}" width="100%" aria-label="{_e(title)}">',
        f"<title>{_e(title)}</title>",
        f'<text class="axis-label" x="{_f(label_w)}" y="16">{_e(symbol)}</text>',
    ]
    if not bars:
        parts.append(f'<text x="{_f(width / 2)}" y="{_f(top + 14)}" text-anchor="middle">No payouts</text>')
    peak = max((b.amount for b in bars), default=0)
    for i, bar in enumerate(bars):
        y = top + i * row_h
        bar_len = bar_area * bar.amount / peak if peak > 0 else 0.0
        value = f"{format_amount(bar.amount, decimals)} {symbol}"
        parts.append(
            f'<text class="label" x="{_f(label_w - 8)}" y="{_f(y + 14)}" font-family="monospace" '
            f'text-anchor="end">{_e(bar.label)}</text>'
            f'<rect class="bar" data-{attr}="{_e(bar.key)}" data-amount="{bar.amount}" x="{_f(label_w)}" '
            f'y="{_f(y + 3)}" width="{_f(max(bar_len, 0.5))}" height="{_f(row_h - 6)}" fill="#1f77b4">'
            f"<title>{_e(bar.label)}: {_e(value)}</title></rect>"
            f'<text class="value" x="{_f(label_w + bar_len + 6)}" y="{_f(y + 14)}">{_e(value)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def seconds_chart_svg(values: Mapping[str, int], title: str) -> str:
    """Durations in whole seconds, one bar per labelled entry, in the given order (anchoring lag)."""
    bars = [_Bar(label, label, seconds) for label, seconds in values.items()]
    return _hbar_chart_svg(bars, title, 0, "s", "item")


def payees_chart_svg(payees: Mapping[str, int], title: str, decimals: int, symbol: str) -> str:
    """Payouts by payee, largest first: the top :data:`TOP_PAYEES` and one "others" bar for the rest."""
    ranked = sorted(payees.items(), key=lambda kv: (-kv[1], kv[0]))
    bars = [_Bar(address, address, amount) for address, amount in ranked[:TOP_PAYEES]]
    rest = ranked[TOP_PAYEES:]
    if rest:
        bars.append(_Bar("others", f"others ({len(rest)} payees)", sum(a for _, a in rest)))
    return _hbar_chart_svg(bars, title, decimals, symbol, "payee")


def _sources_chart_svg(lines: Sequence[LineItem], title: str, decimals: int, symbol: str) -> str:
    """A payee's payouts by (kind, source)."""
    sums: dict[tuple[str, str], int] = {}
    for item in lines:
        sums[item.kind, item.source] = sums.get((item.kind, item.source), 0) + item.amount
    ranked = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))
    bars = [_Bar(f"{kind}:{source}", f"{kind} {source}", amount) for (kind, source), amount in ranked]
    return _hbar_chart_svg(bars, title, decimals, symbol, "source")


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------

_CSS = """
@page { size: A4; margin: 14mm; }
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; font-size: 12px; color: #111;
       margin: 24px auto; max-width: 1000px; }
h1 { font-size: 20px; margin: 0 0 4px; }
h2 { font-size: 15px; margin: 22px 0 6px; border-bottom: 1px solid #999; }
table { border-collapse: collapse; width: 100%; margin: 4px 0 10px; }
th, td { border: 1px solid #ccc; padding: 3px 6px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.mono, code { font-family: "SFMono-Regular", Menlo, Consolas, monospace; font-size: 11px;
              word-break: break-all; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
svg.chart { max-width: 100%; height: auto; font-size: 11px; }
svg .axis { stroke: #333; } svg .grid { stroke: #ddd; } svg .label, svg .value { font-size: 11px; }
svg .label { font-family: Menlo, Consolas, monospace; }
a { color: #0645ad; } .muted { color: #666; }
tr, svg { page-break-inside: avoid; }
@media print { a { color: #111; text-decoration: none; } body { margin: 0; max-width: none; } }
"""


def _period_text(ctx: StatementContext) -> str:
    start = datetime.fromtimestamp(ctx.period_start, tz=UTC)
    end = datetime.fromtimestamp(ctx.period_end, tz=UTC)
    if (ctx.period_end - ctx.period_start) % 86_400 == 0 and ctx.period_start % 86_400 == 0:
        last = datetime.fromtimestamp(ctx.period_end - 86_400, tz=UTC)
        if last == start:
            return f"{start:%Y-%m-%d} (UTC)"
        return f"{start:%Y-%m-%d} to {last:%Y-%m-%d} (UTC, inclusive)"
    return f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"


def _amount_td(minor: int, decimals: int, symbol: str) -> str:
    return f'<td class="num" data-minor="{minor}">{_e(format_amount(minor, decimals))} {_e(symbol)}</td>'


def _batch_links_html(keys: Sequence[str], ctx: StatementContext) -> str:
    links = []
    for batch in _batches(keys, ctx.api_base):
        short = batch["batch_id"][:10] + "…"
        links.append(
            f'<a class="batch" href="{_e(batch["batch"])}" title="{_e(batch["batch_id"])}">{_e(short)}</a> '
            f'(<a class="proofs" href="{_e(batch["export"])}">proofs</a>)'
        )
    return "<br>".join(links)


def _meta_html(rows: Sequence[tuple[str, str]]) -> str:
    body = "".join(f"<dt>{_e(k)}</dt><dd>{v}</dd>" for k, v in rows)
    return f'<dl class="meta">{body}</dl>'


def _fx_html(fx: FxSnapshot | None, card: Currency) -> str:
    if fx is None:
        return f"none (rate card in {_e(card.code)}, no conversion)"
    inverted = ", inverted from the quoted " + _e(f"{fx.quote}/{fx.base}") + " rate" if fx.inverted else ""
    return (
        f"1 {_e(fx.base)} = <code>{fx.numerator}/{fx.denominator}</code> "
        f"(≈ {_e(_rate_decimal(fx.numerator, fx.denominator))}) {_e(fx.quote)}; source "
        f"<code>{_e(fx.source)}</code> at {_e(_utc(fx.timestamp))} ({fx.timestamp}){inverted}"
    )


def _lines_table(lines: Sequence[LineItem], ctx: StatementContext, with_payee: bool) -> str:
    if not lines:
        return '<p class="muted">No line items.</p>'
    head = "<th>kind</th><th>source</th><th>via</th>" + ("<th>payee</th>" if with_payee else "")
    head += '<th class="num">amount</th><th class="num">receipts</th><th>batches and proofs</th>'
    rows = []
    for item in lines:
        rows.append(
            "<tr class='line'>"
            f"<td>{_e(item.kind)}</td><td>{_e(item.source)}</td><td>{_e(' → '.join(item.via))}</td>"
            + (f'<td class="mono">{_e(item.payee)}</td>' if with_payee else "")
            + _amount_td(item.amount, ctx.token_decimals, ctx.token_symbol)
            + f'<td class="num">{len(item.receipt_keys)}</td>'
            f"<td>{_batch_links_html(item.receipt_keys, ctx)}</td></tr>"
        )
    return f'<table class="lines"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _receipts_table(keys: Iterable[str], ctx: StatementContext) -> str:
    unique = sorted(set(keys))
    if not unique:
        return '<p class="muted">No receipts.</p>'
    rows = []
    for key in unique:
        parts = parse_receipt_key(key)
        links = _batch_links(parts.batch_id, ctx.api_base)
        rows.append(
            f"<tr class='receipt'><td class='mono'><a class='receipt' href=\"{_e(links['batch'])}\" "
            f'data-key="{_e(key)}">{_e(key)}</a></td><td>{_e(parts.asset_id)}</td><td>{_e(parts.region)}</td>'
            f"<td>{_e(parts.country or '—')}</td>"
            f"<td><a class='proofs' href=\"{_e(links['export'])}\">proofs</a></td></tr>"
        )
    return (
        '<table class="receipts"><thead><tr><th>receipt (batch : asset : region : country)</th><th>asset</th>'
        "<th>region</th><th>country</th><th>leaves and proofs</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
    )


def _header_html(statement: Statement, ctx: StatementContext, title: str) -> list[str]:
    rows = [
        ("Period", f"{_e(_period_text(ctx))} — period id {ctx.period_id}, settlement {ctx.settlement_id}"),
        ("Merchant", f"{_e(ctx.merchant_name)} <span class='mono'>{_e(ctx.merchant_address)}</span>"),
        (
            "Token",
            f"{_e(ctx.token_symbol)} <span class='mono'>{_e(ctx.token_address)}</span> "
            f"({ctx.token_decimals} decimals)",
        ),
        ("State", _e(ctx.state)),
        ("Payout root", f"<span class='mono'>{_e(ctx.root or '—')}</span>"),
        ("Post transaction", f"<span class='mono'>{_e(ctx.tx_hash or '—')}</span>"),
        ("Claims open", _e(_utc(ctx.claims_open_at) or "—")),
        (
            "Rate card",
            f"version {statement.card_version}, {_e(statement.card_currency.code)} "
            f"({statement.card_currency.decimals} decimals)",
        ),
        ("FX", _fx_html(statement.fx, statement.card_currency)),
    ]
    return [f"<h1>{_e(title)}</h1>", _meta_html(rows)]


def statement_html(statement: Statement, ctx: StatementContext, payee: str | None = None) -> str:
    """A self-contained printable HTML statement (inline CSS and SVG, no script, no external asset).

    Without ``payee``: the merchant's statement (totals, bytes by region by day, payouts by payee, line
    items, violations, held-back amounts, decisions, receipts). With ``payee``: only that payee's lines,
    a chart of its payouts by source, and the usage chart of the regions its receipts were delivered in.
    """
    _check_context(statement, ctx)
    decimals, symbol = ctx.token_decimals, ctx.token_symbol
    card = statement.card_currency

    def token(minor: int) -> str:
        return f"{_e(format_amount(minor, decimals))} {_e(symbol)}"

    def card_amount(minor: int) -> str:
        return f"{_e(format_amount(minor, card.decimals))} {_e(card.code)}"

    body: list[str]
    if payee is None:
        title = f"Settlement statement — {ctx.merchant_name}"
        held_total = sum(h.amount for h in statement.held_back)
        body = _header_html(statement, ctx, title)
        body.append("<h2>Totals</h2>")
        body.append(
            _meta_html(
                [
                    ("Charge", f"<strong>{token(statement.charge)}</strong>"),
                    ("Charge in card currency", card_amount(statement.charge_card_currency)),
                    (
                        "Paid to payees",
                        f"{token(sum(statement.payees.values()))} ({len(statement.payees)} payees)",
                    ),
                    ("Held back", token(held_total)),
                ]
            )
        )
        delivery_settled, royalty_settled = _component_amounts(statement)
        rows = [
            f"<tr><td>delivery</td><td>{_e(region)}</td><td class='num'>{card_amount(fee)}</td>"
            f"{_amount_td(delivery_settled.get(region, 0), decimals, symbol)}</tr>"
            for region, fee in sorted(statement.delivery_fees.items())
        ]
        rows += [
            f"<tr><td>royalty</td><td>{_e(asset_id)}</td><td class='num'>{card_amount(amount)}</td>"
            f"{_amount_td(royalty_settled.get(asset_id, 0), decimals, symbol)}</tr>"
            for asset_id, amount in sorted(statement.royalties.items())
        ]
        body.append(
            '<table class="components"><thead><tr><th>component</th><th>region or asset</th>'
            f'<th class="num">rate card</th><th class="num">charged</th></tr></thead><tbody>{"".join(rows)}'
            "</tbody></table>"
        )
        body.append("<h2>Bytes delivered by region and day</h2>")
        body.append(bytes_chart_svg(ctx.usage_by_region_day, "Bytes delivered by region and day (GB)"))
        body.append("<h2>Payouts by payee</h2>")
        body.append(payees_chart_svg(statement.payees, "Payouts by payee", decimals, symbol))
        body.append("<h2>Line items</h2>")
        body.append(_lines_table(statement.line_items, ctx, with_payee=True))
        body.append("<h2>Licence violations (delivery fee charged, no royalty)</h2>")
        if statement.violations:
            vrows = []
            for violation in statement.violations:
                links = receipt_link(violation.receipt_key, ctx.api_base)
                vrows.append(
                    f"<tr class='violation'><td class='mono'><a href=\"{_e(links['batch'])}\">"
                    f"{_e(violation.receipt_key)}</a></td><td>{_e(violation.asset_id)}</td>"
                    f'<td>{_e(violation.reason)}</td><td><a href="{_e(links["export"])}">proofs</a></td></tr>'
                )
            body.append(
                '<table class="violations"><thead><tr><th>receipt</th><th>asset</th><th>reason</th>'
                f"<th>proofs</th></tr></thead><tbody>{''.join(vrows)}</tbody></table>"
            )
        else:
            body.append('<p class="muted">None.</p>')
        body.append("<h2>Held back</h2>")
        if statement.held_back:
            hrows = [
                f"<tr class='held'><td>{_e(h.asset_id)}</td><td>{_e(h.reason)}</td>"
                f"<td>{_e(' → '.join(h.via))}</td>"
                f"{_amount_td(h.amount, decimals, symbol)}<td class='num'>{len(h.receipt_keys)}</td>"
                f"<td>{_batch_links_html(h.receipt_keys, ctx)}</td></tr>"
                for h in statement.held_back
            ]
            body.append(
                '<table class="held-back"><thead><tr><th>asset</th><th>reason</th><th>via</th>'
                '<th class="num">amount</th><th class="num">receipts</th><th>batches and proofs</th></tr>'
                f"</thead><tbody>{''.join(hrows)}</tbody></table>"
            )
        else:
            body.append('<p class="muted">None.</p>')
        body.append("<h2>Reconciliation decisions</h2>")
        if statement.decisions:
            drows = [
                f"<tr class='decision'><td>{_e(d.region)}</td><td>{_e(d.day)}</td><td>{_e(d.action)}</td>"
                f"<td class='num'>{card_amount(d.adjustment)}</td><td>{_e(d.decided_by)}</td>"
                f"<td>{_e(_utc(d.decided_at))}</td><td>{_e(d.reason)}</td></tr>"
                for d in statement.decisions
            ]
            body.append(
                '<table class="decisions"><thead><tr><th>region</th><th>day</th><th>action</th>'
                '<th class="num">adjustment</th><th>decided by</th><th>decided at</th><th>reason</th></tr>'
                f"</thead><tbody>{''.join(drows)}</tbody></table>"
            )
        else:
            body.append('<p class="muted">None.</p>')
        keys = [k for item in statement.line_items for k in item.receipt_keys]
        keys += [k for h in statement.held_back for k in h.receipt_keys]
        keys += [v.receipt_key for v in statement.violations]
    else:
        wanted = payee.lower()
        lines = _payee_lines(statement, wanted)
        title = f"Payee statement — {wanted} — {ctx.merchant_name}"
        body = _header_html(statement, ctx, title)
        body.append("<h2>Total</h2>")
        body.append(
            _meta_html(
                [
                    ("Payee", f"<span class='mono'>{_e(wanted)}</span>"),
                    ("Amount", f"<strong>{token(sum(item.amount for item in lines))}</strong>"),
                ]
            )
        )
        keys = [k for item in lines for k in item.receipt_keys]
        regions = {parse_receipt_key(k).region for k in keys}
        usage = {key: value for key, value in ctx.usage_by_region_day.items() if key[0] in regions}
        body.append("<h2>Bytes delivered by region and day</h2>")
        body.append(
            "<p class=\"muted\">The merchant's deliveries in the regions of this payee's receipts.</p>"
        )
        body.append(bytes_chart_svg(usage, "Bytes delivered by region and day (GB)"))
        body.append("<h2>Payouts by source</h2>")
        body.append(_sources_chart_svg(lines, "Payouts to this payee by source", decimals, symbol))
        body.append("<h2>Line items</h2>")
        body.append(_lines_table(lines, ctx, with_payee=False))
    body.append("<h2>Receipts</h2>")
    body.append(
        '<p class="muted">Each receipt links to its delivery batch (anchoring transaction); "proofs" is the '
        "batch's export with every leaf and its Merkle proof.</p>"
    )
    body.append(_receipts_table(keys, ctx))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
