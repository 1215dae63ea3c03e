"""Pytest plugin: the worker-side processes tests start for real - a Celery worker on a real broker
(Redis or the SQLite-backed one), the API served by uvicorn on a free port (for the CLI), a NATS
JetStream server on a free port and ``edgeledger ingest-worker`` processes (queued ingestion)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import uvicorn

from edgeledger.config import Settings
from edgeledger.devtools.nats_server import LocalNatsServer
from edgeledger.main import create_app
from tests.backend.support.stack import free_port

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def worker_env(settings: Settings, broker: str) -> dict[str, str]:
    """The environment a worker or CLI process needs to reach the test's chain, IPFS node and database."""
    assert settings.signer_private_key is not None
    return {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.resolved_database_url,
        "ETH_RPC_URL": settings.eth_rpc_url,
        "DEPLOYMENT_FILE": str(settings.resolved_deployment_file),
        "SIGNER_PRIVATE_KEY": settings.signer_private_key.get_secret_value(),
        "IPFS_API": settings.ipfs_api,
        "CELERY_BROKER_URL": broker,
    }


@contextmanager
def celery_worker(
    settings: Settings, broker: str, name: str, queue: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `celery worker` (solo pool) on ``broker``; its log goes to DATA_DIR/worker-<name>.log.
    With ``queue`` it consumes only that queue (tests send their tasks there, so test sessions sharing
    the broker never take each other's tasks)."""
    celery = str(Path(sys.executable).with_name("celery"))
    log = settings.data_dir / f"worker-{name}.log"
    proc = subprocess.Popen(
        [
            celery,
            "-A",
            "edgeledger.worker",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-heartbeat",
            "--without-gossip",
            "--without-mingle",
            "--hostname",
            f"{name}-{os.getpid()}@%h",
            *(["--queues", queue] if queue else []),
        ],
        env=worker_env(settings, broker),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        yield proc
    finally:
        proc.terminate()  # a warm shutdown: the task in hand finishes first
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # a long task (a settlement run opening hundreds of periods)
            proc.kill()  # what the test checked is done; the work left is a later run's, as after a crash
            proc.wait(timeout=30)


@pytest.fixture
def live_api(settings: Settings) -> Iterator[str]:
    """The app served on a free loopback port (for the CLI, which talks HTTP)."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)


@contextmanager
def nats_server(directory: Path) -> Iterator[str]:
    """A NATS server with JetStream on a free loopback port, storing in ``directory``; yields its URL
    (the local stack's own runner, devtools.nats_server)."""
    with LocalNatsServer(free_port(), directory / "js", directory / "nats-server.log") as server:
        yield server.url


@pytest.fixture
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A JetStream server of the test's own (empty: no stream, no consumer)."""
    with nats_server(tmp_path_factory.mktemp("nats")) as url:
        yield url


def ingest_worker_process(settings: Settings, name: str, *args: str, **env: str) -> subprocess.Popen[bytes]:
    """``edgeledger ingest-worker`` as its own process (the caller stops it); log in DATA_DIR/<name>.log."""
    executable = str(Path(sys.executable).with_name("edgeledger"))
    variables = {
        **os.environ,
        "DATA_DIR": str(settings.data_dir),
        "DATABASE_URL": settings.resolved_database_url,
        "NATS_URL": settings.nats_url,
        "INGEST_STREAM": settings.ingest_stream,
        "INGEST_PARTITIONS": str(settings.ingest_partitions),
        "INGEST_ACK_WAIT_SECONDS": str(settings.ingest_ack_wait_seconds),
        **env,
    }
    if settings.pseudonym_master_key is not None:
        variables["PSEUDONYM_MASTER_KEY"] = settings.pseudonym_master_key.get_secret_value()
    log = settings.data_dir / f"{name}.log"
    return subprocess.Popen(
        [executable, "ingest-worker", *args],
        env=variables,
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        cwd=settings.data_dir,
    )
