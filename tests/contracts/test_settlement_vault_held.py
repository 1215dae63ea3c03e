"""SettlementVault's held royalties: reserved with a period's root ({postWithHeld}), released under a
supplementary settlement id ({releaseHeld}: to the rights holder, or back to the merchant as a leaf to its
own address); never withdrawable by the merchant in between, and every token still in escrow, a reserve or
a claim."""

import brownie
import pytest
from brownie import chain
from eth_utils import keccak

from tests.contracts.conftest import CHALLENGE_WINDOW, ZERO_HASH, Payout, random_hash, vault_error

SUPPLEMENT = 1 << 32
SETTLER_ROLE = keccak(text="SETTLER_ROLE")


def _books(vault, token) -> dict:
    deposited, withdrawn, reserved, claimed, escrow, _allowed = vault.totalsOf(token)
    return {
        "deposited": deposited,
        "withdrawn": withdrawn,
        "reserved": reserved,
        "claimed": claimed,
        "escrow": escrow,
    }


def _conserved(vault, token) -> None:
    books = _books(vault, token)
    assert books["deposited"] == books["escrow"] + books["reserved"] + books["claimed"] + books["withdrawn"]
    assert token.balanceOf(vault) == books["escrow"] + books["reserved"]


@pytest.fixture
def held_period(vault, settler, merchant, usdc, fund, payees):
    """Period 7 of `merchant`: 600 paid to two payees, 400 of royalties held back; escrow 2,000."""
    fund(merchant, usdc, 2_000)
    payout = Payout(7, str(merchant), str(usdc), {str(payees[0]): 500, str(payees[1]): 100})
    tx = vault.postWithHeld(7, merchant, usdc, payout.root, payout.total, 400, {"from": settler})
    return payout, tx


@pytest.fixture
def final_period(held_period):
    """Period 7 past its challenge window: final, its held royalties releasable."""
    chain.sleep(CHALLENGE_WINDOW + 1)
    chain.mine()
    return held_period


def _final() -> None:
    chain.sleep(CHALLENGE_WINDOW + 1)
    chain.mine()


def test_held_royalties_are_reserved_with_the_root(vault, merchant, usdc, held_period, settler):
    _payout, tx = held_period
    assert tx.events["RoyaltiesHeld"]["held"] == 400
    assert tx.events["SettlementPosted"]["total"] == 600
    assert vault.heldOf(7, merchant) == 400
    assert vault.escrowOf(merchant, usdc) == 1_000  # 2,000 - 600 - 400
    assert _books(vault, usdc)["reserved"] == 1_000
    _conserved(vault, usdc)
    # The merchant cannot take the held royalties back.
    with brownie.reverts(vault_error("InsufficientEscrow", merchant, usdc, 1_000, 1_001)):
        vault.withdraw(usdc, 1_001, merchant, {"from": merchant})
    # Escrow must cover total + held.
    with brownie.reverts(vault_error("InsufficientEscrow", merchant, usdc, 1_000, 1_001)):
        vault.postWithHeld(8, merchant, usdc, random_hash(), 1, 1_000, {"from": settler})
    # Nothing is released while the period can still be challenged and cancelled.
    with brownie.reverts(vault_error("NotReleasable", 7, merchant, 1)):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 7, random_hash(), 1, {"from": settler})


def test_released_royalties_are_a_new_root_claimed_after_its_own_window(
    vault, settler, merchant, usdc, final_period, payees
):
    release_id = SUPPLEMENT + 7
    holder = payees[2]
    release = Payout(release_id, str(merchant), str(usdc), {str(holder): 300})
    tx = vault.releaseHeld(7, merchant, release_id, release.root, 300, {"from": settler})
    assert tx.events["HeldReleased"]["releaseId"] == release_id and tx.events["HeldReleased"]["amount"] == 300
    assert vault.heldOf(7, merchant) == 100
    assert vault.settlementOf(release_id, merchant)[4] == 300  # total
    assert _books(vault, usdc)["reserved"] == 1_000  # moved inside the reserve, not out of it
    _conserved(vault, usdc)
    with brownie.reverts(
        vault_error("ClaimsNotOpen", release_id, merchant, 1, tx.timestamp + CHALLENGE_WINDOW)
    ):
        vault.claim(release.claim(holder), holder, {"from": holder})
    chain.sleep(CHALLENGE_WINDOW + 1)
    chain.mine()
    before = usdc.balanceOf(holder)
    vault.claim(release.claim(holder), holder, {"from": holder})
    assert usdc.balanceOf(holder) == before + 300
    _conserved(vault, usdc)


