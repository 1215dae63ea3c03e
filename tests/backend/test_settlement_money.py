"""Money follows chain truth: end-to-end on a real chain and database (docs/settlement.md, "Who is paid").

* terms are read from ContentRegistry at a recorded block, never from the database's copy: a split
  changed on chain, a dispute, a reassignment after a dispute and an asset registered on chain only all
  reach the next settlement; ``verify settlement`` re-reads the terms at that block and fails on altered
  ones;
* unregistered content (asset 0) pays the delivery fee and its operator, no royalty;
* a silent node holds back only the merchants whose records it carries, until an admin abandons its batch
  (who, when, why in the compliance log and the statement);
* records of a source the merchant does not authorise are not charged, and are listed;
* late records are paid by a correction that charges them alone (the period's bill adjustments are not
  applied again, nor can they block it), within the merchant's cap for the whole period.

Held royalties: test_settlement_held.py; the shops, asset and helpers: tests/backend/support/money.py.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from hexbytes import HexBytes
from sqlalchemy import select
from typer.testing import CliRunner

from edgeledger.assets.models import Asset
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainError
from edgeledger.cli import app as cli_app
from edgeledger.compliance.models import ComplianceEvent
from edgeledger.deliveries import signals
from edgeledger.deliveries.ingest import _AssetResolver
from edgeledger.deliveries.models import (
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    FraudFlag,
    FraudFlagRecord,
)
from edgeledger.indexer.models import IndexedAsset
from edgeledger.ipfs.cid import cid_of_bytes
from edgeledger.settlement import flows, service
from edgeledger.settlement.models import Settlement, SettlementState
from edgeledger.settlement.rates import FxRate
from edgeledger.verify.package import verify_archive
from edgeledger.verify.result import Report
from edgeledger.verify.rpc import Chain
from edgeledger.verify.settlement import chain_terms, check_document, recompute, terms_block_check
from tests.backend.support.deliveries import (
    add_records,
    anchor_batch,
    authorise_source,
    close_and_anchor,
    close_batch,
    register_source,
)
from tests.backend.support.money import (
    DELIVERY_FEE,
    NET_ROYALTY,
    NEXT,
    NOW,
    ROYALTY,
    Money,
    claim,
    operator_of,
    release_of,
)
from tests.backend.support.packages import tar, untar
from tests.backend.support.settlement import delivery_records, deposit
from tests.backend.support.stack import make_caller, rpc, self_register
from tests.backend.test_settlement_flow import CARD, DAY, DAY0, GB

pytestmark = pytest.mark.integration


def test_a_split_changed_on_chain_is_what_the_next_period_pays(money: Money) -> None:
    first, second = (a.address.lower() for a in money.split)
    money.deliver("a", period=DAY0)
    money.deliver("a", period=DAY0 + DAY)
    money.run(NOW)
    row = money.posted("a")
    paid = money.payouts(row)
    assert paid[first] == NET_ROYALTY * 7 // 10 and paid[second] == NET_ROYALTY * 3 // 10

    # The rights holder changes the split from its own wallet; nobody reads the asset through the API.
    third = Account.create()
    fn = money.registry.functions.updateSplit(money.asset_id, [third.address], [10_000])
    money.as_wallet(money.creator.account, fn)
    money.mine()  # one confirmation on top
    change_block = money.chain.block_number() - 1
    mirrored = money.session.get(Asset, money.asset_id)
    assert mirrored is not None and {s.recipient.lower() for s in mirrored.split} == {first, second}

    money.run(NEXT)
    row = money.posted("a", DAY0 + DAY)
    paid = money.payouts(row)
    assert paid[third.address.lower()] == NET_ROYALTY
    assert first not in paid and second not in paid
    assert row.terms_block is not None and row.terms_block >= change_block

    # After the challenge window the new recipient pulls its royalty from the vault.
    rpc(money.settings.eth_rpc_url, "evm_increaseTime", DAY + 1)
    money.mine()
    money.run(NEXT)
    proof = flows.payout_tree(money.session, row).proof(third.address)
    claim = (row.period_id, money.shops["a"].key.address, proof.amount, [HexBytes(p) for p in proof.proof])
    vault = money.chain.contract("SettlementVault")
    money.as_wallet(third, vault.functions.claim(claim, third.address))
    token = money.chain.contract("TestStablecoin")
    assert money.chain.call(token.functions.balanceOf(third.address)) == NET_ROYALTY

    # Anyone re-reads the terms at the recorded block and finds the published ones.
    document = money.document(row)
    assert document["terms_block"] == row.terms_block and document["inputs"]["terms_block"] == row.terms_block
    checks = money.verify(document)
    assert checks and all(checks.values()), checks
    # Publishing the old split instead fails the terms check (and the digest), whatever the root says.
    document["inputs"]["assets"][0]["recipients"] = [
        {"address": first, "bps": 7_000},
        {"address": second, "bps": 3_000},
    ]
    failed = {name for name, ok in money.verify(document).items() if not ok}
    assert {"terms at the recorded block", "inputs digest"} <= failed


def test_a_dispute_on_chain_holds_royalties_and_a_reassignment_pays_the_rightful_holder(money: Money) -> None:
    first, second = (a.address.lower() for a in money.split)
    money.deliver("a", period=DAY0)
    money.deliver("a", period=DAY0 + DAY)
    notice = money.dispute()
    money.run(NOW)
    row = money.posted("a")
    statement = money.statement(row)
    assert [(h.asset_id, h.reason, h.amount) for h in statement.held_back] == [
        (str(money.asset_id), "disputed", ROYALTY)
    ]
    paid = money.payouts(row)
    assert first not in paid and second not in paid
    assert row.total == DELIVERY_FEE  # the operators and the platform's margin only
    terms = {a["asset_id"]: a for a in money.document(row)["inputs"]["assets"]}
    assert terms[str(money.asset_id)]["status"] == "disputed"

    # The arbiter finds for another claimant: the token and the revenue move to it.
    rightful = Account.create().address
    # Not before the asset was contested for the registry's REASSIGN_DELAY (a stolen arbiter key is seen
    # that long before it can move any revenue).
    not_before = int(money.chain.call(money.registry.functions.reassignableAt(money.asset_id)))
    latest = int(money.chain.w3.eth.get_block("latest")["timestamp"])
    assert not_before > latest + DAY  # the deployment's delay exceeds the timelock's (over a day)
    rpc(money.settings.eth_rpc_url, "evm_increaseTime", not_before - latest)
    money.mine()
    fn = money.registry.functions.reassignRights(money.asset_id, rightful, notice)
    money.as_wallet(money.admin, fn)
    money.pass_window()  # the first period is final: its held royalty can be released
    money.run(NEXT)
    money.run(NEXT)
    row = money.posted("a", DAY0 + DAY)
    paid = money.payouts(row)
    assert paid[rightful.lower()] == NET_ROYALTY and first not in paid and second not in paid
    assert money.statement(row).held_back == ()
    terms = {a["asset_id"]: a for a in money.document(row)["inputs"]["assets"]}
    assert terms[str(money.asset_id)]["holder"] == rightful.lower()
    # And the first period's held royalty is released to the rightful holder too.
    first_period = money.settlement("a")
    assert first_period is not None
    release = release_of(money, first_period)
    assert money.payouts(release)[rightful.lower()] == NET_ROYALTY


def _register_from_a_wallet(
    money: Money, valid_from: int = 0, valid_until: int = 0
) -> tuple[int, LocalAccount, str, tuple[Any, ...]]:
    """New content registered on chain by a creator's own wallet, licensed worldwide for ``[valid_from,
    valid_until]`` (0: open-ended), all royalties to one payee: (asset id, creator, payee, the
    registration tuple)."""
    creator, payee, content = Account.create(), Account.create().address, secrets.token_bytes(64)
    registration = (
        HexBytes(secrets.token_bytes(32)),
        cid_of_bytes(content),
        cid_of_bytes(b"{}" + content),
        creator.address,
        0,
        False,
        ((1 << 249) - 1, valid_from, valid_until, 0, ""),
        [payee],
        [10_000],
        0,
    )
    self_register(lambda call: money.as_wallet(creator, call), money.registry, registration)
    return int(money.chain.call(money.registry.functions.totalAssets())), creator, payee, registration


def test_an_asset_registered_only_on_chain_settles_like_any_other(money: Money) -> None:
    # A creator registers from its own wallet, never through this API.
    asset_id, creator, payee, registration = _register_from_a_wallet(money)
    content_cid = registration[1]
    assert money.session.get(Asset, asset_id) is None

    # Ingestion finds it through the chain indexer's projection.
    money.session.add(
        IndexedAsset(
            asset_id=str(asset_id),
            content_hash="0x" + bytes(registration[0]).hex(),
            creator=creator.address,
            owner=creator.address,
            parent_id="0",
            content_cid=content_cid,
            metadata_cid=registration[2],
            registered_block=money.chain.block_number(),
            registered_tx="0x" + "00" * 32,
        )
    )
    money.session.commit()
    assert _AssetResolver(money.session)("a.shop.example", f"/ipfs/{content_cid}/video.mp4") == asset_id

    money.deliver("a", asset_id=asset_id)
    money.mine()
    money.run(NOW)
    row = money.posted("a")
    assert money.payouts(row)[payee.lower()] == NET_ROYALTY


# ------------------------------------------------------------------------------------------------------
# Every payable delivery is paid
# ------------------------------------------------------------------------------------------------------


def test_unregistered_content_pays_the_delivery_fee_and_itsoperator_of(money: Money) -> None:
    money.deliver("a", asset_id=0)
    money.run(NOW)
    row = money.posted("a")
    statement = money.statement(row)
    assert statement.charge == DELIVERY_FEE and statement.royalties == {}
    assert money.payouts(row) == {
        operator_of(money): DELIVERY_FEE * 7 // 10,
        money.platform.lower(): DELIVERY_FEE * 3 // 10,
    }
    assert row.total == DELIVERY_FEE
    checks = money.verify(money.document(row))
    assert all(checks.values()), checks


def test_late_records_are_paid_once_by_a_correction_linked_from_the_period(money: Money) -> None:
    vault = money.chain.contract("SettlementVault")
    token = money.chain.contract("TestStablecoin")
    shop = money.shops["a"]
    money.deliver("a")
    money.run(NOW)
    period = money.posted("a")
    assert period.total == DELIVERY_FEE + ROYALTY

    # 10 more deliveries of the period reach the node after its batch closed: a correction batch, anchored
    # after the period was posted.
    (late,) = money.deliver("a", count=10, late=True)
    assert late.kind == "correction" and late.correction_seq == 1
    report = money.run(NOW)
    (correction_id,) = report.corrections
    correction = money.session.get(Settlement, correction_id)
    assert correction is not None
    money.session.refresh(correction)
    assert correction.kind == "correction" and correction.sequence == 1
    assert correction.period_id == period.period_id + (1 << 32)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    assert json.loads(correction.batch_ids_json) == [late.batch_id]
    assert correction.total == (DELIVERY_FEE + ROYALTY) // 5  # the 10 late deliveries, priced as the period
    assert correction.terms_block == period.terms_block
    first, second = (a.address.lower() for a in money.split)
    assert money.payouts(correction) == {
        operator_of(money): DELIVERY_FEE * 7 // 10 // 5,
        money.platform.lower(): DELIVERY_FEE * 3 // 10 // 5 + (ROYALTY - NET_ROYALTY) // 5,
        first: NET_ROYALTY * 7 // 10 // 5,
        second: NET_ROYALTY * 3 // 10 // 5,
    }
    on_chain = money.chain.call(vault.functions.settlementOf(correction.period_id, shop.key.address))
    assert on_chain[4] == correction.total  # charged to the merchant's escrow under its own id
    escrow = money.chain.call(vault.functions.escrowOf(shop.key.address, token.address))
    assert escrow == 50_000_000 - period.total - correction.total
    # Exactly once: the next runs open no other correction, and the period's batches are not in it.
    assert money.run(NOW).corrections == [] and money.run(NOW).corrections == []
    assert late.batch_id not in json.loads(period.batch_ids_json)
    checks = money.verify(money.document(correction))
    assert checks and all(checks.values()), checks

    # The period's statement links the correction (and the correction's links back).
    admin = make_caller(money.app, Role.admin, "admin")
    answer = money.app.get(f"/settlement/settlements/{period.id}/statement", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert [(r["settlement_id"], r["kind"], r["total"]) for r in answer.json()["related"]] == [
        (correction.id, "correction", correction.total)
    ]
    link = answer.json()["related"][0]["statement"]
    # Absolute, so a saved statement's links work outside the server, and it says how to authenticate.
    assert link == f"http://testserver/settlement/settlements/{correction.id}/statement"
    assert answer.json()["links"]["base"] == "http://testserver"
    assert "X-API-Key" in answer.json()["links"]["authentication"]
    assert all(
        b["batch"].startswith("http://testserver/deliveries/batches/") for b in answer.json()["batches"]
    )
    html = money.app.get(f"/settlement/settlements/{period.id}/statement?format=html", headers=admin.headers)
    assert html.status_code == 200 and f"/settlement/settlements/{correction.id}/statement" in html.text
    back = money.app.get(link, headers=admin.headers)
    assert back.status_code == 200, back.text
    assert [r["settlement_id"] for r in back.json()["related"]] == [period.id]

    # After the window a rights holder claims its share of the correction.
    rpc(money.settings.eth_rpc_url, "evm_increaseTime", DAY + 1)
    money.mine()
    money.run(NOW)
    assert claim(money, correction, money.split[0]) == NET_ROYALTY * 7 // 10 // 5


def _settle_with_bill(money: Money, shop: str, bill: str, decide: dict[str, int]) -> Settlement:
    """Imports the CDN's ``bill`` of the shop's period DAY0 and settles it: each case the bill opens is
    decided (``decide``: region -> adjustment, 0 accepts), then the period is posted."""
    account, user = money.shops[shop].account, money.shops[shop].user
    service.import_billing(money.session, money.settings, account, DAY0, "bill.csv", bill.encode(), None)
    money.session.commit()
    money.run(NOW)
    row = money.settlement(shop)
    assert row is not None and row.error_code == "reconciliation_open", (row.state, row.error_code)
    cases = service.cases_of(money.session, user.id, DAY0)
    assert sorted(c.region for c in cases) == sorted(decide)
    for case in cases:
        adjustment = decide[case.region]
        action = "adjust" if adjustment else "accept"
        service.decide_case(money.session, case, user, action, adjustment, "checked with the CDN")
    money.session.commit()
    money.run(NOW)
    return money.posted(shop)


def _next_correction(money: Money, shop: str, count: int) -> Settlement:
    """``count`` more late deliveries of ``shop``'s period and the one correction the next run opens."""
    money.deliver(shop, count=count, late=True)
    (correction_id,) = money.run(NOW).corrections
    correction = money.session.get(Settlement, correction_id)
    assert correction is not None
    money.session.refresh(correction)
    return correction


