"""`edgeledger` command line: the local stack, asset registration and verification, administration."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import httpx
import typer

from edgeledger.config import get_settings

app = typer.Typer(help="EdgeLedger: content provenance and settlement for CDNs.", no_args_is_help=True)
users_app = typer.Typer(help="Users and API keys (direct database access, for operators).")
app.add_typer(users_app, name="users")

ApiUrl = Annotated[str, typer.Option("--api", envvar="EDGELEDGER_API", help="API base URL")]
ApiKey = Annotated[str, typer.Option("--api-key", envvar="EDGELEDGER_API_KEY", help="API key (X-API-Key)")]


def _default_api() -> str:
    return get_settings().resolved_public_base_url


def _fail(response: httpx.Response) -> None:
    try:
        error = response.json()["error"]
        typer.secho(f"error {response.status_code} {error['code']}: {error['message']}", fg="red", err=True)
    except (ValueError, KeyError):
        typer.secho(f"error {response.status_code}: {response.text[:500]}", fg="red", err=True)
    raise typer.Exit(1)


@app.command()
def up(demo: Annotated[bool, typer.Option(help="Run the scripted demo")] = True) -> None:
    """Start anvil, IPFS, database, worker and API locally; deploy once; run the demo; wait for Ctrl-C."""
    from edgeledger.devstack import up as run_up

    run_up(get_settings(), run_demo=demo)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; default API_HOST")] = "",
    port: Annotated[int, typer.Option(help="Port; default API_PORT")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the socket")] = 1,
) -> None:
    """Serve the API with uvicorn, TCP_NODELAY on every connection (docs/operations.md, "Read paths")."""
    from edgeledger.server import uvicorn_command

    settings = get_settings()
    command = uvicorn_command(host or settings.api_host, port or settings.api_port, workers=workers)
    os.execv(command[0], command)  # noqa: S606 - our own interpreter, fixed arguments


@app.command()
def migrate() -> None:
    """Apply the database migrations (DATABASE_URL)."""
    from edgeledger.db import migrate as run_migrate

    url = get_settings().resolved_database_url
    run_migrate(url)
    typer.echo(f"migrated {url}")


class _ProgressReader:
    """File wrapper that advances a progress bar as httpx streams the upload."""

    def __init__(self, handle: IO[bytes], bar: Any) -> None:
        self._handle = handle
        self._bar = bar

    def read(self, size: int = -1) -> bytes:
        chunk = self._handle.read(size)
        self._bar.update(len(chunk))
        return chunk


@app.command()
def register(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    title: Annotated[str, typer.Option(help="Asset title")],
    territories: Annotated[str, typer.Option(help="Comma-separated ISO 3166-1 alpha-2 codes, or *")] = "*",
    split: Annotated[
        list[str] | None, typer.Option(help="recipient:bps, repeatable; default 100 % to the creator")
    ] = None,
    parent: Annotated[int | None, typer.Option(help="Parent asset id (derivatives)")] = None,
    aigc: Annotated[bool, typer.Option(help="Generated or altered by AI")] = False,
    royalty_bps: Annotated[int, typer.Option(help="EIP-2981 royalty on token sales")] = 0,
    valid_until: Annotated[int, typer.Option(help="Licence end, unix seconds (0 = open-ended)")] = 0,
    terms_cid: Annotated[str, typer.Option(help="IPFS CID of the licence terms")] = "",
    creator: Annotated[str | None, typer.Option(help="Creator address (admins only)")] = None,
    description: str = "",
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Upload a file and register it (streamed, with a progress bar)."""
    params: dict[str, Any] = {
        "title": title,
        "description": description,
        "territories": [t.strip() for t in territories.split(",") if t.strip()],
        "royalty_bps": royalty_bps,
        "valid_until": valid_until,
        "terms_cid": terms_cid,
        "aigc": aigc,
        "parent_asset_id": parent,
        "creator": creator,
    }
    if split:
        shares = [s.rsplit(":", 1) for s in split]
        params["split"] = [{"recipient": r, "bps": int(b)} for r, b in shares]
    size = file.stat().st_size
    with (
        file.open("rb") as handle,
        typer.progressbar(length=size, label=f"uploading {file.name}", file=sys.stderr) as bar,
    ):
        response = httpx.post(
            f"{api or _default_api()}/assets",
            headers={"X-API-Key": api_key},
            files={"file": (file.name, _ProgressReader(handle, bar), "application/octet-stream")},  # type: ignore[dict-item]
            data={"metadata": json.dumps(params)},
            timeout=httpx.Timeout(30, read=None),
        )
    if response.status_code >= 400:
        _fail(response)
    asset = response.json()
    typer.echo(json.dumps(asset, indent=2))
    typer.secho(
        f"registered asset #{asset['id']} in block {asset['chain']['block_number']} "
        f"(tx {asset['chain']['tx_hash']})",
        fg="green",
        err=True,
    )


