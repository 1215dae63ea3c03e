"""A private js-ipfs daemon for the local development stack and the tests.

Production talks to kubo (``IPFS_API``); locally, the npm package ``ipfs`` (``node_modules/.bin/jsipfs``)
gives a node without a Go toolchain. It is made to behave like an isolated appliance:

* its own repository (``IPFS_PATH``), created once with ``jsipfs init --profile test --empty-repo``;
* every listener on 127.0.0.1 and on ports we choose (js-ipfs otherwise opens gRPC on 5003 and could
  collide with another node), re-applied before every start, so a moved port or a repo copied from
  elsewhere cannot leak onto another interface;
* never dials out: ``daemon --offline`` (no libp2p at all), no swarm addresses, no bootstrap peers,
  no delegates, MDNS/webRTCStar off, and *preloading off* (``--enable-preload=false`` plus
  ``NODE_ENV=test``, which js-ipfs reads for ``init`` too): by default js-ipfs announces every added
  CID to ``*.preload.ipfs.io`` over HTTPS, even offline.

The config is written straight into ``$IPFS_PATH/config`` (a JSON file) rather than through one
``jsipfs config`` call per key, each of which boots a node for about a second.

A daemon killed with SIGKILL leaves ``repo.lock`` (a proper-lockfile directory, honoured for 20 s)
and ``api`` behind; the next start would fail with "Lock already being held". :meth:`start` removes
them when no live process is using the repository.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import requests

from edgeledger.config import PROJECT_ROOT
from edgeledger.ipfs.client import IpfsClient
from edgeledger.processes import LOOPBACK, LocalProcess, log_tail, port_free

__all__ = ["LocalIpfsNode", "jsipfs_binary"]

_INIT_TIMEOUT: Final = 120.0
_STOP_TIMEOUT: Final = 15.0
_LOG_TAIL_LINES: Final = 25


def jsipfs_binary() -> Path:
    """``node_modules/.bin/jsipfs`` of the project (installed by ``npm ci``)."""
    local = PROJECT_ROOT / "node_modules" / ".bin" / "jsipfs"
    if local.exists():
        return local
    found = shutil.which("jsipfs")
    if found is None:
        raise RuntimeError(f"jsipfs not found at {local}: run `make bootstrap` (npm ci installs it)")
    return Path(found)


class LocalIpfsNode:
    """One js-ipfs daemon over one repository; ``with LocalIpfsNode(...) as node:`` starts and stops it."""

    def __init__(
        self, repo_dir: Path, api_port: int, gateway_port: int, grpc_port: int, log_file: Path
    ) -> None:
        if len({api_port, gateway_port, grpc_port}) != 3:
            raise ValueError("the API, gateway and gRPC ports must differ")
        self.repo_dir = Path(repo_dir).resolve()
        self.api_port = api_port
        self.gateway_port = gateway_port
        self.grpc_port = grpc_port
        self.log_file = Path(log_file)
        self._process = LocalProcess("the IPFS daemon", self.log_file)

    # ------------------------------------------------------------------------------------------
    # Addresses
    # ------------------------------------------------------------------------------------------

    @property
    def api_multiaddr(self) -> str:
        """What :class:`~edgeledger.ipfs.client.IpfsClient` (and ``IPFS_API``) take."""
        return f"/ip4/{LOOPBACK}/tcp/{self.api_port}/http"

    @property
    def api_url(self) -> str:
        return f"http://{LOOPBACK}:{self.api_port}"

    @property
    def gateway_url(self) -> str:
        return f"http://{LOOPBACK}:{self.gateway_port}"

    def client(self, timeout: float = 120.0) -> IpfsClient:
        return IpfsClient(self.api_multiaddr, timeout=timeout)

    def __repr__(self) -> str:
        return f"LocalIpfsNode({str(self.repo_dir)!r}, api={self.api_port}, running={self.is_running()})"

    # ------------------------------------------------------------------------------------------
    # Repository
    # ------------------------------------------------------------------------------------------

    def ensure_initialised(self) -> None:
        """Create the repository if needed, then (re)write the loopback-only, offline configuration.

        Call it while the daemon is stopped: a running daemon does not re-read its config.
        """
        self.repo_dir.mkdir(parents=True, exist_ok=True)
        config_file = self.repo_dir / "config"
        if not config_file.exists():
            self._run_cli("init", "--profile", "test", "--empty-repo")
            if not config_file.exists():
                raise RuntimeError(
                    f"`jsipfs init` did not create {config_file}; last log lines:\n{self._log_tail()}"
                )
        config = json.loads(config_file.read_text(encoding="utf-8"))
        updated = self._isolated_config(json.loads(json.dumps(config)))
        if updated != config:
            tmp = config_file.with_name("config.edgeledger-tmp")
            tmp.write_text(json.dumps(updated, indent=2) + "\n", encoding="utf-8")
            tmp.replace(config_file)

    def _isolated_config(self, config: dict[str, Any]) -> dict[str, Any]:
        addresses = config.setdefault("Addresses", {})
        addresses["API"] = f"/ip4/{LOOPBACK}/tcp/{self.api_port}"
        addresses["Gateway"] = f"/ip4/{LOOPBACK}/tcp/{self.gateway_port}"
        addresses["RPC"] = f"/ip4/{LOOPBACK}/tcp/{self.grpc_port}/ws"
        addresses["Swarm"] = []
        addresses["Announce"] = []
        addresses["NoAnnounce"] = []
        addresses["Delegates"] = []
        config["Bootstrap"] = []
        discovery = config.setdefault("Discovery", {})
        discovery["MDNS"] = {**discovery.get("MDNS", {}), "Enabled": False}
        discovery["webRTCStar"] = {**discovery.get("webRTCStar", {}), "Enabled": False}
        config.setdefault("Swarm", {})["DisableNatPortMap"] = True
        return config

    def _env(self) -> dict[str, str]:
        # NODE_ENV=test is how js-ipfs's *library* defaults turn preloading off (the CLI flag only
        # exists for `daemon`); nothing else in js-ipfs reads it.
        return {**os.environ, "IPFS_PATH": str(self.repo_dir), "NODE_ENV": "test"}

    def _run_cli(self, *args: str) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} jsipfs {' '.join(args)}\n".encode())
            log.flush()
            result = subprocess.run(
                [str(jsipfs_binary()), *args],
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=_INIT_TIMEOUT,
                check=False,
            )
        if result.returncode != 0:
            raise RuntimeError(
                f"`jsipfs {' '.join(args)}` failed with exit code {result.returncode}; "
                f"last log lines:\n{self._log_tail()}"
            )

    # ------------------------------------------------------------------------------------------
    # Process
    # ------------------------------------------------------------------------------------------

    def is_running(self) -> bool:
        """Whether the daemon this object started is alive (it may not be ready yet)."""
        return self._process.running()

    @property
    def pid(self) -> int | None:
        """The daemon's process id (its process group's leader), once started."""
        return self._process.pid

    def start(self) -> None:
        """Start ``jsipfs daemon --offline`` in the background (no-op if already running).

        Refuses to start when another process uses the repository or one of the ports is taken, so
        readiness can never be confused with a foreign daemon answering on our port.
        """
        if self.is_running():
            return
        self.ensure_initialised()
        self._clear_stale_lock()
        for name, port in (("API", self.api_port), ("gateway", self.gateway_port), ("gRPC", self.grpc_port)):
            if not port_free(port):
                raise RuntimeError(f"cannot start IPFS: {name} port {LOOPBACK}:{port} is already in use")
        self._process.spawn(
            [str(jsipfs_binary()), "daemon", "--offline", "--enable-preload=false"],
            env=self._env(),
            cwd=self.repo_dir,
            banner="jsipfs daemon --offline",
        )

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until ``POST /api/v0/version`` answers; RuntimeError (with the log's tail) otherwise."""

        def answers() -> bool:
            try:
                return requests.post(f"{self.api_url}/api/v0/version", timeout=2).ok
            except requests.RequestException:
                return False

        self._process.wait_until(answers, timeout=timeout, where=self.api_url, interval=0.2)

    def stop(self, timeout: float = _STOP_TIMEOUT) -> None:
        """SIGTERM (js-ipfs closes its repository cleanly), SIGKILL after ``timeout`` seconds."""
        if self._process.proc is None:
            return
        self._process.stop(signal.SIGTERM, timeout)
        self._process.proc = None
        self._clear_stale_lock(strict=False)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start()
        self.wait_ready(timeout)

    def __enter__(self) -> LocalIpfsNode:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------------------------------
    # Stale lock and diagnostics
    # ------------------------------------------------------------------------------------------

    def _clear_stale_lock(self, *, strict: bool = True) -> None:
        """Remove ``repo.lock``/``api`` left by a killed daemon, unless a live process uses the repository.

        ``strict``: raise in that case (before a start) instead of leaving the files alone (after a stop).
        """
        lock = self.repo_dir / "repo.lock"
        api_file = self.repo_dir / "api"
        if not lock.exists() and not api_file.exists():
            return
        holders = _pids_using_repo(self.repo_dir)
        answering = _api_file_answers(api_file)
        if holders or answering:
            if not strict:
                return
            who = f"process(es) {holders}" if holders else f"the daemon answering at {answering}"
            raise RuntimeError(f"the IPFS repository {self.repo_dir} is in use by {who}; stop it first")
        if lock.is_dir():
            shutil.rmtree(lock, ignore_errors=True)
        else:
            lock.unlink(missing_ok=True)
        api_file.unlink(missing_ok=True)

    def _log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        return log_tail(self.log_file, lines)


