"""Test helpers of the settlement tests: transactions from test wallets, delivery records, deposits."""

from __future__ import annotations

import secrets
from typing import Any

from eth_account.signers.local import LocalAccount

from edgeledger.chain.client import ChainClient
from edgeledger.deliveries.records import CacheResult, DeliveryRecord
from edgeledger.devtools import wallet

#: A rate card in the 6-decimal test token, EU only: 0.085 tUSDC/GB, a 0.01 tUSDC royalty per delivery.
CARD = {
    "version": 1,
    "valid_from": 0,
    "currency": {"code": "TUSDC", "decimals": 6},
    "delivery": {"EU": {"tiers": [{"up_to_bytes": None, "price_per_gb": 85_000}]}},
    "default_royalty": {"mode": "per_delivery", "amount": 10_000},
    "platform_fee_bps": 1_000,
    "operator_share_bps": 7_000,
    "derivative_share_bps": 2_000,
}


def send_raw(chain: ChainClient, account: LocalAccount, to: str, data: str) -> dict[str, Any]:
    """Signs and sends ``data`` to ``to`` from ``account`` (as a wallet would); raises when it reverts."""
    return dict(wallet.send(chain, account, to, data))


def send_as(chain: ChainClient, account: LocalAccount, fn: Any) -> dict[str, Any]:
    """Sends a contract call from ``account``."""
    return dict(wallet.send_call(chain, account, fn))


def deposit(chain: ChainClient, owner: LocalAccount, merchant: LocalAccount, amount: int) -> None:
    """Mints test stablecoins (``owner`` deployed the token) to the merchant, who deposits them."""
    token, vault = chain.contract("TestStablecoin"), chain.contract("SettlementVault")
    send_as(chain, owner, token.functions.mint(merchant.address, amount))
    send_as(chain, merchant, token.functions.approve(vault.address, amount))
    send_as(chain, merchant, vault.functions.deposit(token.address, amount))


def delivery_records(period_start: int, count: int, nbytes: int, host: str) -> list[DeliveryRecord]:
    """``count`` deliveries of ``nbytes`` each from Frankfurt to ``host``, an hour into the period."""
    return [
        DeliveryRecord(
            source_format="edgeledger",
            request_id=f"req-{i}-{secrets.token_hex(4)}",
            timestamp_ms=(period_start + 3600 + i) * 1000,
            edge_location="FRA1",
            country="DE",
            host=host,
            uri=f"/media/{i}.mp4",
            bytes_delivered=nbytes,
            status=200,
            cache_result=CacheResult.hit,
            client_pseudonym=secrets.token_bytes(32),
            line_number=i + 1,
        )
        for i in range(count)
    ]
