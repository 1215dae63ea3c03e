"""Pure tests of the settlement core: rate cards, FX and payouts (the bill: test_settlement_billing.py).

No database, chain or IPFS fixture is requested here; everything is computed from in-memory inputs.
"""

from __future__ import annotations

import itertools
import random
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import (
    RECEIPT_ROW,
    AssetTerms,
    Decision,
    PayoutInputs,
    PriorUsage,
    Receipt,
    Recipient,
    Statement,
    canonical_inputs,
    compute_payouts,
    inputs_digest,
    licence_boundaries,
    licensed_at,
)
from edgeledger.settlement.rates import (
    Currency,
    FxRate,
    FxTable,
    RateCard,
    RegionPrice,
    Royalty,
    Tier,
    card_at,
    check_versions,
    largest_remainder,
    parse_rate,
)
from edgeledger.territories import encode_territories

DAY0 = 1_795_132_800  # 2026-11-20T00:00:00Z
USD6 = Currency(code="USD", decimals=6)
USDC = Currency(code="USDC", decimals=6)
PLATFORM = "0x00000000000000000000000000000000000000F0"
OP_A, OP_B = "0x00000000000000000000000000000000000000a1", "0x00000000000000000000000000000000000000B2"
ALICE, BOB, CAROL = (f"0x{n:040x}" for n in (0xA11CE, 0xB0B, 0xCA201))


def card(**changes: Any) -> RateCard:
    """A USD card counted in micro-dollars: EU 0.085 $/GB up to 1 TB then 0.080, NA 0.085 $/GB."""
    fields: dict[str, Any] = dict(
        merchant="shop",
        version=1,
        valid_from=DAY0 - 86_400,
        valid_until=None,
        currency=USD6,
        delivery={
            "EU": RegionPrice(
                tiers=(Tier(up_to_bytes=10**12, price_per_gb=85_000), Tier(price_per_gb=80_000)),
                price_per_10k_requests=7_500,
            ),
            "NA": RegionPrice(tiers=(Tier(price_per_gb=85_000),)),
            "ZZ": RegionPrice(tiers=(Tier(price_per_gb=100_000),)),
        },
        default_royalty=Royalty(mode="per_delivery", amount=100),
        asset_royalties={"remix": Royalty(mode="per_gb", amount=20_000)},
        platform_fee_bps=1_000,
        operator_share_bps=7_000,
        derivative_share_bps=2_000,
    )
    fields.update(changes)
    return RateCard(**fields)


def receipt(
    key: str, asset: str, region: str, operator: str, requests: int, size: int, **more: Any
) -> Receipt:
    fields: dict[str, Any] = dict(
        key=key,
        asset_id=asset,
        merchant="shop",
        region=region,
        period=DAY0,
        at=DAY0 + 3_600,
        operator=operator,
        requests=requests,
        bytes=size,
    )
    fields.update(more)
    return Receipt(**fields)


def example_inputs(**changes: Any) -> PayoutInputs:
    """The worked example of docs/settlement.md."""
    fields: dict[str, Any] = dict(
        merchant="shop",
        period_start=DAY0,
        period_end=DAY0 + 86_400,
        receipts=(
            receipt("b1:0", "song", "EU", OP_A, 4_000, 2_000_000_000),
            receipt("b1:1", "remix", "EU", OP_B, 1_000, 1_000_000_000),
            receipt("b1:2", "remix", "NA", OP_A, 500, 333_333_333),
            receipt("b1:3", "song", "NA", OP_B, 10, 1_000_000, country="MX"),
        ),
        assets=(
            AssetTerms(
                asset_id="song",
                recipients=(Recipient(address=ALICE, bps=6_667), Recipient(address=BOB, bps=3_333)),
                territories=encode_territories(["*"]) & ~encode_territories(["MX"]),
            ),
            AssetTerms(asset_id="remix", recipients=(Recipient(address=CAROL, bps=10_000),), parent="song"),
        ),
        cards=(card(),),
        platform=PLATFORM,
        settlement_currency=USDC,
        fx=FxTable(rates=(FxRate.of("fixed", DAY0 - 60, "USD", "USDC", "0.9998"),)),
    )
    fields.update(changes)
    return PayoutInputs(**fields)


def amounts_are_ints(statement: Statement) -> None:
    def walk(value: Any) -> None:
        assert not isinstance(value, float)
        if isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(statement.model_dump())
    assert all(type(v) is int for v in statement.payees.values())
    assert all(type(i.amount) is int for i in statement.line_items)


