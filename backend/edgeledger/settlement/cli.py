"""``edgeledger settlement``: merchants' accounts, rate cards, FX, CDN bills, reconciliation cases,
settlements, statements and claims, all through the API (docs/settlement.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer

from edgeledger.clitools import (
    ApiKey,
    ApiUrl,
    _api_call,
    _default_api,
    _echo_json,
    _fail,
    read_json_file,
    readable_file,
    writable_output,
    write_output,
)

app = settlement_app = typer.Typer(
    help="Settlement: accounts, rate cards, FX, CDN bills, cases and settlements (through the API).",
    no_args_is_help=True,
)
settlement_accounts_app = typer.Typer(help="Merchants' settlement accounts.", no_args_is_help=True)
settlement_app.add_typer(settlement_accounts_app, name="accounts")
rate_card_app = typer.Typer(help="Rate card versions.", no_args_is_help=True)
settlement_app.add_typer(rate_card_app, name="rate-card")
fx_app = typer.Typer(help="The FX table.", no_args_is_help=True)
settlement_app.add_typer(fx_app, name="fx")
billing_app = typer.Typer(help="CDN billing reports.", no_args_is_help=True)
settlement_app.add_typer(billing_app, name="billing")


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
    card: Annotated[Path, typer.Argument(help="Rate card JSON")],
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Add a rate card version (admin); overlapping windows are refused."""
    body = read_json_file(card)
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
    file: Annotated[Path, typer.Argument(help="The CDN's bill (CSV)")],
    bytes_unit: Annotated[str, typer.Option(help="CloudFront usage values: bytes or GB")] = "bytes",
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """Import the CDN's bill of one period (CSV). Bad rows are printed with their line numbers."""
    readable_file(file)
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
    if output is not None:
        writable_output(output)
    path = f"/settlement/settlements/{settlement_id}"
    path += f"/payees/{payee}/statement" if payee else "/statement"
    response = _api_call("GET", path, api, api_key, params={"format": output_format})
    if output is None:
        typer.echo(response.text)
    else:
        write_output(output, response.content)
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
    """Download the inputs a settlement's payouts were computed from (`edgeledger verify settlement`)."""
    writable_output(output)
    response = _api_call("GET", f"/settlement/settlements/{settlement_id}/inputs", api, api_key)
    write_output(output, response.content)
    typer.secho(f"wrote {output}", fg="green", err=True)


@settlement_app.command("verify")
def settlement_verify(
    input_file: Annotated[Path, typer.Argument(help="Inputs document JSON")],
    rpc_url: Annotated[str, typer.Option("--rpc-url", envvar="ETH_RPC_URL", help="Chain JSON-RPC endpoint")],
    vault: Annotated[
        str | None, typer.Option(help="SettlementVault address (default: the document's)")
    ] = None,
) -> None:
    """Alias of `edgeledger verify settlement`: recompute a settlement's payouts from its inputs and
    check them against the vault (no API, no database)."""
    from edgeledger.verify.cli import run_settlement

    raise typer.Exit(run_settlement(input_file, rpc_url, vault=vault))


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


@settlement_app.command("earnings")
def settlement_earnings(payee: str, api: ApiUrl = "", api_key: ApiKey = "") -> None:
    """A payee's running ledger per token: earned, released (held royalties paid after a dispute),
    claimed, unclaimed (claimable, pending on chain, not yet posted), and every settlement behind it."""
    _echo_json(_api_call("GET", f"/settlement/payees/{payee}/earnings", api, api_key))
