"""Pure tests of the settlement statements (JSON, CSV, HTML with SVG charts).

A realistic statement is computed with compute_payouts from in-memory inputs (FX conversion, a
reconciliation decision, a licence violation, a disputed asset's held-back royalty); no database, chain
or IPFS fixture is requested.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import replace
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any

import pytest

from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import (
    AssetTerms,
    Decision,
    PayoutInputs,
    Receipt,
    Recipient,
    Statement,
    compute_payouts,
)
from edgeledger.settlement.rates import Currency, FxRate, FxTable, RateCard, RegionPrice, Royalty, Tier
from edgeledger.settlement.statement_html import statement_html
from edgeledger.settlement.statements import (
    CSV_COLUMNS,
    TOP_PAYEES,
    ReceiptKey,
    StatementContext,
    format_amount,
    merchant_statement_csv,
    merchant_statement_json,
    parse_receipt_key,
    payee_statement_csv,
    payee_statement_json,
    receipt_link,
)
from edgeledger.territories import encode_territories

DAY0 = 1_795_132_800  # 2026-11-20T00:00:00Z
DAY = 86_400
USD6 = Currency(code="USD", decimals=6)
TUSDC = Currency(code="TUSDC", decimals=6)
PLATFORM = "0x00000000000000000000000000000000000000f0"
OP_A, OP_B = "0x00000000000000000000000000000000000000A1", "0x00000000000000000000000000000000000000b2"
ALICE, BOB, CAROL, DAVE = (f"0x{n:040x}" for n in (0xA11CE, 0xB0B, 0xCA201, 0xDA7E))
B1 = "0x" + "1f" * 32
B2 = "0x" + "AB" * 32  # upper-case hex: links use the lower-case batch id
B3 = "0x" + "03" * 32
EVIL = '<script>alert("pwned")</script> & "Co" <img src=x onerror=alert(1)>'


def key(batch: str, asset: int, region: str, country: str = "") -> str:
    return f"{batch}:{asset}:{region}:{country}"


def rate_card() -> RateCard:
    return RateCard(
        merchant="shop",
        version=3,
        valid_from=DAY0 - DAY,
        currency=USD6,
        delivery={
            "EU": RegionPrice(tiers=(Tier(price_per_gb=85_000),), price_per_10k_requests=7_500),
            "NA": RegionPrice(tiers=(Tier(price_per_gb=85_000),)),
            "JP": RegionPrice(tiers=(Tier(price_per_gb=120_000),)),
        },
        default_royalty=Royalty(mode="per_delivery", amount=100),
        asset_royalties={"102": Royalty(mode="per_gb", amount=20_000)},
        platform_fee_bps=1_000,
        operator_share_bps=7_000,
        derivative_share_bps=2_000,
    )


def receipt(
    rkey: str, asset: str, region: str, operator: str, requests: int, size: int, day: int, country: str = ""
) -> Receipt:
    return Receipt(
        key=rkey,
        asset_id=asset,
        merchant="shop",
        region=region,
        country=country,
        period=DAY0 + day * DAY,
        at=DAY0 + day * DAY + 3_600,
        operator=operator,
        requests=requests,
        bytes=size,
    )


RECEIPTS = (
    receipt(key(B1, 101, "EU", "DE"), "101", "EU", OP_A, 4_000, 2_000_000_000, 0, "DE"),
    receipt(key(B1, 102, "EU"), "102", "EU", OP_B, 1_000, 1_000_000_000, 0),
    receipt(key(B2, 102, "NA", "US"), "102", "NA", OP_A, 500, 333_333_333, 1, "US"),
    receipt(key(B2, 101, "NA", "MX"), "101", "NA", OP_B, 10, 1_000_000, 1, "MX"),  # licence violation
    receipt(key(B3, 103, "JP", "JP"), "103", "JP", OP_A, 700, 1_500_000_000, 1, "JP"),  # disputed asset
)


def inputs(**changes: Any) -> PayoutInputs:
    fields: dict[str, Any] = dict(
        merchant="shop",
        period_start=DAY0,
        period_end=DAY0 + 2 * DAY,
        receipts=RECEIPTS,
        assets=(
            AssetTerms(
                asset_id="101",
                recipients=(Recipient(address=ALICE, bps=6_667), Recipient(address=BOB, bps=3_333)),
                territories=encode_territories(["*"]) & ~encode_territories(["MX"]),
            ),
            AssetTerms(asset_id="102", recipients=(Recipient(address=CAROL, bps=10_000),), parent="101"),
            AssetTerms(asset_id="103", recipients=(Recipient(address=DAVE, bps=10_000),), disputed=True),
        ),
        cards=(rate_card(),),
        platform=PLATFORM,
        settlement_currency=TUSDC,
        fx=FxTable(
            rates=(
                FxRate.of("ecb", DAY0 - 7_200, "USD", "TUSDC", "0.9990"),
                FxRate.of("chainlink", DAY0 + DAY, "USD", "TUSDC", "0.9998"),
            )
        ),
        flagged=(("EU", "2026-11-20"),),
        decisions=(
            Decision(
                merchant="shop",
                region="EU",
                day="2026-11-20",
                action="adjust",
                adjustment=-1_250,
                decided_by="ops@shop.example",
                decided_at=DAY0 + 3 * DAY,
                reason="CDN bill lower by 0.6 % <agreed>",
            ),
        ),
    )
    fields.update(changes)
    return PayoutInputs(**fields)


def usage_of(receipts: tuple[Receipt, ...]) -> dict[tuple[str, str], tuple[int, int]]:
    usage: dict[tuple[str, str], tuple[int, int]] = {}
    for r in receipts:
        day = "2026-11-20" if r.period == DAY0 else "2026-11-21"
        nbytes, requests = usage.get((r.region, day), (0, 0))
        usage[r.region, day] = (nbytes + r.bytes, requests + r.requests)
    return usage


def context(**changes: Any) -> StatementContext:
    ctx = StatementContext(
        settlement_id=17,
        period_id=DAY0 // DAY,
        period_start=DAY0,
        period_end=DAY0 + 2 * DAY,
        merchant_name="Shop GmbH",
        merchant_address="0x" + "5e" * 20,
        token_address="0x" + "7c" * 20,
        token_symbol="tUSDC",
        token_decimals=6,
        state="claimable",
        root="0x" + "aa" * 32,
        tx_hash="0x" + "bb" * 32,
        claims_open_at=DAY0 + 4 * DAY,
        usage_by_region_day=usage_of(RECEIPTS),
        api_base="/api",
    )
    return replace(ctx, **changes)


@pytest.fixture(scope="module")
def statement() -> Statement:
    return compute_payouts(inputs())


# ----------------------------------------------------------------------------------------------
# amounts and keys
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("minor", "decimals", "text"),
    [
        (1_234_567, 6, "1.234567"),
        (1_000_000, 6, "1.000000"),
        (5, 6, "0.000005"),
        (0, 6, "0.000000"),
        (-5, 2, "-0.05"),
        (-1_234_567, 6, "-1.234567"),
        (42, 0, "42"),
        (-42, 0, "-42"),
        (0, 0, "0"),
        (10**30 + 1, 18, "1000000000000.000000000000000001"),
        (2**256 - 1, 18, "115792089237316195423570985008687907853269984665640564039457.584007913129639935"),
    ],
)
def test_format_amount(minor: int, decimals: int, text: str) -> None:
    assert format_amount(minor, decimals) == text
    # Exact: the decimal string scales back to the same integer.
    assert int(text.replace(".", "")) == minor


def test_format_amount_refuses_floats_and_bad_decimals() -> None:
    with pytest.raises(TypeError):
        format_amount(1.5, 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_amount(True, 2)
    with pytest.raises(ValueError):
        format_amount(1, -1)


def test_parse_receipt_key_and_links() -> None:
    parts = parse_receipt_key(key(B2, 101, "NA", "mx"))
    assert parts == ReceiptKey(batch_id=B2.lower(), asset_id="101", region="NA", country="MX")
    assert parse_receipt_key(key(B1, 7, "ZZ")).country == ""
    # a receipt's part from a licence boundary on (docs/settlement.md, "Licences")
    part = parse_receipt_key(key(B2, 101, "NA", "mx") + ":1764547200")
    assert part == ReceiptKey(
        batch_id=B2.lower(), asset_id="101", region="NA", country="MX", part_from=1764547200
    )
    assert parse_receipt_key(key(B1, 7, "EU") + ":5").part_from == 5
    links = receipt_link(key(B2, 101, "NA", "US"), "/api/")
    assert links == {
        "batch_id": B2.lower(),
        "batch": f"/api/deliveries/batches/{B2.lower()}",
        "export": f"/api/deliveries/batches/{B2.lower()}/export",
    }
    assert receipt_link(key(B1, 1, "EU"))["batch"] == f"/deliveries/batches/{B1}"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "b1:0",
        f"{B1}:101:EU",
        f"{B1}:101:EU:DE:extra",
        f"{B1}:101:EU:DE:0",
        f"{B1}:101:EU:DE:017",
        f"{B1}:101:EU:DE:-5",
        f"{B1}:101:EU:DE:",
        f"{B1}:101:EU:DE:5:6",
        f"{B1[:-1]}:101:EU:DE",
        f"0y{B1[2:]}:101:EU:DE",
        f"{B1[:-1]}g:101:EU:DE",
        f"{B1}::EU:DE",
        f"{B1}:10 1:EU:DE",
        f"{B1}:101:XX:",
        f"{B1}:101:eu:",
        f"{B1}:101:EU:US",
        f"{B1}:101:EU:DEU",
        f"{B1}:101:EU:1E",
    ],
)
def test_bad_receipt_keys(bad: str) -> None:
    with pytest.raises(SettlementError) as info:
        parse_receipt_key(bad)
    assert info.value.code == "receipt_key_invalid"
    with pytest.raises(SettlementError) as info:
        receipt_link(bad)
    assert info.value.code == "receipt_key_invalid"


def test_receipt_key_must_be_a_string() -> None:
    for bad in (None, 7, b"0x00:1:EU:", ["k"]):
        with pytest.raises(SettlementError) as info:
            parse_receipt_key(bad)  # type: ignore[arg-type]
        assert info.value.code == "receipt_key_invalid"


# ----------------------------------------------------------------------------------------------
# JSON
# ----------------------------------------------------------------------------------------------


def money_ok(money: dict[str, Any], decimals: int = 6) -> int:
    assert isinstance(money["minor"], int)
    assert money["amount"] == format_amount(money["minor"], decimals)
    return int(money["minor"])


def test_statement_has_the_interesting_parts(statement: Statement) -> None:
    assert statement.fx is not None and statement.fx.source == "chainlink"  # newest at period end
    assert [v.reason for v in statement.violations] == ["territory"]
    assert [h.reason for h in statement.held_back] == ["disputed"]
    assert statement.held_back[0].amount > 0
    assert len(statement.decisions) == 1
    assert sum(statement.payees.values()) + statement.held_back[0].amount == statement.charge


def test_merchant_json_round_trips_and_sums(statement: Statement) -> None:
    ctx = context()
    doc = merchant_statement_json(statement, ctx)
    assert json.loads(json.dumps(doc)) == doc
    assert doc["view"] == "merchant"
    assert (doc["settlement_id"], doc["period_id"], doc["state"]) == (17, DAY0 // DAY, "claimable")
    assert doc["period_start_utc"] == "2026-11-20T00:00:00Z"
    assert doc["period_end_utc"] == "2026-11-22T00:00:00Z"
    assert doc["merchant"] == {"name": "Shop GmbH", "address": ctx.merchant_address, "key": "shop"}
    assert doc["token"] == {"address": ctx.token_address, "symbol": "tUSDC", "decimals": 6}
    assert (doc["root"], doc["tx_hash"], doc["claims_open_at"]) == (ctx.root, ctx.tx_hash, ctx.claims_open_at)
    assert doc["card"] == {"version": 3, "currency": {"code": "USD", "decimals": 6}}

    charge = money_ok(doc["charge"])
    held = money_ok(doc["held_back_total"])
    assert charge == statement.charge
    assert doc["charge"]["currency"] == "tUSDC"
    assert money_ok(doc["charge_card_currency"]) == statement.charge_card_currency
    assert doc["charge_card_currency"]["currency"] == "USD"
    payees = {p["payee"]: money_ok(p["amount"]) for p in doc["payees"]}
    assert payees == statement.payees
    assert sum(payees.values()) == charge - held == money_ok(doc["paid_total"])
    assert held == sum(h.amount for h in statement.held_back) > 0
    lines = doc["line_items"]
    assert len(lines) == len(statement.line_items)
    assert sum(money_ok(line["amount"]) for line in lines) == charge - held
    assert {p["payee"]: p["line_count"] for p in doc["payees"]} == {
        p: sum(1 for i in statement.line_items if i.payee == p) for p in statement.payees
    }

    # Components: card-currency amounts as computed, settled amounts sum to the charge.
    assert {f["region"]: money_ok(f["card_amount"]) for f in doc["delivery_fees"]} == statement.delivery_fees
    assert {r["asset_id"]: money_ok(r["card_amount"]) for r in doc["royalties"]} == statement.royalties
    settled = [money_ok(f["amount"]) for f in doc["delivery_fees"]] + [
        money_ok(r["amount"]) for r in doc["royalties"]
    ]
    assert sum(settled) == charge
    eu = next(f for f in doc["delivery_fees"] if f["region"] == "EU")
    assert money_ok(eu["card_amount"]) == 255_000 + 3_750 - 1_250  # 3 GB, 5,000 requests, adjustment

    # FX snapshot: the rate used, with its source and time.
    assert doc["fx"] == {
        "source": "chainlink",
        "timestamp": DAY0 + DAY,
        "timestamp_utc": "2026-11-21T00:00:00Z",
        "base": "USD",
        "quote": "TUSDC",
        "numerator": 4_999,
        "denominator": 5_000,
        "rate": "4999/5000",
        "rate_decimal": "0.9998000000",
        "inverted": False,
    }
    assert charge == statement.charge_card_currency * 4_999 // 5_000

    # Every line's receipts link to their batches and proofs.
    for line, item in zip(lines, statement.line_items, strict=True):
        assert line["receipt_keys"] == list(item.receipt_keys)
        assert line["receipt_count"] == len(item.receipt_keys)
        batch_ids = sorted({parse_receipt_key(k).batch_id for k in item.receipt_keys})
        assert [b["batch_id"] for b in line["batches"]] == batch_ids
        for batch in line["batches"]:
            assert batch["batch"] == f"/api/deliveries/batches/{batch['batch_id']}"
            assert batch["export"] == batch["batch"] + "/export"
    all_keys = {r.key for r in RECEIPTS}
    assert set(doc["receipts"]) == all_keys
    for rkey, entry in doc["receipts"].items():
        assert {k: entry[k] for k in ("batch_id", "batch", "export")} == receipt_link(rkey, "/api")
    assert [b["batch_id"] for b in doc["batches"]] == sorted({B1, B2.lower(), B3})

    (violation,) = doc["violations"]
    assert violation["receipt_key"] == key(B2, 101, "NA", "MX")
    assert (violation["asset_id"], violation["reason"]) == ("101", "territory")
    assert violation["export"] == f"/api/deliveries/batches/{B2.lower()}/export"
    (held_back,) = doc["held_back"]
    assert (held_back["asset_id"], held_back["reason"], held_back["via"]) == ("103", "disputed", ["103"])
    assert held_back["receipt_keys"] == [key(B3, 103, "JP", "JP")]
    assert held_back["batches"][0]["batch_id"] == B3
    (decision,) = doc["decisions"]
    assert decision == {
        "region": "EU",
        "day": "2026-11-20",
        "action": "adjust",
        "adjustment": {"minor": -1_250, "amount": "-0.001250", "currency": "USD"},
        "decided_by": "ops@shop.example",
        "decided_at": DAY0 + 3 * DAY,
        "decided_at_utc": "2026-11-23T00:00:00Z",
        "reason": "CDN bill lower by 0.6 % <agreed>",
    }
    assert {(u["region"], u["day"]): (u["bytes"], u["requests"]) for u in doc["usage"]} == usage_of(RECEIPTS)


def test_fx_inverted_and_absent() -> None:
    inverted = compute_payouts(inputs(fx=FxTable(rates=(FxRate.of("desk", DAY0, "TUSDC", "USD", "1.25"),))))
    fx = merchant_statement_json(inverted, context())["fx"]
    assert (fx["source"], fx["timestamp"], fx["inverted"], fx["rate"]) == ("desk", DAY0, True, "4/5")
    assert (fx["base"], fx["quote"]) == ("USD", "TUSDC")
    assert inverted.charge == inverted.charge_card_currency * 4 // 5
    same = compute_payouts(inputs(settlement_currency=Currency(code="USD", decimals=6)))
    doc = merchant_statement_json(same, context(token_symbol="USD"))
    assert doc["fx"] is None
    assert "none (rate card in USD, no conversion)" in statement_html(same, context(token_symbol="USD"))


def test_payee_json_only_has_that_payee(statement: Statement) -> None:
    ctx = context()
    for address, amount in statement.payees.items():
        doc = payee_statement_json(statement, ctx, address.upper().replace("0X", "0x"))
        assert json.loads(json.dumps(doc)) == doc
        assert doc["view"] == "payee"
        assert doc["payee"] == address
        assert money_ok(doc["total"]) == amount
        assert doc["line_items"]
        assert {line["payee"] for line in doc["line_items"]} == {address}
        assert sum(money_ok(line["amount"]) for line in doc["line_items"]) == amount
        assert set(doc["receipts"]) == {k for line in doc["line_items"] for k in line["receipt_keys"]}
        assert "payees" not in doc and "held_back" not in doc and "decisions" not in doc
        others = set(statement.payees) - {address}
        assert not any(other in json.dumps(doc) for other in others)
    nobody = payee_statement_json(statement, ctx, "0x" + "99" * 20)
    assert money_ok(nobody["total"]) == 0
    assert nobody["line_items"] == [] and nobody["receipts"] == {} and nobody["batches"] == []
    # Carol is paid only from the remix: her receipts are the remix's.
    carol = payee_statement_json(statement, ctx, CAROL)
    assert set(carol["receipts"]) == {key(B1, 102, "EU"), key(B2, 102, "NA", "US")}
    assert {tuple(line["via"]) for line in carol["line_items"]} == {("102",)}
    alice = payee_statement_json(statement, ctx, ALICE)
    assert {tuple(line["via"]) for line in alice["line_items"]} == {("101",), ("102", "101")}


def test_context_must_match_the_statement(statement: Statement) -> None:
    for bad in (context(token_decimals=18), context(token_symbol="DAI"), context(period_end=DAY0 + DAY)):
        for render in (merchant_statement_json, merchant_statement_csv, statement_html):
            with pytest.raises(SettlementError) as info:
                render(statement, bad)
            assert info.value.code == "statement_context_mismatch"


# ----------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------


def parse_csv(text: str) -> list[dict[str, str]]:
    assert text.endswith("\r\n")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
    return list(reader)


def test_merchant_csv(statement: Statement) -> None:
    rows = parse_csv(merchant_statement_csv(statement, context()))
    assert len(rows) == len(statement.line_items)
    held = sum(h.amount for h in statement.held_back)
    assert sum(int(r["amount_minor"]) for r in rows) == statement.charge - held
    assert sum(Decimal(r["amount"]) for r in rows) == Decimal(statement.charge - held).scaleb(-6)
    for row, item in zip(rows, statement.line_items, strict=True):
        assert (row["kind"], row["source"], row["payee"]) == (item.kind, item.source, item.payee)
        assert row["via"] == ">".join(item.via)
        assert int(row["amount_minor"]) == item.amount
        assert row["amount"] == format_amount(item.amount, 6)
        assert row["currency"] == "tUSDC"
        assert int(row["receipt_count"]) == len(item.receipt_keys)
        batch_ids = sorted({parse_receipt_key(k).batch_id for k in item.receipt_keys})
        assert row["batch_ids"].split(" ") == batch_ids
        assert row["first_batch_link"] == f"/api/deliveries/batches/{batch_ids[0]}"
    remix = [r for r in rows if r["via"] == "102>101"]
    assert {r["payee"] for r in remix} == {ALICE, BOB}


def test_payee_csv(statement: Statement) -> None:
    for address, amount in statement.payees.items():
        rows = parse_csv(payee_statement_csv(statement, context(), address.upper().replace("0X", "0x")))
        assert len(rows) == sum(1 for i in statement.line_items if i.payee == address)
        assert {r["payee"] for r in rows} == {address}
        assert sum(int(r["amount_minor"]) for r in rows) == amount
    assert parse_csv(payee_statement_csv(statement, context(), "0x" + "99" * 20)) == []


# ----------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------


class Page(HTMLParser):
    """Collects elements (tag, attrs, enclosing svg or table class) and the visible text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str], str | None]] = []
        self.text: list[str] = []
        self._within: str | None = None
        self._title_depth = 0
        self.title = ""
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag in ("svg", "table"):
            self._within = values.get("class", "")
        self.elements.append((tag, values, self._within))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("svg", "table"):
            self._within = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)

    def find(self, tag: str, cls: str | None = None, within: str | None = None) -> list[dict[str, str]]:
        return [
            attrs
            for t, attrs, inside in self.elements
            if t == tag
            and (cls is None or cls in attrs.get("class", "").split())
            and (within is None or (inside is not None and within in inside.split()))
        ]

    @property
    def all_text(self) -> str:
        return "".join(self.text)


