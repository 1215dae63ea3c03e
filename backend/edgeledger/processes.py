"""Local service processes (anvil, the IPFS daemon, nats-server): one way to start, wait for and stop them.

Each runs in its own process group (so stopping it stops its children too) with its output appended to a
log file. Starting refuses a port something else listens on, so readiness can never be confused with a
foreign server answering there. Waiting polls a readiness probe and fails at once, with the log's last
lines, when the process exits first. Stopping sends a signal the service shuts down cleanly on (anvil
writes its state on SIGINT; nats-server and the IPFS daemon close their stores on SIGTERM) and SIGKILL
after a timeout. ``edgeledger.chain.anvil``, ``edgeledger.ipfs.node`` and ``edgeledger.devtools.nats_server``
build on it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping
from pathlib import Path

__all__ = ["LOOPBACK", "LocalProcess", "log_tail", "port_free", "require_free_port"]

LOOPBACK = "127.0.0.1"


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports free right now (all held open together, so they differ)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((LOOPBACK, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port() -> int:
    """A loopback port free right now."""
    return free_ports(1)[0]


def port_free(port: int) -> bool:
    """Whether a listener could bind 127.0.0.1:port now (SO_REUSEADDR: our last run's TIME_WAIT is fine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def require_free_port(port: int, hint: str) -> None:
    """RuntimeError naming the port and ``hint`` (what may hold it, how to pick another) unless it is free."""
    if not port_free(port):
        raise RuntimeError(f"port {port} is already in use ({hint})")


def log_tail(path: Path | None, lines: int = 20) -> str:
    """The last ``lines`` lines of a log (read from its last 16 KiB), or "(no log)"."""
    if path is None:
        return "(no log)"
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 16_384))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class LocalProcess:
    """One service process: :meth:`spawn`, :meth:`wait_until` ready, :meth:`stop`."""

    def __init__(self, name: str, log_file: Path | None) -> None:
        self.name = name
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def poll(self) -> int | None:
        """The exit code, or None while it runs (or before it was started)."""
        return None if self.proc is None else self.proc.poll()

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(
        self,
        command: list[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        banner: str | None = None,
    ) -> None:
        """Starts ``command`` in a new process group, its output appended to the log (``banner`` first)."""
        if self.log_file is None:
            self.proc = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            return
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            if banner:
                log.write(f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} {banner}\n".encode())
                log.flush()
            self.proc = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until(
        self, ready: Callable[[], bool], *, timeout: float, where: str, interval: float = 0.1
    ) -> None:
        """Polls ``ready`` until it is true; RuntimeError with the log's tail if the process exits first or
        ``timeout`` seconds pass (``where``: what it should answer on)."""
        if self.proc is None:
            raise RuntimeError(f"{self.name} was not started")
        deadline = time.monotonic() + timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"{self.name} exited with code {code} before it was ready; "
                    f"last lines of {self.log_file}:\n{log_tail(self.log_file)}"
                )
            if ready():
                return
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"{self.name} did not answer on {where} within {timeout:g}s; "
                    f"last lines of {self.log_file}:\n{log_tail(self.log_file)}"
                )
            time.sleep(interval)

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 15.0) -> None:
        """``sig`` to the process group, SIGKILL after ``timeout`` seconds; nothing if it is not running."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
