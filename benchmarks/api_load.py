"""API load: proof lookups and asset lookups against the same server's plain JSON health endpoint, in one run.

Sets up its own stack in a temporary directory (:class:`LoadStack`): anvil with the contracts deployed, a
local IPFS node, a scratch PostgreSQL database (``--database-url``, default the local server's ``test``)
migrated, an admin and an auditor, ``--assets`` registered assets and one CloudFront log of 400 lines
ingested and anchored. Then serves the API with uvicorn (``--workers`` processes, default 2, loopback
only, as ``edgeledger serve`` does) and drives it with wrk (Debian package ``wrk``) for ``--seconds``
per endpoint, round and connection count:

* ``health``   ``GET /health`` (no database, no chain): the server's ceiling;
* ``proof``    ``GET /deliveries/proofs?source=…&request_id=…`` as an auditor, cycling through all 400
               request ids: record, leaf, Merkle proof from the stored tree, and the compliance log's
               ``read_raw`` event (a database write, committed before the answer);
* ``asset``    ``GET /assets/{id}`` cycling through the registered assets: provenance with the on-chain
               record read at the shared chain head (``READ_MAX_AGE_SECONDS``) and lineage.

Each endpoint gets one second of unmeasured warm-up per connection count; rounds then interleave the
endpoints (health, proof, asset, health, …) so machine noise hits them alike. Printed per connection
count: requests/s and p99 latency per endpoint (median over ``--rounds``), each ratio to health in the
same round (median), the API processes' CPU time per request, and the whole machine's (the database
server and wrk included). Rate limits are raised out of the way
(they would measure the limiter).

    .venv/bin/python -m benchmarks.api_load --connections 2,8,32 --seconds 8 --rounds 3

``--bursts N`` measures instead how a burst of new connections is spread over the worker processes
(docs/operations.md, "Read paths"): N runs of 3 s against ``/health``, each opening the largest
connection count at once, printing how many connections each worker holds one second in.

    .venv/bin/python -m benchmarks.api_load --connections 32 --bursts 6
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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.chain.anvil import LocalAnvil
from edgeledger.chain.deploy import deploy_with_fresh_keys
from edgeledger.db import make_engine, migrate
from edgeledger.devtools.samples import demo_cloudfront_log, demo_png
from edgeledger.ipfs.node import LocalIpfsNode
from edgeledger.ledger import registration as registration_formats
from edgeledger.processes import free_port, free_ports
from edgeledger.server import uvicorn_command

SOURCE = "cf-load"


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


def _user_with_key(database_url: str, role: Role, name: str, address: str | None = None) -> tuple[int, str]:
    """A new user of ``role`` and an API key of it: (user id, key)."""
    engine = make_engine(database_url)
    with Session(engine) as session:
        user = auth_service.create_user(session, role=role, name=name, address=address)
        key, _ = auth_service.create_api_key(session, user, "load")
        session.commit()
        user_id = user.id
    engine.dispose()
    return user_id, key


@dataclass
class LoadStack:
    """A served API with assets and an anchored batch to look up; see the module docstring."""

    api: str
    database_url: str
    admin: dict[str, str]
    auditor: dict[str, str]
    asset_ids: list[int]
    request_ids: list[str]
    server: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def proof_path(self, request_id: str) -> str:
        return "/deliveries/proofs?" + urlencode({"source": SOURCE, "request_id": request_id})

    def worker_pids(self) -> list[int]:
        """The uvicorn worker processes (spawned by multiprocessing; not its resource tracker)."""
        workers = []
        for pid in self.server_pids()[1:]:
            try:
                command = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in command:
                workers.append(pid)
        return workers

    def server_pids(self) -> list[int]:
        """The uvicorn supervisor and its worker processes."""
        if self.server is None:
            return []
        children = Path(f"/proc/{self.server.pid}/task/{self.server.pid}/children")
        try:
            return [self.server.pid, *map(int, children.read_text().split())]
        except OSError:
            return [self.server.pid]


@contextmanager
def load_stack(
    database_url: str, *, workers: int = 2, assets: int = 5, env: dict[str, str] | None = None
) -> Iterator[LoadStack]:
    """Starts everything the load needs (anvil, IPFS, a scratch database, the API) and tears it down."""
    base = Path(tempfile.mkdtemp(prefix="edgeledger-load-"))
    scratch = _scratch_database(database_url)
    anvil = LocalAnvil(free_port(), log_file=base / "anvil.log")
    ipfs = LocalIpfsNode(base / "ipfs", *free_ports(3), base / "ipfs.log")
    server: subprocess.Popen[bytes] | None = None
    try:
        anvil.start()
        ipfs.start()
        anvil.wait_ready()
        ipfs.wait_ready()
        deployed = deploy_with_fresh_keys(anvil.rpc_url, base / "deployment.json", test_token=True)
        deployment, deployer, signer = deployed.deployment_file, deployed.deployer, deployed.signer
        migrate(scratch)
        port = free_port()
        env = {
            **os.environ,
            "DATA_DIR": str(base),
            "DATABASE_URL": scratch,
            "ETH_RPC_URL": anvil.rpc_url,
            "DEPLOYMENT_FILE": str(deployment),
            "SIGNER_PRIVATE_KEY": signer.key.to_0x_hex(),
            "IPFS_API": ipfs.api_multiaddr,
            "PSEUDONYM_MASTER_KEY": secrets.token_hex(32),  # one key for every worker process
            "RATE_LIMIT_AUTH_PER_MINUTE": str(10**9),
            "RATE_LIMIT_AUDIT_PER_MINUTE": str(10**9),
            "RATE_LIMIT_WRITE_PER_MINUTE": str(10**9),
            "RATE_LIMIT_ANONYMOUS_PER_MINUTE": str(10**9),
            "LOG_LEVEL": "WARNING",
            **(env or {}),
        }
        server = subprocess.Popen(
            uvicorn_command("127.0.0.1", port, workers=workers, log_level="warning", access_log=False),
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
        admin = {"X-API-Key": _user_with_key(scratch, Role.admin, "load admin", deployer.address)[1]}
        # The auditor's key is not used before its scope is granted: a server process that had
        # authenticated it would answer from its principal cache, scope-less, for up to READ_MAX_AGE.
        auditor_id, auditor_key = _user_with_key(scratch, Role.auditor, "load auditor")
        auditor = {"X-API-Key": auditor_key}
        granted = httpx.put(
            f"{api}/admin/users/{auditor_id}/scope", json={"is_global": True}, headers=admin, timeout=30
        )
        assert granted.status_code == 200, granted.text  # scopes fail closed: the admin grants everything
        asset_ids: list[int] = []
        first: dict[str, Any] = {}
        with httpx.Client(base_url=api, timeout=120) as client:
            for n in range(assets):
                created = client.post(
                    "/assets",
                    headers=admin,
                    files={"file": (f"shot{n}.png", demo_png(f"load {n} {base.name}"), "image/png")},
                    data={"metadata": json.dumps({"title": f"Load shot {n}", "creator": deployer.address})},
                )
                if created.status_code == 202:  # the creator signs its registration (its wallet would)
                    registration = created.json()
                    created = client.post(
                        f"/assets/registrations/{registration['id']}/signature",
                        headers=admin,
                        json={
                            "signature": registration_formats.sign(registration["typed_data"], deployer.key)
                        },
                    )
                created.raise_for_status()
                doc = created.json().get("asset", created.json())
                asset_ids.append(int(doc["id"]))
                first = first or doc
            source = {
                "name": SOURCE,
                "kind": "cdn_provider",
                "provider": "cloudfront",
                "regions": ["*"],
                "jurisdiction": "US",
            }
            client.post("/deliveries/sources", json=source, headers=admin).raise_for_status()
            log, request_ids = demo_cloudfront_log(
                first["content_cid"], first["size_bytes"], "load", lines=400, days_ago=2
            )
            client.post(
                f"/deliveries/sources/{SOURCE}/logs", files={"file": ("L.gz", log)}, headers=admin
            ).raise_for_status()
            client.post(
                "/deliveries/batches/close", json={"force": True, "anchor_now": True}, headers=admin
            ).raise_for_status()
        stack = LoadStack(api, scratch, admin, auditor, asset_ids, request_ids, server)
        yield stack
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)
        ipfs.stop()
        anvil.stop()
        _drop_database(scratch)
        shutil.rmtree(base, ignore_errors=True)


def _rotation_script(paths: list[str], directory: Path) -> Path:
    """A wrk Lua script sending ``paths`` in turn (one per request, all connections sharing the turn)."""
    script = directory / f"paths-{len(paths)}-{secrets.token_hex(3)}.lua"
    items = ",\n".join(json.dumps(p) for p in paths)
    script.write_text(
        f"paths = {{\n{items}\n}}\ni = 0\n"
        "request = function()\n  i = i + 1\n  return wrk.format(nil, paths[(i % #paths) + 1])\nend\n"
    )
    return script


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes so far (clock ticks of /proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def _machine_busy_seconds() -> float:
    """CPU time the whole machine has spent busy (every core, every process: the database server and
    wrk included), from the first line of /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq = (
        int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:8]
    )
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")  # not idle, iowait, steal