def test_merchant_html(statement: Statement) -> None:
    ctx = context(merchant_name=EVIL)
    html = statement_html(statement, ctx)
    page = Page(html)
    tags = {t for t, _, _ in page.elements}
    # Self-contained: no script, no external resource, nothing loaded from elsewhere.
    assert "script" not in tags and "img" not in tags and "link" not in tags and "iframe" not in tags
    assert not any("src" in attrs or "onerror" in attrs for _, attrs, _ in page.elements)
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert EVIL in page.all_text  # shown as text, exactly
    assert "2026-11-20 to 2026-11-21 (UTC, inclusive)" in page.all_text
    for value in (ctx.root, ctx.tx_hash, ctx.merchant_address, ctx.token_address, "claimable"):
        assert value in page.all_text
    assert f"{format_amount(statement.charge, 6)} tUSDC" in page.all_text
    assert "4999/5000" in page.all_text and "chainlink" in page.all_text

    svgs = page.find("svg")
    assert [s["class"] for s in svgs] == ["chart chart-bytes", "chart chart-payees"]
    bytes_bars = page.find("rect", "bar", within="chart-bytes")
    assert {(b["data-region"], b["data-day"]): int(b["data-bytes"]) for b in bytes_bars} == {
        k: v[0] for k, v in usage_of(RECEIPTS).items()
    }
    assert len(bytes_bars) == len(ctx.usage_by_region_day)
    legend = [t for t, _, svg in page.elements if t == "g" and svg and "chart-bytes" in svg]
    assert len(legend) == len({r for r, _ in ctx.usage_by_region_day})
    payee_bars = page.find("rect", "bar", within="chart-payees")
    assert {b["data-payee"]: int(b["data-amount"]) for b in payee_bars} == statement.payees
    assert len(payee_bars) == len(statement.payees)
    assert "GB delivered (10^9 bytes)" in page.all_text and "day (UTC)" in page.all_text
    # Bar values: GB from integers (3 decimals from 1 GB, 6 from 1 MB), exact bytes in the tooltip.
    assert "EU 2026-11-20: 3.000 GB (3,000,000,000 bytes, 5,000 requests)" in page.all_text
    assert "NA 2026-11-21: 0.334333 GB (334,333,333 bytes, 510 requests)" in page.all_text

    # Line items: one row each with its amount; every receipt key linked to its batch and proofs.
    amounts = [int(td["data-minor"]) for td in page.find("td", within="lines") if "data-minor" in td]
    held = sum(h.amount for h in statement.held_back)
    assert len(page.find("tr", "line")) == len(statement.line_items) == len(amounts)
    assert amounts == [i.amount for i in statement.line_items]
    assert sum(amounts) == statement.charge - held
    components = [int(td["data-minor"]) for td in page.find("td", within="components") if "data-minor" in td]
    assert sum(components) == statement.charge
    receipt_links = {a["data-key"]: a["href"] for a in page.find("a", "receipt")}
    assert set(receipt_links) == {r.key for r in RECEIPTS}
    for rkey, href in receipt_links.items():
        assert href == receipt_link(rkey, "/api")["batch"]
    hrefs = {a["href"] for a in page.find("a")}
    for r in RECEIPTS:
        assert receipt_link(r.key, "/api")["export"] in hrefs
    assert all(h.startswith("/api/deliveries/batches/0x") for h in hrefs)
    assert len(page.find("tr", "violation")) == 1
    assert len(page.find("tr", "held")) == 1
    assert len(page.find("tr", "decision")) == 1
    assert "ops@shop.example" in page.all_text and "CDN bill lower by 0.6 % <agreed>" in page.all_text


