"""Pure tests of the CDN bill's import and its reconciliation with our receipts (settlement/billing.py).

No database, chain or IPFS fixture is requested here; everything is computed from in-memory inputs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from edgeledger.auth.models import Role, User
from edgeledger.settlement import SettlementError
from edgeledger.settlement.billing import (
    BillingReader,
    Usage,
    UsageKey,
    aggregate_billing,
    amount_to_minor,
    beyond_tolerance,
    billing_lines,
    reconcile,
    rescale_minor,
    usage_from_receipts,
)
from edgeledger.settlement.models import CaseState, ReconciliationCase
from edgeledger.settlement.rates import Currency, FxRate, FxTable, RegionPrice, Tier
from edgeledger.settlement.service import decide_case
from tests.backend.test_settlement_core import DAY0, OP_A, OP_B, card, receipt

SAMPLES = Path(__file__).parent / "samples" / "billing"

# ----------------------------------------------------------------------------------------------
# Billing import
# ----------------------------------------------------------------------------------------------


def read(name: str, merchant: str = "shop") -> tuple[BillingReader, list[Any]]:
    with (SAMPLES / name).open(newline="") as handle:
        reader = BillingReader(handle, merchant)
        rows = list(reader)
    return reader, rows


def test_billing_csv_own_format() -> None:
    reader, rows = read("own_valid.csv")
    assert reader.problems == [] and reader.layout == "own"
    assert [(r.line, r.region, r.bytes, r.requests, r.amount) for r in rows] == [
        (2, "EU", 2_000_000_000, 4_000, 17),
        (3, "NA", 1_000_000_000, 1_000, 9),  # 0.085 USD rounds half up to 9 cents
        (4, "EU", 500_000_000, 100, 4),
        (5, "EU", 0, 10, 0),
    ]
    totals = aggregate_billing(rows)
    assert totals == {
        ("shop", "EU", "2026-11-20"): Usage(2_000_000_000, 4_010, 17, "USD"),
        ("shop", "EU", "2026-11-21"): Usage(500_000_000, 100, 4, "USD"),
        ("shop", "NA", "2026-11-20"): Usage(1_000_000_000, 1_000, 9, "USD"),
    }


def test_billing_csv_broken_rows_are_collected_with_line_numbers() -> None:
    reader, rows = read("own_broken.csv")
    assert [r.line for r in rows] == [2, 12]
    problems = {p.line: p.problem for p in reader.problems}
    assert sorted(problems) == [3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert "not a date" in problems[3]
    assert "unknown region 'XX'" in problems[4]
    assert "bytes -5 is negative" in problems[5]
    assert "64-bit" in problems[6]
    assert "unknown currency 'XYZ'" in problems[7]
    assert "expected 6 fields, found 3" in problems[8]
    assert "not an integer" in problems[9]
    assert "amount -0.01 is negative" in problems[10]
    assert "differs from the file's USD" in problems[11]
    assert reader.problem_count == 9


def test_billing_csv_header_and_limits() -> None:
    reader = BillingReader(["date,region,bytes\n", "2026-11-20,EU,1\n"], "shop")
    assert list(reader) == []
    assert reader.problems[0].line == 1 and "requests, currency, amount" in reader.problems[0].problem
    empty = BillingReader([], "shop")
    assert list(empty) == [] and empty.problems[0].problem.startswith("empty file")
    many = BillingReader(
        ["date,region,bytes,requests,amount,currency\n"] + ["x\n"] * 50, "shop", max_problems=5
    )
    assert list(many) == [] and len(many.problems) == 5 and many.problem_count == 50
    minor = BillingReader(
        [
            "Merchant,Date,Region,Bytes,Requests,Amount_Minor,Currency\n",
            "acme,2026-11-20,jp,1,2,9223372036854775807,JPY\n",
        ],
        "shop",
    )
    [row] = list(minor)
    assert (row.merchant, row.region, row.amount, row.currency) == ("acme", "JP", 2**63 - 1, "JPY")
    assert (
        amount_to_minor("1.005", 2) == 101
        and amount_to_minor("1.0049", 2) == 100
        and amount_to_minor("7", 0) == 7
    )


def test_billing_csv_cloudfront_usage_report() -> None:
    reader, rows = read("cloudfront_usage.csv")
    assert reader.layout == "cloudfront"
    assert reader.ignored == 2  # origin bytes (Out-OBytes) and invalidations
    assert [(p.line, p.problem) for p in reader.problems] == [
        (10, "unknown region 'XX'"),
        (11, "time 'yesterday' is not a date or time in a known format"),
    ]
    assert aggregate_billing(rows) == {
        ("shop", "EU", "2026-11-20"): Usage(2_000_000_000, 4_000, None, None),
        ("shop", "NA", "2026-11-20"): Usage(1_000_000_000, 1_000, None, None),
    }
    header = "Service,Operation,UsageType,Resource,StartTime,EndTime,UsageValue\n"
    in_gb = BillingReader(
        [
            header,
            "AmazonCloudFront,GET,JP-Out-Bytes-HTTPS-Static,E1,2026-11-20T05:00:00Z,2026-11-20T06:00:00Z,1.5000000004\n",
            "AmazonCloudFront,GET,JP-Requests-HTTPS-Static,E1,2026-11-20 05:00:00,2026-11-20 06:00:00,7\n",
            "AmazonCloudFront,GET,JP-Requests-HTTPS-Static,E1,2026-11-20,2026-11-21,1.5\n",
            "AmazonS3,GET,JP-Out-Bytes-HTTPS-Static,E1,2026-11-20,2026-11-21,1\n",
        ],
        "shop",
        cloudfront_bytes_unit="GB",
    )
    assert [(r.day, r.bytes, r.requests) for r in in_gb] == [
        ("2026-11-20", 1_500_000_000, 0),
        ("2026-11-20", 0, 7),
    ]
    assert [(p.line, p.problem) for p in in_gb.problems] == [(4, "UsageValue '1.5' is not an integer")]
    assert in_gb.ignored == 1  # another service's line


def _billing_problems(text: str) -> list[tuple[int, str]]:
    reader = BillingReader(billing_lines(text.encode()), merchant="shop")
    list(reader)
    return [(problem.line, problem.problem) for problem in reader.problems]


BILLING_HEADER = "date,region,bytes,requests,amount,currency\n"


def test_billing_numbers_past_pythons_digit_limit_are_a_problem_not_a_crash() -> None:
    """Found by fuzzing (docs/testing.md): int() refuses strings over 4,300 digits with a ValueError, which
    escaped the reader (a 500 on import)."""
    for row in ("2026-11-20,EU,1,1," + "9" * 5000 + ",USD", "2026-11-20,EU," + "9" * 5000 + ",1,1,USD"):
        ((line, problem),) = _billing_problems(BILLING_HEADER + row)
        assert line == 2 and "does not fit in a signed 64-bit integer" in problem and len(problem) < 200
    assert _billing_problems(BILLING_HEADER + "2026-11-20,EU,1,1,0." + "0" * 5000 + "5,USD") == []


def test_a_csv_field_over_the_csv_module_limit_is_a_problem_not_a_crash() -> None:
    """Found by fuzzing: csv.Error ("field larger than field limit (131072)") escaped the reader."""
    text = BILLING_HEADER + "2026-11-20,EU,1,1,1,USD\n" + "2026-11-20,EU,1,1,1,USD," + "x" * 200_000 + "\n"
    assert _billing_problems(text) == [(3, "unreadable CSV: field larger than field limit (131072)")]


def test_billing_line_numbers_count_only_line_ends() -> None:
    """Found by fuzzing: str.splitlines() also split at U+2028, form feeds and other separators inside a
    field: the problem below was reported on line 4 of a 3-line file."""
    text = BILLING_HEADER + '2026-11-20,EU,1,1,1,USD,"a\u2028b\x0cc"\n2026-11-20,XX,1,1,1,USD,x\n'
    text = text.replace("currency\n", "currency,merchant\n")
    assert _billing_problems(text) == [(3, "unknown region 'XX'")]


def test_billing_numbers_and_dates_are_ascii_digits() -> None:
    """Found by fuzzing: \\d matched other scripts' digits, which int() and strptime accept: "١٢" was 12
    bytes."""
    assert _billing_problems(BILLING_HEADER + "2026-11-20,EU,\u0661\u0662,1,1,USD") == [
        (2, "bytes '١٢' is not an integer")
    ]
    assert _billing_problems(BILLING_HEADER + "\u0662026-11-20,EU,1,1,1,USD")[0][0] == 2


# ----------------------------------------------------------------------------------------------
# Reconciliation
# ----------------------------------------------------------------------------------------------


def test_tolerance_edges() -> None:
    # 50 bps of 10,000 is 50: exactly 50 off is within, 51 is beyond, in either direction.
    assert not beyond_tolerance(10_000, 10_050, 50)
    assert beyond_tolerance(10_000, 10_051, 50)
    assert not beyond_tolerance(10_000, 9_950, 50)
    assert beyond_tolerance(10_000, 9_949, 50)
    assert not beyond_tolerance(0, 0, 0)
    assert beyond_tolerance(0, 1, 10_000)
    assert not beyond_tolerance(7, 7, 0)


def test_reconcile_receipts_against_the_bill() -> None:
    receipts = [
        receipt("r1", "song", "EU", OP_A, 3_000, 1_500_000_000),
        receipt("r2", "song", "EU", OP_B, 1_000, 500_000_000),
        receipt("r3", "song", "EU", OP_A, 100, 500_000_000, at=DAY0 + 86_400 + 60),
        receipt("r4", "song", "NA", OP_A, 1_000, 1_000_000_000),
    ]
    ours = usage_from_receipts(receipts, card())
    # EU: 2.5 GB at 0.085 $ + 4,100 requests at 0.0075 $/10k = 212,500 + 3,075 micro-dollars, shared by bytes.
    assert ours[("shop", "EU", "2026-11-20")] == Usage(2_000_000_000, 4_000, 172_460, "USD")
    assert ours[("shop", "EU", "2026-11-21")] == Usage(500_000_000, 100, 43_115, "USD")
    assert ours[("shop", "NA", "2026-11-20")] == Usage(1_000_000_000, 1_000, 85_000, "USD")
    bill = {
        ("shop", "EU", "2026-11-20"): Usage(2_010_000_000, 4_000, 172_460 + 862, "USD"),  # +0.5 % bytes: in
        ("shop", "EU", "2026-11-21"): Usage(500_000_000, 101, 43_115, "USD"),  # +1 % requests: out
        ("shop", "NA", "2026-11-20"): Usage(1_000_000_000, 1_000, 85_000, "EUR"),
        ("shop", "JP", "2026-11-20"): Usage(1, 0, None, None),
    }
    # This bill counts USD and EUR in micro-units, as the card does (a bill's own units: next test).
    micro = {"USD": 6, "EUR": 6}
    deltas = {d.key: d for d in reconcile(ours, bill, 50, ours_decimals=6, bill_decimals=micro)}
    eu20 = deltas[("shop", "EU", "2026-11-20")]
    assert (eu20.bytes, eu20.requests, eu20.amount, eu20.flagged) == (10_000_000, 0, 862, False)
    eu21 = deltas[("shop", "EU", "2026-11-21")]
    assert (eu21.requests, eu21.flagged, eu21.reasons) == (1, True, ("requests",))
    assert deltas[("shop", "NA", "2026-11-20")].reasons == ("currency",)
    jp = deltas[("shop", "JP", "2026-11-20")]
    assert (jp.bytes, jp.amount, jp.reasons) == (1, None, ("bytes",))
    # One more micro-dollar on the bill of 20 Nov crosses 0.5 % of 172,460 (= 862.3).
    bill[("shop", "EU", "2026-11-20")] = Usage(2_010_000_000, 4_000, 172_460 + 863, "USD")
    again = reconcile(ours, bill, 50, ours_decimals=6, bill_decimals=micro)
    assert {d.key: d.reasons for d in again}[("shop", "EU", "2026-11-20")] == ("amount",)
    # Receipts with no bill line are flagged too.
    assert reconcile(ours, {}, 50, ours_decimals=6)[0].reasons == ("bytes", "requests")
    with pytest.raises(SettlementError):
        usage_from_receipts([receipt("x", "song", "EU", OP_A, 1, 1, merchant="other")], card())


def test_a_bill_in_cents_is_compared_with_a_card_in_micro_dollars() -> None:
    """The card counts USD in 10^-6, a CDN bill in cents (ISO 4217): the same money on both sides is no
    case, and a difference is measured in the card's units."""
    usd_card = card(delivery={"EU": RegionPrice(tiers=(Tier(price_per_gb=85_000),))})
    ours = usage_from_receipts([receipt("b1:0", "song", "EU", OP_A, 4_000, 2_000_000_000)], usd_card)
    assert ours[("shop", "EU", "2026-11-20")].amount == 170_000  # 0.17 $ in micro-dollars

    def bill(amount: str) -> dict[UsageKey, Usage]:
        text = f"date,region,bytes,requests,amount,currency\n2026-11-20,EU,2000000000,4000,{amount},USD\n"
        return aggregate_billing(BillingReader(billing_lines(text.encode()), merchant="shop"))

    assert bill("0.17")[("shop", "EU", "2026-11-20")].amount == 17  # the bill's own minor unit: cents
    (same,) = reconcile(ours, bill("0.17"), 50, ours_decimals=6)
    assert (same.flagged, same.amount) == (False, 0)
    (more,) = reconcile(ours, bill("0.18"), 50, ours_decimals=6)
    assert (more.flagged, more.reasons, more.amount) == (True, ("amount",), 10_000)
    assert more.theirs.amount == 18  # stored as billed
    # Compared at the coarser unit: 0.1725 $ of ours is 17 cents (half up), the bill's 17 is no case.
    ours_odd = {key: Usage(u.bytes, u.requests, 172_499, u.currency) for key, u in ours.items()}
    (rounded,) = reconcile(ours_odd, bill("0.17"), 50, ours_decimals=6)
    assert (rounded.flagged, rounded.amount) == (False, -2_499)
    assert rescale_minor(172_500, 6, 2) == 17 and rescale_minor(172_499, 6, 2) == 17
    assert rescale_minor(175_000, 6, 2) == 18 and rescale_minor(17, 2, 6) == 170_000


