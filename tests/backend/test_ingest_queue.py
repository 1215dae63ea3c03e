"""Queued ingestion (deliveries.ingest_queue) with a real NATS JetStream server, on SQLite and PostgreSQL:
the endpoints store and enqueue (202), ingest workers (threads here, ``edgeledger ingest-worker``
processes where a process must die or two must run) produce what inline ingestion produces, exactly once
per line however a message is delivered, in each source's order, within the upload limits; and the batch
trees every host's proofs read, shared through the database."""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import nats
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from benchmarks.ingest_bombs import ratio_bomb
from edgeledger.auth.models import Role
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries import batches, service, trees
from edgeledger.deliveries.ingest import ingest_log
from edgeledger.deliveries.ingest_queue import (
    STALE_QUEUED_SECONDS,
    enqueue_upload,
    partition_of,
    run_worker,
    store_upload,
    subject_of,
)
from edgeledger.deliveries.models import (
    BatchTreePiece,
    DeliveryRecordRow,
    DeliverySource,
    IngestBlobChunk,
    IngestFile,
    QuarantinedLineRow,
)
from edgeledger.ledger.delivery_leaf import leaf_hash
from edgeledger.ledger.ids import source_id_for
from edgeledger.main import create_app
from tests.backend.support.services import ingest_worker_process
from tests.backend.support.stack import free_port, make_caller_in
from tests.backend.test_ingest import DAY, SAMPLES, make_source, node_line

pytestmark = pytest.mark.integration

FINAL = ("done", "failed", "rejected")
SAMPLE_FILES = ("cloudfront.log.gz", "cloudflare.ndjson", "edgeledger.jsonl", "cloudfront_broken.log")


@pytest.fixture
def queue_settings(database_url: str, tmp_path: Path, nats_url: str) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        pseudonym_master_key="22" * 32,
        ingest_mode="queue",
        nats_url=nats_url,
        ingest_partitions=2,
        ingest_ack_wait_seconds=3,
    )


@contextmanager
def worker(settings: Settings, partitions: list[int] | None = None) -> Iterator[dict[str, int]]:
    """An ingest worker in a thread of this process; yields {"acked": n} once it has stopped."""
    stop, ready = threading.Event(), threading.Event()
    result: dict[str, int] = {}

    def run() -> None:
        result["acked"] = run_worker(settings, partitions, stop=stop, on_ready=ready.set)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30), "the worker did not connect"
    try:
        yield result
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive()


def wait_final(session: Session, ids: list[int], timeout: float = 90) -> list[IngestFile]:
    deadline = time.monotonic() + timeout
    while True:
        session.expire_all()
        rows = [session.get(IngestFile, i) for i in ids]
        if all(r is not None and r.state in FINAL for r in rows):
            session.rollback()
            return rows  # type: ignore[return-value]
        assert time.monotonic() < deadline, [(r.id, r.state, r.lines) for r in rows if r is not None]
        session.rollback()
        time.sleep(0.1)


def count(session: Session, model: Any, *where: Any) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def source_in(session: Session, partition: int, partitions: int, prefix: str) -> DeliverySource:
    """A new source whose partition is ``partition``."""
    n = 0
    while partition_of(source_id_for(f"{prefix}-{n}"), partitions) != partition:
        n += 1
    return make_source(session, f"{prefix}-{n}")


def enqueue(session: Session, settings: Settings, source: DeliverySource, data: bytes, name: str) -> int:
    ingest = enqueue_upload(session, settings, source, io.BytesIO(data), name=name, created_by=None)
    assert ingest.state == "queued" and ingest.sha256 is not None and ingest.size_bytes == len(data)
    return ingest.id


def node_file(ids: range, ts_ms: int = DAY * 1000) -> bytes:
    return "".join(node_line(f"r{n}", ts_ms + n) + "\n" for n in ids).encode()


REPORT_FIELDS = ("state", "log_format", "sha256", "size_bytes", "lines", "records_new", "duplicates")
REPORT_FIELDS += ("duplicates_in_file", "late_records", "quarantined", "skipped", "error_code")
RECORD_FIELDS = ("line_number", "request_id", "timestamp_ms", "edge_location", "country", "region", "host")
RECORD_FIELDS += ("uri", "asset_id", "merchant_id", "bytes_delivered", "status", "cache_result")
RECORD_FIELDS += ("pseudonym_key_id", "client_pseudonym")


# --------------------------------------------------------------------------------------------------------


