"""A merchant ready for the merchants' web pages: a user of role merchant whose wallet is one of anvil's
unlocked development accounts (so the browser's test wallet can sign in and send its transactions), a
day of anchored deliveries of a registered asset to its host, a settlement account in the 6-decimal test
stablecoin with a rate card, and test stablecoins in its wallet to deposit (none in escrow yet).

The period is a fixed day long past (``DAY0``): :func:`settle` runs the settlement scheduler as of two
days later, when that period is due. 100 GB in EU at 0.085 plus 50 deliveries at 0.01 charge 9.00 tUSDC.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role, User
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.devtools.samples import demo_png
from edgeledger.settlement import flows, service
from tests.backend.support.deliveries import (
    add_merchant_host,
    add_records,
    authorise_source,
    close_and_anchor,
    register_source,
)
from tests.backend.support.settlement import CARD, delivery_records, send_as
from tests.backend.support.stack import make_caller, post_asset

DAY = 86400
DAY0 = 19675 * DAY  # 2023-11-14 UTC
DAY0_TEXT = "2023-11-14"
NOW = DAY0 + 2 * DAY  # the period is due (its late window has passed)
GB = 10**9
HOST = "merchant-shop.example"
#: what the period charges: 100 GB x 0.085 + 50 x 0.01 tUSDC, in minor units
CHARGE = 8_500_000 + 500_000


@dataclass
class MerchantScene:
    engine: Engine
    settings: Settings
    chain: ChainClient
    merchant_id: int
    address: str

    def escrow(self) -> int:
        vault, token = self.chain.contract(flows.VAULT), self.chain.contract("TestStablecoin")
        return int(vault.functions.escrowOf(self.address, token.address).call())

    def settle(self) -> flows.RunReport:
        with Session(self.engine) as session:
            return flows.run_once(session, self.chain, self.settings, NOW)


def merchant_scene(
    app_client: TestClient, settings: Settings, chain_owner: Any, address: str, tokens: int
) -> MerchantScene:
    """Builds the scene for the merchant wallet ``address`` and mints it ``tokens`` minor units
    (``chain_owner`` deployed the test stablecoin)."""
    settings = settings.model_copy(update={"settlement_platform_address": Account.create().address})
    chain = ChainClient.from_settings(settings)
    creator = make_caller(app_client, Role.creator, "creator")
    payee = Account.create()
    response = post_asset(
        app_client,
        creator,
        files={"file": ("shot.png", demo_png(secrets.token_hex(8)), "image/png")},
        data={
            "metadata": json.dumps(
                {
                    "title": "Product shot",
                    "valid_from": 0,
                    "split": [{"recipient": payee.address, "bps": 10_000}],
                }
            )
        },
    )
    assert response.status_code < 400, response.text
    body = response.json()
    asset_id = int(body["asset"]["id"] if "asset" in body else body["id"])
    engine: Engine = app_client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        merchant = User(role=Role.merchant, name="Shop", address=address)
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
        merchant_id = merchant.id
    token = chain.contract("TestStablecoin")
    send_as(chain, chain_owner, token.functions.mint(address, tokens))
    return MerchantScene(engine, settings, chain, merchant_id, address)
