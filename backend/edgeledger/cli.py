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

from edgeledger.clitools import (
    API_TIMEOUT_SECONDS,
    EXIT_UNREACHABLE,
    ApiKey,
    ApiUrl,
    _api_call,
    _default_api,
    _echo_json,
    _fail,
    readable_file,
    summarise_territories,
    territory_summary,
    writable_output,
    write_output,
)
from edgeledger.config import get_settings
from edgeledger.deliveries.cli import app as deliveries_app
from edgeledger.ledger import registration as registration_formats
from edgeledger.settlement.cli import app as settlement_app
from edgeledger.verify.cli import app as verify_app

app = typer.Typer(help="EdgeLedger: content provenance and settlement for CDNs.", no_args_is_help=True)
users_app = typer.Typer(help="Users and API keys (direct database access, for operators).")
app.add_typer(users_app, name="users")
app.add_typer(verify_app, name="verify")
app.add_typer(settlement_app, name="settlement")
app.add_typer(deliveries_app, name="deliveries")


@app.command()
def up(
    demo: Annotated[bool, typer.Option(help="Run the scripted demo")] = True,
    ingest_workers: Annotated[
        int,
        typer.Option(
            min=1,
            max=64,
            help="`edgeledger ingest-worker` processes consuming the queued uploads (one is enough on the "
            "local SQLite database, which takes one writer at a time; more pay on PostgreSQL)",
        ),
    ] = 1,
) -> None:
    """Start anvil, IPFS, database, NATS JetStream, ingest workers, Celery worker and API locally (uploads
    queued, as in production); deploy once; run the demo; wait for Ctrl-C."""
    from edgeledger.devtools.demo import run_demo
    from edgeledger.devtools.stack import up as run_up

    run_up(get_settings(), demo=run_demo if demo else None, ingest_workers=ingest_workers)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; default API_HOST")] = "",
    port: Annotated[int, typer.Option(help="Port; default API_PORT")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes sharing the socket")] = 1,
) -> None:
    """Serve the API with uvicorn: TCP_NODELAY on every connection, workers that take turns accepting
    connections (docs/operations.md, "Read paths")."""
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
    file: Annotated[Path, typer.Argument(help="The file to upload")],
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
    creator_key_file: Annotated[
        Path | None,
        typer.Option(
            help="File holding the creator's private key: sign the registration here. Without it the "
            "typed data is printed for the creator's wallet, then `edgeledger sign-registration`."
        ),
    ] = None,
    description: str = "",
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Upload a file and register it (streamed, with a progress bar). The platform registers only what
    the creator signed: with --creator-key-file the registration is signed and submitted at once."""
    readable_file(file)
    if creator_key_file is not None:
        readable_file(creator_key_file)
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
    if response.status_code == 202:
        if creator_key_file is None:
            typer.echo(json.dumps(asset["typed_data"], indent=2))
            typer.secho(
                f"registration {asset['id']} awaits the creator's signature: sign the typed data above "
                f"(eth_signTypedData_v4), then run `edgeledger sign-registration {asset['id']} SIGNATURE`",
                fg="yellow",
                err=True,
            )
            return
        signature = registration_formats.sign(asset["typed_data"], creator_key_file.read_text().strip())
        asset = _submit_registration_signature(api, api_key, int(asset["id"]), signature)
    typer.echo(json.dumps(summarise_territories(asset), indent=2))
    typer.secho(
        f"registered asset #{asset['id']} in block {asset['chain']['block_number']} "
        f"(tx {asset['chain']['tx_hash']})",
        fg="green",
        err=True,
    )


def _submit_registration_signature(api: str, api_key: str, registration_id: int, signature: str) -> Any:
    response = httpx.post(
        f"{api or _default_api()}/assets/registrations/{registration_id}/signature",
        headers={"X-API-Key": api_key},
        json={"signature": signature},
        timeout=httpx.Timeout(30, read=None),
    )
    if response.status_code >= 400:
        _fail(response)
    return response.json()


@app.command("sign-registration")
def sign_registration(
    registration_id: Annotated[int, typer.Argument(help="The registration awaiting the creator's signature")],
    signature: Annotated[str, typer.Argument(help="The creator's signature of its typed data (0x...)")],
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Submit the creator's signature of a registration; the platform then registers it on chain."""
    asset = _submit_registration_signature(api, api_key, registration_id, signature)
    typer.echo(json.dumps(summarise_territories(asset), indent=2))
    typer.secho(
        f"registered asset #{asset['id']} in block {asset['chain']['block_number']}", fg="green", err=True
    )