def test_release_bounds(vault, settler, merchant, usdc, final_period, auditor):
    root = random_hash()
    with brownie.reverts(vault_error("HeldExceeded", 7, merchant, 400, 401)):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 7, root, 401, {"from": settler})
    with brownie.reverts(vault_error("NotSupplementary", 7, 7)):
        vault.releaseHeld(7, merchant, 7, root, 1, {"from": settler})
    with brownie.reverts(vault_error("NotSupplementary", 7, SUPPLEMENT + 8)):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 8, root, 1, {"from": settler})
    with brownie.reverts(vault_error("UnknownSettlement", 9, merchant)):
        vault.releaseHeld(9, merchant, SUPPLEMENT + 9, root, 1, {"from": settler})
    with brownie.reverts(vault_error("ZeroRoot")):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 7, ZERO_HASH, 1, {"from": settler})
    with brownie.reverts(vault_error("ZeroAmount")):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 7, root, 0, {"from": settler})
    for caller in (auditor, merchant):
        with brownie.reverts():
            vault.releaseHeld(7, merchant, SUPPLEMENT + 7, root, 1, {"from": caller})
    vault.releaseHeld(7, merchant, SUPPLEMENT + 7, root, 100, {"from": settler})
    with brownie.reverts(vault_error("AlreadyPosted", SUPPLEMENT + 7, merchant, 1)):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 7, root, 100, {"from": settler})
    vault.releaseHeld(7, merchant, 2 * SUPPLEMENT + 7, root, 300, {"from": settler})
    assert vault.heldOf(7, merchant) == 0
    with brownie.reverts(vault_error("HeldExceeded", 7, merchant, 0, 1)):
        vault.releaseHeld(7, merchant, 3 * SUPPLEMENT + 7, root, 1, {"from": settler})


def test_a_merchant_cannot_freeze_its_held_royalties_by_choosing_a_settler(
    vault, admin, settler, merchant, usdc, final_period, accounts
):
    """A merchant's chosen settler binds releases only while it holds the role: choosing an address that
    cannot settle would otherwise leave the rights holders' held royalties with no key to release them."""
    other = accounts[8]
    vault.grantRole(SETTLER_ROLE, other, {"from": admin})
    vault.chooseSettler(settler, {"from": merchant})
    with brownie.reverts(vault_error("SettlerNotChosen", merchant, settler, other)):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 7, random_hash(), 100, {"from": other})
    vault.releaseHeld(7, merchant, SUPPLEMENT + 7, random_hash(), 100, {"from": settler})
    nobody = accounts[9]
    vault.chooseSettler(nobody, {"from": merchant})
    assert not vault.hasRole(SETTLER_ROLE, nobody)
    tx = vault.releaseHeld(7, merchant, 2 * SUPPLEMENT + 7, random_hash(), 300, {"from": settler})
    assert "HeldReleased" in tx.events and vault.heldOf(7, merchant) == 0
    # Posts stay bound by the choice, whoever it names.
    with brownie.reverts(vault_error("SettlerNotChosen", merchant, nobody, settler)):
        vault.post(8, merchant, usdc, random_hash(), 1, {"from": settler})