def total_out(statement: Statement) -> int:
    return sum(statement.payees.values()) + sum(h.amount for h in statement.held_back)


# ----------------------------------------------------------------------------------------------
# Largest remainder
# ----------------------------------------------------------------------------------------------


def brute_force_best(total: int, weights: dict[str, int]) -> list[dict[str, int]]:
    """Every allocation of ``total`` with the least sum of |x - quota| (exact fractions)."""
    keys = sorted(weights)
    weight_sum = sum(weights.values())
    quotas = {k: Fraction(total * weights[k], weight_sum) for k in keys}
    best: list[dict[str, int]] = []
    best_distance: Fraction | None = None
    for combo in itertools.product(range(total + 1), repeat=len(keys)):
        if sum(combo) != total:
            continue
        alloc = dict(zip(keys, combo, strict=True))
        distance = sum((abs(alloc[k] - quotas[k]) for k in keys), Fraction(0))
        if best_distance is None or distance < best_distance:
            best, best_distance = [alloc], distance
        elif distance == best_distance:
            best.append(alloc)
    return best


@settings(max_examples=300, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=9),
    weights=st.lists(st.integers(min_value=0, max_value=7), min_size=1, max_size=4).filter(lambda w: sum(w)),
)
def test_largest_remainder_matches_brute_force(total: int, weights: list[int]) -> None:
    named = {f"k{i}": w for i, w in enumerate(weights)}
    ours = largest_remainder(total, named)
    assert sum(ours.values()) == total
    best = brute_force_best(total, named)
    assert ours in best
    # Among equally good allocations, ties go to the smallest key: the lexicographically largest one.
    keys = sorted(named)
    assert [ours[k] for k in keys] == max([a[k] for k in keys] for a in best)


def test_largest_remainder_ties_and_zero_weights() -> None:
    assert largest_remainder(1, {"b": 1, "a": 1}) == {"a": 1, "b": 0}
    assert largest_remainder(2, {"a": 1, "b": 1, "c": 1}) == {"a": 1, "b": 1, "c": 0}
    assert largest_remainder(5, {"a": 0, "b": 3}) == {"a": 0, "b": 5}
    assert largest_remainder(0, {"a": 0}) == {"a": 0}
    with pytest.raises(SettlementError) as error:
        largest_remainder(1, {"a": 0})
    assert error.value.code == "nothing_to_split"
    with pytest.raises(SettlementError):
        largest_remainder(-1, {"a": 1})


# ----------------------------------------------------------------------------------------------
# Rate cards
# ----------------------------------------------------------------------------------------------


def test_tiered_fee_floors_once_over_the_period() -> None:
    eu = card().delivery["EU"]
    # 1 TB at 0.085 + 0.5 TB at 0.080 $/GB = 85 + 40 = 125 $; 10,000 requests at 0.0075 $.
    assert eu.fee(1_500 * 10**9, 10_000) == 125_000_000 + 7_500
    # 1 byte costs 85,000 / 10**9 micro-dollars: floored to 0, but 3 x 5,000 bytes priced together is 1.
    assert eu.fee(1, 0) == 0
    assert eu.fee(15_000, 0) == 1
    assert sum(eu.fee(5_000, 0) for _ in range(3)) == 0


def test_tiers_and_regions_are_validated() -> None:
    with pytest.raises(ValidationError):
        RegionPrice(tiers=(Tier(price_per_gb=1), Tier(up_to_bytes=5, price_per_gb=1)))
    with pytest.raises(ValidationError):
        RegionPrice(
            tiers=(
                Tier(up_to_bytes=9, price_per_gb=1),
                Tier(up_to_bytes=5, price_per_gb=1),
                Tier(price_per_gb=1),
            )
        )
    with pytest.raises(ValidationError, match="unknown pricing region"):
        card(delivery={"XX": RegionPrice(tiers=(Tier(price_per_gb=1),))})
    with pytest.raises(ValidationError):
        card(platform_fee_bps=10_001)
    with pytest.raises(ValidationError):
        Royalty(mode="per_gb", amount=1.5)  # strict ints: no float prices
    with pytest.raises(ValidationError):
        Currency(code="usd", decimals=2)


