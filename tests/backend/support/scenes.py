"""A settled period, shared by the audit package and portal tests: an asset on IPFS and the registry, a
CloudFront log of a merchant's host ingested and anchored, the merchant's escrow, account and rate card,
the period settled and posted to the vault, one client's records erased and the compliance log anchored."""

from __future__ import annotations

import gzip
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.devtools.samples import demo_cloudfront_log, demo_png
from tests.backend.support.settlement import deposit
from tests.backend.support.stack import Caller, make_caller, post_asset, rpc


def _ok(response: Any) -> Any:
    assert response.status_code < 400, response.text
    return response.json()


def rate_card() -> dict[str, Any]:
    from edgeledger.deliveries.regions import REGION_CODES

    return {
        "version": 1,
        "valid_from": 0,
        "currency": {"code": "TUSDC", "decimals": 6},
        "delivery": {r: {"tiers": [{"up_to_bytes": None, "price_per_gb": 85_000}]} for r in REGION_CODES},
        "default_royalty": {"mode": "per_delivery", "amount": 2_000},
        "platform_fee_bps": 1_000,
        "operator_share_bps": 7_000,
        "derivative_share_bps": 2_000,
    }


def settle_deliveries(
    client: TestClient,
    settings: Settings,
    chain_snapshot: Any,
    asset: dict[str, Any],
    admin: Caller,
    merchant: Caller,
    operator: Caller,
) -> tuple[bytes, int]:
    """Deliveries of ``asset`` to the merchant's host three days ago (a CloudFront log ingested and
    anchored), the merchant's escrow, account and rate card, and the period settled and posted to the
    vault. Returns the log and the period's start."""
    rpc(settings.eth_rpc_url, "anvil_setBalance", merchant.account.address, hex(10**21))
    source = {
        "name": "cf-shop",
        "kind": "cdn_provider",
        "provider": "cloudfront",
        "regions": ["*"],
        "jurisdiction": "US",
        "operator": operator.account.address,
        "operator_user_id": operator.user_id,
    }
    _ok(client.post("/deliveries/sources", json=source, headers=admin.headers))
    host = {"host": "shop.example", "merchant_user_id": merchant.user_id}
    _ok(client.post("/deliveries/merchant-hosts", json=host, headers=admin.headers))
    _ok(client.post("/deliveries/merchant-sources", json={"source": "cf-shop"}, headers=merchant.headers))
    log, _ = demo_cloudfront_log(asset["content_cid"], asset["size_bytes"], "pkg", lines=40, days_ago=3)
    _ok(
        client.post(
            "/deliveries/sources/cf-shop/logs", files={"file": ("PKG.gz", log)}, headers=operator.headers
        )
    )
    _ok(
        client.post(
            "/deliveries/batches/close", json={"force": False, "anchor_now": True}, headers=admin.headers
        )
    )
    chain = ChainClient.from_settings(settings)
    deposit(chain, chain_snapshot.admin, merchant.account, 50_000_000)
    day = int(
        (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    )
    account = {
        "token": chain.contract("TestStablecoin").address,
        "token_symbol": "tUSDC",
        "token_decimals": 6,
        "settle_from": day,
    }
    _ok(client.put(f"/settlement/accounts/{merchant.user_id}", json=account, headers=admin.headers))
    _ok(
        client.post(
            f"/settlement/accounts/{merchant.user_id}/rate-cards", json=rate_card(), headers=admin.headers
        )
    )
    _ok(client.post("/settlement/run", headers=admin.headers))

    return log, day


@dataclass
class Scene:
    client: TestClient
    settings: Settings
    admin: Caller
    auditor: Caller
    merchant: Caller
    day: int
    request_ids: list[str]
    lines: list[str]
    creator: Caller | None = None


@pytest.fixture
def scene(app_client: TestClient, settings: Settings, chain_snapshot: Any) -> Scene:
    client = app_client
    admin = make_caller(client, Role.admin, "admin")
    auditor = make_caller(client, Role.auditor, "auditor")
    creator = make_caller(client, Role.creator, "creator")
    operator = make_caller(client, Role.operator, "operator")
    merchant = make_caller(client, Role.merchant, "Shop")
    asset = _ok(
        post_asset(
            client,
            creator,
            files={"file": ("shot.png", demo_png(secrets.token_hex(6)), "image/png")},
            data={"metadata": json.dumps({"title": "Sneaker", "valid_from": 0})},
        )
    )
    asset = asset.get("asset", asset)
    log, day = settle_deliveries(client, settings, chain_snapshot, asset, admin, merchant, operator)
    lines = [line for line in gzip.decompress(log).decode().splitlines() if line and not line.startswith("#")]
    # One client asks for erasure; the erasure is anchored with the compliance log.
    erasure = {"client_ip": lines[0].split("\t")[4], "legal_basis": "GDPR Art. 17 request #7"}
    assert (
        _ok(client.post("/compliance/erasures", json=erasure, headers=admin.headers))["records_erased"] >= 1
    )
    assert _ok(client.post("/compliance/run", params={"force": True}, headers=admin.headers))["error"] is None
    request_ids = [line.split("\t")[14] for line in lines[:3]]
    return Scene(client, settings, admin, auditor, merchant, day, request_ids, lines, creator)
