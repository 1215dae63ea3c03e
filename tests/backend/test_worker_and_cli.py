"""A real Celery worker (Redis broker, and the serverless SQLite broker) and the CLI against a live API."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.assets.models import Registration, RegistrationState
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.main import create_app
from tests.backend.support.stack import Caller, free_port
from tests.backend.test_assets import _crashed_registration, png

pytestmark = pytest.mark.integration

REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def _worker_env(settings: Settings, broker: str) -> dict[str, str]:
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


@pytest.fixture(params=["redis", "sqlite-broker"])
def broker_url(request: pytest.FixtureRequest, settings: Settings) -> str:
    if request.param == "redis":
        return REDIS_URL
    return f"sqla+sqlite:///{settings.data_dir / 'broker.db'}"


@pytest.fixture
def worker(settings: Settings, broker_url: str) -> Iterator[subprocess.Popen[bytes]]:
    celery = str(Path(sys.executable).with_name("celery"))
    log = settings.data_dir / "worker.log"
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
            f"test-{os.getpid()}@%h",
        ],
        env=_worker_env(settings, broker_url),
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    proc.wait(timeout=30)


def _wait_for_state(
    client: TestClient, reg_id: int, state: str, worker: subprocess.Popen[bytes]
) -> Registration:
    """Polls the database for the worker's effect (bounded: the broker may poll once a second)."""
    for _ in range(240):
        assert worker.poll() is None, "worker died"
        with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
            reg = session.get(Registration, reg_id)
            assert reg is not None
            if reg.state == state:
                return reg
        time.sleep(0.25)
    raise AssertionError(f"registration {reg_id} never reached {state}")


def test_worker_finishes_a_crashed_registration(
    app_client: TestClient,
    creator: Caller,
    settings: Settings,
    broker_url: str,
    worker: subprocess.Popen[bytes],
) -> None:
    reg = _crashed_registration(app_client, creator, submit=False)
    sender = Celery(broker=broker_url)
    sender.send_task("edgeledger.assets.reconcile_registrations", kwargs={"grace_seconds": 0})
    done = _wait_for_state(app_client, reg.id, RegistrationState.registered, worker)
    assert done.asset_id == 1
    sender.close()


@pytest.fixture
def live_api(settings: Settings) -> Iterator[str]:
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


def test_cli_register_uploads_with_progress(
    app_client: TestClient, creator: Caller, live_api: str, tmp_path: Path
) -> None:
    file = tmp_path / "product.png"
    file.write_bytes(png())
    args = [
        "register",
        str(file),
        "--title",
        "From the CLI",
        "--territories",
        "DE,AT",
        "--api",
        live_api,
        "--api-key",
        creator.api_key,
        "--royalty-bps",
        "300",
    ]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    asset = json.loads(result.stdout)
    assert asset["title"] == "From the CLI" and asset["territories"] == ["AT", "DE"]
    assert asset["creator"] == creator.account.address and asset["royalty_bps"] == 300
    assert "uploading product.png" in result.stderr

    again = CliRunner().invoke(cli_app, args)
    assert again.exit_code == 1
    assert "409 duplicate_content" in again.stderr