@app.command("verify-delivery", hidden=False)
def verify_delivery_alias(
    input_file: Annotated[Path, typer.Argument(help="Proof, proofs or export JSON")],
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="ETH_RPC_URL", help="Chain JSON-RPC endpoint")],
    deployment: Annotated[Path | None, typer.Option(help="Deployment JSON naming the DeliveryLedger")] = None,
    contract: Annotated[str | None, typer.Option(help="DeliveryLedger address")] = None,
    onchain_sample: Annotated[int, typer.Option(min=0, help="Export records checked on chain")] = 16,
) -> None:
    """Alias of `edgeledger verify delivery` (kept for existing scripts)."""
    from edgeledger.verify.cli import run_delivery

    code = run_delivery(
        input_file, rpc_url, deployment=deployment, contract=contract, onchain_sample=onchain_sample
    )
    raise typer.Exit(code)


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
    response = httpx.get(
        f"{api or _default_api()}/assets",
        params=query,
        headers={"X-API-Key": api_key},
        timeout=API_TIMEOUT_SECONDS,
    )
    if response.status_code >= 400:
        _fail(response)
    for asset in response.json():
        typer.echo(f"#{asset['id']:<6} {asset['content_hash'][:18]}…  {asset['creator']}  {asset['title']}")


@app.command()
def provenance(asset_id: int, api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """Provenance of one asset: chain record, lineage, dispute status."""
    response = httpx.get(
        f"{api or _default_api()}/assets/{asset_id}",
        headers={"X-API-Key": api_key},
        timeout=API_TIMEOUT_SECONDS,
    )
    if response.status_code >= 400:
        _fail(response)
    typer.echo(json.dumps(summarise_territories(response.json()), indent=2))


def _file_chunks(handle: IO[bytes], bar: Any, chunk_size: int = 1 << 20) -> Iterator[bytes]:
    """The file in pieces for a chunked upload (never read whole), advancing the progress bar."""
    while chunk := handle.read(chunk_size):
        bar.update(len(chunk))
        yield chunk


_FINAL = ("done", "failed", "rejected")


def _wait_for_ingest(api: str, api_key: str, report: dict[str, Any], name: str) -> dict[str, Any]:
    """Follow a queued ingest (202) until it is final, showing its progress on stderr."""
    shown = None
    while report["state"] not in _FINAL:
        size = max(report["size_bytes"], 1)
        line = (
            f"{name}: {report['state']} {report['lines']:,} lines, "
            f"{report['bytes_read'] / 1048576:,.1f} of {size / 1048576:,.1f} MiB"
        )
        if line != shown:
            typer.echo(line, err=True)
            shown = line
        time.sleep(0.5)
        response = httpx.get(
            f"{api}/deliveries/ingests/{report['id']}",
            headers={"X-API-Key": api_key},
            timeout=API_TIMEOUT_SECONDS,
        )
        if response.status_code >= 400:
            _fail(response)
        report = response.json()
    return report


@app.command("ingest")
def ingest_logs(
    files: Annotated[list[Path], typer.Argument(help="Log files, plain or gzip")],
    source: Annotated[str, typer.Option(help="Delivery source name or 0x source id")],
    log_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="a format of docs/log-formats.md, e.g. cloudfront, tencent, akamai_json "
            "(default: the source's declared format, else detected)",
        ),
    ] = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
    wait: Annotated[bool, typer.Option(help="Follow a queued upload (202) until its report is final")] = True,
) -> None:
    """Upload delivery log files (plain or gzip) for a source; print each ingest report as a JSON line.

    When the API queues uploads (INGEST_MODE=queue) each file's progress is shown until its report is
    final (``--no-wait``: the queued report, at once).

    Exit code 1 when a file was rejected (not a log) or failed (e.g. a truncated gzip, an upload limit
    broken), after trying all; each failure is one line on stderr with the API's code and reason; 2 when
    a file is missing or unreadable (checked before anything is uploaded).
    """
    for file in files:
        readable_file(file)
    failed = 0
    for file in files:
        size = file.stat().st_size
        params = {"name": file.name, **({"log_format": log_format} if log_format else {})}
        started = time.perf_counter()
        try:
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
        except httpx.HTTPError as exc:  # the connection broke (the API's answer, if any, is in its report)
            failed += 1
            typer.secho(f"{file.name}: upload failed: {type(exc).__name__}: {exc}", fg="red", err=True)
            continue
        seconds = time.perf_counter() - started
        if response.status_code >= 400:
            failed += 1
            try:
                error = response.json()["error"]
                # the reason in one line (for a refused upload: which limit, its value, where it tripped)
                reason = str(error["message"]).removeprefix(f"{file.name}: ")
                message = f"{file.name}: error {response.status_code} {error['code']}: {reason}"
            except (ValueError, KeyError, TypeError):
                message = f"{file.name}: error {response.status_code}: {response.text[:500]}"
            typer.secho(message, fg="red", err=True)
            continue
        report = response.json()
        if response.status_code == 202 and wait:
            report = _wait_for_ingest(api or _default_api(), api_key, report, file.name)
            seconds = time.perf_counter() - started
            if report["state"] != "done":
                failed += 1
                reason = str(report["error_message"]).removeprefix(f"{file.name}: ")
                message = f"{file.name}: {report['state']} {report['error_code']}: {reason}"
                typer.secho(message, fg="red", err=True)
                continue
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