def _wrk_command(
    api: str, script: Path, seconds: int, connections: int, threads: int, headers: dict[str, str]
) -> list[str]:
    command = [
        "wrk",
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "--timeout",
        "10s",
        "-s",
        str(script),
    ]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    return [*command, api]


def _wrk_figures(api: str, out: str) -> tuple[float, float, int]:
    """(requests/s, p99 ms, requests) from wrk's report; non-2xx answers or socket errors fail."""
    if "Non-2xx or 3xx responses" in out or "Socket errors" in out:
        raise RuntimeError(f"errors under load at {api}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    count = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if count == 0:
        return 0.0, 0.0, 0
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    p99 = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return rps, p99, count


def _wrk(
    api: str,
    script: Path,
    seconds: int,
    connections: int,
    threads: int,
    headers: dict[str, str],
) -> tuple[float, float, int]:
    """(requests/s, p99 ms, requests) of one wrk run; non-2xx answers make the run fail."""
    command = _wrk_command(api, script, seconds, connections, threads, headers)
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return _wrk_figures(api, out)


def held_connections(pids: list[int], port: int) -> list[int]:
    """How many established TCP connections to ``port`` each process holds (its socket descriptors
    matched against /proc/net/tcp and tcp6)."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "01":  # ESTABLISHED
                inodes.add(fields[9])
    held = []
    for pid in pids:
        count = 0
        try:
            descriptors = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            descriptors = []
        for fd in descriptors:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                count += 1
        held.append(count)
    return held


def spread(
    stack: LoadStack, *, bursts: int, connections: int, seconds: int, threads: int
) -> list[dict[str, Any]]:
    """``bursts`` wrk runs against ``/health``, each opening ``connections`` connections at once: how many
    each worker process holds one second in, and the run's requests/s."""
    scripts_dir = Path(tempfile.mkdtemp(prefix="edgeledger-wrk-"))
    script = _rotation_script(["/health"], scripts_dir)
    port = int(stack.api.rsplit(":", 1)[1])
    results = []
    try:
        for n in range(bursts):
            command = _wrk_command(stack.api, script, seconds, connections, threads, {})
            run = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
            time.sleep(1.0)
            held = held_connections(stack.worker_pids(), port)
            out, _ = run.communicate()
            if run.returncode:
                raise subprocess.CalledProcessError(run.returncode, command, out)
            rps, _, _ = _wrk_figures(stack.api, out)
            results.append({"held": held, "rps": round(rps)})
            print(f"burst {n + 1}: connections held per worker {held}, /health {rps:,.0f}/s", flush=True)
    finally:
        shutil.rmtree(scripts_dir, ignore_errors=True)
    return results


def measure(
    stack: LoadStack, *, connections: list[int], seconds: int, rounds: int, threads: int
) -> dict[str, dict[str, dict[str, float]]]:
    """The benchmark proper: {connections: {endpoint: {rps, p99_ms, ratio, cpu_ms, machine_cpu_ms}}}
    (medians): ``cpu_ms`` is the API processes' CPU per request, ``machine_cpu_ms`` the whole machine's."""
    scripts_dir = Path(tempfile.mkdtemp(prefix="edgeledger-wrk-"))
    targets = {
        "health": (_rotation_script(["/health"], scripts_dir), {}),
        "proof": (
            _rotation_script([stack.proof_path(r) for r in stack.request_ids], scripts_dir),
            stack.auditor,
        ),
        "asset": (_rotation_script([f"/assets/{a}" for a in stack.asset_ids], scripts_dir), stack.admin),
    }
    summary: dict[str, dict[str, dict[str, float]]] = {}
    try:
        for conns in connections:
            for script, headers in targets.values():  # warm-up: connections, caches, pools
                _wrk(stack.api, script, 1, conns, threads, headers)
            runs: dict[str, list[tuple[float, float, float, float]]] = {name: [] for name in targets}
            ratios: dict[str, list[float]] = {"proof": [], "asset": []}
            for round_number in range(rounds):
                for name, (script, headers) in targets.items():
                    before, machine_before = _cpu_seconds(stack.server_pids()), _machine_busy_seconds()
                    rps, p99, count = _wrk(stack.api, script, seconds, conns, threads, headers)
                    cpu = _cpu_seconds(stack.server_pids()) - before
                    machine = _machine_busy_seconds() - machine_before
                    per = 1000 / count if count else 0.0
                    runs[name].append((rps, p99, cpu * per, machine * per))
                health = runs["health"][-1][0]
                for name in ratios:
                    ratios[name].append(runs[name][-1][0] / health if health else 0.0)
                print(
                    f"{conns} connections, round {round_number + 1}: "
                    + ", ".join(f"{n} {r[-1][0]:,.0f}/s" for n, r in runs.items()),
                    flush=True,
                )
            summary[str(conns)] = {
                name: {
                    "rps": round(statistics.median(row[0] for row in rows)),
                    "p99_ms": round(statistics.median(row[1] for row in rows), 1),
                    "ratio": round(statistics.median(ratios[name]), 3) if name in ratios else 1.0,
                    "cpu_ms": round(statistics.median(row[2] for row in rows), 2),
                    "machine_cpu_ms": round(statistics.median(row[3] for row in rows), 2),
                }
                for name, rows in runs.items()
            }
    finally:
        shutil.rmtree(scripts_dir, ignore_errors=True)
    return summary


def print_table(
    summary: dict[str, dict[str, dict[str, float]]], workers: int, seconds: int, rounds: int
) -> None:
    print(f"\n{workers} workers, {seconds} s per endpoint and round, median of {rounds} rounds")
    header = ("connections", "endpoint", "requests/s", "p99 ms", "ratio", "CPU ms/req", "machine ms/req")
    print("{:>11} {:<8} {:>11} {:>8} {:>6} {:>11} {:>15}".format(*header))
    for conns, rows in summary.items():
        for name, row in rows.items():
            print(
                f"{conns:>11} {name:<8} {row['rps']:>11,.0f} {row['p99_ms']:>8.1f} "
                f"{row['ratio']:>6.0%} {row['cpu_ms']:>11.2f} {row['machine_cpu_ms']:>15.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--connections", default="2,8,32", help="comma-separated connection counts (default 2,8,32)"
    )
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="uvicorn worker processes")
    parser.add_argument(
        "--assets", type=int, default=5, help="registered assets the asset lookups cycle through"
    )
    parser.add_argument("--api-threads", type=int, default=None, help="API_THREADS of the served API")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument(
        "--bursts",
        type=int,
        default=0,
        help="instead of the benchmark: this many 3 s /health runs at the largest connection count, "
        "printing how many connections each worker holds",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    connections = [int(c) for c in args.connections.split(",")]
    env = {"API_THREADS": str(args.api_threads)} if args.api_threads else {}
    with load_stack(args.database_url, workers=args.workers, assets=args.assets, env=env) as stack:
        if args.bursts:
            runs = spread(
                stack, bursts=args.bursts, connections=max(connections), seconds=3, threads=args.threads
            )
            fewest = sorted(min(r["held"]) for r in runs)
            print(f"fewest connections held by one worker, per burst (sorted): {fewest}")
            print(json.dumps({"connections": max(connections), "bursts": runs}))
            return
        summary = measure(
            stack, connections=connections, seconds=args.seconds, rounds=args.rounds, threads=args.threads
        )
    print_table(summary, args.workers, args.seconds, args.rounds)
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
