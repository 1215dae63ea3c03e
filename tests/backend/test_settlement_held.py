"""Held royalties end to end on a real chain and database (docs/settlement.md, "Held royalties are
reserved, then released by the dispute's outcome"): reserved with the root and counted in the merchant's
escrow figures and in ``verify settlement``, released to the holder once the dispute clears (once, even by
runs that overlap), returned to the merchant when the content is taken down."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role
from edgeledger.ledger.payout_leaf import held_only_root
from edgeledger.settlement import flows, releases, service
from edgeledger.settlement.corrections import open_corrections
from edgeledger.settlement.held import ReleaseInputs
from edgeledger.settlement.models import HeldState, Settlement, SettlementHeld, SettlementState
from edgeledger.settlement.payouts import PayoutInputs
from edgeledger.settlement.statements import context_from_json, merchant_statement_json
from edgeledger.verify.held_items import Release, Source, release_checks
from edgeledger.verify.package import verify_archive
from edgeledger.verify.rpc import Chain, vault_settlement
from edgeledger.verify.settlement import check_document, recompute
from tests.backend.support.deliveries import close_and_anchor
from tests.backend.support.money import (
    DELIVERY_FEE,
    NET_ROYALTY,
    NOW,
    ROYALTY,
    Money,
    claim,
    earnings,
    release_of,
)
from tests.backend.support.settlement import CARD, deposit
from tests.backend.support.stack import make_caller, rpc
from tests.backend.test_settlement_flow import DAY, DAY0, register_asset

pytestmark = pytest.mark.integration


def test_held_royalties_are_reserved_and_released_to_the_holder_when_the_dispute_clears(money: Money) -> None:
    vault = money.chain.contract("SettlementVault")
    token = money.chain.contract("TestStablecoin")
    shop = money.shops["a"]
    period, notice = money.held_period("a")
    # Reserved with the root: the merchant can no longer withdraw the held royalty.
    assert period.held_total == ROYALTY and period.total == DELIVERY_FEE
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == ROYALTY
    escrow = money.chain.call(vault.functions.escrowOf(shop.key.address, token.address))
    assert escrow == 50_000_000 - DELIVERY_FEE - ROYALTY
    # Still disputed: nothing is released, however often the worker runs.
    money.run(NOW)
    assert money.session.scalar(select(Settlement).where(Settlement.funded_by_pk == period.id)) is None

    money.as_wallet(money.admin, money.registry.functions.clearDispute(money.asset_id, notice))
    money.mine()
    money.run(NOW)
    # Not before the period is final: while it can still be challenged and cancelled, nothing is released.
    assert money.session.scalar(select(Settlement).where(Settlement.funded_by_pk == period.id)) is None
    money.pass_window()
    money.run(NOW)  # the period becomes claimable
    report = money.run(NOW)
    release = release_of(money, period)
    assert report.released == [release.id]
    assert release.kind == "release" and release.sequence == 1
    assert release.period_id == period.period_id + (1 << 32)
    assert release.state == SettlementState.posted, (release.error_code, release.error_message)
    first, second = money.split
    assert money.payouts(release) == {
        first.address.lower(): NET_ROYALTY * 7 // 10,
        second.address.lower(): NET_ROYALTY * 3 // 10,
        money.platform.lower(): ROYALTY - NET_ROYALTY,
    }
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == 0
    # Exactly once: the next runs open no other release.
    money.run(NOW)
    assert (
        len(list(money.session.scalars(select(Settlement).where(Settlement.funded_by_pk == period.id)))) == 1
    )
    # Anyone recomputes the release from its published inputs and the chain's terms at its block.
    checks = money.verify(money.document(release))
    assert checks and all(checks.values()), checks

    rpc(money.settings.eth_rpc_url, "evm_increaseTime", DAY + 1)
    money.mine()
    money.run(NOW)
    assert claim(money, release, first) == NET_ROYALTY * 7 // 10

    # The payee's ledger: earned by the release, claimed; the co-holder's still unclaimed.
    totals = earnings(money, first.address)
    assert totals["earned"] == totals["released"] == totals["claimed"] == NET_ROYALTY * 7 // 10
    assert totals["unclaimed"] == 0
    totals = earnings(money, second.address)
    assert totals["earned"] == totals["unclaimed"] == totals["claimable"] == NET_ROYALTY * 3 // 10
    # ... and in the payee's statement, next to this settlement's lines.
    admin = make_caller(money.app, Role.admin, "admin")
    path = f"/settlement/settlements/{release.id}/payees/{first.address}/statement"
    answer = money.app.get(path, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    ledger = answer.json()["ledger"]
    assert ledger["claimed"]["minor"] == ledger["released"]["minor"] == NET_ROYALTY * 7 // 10
    assert ledger["unclaimed"]["minor"] == 0 and ledger["claimed"]["currency"] == "tUSDC"
    html = money.app.get(path + "?format=html", headers=admin.headers)
    assert html.status_code == 200 and "running ledger" in html.text
    # The release's statement leads to the batches whose receipts earned the royalty, and an auditor
    # gets the very same statement from the published inputs alone (as the audit package verifier does).
    issued = money.app.get(f"/settlement/settlements/{release.id}/statement", headers=admin.headers).json()
    assert [b["batch_id"] for b in issued["batches"]] == json.loads(period.batch_ids_json)
    assert issued["related"][0]["settlement_id"] == period.id
    _, recomputed, _ = recompute(money.document(release))
    assert merchant_statement_json(recomputed, context_from_json(issued)) == issued


def test_a_merchants_choice_of_an_address_that_cannot_settle_does_not_hold_up_its_releases(
    money: Money,
) -> None:
    """A merchant that chose as its settler an address without the role cannot freeze the royalties it
    owes the rights holders: the vault lets any settler release them, and the worker does not wait on
    the choice (its posts stay bound by it)."""
    vault = money.chain.contract("SettlementVault")
    shop = money.shops["a"]
    period, notice = money.held_period("a")
    money.as_wallet(shop.key, vault.functions.chooseSettler(Account.create().address))
    money.as_wallet(money.admin, money.registry.functions.clearDispute(money.asset_id, notice))
    money.mine()
    money.pass_window()
    money.run(NOW)  # the period becomes claimable
    money.run(NOW)  # and its royalty is released
    release = release_of(money, period)
    assert release.state == SettlementState.posted, (release.error_code, release.error_message)
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == 0


def test_royalties_held_for_content_taken_down_go_back_to_the_merchant(money: Money) -> None:
    vault = money.chain.contract("SettlementVault")
    shop = money.shops["a"]
    period, _ = money.held_period("a", take_down=True)
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == ROYALTY
    money.pass_window()
    money.run(NOW)  # the period is final
    money.run(NOW)  # the takedown decides it: a release paying the merchant back
    release = release_of(money, period)
    assert money.payouts(release) == {shop.key.address.lower(): ROYALTY}
    statement = money.statement(release)
    assert [(line.kind, line.amount) for line in statement.line_items] == [("refund", ROYALTY)]
    rpc(money.settings.eth_rpc_url, "evm_increaseTime", DAY + 1)
    money.mine()
    money.run(NOW)
    assert claim(money, release, shop.key) == ROYALTY


#: A licence-only card: deliveries cost nothing (the merchant pays its CDN elsewhere), no platform fee.
ROYALTY_ONLY_CARD = {
    **CARD,
    "delivery": {"EU": {"tiers": [{"up_to_bytes": None, "price_per_gb": 0}]}},
    "platform_fee_bps": 0,
}


@pytest.mark.parametrize("take_down", [False, True], ids=["cleared", "taken_down"])
def test_a_period_whose_every_royalty_is_held_reserves_them_and_pays_them_later(
    money: Money, take_down: bool, tmp_path: Path
) -> None:
    """Nothing else to pay (a licence-only card) and the only asset disputed: the period pays nobody now,
    yet its royalties are owed. They are reserved by a held-only post (total 0, root committing to what
    is held) and released by the dispute's outcome like any held royalty: to the split once
    cleared, back to the merchant once taken down. Before, the period was marked empty and they were lost."""
    vault = money.chain.contract("SettlementVault")
    shop = money.add_shop("licence", ROYALTY_ONLY_CARD)
    period, notice = money.held_period("licence", take_down=take_down)
    assert (period.total, period.payee_count, period.held_total) == (0, 0, ROYALTY)
    token = money.chain.deployment.address_of("TestStablecoin")
    assert period.root == held_only_root(
        period.period_id, shop.key.address, token, [(money.asset_id, ROYALTY)]
    )
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == ROYALTY
    assert money.chain.call(vault.functions.settlementOf(period.period_id, shop.key.address))[4] == 0
    checks = money.verify(money.document(period))
    assert checks["vault held reserve"] and checks["vault root"] and all(checks.values()), checks
    # The merchant's statement says what is held, and pays nobody.
    statement = money.statement(period)
    assert statement.payees == {} and [h.amount for h in statement.held_back] == [ROYALTY]
    # An auditor's package of the period verifies it too (statement rendered from the inputs alone).
    admin = make_caller(money.app, Role.admin, "admin")
    issued = money.app.get(f"/settlement/settlements/{period.id}/statement", headers=admin.headers)
    assert issued.status_code == 200, issued.text
    _, recomputed, tree = recompute(money.document(period))
    assert (
        tree is None
        and merchant_statement_json(recomputed, context_from_json(issued.json())) == issued.json()
    )

    if not take_down:
        money.as_wallet(money.admin, money.registry.functions.clearDispute(money.asset_id, notice))
        money.mine()
    money.pass_window()
    money.run(NOW)  # the period is final
    money.run(NOW)  # and the dispute's outcome releases its royalty
    release = release_of(money, period)
    first, second = money.split
    expected = (
        {shop.key.address.lower(): ROYALTY}
        if take_down
        else {first.address.lower(): ROYALTY * 7 // 10, second.address.lower(): ROYALTY * 3 // 10}
    )
    assert money.payouts(release) == expected
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == 0
    checks = money.verify(money.document(release))
    assert checks and all(checks.values()), checks
    _release_is_checked_against_its_period(money, shop.key.address, period, release, tmp_path)
    rpc(money.settings.eth_rpc_url, "evm_increaseTime", DAY + 1)
    money.mine()
    money.run(NOW)
    payee = shop.key if take_down else first
    assert claim(money, release, payee) == expected[payee.address.lower()]


def _release_is_checked_against_its_period(
    money: Money, merchant: str, period: Settlement, release: Settlement, tmp_path: Path
) -> None:
    """The package's release passes ``release items``; a release whose items or shares are not its
    period's, or whose items a second live release pays again, fails it."""
    scope = {
        "period_start": DAY0,
        "period_end": DAY0 + DAY,
        "legal_basis": "annual audit",
        "merchant": merchant,
    }
    admin = make_caller(money.app, Role.admin, "package admin")
    archive = money.app.post("/audit/packages", json=scope, headers=admin.headers)
    assert archive.status_code == 200, archive.text
    path = tmp_path / f"package-{release.id}.tar.gz"
    path.write_bytes(archive.content)
    report = verify_archive(path, money.settings.eth_rpc_url)
    assert report.ok, [(c.name, c.subject, c.detail) for c in report.checks if not c.ok]
    (items,) = [c for c in report.checks if c.name == "release items"]
    assert items.subject == f"settlements/{release.id}/inputs.json", items

    period_inputs, statement, _ = recompute(money.document(period))
    assert isinstance(period_inputs, PayoutInputs)
    sources = {str(period.id): Source(merchant.lower(), period_inputs, statement)}
    inputs = recompute(money.document(release))[0]
    assert isinstance(inputs, ReleaseInputs)

    def check(*releases: ReleaseInputs) -> list[bool]:
        found = release_checks(
            [Release(f"r{i}", merchant.lower(), True, r) for i, r in enumerate(releases)], sources
        )
        return [c.ok for c in found]

    assert check(inputs) == [True]
    item = inputs.items[0]
    for forged in (
        inputs.model_copy(update={"platform_fee_bps": 10_000}),
        inputs.model_copy(update={"merchant_address": "0x" + "ab" * 20}),
        inputs.model_copy(update={"items": (item.model_copy(update={"asset_id": "999"}),)}),
        inputs.model_copy(update={"items": (item.model_copy(update={"key": "424242:0"}),)}),
    ):
        assert check(forged) == [False], forged
    assert check(inputs, inputs) == [False, False]


