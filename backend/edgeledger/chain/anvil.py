"""Runs a local anvil for the development stack and the tests.

With a state file, anvil loads it at start and writes it back periodically and at exit, so a second
`edgeledger up` finds the chain, its deployment and its assets where the first left them.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path
from typing import Any

import requests

from edgeledger.config import PROJECT_ROOT
from edgeledger.processes import LOOPBACK, LocalProcess, require_free_port


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
        self._process = LocalProcess("anvil", log_file)

    @property
    def rpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        require_free_port(self.port, "another anvil or node?; stop it or set ETH_RPC_URL to another port")
        cmd = [
            anvil_binary(),
            "--host",
            LOOPBACK,
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
        self._process.spawn(cmd)

    def wait_ready(self, timeout: float = 30.0) -> None:
        def answers() -> bool:
            try:
                requests.post(
                    self.rpc_url,
                    json={"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
                    timeout=1,
                ).raise_for_status()
            except requests.RequestException:
                return False
            return True

        self._process.wait_until(answers, timeout=timeout, where=self.rpc_url)

    def stop(self) -> None:
        """SIGINT, so anvil writes its state file before it exits."""
        self._process.stop(signal.SIGINT)

    def __enter__(self) -> LocalAnvil:
        self.start()
        self.wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
