"""The bids of the server signer (chain/fees.py): a replacement always beats what it replaces by the
margin nodes require, never bids above the ceiling, and is never below the market; the reasons a stuck
transaction waits (chain/stuck_tx.py) and the replacement delay's names; pure."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgeledger.chain import stuck_tx
from edgeledger.chain.fees import NODE_PRICE_BUMP_PCT, Fees, capped, replacement
from edgeledger.config import Settings

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


def test_the_replacement_delay_is_read_under_its_earlier_name_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """POST_REPLACE_AFTER_SECONDS, the setting's earlier name, still counts; TX_REPLACE_AFTER_SECONDS
    wins when both are set."""
    monkeypatch.delenv("TX_REPLACE_AFTER_SECONDS", raising=False)
    monkeypatch.setenv("POST_REPLACE_AFTER_SECONDS", "7")
    assert Settings.from_env(env_file=None).tx_replace_after_seconds == 7
    monkeypatch.setenv("TX_REPLACE_AFTER_SECONDS", "9")
    assert Settings.from_env(env_file=None).tx_replace_after_seconds == 9


def test_every_waiting_reason_says_what_waits_and_why() -> None:
    """The reasons the rows and reports carry, and the text that explains them (pure)."""
    assert stuck_tx.reason("anchor", stuck_tx.FEE_CAPPED) == "anchor_fee_capped"
    assert stuck_tx.refusal("post", "chain_replacement_underpriced") == "post_replacement_refused"
    assert stuck_tx.refusal("anchor", "chain_insufficient_funds") == "signer_insufficient_funds"
    assert stuck_tx.refusal("anchor", None) == "anchor_refused"
    assert "the anchor waits behind" in stuck_tx.NotSent("anchor_queued_behind:12").detail
    assert "nonce 12" in stuck_tx.NotSent("anchor_queued_behind:12").detail
    assert "fund it" in stuck_tx.NotSent("signer_insufficient_funds").detail
    assert stuck_tx.NotSent("post_refused", "node said no").detail == "node said no"
