"""`edgeledger up`'s ingest queue (devtools.stack) and the demo's log uploads (devtools.demo), on SQLite and
PostgreSQL, with the stack's own nats-server, real `edgeledger ingest-worker` processes, the API served in
queue mode, anvil and IPFS: the demo's logs go through the queue (202, then run by a worker, not by the
API), the demo waits for each before it goes on to close, anchor and prove, a queued upload no worker
runs ends the demo with a message naming the logs, and the stack stops its workers, then the server.

A second run of the demo on the same data folder the same day (registration, delivery and settlement, the
API served inline) delivers the first run's image again: yesterday's period, settled by the first run,
gets a correction that computes at the period's terms block, posts, and is claimed once the challenge
window has passed."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role
from edgeledger.config import Settings
from edgeledger.deliveries.models import DeliverySource, IngestBlobChunk, IngestFile
from edgeledger.devtools.demo import (
    DEMO_SOURCE,
    delivered_asset,
    demo_period,
    run_delivery_demo,
    run_provenance_demo,
    run_settlement_demo,
    wait_for_ingest,
)
from edgeledger.devtools.samples import demo_cloudfront_log, demo_png
from edgeledger.devtools.stack import Stack, now_label, start_ingest_queue, wait_ingest_workers
from edgeledger.ipfs.cid import cid_of_bytes
from edgeledger.main import create_app
from edgeledger.settlement.models import Settlement
from tests.backend.support.services import worker_env
from tests.backend.support.stack import DeployedChain, free_port, make_caller_in, rpc
from tests.backend.test_ingest import make_source

pytestmark = pytest.mark.integration


def _with_nats_port(settings: Settings) -> Settings:
    """NATS_URL set, as a second stack beside another would set it: the stack's server takes its port."""
    return settings.model_copy(update={"nats_url": f"nats://127.0.0.1:{free_port()}"})


@contextmanager
def served(settings: Settings) -> Iterator[str]:
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