def test_a_queued_upload_gives_what_inline_ingestion_gives(
    db_session: Session, queue_settings: Settings
) -> None:
    inline_source = make_source(db_session, "inline-a")
    queued_source = make_source(db_session, "queued-a")
    inline, queued = [], []
    for name in SAMPLE_FILES:
        data = (SAMPLES / name).read_bytes()
        inline.append(
            ingest_log(
                db_session, queue_settings, inline_source, io.BytesIO(data), name=name, created_by=None
            )
        )
        queued.append(enqueue(db_session, queue_settings, queued_source, data, name))
    assert count(db_session, IngestBlobChunk) == len(SAMPLE_FILES)  # each sample fits one piece
    assert count(db_session, DeliveryRecordRow, DeliveryRecordRow.source_pk == queued_source.id) == 0
    with worker(queue_settings) as acked:
        reports = wait_final(db_session, queued)
    assert acked == {"acked": len(SAMPLE_FILES)}
    for a, b in zip(inline, reports, strict=True):
        assert [getattr(b, f) for f in REPORT_FIELDS] == [getattr(a, f) for f in REPORT_FIELDS], b.name
        assert b.bytes_read == b.size_bytes and b.attempts == 1

    def records(source: DeliverySource) -> list[tuple[Any, ...]]:
        rows = db_session.scalars(
            select(DeliveryRecordRow)
            .where(DeliveryRecordRow.source_pk == source.id)
            .order_by(DeliveryRecordRow.id)
        ).all()
        for row in rows:
            assert row.leaf == leaf_hash(service.leaf_values_of(source.source_id, row))
        return [tuple(getattr(r, f) for f in RECORD_FIELDS) for r in rows]

    assert records(queued_source) == records(inline_source) and len(records(queued_source)) == 21
    quarantined = select(QuarantinedLineRow.line_number, QuarantinedLineRow.reason, QuarantinedLineRow.raw)
    assert db_session.execute(quarantined.where(QuarantinedLineRow.ingest_file_pk == queued[-1])).all() == (
        db_session.execute(quarantined.where(QuarantinedLineRow.ingest_file_pk == inline[-1].id)).all()
    )
    assert count(db_session, IngestBlobChunk) == 0  # deleted once final


def test_api_answers_202_and_shows_progress_and_the_cli_waits(
    db_session: Session, queue_settings: Settings, tmp_path: Path
) -> None:
    operator = make_caller_in(queue_settings, Role.operator, "node operator")
    make_source(db_session, "node-q", operator_user_id=operator.user_id)
    big = gzip.compress(node_file(range(30_000)), compresslevel=1)
    app = create_app(queue_settings)
    with TestClient(app) as client:
        response = client.post(
            "/deliveries/sources/node-q/logs?name=big.jsonl.gz",
            headers={**operator.headers, "Content-Type": "application/octet-stream"},
            content=big,
        )
        assert response.status_code == 202, response.text
        queued = response.json()
        assert (queued["state"], queued["lines"], queued["size_bytes"]) == ("queued", 0, len(big))
        url = f"/deliveries/ingests/{queued['id']}"
        assert client.get(url, headers=operator.headers).json()["state"] == "queued"  # no worker yet
        seen = []
        with worker(queue_settings):
            while (report := client.get(url, headers=operator.headers).json())["state"] not in FINAL:
                seen.append((report["state"], report["lines"], report["bytes_read"]))
                time.sleep(0.02)
        assert (report["state"], report["records_new"], report["lines"]) == ("done", 30_000, 30_000)
        assert report["bytes_read"] == len(big)
        partial = [s for s in seen if s[0] == "processing" and 0 < s[1] < 30_000]
        assert partial and all(0 < s[2] <= len(big) for s in partial), seen

        stream = client.post(
            "/deliveries/sources/node-q/stream?name=live",
            headers=operator.headers,
            content=node_file(range(5)),
        )
        assert stream.status_code == 202 and stream.json()["state"] == "queued"
        with worker(queue_settings):
            assert wait_final(db_session, [stream.json()["id"]])[0].duplicates == 5  # all in big.jsonl.gz

    # The CLI against the API served for real: it follows each queued upload to its final report.
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        more = tmp_path / "more.jsonl"
        more.write_bytes(node_file(range(30_000, 30_010)))
        bomb = tmp_path / "bomb.log.gz"
        bomb.write_bytes(ratio_bomb(blank_mib=4))
        api = ["--source", "node-q", "--api", f"http://127.0.0.1:{port}", "--api-key", operator.api_key]
        with worker(queue_settings):
            result = CliRunner().invoke(cli_app, ["ingest", str(more), str(bomb), *api])
        assert result.exit_code == 1, result.output
        report = json.loads(result.stdout.strip())
        assert (report["name"], report["state"], report["records_new"]) == ("more.jsonl", "done", 10)
        assert "more.jsonl: queued 0 lines" in result.stderr
        assert "bomb.log.gz: failed upload_ratio_too_high" in result.stderr
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.engine.dispose()