def _pids_using_repo(repo_dir: Path) -> list[int]:
    """Live processes started with ``IPFS_PATH=<repo_dir>`` whose command line mentions ipfs (Linux /proc).

    Where /proc is unavailable this finds nothing and :func:`_api_file_answers` is the only guard.
    """
    proc_root = Path("/proc")
    if not proc_root.is_dir():
        return []
    wanted = b"IPFS_PATH=" + os.fsencode(str(repo_dir))
    found: list[int] = []
    for entry in proc_root.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            if wanted not in environ:
                continue
            if b"ipfs" in (entry / "cmdline").read_bytes().lower():
                found.append(int(entry.name))
        except OSError:  # gone, a zombie, or not ours to read
            continue
    return sorted(found)


def _api_file_answers(api_file: Path) -> str | None:
    """The URL in a repo's ``api`` file if a daemon answers there now, else None."""
    try:
        parts = api_file.read_text(encoding="utf-8").strip().split("/")
    except OSError:
        return None
    # /ip4/<host>/tcp/<port>[/http]
    if len(parts) < 5 or parts[1] not in ("ip4", "ip6", "dns4", "dns6") or parts[3] != "tcp":
        return None
    host = f"[{parts[2]}]" if parts[1] == "ip6" else parts[2]
    url = f"http://{host}:{parts[4]}"
    try:
        answered = requests.post(f"{url}/api/v0/version", timeout=1).ok
    except requests.RequestException:
        return None
    return url if answered else None