def test_the_demo_s_logs_go_through_the_stack_s_queue_and_ctrl_c_stops_it(
    settings: Settings, db_session: Session, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = _with_nats_port(settings)
    logs = settings.data_dir / "logs"
    stack = Stack()
    try:
        env, nats, workers = start_ingest_queue(
            stack, settings, worker_env(settings, settings.resolved_broker_url), logs, 1
        )
        assert (env["INGEST_MODE"], env["NATS_URL"]) == ("queue", settings.nats_url)
        assert nats.store_dir == settings.data_dir / "nats" and nats.log_file == logs / "nats-server.log"
        queued = settings.model_copy(update={"ingest_mode": "queue"})
        with served(queued) as base:
            wait_ingest_workers(workers, logs)
            image = demo_png("stack test")
            asset = {"content_cid": cid_of_bytes(image), "size_bytes": len(image)}
            admin_key = Account.create().key.to_0x_hex()
            run_delivery_demo(queued, base, admin_key=admin_key, asset=asset, label=now_label())
        out = capsys.readouterr().out
    finally:
        stack.stop_all()
    stopped = capsys.readouterr().out

    # Each upload was answered 202 and waited for; the batch was closed and proved after both ran.
    assert out.count("accepted (HTTP 202)") == 2 and out.count("waiting for an ingest worker") == 2, out
    assert out.count("done by an ingest worker, 402 lines") == 2, out
    assert "400 new records" in out and "0 new, 400 duplicates" in out, out
    assert "that line PASS" in out and ", 0 failed" in out, out
    # The rows were run by a worker: claimed by its run (the API's inline ingest claims nothing), once each,
    # and their stored bytes deleted once final.
    source = db_session.scalar(select(DeliverySource).where(DeliverySource.name == DEMO_SOURCE))
    assert source is not None
    rows = db_session.scalars(
        select(IngestFile).where(IngestFile.source_pk == source.id).order_by(IngestFile.id)
    ).all()
    assert [(r.state, r.attempts, r.records_new, r.duplicates) for r in rows] == [
        ("done", 1, 400, 0),
        ("done", 1, 0, 400),
    ]
    assert all(r.claim is not None and r.bytes_read == r.size_bytes > 0 for r in rows)
    assert db_session.scalar(select(func.count()).select_from(IngestBlobChunk)) == 0
    assert "ingest worker ready" in (logs / "ingest-worker-1.log").read_text()

    # Stopped in reverse order of start: the workers first, then the server they consume; nothing is left.
    assert stopped.index("stopping ingest worker 1") < stopped.index("stopping NATS server"), stopped
    assert nats.poll() is not None and all(w.poll() is not None for w in workers)
    assert not _listening(nats.port)


def test_a_queued_upload_no_worker_runs_ends_the_demo_with_a_message_naming_the_logs(
    settings: Settings, db_session: Session
) -> None:
    settings = _with_nats_port(settings)
    stack = Stack()
    try:
        _, nats, workers = start_ingest_queue(stack, settings, {}, settings.data_dir / "logs", 0)
        assert workers == []
        queued = settings.model_copy(update={"ingest_mode": "queue"})
        make_source(db_session, "cdn-nobody-runs")
        admin = make_caller_in(queued, Role.admin, "admin")
        log, _ = demo_cloudfront_log("bafkreigh2akiscaildc", 1_000, now_label(), lines=10)
        app = create_app(queued)
        with TestClient(app, headers=admin.headers) as client:
            upload = client.post("/deliveries/sources/cdn-nobody-runs/logs", files={"file": ("E2.gz", log)})
            assert upload.status_code == 202, upload.text
            started = time.monotonic()
            with pytest.raises(RuntimeError) as refused:
                wait_for_ingest(client, upload, queued, timeout=1)
            assert time.monotonic() - started < 10
        app.state.engine.dispose()
    finally:
        stack.stop_all()
    logs = settings.data_dir / "logs"
    assert str(refused.value) == (
        f"ingest #{upload.json()['id']} (E2.gz) is still queued after 1 s: no ingest worker finished it; "
        f"see {logs}/ingest-worker-*.log and {logs}/nats-server.log"
    )
    assert nats.poll() is not None


def test_a_second_demo_run_the_same_day_delivers_the_first_run_s_image_and_settles_a_correction(
    settings: Settings,
    chain_snapshot: DeployedChain,
    db_session: Session,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The deployer owns the test token: the demo's admin mints the merchant's test stablecoins with it.
    keys = {"admin": chain_snapshot.admin.key.to_0x_hex()}
    for role in ("creator", "merchant"):
        account = Account.create()
        rpc(settings.eth_rpc_url, "anvil_setBalance", account.address, hex(10**21))
        keys[role] = account.key.to_0x_hex()
    registered, delivered, outputs = [], [], []
    period = demo_period()  # once: every run delivers in and settles the same day, even across midnight
    with served(settings) as base:
        for _run in range(2):  # the first run, then a rerun the same day
            label = now_label()
            asset = run_provenance_demo(settings, base, keys["creator"], label)
            chosen = delivered_asset(settings, asset)
            registered.append(asset["id"])
            delivered.append(chosen["id"])
            run_delivery_demo(
                settings, base, admin_key=keys["admin"], asset=chosen, label=label, period=period
            )
            # The tests' vault has a one-day challenge window: the demo does not wait for it here.
            run_settlement_demo(settings, base, keys=keys, challenge_wait=0, period=period)
            outputs.append(capsys.readouterr().out)
        # The challenge window passes: the next demo run finds both claimable and the creator claims them.
        rpc(settings.eth_rpc_url, "evm_increaseTime", 86_400 + 1)
        rpc(settings.eth_rpc_url, "evm_mine")
        run_settlement_demo(settings, base, keys=keys, challenge_wait=0, period=period)
        outputs.append(capsys.readouterr().out)
    first, second, third = outputs

    # Each run registers its own image; both deliver the first one.
    assert registered[0] != registered[1] and delivered == [registered[0], registered[0]]
    assert "the first run's product image" not in first, first
    first_image, second_image = registered
    choice = f"requests asset #{first_image} (the first run's product image), not this run's #{second_image}"
    assert choice in second, second
    assert "400 new records" in second and "0 new, 400 duplicates" in second, second

    rows = db_session.scalars(select(Settlement).order_by(Settlement.id)).all()
    assert [(r.kind, r.sequence, r.state, r.error_code) for r in rows] == [
        ("period", 0, "claimable", None),
        ("correction", 1, "claimable", None),
    ]
    period, correction = rows
    # The correction read the terms at the period's block, where the first run's image existed, and paid
    # only the second run's batch.
    assert period.terms_block is not None and correction.terms_block == period.terms_block
    assert correction.total > 0 and correction.receipt_count > 0
    assert set(json.loads(correction.batch_ids_json)).isdisjoint(json.loads(period.batch_ids_json))
    assert f"period {period.period_id}: state posted" in first, first
    assert f"yesterday's period {period.period_id} was settled by an earlier run (state posted)" in second
    assert f"correction #1 of period {period.period_id}: state posted" in second, second
    assert f"correction #1 of period {period.period_id}: state claimable" in third, third
    assert "creator claimed 2 payout(s)" in third, third
