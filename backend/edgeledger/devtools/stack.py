"""`edgeledger up`: the whole local stack on embedded defaults, a short demo, and the API left running.

Starts anvil (state kept in DATA_DIR, so a second run finds the same chain), a local IPFS node, migrates
the SQLite database, deploys the contracts once, starts the worker (with beat) and the API, registers
and verifies a demo asset, and waits for Ctrl-C to stop everything it started.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
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
from edgeledger.server import uvicorn_command

Say = Callable[[str], None]


#: The local stack's settlement challenge window (seconds): short, so the demo reaches claims.
DEV_CHALLENGE_WINDOW = 60
DEV_ROLES = ("admin", "signer", "creator", "merchant")


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


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        cmd,
        env=env,
        cwd=PROJECT_ROOT,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _terminate(proc: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()

    return stop


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited ({proc.returncode}); last log lines:\n{_tail(log)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    raise RuntimeError(f"{url} not ready within {timeout:.0f}s; last log lines:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else "(no log)"


Demo = Callable[[Settings, str, dict[str, str]], None]


def up(settings: Settings, *, demo: Demo | None = None) -> None:
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
        bin_dir = Path(sys.executable).parent
        worker_log = logs / "worker.log"
        worker = _spawn(
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
        api = _spawn(uvicorn_command(settings.api_host, settings.api_port), env, api_log)
        stack.started("API", _terminate(api))
        base = settings.resolved_public_base_url
        _wait_http(f"{base}/ready", api, api_log)
        say(f"API: {base} (log {api_log})")

        if demo is not None:
            demo(settings, base, keys)

        say(f"ready. API {base}  ·  web app {base}/app/  ·  docs {base}/docs  ·  Ctrl-C stops everything")
        _wait_forever([worker, api])
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
        say("stopped; chain state, IPFS repo and database are kept in " + str(settings.data_dir))


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _wait_forever(procs: list[subprocess.Popen[bytes]]) -> None:
    while True:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}; see DATA_DIR/logs")
        time.sleep(1)


def now_label() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
