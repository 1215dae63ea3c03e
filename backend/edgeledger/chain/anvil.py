"""Runs a local anvil for the development stack and the tests.

With a state file, anvil loads it at start and writes it back periodically and at exit, so a second
`edgeledger up` finds the chain, its deployment and its assets where the first left them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

from edgeledger.config import PROJECT_ROOT


def anvil_binary() -> str:
    local = PROJECT_ROOT / "node_modules" / ".bin" / "anvil"
    if local.exists():
        return str(local)
    found = shutil.which("anvil")
    if found is None:
        raise RuntimeError("anvil not found: run `make bootstrap` (installs it from npm)")
    return found


def anvil_rpc(url: str, method: str, *params: object, timeout: float = 10) -> Any:
    """One JSON-RPC call to a development node (anvil_* and evm_* methods); errors raise RuntimeError."""
    reply = requests.post(
        url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=timeout
    )
    reply.raise_for_status()
    body = reply.json()
    if "error" in body:
        raise RuntimeError(f"{method} failed: {body['error']}")
    return body["result"]


def _require_free_port(port: int) -> None:
    """Another node answering on our port would be mistaken for ours: refuse to start instead."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from our last run is fine
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise RuntimeError(
                f"port {port} is already in use (another anvil or node?); stop it or set ETH_RPC_URL to "
                "another port"
            ) from None


class LocalAnvil:
    def __init__(
        self,
        port: int,
        *,
        state_file: Path | None = None,
        log_file: Path | None = None,
        chain_id: int = 31337,
        block_time: float | None = None,
    ) -> None:
        self.port = port
        self.state_file = state_file
        self.log_file = log_file
        self.chain_id = chain_id
        self.block_time = block_time
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        _require_free_port(self.port)
        cmd = [
            anvil_binary(),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--chain-id",
            str(self.chain_id),
            "--silent",
        ]
        if self.state_file is not None:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            # Historical states too: a restarted chain still answers eth_call at old blocks (a
            # correction re-reads terms at its period's recorded block).
            cmd += ["--state", str(self.state_file), "--state-interval", "2", "--preserve-historical-states"]
        if self.block_time:
            cmd += ["--block-time", str(self.block_time)]
        if self.log_file is not None:
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(f"anvil exited with code {self._proc.returncode}; see {self.log_file}")
            try:
                requests.post(
                    self.rpc_url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                    timeout=1,
                ).raise_for_status()
                return
            except requests.RequestException:
                time.sleep(0.1)
        raise RuntimeError(f"anvil did not answer on {self.rpc_url} within {timeout:.0f}s")

    def stop(self) -> None:
        """SIGINT, so anvil writes its state file before it exits."""
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGINT)
        try:
            self._proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def __enter__(self) -> LocalAnvil:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
