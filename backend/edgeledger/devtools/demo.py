"""The scripted demo `edgeledger up` runs.

1. Provenance: a creator registers an image and an AI-generated variant of it through the API, and the
   original is then verified from the file alone against the chain; then a catalogue of 100 product
   images in one transaction from the creator's wallet (devtools/catalogue.py).
2. Delivery receipts: an admin registers a CloudFront distribution as a delivery source, uploads a
   CloudFront standard log (gzip) of requests for the first run's product image (delivered_asset),
   uploads it again (nothing changes), closes and anchors the batch, fetches the proof of one log line
   and checks it against the chain alone, with the contract's verifyRecord and by verifying the whole
   batch export. The local stack queues uploads (INGEST_MODE=queue): each is answered 202 and followed
   (GET /deliveries/ingests/{id}, progress printed) until an ingest worker has run it, before anything
   goes on; an inline API's 201 is final.
3. Settlement: the demo merchant (owner of the log's host) deposits test stablecoins into the vault, an
   admin sets its account and rate card, yesterday's period is settled (posted with its payout root),
   the local stack's 60 s challenge window passes, and the creator claims its royalty from its own
   wallet with the calldata the API hands out. A rerun the same day finds the period settled: its new
   log lines are paid by a correction of the period, posted and claimed the same way.
"""

from __future__ import annotations

import io
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.assets import service as assets_service
from edgeledger.assets.models import Asset
from edgeledger.auth import service as auth_service
from edgeledger.auth.models import ApiKey, Role, User
from edgeledger.chain.anvil import anvil_rpc
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import make_engine
from edgeledger.devtools.catalogue import run_catalogue_demo
from edgeledger.devtools.samples import demo_cloudfront_log, demo_png
from edgeledger.devtools.stack import DEV_CHALLENGE_WINDOW, now_label, say
from edgeledger.devtools.wallet import send, send_call
from edgeledger.ledger import registration as registration_formats
from edgeledger.settlement.statements import format_amount
from edgeledger.verify.delivery import verify_document
from edgeledger.verify.rpc import Chain, Deployment, LedgerReader


def _demo_api_key(settings: Settings, address: str, *, role: Role = Role.creator) -> str:
    """A demo user's API key, made once and kept (0600) beside the dev keys in DATA_DIR."""
    path = settings.data_dir / ("demo-api-key" if role == Role.creator else f"demo-{role}-api-key")
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        user = auth_service.get_user_by_address(session, address)
        if user is None:
            user = auth_service.create_user(session, role=role, address=address, name=f"Demo {role}")
        if path.exists():
            key = path.read_text().strip()
            if session.scalar(select(ApiKey).where(ApiKey.key_hash == auth_service.hash_secret(key))):
                return key
        key, _ = auth_service.create_api_key(session, user, "demo")
        session.commit()
    engine.dispose()
    path.touch(mode=0o600)
    path.write_text(key)
    return key


def _register(
    client: httpx.Client, name: str, data: bytes, params: dict[str, Any], creator_key: str
) -> httpx.Response:
    """Uploads, then signs the registration's typed data with the creator's key (what its wallet does)
    and submits the signature: the platform registers only what the creator signed."""
    pending = client.post(
        "/assets",
        files={"file": (name, data, "image/png")},
        data={"metadata": json.dumps(params)},
        timeout=120,
    )
    if pending.status_code != 202:
        return pending
    registration = pending.json()
    signature = registration_formats.sign(registration["typed_data"], creator_key)
    return client.post(
        f"/assets/registrations/{registration['id']}/signature", json={"signature": signature}, timeout=120
    )