def test_a_refund_is_a_release_paying_the_merchant(vault, settler, merchant, usdc, final_period):
    """After a takedown the held royalties go back to the merchant: a release leaf to its own address."""
    release = Payout(SUPPLEMENT + 7, str(merchant), str(usdc), {str(merchant): 400})
    vault.releaseHeld(7, merchant, SUPPLEMENT + 7, release.root, 400, {"from": settler})
    chain.sleep(CHALLENGE_WINDOW + 1)
    chain.mine()
    before = usdc.balanceOf(merchant)
    vault.claim(release.claim(merchant), merchant, {"from": merchant})
    assert usdc.balanceOf(merchant) == before + 400 and vault.heldOf(7, merchant) == 0
    _conserved(vault, usdc)


def test_a_challenged_period_freezes_its_held_reserve_and_a_cancelled_one_returns_it(
    vault, admin, settler, merchant, usdc, held_period
):
    vault.challenge(7, merchant, random_hash(), {"from": merchant})
    with brownie.reverts(vault_error("NotReleasable", 7, merchant, 2)):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 7, random_hash(), 1, {"from": settler})
    tx = vault.resolve(7, merchant, False, {"from": admin})
    assert tx.events["SettlementResolved"]["returned"] == 1_000  # 600 reserved + 400 held
    assert vault.heldOf(7, merchant) == 0 and vault.escrowOf(merchant, usdc) == 2_000
    _conserved(vault, usdc)


def test_a_cancelled_release_returns_to_the_held_reserve_it_came_from(
    vault, admin, settler, merchant, usdc, final_period
):
    release_id = SUPPLEMENT + 7
    vault.releaseHeld(7, merchant, release_id, random_hash(), 300, {"from": settler})
    vault.challenge(release_id, merchant, random_hash(), {"from": merchant})
    tx = vault.resolve(release_id, merchant, False, {"from": admin})
    assert tx.events["SettlementResolved"]["returned"] == 300
    assert vault.heldOf(7, merchant) == 400 and vault.escrowOf(merchant, usdc) == 1_000
    _conserved(vault, usdc)
    # ... and may be released again under the same id.
    vault.releaseHeld(7, merchant, release_id, random_hash(), 400, {"from": settler})
    assert vault.heldOf(7, merchant) == 0
    _conserved(vault, usdc)


def test_pausing_stops_releases(vault, admin, settler, merchant, final_period):
    vault.pause({"from": admin})
    with brownie.reverts(vault_error("EnforcedPause")):
        vault.releaseHeld(7, merchant, SUPPLEMENT + 7, random_hash(), 1, {"from": settler})
    vault.unpause({"from": admin})


def test_a_late_correction_holds_and_releases_under_the_same_period(
    vault, admin, settler, merchant, usdc, final_period, payees
):
    """A supplementary settlement of late records (id period + 1<<32) is posted from escrow with its own
    held royalties; they are released under the period's next supplementary id, and a release cannot fund
    another (it holds nothing). A cancelled release's id posted anew is funded by escrow, not a reserve."""
    correction = SUPPLEMENT + 7
    payout = Payout(correction, str(merchant), str(usdc), {str(payees[0]): 50})
    vault.postWithHeld(correction, merchant, usdc, payout.root, 50, 30, {"from": settler})
    assert vault.heldOf(correction, merchant) == 30 and vault.escrowOf(merchant, usdc) == 920
    _conserved(vault, usdc)
    with brownie.reverts(vault_error("NotReleasable", correction, merchant, 1)):
        vault.releaseHeld(correction, merchant, 2 * SUPPLEMENT + 7, random_hash(), 1, {"from": settler})
    _final()
    with brownie.reverts(vault_error("NotSupplementary", correction, correction)):
        vault.releaseHeld(correction, merchant, correction, random_hash(), 1, {"from": settler})
    with brownie.reverts(vault_error("NotSupplementary", correction, SUPPLEMENT + 8)):
        vault.releaseHeld(correction, merchant, SUPPLEMENT + 8, random_hash(), 1, {"from": settler})
    release = 2 * SUPPLEMENT + 7
    vault.releaseHeld(correction, merchant, release, random_hash(), 30, {"from": settler})
    assert vault.heldOf(correction, merchant) == 0 and vault.heldOf(7, merchant) == 400
    with brownie.reverts(vault_error("NotReleasable", release, merchant, 1)):  # and it holds nothing
        vault.releaseHeld(release, merchant, 3 * SUPPLEMENT + 7, random_hash(), 1, {"from": settler})
    _conserved(vault, usdc)
    # Cancelled, the release goes back to the correction's held reserve ...
    vault.challenge(release, merchant, random_hash(), {"from": merchant})
    vault.resolve(release, merchant, False, {"from": admin})
    assert vault.heldOf(correction, merchant) == 30
    # ... and its id posted from escrow is cancelled back to escrow.
    vault.postWithHeld(release, merchant, usdc, random_hash(), 10, 0, {"from": settler})
    assert vault.escrowOf(merchant, usdc) == 910
    vault.challenge(release, merchant, random_hash(), {"from": merchant})
    vault.resolve(release, merchant, False, {"from": admin})
    assert vault.escrowOf(merchant, usdc) == 920 and vault.heldOf(correction, merchant) == 30
    _conserved(vault, usdc)


