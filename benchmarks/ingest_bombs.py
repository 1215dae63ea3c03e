"""Hostile log uploads against the API: what each costs the API process in memory, and how it is answered.

Runs the API as its own uvicorn process on a free loopback port (SQLite; no chain or IPFS node is needed
to take logs), creates an operator and a CloudFront source in its database, uploads one ordinary log,
then each hostile input below as a raw body to ``POST /deliveries/sources/{ref}/logs``. Before each upload
the API process's peak RSS (``VmHWM``) is reset through ``/proc/PID/clear_refs``; after it the peak is read
back. Printed per input: its size as sent and decompressed, the response (status and code), the API's
idle RSS before and peak RSS during the upload, the rows the upload left (records, quarantined lines),
and whether the ordinary log's records are all still there.

``--limits default`` runs the API with the default ``INGEST_MAX_*`` settings; ``--limits off`` sets them
all out of reach, so every input is read to its end: what is then left in memory is what the chunked
ingestion holds, however many comment or junk lines arrive.

    .venv/bin/python -m benchmarks.ingest_bombs --limits default
    .venv/bin/python -m benchmarks.ingest_bombs --limits off
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from eth_account import Account
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from benchmarks.ingest_formats import CLOUDFRONT_FIELDS
from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.db import make_engine, migrate
from edgeledger.deliveries.models import DeliveryRecordRow, DeliverySource, QuarantinedLineRow
from edgeledger.ledger.ids import source_id_for
from edgeledger.processes import free_port

MIB = 1024 * 1024
HEADER = "#Version: 1.0\n#Fields: " + CLOUDFRONT_FIELDS + "\n"
EMOJI = [chr(0x1F600 + i) for i in range(64)]


def cloudfront_line(n: int, request_id: str | None = None) -> str:
    """One valid CloudFront line of 2024-05-01 (33 fields, as in benchmarks/ingest.py)."""
    rid = request_id or f"req-{n:08d}-{'x' * 40}"
    return (
        f"2024-05-01\t00:{n // 60 % 60:02d}:{n % 60:02d}\tFRA56-P7\t1000\t198.51.100.{n % 250 + 1}\tGET\t"
        f"d111111abcdef8.cloudfront.net\t/media/v{n}.ts\t200\t-\tVLC/3.0\t-\t-\tHit\t{rid}\t"
        f"media.example.com\thttps\t180\t0.042\t-\tTLSv1.3\tTLS_AES_128_GCM_SHA256\tHit\tHTTP/2.0\t-\t-\t"
        f"443\t0.011\tHit\tvideo/MP2T\t1000\t-\t-\n"
    )


def good_log(lines: int = 100, prefix: str = "good") -> bytes:
    """An ordinary gzip CloudFront log of ``lines`` records."""
    body = "".join(cloudfront_line(n, f"{prefix}-{n:06d}-{'y' * 30}") for n in range(lines))
    return gzip.compress((HEADER + body).encode())


def comment_bomb(comment_lines: int = 3_000_000) -> bytes:
    """A valid CloudFront header, then ``comment_lines`` ``#`` comment lines: about 6 KB of gzip."""
    return gzip.compress((HEADER + "#\n" * comment_lines).encode(), compresslevel=9)


def emoji_bomb(lines: int = 12_000, width: int = 2_000, seed: int = 7) -> bytes:
    """A header, then ``lines`` lines of ``width`` emoji (4 bytes each in UTF-8; random, so gzip cannot
    shrink them much: every line is quarantined)."""
    rng = random.Random(seed)
    body = "".join("".join(rng.choices(EMOJI, k=width)) + "\n" for _ in range(lines))
    return gzip.compress((HEADER + body).encode(), compresslevel=1)


def ratio_bomb(blank_mib: int = 256) -> bytes:
    """A header and one good line, then ``blank_mib`` MiB of newlines: about 1,000-fold gzip."""
    return gzip.compress((HEADER + cloudfront_line(0)).encode() + b"\n" * (blank_mib * MIB), compresslevel=9)


def long_line(chars: int = 4 * MIB) -> bytes:
    """A header, one good line, one line of ``chars`` characters, one more good line (plain text)."""
    return (HEADER + cloudfront_line(1) + "x" * chars + "\n" + cloudfront_line(2)).encode()


def junk_lines(lines: int = 20_000, seed: int = 8) -> bytes:
    """A header, then ``lines`` lines of random hex: none a record, every one quarantined (plain text)."""
    rng = random.Random(seed)
    return (HEADER + "".join(f"{rng.getrandbits(256):064x}\n" for _ in range(lines))).encode()


INPUTS: dict[str, tuple[str, Callable[[], bytes]]] = {
    "comment bomb": ("6 KB gzip: header + 3,000,000 `#` lines", comment_bomb),
    "emoji bomb": ("gzip: header + 12,000 lines of 2,000 emoji", emoji_bomb),
    "ratio bomb": ("gzip: header + 1 line + 256 MiB of newlines", ratio_bomb),
    "long line": ("plain: a 4 MiB line between good lines", long_line),
    "junk lines": ("plain: header + 20,000 random hex lines", junk_lines),
}