def test_a_bill_in_another_currency_is_converted_at_the_periods_rate() -> None:
    """A card in a stablecoin (TUSDC, 10^-6), the CDN's bill in USD cents: without a rate every key with an
    amount is flagged ``currency``; with the FX table's rate at the period's end the bill is converted to
    the card's units (floored) and compared like a bill in the card's own currency."""
    tusdc = Currency(code="TUSDC", decimals=6)
    token_card = card(currency=tusdc, delivery={"EU": RegionPrice(tiers=(Tier(price_per_gb=85_000),))})
    ours = usage_from_receipts([receipt("b1:0", "song", "EU", OP_A, 4_000, 2_000_000_000)], token_card)
    key = ("shop", "EU", "2026-11-20")
    assert ours[key].amount == 170_000 and ours[key].currency == "TUSDC"

    def bill(amount: str) -> dict[UsageKey, Usage]:
        text = f"date,region,bytes,requests,amount,currency\n2026-11-20,EU,2000000000,4000,{amount},USD\n"
        return aggregate_billing(BillingReader(billing_lines(text.encode()), merchant="shop"))

    (unconverted,) = reconcile(ours, bill("0.17"), 50, ours_decimals=6)
    assert (unconverted.flagged, unconverted.reasons, unconverted.amount) == (True, ("currency",), None)
    at = DAY0 + 86_400
    later = FxTable(rates=(FxRate.of("desk", at + 1, "USD", "TUSDC", "1"),))
    (too_late,) = reconcile(ours, bill("0.17"), 50, ours_decimals=6, fx=later, at=at)
    assert too_late.reasons == ("currency",)  # a rate from after the period's end is not used
    par = FxTable(rates=(FxRate.of("desk", at - 60, "TUSDC", "USD", "1.0002"),))  # inverted pair
    (same,) = reconcile(ours, bill("0.17"), 50, ours_decimals=6, fx=par, at=at)
    assert (same.flagged, same.amount) == (False, 169_966 - 170_000)  # floor(170,000 / 1.0002)
    (more,) = reconcile(ours, bill("0.19"), 50, ours_decimals=6, fx=par, at=at)
    assert (more.flagged, more.reasons, more.amount) == (True, ("amount",), 189_962 - 170_000)
    assert more.theirs.amount == 19 and more.theirs.currency == "USD"  # stored as billed