@app.command("ingest-worker")
def ingest_worker(
    partitions: Annotated[
        str, typer.Option(help="Partitions to consume, e.g. 0-3,6 (default: all INGEST_PARTITIONS)")
    ] = "",
    idle_exit: Annotated[
        float | None, typer.Option(help="Exit after this many seconds without a message (default: never)")
    ] = None,
) -> None:
    """Run queued ingests from NATS JetStream (INGEST_MODE=queue), one file at a time; SIGTERM or Ctrl-C
    stops after the current file. Start one per core on any number of hosts (docs/ingestion.md)."""
    import signal
    import threading

    from edgeledger.deliveries.ingest_queue import run_worker

    chosen: list[int] | None = None
    if partitions:
        chosen = []
        for part in partitions.split(","):
            first, _, last = part.strip().partition("-")
            chosen.extend(range(int(first), int(last or first) + 1))
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    settings = get_settings()
    done = run_worker(
        settings,
        chosen,
        stop=stop,
        idle_exit=idle_exit,
        on_ready=lambda: typer.echo(f"ingest worker ready on {settings.nats_url}", err=True),
    )
    typer.echo(json.dumps({"ingests": done}))


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
    typer.echo(json.dumps(summarise_territories(source), indent=2))
    serving = territory_summary(source["regions"])
    typer.secho(
        f"registered {source['name']} as {source['source_id']}, serving {serving}", fg="green", err=True
    )