def test_card_version_selection_and_overlap_rejection() -> None:
    v1 = card(version=1, valid_from=100, valid_until=200)
    v2 = card(version=2, valid_from=200, valid_until=None)
    other = card(merchant="other", version=1, valid_from=0, valid_until=None)
    cards = [v2, other, v1]
    assert card_at(cards, "shop", 100).version == 1
    assert card_at(cards, "shop", 199).version == 1
    assert card_at(cards, "shop", 200).version == 2
    assert card_at(cards, "shop", 150, 200).version == 1
    assert card_at(cards, "other", 150).merchant == "other"
    with pytest.raises(SettlementError) as missing:
        card_at(cards, "shop", 99)
    assert missing.value.code == "rate_card_missing"
    with pytest.raises(SettlementError) as straddle:
        card_at(cards, "shop", 150, 250)  # a period may not straddle two versions
    assert straddle.value.code == "rate_card_missing"
    with pytest.raises(SettlementError) as overlap:
        check_versions([v1, card(version=2, valid_from=199, valid_until=None)])
    assert overlap.value.code == "rate_card_overlap"
    with pytest.raises(SettlementError) as open_ended:
        card_at([card(version=1, valid_from=0), card(version=2, valid_from=500)], "shop", 600)
    assert open_ended.value.code == "rate_card_overlap"
    with pytest.raises(SettlementError) as repeated:
        check_versions([v1, card(version=1, valid_from=300, valid_until=400)])
    assert repeated.value.code == "rate_card_version"


# ----------------------------------------------------------------------------------------------
# FX
# ----------------------------------------------------------------------------------------------


def test_fx_conversion_rounding_and_snapshot() -> None:
    assert parse_rate("1.0842") == (5421, 5000)
    assert parse_rate("27/25") == (27, 25)
    for bad in ("", "-1", "1e3", "0", "abc", "1.2.3", "0/0"):
        with pytest.raises(SettlementError):
            parse_rate(bad)
    eur2 = Currency(code="EUR", decimals=2)
    table = FxTable(
        rates=(
            FxRate.of("ecb", 1_000, "EUR", "USDC", "1.05"),
            FxRate.of("ecb", 2_000, "EUR", "USDC", "1.0842"),
            FxRate.of("ecb", 3_000, "EUR", "USDC", "2"),
        )
    )
    # 10.00 EUR at 1.0842 = 10.842 USDC = 10,842,000 micro-USDC.
    amount, snap = table.convert(1_000, eur2, USDC, at=2_500)
    assert amount == 10_842_000
    assert snap is not None and (snap.source, snap.timestamp, snap.numerator, snap.denominator) == (
        "ecb",
        2_000,
        5421,
        5000,
    )
    # The inverse pair is used when only the other direction is quoted; the result is floored.
    back, inverse = table.convert(1_000_001, USDC, eur2, at=2_000)
    assert (
        inverse is not None and inverse.inverted and (inverse.numerator, inverse.denominator) == (5000, 5421)
    )
    assert back == 1_000_001 * 5000 * 100 // (5421 * 10**6) == 92
    same, none = FxTable().convert(123_456_789, USD6, Currency(code="USD", decimals=2), at=0)
    assert (same, none) == (12_345, None)  # 123.456789 USD floored to cents
    with pytest.raises(SettlementError) as missing:
        table.convert(1, eur2, USDC, at=999)
    assert missing.value.code == "fx_rate_missing"


# ----------------------------------------------------------------------------------------------
# Payouts: worked example
# ----------------------------------------------------------------------------------------------