def test_a_converted_bill_is_compared_in_the_cards_units_within_one_of_its_own() -> None:
    """A bill in yen (no minor unit) against a card in TUSDC at 1 JPY = 0.0067 TUSDC: compared in the
    card's units, not rounded to whole TUSDC, so 10 % apart is a case and 0.12 % is not; a difference
    within one yen's worth is none; a key only the bill has is converted too."""
    at = DAY0 + 86_400
    fx = FxTable(rates=(FxRate.of("desk", at - 60, "JPY", "TUSDC", "0.0067"),))
    key, other = ("shop", "EU", "2026-11-20"), ("shop", "NA", "2026-11-20")

    def delta(ours_minor: int, yen: int) -> Any:
        ours = {key: Usage(10, 1, ours_minor, "TUSDC")}
        (found,) = reconcile(ours, {key: Usage(10, 1, yen, "JPY")}, 50, ours_decimals=6, fx=fx, at=at)
        return found

    far = delta(7_490_000, 1_000)  # 6.70 TUSDC billed against our 7.49
    assert (far.reasons, far.amount) == (("amount",), 6_700_000 - 7_490_000)
    near = delta(6_500_000, 969)  # 6.4923 against 6.50: 0.12 %, within 0.5 %
    assert (near.flagged, near.amount) == (False, 6_492_300 - 6_500_000)
    assert delta(0, 1).flagged is False and delta(0, 2).reasons == ("amount",)  # within one yen: none
    (only_billed,) = reconcile(
        {}, {other: Usage(10, 1, 1_000, "JPY")}, 50, ours_decimals=6, fx=fx, at=at, ours_currency="TUSDC"
    )
    assert (only_billed.reasons, only_billed.amount) == (("bytes", "requests", "amount"), 6_700_000)


def test_a_decisions_adjustment_fits_the_amount_columns_whatever_path_made_it() -> None:
    """The API's schema bounds the adjustment; the web app's form parses its own text and calls the
    service directly, so the service checks it too (it was a 500 when the row was written)."""
    for adjustment in (2**63, -(2**63), 10**25):
        case = ReconciliationCase(state=CaseState.open)
        with pytest.raises(SettlementError) as refused:
            decide_case(None, case, User(role=Role.merchant, name="m"), "adjust", adjustment, "typo")  # type: ignore[arg-type]
        assert refused.value.code == "adjustment_invalid" and case.state == CaseState.open
