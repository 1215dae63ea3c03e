"""The settlement state machine on a real chain and database: open, compute, post exactly once, follow.

Assets are registered through the API (real IPFS and ContentRegistry), deliveries are stored with real
leaves and anchored in DeliveryLedger, the merchant deposits a 6-decimal test stablecoin into the
SettlementVault, and :func:`flows.run_once` drives the period to claimable; payees claim with proofs
from the stored tree. Crashes are simulated by doing the half-step a dying worker would have done.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from hexbytes import HexBytes
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role, User
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.deliveries.models import DeliverySource
from edgeledger.devtools.samples import demo_png
from edgeledger.settlement import flows, service
from edgeledger.settlement.models import (
    CaseState,
    RateCardRow,
    Settlement,
    SettlementPayout,
    SettlementState,
)
from edgeledger.settlement.rates import FxRate
from edgeledger.verify.rpc import Chain, vault_settlement
from edgeledger.verify.settlement import check_document
from tests.backend.support.deliveries import (
    add_merchant_host,
    add_records,
    authorise_source,
    close_and_anchor,
    register_source,
)
from tests.backend.support.settlement import CARD, delivery_records, deposit, send_as
from tests.backend.support.stack import Caller, make_caller, post_asset, rpc

pytestmark = pytest.mark.integration
#: This session's own queue on the shared broker (see support/services.celery_worker).
QUEUE = f"edgeledger-test-{os.getpid()}"

DAY = 86400
DAY0 = 19675 * DAY  # 2023-11-14, long past every window
NOW = DAY0 + 2 * DAY  # the first period's late window has just passed
HOST = "shop.example"
GB = 10**9


def _ok(response: Any) -> Any:
    assert response.status_code < 400, response.text
    return response.json()


def register_asset(app_client: TestClient, caller: Caller, **params: Any) -> int:
    params.setdefault("title", "Product shot")
    params.setdefault("valid_from", 0)
    response = post_asset(
        app_client,
        caller,
        files={"file": ("shot.png", demo_png(secrets.token_hex(8)), "image/png")},
        data={"metadata": json.dumps(params)},
    )
    body = _ok(response)
    return int(body["asset"]["id"] if "asset" in body else body["id"])


@dataclass
class World:
    session: Session
    settings: Settings
    chain: ChainClient
    merchant: User
    merchant_key: LocalAccount
    admin: LocalAccount
    account: Any
    source: DeliverySource
    asset_id: int
    creators: tuple[LocalAccount, LocalAccount]
    platform: str

    @property
    def vault(self) -> Any:
        return self.chain.contract(flows.VAULT)

    @property
    def token(self) -> Any:
        return self.chain.contract("TestStablecoin")

    def run(self, now: int = NOW) -> flows.RunReport:
        return flows.run_once(self.session, self.chain, self.settings, now)

    def deposit(self, amount: int) -> None:
        deposit(self.chain, self.admin, self.merchant_key, amount)

    def settlement(self, attempt: int = 1) -> Settlement:
        row = self.session.scalar(
            select(Settlement).where(Settlement.period_start == DAY0, Settlement.attempt == attempt)
        )
        assert row is not None
        self.session.refresh(row)
        return row

    def warp(self, seconds: int) -> None:
        rpc(self.settings.eth_rpc_url, "evm_increaseTime", seconds)
        rpc(self.settings.eth_rpc_url, "evm_mine")

    def posted_events(self) -> int:
        return len(self.vault.events.SettlementPosted().get_logs(from_block=0))


@dataclass(frozen=True)
class SplitAsset:
    """What the settlement worlds start from: ``settings`` naming a fresh platform fee address, and an asset
    a creator registered with a 70/30 split."""

    settings: Settings
    platform: str
    creator: Caller
    split: tuple[LocalAccount, LocalAccount]
    asset_id: int


def split_asset(app_client: TestClient, settings: Settings) -> SplitAsset:
    platform = Account.create().address
    settings = settings.model_copy(update={"settlement_platform_address": platform})
    first, second = Account.create(), Account.create()
    creator = make_caller(app_client, Role.creator, "creator")
    asset_id = register_asset(
        app_client,
        creator,
        split=[{"recipient": first.address, "bps": 7_000}, {"recipient": second.address, "bps": 3_000}],
    )
    return SplitAsset(settings, platform, creator, (first, second), asset_id)


@pytest.fixture
def world(app_client: TestClient, settings: Settings, chain_snapshot: Any) -> Iterator[World]:
    opening = split_asset(app_client, settings)
    settings, platform, asset_id = opening.settings, opening.platform, opening.asset_id
    merchant_key = Account.create()
    rpc(settings.eth_rpc_url, "anvil_setBalance", merchant_key.address, hex(10**21))
    chain = ChainClient.from_settings(settings)
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        merchant = User(role=Role.merchant, name="Shop", address=merchant_key.address)
        session.add(merchant)
        session.commit()
        add_merchant_host(session, HOST, merchant.id)
        node = Account.create()
        source = register_source(session, chain, "edge-fra", provider="edgeledger", signer=node.address)
        authorise_source(session, merchant.id, source)
        batches = add_records(
            session,
            settings,
            source,
            delivery_records(DAY0, 50, 2 * GB, HOST),
            asset_id=asset_id,
            region="EU",
        )
        close_and_anchor(session, settings, chain, batches, node)
        params = service.AccountParams(
            token=chain.deployment.address_of("TestStablecoin"),
            token_symbol="tUSDC",
            token_decimals=6,
            settle_from=DAY0,
        )
        account = service.upsert_account(session, settings, merchant, params, now=DAY0)
        service.add_rate_card(session, account, CARD, created_by=None)
        session.commit()
        yield World(
            session,
            settings,
            chain,
            merchant,
            merchant_key,
            chain_snapshot.admin,
            account,
            source,
            asset_id,
            opening.split,
            platform,
        )


# Expected amounts (docs/settlement.md): 100 GB in EU at 0.085 -> 8,500,000; 50 deliveries at 0.01 ->
# 500,000 royalty; the operator gets 70 % of the delivery fee, the platform 30 % + 10 % of the royalty.
DELIVERY_FEE = 8_500_000
ROYALTY = 500_000
CHARGE = DELIVERY_FEE + ROYALTY


def test_a_period_settles_and_every_payee_claims_its_share(world: World) -> None:
    world.deposit(20_000_000)
    report = world.run()
    assert len(report.opened) == 1  # only the first period is past its late window
    settlement = world.settlement()
    assert settlement.state == SettlementState.posted, (settlement.error_code, settlement.error_message)
    assert settlement.total == CHARGE and settlement.payee_count == 4
    assert world.chain.call(
        world.vault.functions.escrowOf(world.merchant_key.address, world.token.address)
    ) == (20_000_000 - CHARGE)

    # Anyone can recompute the payouts from the published inputs and find the vault's root.
    document = json.loads(
        json.dumps(
            flows.inputs_document(
                settlement,
                world.chain.chain_id,
                world.vault.address,
                world.chain.deployment.address_of("ContentRegistry"),
            )
        )
    )
    on_chain = vault_settlement(
        Chain(world.chain.rpc_url), world.vault.address, settlement.period_id, world.merchant_key.address
    )
    checks = check_document(document, on_chain)
    assert checks and all(c.ok for c in checks), checks
    document["inputs"]["receipts"][0]["bytes"] += GB
    failed = {c.name for c in check_document(document, on_chain) if not c.ok}
    assert {"inputs digest", "root recomputed", "vault root"} <= failed

    # Inside the challenge window nothing is claimable and nothing is posted again.
    world.run()
    assert world.settlement().state == SettlementState.posted and world.posted_events() == 1

    world.warp(DAY + 1)
    world.run()
    assert world.settlement().state == SettlementState.claimable

    tree = flows.payout_tree(world.session, world.settlement())
    expected = {
        world.source.operator.lower(): DELIVERY_FEE * 7_000 // 10_000,
        world.platform.lower(): DELIVERY_FEE * 3_000 // 10_000 + ROYALTY // 10,
        world.creators[0].address.lower(): ROYALTY * 9 // 10 * 7 // 10,
        world.creators[1].address.lower(): ROYALTY * 9 // 10 * 3 // 10,
    }
    assert {p.lower(): a for p, a in tree.payouts.items()} == expected
    assert sum(expected.values()) == CHARGE
    for creator in world.creators:
        rpc(world.settings.eth_rpc_url, "anvil_setBalance", creator.address, hex(10**20))
        proof = tree.proof(creator.address)
        claim = (
            settlement.period_id,
            world.merchant_key.address,
            proof.amount,
            [HexBytes(p) for p in proof.proof],
        )
        send_as(world.chain, creator, world.vault.functions.claim(claim, creator.address))
        assert world.chain.call(world.token.functions.balanceOf(creator.address)) == proof.amount
        assert world.chain.call(
            world.vault.functions.isClaimed(settlement.period_id, world.merchant_key.address, creator.address)
        )


def test_a_crash_after_sending_never_posts_twice(world: World) -> None:
    world.deposit(20_000_000)
    settlement_id = world.run(now=NOW).opened[0]
    row = world.session.get(Settlement, settlement_id)
    assert row is not None and row.state == SettlementState.posted
    first_tx = row.tx_hash
    # Make the database look like a worker died after sending but before recording the hash.
    row.state, row.tx_hash, row.block_number = SettlementState.posting, None, None
    world.session.commit()
    world.run()
    row = world.settlement()
    assert row.state == SettlementState.posted and world.posted_events() == 1
    assert first_tx is not None and row.tx_hash is None  # adopted from the vault, not re-sent
    # And a worker that died before sending anything: the vault has nothing, so it is sent once.
    count = world.session.scalar(select(func.count()).select_from(Settlement))
    assert count == 1


def test_insufficient_escrow_blocks_until_the_merchant_deposits(world: World) -> None:
    world.deposit(1_000_000)
    world.run()
    row = world.settlement()
    assert row.state == SettlementState.blocked and row.error_code == "insufficient_escrow"
    assert row.root is not None and world.posted_events() == 0
    assert "deposit" in (row.error_message or "")
    world.deposit(CHARGE)
    world.run()
    assert world.settlement().state == SettlementState.posted and world.posted_events() == 1


def test_a_billing_discrepancy_opens_a_case_and_the_decision_goes_into_the_statement(world: World) -> None:
    world.deposit(20_000_000)
    # The CDN billed 110 GB where 100 GB were anchored: beyond the 0.5 % tolerance.
    csv = (f"date,region,bytes,requests,amount,currency\n2023-11-14,EU,{110 * GB},50,9.35,USD\n").encode()
    service.import_billing(
        world.session, world.settings, world.account, DAY0, "bill.csv", csv, imported_by=None
    )
    world.session.commit()
    world.run()
    row = world.settlement()
    assert row.state == SettlementState.blocked and row.error_code == "reconciliation_open"
    cases = service.cases_of(world.session, world.merchant.id, DAY0)
    assert len(cases) == 1 and cases[0].state == CaseState.open and "bytes" in cases[0].reasons
    assert cases[0].ours_bytes == 100 * GB and cases[0].theirs_bytes == 110 * GB
    assert world.posted_events() == 0

    service.decide_case(world.session, cases[0], world.merchant, "adjust", 100_000, "CDN counted retries")
    world.session.commit()
    world.run()
    row = world.settlement()
    assert row.state == SettlementState.posted and row.total == CHARGE + 100_000
    statement = json.loads(row.statement_json or "{}")
    (decision,) = statement["decisions"]
    assert decision["reason"] == "CDN counted retries" and decision["adjustment"] == 100_000
    assert "Shop" in decision["decided_by"]


def test_a_bill_in_cents_that_matches_the_receipts_opens_no_case(world: World) -> None:
    """A card in USD counted in micro-dollars, the CDN's bill in cents (ISO 4217): 8.50 USD billed for the
    100 GB the card prices at 8,500,000 micro-dollars is the same amount, so nothing blocks the period;
    8.60 USD is a case (1.2 %, beyond the 0.5 % tolerance)."""
    card_row = world.session.scalar(
        select(RateCardRow).where(RateCardRow.merchant_user_id == world.merchant.id)
    )
    assert card_row is not None
    card_row.card_json = json.dumps(
        {**json.loads(card_row.card_json), "currency": {"code": "USD", "decimals": 6}}
    )
    service.add_fx_rate(world.session, FxRate.of("ecb", DAY0, "USD", "TUSDC", "1"), created_by=None)
    world.deposit(20_000_000)

    def bill(amount: str) -> None:
        csv = f"date,region,bytes,requests,amount,currency\n2023-11-14,EU,{100 * GB},50,{amount},USD\n"
        service.import_billing(
            world.session, world.settings, world.account, DAY0, "bill.csv", csv.encode(), imported_by=None
        )
        world.session.commit()

    bill("8.60")
    world.run()
    (case,) = service.cases_of(world.session, world.merchant.id, DAY0)
    assert case.reasons == "amount" and (case.ours_amount, case.theirs_amount) == (8_500_000, 860)
    assert world.settlement().error_code == "reconciliation_open"

    bill("8.50")  # supersedes the first bill and its open case
    world.run()
    assert [c.state for c in service.cases_of(world.session, world.merchant.id, DAY0)] == [
        CaseState.superseded
    ]
    row = world.settlement()
    assert row.state == SettlementState.posted and row.total == CHARGE


def test_a_usd_bill_is_reconciled_with_a_stablecoin_card_at_the_periods_rate(world: World) -> None:
    """The card counts TUSDC, the CDN bills USD. Without a USD/TUSDC rate the amounts cannot be compared
    and the key waits on a ``currency`` case; with the FX table's rate the bill is converted and, being the
    same money, opens no case: the period settles without anyone deciding anything."""
    world.deposit(20_000_000)

    def bill() -> None:
        csv = f"date,region,bytes,requests,amount,currency\n2023-11-14,EU,{100 * GB},50,8.50,USD\n"
        service.import_billing(
            world.session, world.settings, world.account, DAY0, "bill.csv", csv.encode(), imported_by=None
        )
        world.session.commit()

    bill()
    world.run()
    (case,) = service.cases_of(world.session, world.merchant.id, DAY0)
    assert case.reasons == "currency" and world.settlement().error_code == "reconciliation_open"
    assert case.theirs_amount_converted is None and case.fx_json is None

    # At a rate of 1.25 the same bill is worth 10.625 TUSDC: an amount case, recording the converted
    # amount and the rate used, so anyone can redo the comparison.
    service.add_fx_rate(world.session, FxRate.of("ecb", DAY0, "USD", "TUSDC", "1.25"), created_by=None)
    world.session.commit()
    bill()
    world.run()
    (case,) = [
        c for c in service.cases_of(world.session, world.merchant.id, DAY0) if c.state == CaseState.open
    ]
    assert (
        case.reasons == "amount" and case.theirs_amount == 850 and case.theirs_amount_converted == 10_625_000
    )
    snapshot = json.loads(case.fx_json or "{}")
    assert [snapshot[k] for k in ("base", "quote", "numerator", "denominator")] == ["USD", "TUSDC", 5, 4]

    service.add_fx_rate(world.session, FxRate.of("ecb", DAY0 + 1, "USD", "TUSDC", "1"), created_by=None)
    world.session.commit()
    bill()  # imported again: reconciled with the rate now in the table
    world.run()
    assert [c.state for c in service.cases_of(world.session, world.merchant.id, DAY0)] == [
        CaseState.superseded,
        CaseState.superseded,
    ]
    row = world.settlement()
    assert row.state == SettlementState.posted and row.total == CHARGE


def _price_per_gb(world: World, price: int, royalty: int | None = None) -> None:
    card_row = world.session.scalar(
        select(RateCardRow).where(RateCardRow.merchant_user_id == world.merchant.id)
    )
    assert card_row is not None
    card = json.loads(card_row.card_json)
    card["delivery"]["EU"]["tiers"] = [{"up_to_bytes": None, "price_per_gb": price}]
    if royalty is not None:
        card["default_royalty"] = {"mode": "per_delivery", "amount": royalty}
    card_row.card_json = json.dumps(card)
    world.session.commit()


def test_a_charge_beyond_64_bits_settles_to_the_unit_and_is_claimed(world: World) -> None:
    """Token amounts are exact far past 2^63 - 1 (10 tokens of 18 decimals is 10^19 minor units): the
    charge is stored, reserved in the vault and read back to the unit from a new session, payouts sort
    as numbers, and the first creator claims its 3.15 * 10^19 exactly against the posted root."""
    _price_per_gb(world, 10**17, royalty=10**18)  # 100 GB: 10^19; 50 deliveries: 5 * 10^19
    fee, royalties = 10**19, 50 * 10**18
    charge = fee + royalties
    world.deposit(charge + 5)
    world.run()
    row = world.settlement()
    assert row.state == SettlementState.posted, (row.error_code, row.error_message)
    assert row.total == charge and charge > 2**64
    on_chain = world.chain.call(world.vault.functions.settlementOf(row.period_id, world.merchant_key.address))
    assert int(on_chain[4]) == charge
    assert (
        world.chain.call(world.vault.functions.escrowOf(world.merchant_key.address, world.token.address)) == 5
    )
    with Session(world.session.get_bind()) as fresh:  # what the database gives back, not the identity map
        stored = fresh.get(Settlement, row.id)
        assert stored is not None and stored.total == charge
        amounts = fresh.scalars(
            select(SettlementPayout.amount)
            .where(SettlementPayout.settlement_pk == row.id)
            .order_by(SettlementPayout.amount.desc())
        ).all()
    first_creator = royalties * 9 // 10 * 7 // 10
    expected = [first_creator, royalties * 9 // 10 * 3 // 10, fee * 7 // 10, fee * 3 // 10 + royalties // 10]
    assert amounts == sorted(expected, reverse=True) and sum(amounts) == charge  # numbers, not text
    world.warp(DAY + 1)
    world.run()
    assert world.settlement().state == SettlementState.claimable
    tree = flows.payout_tree(world.session, world.settlement())
    creator = world.creators[0]
    rpc(world.settings.eth_rpc_url, "anvil_setBalance", creator.address, hex(10**20))
    proof = tree.proof(creator.address)
    assert proof.amount == first_creator > 2**63
    claim = (row.period_id, world.merchant_key.address, proof.amount, [HexBytes(p) for p in proof.proof])
    send_as(world.chain, creator, world.vault.functions.claim(claim, creator.address))
    assert world.chain.call(world.token.functions.balanceOf(creator.address)) == first_creator


def test_a_charge_beyond_the_vaults_128_bits_blocks_the_attempt(world: World) -> None:
    """The vault counts in uint128: a charge past 2^128 - 1 minor units would be refused on chain every
    run, so the attempt is blocked with its reason instead (and the run goes on)."""
    _price_per_gb(world, 2**128 // 100 + 1)  # 100 GB: just past 2^128
    world.run()  # no exception: the attempt is blocked, not the run
    row = world.settlement()
    assert row.state == SettlementState.blocked and row.error_code == "amount_too_large"
    assert world.session.scalar(select(func.count()).select_from(SettlementPayout)) == 0


def test_a_cancelled_settlement_is_recomputed_as_a_new_attempt(world: World) -> None:
    world.deposit(20_000_000)
    world.run()
    first = world.settlement()
    send_as(
        world.chain,
        world.merchant_key,
        world.vault.functions.challenge(first.period_id, world.merchant_key.address, b"\x01" * 32),
    )
    world.run()
    assert world.settlement().state == SettlementState.challenged
    send_as(
        world.chain,
        world.admin,
        world.vault.functions.resolve(first.period_id, world.merchant_key.address, False),
    )
    world.run()
    assert world.settlement().state == SettlementState.cancelled
    assert (
        world.chain.call(world.vault.functions.escrowOf(world.merchant_key.address, world.token.address))
        == 20_000_000
    )

    # Same inputs give the same root: the vault already cancelled that tree, so it is not re-posted.
    second = flows.recompute(world.session, world.settings, world.settlement())
    world.run()
    row = world.settlement(attempt=2)
    assert row.id == second.id and row.state == SettlementState.blocked and row.error_code == "root_cancelled"
    # With a changed rate card (a correction), the new tree is posted.
    world.session.execute(
        service.RateCardRow.__table__.delete()  # type: ignore[attr-defined]
    )
    service.add_rate_card(world.session, world.account, {**CARD, "platform_fee_bps": 500}, created_by=None)
    world.session.commit()
    flows.recompute(world.session, world.settings, row)
    world.run()
    row = world.settlement(attempt=2)
    assert row.state == SettlementState.posted and world.posted_events() == 2


def test_periods_are_never_skipped_and_never_opened_twice(world: World) -> None:
    world.deposit(20_000_000)
    world.run(now=DAY0 + 5 * DAY)
    starts = world.session.scalars(select(Settlement.period_start).order_by(Settlement.period_start)).all()
    assert starts == [DAY0, DAY0 + DAY, DAY0 + 2 * DAY, DAY0 + 3 * DAY]
    states = world.session.scalars(select(Settlement.state).order_by(Settlement.period_start)).all()
    assert states[0] == SettlementState.posted and set(states[1:]) == {SettlementState.empty}
    world.run(now=DAY0 + 5 * DAY)
    assert world.session.scalar(select(func.count()).select_from(Settlement)) == 4


def test_open_totals_beyond_64_bits_are_summed_exactly(world: World) -> None:
    """Each settlement's amounts fit their 64-bit columns; the merchant's open totals together need not
    (SQLite's sum() then failed, and the account page answered 503): they are summed exactly."""
    world.deposit(20_000_000)
    big = 2**62 + 1
    for day in range(3):
        world.session.add(
            Settlement(
                merchant_user_id=world.merchant.id,
                period_start=DAY0 + (10 + day) * DAY,
                period_end=DAY0 + (11 + day) * DAY,
                period_id=19_700 + day,
                attempt=1,
                state=SettlementState.computed,
                total=big,
                held_total=day,
                merchant_address=world.merchant_key.address,
                token=world.token.address,
            )
        )
    world.session.commit()
    detail = service.account_detail(world.session, world.chain, world.account)
    assert detail.pending == 3 * big + 3 and detail.open_settlements == 3


def test_a_backlog_of_periods_is_opened_over_several_runs(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account whose cursor is far behind (started in the past, or the worker down for days) opens at
    most MAX_PERIODS_OPENED_PER_RUN periods per run: the backlog is caught up run by run, in order, none
    skipped, instead of one run working through all of it before any other merchant."""
    monkeypatch.setattr(flows, "MAX_PERIODS_OPENED_PER_RUN", 3)
    report = flows.RunReport()
    flows.open_due_periods(world.session, world.settings, DAY0 + 9 * DAY, report)
    assert len(report.opened) == 3
    flows.open_due_periods(world.session, world.settings, DAY0 + 9 * DAY, flows.RunReport())
    flows.open_due_periods(world.session, world.settings, DAY0 + 9 * DAY, flows.RunReport())
    starts = world.session.scalars(select(Settlement.period_start).order_by(Settlement.period_start)).all()
    assert starts == [DAY0 + n * DAY for n in range(8)]  # every due period once, in order


def test_a_second_worker_skips_a_settlement_being_worked_on(world: World, app_client: TestClient) -> None:
    world.deposit(20_000_000)
    flows.open_due_periods(world.session, world.settings, NOW, flows.RunReport())
    row = world.settlement()
    with flows._settlement_lock(world.session, world.settings, row.id) as locked:
        assert locked
        with Session(app_client.app.state.engine) as other:  # type: ignore[attr-defined]
            busy = flows.run_once(other, world.chain, world.settings, NOW)
        assert busy.busy == [row.id] and world.posted_events() == 0
    assert world.settlement().state == SettlementState.blocked  # untouched by the second worker
    world.run()
    assert world.settlement().state == SettlementState.posted and world.posted_events() == 1


def test_an_unreachable_chain_stops_the_run_and_the_next_run_resumes(world: World) -> None:
    from tests.backend.support.stack import free_port

    world.deposit(20_000_000)
    dead = ChainClient.from_settings(
        world.settings.model_copy(update={"eth_rpc_url": f"http://127.0.0.1:{free_port()}"})
    )
    report = flows.run_once(world.session, dead, world.settings, NOW)
    # The period is opened without the chain; computing it reads the assets' terms from the chain, so
    # it waits (nothing computed from a stale copy) and the next run computes and posts it.
    assert report.retryable and report.opened
    row = world.settlement()
    assert row.state == SettlementState.blocked and row.error_code == "not_computed"
    assert row.root is None and row.terms_block is None and world.posted_events() == 0
    world.run()
    row = world.settlement()
    assert row.state == SettlementState.posted and world.posted_events() == 1
    assert row.terms_block is not None


def test_the_celery_task_settles_due_periods(world: World) -> None:
    from celery import Celery

    from tests.backend.support.services import REDIS_URL, celery_worker

    world.deposit(20_000_000)
    with celery_worker(world.settings, REDIS_URL, "settle-test", QUEUE) as worker:
        sender = Celery(broker=REDIS_URL)
        try:
            sender.send_task("edgeledger.settlement.run", queue=QUEUE)
            for _ in range(480):  # bounded polling for the worker's effect
                assert worker.poll() is None, "worker died"
                world.session.expire_all()
                row = world.session.scalar(select(Settlement).where(Settlement.period_start == DAY0))
                if row is not None and row.state == SettlementState.posted:
                    break
                time.sleep(0.25)
            else:
                raise AssertionError("the worker never posted the period")
        finally:
            sender.close()
    assert world.posted_events() == 1
    # Every period since the account's start was opened, in order, none twice (empty ones included).
    starts = world.session.scalars(select(Settlement.period_start).order_by(Settlement.period_start)).all()
    assert starts[0] == DAY0 and len(starts) == len(set(starts))
    assert all(b - a == DAY for a, b in pairwise(starts))


def test_a_post_dropped_by_a_reorg_is_posted_again(world: World) -> None:
    world.deposit(20_000_000)
    before_post = rpc(world.settings.eth_rpc_url, "evm_snapshot")
    world.run()
    first = world.settlement()
    assert first.state == SettlementState.posted and first.tx_hash is not None
    rpc(world.settings.eth_rpc_url, "evm_revert", before_post)  # the block with the post is gone
    # A reverted snapshot also forgets the transaction (a real reorg returns it to the mempool): a new
    # client, as after a worker restart, does not carry the local nonce of the vanished transaction.
    world.chain = ChainClient.from_settings(world.settings)
    assert world.posted_events() == 0
    world.run()
    row = world.settlement()
    assert row.state == SettlementState.posted and world.posted_events() == 1
    on_chain = world.chain.call(world.vault.functions.settlementOf(row.period_id, world.merchant_key.address))
    assert "0x" + bytes(on_chain[0]).hex() == row.root


FAULT_RUNS = int(os.environ.get("FAULT_RUNS", "3"))


@pytest.mark.parametrize("run", range(FAULT_RUNS))
def test_kill_9_during_settlement_posts_once_and_conserves_escrow(run: int, world: World) -> None:
    """SIGKILL the worker at a random moment once it has started settling; a second worker finishes:
    the period is posted exactly once and escrow plus reserve equal the deposit (see tests/backend/
    test_faults.py for the anchoring half and the full-run command)."""
    from celery import Celery

    from tests.backend.support.services import REDIS_URL, celery_worker

    rng = random.Random(1000 + run)
    deposit_amount = 20_000_000
    world.deposit(deposit_amount)
    sender = Celery(broker=REDIS_URL)

    def state() -> str | None:
        world.session.expire_all()
        row = world.session.scalar(select(Settlement).where(Settlement.period_start == DAY0))
        return row.state if row is not None else None

    def wait(condition: Any, worker: Any) -> None:
        for _ in range(960):  # bounded polling
            assert worker.poll() is None, "worker died"
            if condition():
                return
            time.sleep(0.125)
        raise AssertionError(f"no progress (state {state()})")

    try:
        in_flight = run % 3 == 2  # hold the post in the mempool: the worker dies with it unmined
        if in_flight:
            rpc(world.settings.eth_rpc_url, "evm_setAutomine", False)
        with celery_worker(world.settings, REDIS_URL, f"kill-{run}", QUEUE) as victim:
            sender.send_task("edgeledger.settlement.run", queue=QUEUE)
            # Kill after the period is opened, computed, or being posted (by run), plus a random delay.
            stages = [
                {s.value for s in SettlementState},
                {SettlementState.computed, SettlementState.posting, SettlementState.posted},
                {SettlementState.posting},
            ]
            wait(lambda: state() in stages[run % 3], victim)
            time.sleep(rng.uniform(0.0, 0.15))
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
        if in_flight:  # the dead worker's transaction lands after all
            rpc(world.settings.eth_rpc_url, "evm_setAutomine", True)
            rpc(world.settings.eth_rpc_url, "evm_mine")
        killed_in = state()
        world.session.expire_all()
        first = world.session.scalar(select(Settlement).where(Settlement.period_start == DAY0))
        killed_in = f"{killed_in} ({first.error_code if first else None})"
        with celery_worker(world.settings, REDIS_URL, f"rescue-{run}", QUEUE) as rescuer:
            sender.send_task("edgeledger.settlement.run", queue=QUEUE)
            wait(lambda: state() == SettlementState.posted, rescuer)
    finally:
        sender.close()
        rpc(world.settings.eth_rpc_url, "evm_setAutomine", True)  # never leave the shared chain paused
    assert world.posted_events() == 1, killed_in
    row = world.settlement()
    on_chain = world.chain.call(world.vault.functions.settlementOf(row.period_id, world.merchant_key.address))
    escrow = world.chain.call(world.vault.functions.escrowOf(world.merchant_key.address, world.token.address))
    assert "0x" + bytes(on_chain[0]).hex() == row.root and int(on_chain[4]) == row.total
    assert escrow + row.total == deposit_amount  # nothing reserved twice, nothing lost
    print(f"run {run}: SIGKILL in state {killed_in}; posted once, escrow conserved")


def test_a_reorg_of_depth_3_dropping_the_post_converges(world: World) -> None:
    """The post lands, two more blocks follow, then anvil_reorg replaces the last three: the post is gone
    from the canonical chain. The next runs (a fresh client, as after a restart) find the vault empty
    and post again: one SettlementPosted on the canonical chain, the vault holding our root."""
    world.deposit(20_000_000)
    world.run()
    assert world.settlement().state == SettlementState.posted
    for _ in range(2):
        rpc(world.settings.eth_rpc_url, "evm_mine")
    rpc(world.settings.eth_rpc_url, "anvil_reorg", 3, [])
    world.chain = ChainClient.from_settings(world.settings)
    assert world.posted_events() == 0
    world.run()
    world.run()
    row = world.settlement()
    assert row.state == SettlementState.posted and world.posted_events() == 1
    on_chain = world.chain.call(world.vault.functions.settlementOf(row.period_id, world.merchant_key.address))
    assert "0x" + bytes(on_chain[0]).hex() == row.root and int(on_chain[4]) == row.total