def demo_period(now: float | None = None) -> int:
    """The period the demo delivers in and settles: yesterday (UTC) as of ``now``, as unix seconds of its
    start. Taken once per run, so a run that crosses midnight UTC still settles the day it delivered in."""
    today = datetime.fromtimestamp(time.time() if now is None else now, UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    return int((today - timedelta(days=1)).timestamp())


def run_demo(settings: Settings, base_url: str, keys: dict[str, str]) -> None:
    creator_key, admin_key = keys["creator"], keys["admin"]
    label = now_label()
    period = demo_period()
    asset = run_provenance_demo(settings, base_url, creator_key, label)
    run_catalogue_demo(settings, creator_key, label, valid_from=int(time.time()) - 2 * 86400)
    delivered = delivered_asset(settings, asset)
    run_delivery_demo(settings, base_url, admin_key=admin_key, asset=delivered, label=label, period=period)
    run_settlement_demo(settings, base_url, keys=keys, period=period)
    run_audit_demo(settings, base_url, keys=keys, period=period)


def run_provenance_demo(settings: Settings, base_url: str, creator_key: str, label: str) -> dict[str, Any]:
    """Registers this run's product image (returned) and its AI-generated variant, shows that the same
    bytes are refused, and verifies the image from its hash alone against the chain."""
    creator = Account.from_key(creator_key).address
    key = _demo_api_key(settings, creator)
    original = demo_png(f"EdgeLedger demo original {label}")
    variant = demo_png(f"EdgeLedger demo AIGC variant {label}")

    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}) as client:
        say(f"demo: creator {creator} uploads a product image ({len(original)} bytes)")
        first = _register(
            client,
            "sneaker.png",
            original,
            {
                "title": "Sneaker, studio shot",
                "territories": ["DE", "FR", "US", "JP"],
                # licensed from the day before yesterday: the demo log's deliveries (yesterday) earn royalties
                "valid_from": int(time.time()) - 2 * 86400,
                "royalty_bps": 500,
                "split": [{"recipient": creator, "bps": 10_000}],
            },
            creator_key,
        )
        first.raise_for_status()
        asset = first.json()
        say(
            f"  registered asset #{asset['id']}: sha-256 {asset['content_hash'][:18]}…, "
            f"CID {asset['content_cid']}"
        )
        say(f"  on chain in block {asset['chain']['block_number']}, tx {asset['chain']['tx_hash']}")

        second = _register(
            client,
            "sneaker-aigc.png",
            variant,
            {
                "title": "Sneaker, AI background variant",
                "territories": ["DE", "FR"],
                "parent_asset_id": asset["id"],
                "aigc": True,
            },
            creator_key,
        )
        second.raise_for_status()
        child = second.json()
        say(f"  registered its AI-generated variant as asset #{child['id']} (parent #{child['parent_id']})")

        again = _register(client, "sneaker-copy.png", original, {"title": "Same bytes again"}, creator_key)
        error = again.json()["error"]
        say(
            f"  uploading the same bytes again is refused: HTTP {again.status_code} {error['code']}: "
            f"{error['message']}"
        )

    chain = ChainClient.from_settings(settings)
    sha = assets_service.sha256_of_stream(io.BytesIO(original))
    verdict = assets_service.verify_content_hash(chain, sha)
    assert verdict.chain is not None
    say(
        f"verify (file only, against the chain): registered={verdict.registered}, asset #{verdict.asset_id}, "
        f"creator {verdict.creator}, at {verdict.registered_at:%Y-%m-%d %H:%M:%S} UTC, block "
        f"{verdict.chain.block_number}, tx {verdict.chain.tx_hash[:18]}…, log index {verdict.chain.log_index}"
    )
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        total = session.scalar(select(func.count()).select_from(Asset))
    engine.dispose()
    say(f"the database now holds {total} registered assets (runs add to it; nothing is reset)")
    return asset


def delivered_asset(settings: Settings, registered: dict[str, Any]) -> dict[str, Any]:
    """The asset the demo's CDN log requests: the creator's first product image in the database, the one
    ``registered`` on a first run. A rerun on the same day delivers in yesterday's period again, which an
    earlier run may have settled: its late deliveries are paid by a correction that reads the assets'
    terms at the block the period read them at, where an image registered since does not exist
    (``asset_unknown``, the correction blocked). The first run's image existed before any demo period
    settled."""
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        first = session.scalar(
            select(Asset)
            .where(
                Asset.creator == registered["creator"],
                Asset.title == registered["title"],
                Asset.parent_id.is_(None),
            )
            .order_by(Asset.id)
            .limit(1)
        )
        found = (
            {"id": first.id, "content_cid": first.content_cid, "size_bytes": first.size_bytes}
            if first is not None and first.id != registered["id"]
            else None
        )
    engine.dispose()
    if found is None:
        return registered
    say(
        f"demo: the CDN log requests asset #{found['id']} (the first run's product image), not this run's "
        f"#{registered['id']}: yesterday's period may be settled already, and its late deliveries are paid "
        f"at the terms read when it settled, before #{registered['id']} existed"
    )
    return found