def test_a_worker_killed_mid_file_and_a_redelivered_message_store_each_record_once(
    db_session: Session, queue_settings: Settings
) -> None:
    source = make_source(db_session, "node-kill")
    lines = 60_000
    ingest_id = enqueue(db_session, queue_settings, source, node_file(range(lines)), "big.jsonl")
    first = ingest_worker_process(queue_settings, "worker-killed")
    try:
        deadline = time.monotonic() + 120
        while True:  # kill it once a chunk is stored and before the file is done
            db_session.expire_all()
            row = db_session.get(IngestFile, ingest_id)
            assert row is not None and row.state != "done" and time.monotonic() < deadline
            if row.lines >= 10_000:
                break
            db_session.rollback()
            time.sleep(0.01)
        first.send_signal(signal.SIGKILL)
    finally:
        first.kill()
        first.wait(30)
    db_session.rollback()
    stored_at_kill = count(db_session, DeliveryRecordRow, DeliveryRecordRow.source_pk == source.id)
    assert 10_000 <= stored_at_kill < lines

    with worker(queue_settings):  # JetStream delivers the message again once the ack wait is over
        [row] = wait_final(db_session, [ingest_id])
    assert (row.state, row.attempts, row.lines, row.records_new) == ("done", 2, lines, lines)
    assert (row.duplicates, row.duplicates_in_file, row.quarantined, row.skipped) == (0, 0, 0, 0)
    assert count(db_session, DeliveryRecordRow, DeliveryRecordRow.source_pk == source.id) == lines
    assert count(db_session, QuarantinedLineRow) == 0

    async def publish_again() -> None:  # the same message once more, as a redelivery would bring it
        nc = await nats.connect(queue_settings.nats_url)
        js = nc.jetstream()
        await js.publish(
            subject_of(partition_of(source.source_id, 2)), json.dumps({"ingest_id": ingest_id}).encode()
        )
        await nc.close()

    asyncio.run(publish_again())
    with worker(queue_settings) as acked:
        time.sleep(2)
    assert acked == {"acked": 1}
    db_session.expire_all()
    again = db_session.get(IngestFile, ingest_id)
    assert again is not None and (again.records_new, again.attempts, again.finished_at) == (
        lines,
        2,
        row.finished_at,
    )
    assert count(db_session, DeliveryRecordRow, DeliveryRecordRow.source_pk == source.id) == lines


def test_two_worker_processes_take_different_partitions(
    db_session: Session, queue_settings: Settings
) -> None:
    sources = [source_in(db_session, p, 2, f"part{p}") for p in (0, 1)]
    ids = []
    for n, source in enumerate(sources):
        for k in range(2):
            start = 100_000 * n + 10_000 * k
            ids.append(
                enqueue(db_session, queue_settings, source, node_file(range(start, start + 8_000)), f"f{k}")
            )
    workers = [
        ingest_worker_process(queue_settings, f"worker-{p}", "--partitions", str(p), "--idle-exit", "5")
        for p in (0, 1)
    ]
    try:
        outputs = [json.loads(w.communicate(timeout=180)[0]) for w in workers]
    finally:
        for w in workers:
            w.kill()
            w.wait(30)
    assert outputs == [{"ingests": 2}, {"ingests": 2}]  # each took its own partition's two files
    rows = wait_final(db_session, ids, timeout=5)
    assert [(r.state, r.records_new) for r in rows] == [("done", 8_000)] * 4
    for source in sources:
        assert count(db_session, DeliveryRecordRow, DeliveryRecordRow.source_pk == source.id) == 16_000


def test_a_source_s_files_run_in_the_order_they_were_accepted(
    db_session: Session, queue_settings: Settings
) -> None:
    """Each file repeats half of the previous one: only in upload order does every file find exactly
    the previous file's half already stored (two workers pull from every partition)."""
    source = make_source(db_session, "node-order")
    other = source_in(db_session, 1 - partition_of(source.source_id, 2), 2, "other")
    ids = []
    for k in range(5):
        ids.append(
            enqueue(
                db_session, queue_settings, source, node_file(range(3_000 * k, 3_000 * k + 6_000)), f"o{k}"
            )
        )
        enqueue(db_session, queue_settings, other, node_file(range(50_000 * k, 50_000 * k + 3_000)), f"x{k}")
    with worker(queue_settings), worker(queue_settings):
        rows = wait_final(db_session, ids)
    assert [(r.records_new, r.duplicates) for r in rows] == [(6_000, 0)] + [(3_000, 3_000)] * 4
    finished = [r.finished_at for r in rows]
    assert finished == sorted(finished)
    assert count(db_session, DeliveryRecordRow, DeliveryRecordRow.source_pk == source.id) == 18_000


