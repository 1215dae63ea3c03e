"""``edgeledger deliveries proof|export``: a delivered request's proof and a batch's export, through the
API (docs/proofs.md); either file is what ``edgeledger verify delivery`` checks against the chain.

A whole-batch export is streamed to disk (never held in memory) into ``FILE.part``, renamed to ``FILE``
only once every record has arrived: an interrupted download (Ctrl-C, a dropped connection, an API error
mid-stream) leaves no file that looks complete. Exit codes as every command (clitools): 0 written,
1 an API error answer (or an export that ended early), 2 usage (both or neither of a request id and
``--line``, an output path that cannot be written), 3 the API unreachable.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn

import httpx
import typer

from edgeledger.clitools import (
    EXIT_REFUSED,
    ApiKey,
    ApiUrl,
    _api_call,
    _default_api,
    _fail,
    usage_error,
    writable_output,
    write_output,
)

app = typer.Typer(
    help="Delivery proofs and batch exports (through the API); check them with `edgeledger verify delivery`.",
    no_args_is_help=True,
)

#: Raw-data reads are logged in the compliance log with a legal basis (docs/compliance.md).
LEGAL_BASIS_HEADER = "X-Legal-Basis"
LegalBasis = Annotated[
    str | None, typer.Option(help="Legal basis of this raw-data read (logged); default: your role's")
]
Output = Annotated[Path | None, typer.Option("-o", "--output", help="Write here instead of standard output")]
#: What each exported record's JSON carries once (the export's values are ``{"value":…,"treeIndex":…}``).
_RECORD_MARK = b'"treeIndex":'


def _headers(legal_basis: str | None) -> dict[str, str]:
    return {LEGAL_BASIS_HEADER: legal_basis} if legal_basis else {}


def _incomplete(count: int, expected: int) -> NoReturn:
    typer.secho(f"error: the export ended after {count:,} of {expected:,} records", fg="red", err=True)
    raise typer.Exit(EXIT_REFUSED)


def _read_line(line: str) -> str:
    """``-`` reads the line from standard input (its first line); a raw line holds a client IP, and
    stdin keeps it out of the shell history."""
    if line != "-":
        return line
    text = sys.stdin.readline().rstrip("\r\n")
    if not text:
        usage_error("--line -: standard input is empty")
    return text


@app.command("proof")
def delivery_proof(
    source: Annotated[str, typer.Option(help="Source name or 0x source id")],
    request_id: Annotated[
        str | None, typer.Argument(help="The request id as logged", show_default=False)
    ] = None,
    line: Annotated[
        str | None, typer.Option(help="A raw log line instead of a request id; - reads it from stdin")
    ] = None,
    header: Annotated[
        str | None, typer.Option(help="CloudFront lines: the file's '#Fields:' header line")
    ] = None,
    output: Output = None,
    legal_basis: LegalBasis = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """One delivered request's proof document (edgeledger-proof/v1), by request id or by raw log line."""
    if (request_id is None) == (line is None):
        usage_error("give a request id or --line (one of them)")
    if header is not None and line is None:
        usage_error("--header goes with --line")
    if output is not None:
        writable_output(output)
    headers = _headers(legal_basis)
    if line is not None:
        body = {"source": source, "line": _read_line(line), "header": header}
        response = _api_call("POST", "/deliveries/proofs/line", api, api_key, json=body, headers=headers)
    else:
        params = {"source": source, "request_id": request_id}
        response = _api_call("GET", "/deliveries/proofs", api, api_key, params=params, headers=headers)
    proof = response.json()
    text = json.dumps(proof, indent=1) + "\n"
    if output is None:
        typer.echo(text, nl=False)
    else:
        write_output(output, text.encode())
    batch = proof["batch"]
    where = (
        f"anchored in block {proof['block_number']} (tx {proof['tx_hash']})"
        if proof.get("anchored")
        else f"{batch['state']}, not anchored yet: the proof fails verification until it is"
    )
    wrote = f", written to {output}" if output is not None else ""
    typer.secho(
        f"{proof['record']['request_id']}: batch {batch['batch_id']}, {where}{wrote}", fg="green", err=True
    )


class _RecordCounter:
    """Counts exported records in the streamed bytes (one ``"treeIndex":`` each), across chunk edges."""

    def __init__(self, advance: Callable[[int], Any]) -> None:
        self.count = 0
        self._tail = b""
        self._advance = advance

    def feed(self, chunk: bytes) -> None:
        data = self._tail + chunk
        found = data.count(_RECORD_MARK)
        self._tail = data[-(len(_RECORD_MARK) - 1) :]
        if found:
            self.count += found
            self._advance(found)


def _stream_to(response: httpx.Response, sink: IO[bytes], counter: _RecordCounter) -> int:
    written = 0
    for chunk in response.iter_bytes():
        sink.write(chunk)
        counter.feed(chunk)
        written += len(chunk)
    return written


@app.command("export")
def delivery_export(
    batch_id: Annotated[str, typer.Argument(help="Batch id (0x…) or its database id")],
    output: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write here; default <batch id>.json; - for standard output"),
    ] = None,
    request_id: Annotated[
        list[str] | None,
        typer.Option("--request-id", help="Only these records' proofs (repeat; at most 1,000)"),
    ] = None,
    legal_basis: LegalBasis = None,
    api: ApiUrl = "",
    api_key: ApiKey = "",
) -> None:
    """A closed batch's whole export, streamed to a file (progress on stderr); or some records' proofs.

    The export holds the batch's Merkle tree and every record; with --request-id, the proofs of just
    those records instead.
    """
    to_stdout = output is not None and str(output) == "-"
    if output is not None and not to_stdout:
        writable_output(output)
    headers = _headers(legal_basis)
    batch = _api_call("GET", f"/deliveries/batches/{batch_id}", api, api_key).json()
    target = output if output is not None else Path(f"{batch['batch_id']}.json")
    if output is None:
        writable_output(target)
    path = f"/deliveries/batches/{batch['batch_id']}/export"
    where = "" if to_stdout else f" to {target}"
    if request_id:
        params = {"request_ids": ",".join(request_id)}
        document = _api_call("GET", path, api, api_key, params=params, headers=headers)
        if to_stdout:
            typer.echo(document.text)
        else:
            write_output(target, document.content)
        count = len(document.json()["proofs"])
        typer.secho(f"wrote {count} proofs of batch {batch['batch_id']}{where}", fg="green", err=True)
        return
    expected = int(batch["leaf_count"])
    label = f"exporting {batch['batch_id'][:18]}… ({expected:,} records)"
    url = f"{api or _default_api()}{path}"
    headers["X-API-Key"] = api_key
    with (
        httpx.stream("GET", url, headers=headers, timeout=httpx.Timeout(30, read=None)) as response,
        typer.progressbar(length=expected, label=label, file=sys.stderr) as bar,
    ):
        if response.status_code >= 400:
            response.read()
            _fail(response)
        counter = _RecordCounter(bar.update)
        if to_stdout:
            written = _stream_to(response, sys.stdout.buffer, counter)
            sys.stdout.buffer.flush()
        else:
            part = target.with_name(target.name + ".part")
            try:
                with part.open("wb") as sink:
                    written = _stream_to(response, sink, counter)
                if counter.count != expected:
                    _incomplete(counter.count, expected)
                part.replace(target)
            except BaseException:
                part.unlink(missing_ok=True)
                raise
    if counter.count != expected:
        _incomplete(counter.count, expected)
    typer.secho(f"wrote {counter.count:,} records ({written:,} bytes){where}", fg="green", err=True)