def test_a_period_that_pays_nobody_now_reserves_its_held_royalties_alone(
    vault, admin, settler, merchant, usdc, fund, payees
):
    """A held-only post (total 0, held > 0: every royalty of the period held, nothing else to pay) reserves
    the held royalties like any other post; nothing can be claimed from it (its root commits to what
    is held, no payout tree), its royalties leave only by a release once it is final, and a
    cancel returns them to escrow. A post of nothing at all still reverts."""
    fund(merchant, usdc, 1_000)
    commitment = random_hash()
    with brownie.reverts(vault_error("ZeroAmount")):
        vault.postWithHeld(11, merchant, usdc, commitment, 0, 0, {"from": settler})
    with brownie.reverts(vault_error("ZeroAmount")):
        vault.post(11, merchant, usdc, commitment, 0, {"from": settler})
    with brownie.reverts(vault_error("ZeroRoot")):
        vault.postWithHeld(11, merchant, usdc, ZERO_HASH, 0, 250, {"from": settler})
    tx = vault.postWithHeld(11, merchant, usdc, commitment, 0, 250, {"from": settler})
    assert tx.events["SettlementPosted"]["total"] == 0 and tx.events["RoyaltiesHeld"]["held"] == 250
    assert vault.heldOf(11, merchant) == 250 and vault.escrowOf(merchant, usdc) == 750
    assert vault.periodReservedOf(merchant, usdc, 11) == 250
    _conserved(vault, usdc)
    # Cancelled, the held reserve goes back to escrow and to the period's cap.
    vault.challenge(11, merchant, random_hash(), {"from": merchant})
    vault.resolve(11, merchant, False, {"from": admin})
    assert vault.heldOf(11, merchant) == 0 and vault.escrowOf(merchant, usdc) == 1_000
    assert vault.periodReservedOf(merchant, usdc, 11) == 0
    _conserved(vault, usdc)
    # Posted again and final: no claim takes anything (not even 0), a release pays the holder.
    vault.postWithHeld(11, merchant, usdc, commitment, 0, 250, {"from": settler})
    _final()
    nothing = Payout(11, str(merchant), str(usdc), {str(payees[0]): 0})
    with brownie.reverts(vault_error("InvalidProof", 11, merchant, payees[0], 0)):
        vault.claim(nothing.claim(payees[0]), payees[0], {"from": payees[0]})
    release = Payout(SUPPLEMENT + 11, str(merchant), str(usdc), {str(payees[1]): 250})
    vault.releaseHeld(11, merchant, SUPPLEMENT + 11, release.root, 250, {"from": settler})
    assert vault.heldOf(11, merchant) == 0
    _final()
    before = usdc.balanceOf(payees[1])
    vault.claim(release.claim(payees[1]), payees[1], {"from": payees[1]})
    assert usdc.balanceOf(payees[1]) == before + 250
    _conserved(vault, usdc)