def test_payee_html_only_shows_that_payee(statement: Statement) -> None:
    ctx = context(merchant_name=EVIL)
    page = Page(statement_html(statement, ctx, payee=CAROL.upper().replace("0X", "0x")))
    text = page.all_text
    assert CAROL in text
    for other in set(statement.payees) - {CAROL}:
        assert other not in text
    assert "<script>" not in statement_html(statement, ctx, payee=CAROL)
    carol_lines = [i for i in statement.line_items if i.payee == CAROL]
    assert len(page.find("tr", "line")) == len(carol_lines)
    assert f"{format_amount(statement.payees[CAROL], 6)} tUSDC" in text
    assert (
        not page.find("tr", "violation") and not page.find("tr", "held") and not page.find("tr", "decision")
    )
    # Usage chart: only the regions of Carol's receipts (EU, NA); bars: her payouts by source.
    assert {b["data-region"] for b in page.find("rect", "bar", within="chart-bytes")} == {"EU", "NA"}
    source_bars = page.find("rect", "bar", within="chart-payees")
    assert sum(int(b["data-amount"]) for b in source_bars) == statement.payees[CAROL]
    assert {b["data-source"] for b in source_bars} == {"royalty:102"}
    keys = {a["data-key"] for a in page.find("a", "receipt")}
    assert keys == {k for i in carol_lines for k in i.receipt_keys}
    nobody = Page(statement_html(statement, ctx, payee="0x" + "99" * 20))
    assert not nobody.find("tr", "line") and not nobody.find("rect", "bar")
    assert "No payouts" in nobody.all_text and "No deliveries" in nobody.all_text