@app.command()
def verify(
    file: Annotated[Path | None, typer.Argument(exists=True, dir_okay=False)] = None,
    sha256: Annotated[str | None, typer.Option(help="Verify a sha-256 instead of a file")] = None,
    rpc: Annotated[str | None, typer.Option(envvar="ETH_RPC_URL", help="Chain RPC")] = None,
    deployment: Annotated[Path | None, typer.Option(help="Deployment JSON (contract addresses)")] = None,
) -> None:
    """Say whether, when and by whom content was registered, from the chain alone (no API, no database).

    Exit code 0: registered; 2: not registered.
    """
    from edgeledger.assets import service
    from edgeledger.main import make_chain_client

    if (file is None) == (sha256 is None):
        raise typer.BadParameter("give a file or --sha256")
    settings = get_settings()
    overrides: dict[str, Any] = {}
    if rpc:
        overrides["eth_rpc_url"] = rpc
    if deployment:
        overrides["deployment_file"] = deployment
    chain = make_chain_client(settings.model_copy(update=overrides))
    digest = service.sha256_of_file(file) if file is not None else service.normalize_hash(sha256 or "")
    verdict = service.verify_content_hash(chain, digest)
    typer.echo(verdict.model_dump_json(indent=2))
    if not verdict.registered:
        typer.secho("not registered", fg="yellow", err=True)
        raise typer.Exit(2)
    assert verdict.chain is not None
    typer.secho(
        f"registered as asset #{verdict.asset_id} by {verdict.creator} at {verdict.registered_at} "
        f"(block {verdict.chain.block_number}, tx {verdict.chain.tx_hash}, log {verdict.chain.log_index})",
        fg="green",
        err=True,
    )


@app.command("verify-delivery")
def verify_delivery(
    input_file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, help="Proof, proofs or export JSON")
    ],
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="ETH_RPC_URL", help="Chain JSON-RPC endpoint")],
    deployment: Annotated[
        Path | None, typer.Option(help="Deployment JSON naming the DeliveryLedger address")
    ] = None,
    contract: Annotated[str | None, typer.Option(help="DeliveryLedger address")] = None,
    onchain_sample: Annotated[
        int,
        typer.Option(min=0, help="Batch exports: records also checked with an on-chain verifyRecord call"),
    ] = 16,
) -> None:
    """Check delivery proofs or a batch export against the chain alone (no API, no database).

    Prints PASS/FAIL per record. Exit code 0: everything passed; 1: something failed; 2: unusable input
    or RPC errors. See docs/proofs.md.
    """
    from edgeledger.deliveries import verify as checker

    try:
        if (deployment is None) == (contract is None):
            raise checker.UnusableInput("give exactly one of --deployment and --contract")
        address = contract or checker.contract_from_deployment(deployment)  # type: ignore[arg-type]
        ledger = checker.Ledger(rpc_url, address)
        doc = checker.load_document(input_file)
        total = checker.count_items(doc)
        if total >= 10_000:  # a progress bar on stderr only for big exports
            with typer.progressbar(length=total, label="verifying", file=sys.stderr) as bar:
                summary = checker.verify_document(
                    doc, ledger, onchain_sample=onchain_sample, emit=typer.echo, progress=bar.update
                )
        else:
            summary = checker.verify_document(doc, ledger, onchain_sample=onchain_sample, emit=typer.echo)
    except checker.UnusableInput as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    verdict = "all passed" if summary.ok else "FAILED"
    typer.echo(
        f"{summary.passed} passed, {summary.failed} failed, {summary.onchain_calls} verifyRecord calls on "
        f"chain at {ledger.address}: {verdict}"
    )
    raise typer.Exit(0 if summary.ok else 1)


