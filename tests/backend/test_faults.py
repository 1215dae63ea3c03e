"""Fault injection: a Celery worker killed with SIGKILL at a random moment while it anchors a queue of
batches. After a second worker finishes the job, every batch is anchored exactly once (one BatchAnchored
event per batch id, our transaction hash is that event's), the source's manifest chain is unbroken and
no record is lost. Real anvil, Redis broker, PostgreSQL and SQLite.

CI runs FAULT_RUNS=3 kills; the full run is ``FAULT_RUNS=50 .venv/bin/pytest tests/backend/test_faults.py
tests/backend/test_settlement_flow.py -k kill`` (README, "Faults"). Each run uses a fresh chain snapshot
and database, and its own random kill time (seeded by the run number)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import threading
import time
from collections import Counter
from itertools import pairwise
from typing import Any

import httpx
import pytest
from celery import Celery
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.deliveries.models import BatchState, DeliveryBatch, DeliveryRecordRow
from tests.backend.support.deliveries import add_records, close_batch, register_source
from tests.backend.support.services import REDIS_URL, celery_worker
from tests.backend.support.settlement import delivery_records

pytestmark = pytest.mark.integration
#: This session's own queue on the shared broker (see support/services.celery_worker).
QUEUE = f"edgeledger-test-{os.getpid()}"
RUNS = int(os.environ.get("FAULT_RUNS", "3"))
DAY = 86_400
DAY0 = 1_763_596_800
BATCHES = 16
PER_BATCH = 10
ANCHORED = (BatchState.anchored, BatchState.final)


def _anchored(session: Session) -> int:
    session.expire_all()
    return session.scalar(select(func.count(DeliveryBatch.id)).where(DeliveryBatch.state.in_(ANCHORED))) or 0


def _started(session: Session) -> bool:
    session.expire_all()
    busy = (BatchState.anchoring, *ANCHORED)
    return bool(session.scalar(select(func.count(DeliveryBatch.id)).where(DeliveryBatch.state.in_(busy))))


def _until(condition: Any, worker: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert worker.poll() is None, "the worker died"
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError("the worker did not finish the job")


@pytest.mark.parametrize("run", range(RUNS))
def test_kill_9_during_anchoring_anchors_every_batch_exactly_once(
    run: int, app_client: Any, settings: Settings, db_session: Session
) -> None:
    rng = random.Random(run)
    chain = ChainClient.from_settings(settings)
    source = register_source(
        db_session, chain, f"cf-fault-{run}", provider="cloudfront", signer=chain.signer_address
    )
    for day in range(BATCHES):
        for batch in add_records(
            db_session, settings, source, delivery_records(DAY0 + day * DAY, PER_BATCH, 1000, "shop.example")
        ):
            close_batch(db_session, settings, batch)
    sender = Celery(broker=REDIS_URL)
    try:
        with celery_worker(settings, REDIS_URL, f"fault-a-{run}", QUEUE) as victim:
            sender.send_task("edgeledger.deliveries.anchor_pending", queue=QUEUE)
            _until(lambda: _started(db_session), victim, 120)  # the worker is anchoring now
            time.sleep(rng.uniform(0.0, 0.3))
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait(timeout=30)
        killed_at = _anchored(db_session)
        with celery_worker(settings, REDIS_URL, f"fault-b-{run}", QUEUE) as rescuer:
            sender.send_task("edgeledger.deliveries.anchor_pending", queue=QUEUE)
            _until(lambda: _anchored(db_session) == BATCHES, rescuer, 240)
    finally:
        sender.close()

    ledger = chain.contract("DeliveryLedger")
    events = ledger.events.BatchAnchored().get_logs(from_block=0)
    per_batch = Counter("0x" + bytes(e["args"]["batchId"]).hex() for e in events)
    batches = list(
        db_session.scalars(
            select(DeliveryBatch)
            .where(DeliveryBatch.source_pk == source.id)
            .order_by(DeliveryBatch.period_start)
        )
    )
    assert len(batches) == BATCHES and all(per_batch[b.batch_id] == 1 for b in batches), (
        killed_at,
        per_batch,
    )
    print(f"run {run}: SIGKILL with {killed_at} of {BATCHES} batches anchored; all {BATCHES} anchored once")
    tx_of = {
        "0x" + bytes(e["args"]["batchId"]).hex(): "0x" + bytes(e["transactionHash"]).hex() for e in events
    }
    assert all(b.tx_hash == tx_of[b.batch_id] for b in batches)
    for earlier, later in pairwise(batches):
        assert later.prev_manifest_hash == earlier.manifest_hash  # the chain of manifests is unbroken
    on_chain = chain.call(ledger.functions.getSource(bytes.fromhex(source.source_id[2:])))
    assert "0x" + bytes(on_chain[5]).hex() == batches[-1].manifest_hash
    records = db_session.scalar(
        select(func.count(DeliveryRecordRow.id)).where(DeliveryRecordRow.source_pk == source.id)
    )
    assert records == BATCHES * PER_BATCH == sum(b.leaf_count for b in batches)  # nothing lost


def test_two_workers_on_one_broker_and_database_anchor_each_batch_once(
    app_client: Any, settings: Settings, db_session: Session
) -> None:
    """Two workers at once, each given the whole queue: the per-source work lock (PostgreSQL advisory
    lock / lock file) serialises them, and the contract's ``isAnchored`` check backs it up."""
    chain = ChainClient.from_settings(settings)
    source = register_source(
        db_session, chain, "cf-two-workers", provider="cloudfront", signer=chain.signer_address
    )
    for day in range(BATCHES):
        for batch in add_records(
            db_session, settings, source, delivery_records(DAY0 + day * DAY, PER_BATCH, 1000, "shop.example")
        ):
            close_batch(db_session, settings, batch)
    sender = Celery(broker=REDIS_URL)
    try:
        with (
            celery_worker(settings, REDIS_URL, "twin-a", QUEUE) as first,
            celery_worker(settings, REDIS_URL, "twin-b", QUEUE),
        ):
            for _ in range(4):  # more tasks than workers: both are busy at once
                sender.send_task("edgeledger.deliveries.anchor_pending", queue=QUEUE)
            _until(lambda: _anchored(db_session) == BATCHES, first, 240)
    finally:
        sender.close()
    events = chain.contract("DeliveryLedger").events.BatchAnchored().get_logs(from_block=0)
    per_batch = Counter("0x" + bytes(e["args"]["batchId"]).hex() for e in events)
    batches = db_session.scalars(select(DeliveryBatch).where(DeliveryBatch.source_pk == source.id)).all()
    assert len(batches) == BATCHES and all(per_batch[b.batch_id] == 1 for b in batches)


