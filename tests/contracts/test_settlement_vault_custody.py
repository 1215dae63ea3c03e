"""SettlementVault custody: what each key can do at worst, bounded on chain (docs/custody.md).

* the admin role sits behind a timelock whose delay exceeds the challenge window: a hostile role grant
  is public a whole window before it can act, and merchants withdraw meanwhile;
* the challenge window never drops below the one the vault was deployed with;
* a pause stops the vault's clock: open challenge windows end that much later;
* a merchant bounds what one posting reserves and which settler may post for it;
* stray tokens are recoverable without touching escrow, reserves or claims.
"""

import brownie
from brownie import ZERO_ADDRESS, chain
from eth_utils import keccak

from tests.contracts.conftest import CHALLENGE_WINDOW, USDC_UNIT, assert_event, random_hash, vault_error

SETTLER_ROLE = keccak(text="SETTLER_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32


def open_claims() -> None:
    chain.sleep(CHALLENGE_WINDOW + 1)
    chain.mine()


def test_a_pause_extends_every_open_challenge_window_by_the_time_paused(
    vault, admin, settler, merchant, usdc, fund, post_payout, payees
):
    """An admin cannot pause a merchant out of its chance to challenge: the vault's clock stops while
    paused, open windows end that much later, and windows already over stay over."""
    fund(merchant, usdc, 10 * USDC_UNIT)
    early = post_payout(1, merchant, usdc, {payees[0]: USDC_UNIT})
    open_claims()  # period 1's window is over before the pause
    late = post_payout(2, merchant, usdc, {payees[0]: USDC_UNIT})
    posted_at = late.tx.timestamp
    assert vault.settlementOf(2, merchant)["claimsOpenAt"] == posted_at + CHALLENGE_WINDOW
    chain.sleep(CHALLENGE_WINDOW // 2)
    vault.pause({"from": admin})
    clock = vault.vaultClock()
    chain.sleep(3 * CHALLENGE_WINDOW)
    chain.mine()
    assert vault.vaultClock() == clock  # stopped
    paused_at = chain[-2].timestamp  # the pause's block (one block mined since)
    tx = vault.unpause({"from": admin})
    # Period 2's window moved by exactly the time paused; the merchant can still challenge it.
    opens = vault.settlementOf(2, merchant)["claimsOpenAt"]
    assert opens == posted_at + CHALLENGE_WINDOW + (tx.timestamp - paused_at)
    with brownie.reverts(vault_error("ClaimsNotOpen", 2, merchant, 1, opens)):
        vault.claim(late.claim(payees[0]), ZERO_ADDRESS, {"from": payees[0]})
    vault.challenge(2, merchant, random_hash(), {"from": merchant})
    # Period 1's window was over before the pause: still open.
    vault.claim(early.claim(payees[0]), ZERO_ADDRESS, {"from": payees[0]})
    assert vault.claimsOpen(1, merchant) and not vault.claimsOpen(2, merchant)


def test_a_merchant_bounds_what_one_posting_reserves_and_who_posts_for_it(
    vault, admin, settler, merchant, usdc, fund, accounts
):
    """A settler key, even compromised, cannot reserve more than the merchant's cap per posting, nor post
    at all for a merchant that chose another settler."""
    fund(merchant, usdc, 10 * USDC_UNIT)
    tx = vault.setPeriodCap(usdc, 2 * USDC_UNIT, {"from": merchant})
    assert_event(tx, "PeriodCapSet", merchant=merchant, token=usdc, cap=2 * USDC_UNIT)
    cap, chosen = vault.boundsOf(merchant, usdc)
    assert cap == 2 * USDC_UNIT and chosen == ZERO_ADDRESS
    with brownie.reverts(vault_error("PeriodCapExceeded", merchant, usdc, 2 * USDC_UNIT, 2 * USDC_UNIT + 1)):
        vault.post(1, merchant, usdc, random_hash(), 2 * USDC_UNIT + 1, {"from": settler})
    # Held royalties count too.
    with brownie.reverts(vault_error("PeriodCapExceeded", merchant, usdc, 2 * USDC_UNIT, 2 * USDC_UNIT + 1)):
        vault.postWithHeld(1, merchant, usdc, random_hash(), USDC_UNIT, USDC_UNIT + 1, {"from": settler})
    vault.post(1, merchant, usdc, random_hash(), 2 * USDC_UNIT, {"from": settler})
    # Another settler key.
    rogue = accounts[8]
    vault.grantRole(SETTLER_ROLE, rogue, {"from": admin})
    tx = vault.chooseSettler(settler, {"from": merchant})
    assert_event(tx, "SettlerChosen", merchant=merchant, settler=settler)
    with brownie.reverts(vault_error("SettlerNotChosen", merchant, settler, rogue)):
        vault.post(2, merchant, usdc, random_hash(), 1, {"from": rogue})
    vault.post(2, merchant, usdc, random_hash(), 1, {"from": settler})
    # Removing the bounds.
    vault.setPeriodCap(usdc, 0, {"from": merchant})
    vault.chooseSettler(ZERO_ADDRESS, {"from": merchant})
    vault.post(3, merchant, usdc, random_hash(), 3 * USDC_UNIT, {"from": rogue})


def test_stray_tokens_are_recovered_without_touching_escrow_reserves_or_claims(
    vault, admin, settler, merchant, usdc, fund, post_payout, payees, accounts
):
    fund(merchant, usdc, 10 * USDC_UNIT)
    post_payout(1, merchant, usdc, {payees[0]: USDC_UNIT})
    with brownie.reverts(vault_error("NothingToRecover", usdc)):
        vault.recoverTokens(usdc, admin, {"from": admin})
    usdc.mint(accounts[7], 5, {"from": admin})
    usdc.transfer(vault, 5, {"from": accounts[7]})  # by mistake, not deposit()
    with brownie.reverts(vault_error("AccessControlUnauthorizedAccount", settler, DEFAULT_ADMIN_ROLE)):
        vault.recoverTokens(usdc, settler, {"from": settler})
    tx = vault.recoverTokens(usdc, accounts[7], {"from": admin})
    assert_event(tx, "TokensRecovered", token=usdc, to=accounts[7], amount=5, admin=admin)
    assert usdc.balanceOf(accounts[7]) == 5
    _deposited, _withdrawn, reserved, _claimed, escrow, _allowed = vault.totalsOf(usdc)
    assert usdc.balanceOf(vault) == escrow + reserved == 10 * USDC_UNIT


def test_behind_the_timelock_a_hostile_admin_is_seen_a_whole_window_before_it_can_act(
    vault, admin, settler, merchant, usdc, fund, accounts
):
    """The deployment hands the vault's admin role to the timelock. Granting itself SETTLER_ROLE then
    takes longer than a challenge window, in public; the merchant sees it and withdraws first."""
    from brownie import EdgeLedgerTimelock

    delay = CHALLENGE_WINDOW + 3_600
    timelock = EdgeLedgerTimelock.deploy(delay, [admin], [admin], {"from": admin})
    vault.grantRole(DEFAULT_ADMIN_ROLE, timelock, {"from": admin})
    vault.renounceRole(DEFAULT_ADMIN_ROLE, admin, {"from": admin})
    attacker = accounts[8]
    with brownie.reverts(vault_error("AccessControlUnauthorizedAccount", admin, DEFAULT_ADMIN_ROLE)):
        vault.grantRole(SETTLER_ROLE, attacker, {"from": admin})
    fund(merchant, usdc, 10 * USDC_UNIT)

    call = vault.grantRole.encode_input(SETTLER_ROLE, attacker)
    salt = random_hash()
    with brownie.reverts():  # shorter than the minimum delay
        timelock.schedule(vault, 0, call, b"\x00" * 32, salt, CHALLENGE_WINDOW, {"from": admin})
    tx = timelock.schedule(vault, 0, call, b"\x00" * 32, salt, delay, {"from": admin})
    assert "CallScheduled" in tx.events  # public: anyone watching the chain sees it now
    chain.sleep(CHALLENGE_WINDOW)
    chain.mine()
    with brownie.reverts():  # not ready: a whole challenge window has passed, the delay has not
        timelock.execute(vault, 0, call, b"\x00" * 32, salt, {"from": admin})
    # The merchant saw it coming and took its escrow out.
    vault.withdraw(usdc, 10 * USDC_UNIT, merchant, {"from": merchant})
    chain.sleep(3_601)
    chain.mine()
    timelock.execute(vault, 0, call, b"\x00" * 32, salt, {"from": admin})
    assert vault.hasRole(SETTLER_ROLE, attacker)
    with brownie.reverts(vault_error("InsufficientEscrow", merchant, usdc, 0, 1)):
        vault.post(1, merchant, usdc, random_hash(), 1, {"from": attacker})