def test_worked_example() -> None:
    statement = compute_payouts(example_inputs())
    amounts_are_ints(statement)
    # Delivery (micro-USD): EU 3 GB x 0.085 + 5,000 req x 0.0075/10k = 255,000 + 3,750;
    # NA 0.334333333 GB x 0.085 = 28,418 (floored from 28,418.33...).
    assert statement.delivery_fees == {"EU": 258_750, "NA": 28_418}
    # Royalties: song 4,000 deliveries x 100 (the MX receipt is outside its territories) = 400,000;
    # remix 1.333333333 GB x 20,000 per GB = 26,666 (floored).
    assert statement.royalties == {"remix": 26_666, "song": 400_000}
    assert statement.charge_card_currency == 713_834
    assert statement.charge == 713_834 * 9998 // 10000 == 713_691
    assert statement.fx is not None and (statement.fx.source, statement.fx.numerator) == ("fixed", 4999)
    assert [(v.receipt_key, v.reason) for v in statement.violations] == [("b1:3", "territory")]
    assert statement.held_back == ()
    # Components of the 713,691 micro-USDC charge by largest remainder: EU 258,698, NA 28,412,
    # remix 26,661, song 399,920; then each is split as in docs/settlement.md.
    assert statement.payees == {
        OP_A.lower(): 120_726 + 19_829,
        OP_B.lower(): 60_363 + 59,
        PLATFORM.lower(): 77_609 + 8_524 + 2_666 + 39_992,
        ALICE: 239_964 + 3_199,
        BOB: 119_964 + 1_600,
        CAROL: 19_196,
    }
    lines = {(i.kind, i.source, i.via, i.payee): (i.amount, i.receipt_keys) for i in statement.line_items}
    assert lines["royalty", "remix", ("remix", "song"), ALICE] == (3_199, ("b1:1", "b1:2"))
    assert lines["delivery", "NA", (), OP_B.lower()] == (59, ("b1:3",))
    assert total_out(statement) == statement.charge


def test_disputed_assets_are_held_back_and_lineage_passes_up() -> None:
    inputs = example_inputs()
    song, remix = inputs.assets
    disputed = compute_payouts(example_inputs(assets=(song.model_copy(update={"disputed": True}), remix)))
    assert [(h.asset_id, h.reason, h.via) for h in disputed.held_back] == [
        ("remix", "parent_disputed", ("remix", "song")),
        ("song", "disputed", ("song",)),
    ]
    assert ALICE not in disputed.payees and BOB not in disputed.payees
    assert CAROL in disputed.payees
    assert total_out(disputed) == disputed.charge
    # Three generations: grand-child -> remix -> song; the pass-through compounds up the lineage.
    grand = AssetTerms(asset_id="cover", recipients=(Recipient(address=OP_B, bps=10_000),), parent="remix")
    three = compute_payouts(
        example_inputs(
            assets=(*inputs.assets, grand),
            receipts=(receipt("c:0", "cover", "EU", OP_A, 10_000, 0),),
            cards=(card(platform_fee_bps=0, operator_share_bps=0, derivative_share_bps=5_000),),
            fx=FxTable(rates=(FxRate.of("fixed", 0, "USD", "USDC", "1"),)),
        )
    )
    royalty = {(i.payee, i.via) for i in three.line_items if i.kind == "royalty"}
    assert three.royalties == {"cover": 1_000_000}
    amounts = {i.payee: i.amount for i in three.line_items if i.kind == "royalty"}
    assert amounts == {OP_B.lower(): 500_000, CAROL: 250_000, ALICE: 166_675, BOB: 83_325}
    assert (ALICE, ("cover", "remix", "song")) in royalty


def test_licence_window_and_region_only_receipts() -> None:
    song = AssetTerms(
        asset_id="song",
        recipients=(Recipient(address=ALICE, bps=10_000),),
        territories=encode_territories(["*"]) & ~encode_territories(["CN"]),
        valid_from=DAY0,
        valid_until=DAY0 + 7_200,
    )
    inputs = example_inputs(
        assets=(song,),
        receipts=(
            receipt("in", "song", "EU", OP_A, 1, 10),
            receipt("last", "song", "EU", OP_A, 1, 10, at=DAY0 + 7_200),  # valid_until is licensed
            receipt("late", "song", "EU", OP_A, 1, 10, at=DAY0 + 7_201),
            receipt("ap-region", "song", "AP", OP_A, 1, 10),  # AP includes CN: not provably licensed
            receipt("ap-sg", "song", "AP", OP_A, 1, 10, country="SG"),
            receipt("zz", "song", "ZZ", OP_A, 1, 10),
        ),
        cards=(card(delivery={**card().delivery, "AP": RegionPrice(tiers=(Tier(price_per_gb=1),))}),),
        licence_end="inclusive",
    )
    statement = compute_payouts(inputs)
    assert [(v.receipt_key, v.reason) for v in statement.violations] == [
        ("ap-region", "territory"),
        ("late", "window"),
        ("zz", "territory"),
    ]
    assert statement.royalties == {"song": 300}
    assert b'"licence_end":"inclusive"' in canonical_inputs(inputs)
    # A document before version 4 (no licence_end: exclusive) recomputes as it was computed: valid_until
    # itself was not licensed, and its digest is unchanged by the new field.
    old = inputs.model_copy(update={"licence_end": "exclusive"})
    assert b"licence_end" not in canonical_inputs(old)
    before = compute_payouts(old)
    assert ("last", "window") in [(v.receipt_key, v.reason) for v in before.violations]
    assert before.royalties == {"song": 200}