def test_two_releases_of_one_periods_held_royalties_verify(money: Money, tmp_path: Path) -> None:
    """Two disputed assets, cleared one after the other: the first release lists both held items but
    pays only the cleared one, the second pays the other. The package's ``release items`` counts what each
    release pays, not what it lists, so both verify."""
    first, second = money.split
    split = [{"recipient": first.address, "bps": 5_000}, {"recipient": second.address, "bps": 5_000}]
    other = register_asset(money.app, money.creator, split=split)
    batches = money.deliver("a", anchor=False) + money.deliver("a", asset_id=other, anchor=False)
    close_and_anchor(money.session, money.settings, money.chain, list(set(batches)), money.node)
    notice = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
    for asset in (money.asset_id, other):
        money.as_wallet(money.admin, money.registry.functions.markDisputed(asset, notice))
    money.mine()
    money.run(NOW)
    period = money.posted("a")
    assert len(money.statement(period).held_back) == 2
    for asset in (money.asset_id, other):
        money.as_wallet(money.admin, money.registry.functions.clearDispute(asset, notice))
        money.mine()
        money.pass_window()
        money.run(NOW)  # the period (then the first release) is final
        money.run(NOW)  # a release of what cleared
    releases = list(money.session.scalars(select(Settlement).where(Settlement.funded_by_pk == period.id)))
    assert len(releases) == 2
    scope = {"period_start": DAY0, "period_end": DAY0 + DAY, "legal_basis": "audit"}
    scope["merchant"] = money.shops["a"].key.address
    admin = make_caller(money.app, Role.admin, "package admin")
    archive = money.app.post("/audit/packages", json=scope, headers=admin.headers)
    assert archive.status_code == 200, archive.text
    path = tmp_path / "package.tar.gz"
    path.write_bytes(archive.content)
    report = verify_archive(path, money.settings.eth_rpc_url)
    assert report.ok, [(c.name, c.subject, c.detail) for c in report.checks if not c.ok]
    assert len([c for c in report.checks if c.name == "release items"]) == 2


