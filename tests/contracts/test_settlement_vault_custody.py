"""SettlementVault custody: what each key can do at worst, bounded on chain (docs/custody.md).

* the admin role sits behind a timelock whose delay exceeds the challenge window: a hostile role grant
  is public a whole window before it can act, and merchants withdraw meanwhile;
* the challenge window never drops below the one the vault was deployed with;
* a pause stops the vault's clock: open challenge windows end that much later;
* a merchant bounds what one period reserves (its root and its corrections, held royalties included; a
  cancel gives back, a release takes nothing), what all postings reserve within one span of block time
  whatever periods they name (the rate cap), and which settler may post for it;
* stray tokens are recoverable without touching escrow, reserves or claims.
"""

import brownie
from brownie import ZERO_ADDRESS, chain
from eth_utils import keccak

from tests.contracts.conftest import (
    CHALLENGE_WINDOW,
    PERIOD_SECONDS,
    USDC_UNIT,
    assert_event,
    random_hash,
    vault_error,
)

SETTLER_ROLE = keccak(text="SETTLER_ROLE")
DEFAULT_ADMIN_ROLE = b"\x00" * 32
SUPPLEMENT = (
    1 << 32
)  # a period's n-th supplementary settlement (a correction or a release): p + n * SUPPLEMENT


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


def test_a_merchant_bounds_what_a_period_reserves_and_who_posts_for_it(
    vault, admin, settler, merchant, usdc, fund, accounts
):
    """A settler key, even compromised, cannot reserve more than the merchant's cap for a period, nor post
    at all for a merchant that chose another settler."""
    fund(merchant, usdc, 10 * USDC_UNIT)
    tx = vault.setPeriodCap(usdc, 2 * USDC_UNIT, {"from": merchant})
    assert_event(tx, "PeriodCapSet", merchant=merchant, token=usdc, cap=2 * USDC_UNIT)
    cap, chosen, rate_cap, rate_spent = vault.boundsOf(merchant, usdc)
    assert cap == 2 * USDC_UNIT and chosen == ZERO_ADDRESS and rate_cap == rate_spent == 0
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


def _cap_exceeded(merchant, token, cap, requested) -> str:
    return vault_error("PeriodCapExceeded", merchant, token, cap, requested)


def _settle(vault, settler, id_, merchant, token, total, held=0):
    """Posts a root for settlement `id_` (a period, or a correction when id_ >= 2**32)."""
    if held:
        return vault.postWithHeld(id_, merchant, token, random_hash(), total, held, {"from": settler})
    return vault.post(id_, merchant, token, random_hash(), total, {"from": settler})


def test_corrections_cannot_post_one_period_past_the_merchants_cap(
    vault, admin, settler, merchant, usdc, fund, accounts
):
    """The reviewer's reproduction: cap 2 USDC, escrow 10 USDC; a compromised settler key posts period 1
    and then four corrections (supplementary ids 1 + n * 2**32) of 2 USDC each. Before the fix all five
    went through and emptied the escrow; now every post after the first would take the period past its
    cap and reverts, and what the period reserved never exceeds the cap."""
    cap = 2 * USDC_UNIT
    fund(merchant, usdc, 10 * USDC_UNIT)
    vault.setPeriodCap(usdc, cap, {"from": merchant})
    rogue = accounts[8]
    vault.grantRole(SETTLER_ROLE, rogue, {"from": admin})
    _settle(vault, rogue, 1, merchant, usdc, cap)
    for n in range(1, 5):
        with brownie.reverts(_cap_exceeded(merchant, usdc, cap, 2 * cap)):
            _settle(vault, rogue, 1 + n * SUPPLEMENT, merchant, usdc, cap)
        assert vault.periodReservedOf(merchant, usdc, 1) == cap
        assert vault.periodReservedOf(merchant, usdc, 1 + n * SUPPLEMENT) == cap  # the same period
    assert vault.escrowOf(merchant, usdc) == 8 * USDC_UNIT
    assert vault.totalsOf(usdc)["reserved"] == cap