# ----------------------------------------------------------------------------------------------
# Delivery receipts
# ----------------------------------------------------------------------------------------------

DEMO_SOURCE = "demo-cloudfront"
#: How long the demo waits for a queued upload to be ingested before it gives up.
INGEST_WAIT_SECONDS = 120.0
FINAL_INGEST_STATES = ("done", "failed", "rejected")


def _ensure_source(client: httpx.Client) -> dict[str, Any]:
    found = client.get(f"/deliveries/sources/{DEMO_SOURCE}")
    if found.status_code == 200:
        return found.json()
    created = client.post(
        "/deliveries/sources",
        json={
            "name": DEMO_SOURCE,
            "kind": "cdn_provider",
            "provider": "cloudfront",
            "regions": ["*"],
            "jurisdiction": "US",
        },
        timeout=120,
    )
    created.raise_for_status()
    return created.json()


def run_delivery_demo(
    settings: Settings,
    base_url: str,
    *,
    admin_key: str,
    asset: dict[str, Any],
    label: str,
    period: int | None = None,
) -> None:
    """Ingests a CloudFront log of deliveries of ``asset`` in ``period`` (default :func:`demo_period`),
    closes and anchors its batches, and verifies a line and the batch against the chain alone."""
    key = _demo_api_key(settings, Account.from_key(admin_key).address, role=Role.admin)
    period = demo_period() if period is None else period
    log, request_ids = demo_cloudfront_log(asset["content_cid"], asset["size_bytes"], label, day_start=period)
    with httpx.Client(base_url=base_url, headers={"X-API-Key": key}, timeout=300) as client:
        source = _ensure_source(client)
        say(f"demo: CDN source {source['name']} ({source['source_id'][:18]}…) registered on chain")

        upload = client.post(f"/deliveries/sources/{DEMO_SOURCE}/logs", files={"file": ("E2DEMO.gz", log)})
        report = wait_for_ingest(client, upload, settings)
        say(
            f"  ingested a CloudFront log ({len(log):,} bytes gzip): {report['lines']} lines, "
            f"{report['records_new']} new records, {report['quarantined']} quarantined "
            "(client IPs pseudonymised at ingest)"
        )
        upload = client.post(f"/deliveries/sources/{DEMO_SOURCE}/logs", files={"file": ("E2DEMO.gz", log)})
        again = wait_for_ingest(client, upload, settings)
        say(
            f"  the same file again: {again['records_new']} new, {again['duplicates']} duplicates "
            "(idempotent)"
        )

        closed = _ok(client.post("/deliveries/batches/close", json={"force": True, "anchor_now": True}))
        say(
            f"  closed {len(closed['closed'])} batch(es) early (demo: ignoring the late window) "
            "and anchored them"
        )
        proof = _ok(
            client.get("/deliveries/proofs", params={"source": DEMO_SOURCE, "request_id": request_ids[7]})
        )
        batch = proof["batch"]
        say(
            f"  {batch['kind']} batch {batch['batch_id'][:18]}…: {batch['leaf_count']} leaves, "
            f"root {proof['root'][:18]}…, "
            f"tx {str(proof['tx_hash'])[:18]}…, block {proof['block_number']}"
        )
        say(f"  proof of request {request_ids[7]}: {len(proof['proof'])} sibling hashes")
        export = _ok(client.get(f"/deliveries/batches/{batch['batch_id']}/export"))

    deployment = Deployment.load(settings.resolved_deployment_file)
    ledger = LedgerReader(Chain(settings.eth_rpc_url), deployment.address_of("DeliveryLedger"))
    one = verify_document(proof, ledger)
    whole = verify_document(export, ledger)
    say(
        f"verify delivery (chain only): that line {'PASS' if one.ok else 'FAIL'}; the whole batch export "
        f"{whole.passed} passed, {whole.failed} failed"
    )


