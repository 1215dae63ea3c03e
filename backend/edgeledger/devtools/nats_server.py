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

import shutil
import signal
import socket
from pathlib import Path

from edgeledger.processes import LOOPBACK, LocalProcess, require_free_port

__all__ = ["LocalNatsServer", "nats_server_binary"]


def nats_server_binary() -> str:
    """The machine's nats-server: on PATH, else where Debian installs it."""
    found = shutil.which("nats-server") or next(
        (str(p) for p in (Path("/usr/sbin/nats-server"), Path("/usr/bin/nats-server")) if p.exists()), None
    )
    if found is None:
        raise RuntimeError("nats-server not found: run `make bootstrap` (installs the Debian package)")
    return found


class LocalNatsServer:
    """One nats-server with JetStream; ``with LocalNatsServer(...) as server:`` starts and stops it."""

    def __init__(self, port: int, store_dir: Path, log_file: Path) -> None:
        self.port = port
        self.store_dir = Path(store_dir)
        self.log_file = Path(log_file)
        self._process = LocalProcess("nats-server", self.log_file)

    @property
    def url(self) -> str:
        return f"nats://{LOOPBACK}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid

    def start(self) -> None:
        require_free_port(
            self.port, "another NATS server?; stop it or set NATS_URL to nats://127.0.0.1:<another port>"
        )
        self.store_dir.mkdir(parents=True, exist_ok=True)
        command = [nats_server_binary(), "-js", "-a", LOOPBACK, "-p", str(self.port)]
        self._process.spawn([*command, "-sd", str(self.store_dir)])

    def poll(self) -> int | None:
        """The server's exit code, or None while it runs."""
        return self._process.poll()

    def wait_ready(self, timeout: float = 30.0) -> None:
        def listens() -> bool:
            try:
                socket.create_connection((LOOPBACK, self.port), timeout=0.5).close()
            except OSError:
                return False
            return True

        self._process.wait_until(listens, timeout=timeout, where=self.url, interval=0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (the server closes its store cleanly), SIGKILL after ``timeout``."""
        self._process.stop(signal.SIGTERM, timeout)

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