@app.command("assets")
def list_assets(
    creator: str | None = None,
    territory: str | None = None,
    content_hash: str | None = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """List / search registered assets through the API."""
    query = {
        k: v
        for k, v in {"creator": creator, "territory": territory, "content_hash": content_hash}.items()
        if v
    }
    response = httpx.get(f"{api or _default_api()}/assets", params=query, headers={"X-API-Key": api_key})
    if response.status_code >= 400:
        _fail(response)
    for asset in response.json():
        typer.echo(f"#{asset['id']:<6} {asset['content_hash'][:18]}…  {asset['creator']}  {asset['title']}")


@app.command()
def provenance(asset_id: int, api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """Provenance of one asset: chain record, lineage, dispute status."""
    response = httpx.get(f"{api or _default_api()}/assets/{asset_id}", headers={"X-API-Key": api_key})
    if response.status_code >= 400:
        _fail(response)
    typer.echo(json.dumps(response.json(), indent=2))


def _file_chunks(handle: IO[bytes], bar: Any, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The file in pieces for a chunked upload (never read whole), advancing the progress bar."""
    while chunk := handle.read(chunk_size):
        bar.update(len(chunk))
        yield chunk


@app.command("ingest")
def ingest_logs(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True)],
    source: Annotated[str, typer.Option(help="Delivery source name or 0x source id")],
    log_format: Annotated[
        str | None, typer.Option("--format", help="cloudfront, cloudflare or edgeledger (default: detect)")
    ] = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Upload delivery log files (plain or gzip) for a source; print each ingest report as a JSON line.

    Exit code 1 when a file was rejected (not a log) or failed (e.g. a truncated gzip), after trying all.
    """
    failed = 0
    for file in files:
        size = file.stat().st_size
        params = {"name": file.name, **({"log_format": log_format} if log_format else {})}
        started = time.perf_counter()
        with (
            file.open("rb") as handle,
            typer.progressbar(length=size, label=f"uploading {file.name}", file=sys.stderr) as bar,
        ):
            response = httpx.post(
                f"{api or _default_api()}/deliveries/sources/{source}/logs",
                params=params,
                headers={"X-API-Key": api_key, "Content-Type": "application/octet-stream"},
                content=_file_chunks(handle, bar),
                timeout=httpx.Timeout(30, read=None),
            )
        seconds = time.perf_counter() - started
        if response.status_code >= 400:
            failed += 1
            try:
                error = response.json()["error"]
                message = f"{file.name}: error {response.status_code} {error['code']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = f"{file.name}: error {response.status_code}: {response.text[:500]}"
            typer.secho(message, fg="red", err=True)
            continue
        report = response.json()
        typer.echo(json.dumps(report))
        rate = report["lines"] / max(seconds, 1e-9)
        typer.secho(
            f"{file.name}: {report['lines']:,} lines in {seconds:.1f} s ({rate:,.0f} lines/s): "
            f"{report['records_new']:,} new, {report['duplicates']:,} duplicates, "
            f"{report['quarantined']:,} quarantined, {report['late_records']:,} late",
            fg="green",
            err=True,
        )
    if failed:
        raise typer.Exit(1)


@app.command()
def reconcile(grace_seconds: float = 60.0) -> None:
    """Finish or release registrations left open by crashes and outages (the worker does it every minute)."""
    from edgeledger.assets.tasks import reconcile_registrations

    typer.echo(json.dumps(reconcile_registrations(grace_seconds)))


sources_app = typer.Typer(help="Delivery sources: edge nodes and CDN provider accounts (through the API).")
app.add_typer(sources_app, name="sources")


@sources_app.command("register")
def register_source(
    name: Annotated[str, typer.Option(help="Unique source name (its on-chain id derives from it)")],
    kind: Annotated[str, typer.Option(help="edge_node or cdn_provider")],
    provider: Annotated[str, typer.Option(help="cloudfront, cloudflare, fastly or edgeledger")],
    regions: Annotated[str, typer.Option(help="Comma-separated ISO 3166-1 alpha-2 codes served, or *")],
    jurisdiction: Annotated[str, typer.Option(help="Operator's jurisdiction (alpha-2)")],
    operator: Annotated[str | None, typer.Option(help="Payout address (CDN default: the platform)")] = None,
    signer: Annotated[str | None, typer.Option(help="Edge nodes: the node's signing address")] = None,
    node_ip: Annotated[list[str] | None, typer.Option(help="The node's own public IP, repeatable")] = None,
    operator_user_id: Annotated[int | None, typer.Option(help="User who operates the node")] = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Register a delivery source on chain (admin API key)."""
    body = {
        "name": name,
        "kind": kind,
        "provider": provider,
        "regions": [r.strip() for r in regions.split(",") if r.strip()],
        "jurisdiction": jurisdiction,
        "operator": operator,
        "signer": signer,
        "node_ips": node_ip or [],
        "operator_user_id": operator_user_id,
    }
    response = httpx.post(
        f"{api or _default_api()}/deliveries/sources", json=body, headers={"X-API-Key": api_key}, timeout=180
    )
    if response.status_code >= 400:
        _fail(response)
    source = response.json()
    typer.echo(json.dumps(source, indent=2))
    typer.secho(f"registered {source['name']} as {source['source_id']}", fg="green", err=True)


@sources_app.command("list")
def list_sources(api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """List delivery sources."""
    response = httpx.get(f"{api or _default_api()}/deliveries/sources", headers={"X-API-Key": api_key})
    if response.status_code >= 400:
        _fail(response)
    for source in response.json():
        typer.echo(f"{source['name']:<24} {source['kind']:<13} {source['status']:<11} {source['source_id']}")


@app.command("batches")
def list_batches(
    source: str | None = None,
    state: str | None = None,
    period_start: int | None = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """List delivery batches with their anchoring state."""
    query = {k: v for k, v in {"source": source, "state": state, "period_start": period_start}.items() if v}
    response = httpx.get(
        f"{api or _default_api()}/deliveries/batches", params=query, headers={"X-API-Key": api_key}
    )
    if response.status_code >= 400:
        _fail(response)
    for batch in response.json():
        typer.echo(
            f"{batch['batch_id'][:18]}…  {batch['source']:<20} {batch['period_start']:>11} "
            f"{batch['kind']:<10} {batch['state']:<18} {batch['leaf_count']:>9} {batch['tx_hash'] or ''}"
        )


@app.command()
def anchor(
    force_close: Annotated[
        bool, typer.Option(help="Close every open batch now, ignoring the late window (demos)")
    ] = False,
    wait: Annotated[bool, typer.Option(help="Keep confirming until every anchored batch is final")] = False,
    timeout: Annotated[float, typer.Option(help="Give up waiting after this many seconds")] = 300.0,
) -> None:
    """Close due batches, anchor them and confirm, in this process (no worker needed)."""
    from edgeledger.deliveries.anchoring import run_once

    settings = get_settings()
    summary = run_once(settings, force_close=force_close, wait=wait, timeout=timeout)
    typer.echo(json.dumps(summary, indent=2))
    if summary["anchoring"]["errors"]:
        raise typer.Exit(1)


@users_app.command("create")
def create_user(
    role: Annotated[str, typer.Option(help="creator, merchant, operator, auditor or admin")],
    name: Annotated[str, typer.Option()],
    address: Annotated[str | None, typer.Option(help="Wallet address")] = None,
    api_key: Annotated[bool, typer.Option(help="Also issue an API key (printed once)")] = True,
) -> None:
    """Create a user (e.g. the first admin) and print its API key once."""
    from sqlalchemy.orm import Session

    from edgeledger.auth import service
    from edgeledger.auth.models import Role
    from edgeledger.db import make_engine

    engine = make_engine(get_settings().resolved_database_url)
    with Session(engine) as session:
        user = service.create_user(session, role=Role(role), address=address, name=name)
        key = service.create_api_key(session, user, "cli")[0] if api_key else None
        session.commit()
        typer.echo(json.dumps({"id": user.id, "role": user.role, "address": user.address}))
    if key:
        typer.echo(f"API key (shown once): {key}", file=sys.stderr)


# --- settlement (through the API) ------------------------------------------------------------------

settlement_app = typer.Typer(
    help="Settlement: accounts, rate cards, FX, CDN bills, cases and settlements (through the API).",
    no_args_is_help=True,
)
app.add_typer(settlement_app, name="settlement")
settlement_accounts_app = typer.Typer(help="Merchants' settlement accounts.", no_args_is_help=True)
settlement_app.add_typer(settlement_accounts_app, name="accounts")
rate_card_app = typer.Typer(help="Rate card versions.", no_args_is_help=True)
settlement_app.add_typer(rate_card_app, name="rate-card")
fx_app = typer.Typer(help="The FX table.", no_args_is_help=True)
settlement_app.add_typer(fx_app, name="fx")
billing_app = typer.Typer(help="CDN billing reports.", no_args_is_help=True)
settlement_app.add_typer(billing_app, name="billing")


def _api_call(method: str, path: str, api: str, api_key: str, **kwargs: Any) -> httpx.Response:
    """One request to the API; an error response ends the command (exit code 1)."""
    response = httpx.request(
        method, f"{api or _default_api()}{path}", headers={"X-API-Key": api_key}, timeout=180, **kwargs
    )
    if response.status_code >= 400:
        _fail(response)
    return response


def _echo_json(response: httpx.Response) -> None:
    typer.echo(json.dumps(response.json(), indent=2))


@settlement_accounts_app.command("set")
def settlement_account_set(
    merchant_id: int,
    token: Annotated[str, typer.Option(help="Settlement token address (allow-listed in the vault)")],
    symbol: Annotated[str, typer.Option(help="Token symbol, e.g. USDC")],
    decimals: Annotated[int, typer.Option(help="Token decimals")],
    address: Annotated[str | None, typer.Option(help="Escrow owner; default the merchant's address")] = None,
    tolerance_bps: Annotated[int | None, typer.Option(help="Reconciliation tolerance")] = None,
    require_billing: Annotated[bool, typer.Option(help="Wait for the CDN's bill of each period")] = False,
    auto_settle: Annotated[bool, typer.Option(help="Settle periods automatically")] = True,
    settle_from: Annotated[int | None, typer.Option(help="First period to settle (unix seconds)")] = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Create or update a merchant's settlement account (admin, or the merchant itself)."""
    body = {
        "token": token,
        "token_symbol": symbol,
        "token_decimals": decimals,
        "address": address,
        "tolerance_bps": tolerance_bps,
        "require_billing": require_billing,
        "auto_settle": auto_settle,
        "settle_from": settle_from,
    }
    _echo_json(_api_call("PUT", f"/settlement/accounts/{merchant_id}", api, api_key, json=body))


@settlement_accounts_app.command("show")
def settlement_account_show(
    merchant_id: Annotated[int | None, typer.Argument(help="Merchant user id; all accounts without")] = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """One account with its live escrow and open totals, or every account (admins, auditors)."""
    path = "/settlement/accounts" + (f"/{merchant_id}" if merchant_id is not None else "")
    _echo_json(_api_call("GET", path, api, api_key))


@rate_card_app.command("add")
def settlement_rate_card_add(
    merchant_id: int,
    card: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Rate card JSON")],
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Add a rate card version (admin); overlapping windows are refused."""
    body = json.loads(card.read_text(encoding="utf-8"))
    path = f"/settlement/accounts/{merchant_id}/rate-cards"
    _echo_json(_api_call("POST", path, api, api_key, json=body))


@rate_card_app.command("list")
def settlement_rate_card_list(merchant_id: int, api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """The merchant's rate card versions."""
    _echo_json(_api_call("GET", f"/settlement/accounts/{merchant_id}/rate-cards", api, api_key))


@fx_app.command("add")
def settlement_fx_add(
    base: str,
    quote: str,
    rate: Annotated[str, typer.Argument(help='1 base = rate quote: a decimal ("1.0842") or "n/d"')],
    source: Annotated[str, typer.Option(help="Who published the rate")] = "manual",
    timestamp: Annotated[int | None, typer.Option(help="Unix seconds; default now")] = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Add an FX rate (admin). The rate is sent as a string and stored as an exact fraction."""
    body = {
        "source": source,
        "timestamp": timestamp if timestamp is not None else int(time.time()),
        "base": base,
        "quote": quote,
        "rate": rate,
    }
    _echo_json(_api_call("POST", "/settlement/fx-rates", api, api_key, json=body))


@fx_app.command("list")
def settlement_fx_list(api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """The FX table."""
    for row in _api_call("GET", "/settlement/fx-rates", api, api_key).json():
        typer.echo(
            f"{row['timestamp']:>11} {row['source']:<16} 1 {row['base']} = {row['rate']} {row['quote']}"
        )


@billing_app.command("import")
def settlement_billing_import(
    merchant_id: int,
    period_start: int,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    bytes_unit: Annotated[str, typer.Option(help="CloudFront usage values: bytes or GB")] = "bytes",
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Import the CDN's bill of one period (CSV). Bad rows are printed with their line numbers."""
    response = httpx.post(
        f"{api or _default_api()}/settlement/accounts/{merchant_id}/billing",
        params={"period_start": period_start, "bytes_unit": bytes_unit, "name": file.name},
        headers={"X-API-Key": api_key, "Content-Type": "text/csv"},
        content=file.read_bytes(),
        timeout=180,
    )
    if response.status_code == 422:
        try:
            details = response.json()["error"]["details"]
        except (ValueError, KeyError, TypeError):
            details = {}
        for problem in details.get("problems") or []:
            where = f"line {problem['line']}" if "line" in problem else problem.get("field", "")
            typer.secho(f"{file.name}: {where}: {problem['problem']}", fg="red", err=True)
        if details.get("lines"):
            lines = ", ".join(map(str, details["lines"]))
            typer.secho(f"{file.name}: lines {lines}", fg="red", err=True)
    if response.status_code >= 400:
        _fail(response)
    report = response.json()
    typer.echo(json.dumps(report, indent=2))
    typer.secho(
        f"imported {report['rows']} rows ({report['ignored']} ignored) as import #{report['id']}",
        fg="green",
        err=True,
    )


@settlement_app.command("cases")
def settlement_cases(
    open_only: Annotated[bool, typer.Option("--open", help="Only undecided cases")] = False,
    merchant: Annotated[int | None, typer.Option(help="Merchant user id")] = None,
    period_start: int | None = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Reconciliation cases (merchants: their own)."""
    query = {
        "merchant_user_id": merchant,
        "period_start": period_start,
        "state": "open" if open_only else None,
    }
    params = {k: v for k, v in query.items() if v is not None}
    for case in _api_call("GET", "/settlement/cases", api, api_key, params=params).json():
        typer.echo(
            f"#{case['id']:<6} merchant {case['merchant_user_id']:<5} {case['day']} {case['region']:<3} "
            f"{case['state']:<10} {','.join(case['reasons']):<22} bytes {case['ours_bytes']} vs "
            f"{case['theirs_bytes']}, requests {case['ours_requests']} vs {case['theirs_requests']}"
        )


@settlement_app.command("decide")
def settlement_decide(
    case_id: int,
    action: Annotated[str, typer.Argument(help="accept or adjust")],
    reason: Annotated[str, typer.Option(help="Why (recorded with who and when)")],
    adjustment: Annotated[int, typer.Option(help="Rate-card minor units added to the region's fee")] = 0,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Decide a reconciliation case (the case's merchant or an admin)."""
    body = {"action": action, "adjustment": adjustment, "reason": reason}
    _echo_json(_api_call("POST", f"/settlement/cases/{case_id}/decision", api, api_key, json=body))


@settlement_app.command("list")
def settlement_list(
    merchant: Annotated[int | None, typer.Option(help="Merchant user id")] = None,
    state: str | None = None,
    limit: int = 100,
    offset: int = 0,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Settlement attempts, newest period first."""
    query = {"merchant_user_id": merchant, "state": state, "limit": limit, "offset": offset}
    params = {k: v for k, v in query.items() if v is not None}
    page = _api_call("GET", "/settlement/settlements", api, api_key, params=params).json()
    for row in page["items"]:
        typer.echo(
            f"#{row['id']:<6} merchant {row['merchant_user_id']:<5} period {row['period_id']:<6} "
            f"attempt {row['attempt']} {row['state']:<10} total {row['total']:>14} "
            f"{row['error_code'] or row['tx_hash'] or ''}"
        )
    typer.secho(f"{len(page['items'])} of {page['total']}", err=True)


@settlement_app.command("show")
def settlement_show(settlement_id: int, api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """One settlement: state, period, root, total, transaction, error, counts, batches."""
    _echo_json(_api_call("GET", f"/settlement/settlements/{settlement_id}", api, api_key))


@settlement_app.command("statement")
def settlement_statement(
    settlement_id: int,
    output_format: Annotated[str, typer.Option("--format", help="json, csv or html")] = "json",
    output: Annotated[Path | None, typer.Option("-o", "--output", help="Write to this file")] = None,
    payee: Annotated[str | None, typer.Option(help="A payee's statement instead of the merchant's")] = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """A settlement's statement (merchant view, or one payee's with --payee)."""
    path = f"/settlement/settlements/{settlement_id}"
    path += f"/payees/{payee}/statement" if payee else "/statement"
    response = _api_call("GET", path, api, api_key, params={"format": output_format})
    if output is None:
        typer.echo(response.text)
    else:
        output.write_bytes(response.content)
        typer.secho(f"wrote {output}", fg="green", err=True)


@settlement_app.command("run")
def settlement_run(
    early: Annotated[
        bool, typer.Option(help="Open ended periods without waiting for the late window (demos)")
    ] = False,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Run the settlement scheduler once now (admin): open, compute, post, follow."""
    _echo_json(_api_call("POST", "/settlement/run", api, api_key, params={"early": early}))


@settlement_app.command("inputs")
def settlement_inputs(
    settlement_id: int,
    output: Annotated[Path, typer.Option("-o", "--output", help="Write the inputs document here")],
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Download the exact inputs a settlement's payouts were computed from (for `settlement verify`)."""
    response = _api_call("GET", f"/settlement/settlements/{settlement_id}/inputs", api, api_key)
    output.write_bytes(response.content)
    typer.secho(f"wrote {output}", fg="green", err=True)


@settlement_app.command("verify")
def settlement_verify(
    input_file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Inputs document JSON")],
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="ETH_RPC_URL", help="Chain JSON-RPC endpoint")],
    vault: Annotated[
        str | None, typer.Option(help="SettlementVault address (default: the document's)")
    ] = None,
) -> None:
    """Recompute a settlement's payouts from its inputs and check the root against the vault (no API,
    no database). Exit 0: all checks passed; 1: a check failed; 2: unusable input or RPC error."""
    from edgeledger.settlement import SettlementError
    from edgeledger.settlement import verify as checker

    try:
        document = json.loads(input_file.read_text())
        address = vault or document.get("vault")
        if not address:
            raise SettlementError("the document names no vault: pass --vault", code="document_invalid")
        on_chain = checker.vault_settlement(
            rpc_url, address, int(document["period_id"]), document["merchant"]
        )
        checks = checker.check_document(document, on_chain)
    except (ValueError, KeyError, OSError, SettlementError) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    except Exception as exc:  # web3 raises transport-specific errors
        typer.secho(f"error: cannot read the vault: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    for check in checks:
        typer.echo(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    ok = all(c.ok for c in checks)
    typer.echo("all checks passed" if ok else "FAILED")
    raise typer.Exit(0 if ok else 1)


@settlement_app.command("claims")
def settlement_claims(
    payee: str,
    recipient: Annotated[str | None, typer.Option(help="Where the tokens go; default the payee")] = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """A payee's payouts with proofs and the claimMany transaction to send from its wallet."""
    params = {"recipient": recipient} if recipient else None
    _echo_json(_api_call("GET", f"/settlement/payees/{payee}/claims", api, api_key, params=params))


# --- chain indexer -----------------------------------------------------------------------------------

chain_app = typer.Typer(
    help="The chain indexer (in this process, with this machine's settings).", no_args_is_help=True
)
app.add_typer(chain_app, name="chain")


def _indexer_context() -> Iterator[tuple[Any, Any, Any, Any]]:
    from sqlalchemy.orm import Session

    from edgeledger.db import make_engine
    from edgeledger.ipfs import IpfsClient
    from edgeledger.main import make_chain_client

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield session, make_chain_client(settings), settings, IpfsClient(settings.ipfs_api, timeout=10)
    finally:
        engine.dispose()


def _print_step(report: Any) -> None:
    note = f" (reorg: rolled back {report.reorg_depth} blocks)" if report.reorg_depth else ""
    typer.secho(
        f"block {report.to_block} of {report.target} (head {report.head}), {report.events} events{note}",
        err=True,
    )


@chain_app.command("index")
def chain_index(
    once: Annotated[bool, typer.Option(help="Catch up once and exit instead of following")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls when following")] = 5.0,
) -> None:
    """Follow the contracts' events into the database (the worker does it every 15 s)."""
    from edgeledger.indexer import flows

    for session, chain, settings, ipfs in _indexer_context():
        while True:
            flows.make_indexer(session, chain, settings, ipfs).catch_up(_print_step)
            if once:
                break
            time.sleep(interval)
        typer.echo(json.dumps(flows.status(session, chain, settings).model_dump(), indent=2))


@chain_app.command("rebuild")
def chain_rebuild() -> None:
    """Forget the indexed state and rebuild it from the chain and IPFS alone."""
    from edgeledger.indexer import flows

    for session, chain, settings, ipfs in _indexer_context():
        report = flows.rebuild(session, chain, settings, ipfs, progress=_print_step)
        typer.echo(json.dumps(flows.status(session, chain, settings).model_dump(), indent=2))
        if not report.caught_up:
            raise typer.Exit(1)


@chain_app.command("status")
def chain_status() -> None:
    """Indexer cursor, head, lag, events and reorgs."""
    from edgeledger.indexer import flows

    for session, chain, settings, _ in _indexer_context():
        typer.echo(json.dumps(flows.status(session, chain, settings).model_dump(), indent=2))


# --- audit packages ----------------------------------------------------------------------------------

audit_app = typer.Typer(
    help="Audit packages: export one, verify one against the chain.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")


def _day_bounds(day: str) -> tuple[int, int]:
    from datetime import UTC, datetime

    start = int(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC).timestamp())
    return start, start + 86_400


@audit_app.command("export")
def audit_export(
    period: Annotated[str, typer.Option(help="UTC day YYYY-MM-DD")],
    legal_basis: Annotated[str, typer.Option(help="Why the package is exported")],
    merchant: Annotated[str | None, typer.Option(help="Merchant: its (escrow) address or user id")] = None,
    source: Annotated[str | None, typer.Option(help="Source name or id")] = None,
    line: Annotated[list[str] | None, typer.Option(help="Request id of a line to prove (repeat)")] = None,
    log_line: Annotated[list[str] | None, typer.Option(help="A raw log line to prove (repeat)")] = None,
    output: Annotated[Path, typer.Option("-o", "--output")] = Path("audit-package.tar.gz"),
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Download an audit package for a day and a merchant or a source."""
    start, end = _day_bounds(period)
    by_address = merchant is not None and merchant.startswith("0x")
    if merchant is not None and not by_address and not merchant.isdigit():
        raise typer.BadParameter("an 0x address or a user id", param_hint="--merchant")
    body = {
        "period_start": start,
        "period_end": end,
        "merchant": merchant if by_address else None,
        "merchant_user_id": int(merchant) if merchant is not None and not by_address else None,
        "source": source,
        "request_ids": line or [],
        "log_lines": log_line or [],
        "legal_basis": legal_basis,
    }
    response = _api_call("POST", "/audit/packages", api, api_key, json=body)
    output.write_bytes(response.content)
    typer.secho(f"wrote {output} ({len(response.content)} bytes)", fg="green", err=True)


@audit_app.command("verify")
def audit_verify(
    archive: Path,
    rpc_url: Annotated[str, typer.Option(help="JSON-RPC of the chain")],
    as_json: Annotated[bool, typer.Option("--json", help="Results as JSON")] = False,
) -> None:
    """Verify an audit package with only the archive and the chain (exit 0 pass, 1 fail, 2 unusable)."""
    from edgeledger.audit.archive_verify import report

    raise typer.Exit(report(archive, rpc_url, as_json=as_json, out=sys.stdout))


# --- compliance --------------------------------------------------------------------------------------

compliance_app = typer.Typer(
    help="The anchored compliance log, erasure, raw-data exports and residency policies.",
    no_args_is_help=True,
)
app.add_typer(compliance_app, name="compliance")


@compliance_app.command("events")
def compliance_events(
    action: Annotated[str | None, typer.Option(help="read_raw, export, erase, ...")] = None,
    limit: int = 100,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """The compliance log, newest first (admins and auditors)."""
    params = {"limit": limit, **({"action": action} if action else {})}
    page = _api_call("GET", "/compliance/events", api, api_key, params=params).json()
    for event in page["items"]:
        typer.echo(
            f"{event['event_id'][:18]} {event['occurred_at_ms']} {event['actor']:<18} {event['action']:<15} "
            f"{event['subject']:<40} {event['batch_state'] or 'waiting'}  [{event['legal_basis']}]"
        )
    typer.secho(f"{len(page['items'])} of {page['total']}", err=True)


@compliance_app.command("proof")
def compliance_proof(event_id: str, api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """One event's proof document (feed it to `compliance verify-event`)."""
    _echo_json(_api_call("GET", f"/compliance/events/{event_id}/proof", api, api_key))


@compliance_app.command("erase")
def compliance_erase(
    legal_basis: Annotated[str, typer.Option(help="e.g. 'GDPR Art. 17 request #123'")],
    reference: Annotated[str, typer.Option(help="Your ticket reference")] = "",
    client_ip: Annotated[
        str, typer.Option(prompt="Data subject's IP address", hide_input=True, help="Prompted when omitted")
    ] = "",
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Right to erasure for one client IP (admin). The IP is sent once and never stored."""
    body = {"client_ip": client_ip, "legal_basis": legal_basis, "reference": reference}
    _echo_json(_api_call("POST", "/compliance/erasures", api, api_key, json=body))


@compliance_app.command("export")
def compliance_export(
    source: str,
    period_start: int,
    period_end: int,
    destination: Annotated[str, typer.Option(help="ISO country code of the recipient")],
    legal_basis: Annotated[str, typer.Option(help="Why the data is exported")],
    output: Annotated[Path, typer.Option("-o", "--output")] = Path("raw-export.json"),
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Raw records of a source and period, if the residency policy allows the destination."""
    body = {
        "source": source,
        "period_start": period_start,
        "period_end": period_end,
        "destination": destination,
        "legal_basis": legal_basis,
    }
    response = _api_call("POST", "/compliance/exports", api, api_key, json=body)
    output.write_bytes(response.content)
    typer.secho(f"wrote {len(response.json()['records'])} records to {output}", fg="green", err=True)


@compliance_app.command("policies")
def compliance_policies(api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """Where each data zone's raw logs may be stored and exported."""
    _echo_json(_api_call("GET", "/compliance/policies", api, api_key))


@compliance_app.command("set-policy")
def compliance_set_policy(
    zone: str,
    storage: Annotated[list[str], typer.Option(help="Zones raw logs may be stored in (repeat)")],
    export: Annotated[list[str], typer.Option(help="Zones raw logs may be exported to (repeat)")],
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Set one zone's residency policy (admin)."""
    body = {"storage_zones": storage, "export_zones": export}
    _echo_json(_api_call("PUT", f"/compliance/policies/{zone}", api, api_key, json=body))


@compliance_app.command("run")
def compliance_run(
    force: Annotated[bool, typer.Option(help="Batch waiting events now")] = False,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """One pass of the compliance job now (admin): retention, batch and anchor the log."""
    _echo_json(_api_call("POST", "/compliance/run", api, api_key, params={"force": force}))


@compliance_app.command("verify-event")
def compliance_verify_event(
    proof_file: Path,
    rpc_url: Annotated[str, typer.Option(help="JSON-RPC of the chain")],
    contract: Annotated[
        str | None, typer.Option(help="DeliveryLedger address; default the document's")
    ] = None,
) -> None:
    """Check one compliance event against the chain only: leaf, Merkle path, anchored root, verifyLeaf.
    Exit 0 all pass, 1 a check failed, 2 unusable input or RPC."""
    from edgeledger.compliance.verify import verify_event_proof
    from edgeledger.deliveries.verify import Ledger, UnusableInput

    try:
        document = json.loads(proof_file.read_text())
        address = contract or document.get("contract")
        if not address:
            raise UnusableInput("no contract address: pass --contract")
        checks = verify_event_proof(document, Ledger(rpc_url, address))
    except (OSError, ValueError, UnusableInput) as exc:
        typer.secho(f"error: {exc}", fg="red", err=True)
        raise typer.Exit(2) from None
    for check in checks:
        typer.echo(f"{'PASS' if check.ok else 'FAIL'}  {check.name}: {check.detail}")
    ok = all(c.ok for c in checks)
    typer.echo("event proven on chain" if ok else "FAILED")
    raise typer.Exit(0 if ok else 1)


if __name__ == "__main__":
    app()
