"""Settlement end to end through public interfaces: a CDN log file becomes stablecoins in payees' wallets.

A creator registers an asset (real IPFS, ContentRegistry), a CDN operator uploads a CloudFront log of a
merchant's host, the batches are anchored (DeliveryLedger), the merchant deposits a 6-decimal test
stablecoin into the SettlementVault, an admin sets the merchant's account and rate card, the settlement
run posts the period, the challenge window passes on the chain's clock, and the creator and the
operator claim with the calldata the API hands out, from their own wallets. Real anvil, IPFS, SQLite and
PostgreSQL; no human step between the log and the claimable period.
"""

from __future__ import annotations

import json
import secrets
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.devtools.samples import demo_cloudfront_log, demo_png
from tests.backend.support.scenes import rate_card
from tests.backend.support.settlement import deposit, send_raw
from tests.backend.support.stack import Caller, make_caller, post_asset, rpc

pytestmark = pytest.mark.integration

DAY = 86400


def _ok(response: Any) -> Any:
    assert response.status_code < 400, response.text
    return response.json()


def test_a_cdn_log_settles_into_claimed_stablecoins(
    app_client: TestClient, settings: Settings, chain_snapshot: Any, tmp_path: Path
) -> None:
    admin = make_caller(app_client, Role.admin, "admin")
    creator = make_caller(app_client, Role.creator, "creator")
    operator = make_caller(app_client, Role.operator, "cdn operator")
    merchant: Caller = make_caller(app_client, Role.merchant, "Shop")
    co_owner = Account.create()
    for account in (creator.account, operator.account, merchant.account, co_owner):
        rpc(settings.eth_rpc_url, "anvil_setBalance", account.address, hex(10**21))

    image = demo_png(secrets.token_hex(6))
    asset = _ok(
        post_asset(
            app_client,
            creator,
            files={"file": ("shot.png", image, "image/png")},
            data={
                "metadata": json.dumps(
                    {
                        "title": "Sneaker hero shot",
                        "valid_from": 0,
                        "split": [
                            {"recipient": creator.account.address, "bps": 8_000},
                            {"recipient": co_owner.address, "bps": 2_000},
                        ],
                    }
                )
            },
        )
    )
    asset = asset.get("asset", asset)

    _ok(
        app_client.post(
            "/deliveries/sources",
            json={
                "name": "cf-shop",
                "kind": "cdn_provider",
                "provider": "cloudfront",
                "regions": ["*"],
                "jurisdiction": "US",
                "operator": operator.account.address,
                "operator_user_id": operator.user_id,
            },
            headers=admin.headers,
        )
    )
    _ok(
        app_client.post(
            "/deliveries/merchant-hosts",
            json={"host": "shop.example", "merchant_user_id": merchant.user_id},
            headers=admin.headers,
        )
    )
    # The merchant authorises the CDN distribution to bill it.
    authorised = _ok(
        app_client.post("/deliveries/merchant-sources", json={"source": "cf-shop"}, headers=merchant.headers)
    )
    assert authorised["merchant_user_id"] == merchant.user_id and authorised["source"] == "cf-shop"
    log, _ids = demo_cloudfront_log(asset["content_cid"], asset["size_bytes"], "e2e", lines=300, days_ago=3)
    report = _ok(
        app_client.post(
            "/deliveries/sources/cf-shop/logs", files={"file": ("E2E.gz", log)}, headers=operator.headers
        )
    )
    assert report["records_new"] == 300
    _ok(
        app_client.post(
            "/deliveries/batches/close", json={"force": False, "anchor_now": True}, headers=admin.headers
        )
    )

    chain = ChainClient.from_settings(settings)
    token = chain.contract("TestStablecoin")
    vault = chain.contract("SettlementVault")
    escrow = 50_000_000
    deposit(chain, chain_snapshot.admin, merchant.account, escrow)

    day = int(
        (datetime.now(UTC) - timedelta(days=3)).replace(hour=0, minute=0, second=0, microsecond=0).timestamp()
    )
    _ok(
        app_client.put(
            f"/settlement/accounts/{merchant.user_id}",
            json={"token": token.address, "token_symbol": "tUSDC", "token_decimals": 6, "settle_from": day},
            headers=admin.headers,
        )
    )
    _ok(
        app_client.post(
            f"/settlement/accounts/{merchant.user_id}/rate-cards", json=rate_card(), headers=admin.headers
        )
    )

    _ok(app_client.post("/settlement/run", headers=admin.headers))
    page = _ok(
        app_client.get(
            "/settlement/settlements", params={"merchant_user_id": merchant.user_id}, headers=merchant.headers
        )
    )
    rows = page["items"] if isinstance(page, dict) else page
    (posted,) = [s for s in rows if s["period_start"] == day]
    assert posted["state"] == "posted", posted
    others = [s for s in rows if s["period_start"] != day]
    assert all(s["state"] == "empty" for s in others)
    total = posted["total"]
    assert (
        total > 0
        and chain.call(vault.functions.escrowOf(merchant.account.address, token.address)) == escrow - total
    )

    rpc(settings.eth_rpc_url, "evm_increaseTime", DAY + 1)
    rpc(settings.eth_rpc_url, "evm_mine")
    _ok(app_client.post("/settlement/run", headers=admin.headers))
    assert (
        _ok(app_client.get(f"/settlement/settlements/{posted['id']}", headers=merchant.headers))["state"]
        == "claimable"
    )

    paid = 0
    for payee in (creator, operator):
        claims = _ok(
            app_client.get(f"/settlement/payees/{payee.account.address}/claims", headers=payee.headers)
        )
        assert claims["call"] is not None, claims
        amount = sum(i["amount"] for i in claims["items"] if not i["claimed"])
        send_raw(chain, payee.account, claims["call"]["to"], claims["call"]["data"])
        assert chain.call(token.functions.balanceOf(payee.account.address)) == amount > 0
        paid += amount
        again = _ok(
            app_client.get(f"/settlement/payees/{payee.account.address}/claims", headers=payee.headers)
        )
        assert again["call"] is None and all(i["claimed"] for i in again["items"])

    # The co-owner never pays gas: it signs an authorization, the platform's relayer sends claimManyFor.
    auth = _ok(
        app_client.get(f"/settlement/payees/{co_owner.address}/claims/authorization", headers=admin.headers)
    )
    (ref,) = auth["claims"]
    # An hour on the chain's clock (moved a day ahead above), which the vault compares the deadline with.
    deadline = auth["typed_data"]["message"]["deadline"]
    chain_now = int(chain.w3.eth.get_block("latest")["timestamp"])
    assert chain_now - 5 <= deadline - 3600 <= chain_now
    signature = Account.sign_typed_data(co_owner.key, full_message=auth["typed_data"]).signature.to_0x_hex()
    request = {"claims": auth["claims"], "deadline": deadline, "signature": signature}
    # A deadline already past by the chain's clock ("an hour from now" by the host's) is refused unsent.
    host_hour = int(time.time()) + 3600
    late = app_client.post(
        f"/settlement/payees/{co_owner.address}/claims/relay",
        json={**request, "deadline": host_hour},
        headers=admin.headers,
    )
    assert late.status_code == 422 and late.json()["error"]["code"] == "authorization_expired", late.text
    assert late.json()["error"]["details"]["chain_time"] > host_hour
    eth_before = chain.w3.eth.get_balance(co_owner.address)
    relayed = _ok(
        app_client.post(
            f"/settlement/payees/{co_owner.address}/claims/relay", json=request, headers=admin.headers
        )
    )
    assert (
        relayed["claims"] == 1
        and chain.call(token.functions.balanceOf(co_owner.address)) == ref["amount"] > 0
    )
    assert chain.w3.eth.get_balance(co_owner.address) == eth_before
    paid += ref["amount"]
    replay = app_client.post(
        f"/settlement/payees/{co_owner.address}/claims/relay", json=request, headers=admin.headers
    )
    assert replay.status_code == 409 and replay.json()["error"]["code"] == "claim_not_open"
    forged = {**request, "claims": [{**ref, "amount": ref["amount"] + 1}]}
    wrong = app_client.post(
        f"/settlement/payees/{co_owner.address}/claims/relay", json=forged, headers=admin.headers
    )
    assert wrong.status_code == 404 and wrong.json()["error"]["code"] == "claim_unknown"

    statement = app_client.get(
        f"/settlement/settlements/{posted['id']}/statement",
        params={"format": "json"},
        headers=merchant.headers,
    )
    assert statement.status_code == 200, statement.text
    body = statement.json()
    assert sum(p["amount"]["minor"] for p in body["payees"]) == total
    assert {p["payee"] for p in body["payees"]} >= {
        creator.account.address.lower(),
        operator.account.address.lower(),
    }
    html = app_client.get(
        f"/settlement/settlements/{posted['id']}/statement",
        params={"format": "html"},
        headers=merchant.headers,
    )
    assert html.status_code == 200 and html.text.count("<svg") == 2
    assert paid < total  # the platform has not claimed yet

    # Anyone holding the inputs recomputes the payouts and finds the vault's root (CLI, chain only).
    inputs = app_client.get(f"/settlement/settlements/{posted['id']}/inputs", headers=merchant.headers)
    assert inputs.status_code == 200, inputs.text
    path = tmp_path / "inputs.json"
    path.write_bytes(inputs.content)
    result = CliRunner().invoke(
        cli_app, ["verify", "settlement", str(path), "--rpc-url", settings.eth_rpc_url]
    )
    assert result.exit_code == 0, result.output
    assert "FAIL" not in result.output and result.output.count("PASS") >= 8
    # Pinned to the auditor's own deployment file: its contracts are read, and a document naming a
    # look-alike vault fails 'contracts' (the rest still passes against the real one).
    pinned = ["--rpc-url", settings.eth_rpc_url, "--deployment", str(settings.deployment_file)]
    result = CliRunner().invoke(cli_app, ["verify", "settlement", str(path), *pinned])
    assert result.exit_code == 0, result.output
    assert result.output.count("PASS contracts") == 2, result.output
    forged = json.loads(inputs.content)
    forged["vault"] = "0x" + "ab" * 20
    forged_path = tmp_path / "forged.json"
    forged_path.write_text(json.dumps(forged))
    result = CliRunner().invoke(cli_app, ["verify", "settlement", str(forged_path), *pinned])
    assert result.exit_code == 1, result.output
    failed = [line for line in result.output.splitlines() if line.startswith("FAIL")]
    assert len(failed) == 1 and "contracts SettlementVault" in failed[0], result.output
    both = [*pinned, "--vault", str(forged["vault"])]
    result = CliRunner().invoke(cli_app, ["verify", "settlement", str(path), *both])
    assert result.exit_code == 2 and "not both" in result.output, result.output
    # A deployment file without the registry: the document's registry is not read instead.
    partial = json.loads(settings.deployment_file.read_text())
    del partial["contracts"]["ContentRegistry"]
    partial_path = tmp_path / "partial-deployment.json"
    partial_path.write_text(json.dumps(partial))
    no_registry = ["--rpc-url", settings.eth_rpc_url, "--deployment", str(partial_path)]
    result = CliRunner().invoke(cli_app, ["verify", "settlement", str(path), *no_registry])
    assert result.exit_code == 2 and "names no ContentRegistry" in result.output, result.output
    # A document for another chain is refused before anything is read.
    other_chain = {**json.loads(inputs.content), "chain_id": 1}
    other_path = tmp_path / "other-chain.json"
    other_path.write_text(json.dumps(other_chain))
    result = CliRunner().invoke(cli_app, ["verify", "settlement", str(other_path), *pinned])
    assert result.exit_code == 2 and "for chain 1" in result.output, result.output
