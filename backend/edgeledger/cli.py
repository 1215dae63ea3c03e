"""`edgeledger` command line: the local stack, asset registration and verification, administration."""

from __future__ import annotations

import json
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


if __name__ == "__main__":
    app()
