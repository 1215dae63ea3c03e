"""What the ``edgeledger`` command families share: the API address and key options, calling the API
with them, and printing its answers and errors (one line each, never a traceback)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

from edgeledger.config import get_settings

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
