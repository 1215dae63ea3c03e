"""The merchant's own bounds in the SettlementVault, end to end on a real chain and database: its cap per
period, its rate cap per span of block time and its chosen settler. The worker reads them before posting
(settlement/bounds.py) and a settlement that would break one waits with the reason, without a reverted
transaction, until the merchant changes its bounds or (for the rate cap) the next span begins.

The money world and its helpers: tests/backend/support/money.py.
"""

from __future__ import annotations

import pytest
from eth_account import Account

from edgeledger.auth.models import Role
from edgeledger.settlement.models import SettlementState
from tests.backend.support.money import DELIVERY_FEE, NOW, ROYALTY, Money
from tests.backend.support.stack import make_caller, rpc
from tests.backend.test_settlement_money import _correction_of

pytestmark = pytest.mark.integration

#: The vault's spans (and the service's periods) in seconds.
SPAN = 86_400


def _span_of_latest(money: Money) -> int:
    return int(money.chain.w3.eth.get_block("latest")["timestamp"]) // SPAN


def _clear_of_the_span_end(money: Money) -> None:
    """Moves the chain's clock into the next span when the current one ends within ten minutes, so a
    test's posts and reads share one span."""
    now = int(money.chain.w3.eth.get_block("latest")["timestamp"])
    if SPAN - now % SPAN < 600:
        rpc(money.settings.eth_rpc_url, "evm_increaseTime", SPAN - now % SPAN + 1)
        money.mine()


def test_a_correction_waits_when_the_period_has_used_the_merchants_cap(money: Money) -> None:
    """The cap bounds a period over all its postings: a correction that fits under the cap alone but
    not with what its period already reserved waits (period_cap_exceeded, read from periodReservedOf
    before sending, so no reverted transaction), and posts once the merchant raises the cap."""
    shop = money.shops["a"]
    vault = money.chain.contract("SettlementVault")
    token = money.chain.deployment.address_of("TestStablecoin")
    money.as_wallet(shop.key, vault.functions.setPeriodCap(token, DELIVERY_FEE + ROYALTY))
    money.deliver("a")
    money.run(NOW)
    period = money.posted("a")
    assert money.chain.call(vault.functions.periodReservedOf(shop.key.address, token, period.period_id)) == (
        DELIVERY_FEE + ROYALTY
    )
    money.deliver("a", count=10, late=True)
    correction = _correction_of(money, period)
    assert correction.error_code == "period_cap_exceeded", (correction.state, correction.error_message)
    assert correction.tx_hash is None and correction.send_attempts == 0
    money.as_wallet(shop.key, vault.functions.setPeriodCap(token, 2 * (DELIVERY_FEE + ROYALTY)))
    money.run(NOW)
    money.session.refresh(correction)
    assert correction.state == SettlementState.posted and correction.total == (DELIVERY_FEE + ROYALTY) // 5


def test_a_merchants_own_cap_on_chain_bounds_what_a_period_reserves(money: Money) -> None:
    """The merchant caps its periods at less than the period's charge from its own wallet: the period
    waits (period_cap_exceeded, shown on the account) and posts once the merchant raises the cap."""
    shop = money.shops["a"]
    vault = money.chain.contract("SettlementVault")
    token = money.chain.deployment.address_of("TestStablecoin")
    money.as_wallet(shop.key, vault.functions.setPeriodCap(token, DELIVERY_FEE))
    money.deliver("a")
    money.run(NOW)
    row = money.settlement("a")
    assert row is not None and row.error_code == "period_cap_exceeded", (row.state, row.error_code)
    admin = make_caller(money.app, Role.admin, "admin")
    account = money.app.get(f"/settlement/accounts/{shop.user.id}", headers=admin.headers).json()
    assert account["period_cap"] == DELIVERY_FEE and account["chosen_settler"] is None
    # A settler of its choice only: not this server's signer.
    other = Account.create().address
    money.as_wallet(shop.key, vault.functions.setPeriodCap(token, 0))
    money.as_wallet(shop.key, vault.functions.chooseSettler(other))
    money.run(NOW)
    row = money.settlement("a")
    assert row is not None and row.error_code == "settler_not_chosen", (row.state, row.error_code)
    money.as_wallet(shop.key, vault.functions.chooseSettler(money.chain.signer_address))
    money.run(NOW)
    assert money.posted("a").total == DELIVERY_FEE + ROYALTY


def test_a_merchants_rate_cap_on_chain_bounds_what_its_postings_reserve_per_span(money: Money) -> None:
    """A period larger than the merchant's rate cap waits (rate_cap_exceeded, without a reverted
    transaction, saying only a higher cap posts it), the account shows the cap and the span's sum, and
    the period posts once the merchant raises the cap."""
    shop = money.shops["a"]
    vault = money.chain.contract("SettlementVault")
    token = money.chain.deployment.address_of("TestStablecoin")
    _clear_of_the_span_end(money)
    money.as_wallet(shop.key, vault.functions.setRateCap(token, DELIVERY_FEE))
    money.deliver("a")
    money.run(NOW)
    row = money.settlement("a")
    assert row is not None and row.error_code == "rate_cap_exceeded", (row.state, row.error_code)
    assert row.error_message is not None and "posts once the merchant raises the cap" in row.error_message
    assert "next span" not in row.error_message  # no later span can fit it
    assert row.tx_hash is None and row.send_attempts == 0
    admin = make_caller(money.app, Role.admin, "admin")
    account = money.app.get(f"/settlement/accounts/{shop.user.id}", headers=admin.headers).json()
    assert account["rate_cap"] == DELIVERY_FEE and account["rate_spent"] == 0
    money.as_wallet(shop.key, vault.functions.setRateCap(token, DELIVERY_FEE + ROYALTY))
    money.run(NOW)
    assert money.posted("a").total == DELIVERY_FEE + ROYALTY
    account = money.app.get(f"/settlement/accounts/{shop.user.id}", headers=admin.headers).json()
    assert account["rate_spent"] == DELIVERY_FEE + ROYALTY


def test_a_correction_past_what_the_span_has_left_posts_in_the_next_span(money: Money) -> None:
    """The rate cap counts every posting of the span, whatever period it names: the period posts, and
    its correction, which fits the cap alone but not with what the span already reserved, waits
    (rate_cap_exceeded, naming the span's sum). Once the chain's clock reaches the next span the next
    run posts it, without the merchant doing anything."""
    shop = money.shops["a"]
    vault = money.chain.contract("SettlementVault")
    token = money.chain.deployment.address_of("TestStablecoin")
    full = DELIVERY_FEE + ROYALTY
    _clear_of_the_span_end(money)
    money.as_wallet(shop.key, vault.functions.setRateCap(token, full + full // 10))
    money.deliver("a")
    money.run(NOW)
    period = money.posted("a")
    assert period.total == full
    money.deliver("a", count=10, late=True)
    correction = _correction_of(money, period)
    assert correction.error_code == "rate_cap_exceeded", (correction.state, correction.error_message)
    assert correction.error_message is not None and f"already reserved {full} " in correction.error_message
    assert correction.tx_hash is None and correction.send_attempts == 0
    span = _span_of_latest(money)
    assert money.chain.call(vault.functions.rateSpentOf(shop.key.address, token)) == full
    money.pass_window()  # a day and a second later: the next span
    assert _span_of_latest(money) == span + 1
    money.run(NOW)
    money.session.refresh(correction)
    assert correction.state == SettlementState.posted and correction.total == full // 5
    assert money.chain.call(vault.functions.rateSpentOf(shop.key.address, token)) == full // 5
