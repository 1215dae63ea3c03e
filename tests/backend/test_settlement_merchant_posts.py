"""One post in flight per merchant, and a post stuck in the mempool, end to end on a real chain and
database (settlement/posting.py; docs/settlement.md, "One post in flight per merchant" and "A post stuck
in the mempool").

The vault's checks count only what is mined: a merchant's second post sent while its first is still in
the mempool passes the worker's checks and is then refused by the vault, gas spent for nothing. The
worker instead leaves the second as it is (reported ``waiting``, ``merchant_post_in_flight``), and posts
it once the first is mined; a worker that does not get the merchant's lock leaves it too (``busy``).

Anvil's automine is switched off to hold a post in the mempool, and a client with a short receipt
timeout plays the worker whose wait for that post runs out (the post waits, ``post_in_mempool``, and the
run goes on, as on a slow chain). The money world and its helpers: tests/backend/support/money.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from eth_account import Account
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.chain.fees import Fees
from edgeledger.config import Settings
from edgeledger.settlement import flows
from edgeledger.settlement.models import Settlement, SettlementState
from edgeledger.settlement.post_tx import (
    POST_FEE_CAPPED,
    POST_IN_MEMPOOL,
    POST_NONCE_TAKEN,
    POST_QUEUED_BEHIND,
)
from edgeledger.settlement.posting import MERCHANT_POST_IN_FLIGHT, merchant_lock, post_call
from tests.backend.support.deliveries import close_and_anchor
from tests.backend.support.money import DELIVERY_FEE, NEXT, NOW, ROYALTY, Money
from tests.backend.support.stack import rpc
from tests.backend.test_settlement_bounds import _clear_of_the_span_end
from tests.backend.test_settlement_flow import DAY, DAY0

pytestmark = pytest.mark.integration

SECOND = DAY0 + DAY  # the shop's second period, due at NEXT with the first


def _sent(money: Money) -> int:
    """Transactions the server's signer has sent, mined or not."""
    return int(money.chain.w3.eth.get_transaction_count(money.chain.signer_address, "pending"))


def _mined(money: Money) -> int:
    return int(money.chain.w3.eth.get_transaction_count(money.chain.signer_address, "latest"))


def _posts_of(money: Money, shop: str) -> int:
    """SettlementPosted events of the shop on the chain."""
    vault = money.chain.contract(flows.VAULT)
    merchant = money.shops[shop].key.address
    return len(
        vault.events.SettlementPosted().get_logs(from_block=0, argument_filters={"merchant": merchant})
    )


@contextmanager
def _mempool(money: Money) -> Iterator[None]:
    """Transactions wait in the mempool until the block ends; then the chain mines them."""
    rpc(money.settings.eth_rpc_url, "evm_setAutomine", False)
    try:
        yield
    finally:
        rpc(money.settings.eth_rpc_url, "evm_setAutomine", True)  # never leave the shared chain paused
        money.mine()


def _deliver_two(money: Money) -> None:
    """Two periods of shop ``a``, both due at NEXT (anchored now: automine still on)."""
    money.deliver("a")
    money.deliver("a", period=SECOND)


def _first_in_flight(money: Money) -> tuple[ChainClient, Settlement, int]:
    """With automine off, the first run sends the first period's post and gives up waiting for it: it
    stays ``posting`` with its transaction in the mempool. Returns the impatient client, the first period
    and the signer's sent count before its post."""
    before = _sent(money)
    impatient = ChainClient.from_settings(money.settings.model_copy(update={"tx_timeout_seconds": 1}))
    report = flows.run_once(money.session, impatient, money.settings, NEXT)
    first = money.settlement("a")
    assert first is not None and first.state == SettlementState.posting and first.tx_hash is not None
    # its receipt did not come within the timeout: it waits, named on the row, and the run went on
    assert report.waiting[first.id] == POST_IN_MEMPOOL and not report.retryable, report.as_dict()
    assert first.error_code == POST_IN_MEMPOOL
    assert _sent(money) == before + 1 and _mined(money) == before
    return impatient, first, before