def wait_for_ingest(
    client: httpx.Client, upload: httpx.Response, settings: Settings, timeout: float = INGEST_WAIT_SECONDS
) -> dict[str, Any]:
    """The final report of a log upload. A 201 (inline ingestion) is final already; a 202 (queued) is
    followed with GET /deliveries/ingests/{id}, its progress printed, until an ingest worker has finished
    it. RuntimeError when it failed or was rejected, or is not final within ``timeout`` seconds."""
    report: dict[str, Any] = _ok(upload)
    if upload.status_code != 202:
        return report
    name, ingest = report["name"], report["id"]
    say(
        f"  {name}: accepted (HTTP 202), {report['size_bytes']:,} bytes stored, queued as ingest #{ingest}; "
        "waiting for an ingest worker"
    )
    deadline = time.monotonic() + timeout
    shown = ""
    while report["state"] not in FINAL_INGEST_STATES:
        progress = (
            f"    ingest #{ingest}: {report['state']}, {report['lines']:,} lines, "
            f"{report['bytes_read']:,} of {report['size_bytes']:,} bytes read"
        )
        if progress != shown:
            say(progress)
            shown = progress
        if time.monotonic() > deadline:
            logs = settings.data_dir / "logs"
            raise RuntimeError(
                f"ingest #{ingest} ({name}) is still {report['state']} after {timeout:.0f} s: no ingest "
                f"worker finished it; see {logs}/ingest-worker-*.log and {logs}/nats-server.log"
            )
        time.sleep(0.25)
        report = _ok(client.get(f"/deliveries/ingests/{ingest}"))
    if report["state"] != "done":
        raise RuntimeError(
            f"ingest #{ingest} ({name}) {report['state']}: {report['error_code']}: {report['error_message']}"
        )
    say(f"    ingest #{ingest}: done by an ingest worker, {report['lines']:,} lines")
    return report


def _ok(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.text[:500]}")
    return response.json()


# ----------------------------------------------------------------------------------------------
# Settlement
# ----------------------------------------------------------------------------------------------

DEMO_HOST = "shop.example"


def _demo_card() -> dict[str, Any]:
    from edgeledger.deliveries.regions import REGION_CODES

    return {
        "version": 1,
        "valid_from": 0,
        "currency": {"code": "TUSDC", "decimals": 6},
        "delivery": {r: {"tiers": [{"up_to_bytes": None, "price_per_gb": 85_000}]} for r in REGION_CODES},
        "default_royalty": {"mode": "per_delivery", "amount": 1_000},
        "platform_fee_bps": 1_000,
        "operator_share_bps": 7_000,
        "derivative_share_bps": 2_000,
    }


def _merchant_funds(settings: Settings, keys: dict[str, str], amount: int) -> tuple[str, int]:
    """Mints test stablecoins to the merchant (the deployer owns the test token) and deposits them,
    unless its escrow already holds ``amount``."""
    chain = ChainClient.from_settings(settings)
    token, vault = chain.contract("TestStablecoin"), chain.contract("SettlementVault")
    merchant = Account.from_key(keys["merchant"]).address
    escrow = int(chain.call(vault.functions.escrowOf(merchant, token.address)))
    if escrow >= amount:
        return token.address, escrow
    calls = (
        (keys["admin"], token.functions.mint(merchant, amount)),
        (keys["merchant"], token.functions.approve(vault.address, amount)),
        (keys["merchant"], vault.functions.deposit(token.address, amount)),
    )
    for key, fn in calls:
        send_call(chain, key, fn, timeout=60)
    return token.address, int(chain.call(vault.functions.escrowOf(merchant, token.address)))


