"""A real Celery worker (Redis broker, and the serverless SQLite broker) and the CLI against a live API."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.assets.models import Registration, RegistrationState
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from tests.backend.support.services import REDIS_URL, celery_worker
from tests.backend.support.stack import Caller
from tests.backend.test_assets import _crashed_registration, png

pytestmark = pytest.mark.integration


@pytest.fixture(params=["redis", "rabbitmq", "sqlite-broker"])
def broker_url(request: pytest.FixtureRequest, settings: Settings) -> str:
    if request.param == "redis":
        return REDIS_URL
    if request.param == "rabbitmq":  # the production topology's other broker (127.0.0.1:5672 here and in CI)
        return os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
    return f"sqla+sqlite:///{settings.data_dir / 'broker.db'}"


@pytest.fixture
def worker(settings: Settings, broker_url: str) -> Iterator[subprocess.Popen[bytes]]:
    with celery_worker(settings, broker_url, "test") as proc:
        yield proc


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


def test_an_unreachable_api_is_one_line_and_exit_code_3_not_a_traceback(tmp_path: Path) -> None:
    import sys

    from tests.backend.support.stack import free_port

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    result = subprocess.run(
        [sys.executable, "-m", "edgeledger.cli", "sources", "list", "--api", closed, "--api-key", "el_x"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 3, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach {closed}/deliveries/sources"), lines
    assert "Traceback" not in result.stderr
