"""The money tests' world (tests/backend/test_settlement_money.py, test_settlement_held.py): two shops
settling in tUSDC from DAY0 on the real chain and database, an asset with a 70/30 split, a CloudFront
source; helpers to deliver, run the worker, read settlements, claim and read earnings."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils.address import to_checksum_address
from fastapi.testclient import TestClient
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role, User
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.deliveries.models import DeliveryBatch, DeliverySource
from edgeledger.settlement import flows, service
from edgeledger.settlement.models import Settlement, SettlementState
from edgeledger.settlement.payouts import Statement
from edgeledger.verify.rpc import Chain, vault_settlement
from edgeledger.verify.settlement import chain_terms, check_document, recompute, terms_block_check
from tests.backend.support.deliveries import (
    add_merchant_host,
    add_records,
    authorise_source,
    close_and_anchor,
    register_source,
)
from tests.backend.support.settlement import delivery_records, deposit, send_as
from tests.backend.support.stack import Caller, make_caller, rpc
from tests.backend.test_settlement_flow import CARD, DAY, DAY0, GB, split_asset

NOW = DAY0 + 2 * DAY  # period DAY0 is past its late window
NEXT = DAY0 + 3 * DAY  # and period DAY0 + DAY too
DELIVERY_FEE = 8_500_000  # 50 deliveries of 2 GB in EU at 0.085 per GB
ROYALTY = 500_000  # 50 deliveries at 0.01
NET_ROYALTY = ROYALTY * 9 // 10  # after the platform's 10 %


@dataclass
class Shop:
    user: User
    key: LocalAccount
    host: str
    account: Any


@dataclass
class Money:
    session: Session
    settings: Settings
    chain: ChainClient
    admin: LocalAccount
    creator: Caller
    asset_id: int
    split: tuple[LocalAccount, LocalAccount]
    node: LocalAccount
    source: DeliverySource
    platform: str
    app: TestClient
    shops: dict[str, Shop] = field(default_factory=dict)

    @property
    def registry(self) -> Any:
        return self.chain.contract("ContentRegistry")

    def run(self, now: int = NOW) -> flows.RunReport:
        return flows.run_once(self.session, self.chain, self.settings, now)

    def mine(self) -> None:
        rpc(self.settings.eth_rpc_url, "evm_mine")

    def pass_window(self) -> None:
        """The chain's clock moves past every posted settlement's challenge window."""
        rpc(self.settings.eth_rpc_url, "evm_increaseTime", DAY + 1)
        self.mine()

    def deliver(
        self,
        shop: str,
        *,
        period: int = DAY0,
        asset_id: int | None = None,
        source: DeliverySource | None = None,
        anchor: bool = True,
        count: int = 50,
        late: bool = False,
        region: str = "EU",
        country: str = "DE",
    ) -> list[DeliveryBatch]:
        records = delivery_records(period, count, 2 * GB, self.shops[shop].host)
        batches = add_records(
            self.session,
            self.settings,
            source or self.source,
            [replace(r, country=country) for r in records],
            asset_id=self.asset_id if asset_id is None else asset_id,
            region=region,
            late=late,
        )
        if anchor:
            close_and_anchor(self.session, self.settings, self.chain, batches, self.node)
        return batches

    def settlement(self, shop: str, period: int = DAY0) -> Settlement | None:
        row = self.session.scalar(
            select(Settlement)
            .where(
                Settlement.merchant_user_id == self.shops[shop].user.id,
                Settlement.period_start == period,
                Settlement.sequence == 0,
            )
            .order_by(Settlement.attempt.desc())
            .limit(1)
        )
        if row is not None:
            self.session.refresh(row)
        return row

    def posted(self, shop: str, period: int = DAY0) -> Settlement:
        row = self.settlement(shop, period)
        assert row is not None, f"{shop}'s period {period} was not opened"
        assert row.state == SettlementState.posted, (row.state, row.error_code, row.error_message)
        return row

    def payouts(self, row: Settlement) -> dict[str, int]:
        tree = flows.payout_tree(self.session, row)
        return {payee.lower(): amount for payee, amount in tree.payouts.items()}

    def statement(self, row: Settlement) -> Statement:
        assert row.statement_json is not None
        return Statement.model_validate_json(row.statement_json)

    def document(self, row: Settlement) -> dict[str, Any]:
        return json.loads(
            json.dumps(
                flows.inputs_document(
                    row,
                    self.chain.chain_id,
                    self.chain.deployment.address_of("SettlementVault"),
                    self.chain.deployment.address_of("ContentRegistry"),
                )
            )
        )

    def verify(self, document: dict[str, Any]) -> dict[str, bool]:
        """``edgeledger verify settlement``'s checks of a document: name -> passed."""
        chain = Chain(self.chain.rpc_url)
        on_chain = vault_settlement(
            chain,
            document["vault"],
            document["period_id"],
            document["merchant"],
            document["posted_block"],
            document["root"],
        )
        inputs = recompute(document)[0]
        terms = chain_terms(chain, document["registry"], inputs)
        checks = [*check_document(document, on_chain, terms), terms_block_check(chain, document, inputs)]
        return {c.name: c.ok for c in checks}

    def as_wallet(self, account: LocalAccount, fn: Any) -> None:
        rpc(self.settings.eth_rpc_url, "anvil_setBalance", account.address, hex(10**20))
        send_as(self.chain, account, fn)

    def dispute(self, *, take_down: bool = False) -> str:
        """Marks the asset disputed on chain, or takes it down (its royalties are held from then on);
        returns the notice."""
        notice = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
        action = self.registry.functions.takeDown if take_down else self.registry.functions.markDisputed
        self.as_wallet(self.admin, action(self.asset_id, notice))
        self.mine()
        return notice

    def held_period(self, shop: str, *, take_down: bool = False) -> tuple[Settlement, str]:
        """The shop's period DAY0 delivered, its asset disputed (or taken down) and settled: posted with
        the royalty held back; and the dispute's notice."""
        self.deliver(shop)
        notice = self.dispute(take_down=take_down)
        self.run(NOW)
        return self.posted(shop), notice

    def cancel(self, row: Settlement, shop: Shop) -> None:
        """The merchant challenges the posted ``row`` and the admin cancels it; the worker follows."""
        vault = self.chain.contract("SettlementVault")
        self.as_wallet(shop.key, vault.functions.challenge(row.period_id, shop.key.address, b"\x01" * 32))
        self.as_wallet(self.admin, vault.functions.resolve(row.period_id, shop.key.address, False))
        self.mine()
        self.run(NOW)
        self.session.refresh(row)
        assert row.state == SettlementState.cancelled, (row.state, row.error_code)

    def add_shop(self, name: str, card: dict[str, Any] = CARD) -> Shop:
        """A merchant settling from DAY0 under ``card``, 50 tUSDC in escrow, billed by ``self.source``."""
        key = Account.create()
        rpc(self.settings.eth_rpc_url, "anvil_setBalance", key.address, hex(10**21))
        user = User(role=Role.merchant, name=f"Shop {name}", address=key.address)
        self.session.add(user)
        self.session.commit()
        host = f"{name}.shop.example"
        add_merchant_host(self.session, host, user.id)
        authorise_source(self.session, user.id, self.source)
        params = service.AccountParams(
            token=self.chain.deployment.address_of("TestStablecoin"),
            token_symbol="tUSDC",
            token_decimals=6,
            settle_from=DAY0,
        )
        account = service.upsert_account(self.session, self.settings, user, params, now=DAY0)
        service.add_rate_card(self.session, account, card, created_by=None)
        self.session.commit()
        deposit(self.chain, self.admin, key, 50_000_000)
        self.shops[name] = Shop(user, key, host, account)
        return self.shops[name]