def run_settlement_demo(
    settings: Settings,
    base_url: str,
    *,
    keys: dict[str, str],
    challenge_wait: float = 120.0,
    period: int | None = None,
) -> None:
    """Settles yesterday's period (or, when an earlier run settled it, the correction that pays this run's
    late deliveries), follows it for up to ``challenge_wait`` seconds until claimable, then claims the
    creator's payouts from its wallet."""
    admin_key = _demo_api_key(settings, Account.from_key(keys["admin"]).address, role=Role.admin)
    merchant = Account.from_key(keys["merchant"]).address
    creator = Account.from_key(keys["creator"]).address
    _demo_api_key(settings, merchant, role=Role.merchant)
    creator_key = _demo_api_key(settings, creator)
    yesterday = demo_period() if period is None else period
    with httpx.Client(base_url=base_url, headers={"X-API-Key": admin_key}, timeout=300) as client:
        merchant_id = _merchant_user_id(settings, merchant)
        hosts = _ok(client.get("/deliveries/merchant-hosts"))
        if not any(h["host"] == DEMO_HOST for h in hosts):
            _ok(
                client.post(
                    "/deliveries/merchant-hosts", json={"host": DEMO_HOST, "merchant_user_id": merchant_id}
                )
            )
        # Only sources the merchant authorises bill it (idempotent).
        _ok(
            client.post(
                "/deliveries/merchant-sources", json={"source": DEMO_SOURCE, "merchant_user_id": merchant_id}
            )
        )
        token, escrow = _merchant_funds(settings, keys, 100_000_000)
        say(
            f"demo: merchant {merchant} (host {DEMO_HOST}) has test stablecoins in the vault: escrow "
            f"{format_amount(escrow, 6)} tUSDC"
        )
        account = client.get(f"/settlement/accounts/{merchant_id}")
        if account.status_code == 404:
            _ok(
                client.put(
                    f"/settlement/accounts/{merchant_id}",
                    json={
                        "token": token,
                        "token_symbol": "tUSDC",
                        "token_decimals": 6,
                        "settle_from": yesterday,
                    },
                )
            )
            _ok(client.post(f"/settlement/accounts/{merchant_id}/rate-cards", json=_demo_card()))
            say(
                "  settlement account and rate card v1 set (0.085 tUSDC/GB, 0.001 tUSDC per delivery royalty)"
            )
        run = _ok(client.post("/settlement/run", params={"early": "true"}))
        page = _ok(client.get("/settlement/settlements", params={"merchant_user_id": merchant_id}))
        rows = page["items"] if isinstance(page, dict) else page
        # Yesterday's period, and its corrections when a rerun delivered in it after it settled.
        ours = [r for r in rows if r["period_start"] == yesterday and r["kind"] in ("period", "correction")]
        if not ours:
            say(f"  no settlement of yesterday's period yet (run report {run})")
            return
        current = max(ours, key=lambda r: r["id"])
        name = f"period {current['period_id']}"
        if current["kind"] == "correction":
            period = next((r for r in ours if r["kind"] == "period"), current)
            name = f"correction #{current['sequence']} of period {period['period_id']}"
            say(
                f"  yesterday's period {period['period_id']} was settled by an earlier run (state "
                f"{period['state']}): this run's deliveries reached it late, and a correction pays them"
            )
        if current["state"] == "blocked":
            say(f"  {name}: state blocked: {current['error_code']}: {current['error_message']}")
        else:
            say(
                f"  {name}: state {current['state']}, total {format_amount(current['total'], 6)} tUSDC to "
                f"{current['payee_count']} payees, root {str(current['root'])[:18]}…"
            )
        deadline = time.monotonic() + challenge_wait
        if current["state"] == "posted" and challenge_wait > 0:
            say(f"  waiting for the local chain's {DEV_CHALLENGE_WINDOW} s challenge window…")
        while current["state"] in ("posted", "posting", "computed") and time.monotonic() < deadline:
            time.sleep(5)
            # The local chain mines only when sent a transaction; an empty block moves its clock on, as
            # the steady blocks of a live chain would.
            anvil_rpc(settings.eth_rpc_url, "evm_mine")
            _ok(client.post("/settlement/run", params={"early": "true"}))
            current = _ok(client.get(f"/settlement/settlements/{current['id']}"))
        say(f"  state now: {current['state']}")
    if current["state"] != "claimable":
        return
    with httpx.Client(base_url=base_url, headers={"X-API-Key": creator_key}, timeout=120) as client:
        claims = _ok(client.get(f"/settlement/payees/{creator}/claims"))
        if claims["call"] is None:
            say("  the creator has nothing left to claim")
            return
        chain = ChainClient.from_settings(settings)
        receipt = send(chain, keys["creator"], claims["call"]["to"], claims["call"]["data"], timeout=60)
        tx = receipt["transactionHash"].to_0x_hex()
        balance = chain.call(chain.contract("TestStablecoin").functions.balanceOf(creator))
        say(
            f"  creator claimed {claims['call']['claims']} payout(s) in tx {tx[:18]}…; its wallet holds "
            f"{format_amount(balance, 6)} tUSDC"
        )