def test_upload_limits_hold_in_the_worker(db_session: Session, queue_settings: Settings) -> None:
    source = make_source(db_session, "node-bomb")
    bomb = enqueue(db_session, queue_settings, source, ratio_bomb(blank_mib=8), "bomb.log.gz")
    html = enqueue(db_session, queue_settings, source, (SAMPLES / "not_a_log.html").read_bytes(), "page.html")
    with worker(queue_settings):
        failed, rejected = wait_final(db_session, [bomb, html])
    assert (failed.state, failed.error_code) == ("failed", "upload_ratio_too_high")
    assert "INGEST_MAX_COMPRESSION_RATIO" in (failed.error_message or "")
    assert (rejected.state, rejected.error_code) == ("rejected", "not_a_log")
    assert count(db_session, DeliveryRecordRow) == 0 and count(db_session, QuarantinedLineRow) == 0
    assert count(db_session, IngestBlobChunk) == 0


def test_no_queue_no_acceptance(db_session: Session, queue_settings: Settings) -> None:
    """JetStream unreachable: 503 ``ingest_queue_unavailable``; the ingest is failed, its bytes dropped."""
    source = make_source(db_session, "node-down")
    down = queue_settings.model_copy(update={"nats_url": f"nats://127.0.0.1:{free_port()}"})
    with pytest.raises(service.DeliveryError) as refused:
        enqueue_upload(db_session, down, source, io.BytesIO(node_file(range(3))), name="x", created_by=None)
    assert (refused.value.status, refused.value.code) == (503, "ingest_queue_unavailable")
    row = db_session.scalars(select(IngestFile)).one()
    assert (row.state, row.error_code) == ("failed", "ingest_queue_unavailable")
    assert count(db_session, IngestBlobChunk) == 0


def test_a_batch_tree_closed_on_one_host_serves_proofs_on_another(
    db_session: Session, database_url: str, tmp_path: Path
) -> None:
    """Hosts share trees through the database, not a folder: host B, with an empty DATA_DIR, reads the
    tree host A stored at close, even where B could not rebuild it from the leaves."""
    host_a, host_b = (
        Settings(data_dir=tmp_path / name, database_url=database_url, pseudonym_master_key="22" * 32)
        for name in ("a", "b")
    )
    source = make_source(db_session, "node-trees")
    ingest_log(db_session, host_a, source, io.BytesIO(node_file(range(50))), name="t.jsonl", created_by=None)
    [batch] = batches.close_due_batches(db_session, host_a, force=True)
    assert (
        batch.root is not None and count(db_session, BatchTreePiece, BatchTreePiece.batch_pk == batch.id) == 1
    )
    stored_a = trees.tree_path(host_a, batch.batch_id).read_bytes()

    # A leaf changed after the close: a tree rebuilt from the leaves would not match the anchored root.
    record = db_session.scalars(select(DeliveryRecordRow).limit(1)).one()
    record.leaf = b"\0" * 32
    db_session.commit()
    with trees.open_batch_tree(db_session, host_b, batch) as tree:
        assert "0x" + tree.root.hex() == batch.root and tree.leaf_count == 50
    assert trees.tree_path(host_b, batch.batch_id).read_bytes() == stored_a

    trees.tree_path(host_b, batch.batch_id).unlink()  # without the shared copy: rebuilt, and refused
    db_session.execute(delete(BatchTreePiece))
    db_session.commit()
    with pytest.raises(ValueError, match="no longer produce its root"):
        trees.open_batch_tree(db_session, host_b, batch)


def test_workers_sweep_uploads_left_half_stored_or_never_published(
    db_session: Session, queue_settings: Settings
) -> None:
    """The API process stopped while receiving an upload (no sha256 yet) or between storing it and
    publishing it: an hour later a worker fails the first (its bytes dropped) and runs the second."""
    source = make_source(db_session, "node-sweep")
    half, unsent, fresh = (
        store_upload(
            db_session,
            queue_settings,
            source,
            io.BytesIO(node_file(range(k, k + 5))),
            name=f"s{k}",
            created_by=None,
        )
        for k in (0, 100, 200)
    )
    old = utcnow() - timedelta(seconds=STALE_QUEUED_SECONDS + 60)
    db_session.execute(update(IngestFile).where(IngestFile.id == half.id).values(sha256=None, created_at=old))
    db_session.execute(update(IngestFile).where(IngestFile.id == unsent.id).values(created_at=old))
    db_session.commit()
    with worker(queue_settings):
        failed, done = wait_final(db_session, [half.id, unsent.id])
    assert (failed.state, failed.error_code) == ("failed", "upload_interrupted")
    assert (done.state, done.records_new) == ("done", 5)
    db_session.expire_all()
    assert db_session.get(IngestFile, fresh.id).state == "queued"  # not stale: its message may be on its way
    assert count(db_session, IngestBlobChunk, IngestBlobChunk.ingest_file_pk != fresh.id) == 0