LIMITS_OFF = {
    "INGEST_MAX_DECOMPRESSED_BYTES": str(1 << 50),
    "INGEST_MAX_COMPRESSION_RATIO": str(1 << 40),
    "INGEST_MAX_LINE_CHARS": "1000000",
    "INGEST_MAX_LINES": str(1 << 40),
    "INGEST_MAX_QUARANTINED_LINES": str(1 << 40),
}


def rss_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} missing")


def decompressed_size(data: bytes) -> int:
    if data[:2] != b"\x1f\x8b":
        return len(data)
    size = 0
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as stream:
        while piece := stream.read(MIB):
            size += len(piece)
    return size


def human(size: int) -> str:
    if size >= MIB:
        return f"{size / MIB:,.1f} MiB"
    if size >= 1024:
        return f"{size / 1024:,.1f} KiB"
    return f"{size} B"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--limits", choices=("default", "off"), default="default")
    parser.add_argument("--only", nargs="*", choices=sorted(INPUTS), help="run only these inputs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="edgeledger-bombs-"))
    db_url = f"sqlite:///{work / 'bombs.db'}"
    migrate(db_url)
    engine = make_engine(db_url)
    with Session(engine) as session:
        user = auth_service.create_user(
            session, role=Role.operator, address=Account.create().address, name="bombs"
        )
        key, _ = auth_service.create_api_key(session, user, "bombs")
        session.add(
            DeliverySource(
                source_id=source_id_for("cf-bombs"),
                name="cf-bombs",
                kind="cdn_provider",
                provider="cloudfront",
                operator="0x" + "11" * 20,
                signer="0x" + "22" * 20,
                regions_bitmap="0x0",
                jurisdiction="DE",
                status="active",
                operator_user_id=user.id,
            )
        )
        session.commit()

    env = {
        **os.environ,
        "DATA_DIR": str(work),
        "DATABASE_URL": db_url,
        "PSEUDONYM_MASTER_KEY": "33" * 32,
        "DEPLOYMENT_FILE": str(work / "no-deployment.json"),
        "LOG_LEVEL": "WARNING",
        **(LIMITS_OFF if args.limits == "off" else {}),
    }
    try:
        with serve_api(env) as (base, _):
            first = upload(base, key, "good.log.gz", good_log())
            first.raise_for_status()
        good_id = first.json()["id"]

        def rows(ingest_id: int) -> tuple[int, int]:
            with Session(engine) as session:
                records = session.scalar(
                    select(func.count()).where(DeliveryRecordRow.ingest_file_pk == ingest_id)
                )
                quarantined = session.scalar(
                    select(func.count()).where(QuarantinedLineRow.ingest_file_pk == ingest_id)
                )
            return records or 0, quarantined or 0

        print(f"limits: {args.limits}; ordinary log first: ingest {good_id}, {rows(good_id)[0]} records")
        table = [
            "| input | sent | decompressed | response | API idle RSS | API peak RSS | rows left "
            "(records / quarantined) | earlier upload intact | seconds |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label, (description, make) in INPUTS.items():
            if args.only and label not in args.only:
                continue
            data = make()
            with serve_api(env) as (base, pid):  # a fresh API process per input: its own peak
                idle = rss_kib(pid, "VmRSS")
                Path(f"/proc/{pid}/clear_refs").write_text("5")
                started = time.perf_counter()
                response = upload(base, key, f"{label.replace(' ', '-')}.log", data)
                seconds = time.perf_counter() - started
                peak = rss_kib(pid, "VmHWM")
            body = response.json()
            if response.status_code >= 400:
                error = body["error"]
                answer = f"{response.status_code} `{error['code']}`"
                ingest_id = error["details"].get("ingest_id")
                print(f"{label}: {error['message']}")
            else:
                answer = f"{response.status_code} ({body['state']}, {body['lines']:,} lines)"
                ingest_id = body["id"]
            records, quarantined = rows(ingest_id) if ingest_id else (0, 0)
            intact = "yes" if rows(good_id) == (100, 0) else "NO"
            sizes = f"{human(len(data))} | {human(decompressed_size(data))}"
            memory = f"{idle / 1024:.0f} MiB | {peak / 1024:.0f} MiB"
            table.append(
                f"| {label}: {description} | {sizes} | {answer} | {memory} | {records:,} / {quarantined:,} "
                f"| {intact} | {seconds:.1f} |"
            )
        print()
        print("\n".join(table))
    finally:
        engine.dispose()


@contextmanager
def serve_api(env: dict[str, str]) -> Iterator[tuple[str, int]]:
    """The API as its own uvicorn process on a free port: (base URL, pid), stopped on exit."""
    port = free_port()
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    factory = ["edgeledger.main:create_app", "--factory"]
    api = subprocess.Popen([uvicorn, *factory, "--port", str(port), "--log-level", "warning"], env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        while True:
            try:
                if httpx.get(f"{base}/health").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        yield base, api.pid
    finally:
        api.terminate()
        api.wait()


def upload(base: str, key: str, name: str, data: bytes) -> httpx.Response:
    """A raw-body log upload to the benchmark's source."""
    return httpx.post(
        f"{base}/deliveries/sources/cf-bombs/logs",
        params={"name": name},
        headers={"X-API-Key": key, "Content-Type": "application/octet-stream"},
        content=data,
        timeout=httpx.Timeout(30, read=None, write=None),
    )


if __name__ == "__main__":
    main()