def _waits(money: Money, impatient: ChainClient, first: Settlement, before: int) -> Settlement:
    """The next run, with the first post still in the mempool: the first is waited for, and the second
    period (computed by the first run, which went on) is left to wait, not blocked, with nothing sent."""
    report = flows.run_once(money.session, impatient, money.settings, NEXT)
    second = money.settlement("a", SECOND)
    assert second is not None
    assert _sent(money) == before + 1, report.as_dict()  # one post in the mempool: the first's
    assert second.state == SettlementState.computed and second.error_code is None
    assert second.tx_hash is None and second.send_attempts == 0
    money.session.refresh(first)
    assert first.state == SettlementState.posting
    assert report.waiting == {second.id: f"{MERCHANT_POST_IN_FLIGHT}:{first.id}"}, report.as_dict()
    assert not report.retryable and second.id not in report.blocked  # computed by the first run
    return second


def test_a_merchants_second_post_waits_while_its_first_is_in_flight(money: Money) -> None:
    """Two periods of one merchant: while the first's post is unmined the second waits, reported
    ``waiting`` (merchant_post_in_flight), neither blocked nor sent; once the first is mined the next run
    follows it and posts the second. Two posts sent in all, none refused."""
    _deliver_two(money)
    with _mempool(money):
        impatient, first, before = _first_in_flight(money)
        second = _waits(money, impatient, first, before)
    report = money.run(NEXT)
    assert report.posted == [first.id, second.id] and not report.waiting, report.as_dict()
    assert money.posted("a").id == first.id and money.posted("a", SECOND).id == second.id
    assert _posts_of(money, "a") == 2 and _sent(money) == _mined(money) == before + 2


