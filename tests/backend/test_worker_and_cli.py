"""A real Celery worker (Redis broker, and the serverless SQLite broker) and the CLI against a live API."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from celery import Celery
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.assets.models import Registration, RegistrationState
from edgeledger.auth.models import Role
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.ledger import registration as registration_formats
from tests.backend.support.scenes import Scene
from tests.backend.support.services import REDIS_URL, celery_worker
from tests.backend.support.stack import Caller, make_caller
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
    """Polls the database for the worker's effect (bounded, generously: a loaded machine starts Celery
    and its first task slowly; the broker may poll once a second)."""
    for _ in range(720):
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
    key_file = tmp_path / "creator.key"
    key_file.write_text(creator.account.key.to_0x_hex())
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
    # Without the creator's key: the typed data to sign and the command that submits the signature.
    unsigned = CliRunner().invoke(cli_app, [*args, "--title", "Signed elsewhere"])
    assert unsigned.exit_code == 0, unsigned.output
    typed = json.loads(unsigned.stdout)
    assert typed["primaryType"] == "Registration" and typed["message"]["creator"] == creator.account.address
    registration_id = int(unsigned.stderr.split("registration ")[1].split()[0])
    assert f"edgeledger sign-registration {registration_id}" in unsigned.stderr
    signature = registration_formats.sign(typed, creator.account.key)
    submitted = CliRunner().invoke(
        cli_app,
        [
            "sign-registration",
            str(registration_id),
            signature,
            "--api",
            live_api,
            "--api-key",
            creator.api_key,
        ],
    )
    assert submitted.exit_code == 0, submitted.output
    assert json.loads(submitted.stdout)["title"] == "Signed elsewhere"

    file.write_bytes(png())  # other bytes: with the key file, signed and registered in one command
    args += ["--creator-key-file", str(key_file)]
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


# --- deliveries proof / export --------------------------------------------------------------------


def test_cli_delivery_proof_and_export_verify_on_chain(
    scene: Scene, live_api: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = ["--api", live_api, "--api-key", scene.auditor.api_key]
    request_id = scene.request_ids[1]
    proof_file = tmp_path / "proof.json"
    proved = CliRunner().invoke(
        cli_app, ["deliveries", "proof", request_id, "--source", "cf-shop", "-o", str(proof_file), *api]
    )
    assert proved.exit_code == 0, proved.output
    proof = json.loads(proof_file.read_text())
    assert proof["format"] == "edgeledger-proof/v1" and proof["record"]["request_id"] == request_id
    assert f"{request_id}: batch {proof['batch']['batch_id']}, anchored in block" in proved.stderr
    verified = CliRunner().invoke(cli_app, ["verify", "delivery", str(proof_file), *_rpc(scene)])
    assert verified.exit_code == 0, verified.output

    # By raw line, read from standard input (the erased client's lines are not provable any more).
    first_ip = scene.lines[0].split("\t")[4]
    line = next(line for line in scene.lines if line.split("\t")[4] != first_ip)
    by_line = CliRunner().invoke(
        cli_app, ["deliveries", "proof", "--source", "cf-shop", "--line", "-", *api], input=line + "\n"
    )
    assert by_line.exit_code == 0, by_line.output
    assert json.loads(by_line.stdout)["record"]["request_id"] == line.split("\t")[14]
    assert line.split("\t")[4] not in by_line.output  # the client IP is never echoed

    # Usage errors are exit code 2, API refusals exit code 1, each one line.
    neither = CliRunner().invoke(cli_app, ["deliveries", "proof", "--source", "cf-shop", *api])
    assert neither.exit_code == 2 and neither.stderr == "error: give a request id or --line (one of them)\n"
    unknown = CliRunner().invoke(cli_app, ["deliveries", "proof", "nope", "--source", "cf-shop", *api])
    assert unknown.exit_code == 1 and unknown.stderr.startswith("error 404 record_not_found:"), unknown.output
    assert unknown.stderr.count("\n") == 1

    # The whole batch, streamed to <batch id>.json in the current folder, with progress on stderr.
    batch_id = proof["batch"]["batch_id"]
    monkeypatch.chdir(tmp_path)
    exported = CliRunner().invoke(cli_app, ["deliveries", "export", batch_id, *api])
    assert exported.exit_code == 0, exported.output
    count = proof["batch"]["leaf_count"]
    assert f"exporting {batch_id[:18]}… ({count:,} records)" in exported.stderr
    assert f"wrote {count:,} records (" in exported.stderr and f"to {batch_id}.json" in exported.stderr
    export_file = tmp_path / f"{batch_id}.json"
    document = json.loads(export_file.read_text())
    assert document["format"] == "edgeledger-batch-export/v1" and len(document["tree"]["values"]) == count
    assert not list(tmp_path.glob("*.part"))
    verified = CliRunner().invoke(cli_app, ["verify", "delivery", str(export_file), *_rpc(scene)])
    assert verified.exit_code == 0, verified.output

    # Some records' proofs, to a file named with -o.
    subset = tmp_path / "two.json"
    picked = ["--request-id", scene.request_ids[1], "--request-id", scene.request_ids[2]]
    two = CliRunner().invoke(cli_app, ["deliveries", "export", batch_id, *picked, "-o", str(subset), *api])
    assert two.exit_code == 0, two.output
    assert [p["record"]["request_id"] for p in json.loads(subset.read_text())["proofs"]] == scene.request_ids[
        1:3
    ]

    # An unknown batch: exit code 1, nothing written; an output folder that does not exist: exit code 2.
    missing = CliRunner().invoke(cli_app, ["deliveries", "export", "0x" + "ab" * 32, "-o", "gone.json", *api])
    assert (
        missing.exit_code == 1 and "404 batch_not_found" in missing.stderr and not Path("gone.json").exists()
    )
    nowhere = CliRunner().invoke(cli_app, ["deliveries", "export", batch_id, "-o", "no/such/x.json", *api])
    assert (
        nowhere.exit_code == 2
        and nowhere.stderr == "error: no/such/x.json: the folder no/such does not exist\n"
    )


def _rpc(scene: Scene) -> list[str]:
    return ["--rpc-url", scene.settings.eth_rpc_url]


def test_export_progress_counts_records_split_across_chunks() -> None:
    from edgeledger.deliveries.cli import _RecordCounter

    seen: list[int] = []
    counter = _RecordCounter(seen.append)
    body = b'{"values":[' + b",".join(b'{"value":[1],"treeIndex":%d}' % i for i in range(5)) + b"]}"
    for start in range(0, len(body), 7):  # every mark is cut somewhere
        counter.feed(body[start : start + 7])
    assert counter.count == 5 and sum(seen) == 5


# --- exit codes and territory lists -----------------------------------------------------------------


def test_a_missing_file_is_usage_exit_2_in_one_line_for_every_command_that_takes_one(tmp_path: Path) -> None:
    """2 is usage (a missing or unreadable file); "not registered" is 1 (test_assets.py,
    test_cli_verify_reads_the_chain_only); nothing here reaches an API or a chain."""
    gone = str(tmp_path / "gone.bin")
    api = ["--api", "http://127.0.0.1:9", "--api-key", "el_x"]  # never called
    commands = [
        ["register", gone, "--title", "x", *api],
        ["ingest", gone, "--source", "cf", *api],
        ["settlement", "rate-card", "add", "7", gone, *api],
        ["settlement", "billing", "import", "7", "0", gone, *api],
        ["settlement", "verify", gone, "--rpc-url", "http://127.0.0.1:9"],
        ["verify", "asset", gone, "--rpc-url", "http://127.0.0.1:9", "--registry", "0x" + "11" * 20],
        ["verify", "delivery", gone, "--rpc-url", "http://127.0.0.1:9"],
        ["verify", "package", gone, "--rpc-url", "http://127.0.0.1:9"],
    ]
    for args in commands:
        result = CliRunner().invoke(cli_app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1, (args, result.stderr)
        assert gone in result.stderr and "Traceback" not in result.output
    # A file that is there but not JSON: the same, not a traceback.
    card = tmp_path / "card.json"
    card.write_text("{")
    bad = CliRunner().invoke(cli_app, ["settlement", "rate-card", "add", "7", str(card), *api])
    assert bad.exit_code == 2 and bad.stderr.startswith(f"error: {card}: not JSON ("), bad.output
    # One missing file among several: nothing is uploaded.
    there = tmp_path / "there.log"
    there.write_text("x")
    mixed = CliRunner().invoke(cli_app, ["ingest", str(there), gone, "--source", "cf", *api])
    assert mixed.exit_code == 2 and mixed.stderr == f"error: {gone}: no such file\n"


def test_territory_lists_print_as_a_summary() -> None:
    from edgeledger.clitools import summarise_territories, territory_summary
    from edgeledger.territories import TERRITORY_CODES

    assert territory_summary(TERRITORY_CODES) == "all 249 territories"
    assert territory_summary([c for c in TERRITORY_CODES if c not in ("RU", "CN")]) == (
        "all 249 territories but CN, RU"
    )
    assert territory_summary(["fr", "DE"]) == "DE, FR"
    assert (
        territory_summary(TERRITORY_CODES[:100]) == f"100 territories: {', '.join(TERRITORY_CODES[:8])}, … HU"
    )
    printed = summarise_territories(
        {"asset": {"territories": list(TERRITORY_CODES), "id": 3}, "regions": ["DE"]}
    )
    assert printed == {"asset": {"territories": "all 249 territories", "id": 3}, "regions": ["DE"]}


def test_cli_sources_register_everywhere_prints_a_summary_not_249_codes(
    app_client: TestClient, live_api: str
) -> None:
    admin = make_caller(app_client, Role.admin, "admin")
    args = ["sources", "register", "--name", "cf-all", "--kind", "cdn_provider", "--provider", "cloudfront"]
    args += ["--regions", "*", "--jurisdiction", "US", "--api", live_api, "--api-key", admin.api_key]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    source = json.loads(result.stdout)
    assert source["regions"] == "all 249 territories" and source["name"] == "cf-all"
    assert result.stderr.endswith("serving all 249 territories\n") and "ZW" not in result.output
    listed = app_client.get("/deliveries/sources/cf-all", headers=admin.headers).json()
    assert len(listed["regions"]) == 249  # the API keeps the codes


def test_a_short_or_broken_export_leaves_no_file(tmp_path: Path) -> None:
    """The export is renamed into place only when every record arrived: an answer that ends early is
    exit code 1, a connection dropped mid-stream an error; neither leaves the file nor its .part.
    (A stand-in HTTP server: the real API cannot be made to send a short export.)"""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    batch_id = "0x" + "ab" * 32
    records = b",".join(b'{"value":["0x01"],"treeIndex":%d}' % i for i in (2, 3))

    class Api(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.endswith("/export"):
                body = b'{"format":"edgeledger-batch-export/v1","tree":{"values":[' + records
                complete = body + b"]}}"
                self.send_response(200)
                promised = len(complete) + (100 if self.server.drop else 0)  # type: ignore[attr-defined]
                self.send_header("Content-Length", str(promised))
                self.end_headers()
                self.wfile.write(complete)
                return
            answer = json.dumps({"batch_id": batch_id, "leaf_count": 3}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Api)
    server.drop = False  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        api = ["--api", f"http://127.0.0.1:{server.server_address[1]}", "--api-key", "el_x"]
        out = tmp_path / "export.json"
        short = CliRunner().invoke(cli_app, ["deliveries", "export", batch_id, "-o", str(out), *api])
        assert short.exit_code == 1, short.output
        assert "error: the export ended after 2 of 3 records" in short.stderr
        assert list(tmp_path.iterdir()) == []

        server.drop = True  # type: ignore[attr-defined]  # promises 100 bytes more, then closes
        dropped = CliRunner().invoke(cli_app, ["deliveries", "export", batch_id, "-o", str(out), *api])
        assert isinstance(dropped.exception, httpx.TransportError), dropped.output  # main(): exit code 3
        assert list(tmp_path.iterdir()) == []
    finally:
        server.shutdown()
        server.server_close()