class ChainProxy:
    """A TCP relay in front of the chain's RPC that can be cut: while cut, every connection (open or new)
    is closed at once, as when the node or the network is down."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.server.getsockname()[1])
        self.down = threading.Event()
        self.open: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.down.is_set():
                client.close()
                continue
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.close()

    def cut(self) -> None:
        self.down.set()
        with self.lock:
            for conn in self.open:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.open.clear()

    def restore(self) -> None:
        self.down.clear()

    def close(self) -> None:
        self.cut()
        self.server.close()


def test_chain_unreachable_ingestion_keeps_accepting_and_anchoring_resumes_by_itself(
    settings: Settings, db_session: Session, chain_snapshot: Any
) -> None:
    """The chain's RPC is cut for CHAIN_OUTAGE_SECONDS (CI: 5; the documented full run: 60): uploads are
    still accepted and closed into batches; the worker's anchoring fails and retries with backoff on its
    own; once the RPC is back every batch is anchored, once."""
    from fastapi.testclient import TestClient

    from edgeledger.auth.models import Role
    from edgeledger.devtools.samples import demo_cloudfront_log
    from edgeledger.main import create_app
    from tests.backend.support.stack import make_caller, rpc

    outage = float(os.environ.get("CHAIN_OUTAGE_SECONDS", "5"))
    port = int(settings.eth_rpc_url.rsplit(":", 1)[1])
    proxy = ChainProxy(port)
    behind = settings.model_copy(update={"eth_rpc_url": proxy.url})
    app = create_app(behind)
    sender = Celery(broker=REDIS_URL)
    try:
        with TestClient(app) as client:
            admin = make_caller(client, Role.admin, "admin")
            source = {
                "name": "cf-outage",
                "kind": "cdn_provider",
                "provider": "cloudfront",
                "regions": ["*"],
                "jurisdiction": "US",
            }
            assert client.post("/deliveries/sources", json=source, headers=admin.headers).status_code == 201
            proxy.cut()
            assert rpc(settings.eth_rpc_url, "eth_blockNumber")  # the chain itself is fine, only unreachable
            log, _ = demo_cloudfront_log("bafkqaaa", 1000, "outage", lines=50, days_ago=3)
            upload = client.post(
                "/deliveries/sources/cf-outage/logs", files={"file": ("O.gz", log)}, headers=admin.headers
            )
            assert upload.status_code == 201 and upload.json()["records_new"] == 50, upload.text
            closed = client.post(
                "/deliveries/batches/close", json={"force": True, "anchor_now": False}, headers=admin.headers
            )
            assert closed.status_code == 200 and closed.json()["closed"], closed.text
            batch_ids = [b["batch_id"] for b in closed.json()["closed"]]
            with celery_worker(behind, REDIS_URL, "outage", QUEUE) as worker:
                sender.send_task("edgeledger.deliveries.anchor_pending", queue=QUEUE)
                time.sleep(outage)
                assert _anchored(db_session) == 0  # nothing could be anchored while cut
                proxy.restore()
                _until(lambda: _anchored(db_session) == len(batch_ids), worker, 400)
        app.state.engine.dispose()
    finally:
        sender.close()
        proxy.close()
    events = (
        ChainClient.from_settings(settings)
        .contract("DeliveryLedger")
        .events.BatchAnchored()
        .get_logs(from_block=0)
    )
    per_batch = Counter("0x" + bytes(e["args"]["batchId"]).hex() for e in events)
    assert all(per_batch[b] == 1 for b in batch_ids)


def _drop_other_connections(conn: Any) -> None:
    """Every connection to the test database but ``conn``'s is dropped by the server (a restart, a
    failover), as PostgreSQL's pg_terminate_backend does."""
    from sqlalchemy import text

    conn.execute(
        text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    )
    conn.commit()