def test_a_periods_postings_fill_its_cap_held_royalties_included(vault, settler, merchant, usdc, fund):
    """Smaller postings of one period add up: the period's root, then corrections with and without held
    royalties, until the sum reaches the cap exactly; one unit more reverts, and the error reports the
    sum the posting would have made."""
    cap = 2 * USDC_UNIT
    fund(merchant, usdc, 10 * USDC_UNIT)
    vault.setPeriodCap(usdc, cap, {"from": merchant})
    _settle(vault, settler, 5, merchant, usdc, USDC_UNIT // 2, held=USDC_UNIT // 4)
    _settle(vault, settler, 5 + SUPPLEMENT, merchant, usdc, USDC_UNIT // 2)
    assert vault.periodReservedOf(merchant, usdc, 5) == USDC_UNIT + USDC_UNIT // 4
    with brownie.reverts(_cap_exceeded(merchant, usdc, cap, cap + 1)):  # held royalties count
        _settle(vault, settler, 5 + 2 * SUPPLEMENT, merchant, usdc, USDC_UNIT // 4, held=USDC_UNIT // 2 + 1)
    _settle(vault, settler, 5 + 2 * SUPPLEMENT, merchant, usdc, USDC_UNIT // 4, held=USDC_UNIT // 2)
    assert vault.periodReservedOf(merchant, usdc, 5) == cap
    with brownie.reverts(_cap_exceeded(merchant, usdc, cap, cap + 1)):
        _settle(vault, settler, 5 + 3 * SUPPLEMENT, merchant, usdc, 1)
    assert vault.escrowOf(merchant, usdc) == 10 * USDC_UNIT - cap


def test_a_cancelled_posting_gives_its_amount_back_to_its_period(vault, admin, settler, merchant, usdc, fund):
    """The arbiter cancels a challenged posting: what it reserved, held royalties included, goes back to
    escrow and to the period's budget, so the period can be posted again within its cap. An upheld
    challenge gives nothing back."""
    cap = 2 * USDC_UNIT
    fund(merchant, usdc, 10 * USDC_UNIT)
    vault.setPeriodCap(usdc, cap, {"from": merchant})
    _settle(vault, settler, 1, merchant, usdc, USDC_UNIT, held=USDC_UNIT)  # the whole cap
    with brownie.reverts(_cap_exceeded(merchant, usdc, cap, cap + 1)):
        _settle(vault, settler, 1 + SUPPLEMENT, merchant, usdc, 1)
    vault.challenge(1, merchant, random_hash(), {"from": merchant})
    tx = vault.resolve(1, merchant, False, {"from": admin})
    assert tx.events["SettlementResolved"]["returned"] == cap
    assert vault.periodReservedOf(merchant, usdc, 1) == 0
    assert vault.escrowOf(merchant, usdc) == 10 * USDC_UNIT
    # The period posted again, then a correction; the correction is cancelled and posted anew.
    _settle(vault, settler, 1, merchant, usdc, 3 * USDC_UNIT // 2)
    _settle(vault, settler, 1 + SUPPLEMENT, merchant, usdc, USDC_UNIT // 2)
    vault.challenge(1 + SUPPLEMENT, merchant, random_hash(), {"from": merchant})
    vault.resolve(1 + SUPPLEMENT, merchant, False, {"from": admin})
    assert vault.periodReservedOf(merchant, usdc, 1) == 3 * USDC_UNIT // 2
    _settle(vault, settler, 1 + SUPPLEMENT, merchant, usdc, USDC_UNIT // 2)
    assert vault.periodReservedOf(merchant, usdc, 1) == cap
    # Upheld: it stays reserved, and counted.
    vault.challenge(1 + SUPPLEMENT, merchant, random_hash(), {"from": merchant})
    vault.resolve(1 + SUPPLEMENT, merchant, True, {"from": admin})
    assert vault.periodReservedOf(merchant, usdc, 1) == cap
    with brownie.reverts(_cap_exceeded(merchant, usdc, cap, cap + 1)):
        _settle(vault, settler, 1 + 2 * SUPPLEMENT, merchant, usdc, 1)
    assert vault.escrowOf(merchant, usdc) == 10 * USDC_UNIT - cap


def test_releases_of_held_royalties_do_not_count_against_the_cap(vault, admin, settler, merchant, usdc, fund):
    """A release pays from the period's held reserve, which the period already counted when it held the
    royalties: it takes nothing from escrow and nothing from the cap, even with the cap full; a cancelled
    release goes back to the held reserve, not to the period's budget."""
    cap = 2 * USDC_UNIT
    fund(merchant, usdc, 10 * USDC_UNIT)
    vault.setPeriodCap(usdc, cap, {"from": merchant})
    _settle(vault, settler, 3, merchant, usdc, USDC_UNIT, held=USDC_UNIT)  # the whole cap
    open_claims()  # final: its held royalties are releasable
    vault.releaseHeld(3, merchant, 3 + SUPPLEMENT, random_hash(), USDC_UNIT // 2, {"from": settler})
    assert vault.periodReservedOf(merchant, usdc, 3) == cap
    vault.challenge(3 + SUPPLEMENT, merchant, random_hash(), {"from": merchant})
    vault.resolve(3 + SUPPLEMENT, merchant, False, {"from": admin})
    assert vault.heldOf(3, merchant) == USDC_UNIT
    assert vault.periodReservedOf(merchant, usdc, 3) == cap
    vault.releaseHeld(3, merchant, 3 + 2 * SUPPLEMENT, random_hash(), USDC_UNIT, {"from": settler})
    assert vault.periodReservedOf(merchant, usdc, 3) == cap
    assert vault.escrowOf(merchant, usdc) == 10 * USDC_UNIT - cap
    with brownie.reverts(_cap_exceeded(merchant, usdc, cap, cap + 1)):
        _settle(vault, settler, 3 + 3 * SUPPLEMENT, merchant, usdc, 1)


def test_each_period_and_token_has_its_own_budget_counted_from_its_first_posting(
    vault, settler, merchant, usdc, eurc, fund
):
    """Another period, or the same period in another token, has its own budget. The sum is kept whether
    or not a cap is set: a cap set (or lowered) mid-period counts what the period already reserved."""
    cap = 2 * USDC_UNIT
    fund(merchant, usdc, 20 * USDC_UNIT)
    fund(merchant, eurc, 5 * USDC_UNIT)
    vault.setPeriodCap(usdc, cap, {"from": merchant})
    _settle(vault, settler, 1, merchant, usdc, cap)
    _settle(vault, settler, 2, merchant, usdc, cap)
    _settle(vault, settler, 1 + SUPPLEMENT, merchant, eurc, 5 * USDC_UNIT)  # no cap in that token
    assert vault.periodReservedOf(merchant, usdc, 2) == cap
    assert vault.periodReservedOf(merchant, eurc, 1) == 5 * USDC_UNIT
    # No cap yet for period 4: its postings are counted all the same.
    vault.setPeriodCap(usdc, 0, {"from": merchant})
    _settle(vault, settler, 4, merchant, usdc, 3 * USDC_UNIT)
    assert vault.periodReservedOf(merchant, usdc, 4) == 3 * USDC_UNIT
    vault.setPeriodCap(usdc, 4 * USDC_UNIT, {"from": merchant})
    _settle(vault, settler, 4 + SUPPLEMENT, merchant, usdc, USDC_UNIT)
    with brownie.reverts(_cap_exceeded(merchant, usdc, 4 * USDC_UNIT, 4 * USDC_UNIT + 1)):
        _settle(vault, settler, 4 + 2 * SUPPLEMENT, merchant, usdc, 1)
    # Lowered below what the period holds: nothing already reserved moves, nothing more is posted.
    vault.setPeriodCap(usdc, cap, {"from": merchant})
    with brownie.reverts(_cap_exceeded(merchant, usdc, cap, 4 * USDC_UNIT + 1)):
        _settle(vault, settler, 4 + 2 * SUPPLEMENT, merchant, usdc, 1)
    assert vault.periodReservedOf(merchant, usdc, 4) == 4 * USDC_UNIT
    _settle(vault, settler, 5, merchant, usdc, cap)  # the next period starts afresh


def _start_of_span() -> None:
    """Waits for the next span of block time (a period's length), so a test's postings share one."""
    chain.sleep(PERIOD_SECONDS - chain.time() % PERIOD_SECONDS + 10)
    chain.mine()


def _rate_exceeded(merchant, token, cap, requested) -> str:
    return vault_error("RateCapExceeded", merchant, token, cap, requested)


def test_a_rate_cap_bounds_what_postings_for_many_past_periods_reserve_together(
    vault, admin, settler, merchant, usdc, fund, accounts
):
    """The period cap alone lets a compromised settler key post roots for many past periods, each within
    its period's cap. The rate cap bounds them together: within one span of block time every posting
    counts, whatever period it names, held royalties included; the next span starts afresh, so over any
    stretch of time the keys reserve at most the rate cap per span. Cancels do not give back."""
    fund(merchant, usdc, 100 * USDC_UNIT)
    vault.setPeriodCap(usdc, 2 * USDC_UNIT, {"from": merchant})
    rate = 5 * USDC_UNIT
    tx = vault.setRateCap(usdc, rate, {"from": merchant})
    assert_event(tx, "RateCapSet", merchant=merchant, token=usdc, cap=rate)
    rogue = accounts[8]
    vault.grantRole(SETTLER_ROLE, rogue, {"from": admin})
    _start_of_span()
    _settle(vault, rogue, 1, merchant, usdc, 2 * USDC_UNIT)
    _settle(vault, rogue, 2, merchant, usdc, USDC_UNIT, held=USDC_UNIT)  # held royalties count
    assert vault.rateSpentOf(merchant, usdc) == 4 * USDC_UNIT
    with brownie.reverts(_rate_exceeded(merchant, usdc, rate, 6 * USDC_UNIT)):
        _settle(vault, rogue, 3, merchant, usdc, 2 * USDC_UNIT)  # within period 3's cap, past the span's
    _settle(vault, rogue, 3, merchant, usdc, USDC_UNIT)  # the span's cap exactly
    for period in range(4, 30):
        with brownie.reverts(_rate_exceeded(merchant, usdc, rate, rate + 1)):
            _settle(vault, rogue, period, merchant, usdc, 1)
    assert vault.escrowOf(merchant, usdc) == 95 * USDC_UNIT
    # A cancel returns the reserve to escrow but not to the span.
    vault.challenge(3, merchant, random_hash(), {"from": merchant})
    vault.resolve(3, merchant, False, {"from": admin})
    assert vault.escrowOf(merchant, usdc) == 96 * USDC_UNIT
    assert tuple(vault.boundsOf(merchant, usdc)) == (2 * USDC_UNIT, ZERO_ADDRESS, rate, rate)
    # The next span.
    _start_of_span()
    assert vault.rateSpentOf(merchant, usdc) == 0
    for period in (3, 4):
        _settle(vault, settler, period, merchant, usdc, 2 * USDC_UNIT)
    with brownie.reverts(_rate_exceeded(merchant, usdc, rate, rate + USDC_UNIT)):
        _settle(vault, settler, 5, merchant, usdc, 2 * USDC_UNIT)
    # Releases of held royalties take nothing from escrow and do not count.
    open_claims()
    _start_of_span()
    _settle(vault, settler, 6, merchant, usdc, USDC_UNIT, held=USDC_UNIT)
    vault.releaseHeld(2, merchant, 2 + SUPPLEMENT, random_hash(), USDC_UNIT, {"from": settler})
    assert vault.rateSpentOf(merchant, usdc) == 2 * USDC_UNIT


def test_a_rate_cap_counts_the_spans_postings_made_before_it_was_set(vault, settler, merchant, usdc, fund):
    """The span's sum is kept without a cap, so a cap set mid-span counts what the span already
    reserved; zero removes the bound; a cap past what the slot holds is refused."""
    fund(merchant, usdc, 20 * USDC_UNIT)
    _start_of_span()
    _settle(vault, settler, 1, merchant, usdc, 3 * USDC_UNIT)
    vault.setRateCap(usdc, 4 * USDC_UNIT, {"from": merchant})
    with brownie.reverts(_rate_exceeded(merchant, usdc, 4 * USDC_UNIT, 5 * USDC_UNIT)):
        _settle(vault, settler, 2, merchant, usdc, 2 * USDC_UNIT)
    _settle(vault, settler, 2, merchant, usdc, USDC_UNIT)
    vault.setRateCap(usdc, 0, {"from": merchant})
    _settle(vault, settler, 3, merchant, usdc, 10 * USDC_UNIT)
    assert vault.rateSpentOf(merchant, usdc) == 14 * USDC_UNIT
    with brownie.reverts(vault_error("RateCapTooLarge", 2**112)):
        vault.setRateCap(usdc, 2**112, {"from": merchant})
    vault.setRateCap(usdc, 2**112 - 1, {"from": merchant})
    _settle(vault, settler, 4, merchant, usdc, USDC_UNIT)


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
