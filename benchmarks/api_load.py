"""API load: proof lookup and asset lookup against the same server's plain JSON health endpoint, in one run.

Sets up its own stack in a temporary directory: anvil with the contracts deployed, a local IPFS node, a
scratch PostgreSQL database (``--database-url``, default the local server's ``test``) migrated, an admin,
one registered asset and one CloudFront log of 400 lines ingested and anchored. Then serves the API with
uvicorn (``--workers`` processes, default 2, loopback only) and drives it with wrk (Debian package
``wrk``) for ``--seconds`` per endpoint and round:

* ``health``   ``GET /health`` (no database, no chain): the server's ceiling;
* ``proof``    ``GET /deliveries/proofs?source=…&request_id=…`` as an auditor: record, leaf, Merkle proof
               from the stored tree, and the compliance log's ``read_raw`` event (a database write);
* ``asset``    ``GET /assets/{id}``: provenance with the on-chain record read at request time (an
               ``eth_call`` to anvil) and lineage.

Rounds interleave the endpoints (health, proof, asset, health, …) so machine noise hits them alike;
printed: requests/s and p99 latency per endpoint (median over ``--rounds``) and each ratio to health in
the same round (median). Rate limits are raised out of the way (they would measure the limiter).

    .venv/bin/python -m benchmarks.api_load --seconds 10 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.chain.anvil import LocalAnvil, anvil_rpc
from edgeledger.chain.deploy import run_deploy_script
from edgeledger.db import make_engine, migrate
from edgeledger.demo import demo_cloudfront_log
from edgeledger.devstack import demo_png
from edgeledger.ipfs.node import LocalIpfsNode


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scratch_database(server_url: str) -> str:
    url = make_url(server_url).set(drivername="postgresql+psycopg2")
    name = f"edgeledger_load_{secrets.token_hex(4)}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def _drop_database(url: str) -> None:
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
    admin.dispose()


def _key(database_url: str, role: Role, name: str, address: str | None = None) -> str:
    engine = make_engine(database_url)
    with Session(engine) as session:
        user = auth_service.create_user(session, role=role, name=name, address=address)
        key, _ = auth_service.create_api_key(session, user, "load")
        session.commit()
    engine.dispose()
    return key


def _wrk(
    url: str, seconds: int, connections: int, threads: int, headers: dict[str, str]
) -> tuple[float, float]:
    """(requests/s, p99 ms) of one wrk run; non-2xx answers make the run fail."""
    command = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    if "Non-2xx or 3xx responses" in out:
        raise RuntimeError(f"errors under load at {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p99


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")

    base = Path(tempfile.mkdtemp(prefix="edgeledger-load-"))
    database_url = _scratch_database(args.database_url)
    anvil = LocalAnvil(_free_port(), log_file=base / "anvil.log")
    ports = [_free_port() for _ in range(3)]
    ipfs = LocalIpfsNode(base / "ipfs", *ports, base / "ipfs.log")
    server: subprocess.Popen[bytes] | None = None
    try:
        anvil.start()
        ipfs.start()
        deployer, signer = Account.create(), Account.create()
        for account in (deployer, signer):
            anvil_rpc(anvil.rpc_url, "anvil_setBalance", account.address, hex(10**22))
        deployment = base / "deployment.json"
        run_deploy_script(
            rpc_url=anvil.rpc_url,
            deployer_key=deployer.key.to_0x_hex(),
            registrar=signer.address,
            deployment_file=deployment,
            test_token=True,
        )
        migrate(database_url)
        port = _free_port()
        env = {
            **os.environ,
            "DATA_DIR": str(base),
            "DATABASE_URL": database_url,
            "ETH_RPC_URL": anvil.rpc_url,
            "DEPLOYMENT_FILE": str(deployment),
            "SIGNER_PRIVATE_KEY": signer.key.to_0x_hex(),
            "IPFS_API": ipfs.api_multiaddr,
            "PSEUDONYM_MASTER_KEY": secrets.token_hex(32),  # one key for every worker process
            "RATE_LIMIT_AUTH_PER_MINUTE": str(10**9),
            "RATE_LIMIT_AUDIT_PER_MINUTE": str(10**9),
            "RATE_LIMIT_WRITE_PER_MINUTE": str(10**9),
            "LOG_LEVEL": "WARNING",
        }
        uvicorn = str(Path(sys.executable).with_name("uvicorn"))
        server = subprocess.Popen(
            [
                uvicorn,
                "edgeledger.main:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(args.workers),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            env=env,
            stdout=(base / "api.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        api = f"http://127.0.0.1:{port}"
        for _ in range(300):
            try:
                if httpx.get(f"{api}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        admin = {"X-API-Key": _key(database_url, Role.admin, "load admin", deployer.address)}
        auditor = {"X-API-Key": _key(database_url, Role.auditor, "load auditor")}
        with httpx.Client(base_url=api, timeout=120) as client:
            asset = client.post(
                "/assets",
                headers=admin,
                files={"file": ("shot.png", demo_png("load"), "image/png")},
                data={"metadata": json.dumps({"title": "Load test shot", "creator": deployer.address})},
            )
            asset.raise_for_status()
            asset_doc = asset.json().get("asset", asset.json())
            source = {
                "name": "cf-load",
                "kind": "cdn_provider",
                "provider": "cloudfront",
                "regions": ["*"],
                "jurisdiction": "US",
            }
            client.post("/deliveries/sources", json=source, headers=admin).raise_for_status()
            log, request_ids = demo_cloudfront_log(
                asset_doc["content_cid"], asset_doc["size_bytes"], "load", lines=400, days_ago=2
            )
            client.post(
                "/deliveries/sources/cf-load/logs", files={"file": ("L.gz", log)}, headers=admin
            ).raise_for_status()
            client.post(
                "/deliveries/batches/close", json={"force": True, "anchor_now": True}, headers=admin
            ).raise_for_status()
            probe = client.get(
                "/deliveries/proofs",
                params={"source": "cf-load", "request_id": request_ids[7]},
                headers=auditor,
            )
            probe.raise_for_status()
        from urllib.parse import urlencode

        targets = {
            "health": (f"{api}/health", {}),
            "proof": (
                f"{api}/deliveries/proofs?{urlencode({'source': 'cf-load', 'request_id': request_ids[7]})}",
                auditor,
            ),
            "asset": (f"{api}/assets/{asset_doc['id']}", admin),
        }
        results: dict[str, list[tuple[float, float]]] = {name: [] for name in targets}
        ratios: dict[str, list[float]] = {"proof": [], "asset": []}
        for round_number in range(args.rounds):
            for name, (url, headers) in targets.items():
                results[name].append(_wrk(url, args.seconds, args.connections, args.threads, headers))
            for name in ratios:
                ratios[name].append(results[name][-1][0] / results["health"][-1][0])
            print(
                f"round {round_number + 1}: "
                + ", ".join(f"{n} {r[-1][0]:,.0f}/s" for n, r in results.items()),
                flush=True,
            )
        print(
            f"\n{args.workers} workers, {args.connections} connections, {args.seconds} s per endpoint and "
            f"round, median of {args.rounds} rounds"
        )
        print(f"{'endpoint':<8} {'requests/s':>11} {'p99 ms':>8} {'ratio to health':>16}")
        summary: dict[str, Any] = {}
        for name, runs in results.items():
            rps = statistics.median(r for r, _ in runs)
            p99 = statistics.median(p for _, p in runs)
            ratio = statistics.median(ratios[name]) if name in ratios else 1.0
            print(f"{name:<8} {rps:>11,.0f} {p99:>8.1f} {ratio:>15.0%}")
            summary[name] = {"rps": round(rps), "p99_ms": round(p99, 1), "ratio": round(ratio, 3)}
        print(json.dumps(summary))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        ipfs.stop()
        anvil.stop()
        _drop_database(database_url)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