@sources_app.command("list")
def list_sources(api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """List delivery sources."""
    response = httpx.get(
        f"{api or _default_api()}/deliveries/sources",
        headers={"X-API-Key": api_key},
        timeout=API_TIMEOUT_SECONDS,
    )
    if response.status_code >= 400:
        _fail(response)
    for source in response.json():
        typer.echo(f"{source['name']:<24} {source['kind']:<13} {source['status']:<11} {source['source_id']}")


@sources_app.command("authorise")
def authorise_source(
    source: Annotated[str, typer.Argument(help="The source's name or 0x source id")],
    merchant: Annotated[
        int | None, typer.Option(help="The merchant's user id (admins, on its behalf)")
    ] = None,
    revoke: Annotated[bool, typer.Option("--revoke", help="Stop the source billing the merchant")] = False,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Let a source bill a merchant (only authorised sources' records are charged), or --revoke it."""
    base, headers = api or _default_api(), {"X-API-Key": api_key}
    if revoke:
        params = {"merchant_user_id": merchant} if merchant is not None else {}
        response = httpx.delete(
            f"{base}/deliveries/merchant-sources/{source}",
            params=params,
            headers=headers,
            timeout=API_TIMEOUT_SECONDS,
        )
    else:
        body = {"source": source, "merchant_user_id": merchant}
        response = httpx.post(
            f"{base}/deliveries/merchant-sources", json=body, headers=headers, timeout=API_TIMEOUT_SECONDS
        )
    if response.status_code >= 400:
        _fail(response)
    typer.secho(f"{source} {'revoked' if revoke else 'authorised'}", fg="green", err=True)


@sources_app.command("authorised")
def list_authorised(api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """The sources each merchant authorises to bill it (a merchant sees its own)."""
    response = httpx.get(
        f"{api or _default_api()}/deliveries/merchant-sources",
        headers={"X-API-Key": api_key},
        timeout=API_TIMEOUT_SECONDS,
    )
    if response.status_code >= 400:
        _fail(response)
    typer.echo(json.dumps(response.json(), indent=2))


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
        f"{api or _default_api()}/deliveries/batches",
        params=query,
        headers={"X-API-Key": api_key},
        timeout=API_TIMEOUT_SECONDS,
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
    if summary["anchoring"]["waiting"]:
        typer.secho(
            f"{len(summary['anchoring']['waiting'])} anchor(s) wait (in the mempool, or not sent under "
            "TX_MAX_FEE_PER_GAS_WEI): a later run follows them; see the reasons above",
            fg="yellow",
            err=True,
        )
        raise typer.Exit(1)
    if summary["awaiting_signature"]:
        count = len(summary["awaiting_signature"])
        typer.secho(
            f"{count} closed batch(es) wait for their edge node's signature (GET /deliveries/batches/"
            "{id}/manifest, then POST …/signature): not anchored",
            fg="yellow",
            err=True,
        )
        raise typer.Exit(2)
    if wait and summary["still_anchored"]:
        typer.secho(
            f"{summary['still_anchored']} anchored batch(es) not final after {timeout:g} s",
            fg="yellow",
            err=True,
        )
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


# --- chain indexer -----------------------------------------------------------------------------------

chain_app = typer.Typer(
    help="The chain indexer (in this process, with this machine's settings).", no_args_is_help=True
)
app.add_typer(chain_app, name="chain")


def _indexer_context() -> Iterator[tuple[Any, Any, Any, Any]]:
    from sqlalchemy.orm import Session

    from edgeledger.chain.client import ChainClient
    from edgeledger.db import make_engine
    from edgeledger.ipfs import IpfsClient

    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    try:
        with Session(engine, expire_on_commit=False) as session:
            yield (
                session,
                ChainClient.from_settings(settings),
                settings,
                IpfsClient(settings.ipfs_api, timeout=10),
            )
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
    writable_output(output)
    start, end = _day_bounds(period)
    by_address = merchant is not None and merchant.startswith("0x")
    if merchant is not None and not by_address and not (merchant.isascii() and merchant.isdigit()):
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
    write_output(output, response.content)
    typer.secho(f"wrote {output} ({len(response.content)} bytes)", fg="green", err=True)


@audit_app.command("verify")
def audit_verify(
    archive: Path,
    rpc_url: Annotated[str, typer.Option(help="JSON-RPC of the chain")],
    as_json: Annotated[bool, typer.Option("--json", help="Results as JSON")] = False,
) -> None:
    """Alias of `edgeledger verify package`: an audit package against the archive and the chain only."""
    from edgeledger.verify.cli import run_package

    raise typer.Exit(run_package(archive, rpc_url, as_json=as_json))


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
    """One event's proof document (feed it to `edgeledger verify event`)."""
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
    writable_output(output)
    body = {
        "source": source,
        "period_start": period_start,
        "period_end": period_end,
        "destination": destination,
        "legal_basis": legal_basis,
    }
    response = _api_call("POST", "/compliance/exports", api, api_key, json=body)
    write_output(output, response.content)
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
    """Alias of `edgeledger verify event`: one compliance event against the chain only."""
    from edgeledger.verify.cli import run_event

    raise typer.Exit(run_event(proof_file, rpc_url, contract=contract))


def main() -> None:
    """The ``edgeledger`` command: an API or chain that cannot be reached is one line and exit code 3,
    not a traceback."""
    from edgeledger.chain.client import ChainError

    try:
        app()
    except httpx.TransportError as exc:
        where = str(exc.request.url) if getattr(exc, "_request", None) is not None else "the API"
        typer.secho(
            f"error: cannot reach {where}: {exc} (is the API running? --api sets its URL)", fg="red", err=True
        )
        raise SystemExit(EXIT_UNREACHABLE) from None
    except ChainError as exc:
        typer.secho(f"error: {exc.code}: {exc.message}", fg="red", err=True)
        raise SystemExit(EXIT_UNREACHABLE) from None


if __name__ == "__main__":
    main()
