"""The printable HTML statement (merchant or payee): one self-contained page with its charts inline, every
line linked to its batches and proofs (docs/settlement.md, "Statements")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime

from edgeledger.settlement.charts import _e, _sources_chart_svg, bytes_chart_svg, payees_chart_svg
from edgeledger.settlement.payouts import LineItem, Statement
from edgeledger.settlement.rates import Currency, FxSnapshot
from edgeledger.settlement.statements import (
    LINKS_AUTHENTICATION,
    StatementContext,
    _batch_links,
    _batches,
    _check_context,
    _component_amounts,
    _payee_lines,
    _rate_decimal,
    _utc,
    format_amount,
    parse_receipt_key,
    priced_unregistered,
    receipt_link,
    settlement_link,
    unregistered_note,
)

#: The statement's only style element (the portal allows it by its hash in a Content-Security-Policy).
STATEMENT_CSS = """
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


def _receipts_table(keys: Iterable[str], ctx: StatementContext, unregistered: Mapping[str, str]) -> str:
    """Every receipt with its batch and proofs links; when some were priced as unregistered content
    though their keys name an asset (``unregistered``), a note column says why on their rows."""
    unique = sorted(set(keys))
    if not unique:
        return '<p class="muted">No receipts.</p>'
    noted = any(key in unregistered for key in unique)
    rows = []
    for key in unique:
        parts = parse_receipt_key(key)
        links = _batch_links(parts.batch_id, ctx.api_base)
        note = ""
        if noted:
            text = unregistered_note(parts.asset_id, ctx.terms_block) if key in unregistered else ""
            note = f"<td class='note'>{_e(text or '—')}</td>"
        kind = "receipt priced-unregistered" if key in unregistered else "receipt"
        rows.append(
            f"<tr class='{kind}'><td class='mono'><a class='receipt' href=\"{_e(links['batch'])}\" "
            f'data-key="{_e(key)}">{_e(key)}</a></td><td>{_e(parts.asset_id)}</td><td>{_e(parts.region)}</td>'
            f"<td>{_e(parts.country or '—')}</td>"
            f"<td><a class='proofs' href=\"{_e(links['export'])}\">proofs</a></td>{note}</tr>"
        )
    return (
        '<table class="receipts"><thead><tr><th>receipt (batch : asset : region : country [: from])</th>'
        "<th>asset</th>"
        "<th>region</th><th>country</th><th>leaves and proofs</th>"
        + ("<th>note</th>" if noted else "")
        + f"</tr></thead><tbody>{''.join(rows)}</tbody></table>"
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
        body.append(
            "<h2>Not billed (abandoned batches, sources you do not authorise, records under fraud "
            "review)</h2>"
        )
        if ctx.unbillable:
            urows = [
                f"<tr class='unbillable'><td class='mono'>{_e(str(u['batch_id']))}</td>"
                f"<td>{_e(str(u['source']))}</td><td class='num'>{int(u['records'])}</td>"
                f"<td class='num'>{int(u['bytes'])}</td><td>{_e(str(u['reason']))}</td>"
                f"<td>{_e(str(u['abandoned_by'] or '-'))}</td>"
                f"<td>{_e(str(u['abandoned_at'] or '-'))}</td></tr>"
                for u in ctx.unbillable
            ]
            body.append(
                '<table class="unbillable"><thead><tr><th>batch</th><th>source</th><th class="num">records'
                '</th><th class="num">bytes</th><th>why</th><th>abandoned by</th><th>abandoned at</th>'
                f"</tr></thead><tbody>{''.join(urows)}</tbody></table>"
            )
        else:
            body.append('<p class="muted">None.</p>')
        body.append("<h2>Other settlements of this period (corrections, releases, attempts)</h2>")
        if ctx.related:
            base = ctx.api_base
            rrows = [
                f"<tr class='related'><td><a href=\"{_e(settlement_link(int(r['settlement_id']), base))}"
                f'">{int(r["settlement_id"])}</a></td><td>{_e(str(r["kind"]))}</td>'
                f"<td class='num'>{int(r['sequence'])}</td><td class='mono'>{int(r['period_id'])}</td>"
                f"<td>{_e(str(r['state']))}</td>{_amount_td(int(r['total']), decimals, symbol)}</tr>"
                for r in ctx.related
            ]
            body.append(
                '<table class="related"><thead><tr><th>settlement</th><th>kind</th><th class="num">sequence'
                '</th><th>vault id</th><th>state</th><th class="num">total</th></tr></thead><tbody>'
                f"{''.join(rrows)}</tbody></table>"
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
        if ctx.payee_ledger is not None:
            body.append("<h2>Your running ledger in this token, all periods</h2>")
            body.append(
                _meta_html(
                    [(_e(name.replace("_", " ")), token(int(v))) for name, v in ctx.payee_ledger.items()]
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
    body.append(f'<p class="muted links">{_e(LINKS_AUTHENTICATION)}</p>')
    body.append(_receipts_table(keys, ctx, priced_unregistered(statement)))
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)}</title><style>{STATEMENT_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