def test_payees_chart_top_20_and_others() -> None:
    many = [f"0x{n:040x}" for n in range(1, 26)]
    wide = compute_payouts(
        inputs(
            assets=(
                AssetTerms(
                    asset_id="101",
                    # 25 holders, 400 bps each but the first (310) and the last (490): unequal amounts
                    recipients=tuple(
                        Recipient(address=a, bps=400 + (90 if i == 24 else -90 if i == 0 else 0))
                        for i, a in enumerate(many)
                    ),
                ),
                AssetTerms(asset_id="102", recipients=(Recipient(address=CAROL, bps=10_000),), parent="101"),
                AssetTerms(asset_id="103", recipients=(Recipient(address=DAVE, bps=10_000),), disputed=True),
            )
        )
    )
    assert len(wide.payees) > TOP_PAYEES + 1
    page = Page(statement_html(wide, context()))
    bars = page.find("rect", "bar", within="chart-payees")
    assert len(bars) == TOP_PAYEES + 1
    assert bars[-1]["data-payee"] == "others"
    ranked = sorted(wide.payees.items(), key=lambda kv: (-kv[1], kv[0]))
    assert [(b["data-payee"], int(b["data-amount"])) for b in bars[:-1]] == ranked[:TOP_PAYEES]
    assert int(bars[-1]["data-amount"]) == sum(a for _, a in ranked[TOP_PAYEES:])
    assert f"others ({len(ranked) - TOP_PAYEES} payees)" in page.all_text
    assert sum(int(b["data-amount"]) for b in bars) == wide.charge - sum(h.amount for h in wide.held_back)


