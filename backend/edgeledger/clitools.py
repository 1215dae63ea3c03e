"""What the ``edgeledger`` command families share: the API address and key options, calling the API
with them, printing its answers and errors (one line each, never a traceback), the exit codes, reading
the files commands are given and writing the files they produce.

Exit codes, the same for every command (docs/cli.md, "Exit codes"):

    0  done        1  refused: an API error answer, a failed check, a rejected file
    2  usage: a missing or unreadable file, a bad option, an unwritable output
    3  the API or the chain could not be reached
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer

from edgeledger.config import get_settings
from edgeledger.territories import TERRITORY_CODES

ApiUrl = Annotated[str, typer.Option("--api", envvar="EDGELEDGER_API", help="API base URL")]
ApiKey = Annotated[str, typer.Option("--api-key", envvar="EDGELEDGER_API_KEY", help="API key (X-API-Key)")]

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
#: seconds an API call may take before the command gives up (httpx's own default, 5 s, is shorter than
#: a busy server's first answer)
API_TIMEOUT_SECONDS = 180


def _default_api() -> str:
    return get_settings().resolved_public_base_url


def _fail(response: httpx.Response) -> NoReturn:
    try:
        error = response.json()["error"]
        typer.secho(f"error {response.status_code} {error['code']}: {error['message']}", fg="red", err=True)
    except (ValueError, KeyError, TypeError):
        typer.secho(f"error {response.status_code}: {response.text[:500]}", fg="red", err=True)
    raise typer.Exit(EXIT_REFUSED)


def usage_error(message: str) -> NoReturn:
    """One ``error: …`` line on standard error and exit code 2 (a missing file, a bad option)."""
    typer.secho(f"error: {message}", fg="red", err=True)
    raise typer.Exit(EXIT_USAGE)


def _api_call(method: str, path: str, api: str, api_key: str, **kwargs: Any) -> httpx.Response:
    """One request to the API (``headers`` are added to the API key's); an error response ends the
    command (exit code 1)."""
    headers = {"X-API-Key": api_key, **kwargs.pop("headers", {})}
    response = httpx.request(
        method, f"{api or _default_api()}{path}", headers=headers, timeout=API_TIMEOUT_SECONDS, **kwargs
    )
    if response.status_code >= 400:
        _fail(response)
    return response


def _echo_json(response: httpx.Response) -> None:
    typer.echo(json.dumps(summarise_territories(response.json()), indent=2))


# --- files --------------------------------------------------------------------------------------------


def readable_file(path: Path) -> Path:
    """``path`` if it is a file this process can read; otherwise a one-line usage error (exit code 2)."""
    if not path.exists():
        usage_error(f"{path}: no such file")
    if not path.is_file():
        usage_error(f"{path}: not a file")
    if not os.access(path, os.R_OK):
        usage_error(f"{path}: not readable (permission denied)")
    return path


def read_json_file(path: Path) -> Any:
    """A JSON file's document; a missing file or one that is not JSON is a usage error (exit code 2)."""
    try:
        return json.loads(readable_file(path).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        usage_error(f"{path}: not JSON ({exc})")


def writable_output(path: Path) -> Path:
    """``path`` if a file can be written there (its folder exists, it is not a folder itself);
    checked before the API is asked, so a typo costs no download."""
    if path.is_dir():
        usage_error(f"{path}: is a folder; give a file name")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        usage_error(f"{path}: the folder {folder} does not exist")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        usage_error(f"{path}: not writable (permission denied)")
    return path


def write_output(path: Path, content: bytes) -> None:
    """Write a command's result file; a path that cannot be written is a usage error (exit code 2)."""
    try:
        writable_output(path).write_bytes(content)
    except OSError as exc:
        usage_error(f"{path}: cannot write ({exc.strerror or exc})")


# --- territory lists ----------------------------------------------------------------------------------

#: Territory lists longer than this print as a summary (``all 249 territories``, ``240 territories …``).
TERRITORY_LIST_MAX = 16
_TERRITORY_KEYS = frozenset({"territories", "regions"})


def territory_summary(codes: Iterable[str]) -> str:
    """A list of ISO 3166-1 alpha-2 codes for people: ``DE, FR`` when short, ``all 249 territories``,
    ``all 249 territories but CN, RU`` when a few are missing, else the count with the first codes."""
    listed = sorted({code.upper() for code in codes})
    total = len(TERRITORY_CODES)
    if len(listed) <= TERRITORY_LIST_MAX:
        return ", ".join(listed) if listed else "no territories"
    missing = sorted(set(TERRITORY_CODES) - set(listed))
    if not missing:
        return f"all {total} territories"
    if len(missing) <= TERRITORY_LIST_MAX:
        return f"all {total} territories but {', '.join(missing)}"
    return f"{len(listed)} territories: {', '.join(listed[:8])}, … {listed[-1]}"


def summarise_territories(document: Any) -> Any:
    """``document`` with every long ``territories`` or ``regions`` list (of territory codes) replaced
    by :func:`territory_summary`'s line, at any depth; short lists stay lists. For printing only: the
    API's answers keep the codes."""
    if isinstance(document, dict):
        return {
            key: (
                territory_summary(value)
                if key in _TERRITORY_KEYS
                and isinstance(value, list)
                and len(value) > TERRITORY_LIST_MAX
                and all(isinstance(code, str) for code in value)
                else summarise_territories(value)
            )
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [summarise_territories(item) for item in document]
    return document
