"""The bids of the server signer (chain/fees.py): a replacement always beats what it replaces by the
margin nodes require, never bids above the ceiling, and is never below the market; pure arithmetic."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from edgeledger.chain.fees import NODE_PRICE_BUMP_PCT, Fees, capped, replacement

GWEI = 10**9
wei = st.integers(min_value=0, max_value=10_000 * GWEI)


def test_a_replacement_bids_a_quarter_more_than_the_pending_one_or_the_market_if_higher() -> None:
    pending = Fees(40 * GWEI, 2 * GWEI)
    assert replacement(pending, Fees(10 * GWEI, GWEI), 500 * GWEI) == Fees(50 * GWEI, 2_500_000_000)
    assert replacement(pending, Fees(90 * GWEI, 3 * GWEI), 500 * GWEI) == Fees(90 * GWEI, 3 * GWEI)
    assert replacement(None, Fees(90 * GWEI, 3 * GWEI), 60 * GWEI) == Fees(60 * GWEI, 3 * GWEI)
    assert replacement(pending, Fees(10 * GWEI, GWEI), 45 * GWEI) == Fees(45 * GWEI, 2_500_000_000)
    assert replacement(pending, Fees(10 * GWEI, GWEI), 44 * GWEI - 1) is None  # under 10 % more: no bid
    assert Fees(0, 0).bumped() == Fees(1, 1)  # at least one wei more


@given(wei, wei, wei, wei, st.integers(min_value=1, max_value=10_000 * GWEI))
def test_every_replacement_fits_the_cap_and_would_be_taken(
    pending_cap: int, pending_tip: int, market_base: int, market_tip: int, ceiling: int
) -> None:
    pending = Fees(max(pending_cap, pending_tip), pending_tip)
    market = Fees.market(market_base, market_tip)
    bid = replacement(pending, market, ceiling)
    if bid is None:  # only when the ceiling leaves no bid a node takes
        assert not capped(pending.bumped(NODE_PRICE_BUMP_PCT), ceiling).replaces(pending, NODE_PRICE_BUMP_PCT)
        return
    assert bid.max_fee_per_gas <= ceiling and bid.max_priority_fee_per_gas <= bid.max_fee_per_gas
    assert bid.replaces(pending, NODE_PRICE_BUMP_PCT)
    assert bid.max_fee_per_gas == min(ceiling, max(pending.bumped().max_fee_per_gas, market.max_fee_per_gas))
