"""`edgeledger up`: the whole local stack on embedded defaults, a short demo, and the API left running.

Starts anvil (state kept in DATA_DIR, so a second run finds the same chain), a local IPFS node, migrates
the SQLite database, deploys the contracts once, starts a NATS server with JetStream and the ingest
workers, the Celery worker (with beat) and the API, runs the demo, and waits for Ctrl-C to stop
everything it started (in reverse order: the API first, NATS after the workers that consume it).

Ingestion runs as in production: the API gets ``INGEST_MODE=queue`` (an upload is stored in the database,
published to JetStream and answered 202) and ``--ingest-workers`` ``edgeledger ingest-worker`` processes
(default 1) run the queued files (docs/ingestion.md, "Queued ingestion"). One is the default because the
local database is SQLite, which takes one writer at a time: a second worker would only wait for the
first's write lock (the benchmark's 2x of two workers is on PostgreSQL); with ``DATABASE_URL`` naming a
PostgreSQL database, one worker per free core pays. Either way a source's files run one at a time, in
the order they were accepted (one JetStream consumer per partition, one message in flight).

Crash safety: a stop (Ctrl-C, SIGTERM, or a kill) loses no accepted upload: its bytes and row are in the
database, its message in the JetStream file store under DATA_DIR/nats; a worker stopped mid-file leaves
the row to the next run, which resumes after the last stored chunk (each line stored once).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx
from eth_account import Account

from edgeledger.chain.anvil import LocalAnvil, anvil_rpc
from edgeledger.chain.deploy import run_deploy_script
from edgeledger.config import PROJECT_ROOT, Settings
from edgeledger.db import make_engine, migrate
from edgeledger.devtools.nats_server import LocalNatsServer
from edgeledger.processes import LocalProcess
from edgeledger.server import uvicorn_command

Say = Callable[[str], None]


#: The local stack's settlement challenge window (seconds): short, so the demo reaches claims.
DEV_CHALLENGE_WINDOW = 60
DEV_ROLES = ("admin", "signer", "creator", "merchant")
#: The stack's NATS port unless NATS_URL names one: not the standard 4222, which the nats-server Debian
#: package's own system service may already hold (scripts/bootstrap.sh installs that package).
DEV_NATS_PORT = 4223
#: Ingest workers `up` starts unless told otherwise (see the module docstring for why one).
DEFAULT_INGEST_WORKERS = 1
INGEST_WORKER_READY = "ingest worker ready"


def say(message: str) -> None:
    print(f"[edgeledger] {message}", flush=True)


class Stack:
    """Processes started by `up`, stopped in reverse order."""

    def __init__(self) -> None:
        self._stops: list[tuple[str, Callable[[], None]]] = []

    def started(self, name: str, stop: Callable[[], None]) -> None:
        self._stops.append((name, stop))

    def stop_all(self) -> None:
        for name, stop in reversed(self._stops):
            say(f"stopping {name}")
            try:
                stop()
            except Exception as exc:  # keep stopping the rest
                say(f"  {name} did not stop cleanly: {exc}")
        self._stops.clear()


def dev_keys(settings: Settings) -> dict[str, str]:
    """Development keys, made once per data dir (mode 0600, never committed): admin/deployer, server
    signer, demo creator, demo merchant."""
    path = settings.data_dir / "dev-keys.json"
    keys: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [role for role in DEV_ROLES if role not in keys]
    if not missing:
        return keys
    keys.update({role: Account.create().key.to_0x_hex() for role in missing})
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(json.dumps(keys, indent=2))
    return keys


def _port_of(url: str, default: int) -> int:
    return urlparse(url).port or default


def _fund(rpc_url: str, addresses: list[str]) -> None:
    for address in addresses:
        anvil_rpc(rpc_url, "anvil_setBalance", address, hex(10**22))


def _spawn(name: str, cmd: list[str], env: dict[str, str], log: Path) -> LocalProcess:
    process = LocalProcess(name, log)
    process.spawn(cmd, env=env, cwd=PROJECT_ROOT)
    return process


def _terminate(process: LocalProcess) -> Callable[[], None]:
    return lambda: process.stop(signal.SIGTERM, timeout=20)


def _wait_http(url: str, process: LocalProcess, timeout: float = 60) -> None:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    process.wait_until(ready, timeout=timeout, where=url, interval=0.25)


def nats_port(settings: Settings) -> int:
    """The port of the stack's own NATS server: NATS_URL's (its first server's) when set, else
    DEV_NATS_PORT. Like anvil's, only the port is taken: the server always listens on 127.0.0.1."""
    if "nats_url" not in settings.model_fields_set:
        return DEV_NATS_PORT
    return _port_of(settings.nats_url.split(",")[0].strip(), 4222)


def start_ingest_queue(
    stack: Stack, settings: Settings, env: dict[str, str], logs: Path, workers: int
) -> tuple[dict[str, str], LocalNatsServer, list[LocalProcess]]:
    """Starts the stack's NATS server (JetStream store in DATA_DIR/nats) and ``workers`` ingest workers
    (logs DATA_DIR/logs/ingest-worker-<n>.log), each registered with ``stack`` to be stopped; returns the
    environment the API and workers run with (``env`` plus INGEST_MODE=queue and NATS_URL), the server
    and the worker processes (not yet connected: :func:`wait_ingest_workers`)."""
    server = LocalNatsServer(nats_port(settings), settings.data_dir / "nats", logs / "nats-server.log")
    server.start()
    stack.started("NATS server", server.stop)
    server.wait_ready()
    queued_env = {**env, "INGEST_MODE": "queue", "NATS_URL": server.url}
    command = [str(Path(sys.executable).with_name("edgeledger")), "ingest-worker"]
    procs = []
    for n in range(1, workers + 1):
        proc = _spawn(f"ingest worker {n}", command, queued_env, logs / f"ingest-worker-{n}.log")
        stack.started(f"ingest worker {n}", _terminate(proc))
        procs.append(proc)
    return queued_env, server, procs


def wait_ingest_workers(procs: list[LocalProcess], logs: Path, timeout: float = 60) -> None:
    """Until every ingest worker has connected to JetStream and bound its consumers."""
    deadline = time.monotonic() + timeout
    for n, proc in enumerate(procs, start=1):
        log = logs / f"ingest-worker-{n}.log"

        def connected(log: Path = log) -> bool:
            return INGEST_WORKER_READY in (log.read_text(errors="replace") if log.exists() else "")

        left = max(0.0, deadline - time.monotonic())
        proc.wait_until(connected, timeout=left, where=f"NATS (its log {log})")


Demo = Callable[[Settings, str, dict[str, str]], None]


def up(settings: Settings, *, demo: Demo | None = None, ingest_workers: int = DEFAULT_INGEST_WORKERS) -> None:
    if ingest_workers < 1:
        raise ValueError("ingest_workers must be at least 1")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    logs = settings.data_dir / "logs"
    stack = Stack()
    signal.signal(signal.SIGTERM, _raise_interrupt)  # `kill` stops the stack like Ctrl-C does
    keys = dev_keys(settings)
    admin, signer, creator, merchant = (Account.from_key(keys[r]) for r in DEV_ROLES)
    try:
        anvil = LocalAnvil(
            _port_of(settings.eth_rpc_url, 8545),
            state_file=settings.data_dir / "anvil-state.json",
            log_file=logs / "anvil.log",
        )
        anvil.start()
        stack.started("anvil", anvil.stop)
        anvil.wait_ready()
        _fund(anvil.rpc_url, [admin.address, signer.address, creator.address, merchant.address])
        say(f"chain: anvil at {anvil.rpc_url} (state in {anvil.state_file})")

        from edgeledger.ipfs.node import LocalIpfsNode

        api_port = _port_of(settings.ipfs_api.replace("/ip4/", "http://").replace("/tcp/", ":"), 5001)
        node = LocalIpfsNode(
            settings.data_dir / "ipfs",
            api_port=api_port,
            gateway_port=api_port + 3079,
            grpc_port=api_port + 2,
            log_file=logs / "ipfs.log",
        )
        node.ensure_initialised()
        node.start()
        stack.started("IPFS node", node.stop)
        node.wait_ready()
        say(f"IPFS: local node, API {node.api_multiaddr}, offline, repo {settings.data_dir / 'ipfs'}")

        url = settings.resolved_database_url
        migrate(url)
        say(f"database: {url} (migrated)")

        out = run_deploy_script(
            rpc_url=anvil.rpc_url,
            deployer_key=keys["admin"],
            registrar=signer.address,
            deployment_file=settings.resolved_deployment_file,
            test_token=True,  # the local chain settles in a 6-decimal test stablecoin
            challenge_window=DEV_CHALLENGE_WINDOW,
            period_seconds=settings.delivery_period_seconds,
        )
        summary = [ln for ln in out.splitlines() if " deployed at " in ln or "already deployed" in ln]
        say("contracts: " + ("; ".join(summary) if summary else out.strip()[-200:]))

        env = {
            **os.environ,
            "SIGNER_PRIVATE_KEY": keys["signer"],
            "ETH_RPC_URL": anvil.rpc_url,
            "IPFS_API": node.api_multiaddr,
            "DATA_DIR": str(settings.data_dir),
        }
        env, nats, ingest_procs = start_ingest_queue(stack, settings, env, logs, ingest_workers)
        say(
            f"ingestion: queued (INGEST_MODE=queue): log uploads are stored in the database, published to "
            f"NATS JetStream at {nats.url} (store {nats.store_dir}) and answered 202; {ingest_workers} "
            f"ingest worker(s) run them (logs {logs}/ingest-worker-<n>.log, {nats.log_file})"
        )
        bin_dir = Path(sys.executable).parent
        worker_log = logs / "worker.log"
        worker = _spawn(
            "Celery worker",
            [
                str(bin_dir / "celery"),
                "-A",
                "edgeledger.worker",
                "worker",
                "-B",
                "--loglevel",
                "INFO",
                "--concurrency",
                "1",
                "--hostname",
                "edgeledger@%h",
            ],
            env,
            worker_log,
        )
        stack.started("worker", _terminate(worker))
        say(f"worker: celery with beat, broker {settings.resolved_broker_url} (log {worker_log})")

        api_log = logs / "api.log"
        api = _spawn("API", uvicorn_command(settings.api_host, settings.api_port), env, api_log)
        stack.started("API", _terminate(api))
        base = settings.resolved_public_base_url
        _wait_http(f"{base}/ready", api)
        say(f"API: {base} (log {api_log})")
        wait_ingest_workers(ingest_procs, logs)
        say(f"ingest workers: {ingest_workers} connected to {nats.url}")

        if demo is not None:
            demo(settings.model_copy(update={"ingest_mode": "queue", "nats_url": nats.url}), base, keys)

        say(
            f"ready. API {base}  ·  web app {base}/app/  ·  docs {base}/docs  ·  ingestion queued, "
            f"{ingest_workers} ingest worker(s)  ·  Ctrl-C stops everything"
        )
        watched = [("Celery worker", worker.poll), ("API", api.poll), ("NATS server", nats.poll)]
        watched += [(f"ingest worker {n}", p.poll) for n, p in enumerate(ingest_procs, start=1)]
        _wait_forever(watched)
    except KeyboardInterrupt:
        print()
    except (RuntimeError, OSError) as exc:
        say(f"failed: {exc}")
        raise SystemExit(1) from None
    finally:
        # A second Ctrl-C (or the SIGINT a terminal also sends) must not cut the shutdown short and
        # leave children running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop_all()
        make_engine(settings.resolved_database_url).dispose()
        kept = "chain state, IPFS repo, JetStream store and database are kept in"
        say(f"stopped; {kept} {settings.data_dir}")


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_forever(watched: list[tuple[str, Callable[[], int | None]]]) -> None:
    while True:
        for name, poll in watched:
            if (code := poll()) is not None:
                raise RuntimeError(f"{name} exited with {code}; see DATA_DIR/logs")
        time.sleep(1)


def now_label() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