def test_durations_read_as_days_hours_minutes_not_raw_seconds() -> None:
    from edgeledger.settlement.charts import duration, seconds_chart_svg

    assert duration(0) == "0 s" and duration(42) == "42 s"
    assert duration(725) == "12 min 5 s" and duration(3 * 3600 + 4 * 60 + 9) == "3 h 4 min"
    assert duration(220_708_606) == "2,554 d 11 h" and duration(-90) == "-1 min 30 s"
    svg = seconds_chart_svg({"batch 1": 220_708_606, "batch 2": 95}, "Anchoring lag")
    assert "2,554 d 11 h" in svg and "1 min 35 s" in svg and "220708606 s" not in svg


def test_bytes_chart_gives_every_series_its_own_fill_and_never_clips_the_legend() -> None:
    from edgeledger.deliveries.regions import REGION_CODES
    from edgeledger.settlement.charts import MAX_DISTINCT_SERIES, bytes_chart_svg

    # 30 series, past the 10 colours; regions first in their own order, then the others by name.
    series = [*REGION_CODES, *sorted(f"edge-node-{n}" for n in range(20))]
    days = [f"2026-11-{d:02d}" for d in range(1, 29)]
    usage = {(s, day): (10**9 * (1 + d % 4), 10) for s in series for d, day in enumerate(days)}
    svg = bytes_chart_svg(usage, "Bytes")
    page = Page(svg)
    bars = page.find("rect", "bar", within="chart-bytes")
    assert len(bars) == len(series) * len(days)
    fill_of: dict[str, str] = {}
    for bar in bars:  # one fill per series, the same on every day
        assert fill_of.setdefault(bar["data-region"], bar["fill"]) == bar["fill"]
    assert len(set(fill_of.values())) == len(series) <= MAX_DISTINCT_SERIES
    patterns = {p["id"] for p in page.find("pattern", within="chart-bytes")}
    assert {f[5:-1] for f in fill_of.values() if f.startswith("url(#")} == patterns and len(patterns) == 20
    assert fill_of["EU"] == bytes_chart_svg({("EU", days[0]): (1, 1)}, "Other").split('fill="')[1][:7]

    # The legend: one entry per series, in rows inside the drawing (none past the right or bottom edge).
    _, _, width, height = map(float, page.find("svg")[0]["viewbox"].split())
    legend = [attrs for tag, attrs, inside in page.elements if tag == "g" and inside == "chart chart-bytes"]
    assert [g["data-series"] for g in legend] == series
    swatches = [a for t, a, inside in page.elements if t == "rect" and "class" not in a and "x" in a]
    label_w = {s: 10 + 4 + 7.5 * len(s) for s in series}
    for swatch, name in zip(swatches, series, strict=True):
        assert float(swatch["x"]) + label_w[name] <= width and float(swatch["y"]) + 10 <= height
    assert len({sw["y"] for sw in swatches}) >= 3  # it wrapped