def test_licence_boundaries_inside_a_period() -> None:
    """Where a licence starts, and the second after it ends, strictly inside the period: where the
    period's receipts of the asset are split (a boundary at or outside the period's ends splits nothing)."""
    end = DAY0 + 86_400

    def terms(valid_from: int, valid_until: int | None) -> AssetTerms:
        return AssetTerms(
            asset_id="a",
            recipients=(Recipient(address=ALICE, bps=10_000),),
            valid_from=valid_from,
            valid_until=valid_until,
        )

    assert licence_boundaries(terms(DAY0 + 5, DAY0 + 9), DAY0, end) == (DAY0 + 5, DAY0 + 10)
    assert licence_boundaries(terms(0, None), DAY0, end) == ()
    assert licence_boundaries(terms(DAY0, end - 1), DAY0, end) == ()  # covers the period exactly
    assert licence_boundaries(terms(DAY0 - 1, end - 2), DAY0, end) == (end - 1,)
    assert licence_boundaries(terms(end, None), DAY0, end) == ()
    for at, expected in [(DAY0 + 4, False), (DAY0 + 5, True), (DAY0 + 9, True), (DAY0 + 10, False)]:
        assert licensed_at(at, DAY0 + 5, DAY0 + 9) is expected
    assert licensed_at(10**12, 0, None)


def test_reconciliation_cases_need_decisions_which_enter_the_statement() -> None:
    with pytest.raises(SettlementError) as open_case:
        compute_payouts(example_inputs(flagged=(("EU", "2026-11-20"),)))
    assert open_case.value.code == "reconciliation_open"
    decision = Decision(
        merchant="shop",
        region="EU",
        day="2026-11-20",
        action="adjust",
        adjustment=-8_750,
        decided_by="merchant:shop",
        decided_at=DAY0 + 90_000,
        reason="CDN bill is lower; accept the bill",
    )
    adjusted = compute_payouts(example_inputs(flagged=(("EU", "2026-11-20"),), decisions=(decision,)))
    assert adjusted.delivery_fees["EU"] == 250_000
    assert adjusted.decisions == (decision,)
    assert total_out(adjusted) == adjusted.charge
    with pytest.raises(ValidationError, match="no adjustment"):
        Decision.model_validate({**decision.model_dump(), "action": "accept"})
    with pytest.raises(SettlementError) as negative:
        compute_payouts(example_inputs(decisions=(decision.model_copy(update={"adjustment": -(10**9)}),)))
    assert negative.value.code == "adjustment_invalid"


def test_bad_payout_inputs_are_domain_errors() -> None:
    inputs = example_inputs()
    first = inputs.receipts[0]
    cases = {
        "receipt_duplicate": dict(receipts=(first, first)),
        "receipt_foreign": dict(receipts=(first.model_copy(update={"merchant": "other"}),)),
        "asset_unknown": dict(receipts=(first.model_copy(update={"asset_id": "nope"}),)),
        "region_not_priced": dict(receipts=(first.model_copy(update={"region": "JP"}),)),
        "fx_rate_missing": dict(fx=FxTable()),
        "rate_card_missing": dict(cards=(card(valid_from=DAY0 + 1),)),
        "lineage_cycle": dict(
            assets=(inputs.assets[0].model_copy(update={"parent": "remix"}), inputs.assets[1]),
        ),
    }
    with pytest.raises(ValidationError):
        Receipt.model_validate({**first.model_dump(), "bytes": 2**63})
    with pytest.raises(ValidationError, match="not in region"):
        Receipt.model_validate({**first.model_dump(), "country": "JP"})
    for code, change in cases.items():
        with pytest.raises(SettlementError) as error:
            compute_payouts(example_inputs(**change))
        assert error.value.code == code, code


# ----------------------------------------------------------------------------------------------
# Payouts: properties
# ----------------------------------------------------------------------------------------------

ADDRESSES = [f"0x{n:040x}" for n in range(1, 7)]
ASSET_IDS = ["a0", "a1", "a2", "a3"]
REGIONS = ["EU", "NA", "JP", "ZZ"]