def _add_cloudfront_source(client: httpx.Client, name: str) -> None:
    source = {
        "name": name,
        "kind": "cdn_provider",
        "provider": "cloudfront",
        "regions": ["*"],
        "jurisdiction": "US",
    }
    assert client.post("/deliveries/sources", json=source).status_code == 201


def test_database_connections_killed_mid_ingest_fail_cleanly_and_a_rerun_adds_no_duplicates(
    live_api: str, settings: Settings, db_session: Session
) -> None:
    """PostgreSQL drops every connection of the API while a 60,000-line upload is being stored (as in a
    restart or failover): the upload fails with 503 ``database_unavailable``, the chunks already committed
    stay, and uploading the same file again stores exactly the missing records."""
    from sqlalchemy import create_engine, text

    from edgeledger.auth.models import Role
    from edgeledger.devtools.samples import demo_cloudfront_log
    from tests.backend.support.stack import make_caller_in

    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("connection loss is simulated with pg_terminate_backend (PostgreSQL)")
    admin = make_caller_in(settings, Role.admin, "admin")
    lines = 60_000
    log, _ = demo_cloudfront_log("bafkqaaa", 1000, "pgkill", lines=lines, days_ago=3)
    with httpx.Client(base_url=live_api, headers=admin.headers, timeout=600) as client:
        _add_cloudfront_source(client, "cf-pgkill")
        result: dict[str, httpx.Response] = {}
        upload = threading.Thread(
            target=lambda: result.update(
                r=client.post("/deliveries/sources/cf-pgkill/logs", files={"file": ("K.gz", log)})
            )
        )
        upload.start()
        killer = create_engine(
            settings.resolved_database_url.replace("postgresql://", "postgresql+psycopg2://", 1)
        )
        with killer.connect() as conn:
            for _ in range(600):  # bounded: until the first chunk is committed
                stored = conn.execute(text("SELECT count(*) FROM delivery_records")).scalar_one()
                if stored:
                    break
                time.sleep(0.05)
            # Again and again until the upload ends: one kill alone can land between two chunks, on
            # a pooled connection the pool then replaces unnoticed, and the upload would just finish.
            deadline = time.monotonic() + 600
            while upload.is_alive() and time.monotonic() < deadline:
                _drop_other_connections(conn)
                time.sleep(0.02)
        upload.join(timeout=600)
        first = result["r"]
        assert first.status_code == 503 and first.json()["error"]["code"] == "database_unavailable", (
            first.text
        )
        with killer.connect() as conn:
            kept = conn.execute(text("SELECT count(*) FROM delivery_records")).scalar_one()
        killer.dispose()
        assert 0 < kept < lines  # committed chunks are kept, the rest was lost with the connection
        second = client.post("/deliveries/sources/cf-pgkill/logs", files={"file": ("K.gz", log)})
        assert second.status_code == 201, second.text
        report = second.json()
        assert report["records_new"] == lines - kept and report["duplicates"] == kept
    db_session.expire_all()
    total = db_session.scalar(select(func.count(DeliveryRecordRow.id)))
    distinct = db_session.scalar(select(func.count(func.distinct(DeliveryRecordRow.request_id))))
    assert total == distinct == lines  # every line once