def test_the_vault_check_after_the_first_post_is_mined_blocks_with_the_caps_reason(money: Money) -> None:
    """A rate cap with room for one period's charge, not two: the second period waits while the first's
    post is in flight (sent then, the vault would have refused it, the gas spent), and once that post is
    mined the worker's own check sees the span's sum and blocks it with the cap's reason, sending nothing."""
    full = DELIVERY_FEE + ROYALTY
    shop = money.shops["a"]
    vault = money.chain.contract(flows.VAULT)
    token = money.chain.deployment.address_of("TestStablecoin")
    _clear_of_the_span_end(money)
    money.as_wallet(shop.key, vault.functions.setRateCap(token, full + full // 2))
    _deliver_two(money)
    with _mempool(money):
        impatient, first, before = _first_in_flight(money)
        second = _waits(money, impatient, first, before)
    report = money.run(NEXT)
    assert report.posted == [first.id] and report.blocked == {second.id: "rate_cap_exceeded"}
    second = money.settlement("a", SECOND)
    assert second is not None and second.error_code == "rate_cap_exceeded" and second.tx_hash is None
    assert _posts_of(money, "a") == 1 and _sent(money) == _mined(money) == before + 1


def test_a_held_merchant_lock_leaves_its_settlement_to_a_later_run(money: Money) -> None:
    """Another worker holds shop ``a``'s posting lock: a run computes a's period and leaves it, reported
    ``busy``, unsent and not blocked, while shop ``b``'s period posts; the next run posts a's."""
    batches = money.deliver("a", anchor=False) + money.deliver("b", anchor=False)  # one batch
    close_and_anchor(money.session, money.settings, money.chain, list(set(batches)), money.node)
    before = _sent(money)
    with merchant_lock(money.session, money.settings, money.shops["a"].user.id) as locked:
        assert locked
        with Session(money.app.app.state.engine) as other:  # type: ignore[attr-defined]
            report = flows.run_once(other, money.chain, money.settings, NOW)
        row = money.settlement("a")
        assert row is not None and report.busy == [row.id] and row.id in report.computed, report.as_dict()
        assert row.state == SettlementState.computed and row.tx_hash is None and row.send_attempts == 0
        assert money.posted("b").id in report.posted and _posts_of(money, "a") == 0
    report = money.run(NOW)
    assert row.id in report.posted and not report.busy
    assert money.posted("a").id == row.id and _posts_of(money, "a") == 1
    assert _sent(money) == before + 2  # b's post and a's


# ----------------------------------------------------------------------------------------------
# A post stuck in the mempool (settlement/posting.py, chain/fees.py)
# ----------------------------------------------------------------------------------------------


def _worker(money: Money, **update: object) -> tuple[ChainClient, Settings]:
    """A worker whose receipt wait runs out at once, with its own replacement settings."""
    settings = money.settings.model_copy(update={"tx_timeout_seconds": 1, **update})
    return ChainClient.from_settings(settings), settings


def _stuck_post(money: Money) -> tuple[Settlement, int, str, Fees]:
    """Shop ``a``'s period (delivered before automine went off), its post held in the mempool bidding
    under today's market (sent under a ceiling just above the base fee: what a fee spike since makes of
    any bid): the row, the signer's sent count before it, the post's hash and its bid."""
    before = _sent(money)
    client, low = _worker(money, tx_max_fee_per_gas_wei=money.chain.base_fee() + 1)
    report = flows.run_once(money.session, client, low, NEXT)
    first = money.settlement("a")
    assert first is not None and first.state == SettlementState.posting and first.tx_hash is not None
    assert report.waiting[first.id] == POST_IN_MEMPOOL and not report.retryable, report.as_dict()
    pending = money.chain.pending_tx(first.tx_hash)
    assert pending is not None and first.tx_nonce == pending.nonce == before and first.tx_sent_at is not None
    assert pending.fees.max_fee_per_gas < money.chain.market_fees().max_fee_per_gas
    assert _sent(money) == before + 1 and _mined(money) == before
    return first, before, first.tx_hash, pending.fees


def test_a_post_stuck_in_the_mempool_is_sent_again_at_its_nonce_bidding_more(money: Money) -> None:
    """Once it has waited POST_REPLACE_AFTER_SECONDS, the post is sent again at its own nonce bidding
    25 % more: the one it replaced leaves the mempool, the signer's nonce count does not move, and
    before that time nothing is sent. Mined, the replacement is the one post on chain."""
    money.deliver("a")
    with _mempool(money):
        row, before, first_hash, first_bid = _stuck_post(money)
        client, not_yet = _worker(money)  # the default: five minutes
        report = flows.run_once(money.session, client, not_yet, NEXT)
        assert not report.replaced and not report.waiting and not report.retryable, report.as_dict()
        assert money.chain.pending_tx(first_hash) is not None
        client, due = _worker(money, tx_replace_after_seconds=0)
        report = flows.run_once(money.session, client, due, NEXT)
        assert report.replaced == [row.id] and not report.retryable, report.as_dict()
        money.session.refresh(row)
        assert row.state == SettlementState.posting and row.tx_nonce == before
        assert row.tx_hash is not None and row.tx_hash != first_hash
        assert money.chain.pending_tx(first_hash) is None  # replaced: gone from the mempool
        replacement = money.chain.pending_tx(row.tx_hash)
        assert replacement is not None and replacement.nonce == before
        assert replacement.fees.max_fee_per_gas >= first_bid.max_fee_per_gas * 125 // 100
        assert replacement.fees.max_priority_fee_per_gas >= first_bid.max_priority_fee_per_gas * 125 // 100
        assert row.tx_prev_hash == first_hash
        assert _sent(money) == before + 1 and _mined(money) == before  # one nonce, still unmined
    report = money.run(NEXT)
    assert report.posted == [row.id] and not report.replaced, report.as_dict()
    assert money.chain.receipt_if_mined(row.tx_hash) is not None
    assert money.chain.receipt_if_mined(first_hash) is None
    assert _posts_of(money, "a") == 1 and _sent(money) == _mined(money) == before + 1


def test_a_replacement_never_bids_above_the_signers_ceiling(money: Money) -> None:
    """TX_MAX_FEE_PER_GAS_WEI at the stuck post's own fee cap: no bid a node would take in its place
    fits under it, so nothing is sent and the run says why (``post_fee_capped``); mined, it posts once."""
    money.deliver("a")
    with _mempool(money):
        row, before, first_hash, first_bid = _stuck_post(money)
        client, capped = _worker(
            money, tx_replace_after_seconds=0, tx_max_fee_per_gas_wei=first_bid.max_fee_per_gas
        )
        report = flows.run_once(money.session, client, capped, NEXT)
        assert report.waiting == {row.id: POST_FEE_CAPPED} and not report.replaced, report.as_dict()
        money.session.refresh(row)
        assert row.tx_hash == first_hash and money.chain.pending_tx(first_hash) is not None
        assert _sent(money) == before + 1
    report = money.run(NEXT)
    assert report.posted == [row.id], report.as_dict()
    assert _posts_of(money, "a") == 1 and _sent(money) == _mined(money) == before + 1


def test_a_replacement_the_row_does_not_name_holds_back_any_new_send(money: Money) -> None:
    """A worker that died between sending a replacement and recording it leaves a transaction at the
    post's nonce the row does not name, and the row's own hash is gone from the mempool. No new
    transaction is sent while that nonce waits (``post_nonce_taken``); once it is mined, the vault
    holds the root and the row adopts it: one post."""
    money.deliver("a")
    with _mempool(money):
        row, before, first_hash, first_bid = _stuck_post(money)
        unrecorded = money.chain.send(
            post_call(money.chain, row, None), nonce=before, fees=first_bid.bumped()
        )  # what the dying worker sent
        assert money.chain.pending_tx(first_hash) is None and money.chain.pending_tx(unrecorded) is not None
        client, settings = _worker(money)
        report = flows.run_once(money.session, client, settings, NEXT)
        assert report.waiting == {row.id: POST_NONCE_TAKEN} and not report.retryable, report.as_dict()
        money.session.refresh(row)
        assert row.state == SettlementState.posting and row.tx_hash == first_hash
        assert _sent(money) == before + 1
    report = money.run(NEXT)
    assert report.posted == [row.id], report.as_dict()
    assert money.chain.receipt_if_mined(unrecorded) is not None
    assert _posts_of(money, "a") == 1 and _sent(money) == _mined(money) == before + 1


def test_a_post_the_node_dropped_is_sent_again_at_the_markets_price(money: Money) -> None:
    """The base fee rises far above the post's fee cap and the node drops the post from its mempool:
    nothing holds its nonce any more, so the next run sends it again (at that nonce, the signer's next)
    bidding what the market asks now, and it is mined: one post."""
    money.deliver("a")
    try:
        with _mempool(money):
            row, before, first_hash, first_bid = _stuck_post(money)
            rpc(
                money.settings.eth_rpc_url,
                "anvil_setNextBlockBaseFeePerGas",
                hex(first_bid.max_fee_per_gas * 4),
            )
            money.mine()
            assert money.chain.pending_tx(first_hash) is None and _sent(money) == before  # dropped
        report = money.run(NEXT)
        assert report.posted == [row.id] and not report.waiting, report.as_dict()
        money.session.refresh(row)
        assert row.tx_nonce == before and row.tx_hash != first_hash
        assert _posts_of(money, "a") == 1 and _sent(money) == _mined(money) == before + 1
    finally:  # the shared chain back to a cheap base fee
        rpc(money.settings.eth_rpc_url, "anvil_setNextBlockBaseFeePerGas", hex(10**9))
        money.mine()


def test_a_post_queued_behind_another_transaction_of_the_signer_is_not_bid_up(money: Money) -> None:
    """Another flow's transaction of the signer waits at the head of the queue: the post behind it
    gains nothing from a higher bid, so however long it waits it is left as it is, the run naming the
    nonce it waits behind (``post_queued_behind:<nonce>``); both are mined together, one post."""
    money.deliver("a")
    signer = Account.from_key(money.settings.signer_private_key.get_secret_value())  # type: ignore[union-attr]
    with _mempool(money):
        head = _sent(money)
        market = money.chain.market_fees()
        other = signer.sign_transaction(
            {
                "to": signer.address,
                "value": 0,
                "gas": 21_000,
                "nonce": head,
                "chainId": money.chain.chain_id,
                "maxFeePerGas": market.max_fee_per_gas,
                "maxPriorityFeePerGas": market.max_priority_fee_per_gas,
            }
        )
        money.chain.send_raw_transaction(other.raw_transaction)
        client, settings = _worker(money)
        flows.run_once(money.session, client, settings, NEXT)
        row = money.settlement("a")
        assert row is not None and row.state == SettlementState.posting and row.tx_nonce == head + 1
        posted_as = row.tx_hash
        client, due = _worker(money, tx_replace_after_seconds=0)
        report = flows.run_once(money.session, client, due, NEXT)
        assert report.waiting == {row.id: f"{POST_QUEUED_BEHIND}:{head}"} and not report.replaced
        money.session.refresh(row)
        assert row.tx_hash == posted_as and _sent(money) == head + 2
    report = money.run(NEXT)
    assert report.posted == [row.id], report.as_dict()
    assert _posts_of(money, "a") == 1 and _sent(money) == _mined(money) == head + 2