def _correction_of(money: Money, period: Settlement) -> Settlement:
    report = money.run(NOW)
    (correction_id,) = report.corrections
    correction = money.session.get(Settlement, correction_id)
    assert correction is not None
    money.session.refresh(correction)
    assert correction.period_id == period.period_id + (1 << 32)
    return correction


def _late_records_of_new_content(money: Money) -> tuple[Settlement, Settlement, int, str]:
    """Shop a's period posted, then content registered after its terms block and ten late records of
    it: the period, the correction that counts them, the new asset's id and its payee."""
    money.deliver("a")
    money.run(NOW)
    period = money.posted("a")
    new_asset, _, payee, _ = _register_from_a_wallet(money)
    money.mine()
    money.deliver("a", count=10, late=True, asset_id=new_asset)
    return period, _correction_of(money, period), new_asset, payee


def test_late_records_of_content_registered_after_the_periods_block_are_priced_as_unregistered(
    money: Money,
) -> None:
    """A correction reads terms at its period's block. Content registered after that block was not
    registered when delivered (the block follows the period's end): its late records pay the delivery
    fee as unregistered content, as they would have had they arrived in time, instead of blocking the
    correction (``asset_unknown``) and every later one of the period for good. The receipts' keys still
    name the asset, and ``verify settlement`` checks the registry did not know it at the block."""
    period, correction, new_asset, payee = _late_records_of_new_content(money)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    statement = money.statement(correction)
    assert statement.royalties == {} and statement.delivery_fees == {"EU": DELIVERY_FEE // 5}
    assert payee.lower() not in money.payouts(correction)
    document = money.document(correction)
    receipts = document["inputs"]["receipts"]
    assert receipts and all(r["asset_id"] == "0" and f":{new_asset}:" in r["key"] for r in receipts)
    checks = money.verify(document)
    assert checks and all(checks.values()), checks
    # A later late batch of the period is not held up behind it.
    second = _next_correction(money, "a", 5)
    assert second.state == SettlementState.posted, (second.error_code, second.error_message)
    # The period's receipts of an asset the registry did know, priced as unregistered (its royalty gone):
    # the terms check reads the asset their keys name and finds it missing from the published terms.
    forged = money.document(period)
    for receipt in forged["inputs"]["receipts"]:
        receipt["asset_id"] = "0"
    forged["inputs"]["assets"] = []
    terms = chain_terms(Chain(money.chain.rpc_url), forged["registry"], recompute(forged)[0])
    found = {c.name: c for c in check_document(forged, None, terms)}
    assert not found["terms at the recorded block"].ok, found
    assert f"asset {money.asset_id}" in found["terms at the recorded block"].detail


def test_the_terms_block_is_checked_to_follow_the_periods_end_and_precede_the_posting(money: Money) -> None:
    """A terms block before the period's end could predate a dispute, a transfer or a split change; one
    after the posting was not what the posting priced: ``verify settlement`` fails both."""
    money.deliver("a")
    money.run(NOW)
    document = money.document(money.posted("a"))
    chain = Chain(money.chain.rpc_url)
    inputs = recompute(document)[0]
    assert terms_block_check(chain, document, inputs).ok
    # (the test chain's blocks all follow the test period's end: a period ending after the block stands in)
    early = inputs.model_copy(update={"period_end": chain.block_timestamp(inputs.terms_block) + 1})
    check = terms_block_check(chain, document, early)
    assert not check.ok and "before the period's end" in check.detail, check
    late = {**document, "posted_block": inputs.terms_block - 1}
    check = terms_block_check(chain, late, inputs)
    assert not check.ok and "after the posting's block" in check.detail, check


def _flagged_batch(money: Money, flagged: int) -> FraudFlag:
    """50 deliveries of shop a in one batch, ``flagged`` of them under an open fraud flag (excluded until
    reviewed), anchored."""
    records = delivery_records(DAY0, 50, 2 * GB, money.shops["a"].host)
    (batch,) = add_records(money.session, money.settings, money.source, records, asset_id=money.asset_id)
    close_batch(money.session, money.settings, batch)
    ids = money.session.scalars(select(DeliveryRecordRow.id).where(DeliveryRecordRow.batch_pk == batch.id))
    flag = FraudFlag(batch_pk=batch.id, signal="requests_per_client", subject="x", record_count=flagged)
    money.session.add(flag)
    money.session.flush()
    for record_id in list(ids)[:flagged]:
        money.session.add(FraudFlagRecord(flag_pk=flag.id, record_pk=record_id))
        row = money.session.get(DeliveryRecordRow, record_id)
        assert row is not None
        row.excluded = True
    money.session.commit()
    anchor_batch(money.session, money.chain, batch, money.node)
    return flag


@pytest.mark.parametrize("decision", ["dismissed", "confirmed"])
def test_a_batch_under_fraud_review_is_billed_once_the_review_is_decided(money: Money, decision: str) -> None:
    """Half of a batch's records are under an open fraud flag when the period settles. The batch waits
    for the review (listed on the period's statement) instead of being counted without them: counted,
    the batch would belong to the period, and records a dismissal cleared later would never be billed.
    Once decided, a correction bills what the review left: all 50 deliveries, or the 25 unflagged."""
    flag = _flagged_batch(money, 25)
    money.run(NOW)
    period = money.settlement("a")
    assert period is not None and period.state == SettlementState.empty, period.state
    waiting = json.loads(period.unbillable_json or "[]")
    assert [(u["kind"], u["records"]) for u in waiting] == [("fraud_review", 50)]
    assert money.run(NOW).corrections == []  # nothing to bill while the review is open

    signals.review_flag(money.session, flag, signals.FlagReview(decision=decision, reason="reviewed"), 1)
    money.session.commit()
    correction = _correction_of(money, period)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    whole = DELIVERY_FEE + ROYALTY  # 50 deliveries of 2 GB
    assert correction.total == (whole if decision == "dismissed" else whole // 2)


def test_a_batch_under_review_is_still_compared_with_the_cdns_bill(money: Money) -> None:
    """The CDN bills the deliveries of a batch under review like any other. Compared with the period's
    billed receipts alone, the bill would open a case, and an adjustment for it would charge them a
    second time once a correction bills them: the batch's unflagged deliveries count on our side."""
    shop = money.shops["a"]
    _flagged_batch(money, 25)  # 25 unflagged deliveries of 2 GB under review
    key = Account.create()  # and a clean batch of another source: 50 deliveries of 2 GB
    second = register_source(
        money.session, money.chain, "edge-ams", provider="edgeledger", signer=key.address
    )
    authorise_source(money.session, shop.user.id, second)
    clean = money.deliver("a", source=second, anchor=False)
    close_and_anchor(money.session, money.settings, money.chain, clean, key)
    service.add_fx_rate(money.session, FxRate.of("ecb", DAY0, "USD", "TUSDC", "1"), created_by=None)
    bill = f"date,region,bytes,requests,amount,currency\n2023-11-14,EU,{150 * GB},75,12.75,USD\n".encode()
    service.import_billing(
        money.session, money.settings, shop.account, DAY0, "bill.csv", bill, imported_by=None
    )
    money.session.commit()
    money.run(NOW)
    cases = service.cases_of(money.session, shop.user.id, DAY0)
    assert cases == [], [
        (c.reasons, c.ours_bytes, c.theirs_bytes, c.ours_amount, c.theirs_amount) for c in cases
    ]
    period = money.posted("a")
    assert period.total == DELIVERY_FEE + ROYALTY  # the clean batch; the other waits for its review


def test_a_correction_does_not_charge_the_periods_bill_adjustment_again(money: Money) -> None:
    vault = money.chain.contract("SettlementVault")
    token = money.chain.contract("TestStablecoin")
    shop = money.shops["a"]
    money.deliver("a")
    # The CDN billed 110 GB where 100 GB were anchored; the merchant adds 0.10 tUSDC to the period's fee.
    bill = f"date,region,bytes,requests,amount,currency\n2023-11-14,EU,{110 * GB},50,9.35,USD\n"
    period = _settle_with_bill(money, "a", bill, {"EU": 100_000})
    assert period.total == DELIVERY_FEE + ROYALTY + 100_000

    money.deliver("a", count=10, late=True)
    correction = _correction_of(money, period)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    # The 10 late deliveries alone: the adjustment was a one-time amount of the period's bill.
    assert correction.total == (DELIVERY_FEE + ROYALTY) // 5
    statement = money.statement(correction)
    assert statement.delivery_fees == {"EU": DELIVERY_FEE // 5} and statement.decisions == ()
    escrow = money.chain.call(vault.functions.escrowOf(shop.key.address, token.address))
    assert escrow == 50_000_000 - (DELIVERY_FEE + ROYALTY + 100_000) - (DELIVERY_FEE + ROYALTY) // 5
    # The published inputs carry no decision, and recompute to the vault's root.
    assert money.document(correction)["inputs"]["decisions"] == []
    checks = money.verify(money.document(correction))
    assert checks and all(checks.values()), checks


def test_a_negative_adjustment_of_a_region_without_late_records_does_not_block_the_correction(
    money: Money,
) -> None:
    na = {"tiers": [{"up_to_bytes": None, "price_per_gb": 85_000}]}
    money.add_shop("c", {**CARD, "delivery": {**CARD["delivery"], "NA": na}})
    batches = money.deliver("c", anchor=False)  # 100 GB in EU
    batches += money.deliver(
        "c", region="NA", country="US", asset_id=0, count=10, anchor=False
    )  # 20 GB in NA
    close_and_anchor(money.session, money.settings, money.chain, list(set(batches)), money.node)
    # The CDN billed only 10 GB in NA: the merchant takes 0.85 tUSDC off NA's 1.70 (the bill is in USD,
    # so the EU key opens a case too, accepted).
    bill = (
        "date,region,bytes,requests,amount,currency\n"
        f"2023-11-14,EU,{100 * GB},50,8.50,USD\n2023-11-14,NA,{10 * GB},10,0.85,USD\n"
    )
    period = _settle_with_bill(money, "c", bill, {"EU": 0, "NA": -850_000})
    assert period.total == DELIVERY_FEE + ROYALTY + 1_700_000 - 850_000

    money.deliver("c", count=10, late=True)  # late records in EU only
    correction = _correction_of(money, period)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    assert correction.total == (DELIVERY_FEE + ROYALTY) // 5
    assert money.statement(correction).delivery_fees == {"EU": DELIVERY_FEE // 5}


def test_a_correction_continues_the_periods_volume_tiers(money: Money) -> None:
    """0.085 per GB up to 100 GB, 0.0425 beyond: the period's 100 GB filled the first tier, so 20 late GB
    cost 0.85 tUSDC, not 1.70 at the first tier's price. The period and its correction together charge what
    the period would have charged with every record in it."""
    tiers = [{"up_to_bytes": 100 * GB, "price_per_gb": 85_000}, {"up_to_bytes": None, "price_per_gb": 42_500}]
    money.add_shop("t", {**CARD, "delivery": {"EU": {"tiers": tiers}}})
    money.deliver("t")  # 100 GB
    money.run(NOW)
    period = money.posted("t")
    assert period.total == DELIVERY_FEE + ROYALTY

    money.deliver("t", count=10, late=True)  # 20 GB more
    correction = _correction_of(money, period)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    assert money.statement(correction).delivery_fees == {"EU": 850_000}
    assert correction.total == 850_000 + ROYALTY // 5
    whole = 100 * 85_000 + 20 * 42_500  # the period's fee with all 120 GB in it
    assert money.statement(period).delivery_fees["EU"] + 850_000 == whole
    # The late fee goes to the late records' operator and the platform's margin, at the card's shares.
    assert money.payouts(correction)[operator_of(money)] == 850_000 * 7 // 10
    # Published and checked: the usage the correction was priced on top of.
    document = money.document(correction)
    assert document["version"] == 4
    assert document["inputs"]["prior_usage"] == [
        {"region": "EU", "bytes": 100 * GB, "requests": 50, "fee": DELIVERY_FEE}
    ]
    checks = money.verify(document)
    assert checks and all(checks.values()), checks
    # A second correction goes on from both.
    second = _next_correction(money, "t", 5)
    assert second.sequence == 2 and second.state == SettlementState.posted, second.error_code
    assert money.document(second)["inputs"]["prior_usage"] == [
        {"region": "EU", "bytes": 120 * GB, "requests": 60, "fee": DELIVERY_FEE + 850_000}
    ]
    assert money.statement(second).delivery_fees == {"EU": 10 * 42_500}


def test_a_periods_new_attempt_is_priced_against_its_live_corrections(money: Money, tmp_path: Path) -> None:
    """The period (80 GB) posted, a correction of 20 late GB priced on top of it (1.70), then the period
    cancelled by the merchant's challenge while 20 more late GB arrive: the new attempt counts 100 GB and
    charges what 120 GB cost less what the live correction charged, so the live settlements together
    charge the fee of all their usage (9.35), not 8.50 + 1.70."""
    tiers = [{"up_to_bytes": 100 * GB, "price_per_gb": 85_000}, {"up_to_bytes": None, "price_per_gb": 42_500}]
    shop = money.add_shop("t", {**CARD, "delivery": {"EU": {"tiers": tiers}}})
    money.deliver("t", count=40)  # 80 GB
    money.run(NOW)
    period = money.posted("t")
    money.deliver("t", count=10, late=True)  # 20 GB
    correction = _correction_of(money, period)
    assert money.statement(correction).delivery_fees == {"EU": 1_700_000}

    money.cancel(period, shop)
    money.deliver("t", count=10, late=True)  # 20 GB more, while the period is cancelled
    again = flows.recompute(money.session, money.settings, period)
    money.run(NOW)
    money.session.refresh(again)
    assert again.state == SettlementState.posted, (again.error_code, again.error_message)
    whole = 100 * 85_000 + 20 * 42_500  # 120 GB
    assert money.statement(again).delivery_fees == {"EU": whole - 1_700_000}
    assert money.document(again)["inputs"]["prior_usage"] == [
        {"region": "EU", "bytes": 20 * GB, "requests": 10, "fee": 1_700_000}
    ]
    checks = money.verify(money.document(again))
    assert checks and all(checks.values()), checks
    # An auditor's package of the period verifies all three settlements: the cancelled attempt against its
    # own posting (the vault now holds the new attempt's root under the same id), and the period's fees.
    report = _audit(money, shop.key.address, tmp_path)
    assert report.ok, [(c.name, c.subject, c.detail) for c in report.checks if not c.ok]
    (fees,) = [c for c in report.checks if c.name == "period fees"]
    assert "2 live settlement(s)" in fees.detail, fees.detail
    cancelled = next(c for c in report.checks if c.subject == f"settlements/{period.id}/inputs.json")
    assert cancelled.name == "settlement" and cancelled.ok, cancelled.detail
    (complete,) = [c for c in report.checks if c.name == "period settlements"]
    assert "each of the 3 root(s)" in complete.detail, complete.detail
    # A package that leaves the live correction out: the vault still has it, and the new attempt's stated
    # prior usage (the correction's) is not what the package's live settlements counted.
    left_out = _audit(money, shop.key.address, tmp_path, drop=f"settlements/{correction.id}/")
    subject = f"{shop.key.address.lower()} period {period.period_id}"
    assert _failed(left_out) == {("period settlements", subject), ("period fees", subject)}
    # Or that leaves the live new attempt out, keeping its cancelled one under the same vault id.
    left_out = _audit(money, shop.key.address, tmp_path, drop=f"settlements/{again.id}/")
    assert ("period settlements", subject) in _failed(left_out), _failed(left_out)


def test_a_release_after_the_platform_address_moved_still_verifies(money: Money, tmp_path: Path) -> None:
    """The platform's address is the server's configuration when it releases: a release paying the
    platform at its new address is the period's release all the same."""
    period, notice = money.held_period("a")
    money.as_wallet(money.admin, money.registry.functions.clearDispute(money.asset_id, notice))
    money.mine()
    money.pass_window()
    money.run(NOW)
    money.settings = money.settings.model_copy(
        update={"settlement_platform_address": Account.create().address}
    )
    money.run(NOW)
    release = release_of(money, period)
    assert release.state == SettlementState.posted, (release.error_code, release.error_message)
    report = _audit(money, money.shops["a"].key.address, tmp_path)
    assert report.ok, [(c.name, c.subject, c.detail) for c in report.checks if not c.ok]


def test_a_correction_after_the_merchants_escrow_moved_is_checked_with_its_period(
    money: Money, tmp_path: Path
) -> None:
    """An admin moved the merchant's escrow to a new address between the period and its correction: the
    server prices the correction on top of the period all the same, and the package's period fee check
    takes both together (one merchant's package), not each address on its own."""
    tiers = [{"up_to_bytes": 100 * GB, "price_per_gb": 85_000}, {"up_to_bytes": None, "price_per_gb": 42_500}]
    shop = money.add_shop("t", {**CARD, "delivery": {"EU": {"tiers": tiers}}})
    money.deliver("t")  # 100 GB
    money.run(NOW)
    period = money.posted("t")
    new = Account.create()
    rpc(money.settings.eth_rpc_url, "anvil_setBalance", new.address, hex(10**21))
    deposit(money.chain, money.admin, new, 50_000_000)
    token = money.chain.deployment.address_of("TestStablecoin")
    params = service.AccountParams(address=new.address, token=token, token_symbol="tUSDC", token_decimals=6)
    service.upsert_account(money.session, money.settings, shop.user, params, now=NOW)
    money.session.commit()
    money.deliver("t", count=10, late=True)
    correction = _correction_of(money, period)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    report = _audit(money, new.address, tmp_path)
    assert report.ok, [(c.name, c.subject, c.detail) for c in report.checks if not c.ok]
    (fees,) = [c for c in report.checks if c.name == "period fees"]
    assert "2 live settlement(s)" in fees.detail, fees.detail


def test_an_attempt_adopted_without_its_block_and_replaced_still_verifies(
    money: Money, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A post whose receipt the worker stopped waiting for is adopted by the next run without its block;
    once it is cancelled and a new attempt posted, the auditor's verifier finds the old attempt's posting
    among the vault's events instead of comparing it with the new root."""
    shop = money.shops["a"]
    money.deliver("a", count=40)
    real = type(money.chain).wait_for_receipt
    calls = {"n": 0}

    def gives_up_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        receipt = real(self, *args, **kwargs)
        if calls["n"] == 1:  # mined, but the worker stops waiting
            raise ChainError("timed out waiting for the receipt")
        return receipt

    monkeypatch.setattr(type(money.chain), "wait_for_receipt", gives_up_once)
    assert money.run(NOW).retryable
    money.run(NOW)  # follows: adopts its own root
    period = money.posted("a")
    assert period.block_number is None
    money.cancel(period, shop)
    money.deliver("a", count=10, late=True)
    again = flows.recompute(money.session, money.settings, period)
    money.run(NOW)
    money.session.refresh(again)
    assert again.state == SettlementState.posted, (again.error_code, again.error_message)
    report = _audit(money, shop.key.address, tmp_path)
    assert report.ok, [(c.name, c.subject, c.detail) for c in report.checks if not c.ok]


def test_a_misstated_prior_usage_is_caught_by_the_period_fee_check(
    money: Money, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A dishonest server prices a correction as if the period had counted nothing (its late 20 GB at the
    first tier: 1.70 instead of 0.85). The correction recomputes from its own inputs (``verify
    settlement`` passes: it proves the payouts follow from the stated prior usage, not that the statement
    is true); the package's period fee check finds that the period's live settlements charge more than
    all their usage costs."""
    tiers = [{"up_to_bytes": 100 * GB, "price_per_gb": 85_000}, {"up_to_bytes": None, "price_per_gb": 42_500}]
    shop = money.add_shop("t", {**CARD, "delivery": {"EU": {"tiers": tiers}}})
    money.deliver("t")  # 100 GB
    money.run(NOW)
    period = money.posted("t")
    monkeypatch.setattr(flows, "prior_usage", lambda session, settlement: [])
    money.deliver("t", count=10, late=True)  # 20 GB more
    correction = _correction_of(money, period)
    assert correction.state == SettlementState.posted, (correction.error_code, correction.error_message)
    assert money.statement(correction).delivery_fees == {"EU": 1_700_000}
    checks = money.verify(money.document(correction))
    assert checks and all(checks.values()), checks

    report = _audit(money, shop.key.address, tmp_path)
    subject = f"{shop.key.address.lower()} period {period.period_id}"
    assert _failed(report) == {("period fees", subject)}
    (fees,) = [c for c in report.checks if c.name == "period fees"]
    whole = 100 * 85_000 + 20 * 42_500
    assert f"charge {DELIVERY_FEE + 1_700_000} for {120 * GB} bytes" in fees.detail, fees.detail
    assert f"which cost {whole}" in fees.detail, fees.detail


def _audit(money: Money, merchant: str, tmp_path: Path, drop: str | None = None) -> Report:
    """The standalone verifier's report on an auditor's package of the merchant's first day; ``drop``
    leaves the files under that prefix out of the archive and its index (a package that omits them)."""
    scope = {
        "period_start": DAY0,
        "period_end": DAY0 + DAY,
        "legal_basis": "annual audit",
        "merchant": merchant,
    }
    response = money.app.post(
        "/audit/packages", json=scope, headers=make_caller(money.app, Role.admin, "auditor").headers
    )
    assert response.status_code == 200, response.text
    archive = response.content
    if drop is not None:
        files = untar(archive)
        index = json.loads(files.pop("package.json"))
        index["items"] = [item for item in index["items"] if not item["path"].startswith(drop)]
        files = {name: data for name, data in files.items() if not name.startswith(drop)}
        archive = tar({**files, "package.json": json.dumps(index).encode()})
    path = tmp_path / f"package-{secrets.token_hex(4)}.tar.gz"
    path.write_bytes(archive)
    return verify_archive(path, money.settings.eth_rpc_url)


def _failed(report: Report) -> set[tuple[str, str]]:
    return {(c.name, c.subject) for c in report.checks if not c.ok}


# ------------------------------------------------------------------------------------------------------
# No one stalls another; no padded bills
# ------------------------------------------------------------------------------------------------------


def test_a_reconciliation_amount_beyond_64_bits_blocks_only_that_merchant(money: Money) -> None:
    """A card counting in 10^-18 (200 GB at 0.085 is 1.7 * 10^19 of its units) and a bill that differs:
    the case's amount does not fit its signed 64-bit column. The attempt is blocked with its reason,
    and the other merchant's period is posted in the same run (the run used to fail on commit, for
    every merchant, every time)."""
    fine = {"tiers": [{"up_to_bytes": None, "price_per_gb": 85 * 10**15}]}
    card = {**CARD, "currency": {"code": "TUSDC", "decimals": 18}, "delivery": {"EU": fine}}
    card["default_royalty"] = {"mode": "per_delivery", "amount": 10**16}
    money.add_shop("wide", card)
    batches = money.deliver("wide", count=100, anchor=False)  # 200 GB
    batches += money.deliver("b", anchor=False)
    close_and_anchor(money.session, money.settings, money.chain, list(set(batches)), money.node)
    bill = f"date,region,bytes,requests,amount,currency\n2023-11-14,EU,{150 * GB},100,17.00,USD\n"
    account = money.shops["wide"].account
    service.import_billing(money.session, money.settings, account, DAY0, "bill.csv", bill.encode(), None)
    money.session.commit()
    report = money.run(NOW)
    wide = money.settlement("wide")
    assert wide is not None and (wide.state, wide.error_code) == (SettlementState.blocked, "amount_too_large")
    assert report.blocked[wide.id] == "amount_too_large"
    assert money.posted("b").total == DELIVERY_FEE + ROYALTY


def test_an_unexpected_failure_of_one_settlement_does_not_stop_the_run(
    money: Money, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong computing one merchant's period (here a fault injected into the payout
    computation), that attempt is blocked as ``internal_error`` and retried by the next run; the other
    merchant's period is posted in the same run."""
    compute_payouts = flows.compute_payouts
    broken = service.merchant_key(money.shops["a"].account)

    def failing(inputs: Any) -> Any:
        if inputs.merchant == broken:
            raise RuntimeError("injected fault")
        return compute_payouts(inputs)

    monkeypatch.setattr(flows, "compute_payouts", failing)
    batches = money.deliver("a", anchor=False) + money.deliver("b", anchor=False)
    close_and_anchor(money.session, money.settings, money.chain, list(set(batches)), money.node)
    report = money.run(NOW)
    a = money.settlement("a")
    assert a is not None and (a.state, a.error_code) == (SettlementState.blocked, "internal_error")
    assert report.blocked[a.id] == "internal_error" and "RuntimeError" in (a.error_message or "")
    assert money.posted("b").total == DELIVERY_FEE + ROYALTY
    monkeypatch.setattr(flows, "compute_payouts", compute_payouts)
    money.run(NOW)
    posted = money.posted("a")
    assert posted.total == DELIVERY_FEE + ROYALTY

    # A settlement already in the vault that fails to be followed stays as it is: blocking it would have
    # it recomputed, possibly to another root than the one the vault holds.
    def follow_fails(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("injected fault")

    monkeypatch.setattr(flows, "follow", follow_fails)
    report = money.run(NOW)
    assert report.blocked[posted.id] == "internal_error"
    assert money.posted("a").root == posted.root  # still posted, same root, same payouts
    assert money.payouts(posted)


def test_a_silent_node_stalls_only_the_merchant_it_carries_until_an_admin_abandons_its_batch(
    money: Money, app_client: TestClient
) -> None:
    silent_key = Account.create()
    silent = register_source(
        money.session, money.chain, "edge-ams", provider="edgeledger", signer=silent_key.address
    )
    authorise_source(money.session, money.shops["b"].user.id, silent)
    (batch,) = money.deliver("a", anchor=False)
    money.deliver("b", count=10, anchor=False)  # the same batch of edge-fra
    close_and_anchor(money.session, money.settings, money.chain, [batch], money.node)
    # The silent node's batch holds b's records and is never signed.
    (stuck,) = money.deliver("b", source=silent, anchor=False)
    close_batch(money.session, money.settings, stuck)
    stuck.state = BatchState.awaiting_signature
    money.session.commit()

    report = money.run(NOW)
    assert money.posted("a").total == DELIVERY_FEE + ROYALTY  # a settles on time
    assert money.settlement("b") is None and len(report.opened) == 1  # b waits for the batch it needs

    admin = make_caller(app_client, Role.admin, "admin")
    merchant_b = make_caller(app_client, Role.merchant, "not an admin")
    body = {"reason": "edge-ams lost its signing key in a disk failure"}
    path = f"/deliveries/batches/{stuck.batch_id}/abandon"
    refused = app_client.post(path, json=body, headers=merchant_b.headers)
    assert refused.status_code == 403
    answer = app_client.post(path, json=body, headers=admin.headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["state"] == "abandoned" and answer.json()["abandon_reason"] == body["reason"]
    assert answer.json()["abandoned_by"] == f"user:{admin.user_id}:admin"
    again = app_client.post(path, json=body, headers=admin.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "batch_not_abandonable"
    event = money.session.scalar(
        select(ComplianceEvent).where(ComplianceEvent.subject == f"batch:{stuck.batch_id}")
    )
    assert (
        event is not None
        and event.action == "batch_abandoned"
        and event.actor == f"user:{admin.user_id}:admin"
    )
    # A node's late signature for the abandoned batch is refused.
    manifest = app_client.get(f"/deliveries/batches/{stuck.batch_id}", headers=admin.headers).json()
    assert manifest["state"] == "abandoned"

    money.run(NOW)
    row = money.posted("b")
    assert row.total == (DELIVERY_FEE + ROYALTY) // 5  # the 10 anchored deliveries only
    unbillable = json.loads(row.unbillable_json or "[]")
    assert [(u["batch_id"], u["kind"], u["records"], u["reason"]) for u in unbillable] == [
        (stuck.batch_id, "abandoned", 50, body["reason"])
    ]
    statement = app_client.get(f"/settlement/settlements/{row.id}/statement", headers=admin.headers)
    assert statement.status_code == 200, statement.text
    assert statement.json()["unbillable"][0]["abandoned_by"] == f"user:{admin.user_id}:admin"


def test_records_of_a_source_the_merchant_does_not_authorise_are_not_charged(money: Money) -> None:
    rogue_key = Account.create()
    rogue = register_source(
        money.session, money.chain, "edge-rogue", provider="edgeledger", signer=rogue_key.address
    )
    money.deliver("a")
    # Another operator writes a's host into its own logs, anchored and all; and leaves one batch unsigned.
    batches = add_records(
        money.session,
        money.settings,
        rogue,
        delivery_records(DAY0, 30, 2 * GB, "a.shop.example"),
        asset_id=money.asset_id,
    )
    close_and_anchor(money.session, money.settings, money.chain, batches, rogue_key)
    money.deliver("a", period=DAY0 + DAY, source=rogue, anchor=False)

    money.run(NEXT)
    row = money.posted("a")
    assert row.total == DELIVERY_FEE + ROYALTY  # the authorised source's deliveries only
    unbillable = json.loads(row.unbillable_json or "[]")
    assert [(u["batch_id"], u["kind"], u["records"], u["source"]) for u in unbillable] == [
        (batches[0].batch_id, "unauthorised_source", 30, "edge-rogue")
    ]
    # The rogue's unsigned batch of the next period holds nothing back either.
    assert money.settlement("a", DAY0 + DAY) is not None


def test_the_settlement_token_is_named_by_its_own_symbol(money: Money) -> None:
    """The account's token symbol and decimals (printed on every statement) are the token's own."""
    admin = make_caller(money.app, Role.admin, "admin")
    shop = money.shops["a"]
    path = f"/settlement/accounts/{shop.user.id}"
    token = money.chain.deployment.address_of("TestStablecoin")
    wrong = money.app.put(
        path, json={"token": token, "token_symbol": "USDT", "token_decimals": 6}, headers=admin.headers
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "token_mismatch", wrong.text
    wrong = money.app.put(path, json={"token": token, "token_decimals": 18}, headers=admin.headers)
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "token_mismatch", wrong.text
    read = money.app.put(path, json={"token": token}, headers=admin.headers)
    assert read.status_code == 200, read.text
    assert read.json()["token_symbol"] == "tUSDC" and read.json()["token_decimals"] == 6


def test_each_sources_volume_is_compared_with_the_cdns_bill(money: Money) -> None:
    """Where the CDN's bill is imported, a case names each authorised source's own volume, and flags the
    source that alone reports more than the bill."""
    second_key = Account.create()
    second = register_source(
        money.session, money.chain, "edge-ams", provider="edgeledger", signer=second_key.address
    )
    shop = money.shops["a"]
    authorise_source(money.session, shop.user.id, second)
    money.deliver("a")  # edge-fra: 50 deliveries of 2 GB
    money.deliver("a", count=10, source=second, anchor=False)  # edge-ams: 10 of 2 GB
    batch = money.session.scalar(select(DeliveryBatch).where(DeliveryBatch.source_pk == second.id))
    assert batch is not None
    close_and_anchor(money.session, money.settings, money.chain, [batch], second_key)
    # The CDN billed 60 GB in EU that day: edge-fra alone reports 100 GB.
    csv = f"date,region,bytes,requests,amount,currency\n2023-11-14,EU,{60 * GB},60,5.10,USD\n".encode()
    service.import_billing(
        money.session, money.settings, shop.account, DAY0, "bill.csv", csv, imported_by=None
    )
    money.session.commit()
    money.run(NOW)
    row = money.settlement("a")
    assert row is not None and row.error_code == "reconciliation_open", (row.state, row.error_code)
    admin = make_caller(money.app, Role.admin, "admin")
    answer = money.app.get(f"/settlement/cases?merchant_user_id={shop.user.id}", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    (case,) = answer.json()
    assert "bytes" in case["reasons"] and "source_over_bill" in case["reasons"]
    assert case["sources"] == [
        {"source": "edge-ams", "bytes": 20 * GB, "requests": 10, "over_bill": False},
        {"source": "edge-fra", "bytes": 100 * GB, "requests": 50, "over_bill": True},
    ]


def test_a_merchant_authorises_and_revokes_a_source_from_the_cli(money: Money, live_api: str) -> None:
    merchant = make_caller(money.app, Role.merchant, "Shop c")
    auth = ["--api", live_api, "--api-key", merchant.api_key]

    def authorised() -> list[str]:
        result = CliRunner().invoke(cli_app, ["sources", "authorised", *auth])
        assert result.exit_code == 0, result.output
        return [r["source"] for r in json.loads(result.stdout) if r["merchant_user_id"] == merchant.user_id]

    assert authorised() == []
    result = CliRunner().invoke(cli_app, ["sources", "authorise", "edge-fra", *auth])
    assert result.exit_code == 0, result.output
    assert authorised() == ["edge-fra"]
    # A merchant authorises sources for itself only.
    result = CliRunner().invoke(cli_app, ["sources", "authorise", "edge-fra", "--merchant", "1", *auth])
    assert result.exit_code != 0 and "forbidden" in result.output
    result = CliRunner().invoke(cli_app, ["sources", "authorise", "edge-fra", "--revoke", *auth])
    assert result.exit_code == 0, result.output
    assert authorised() == []