def test_a_connection_lost_in_the_middle_of_a_chunks_copy_is_answered_503(
    live_api: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, made deterministic where it was a race: every connection of the API is dropped just
    before the second chunk's COPY, a statement the ingest sends below SQLAlchemy. The upload gets 503
    ``database_unavailable`` (not a 500 from the rollback on the dead connection), the first chunk
    stays, and the same file again stores exactly the rest."""
    from sqlalchemy import create_engine, text

    from edgeledger.auth.models import Role
    from edgeledger.deliveries import ingest as ingest_module
    from edgeledger.devtools.samples import demo_cloudfront_log
    from tests.backend.support.stack import make_caller_in

    if not settings.resolved_database_url.startswith("postgresql"):
        pytest.skip("connection loss is simulated with pg_terminate_backend (PostgreSQL)")
    admin = make_caller_in(settings, Role.admin, "admin")
    lines = 2 * ingest_module.CHUNK_RECORDS + 500
    log, _ = demo_cloudfront_log("bafkqaaa", 1000, "copykill", lines=lines, days_ago=3)
    killer = create_engine(
        settings.resolved_database_url.replace("postgresql://", "postgresql+psycopg2://", 1)
    )
    copies: list[int] = []
    copy_text = ingest_module._copy_text

    def copy_text_then_drop_connections(rows: list[Any]) -> str:
        copies.append(len(rows))
        if len(copies) == 2:  # the first chunk is committed; this one's COPY meets a dead connection
            with killer.connect() as conn:
                _drop_other_connections(conn)
        return copy_text(rows)

    monkeypatch.setattr(ingest_module, "_copy_text", copy_text_then_drop_connections)
    with httpx.Client(base_url=live_api, headers=admin.headers, timeout=600) as client:
        _add_cloudfront_source(client, "cf-copykill")
        first = client.post("/deliveries/sources/cf-copykill/logs", files={"file": ("C.gz", log)})
        assert first.status_code == 503, first.text
        assert first.json()["error"]["code"] == "database_unavailable"
        with killer.connect() as conn:
            kept = conn.execute(text("SELECT count(*) FROM delivery_records")).scalar_one()
        killer.dispose()
        assert kept == copies[0]  # the committed chunk, nothing of the one being copied
        monkeypatch.undo()
        second = client.post("/deliveries/sources/cf-copykill/logs", files={"file": ("C.gz", log)})
        assert second.status_code == 201, second.text
        report = second.json()
        assert report["records_new"] == lines - kept and report["duplicates"] == kept


def test_a_reorg_of_depth_3_during_anchoring_converges_to_the_chain(
    settings: Settings, db_session: Session, chain_snapshot: Any
) -> None:
    """Six batches anchored; anvil_reorg replaces the last three blocks (their anchors vanish). The next
    confirmation pass sends those batches back to "anchoring", the next anchoring pass re-sends them with
    the same manifests, and once they are deep enough every batch is final, anchored once on the canonical
    chain, our transaction hashes the canonical ones. (A fresh chain client after the reorg, as after a
    worker restart: anvil drops the reorged transactions instead of returning them to the mempool.)"""
    from edgeledger.deliveries import anchoring
    from tests.backend.support.stack import rpc

    deep = settings.model_copy(update={"chain_confirmations": 4})
    chain = ChainClient.from_settings(deep)
    source = register_source(
        db_session, chain, "cf-reorg", provider="cloudfront", signer=chain.signer_address
    )
    for day in range(6):
        for batch in add_records(
            db_session, deep, source, delivery_records(DAY0 + day * DAY, 5, 1000, "shop.example")
        ):
            close_batch(db_session, deep, batch)
    assert not anchoring.anchor_pending(db_session, chain, deep).errors
    assert _anchored(db_session) == 6

    rpc(deep.eth_rpc_url, "anvil_reorg", 3, [])
    chain = ChainClient.from_settings(deep)
    moved = anchoring.confirm_anchors(db_session, chain, deep)
    assert len(moved["reanchor"]) == 3, moved
    assert not anchoring.anchor_pending(db_session, chain, deep).errors
    for _ in range(deep.chain_confirmations):
        rpc(deep.eth_rpc_url, "evm_mine")
    anchoring.confirm_anchors(db_session, chain, deep)

    db_session.expire_all()
    batches = db_session.scalars(select(DeliveryBatch).where(DeliveryBatch.source_pk == source.id)).all()
    assert {b.state for b in batches} == {BatchState.final}
    events = chain.contract("DeliveryLedger").events.BatchAnchored().get_logs(from_block=0)
    tx_of = {
        "0x" + bytes(e["args"]["batchId"]).hex(): "0x" + bytes(e["transactionHash"]).hex() for e in events
    }
    per_batch = Counter("0x" + bytes(e["args"]["batchId"]).hex() for e in events)
    assert all(per_batch[b.batch_id] == 1 and tx_of[b.batch_id] == b.tx_hash for b in batches)
