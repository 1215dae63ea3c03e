"""A private NATS server with JetStream for `edgeledger up` (queued ingestion) and the tests.

``nats-server`` is the Debian package scripts/bootstrap.sh installs (Debian puts it in /usr/sbin, which a
user's PATH may lack). The server listens on 127.0.0.1 only, on the one port it is given (no monitoring,
cluster or leaf-node listener), and keeps its JetStream store in its own directory (``DATA_DIR/nats`` for
the local stack). Each stack has its own server: two stacks sharing one would share the stream
``EDGELEDGER_INGEST``, and a worker of one would run the other's ingest ids against its own database.

Crash safety: the ingest stream uses file storage, so a message published before a stop (an upload
answered 202 but not yet run) is still in the store at the next start and the next worker runs it; the
upload itself is in the database either way, and workers re-publish a stored upload whose message was
lost (deliveries.ingest_queue, "sweep").
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = ["LocalNatsServer", "nats_server_binary"]

_LOOPBACK = "127.0.0.1"


def nats_server_binary() -> str:
    """The machine's nats-server: on PATH, else where Debian installs it."""
    found = shutil.which("nats-server") or next(
        (str(p) for p in (Path("/usr/sbin/nats-server"), Path("/usr/bin/nats-server")) if p.exists()), None
    )
    if found is None:
        raise RuntimeError("nats-server not found: run `make bootstrap` (installs the Debian package)")
    return found


def _require_free_port(port: int) -> None:
    """Another server answering on our port would be mistaken for ours: refuse to start instead."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT from our last run is fine
        try:
            sock.bind((_LOOPBACK, port))
        except OSError:
            raise RuntimeError(
                f"port {port} is already in use (another NATS server?); stop it or set NATS_URL to "
                "nats://127.0.0.1:<another port>"
            ) from None


class LocalNatsServer:
    """One nats-server with JetStream; ``with LocalNatsServer(...) as server:`` starts and stops it."""

    def __init__(self, port: int, store_dir: Path, log_file: Path) -> None:
        self.port = port
        self.store_dir = Path(store_dir)
        self.log_file = Path(log_file)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://{_LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> None:
        _require_free_port(self.port)
        self.store_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        command = [nats_server_binary(), "-js", "-a", _LOOPBACK, "-p", str(self.port)]
        command += ["-sd", str(self.store_dir)]
        with self.log_file.open("ab") as log:
            self._proc = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def poll(self) -> int | None:
        """The server's exit code, or None while it runs."""
        return None if self._proc is None else self._proc.poll()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise RuntimeError(
                    f"nats-server exited with code {self._proc.returncode}; last log lines:\n{self._tail()}"
                )
            try:
                socket.create_connection((_LOOPBACK, self.port), timeout=0.5).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"nats-server did not listen on {self.url} within {timeout:.0f}s:\n{self._tail()}"
                    ) from None
                time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server closes its store cleanly), SIGKILL after ``timeout``."""
        if self._proc is None or self._proc.poll() is not None:
            return
        os.killpg(self._proc.pid, signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait()

    def _tail(self, lines: int = 20) -> str:
        if not self.log_file.exists():
            return "(no log)"
        return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> LocalNatsServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