@st.composite
def payout_inputs(draw: st.DrawFn) -> PayoutInputs:
    assets: list[AssetTerms] = []
    for index, asset_id in enumerate(ASSET_IDS):
        count = draw(st.integers(min_value=1, max_value=3))
        cuts = sorted(
            draw(st.lists(st.integers(1, 9_999), min_size=count - 1, max_size=count - 1, unique=True))
        )
        shares = [b - a for a, b in zip([0, *cuts], [*cuts, 10_000], strict=True)]
        recipients = tuple(Recipient(address=draw(st.sampled_from(ADDRESSES)), bps=bps) for bps in shares)
        parent = draw(st.sampled_from([None, *ASSET_IDS[:index]]))
        territories = draw(st.sampled_from([encode_territories(["*"]), encode_territories(["JP", "US"]), 0]))
        assets.append(
            AssetTerms(
                asset_id=asset_id,
                recipients=recipients,
                parent=parent,
                territories=territories,
                valid_until=draw(st.sampled_from([None, DAY0 + 40_000])),
                disputed=draw(st.booleans()),
            )
        )
    receipts = tuple(
        receipt(
            f"r{i}",
            draw(st.sampled_from(ASSET_IDS)),
            draw(st.sampled_from(REGIONS)),
            draw(st.sampled_from(ADDRESSES)),
            draw(st.integers(0, 10**6)),
            draw(st.integers(0, 10**13)),
            at=DAY0 + draw(st.integers(0, 86_399)),
        )
        for i in range(draw(st.integers(0, 12)))
    )
    price = st.integers(0, 200_000)
    rate_card = card(
        delivery={
            region: RegionPrice(
                tiers=(Tier(up_to_bytes=10**12, price_per_gb=draw(price)), Tier(price_per_gb=draw(price))),
                price_per_10k_requests=draw(st.integers(0, 10_000)),
            )
            for region in REGIONS
        },
        default_royalty=Royalty(mode=draw(st.sampled_from(["per_delivery", "per_gb"])), amount=draw(price)),
        platform_fee_bps=draw(st.integers(0, 10_000)),
        operator_share_bps=draw(st.integers(0, 10_000)),
        derivative_share_bps=draw(st.integers(0, 10_000)),
    )
    rate = f"{draw(st.integers(1, 3))}.{draw(st.integers(0, 9999)):04d}"
    return example_inputs(
        receipts=receipts,
        assets=tuple(assets),
        cards=(rate_card,),
        fx=FxTable(rates=(FxRate.of("table", DAY0, "USD", "USDC", rate),)),
    )


@settings(max_examples=150, deadline=None)
@given(inputs=payout_inputs(), seed=st.integers(0, 2**32))
def test_payouts_sum_exactly_and_ignore_input_order(inputs: PayoutInputs, seed: int) -> None:
    statement = compute_payouts(inputs)
    amounts_are_ints(statement)
    assert total_out(statement) == statement.charge
    assert sum(i.amount for i in statement.line_items) == sum(statement.payees.values())
    assert all(amount > 0 for amount in statement.payees.values())
    shuffler = random.Random(seed)
    receipts, assets = list(inputs.receipts), list(inputs.assets)
    shuffler.shuffle(receipts)
    shuffler.shuffle(assets)
    again = compute_payouts(inputs.model_copy(update={"receipts": tuple(receipts), "assets": tuple(assets)}))
    assert again.model_dump() == statement.model_dump()
    assert compute_payouts(inputs).model_dump_json() == statement.model_dump_json()


@settings(max_examples=100, deadline=None)
@given(inputs=payout_inputs(), data=st.data())
def test_splitting_a_receipt_changes_no_amount(inputs: PayoutInputs, data: st.DataObject) -> None:
    """Fees are floored once per region and asset, so cutting deliveries into more receipts is neutral."""
    if not inputs.receipts:
        return
    statement = compute_payouts(inputs)
    index = data.draw(st.integers(0, len(inputs.receipts) - 1))
    whole = inputs.receipts[index]
    part_bytes = data.draw(st.integers(0, whole.bytes))
    part_requests = data.draw(st.integers(0, whole.requests))
    halves = (
        whole.model_copy(update={"key": whole.key + "a", "bytes": part_bytes, "requests": part_requests}),
        whole.model_copy(
            update={
                "key": whole.key + "b",
                "bytes": whole.bytes - part_bytes,
                "requests": whole.requests - part_requests,
            }
        ),
    )
    receipts = (*inputs.receipts[:index], *halves, *inputs.receipts[index + 1 :])
    split = compute_payouts(inputs.model_copy(update={"receipts": receipts}))
    assert (split.charge, split.payees, split.delivery_fees, split.royalties) == (
        statement.charge,
        statement.payees,
        statement.delivery_fees,
        statement.royalties,
    )
    assert sum(h.amount for h in split.held_back) == sum(h.amount for h in statement.held_back)


