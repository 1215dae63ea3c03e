"""One post in flight per merchant, end to end on a real chain and database (settlement/posting.py;
docs/settlement.md, "One post in flight per merchant").

The vault's checks count only what is mined: a merchant's second post sent while its first is still in
the mempool passes the worker's checks and is then refused by the vault, gas spent for nothing. The
worker instead leaves the second as it is (reported ``waiting``, ``merchant_post_in_flight``), and posts
it once the first is mined; a worker that does not get the merchant's lock leaves it too (``busy``).

Anvil's automine is switched off to hold a post in the mempool, and a client with a short receipt
timeout plays the worker whose wait for that post runs out (the run stops, retryable, as on a slow
chain). The money world and its helpers: tests/backend/support/money.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.settlement import flows
from edgeledger.settlement.models import Settlement, SettlementState
from edgeledger.settlement.posting import MERCHANT_POST_IN_FLIGHT, merchant_lock
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
    assert report.retryable  # its receipt did not come within the timeout: the run stopped there
    first = money.settlement("a")
    assert first is not None and first.state == SettlementState.posting and first.tx_hash is not None
    assert _sent(money) == before + 1 and _mined(money) == before
    return impatient, first, before


def _waits(money: Money, impatient: ChainClient, first: Settlement, before: int) -> Settlement:
    """The next run, with the first post still in the mempool: the first is waited for, and the second
    period is computed and left to wait, not blocked, with nothing sent."""
    report = flows.run_once(money.session, impatient, money.settings, NEXT)
    second = money.settlement("a", SECOND)
    assert second is not None
    assert _sent(money) == before + 1, report.as_dict()  # one post in the mempool: the first's
    assert second.state == SettlementState.computed and second.error_code is None
    assert second.tx_hash is None and second.send_attempts == 0
    money.session.refresh(first)
    assert first.state == SettlementState.posting
    assert report.waiting == {second.id: f"{MERCHANT_POST_IN_FLIGHT}:{first.id}"}, report.as_dict()
    assert not report.retryable and second.id not in report.blocked and second.id in report.computed
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