def test_a_period_that_charges_nothing_publishes_what_it_priced(money: Money, tmp_path: Path) -> None:
    """A licence-only card and unregistered content only: nothing is charged, so the period is ``empty``
    and never posted, but the receipts it priced at 0 are published like any settlement's inputs, and
    ``verify settlement`` recomputes the same nothing and finds nothing in the vault."""
    shop = money.add_shop("licence", ROYALTY_ONLY_CARD)
    money.deliver("licence", asset_id=0)
    money.run(NOW)
    period = money.settlement("licence")
    assert period is not None and period.state == SettlementState.empty and period.root is None
    admin = make_caller(money.app, Role.admin, "admin")
    answer = money.app.get(f"/settlement/settlements/{period.id}/inputs", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["root"] is None and document["total"] == 0 and len(document["inputs"]["receipts"]) == 1
    checks = money.verify(document)
    assert checks["nothing in the vault"] and all(checks.values()), checks
    # An earlier attempt of the period the vault cancelled is nothing reserved either; a live one is not.
    on_chain = vault_settlement(
        Chain(money.chain.rpc_url), document["vault"], period.period_id, shop.key.address
    )
    for status, ok in ((4, True), (1, False), (2, False)):
        found = {c.name: c.ok for c in check_document(document, replace(on_chain, status=status))}
        assert found["nothing in the vault"] is ok, (status, found)
    # An auditor's package of the merchant's period carries it, and verifies.
    scope = {"period_start": DAY0, "period_end": DAY0 + DAY, "legal_basis": "annual audit"}
    scope["merchant"] = shop.key.address
    archive = money.app.post("/audit/packages", json=scope, headers=admin.headers)
    assert archive.status_code == 200, archive.text
    path = tmp_path / "package.tar.gz"
    path.write_bytes(archive.content)
    report = verify_archive(path, money.settings.eth_rpc_url)
    settled = [c for c in report.checks if c.name == "settlement"]
    assert settled and report.ok, [(c.name, c.detail) for c in report.checks if not c.ok]


def test_a_cancelled_held_only_post_is_not_posted_again_unchanged(money: Money) -> None:
    """A held-only root commits to what is held, not to the block the terms were read at: after the
    merchant's challenge is upheld and the post cancelled, recomputing the same held royalties gives the
    same root, which waits for a decision (``root_cancelled``) instead of reserving them again."""
    vault = money.chain.contract("SettlementVault")
    shop = money.add_shop("licence", ROYALTY_ONLY_CARD)
    period, _ = money.held_period("licence")
    money.cancel(period, shop)
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == 0
    again = flows.recompute(money.session, money.settings, period)
    money.run(NOW)
    money.session.refresh(again)
    assert again.root == period.root and again.terms_block != period.terms_block
    assert (again.state, again.error_code) == (SettlementState.blocked, "root_cancelled")
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == 0


def test_held_royalties_count_in_the_escrow_figures_and_in_verification(money: Money) -> None:
    """What a period needs from escrow is its total and its held royalties: the shortfall a merchant is
    shown, and the reserve once posted, count both. ``verify settlement`` compares the statement's held
    royalties with what the posting reserved, so a settler key that locked more as held fails it."""
    vault = money.chain.contract("SettlementVault")
    token = money.chain.contract("TestStablecoin")
    shop = money.shops["a"]
    money.as_wallet(shop.key, vault.functions.withdraw(token.address, 45_000_000, shop.key.address))
    money.deliver("a")
    money.dispute()
    money.run(NOW)
    waiting = money.settlement("a")
    assert waiting is not None and waiting.error_code == "insufficient_escrow"
    detail = service.account_detail(money.session, money.chain, shop.account)
    assert (detail.escrow, detail.pending) == (5_000_000, DELIVERY_FEE + ROYALTY)
    assert detail.shortfall == DELIVERY_FEE + ROYALTY - 5_000_000  # the held royalty too

    deposit(money.chain, money.admin, shop.key, detail.shortfall)
    money.run(NOW)
    period = money.posted("a")
    assert period.held_total == ROYALTY
    detail = service.account_detail(money.session, money.chain, shop.account)
    assert (detail.escrow, detail.reserved, detail.pending, detail.shortfall) == (
        0,
        DELIVERY_FEE + ROYALTY,
        0,
        0,
    )

    document = money.document(period)
    checks = money.verify(document)
    assert checks["vault held reserve"] and all(checks.values()), checks
    chain = Chain(money.chain.rpc_url)
    on_chain = vault_settlement(
        chain, document["vault"], document["period_id"], document["merchant"], document["posted_block"]
    )
    assert on_chain.held == ROYALTY
    # The same root and total, but more of the escrow locked as held than the statement holds back.
    inflated = replace(on_chain, held=ROYALTY + 1)
    failed = {c.name for c in check_document(document, inflated) if not c.ok}
    assert failed == {"vault held reserve"}


def test_two_runs_at_once_release_held_royalties_once(money: Money, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run B reads the period's held items, then reads the terms from the chain; meanwhile run A (another
    worker, its own session) releases the same items and commits. B must not release them again."""
    vault = money.chain.contract("SettlementVault")
    shop = money.shops["a"]
    period, notice = money.held_period("a")
    money.as_wallet(money.admin, money.registry.functions.clearDispute(money.asset_id, notice))
    money.pass_window()
    money.run(NOW)  # the period becomes claimable: its held royalty can be released now
    row = money.settlement("a")
    assert row is not None and row.state == SettlementState.claimable

    read_terms = releases.read_terms
    run_a: list[list[int]] = []

    def interleaved(*args: Any, **kwargs: Any) -> Any:
        if not run_a:  # B's first chain read: A runs from start to commit in between
            run_a.append([])
            with Session(money.session.get_bind()) as other:
                run_a[0] = releases.open_releases(other, money.chain, money.settings, money.platform)
        return read_terms(*args, **kwargs)

    monkeypatch.setattr(releases, "read_terms", interleaved)
    run_b = releases.open_releases(money.session, money.chain, money.settings, money.platform)
    monkeypatch.undo()

    (release_id,) = run_a[0]
    assert run_b == []
    money.session.expire_all()
    released = list(money.session.scalars(select(Settlement).where(Settlement.funded_by_pk == period.id)))
    assert [r.id for r in released] == [release_id]
    held = list(
        money.session.scalars(select(SettlementHeld).where(SettlementHeld.settlement_pk == period.id))
    )
    assert held and all(h.release_pk == release_id and h.state == HeldState.released for h in held)
    # The one release is posted and drains the period's held reserve once.
    money.run(NOW)
    assert release_of(money, period).state == SettlementState.posted
    assert money.chain.call(vault.functions.heldOf(period.period_id, shop.key.address)) == 0


def test_a_release_whose_sequence_another_run_took_is_skipped_and_opened_again(
    money: Money, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run B has claimed the held items and read the period's next sequence number when another worker
    opens a correction of the period under that number and commits: B writes nothing and does not fail;
    the next run releases the items under the following number."""
    if money.session.get_bind().dialect.name == "sqlite":
        pytest.skip("SQLite serialises writers: B reads the sequence under its write lock")
    shop = money.shops["a"]
    period, _ = money.held_period("a", take_down=True)
    money.pass_window()
    money.run(NOW)  # the period is final; the takedown decides its held royalty
    money.deliver("a", count=10, late=True)  # a late batch: the next run opens a correction

    next_sequence = releases.next_sequence
    corrections: list[int] = []

    def interleaved(*args: Any, **kwargs: Any) -> int:
        sequence = next_sequence(*args, **kwargs)
        with Session(money.session.get_bind()) as other:  # another worker's run, meanwhile
            corrections.extend(open_corrections(other))
        return sequence

    monkeypatch.setattr(releases, "next_sequence", interleaved)
    assert releases.open_releases(money.session, money.chain, money.settings, money.platform) == []
    monkeypatch.undo()

    (correction_id,) = corrections
    correction = money.session.get(Settlement, correction_id)
    assert correction is not None and correction.sequence == 1
    held = list(
        money.session.scalars(select(SettlementHeld).where(SettlementHeld.settlement_pk == period.id))
    )
    assert held and all(h.state == HeldState.held and h.release_pk is None for h in held)
    money.run(NOW)
    release = release_of(money, period)
    assert release.sequence == 2 and release.state == SettlementState.posted
    assert money.payouts(release) == {shop.key.address.lower(): ROYALTY}