@settings(max_examples=100, deadline=None)
@given(inputs=payout_inputs(), data=st.data())
def test_corrections_continue_the_volume_tiers_of_their_period(
    inputs: PayoutInputs, data: st.DataObject
) -> None:
    """A period's receipts cut into the period and corrections of its late records, each priced against
    what came before it (``prior_usage``: usage and fees charged): the delivery fees add up to the whole
    period's, region by region, never to the first tier's price again."""
    whole = compute_payouts(inputs)
    count = len(inputs.receipts)
    cuts = data.draw(st.lists(st.integers(0, 3), min_size=count, max_size=count))
    prior: dict[str, list[int]] = {}
    for part in range(4):
        receipts = tuple(r for r, cut in zip(inputs.receipts, cuts, strict=True) if cut == part)
        if not receipts:
            continue
        usage = tuple(
            PriorUsage(region=g, bytes=b, requests=q, fee=f) for g, (b, q, f) in sorted(prior.items())
        )
        step = compute_payouts(inputs.model_copy(update={"receipts": receipts, "prior_usage": usage}))
        for r in receipts:
            counts = prior.setdefault(r.region, [0, 0, 0])
            counts[0] += r.bytes
            counts[1] += r.requests
        for region, fee in step.delivery_fees.items():
            prior[region][2] += fee
    fees = {region: f for region, (_, _, f) in prior.items() if f}
    assert fees == {r: f for r, f in whole.delivery_fees.items() if f}


def test_a_correction_is_priced_at_the_periods_marginal_tier() -> None:
    """100 GB at 0.10 then 0.05 per GB past 100 GB: 10 late GB after the period's 100 GB cost 0.50, not
    the first tier's 1.00; the prior usage is validated and kept out of the digest while empty."""
    price = RegionPrice(
        tiers=(Tier(up_to_bytes=100 * 10**9, price_per_gb=100_000), Tier(price_per_gb=50_000))
    )
    inputs = example_inputs(
        receipts=(receipt("late", "song", "EU", OP_A, 10, 10 * 10**9),),
        cards=(card(delivery={"EU": price}),),
    )
    inputs = inputs.model_copy(
        update={"fx": FxTable(rates=(FxRate.of("par", DAY0 - 60, "USD", "USDC", "1"),))}
    )
    alone = compute_payouts(inputs)
    on_top = compute_payouts(
        inputs.model_copy(
            update={"prior_usage": (PriorUsage(region="EU", bytes=100 * 10**9, requests=0, fee=10_000_000),)}
        )
    )
    assert alone.delivery_fees == {"EU": 1_000_000} and on_top.delivery_fees == {"EU": 500_000}

    def charged(fee: int) -> dict[str, int]:
        prior = (PriorUsage(region="EU", bytes=100 * 10**9, requests=0, fee=fee),)
        return compute_payouts(inputs.model_copy(update={"prior_usage": prior})).delivery_fees

    # What the others charged is what counts: 110 GB cost 10.5 in all, 9.0 were charged (a sibling priced
    # on usage since cancelled), so this one charges 1.5; never below 0 if they charged more.
    assert charged(9_000_000) == {"EU": 1_500_000} and charged(11_000_000) == {"EU": 0}
    assert inputs_digest(inputs) == inputs_digest(PayoutInputs.model_validate(inputs.model_dump()))
    assert b"prior_usage" not in canonical_inputs(inputs)
    with pytest.raises(ValidationError):
        PriorUsage(region="XX", bytes=1, requests=0, fee=0)
    with pytest.raises(ValidationError):
        inputs.model_validate(
            {
                **inputs.model_dump(),
                "prior_usage": [{"region": "EU", "bytes": 1, "requests": 0, "fee": 0}] * 2,
            }
        )


def test_statement_survives_a_json_round_trip() -> None:
    statement = compute_payouts(example_inputs())
    assert Statement.model_validate_json(statement.model_dump_json()) == statement


# ----------------------------------------------------------------------------------------------
# Receipts in bulk (Receipt.from_rows) and the order of receipt errors
# ----------------------------------------------------------------------------------------------