def _merchant_user_id(settings: Settings, address: str) -> int:
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        user = auth_service.get_user_by_address(session, address)
        assert user is not None
        user_id = user.id
    engine.dispose()
    return user_id


# ----------------------------------------------------------------------------------------------
# Audit: the compliance log, the indexer, an audit package, the portal
# ----------------------------------------------------------------------------------------------

AUDITOR_NAME = "Demo auditor"


def _auditor_api_key(settings: Settings) -> tuple[str, Path]:
    """The demo auditor's API key (a read-only service account the demo admin grants the global scope),
    kept 0600 in DATA_DIR."""
    path = settings.data_dir / "demo-auditor-api-key"
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        if path.exists():
            key = path.read_text().strip()
            found = session.scalar(select(ApiKey).where(ApiKey.key_hash == auth_service.hash_secret(key)))
            if found is not None and found.revoked_at is None:
                engine.dispose()
                return key, path
        user = session.scalar(select(User).where(User.name == AUDITOR_NAME, User.role == Role.auditor))
        if user is None:
            user = auth_service.create_user(session, role=Role.auditor, name=AUDITOR_NAME)
        key, _ = auth_service.create_api_key(session, user, "demo")
        session.commit()
    engine.dispose()
    path.touch(mode=0o600)
    path.write_text(key)
    return key, path


def _index_chain(settings: Settings) -> str:
    from edgeledger.indexer import flows as indexer_flows
    from edgeledger.ipfs import IpfsClient

    engine = make_engine(settings.resolved_database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            chain = ChainClient.from_settings(settings)
            indexer_flows.run_once(session, chain, settings, IpfsClient.from_settings(settings))
            status = indexer_flows.status(session, chain, settings)
    finally:
        engine.dispose()
    return f"indexer at block {status.cursor_block} of {status.head}, {status.events} events"


def run_audit_demo(
    settings: Settings, base_url: str, *, keys: dict[str, str], period: int | None = None
) -> None:
    from edgeledger.verify.package import verify_archive

    admin_key = _demo_api_key(settings, Account.from_key(keys["admin"]).address, role=Role.admin)
    auditor_key, key_path = _auditor_api_key(settings)
    merchant_id = _merchant_user_id(settings, Account.from_key(keys["merchant"]).address)
    yesterday = demo_period() if period is None else period
    with httpx.Client(base_url=base_url, headers={"X-API-Key": auditor_key}, timeout=60) as client:
        auditor_id = _ok(client.get("/auth/me"))["id"]
    with httpx.Client(base_url=base_url, headers={"X-API-Key": admin_key}, timeout=300) as client:
        # Scopes fail closed: the demo auditor reads everything only because the admin grants it.
        _ok(client.put(f"/admin/users/{auditor_id}/scope", json={"is_global": True}))
        run = _ok(client.post("/compliance/run", params={"force": "true"}))
    say(f"demo: compliance log anchored ({len(run['batches'])} new batch(es) of access events)")
    say(f"  {_index_chain(settings)}")
    body = {
        "period_start": yesterday,
        "period_end": yesterday + 86_400,
        "merchant_user_id": merchant_id,
        "legal_basis": "demo audit",
    }
    with httpx.Client(base_url=base_url, headers={"X-API-Key": auditor_key}, timeout=300) as client:
        response = client.post("/audit/packages", json=body)
    if response.status_code != 200:
        say(f"  no audit package: {response.status_code} {response.text[:200]}")
        return
    package = settings.data_dir / "audit-package.tar.gz"
    package.write_bytes(response.content)
    report = verify_archive(package, settings.eth_rpc_url)
    say(
        f"  audit package of yesterday's settlement: {package} ({len(response.content)} bytes); "
        f"{report.passed} of {report.passed + report.failed} items verified from the archive and the chain "
        f"alone (edgeledger verify package {package} --rpc-url {settings.eth_rpc_url})"
    )
    say(f"  auditor portal: {base_url}/portal/  (sign in with the API key in {key_path})")