@pytest.fixture
def money(app_client: TestClient, settings: Settings, chain_snapshot: Any) -> Iterator[Money]:
    opening = split_asset(app_client, settings)
    settings = opening.settings
    chain = ChainClient.from_settings(settings)
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        node = Account.create()
        source = register_source(session, chain, "edge-fra", provider="edgeledger", signer=node.address)
        world = Money(
            session,
            settings,
            chain,
            chain_snapshot.admin,
            opening.creator,
            opening.asset_id,
            opening.split,
            node,
            source,
            opening.platform,
            app_client,
        )
        for name in ("a", "b"):
            world.add_shop(name)
        yield world


def operator_of(money: Money) -> str:
    return money.source.operator.lower()


# ------------------------------------------------------------------------------------------------------
# Terms from the chain at a recorded block
# ------------------------------------------------------------------------------------------------------


def claim(money: Money, row: Settlement, payee: LocalAccount) -> int:
    """``payee`` claims its leaf of ``row`` from its own wallet; returns its token balance after."""
    proof = flows.payout_tree(money.session, row).proof(payee.address)
    merchant = to_checksum_address(row.merchant_address)
    claim = (row.period_id, merchant, proof.amount, [HexBytes(p) for p in proof.proof])
    money.as_wallet(payee, money.chain.contract("SettlementVault").functions.claim(claim, payee.address))
    return int(money.chain.call(money.chain.contract("TestStablecoin").functions.balanceOf(payee.address)))


def earnings(money: Money, payee: str) -> dict[str, int]:
    """The payee's ledger in the test token, as ``GET /settlement/payees/{payee}/earnings`` gives it."""
    admin = make_caller(money.app, Role.admin, "admin")
    answer = money.app.get(f"/settlement/payees/{payee}/earnings", headers=admin.headers)
    assert answer.status_code == 200, answer.text
    token = money.chain.deployment.address_of("TestStablecoin")
    totals: dict[str, int] = answer.json()["totals"][token]
    return totals


def release_of(money: Money, period: Settlement) -> Settlement:
    row = money.session.scalar(
        select(Settlement).where(Settlement.funded_by_pk == period.id).order_by(Settlement.sequence.desc())
    )
    assert row is not None, "no release was opened"
    money.session.refresh(row)
    return row