def row_of(receipt_: Receipt) -> tuple[Any, ...]:
    return tuple(getattr(receipt_, name) for name in RECEIPT_ROW)


def test_receipts_from_rows_equal_validated_receipts() -> None:
    assert tuple(Receipt.model_fields) == RECEIPT_ROW
    receipts = example_inputs().receipts
    # Fresh copies of the repeated strings, as a database cursor returns them.
    rows = [tuple("".join(list(v)) if isinstance(v, str) else v for v in row_of(r)) for r in receipts]
    built = Receipt.from_rows(iter(rows))
    assert built == list(receipts)
    assert [r.model_dump() for r in built] == [r.model_dump() for r in receipts]
    assert [hash(r) for r in built] == [hash(r) for r in receipts]
    assert [r.model_dump_json() for r in built] == [r.model_dump_json() for r in receipts]
    assert built[0].merchant is built[1].merchant and built[0].region is built[1].region  # shared
    assert all(type(r) is Receipt for r in built)
    # Frozen like any receipt; a copy with changes leaves the others (and their fields set) alone.
    with pytest.raises(ValidationError):
        built[0].requests = 1  # type: ignore[misc]
    changed = built[0].model_copy(update={"requests": 1})
    assert changed.requests == 1 and built[0].requests == 4_000
    assert built[1].model_fields_set == set(RECEIPT_ROW)
    assert compute_payouts(example_inputs(receipts=tuple(built))) == compute_payouts(example_inputs())
    assert Receipt.from_rows([]) == []


def test_receipts_from_rows_reject_what_the_model_rejects() -> None:
    good = row_of(example_inputs().receipts[0])
    bad = {
        "bytes": 2**63,
        "requests": -1,
        "period": True,  # strict: a bool is not an int
        "at": 1.5,
        "key": "",
        "operator": "",
        "region": "XX",
        "country": "JP",  # not in the receipt's region (EU)
        "asset_id": 7,
    }
    for name, value in bad.items():
        row = list(good)
        row[RECEIPT_ROW.index(name)] = value
        with pytest.raises(ValidationError) as fast:
            Receipt.from_rows([tuple(row)])
        with pytest.raises(ValidationError) as model:
            Receipt(**dict(zip(RECEIPT_ROW, row, strict=True)))
        assert fast.value.errors(include_context=False) == model.value.errors(include_context=False), name
    with pytest.raises(ValueError, match="unpack"):
        Receipt.from_rows([good[:-1]])

    class Key(str):
        pass

    # Values the plain-Python checks do not vouch for go through the model's validation.
    odd = Receipt.from_rows([(Key("b1:0"), *good[1:4], "de", *good[5:])])
    assert odd == [Receipt(**dict(zip(RECEIPT_ROW, (Key("b1:0"), *good[1:4], "de", *good[5:]), strict=True)))]


def test_receipt_errors_follow_input_order() -> None:
    """With several bad receipts, the first in input order decides the error, as one loop would."""
    first, second = example_inputs().receipts[:2]
    foreign = second.model_copy(update={"merchant": "other"})
    unknown = second.model_copy(update={"asset_id": "nope"})
    orders = {
        (foreign, first, first): "receipt_foreign",
        (first, first, foreign): "receipt_duplicate",
        (unknown, first, first): "asset_unknown",
        (first, unknown, foreign): "asset_unknown",
    }
    for receipts, code in orders.items():
        with pytest.raises(SettlementError) as error:
            compute_payouts(example_inputs(receipts=receipts))
        assert error.value.code == code
    # Receipts are checked before reconciliation cases and the rate card, as before.
    with pytest.raises(SettlementError) as error:
        compute_payouts(example_inputs(receipts=(first, first), cards=(card(valid_from=DAY0 + 1),)))
    assert error.value.code == "receipt_duplicate"


@settings(max_examples=100, deadline=None)
@given(inputs=payout_inputs())
def test_statements_from_bulk_receipts_are_identical(inputs: PayoutInputs) -> None:
    bulk = inputs.model_copy(
        update={"receipts": tuple(Receipt.from_rows(row_of(r) for r in inputs.receipts))}
    )
    statement = compute_payouts(inputs)
    assert compute_payouts(bulk).model_dump_json() == statement.model_dump_json()
    assert Statement.model_validate_json(statement.model_dump_json()) == statement
