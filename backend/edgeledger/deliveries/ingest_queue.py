"""Queued ingestion on NATS JetStream (``INGEST_MODE=queue``, docs/ingestion.md "Queued ingestion").

The upload endpoints only accept: :func:`enqueue_upload` stores the upload as received (plain or gzip) in
the database, as :class:`IngestBlobChunk` pieces of 1 MiB next to an :class:`IngestFile` in state
``queued``, publishes ``{"ingest_id": n}`` on the JetStream subject ``ingest.<partition>`` and answers
202. Stateless ingest workers (:func:`run_worker`, ``edgeledger ingest-worker``) run the same
:func:`ingest.ingest_log` pipeline on the stored bytes, so parsing, the ``INGEST_MAX_*`` limits (a
decompression bomb is refused by the worker exactly as by the endpoint), dedupe, batches, closing and
anchoring are unchanged.

Where the upload waits. The database: every API and worker host reaches it already, the row and its
bytes commit together before the 202 (an upload the client saw accepted is never lost), nothing else
has to be shared or backed up, and the pieces are deleted as soon as the ingest is final (done, failed
or rejected), so raw client addresses stay only as long as a multipart upload's spooled temporary file
would, only while queued or running. IPFS would publish raw logs by content address and cannot forget
them; a shared DATA_DIR needs a network filesystem on every host. The pieces are written in
transactions of 16 MiB (bounded memory, no long write lock on SQLite); ``sha256`` is set only when the
whole upload is stored, then the message is published.

Order and dedupe per source. ``partition = crc32(source id) mod INGEST_PARTITIONS``: a source always maps
to one subject. Each partition has one durable pull consumer (``ingest-<p>``) with ``max_ack_pending=1``:
JetStream hands out the next message of a partition only once the previous one is acknowledged, whatever
the number of workers pulling from it, so a source's uploads run one at a time in the order they were
accepted, and two partitions run in parallel on different workers. A worker acknowledges only after the
ingest row is final.

Exactly-once records from at-least-once delivery. A message may be delivered again: the worker died, or
did not report progress within ``INGEST_ACK_WAIT_SECONDS`` (while a file runs, a heartbeat sends an
in-progress ack and refreshes the row's ``heartbeat_at`` every third of it). A run first *claims* the
row (a fresh token in ``ingest_files.claim``; taken over only when the previous holder's heartbeat is
older than the ack wait). Every chunk commit of :mod:`ingest` checks the
claim in the statement that locks the row and moves its counters and line watermark (``lines``) together
with the chunk's records, so a chunk is stored whole, once, by the run holding the claim, or not at all.
A run taking over resumes after the watermark (:func:`ingest._resume`): the lines before it are read
again (the limits and the digest see the whole file) but not stored again; a stalled run that lost its
claim writes nothing more (``ClaimLost``). A final row is acknowledged without work. Hence every line
becomes one record or quarantined line, once, however often the message comes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import secrets
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import IO, Any

import nats
import nats.errors
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StorageType
from nats.js.errors import NotFoundError
from sqlalchemy import Engine, delete, insert, or_, select, update
from sqlalchemy.orm import Session

from edgeledger.config import Settings
from edgeledger.db import make_engine, utcnow
from edgeledger.deliveries import service
from edgeledger.deliveries.ingest import ClaimLost, check_ingestable, ingest_log
from edgeledger.deliveries.limits import IngestLimitError
from edgeledger.deliveries.models import (
    DeliverySource,
    IngestBlobChunk,
    IngestFile,
    IngestState,
)

log = logging.getLogger(__name__)

__all__ = [
    "BLOB_PIECE",
    "MAX_ATTEMPTS",
    "BlobReader",
    "enqueue_upload",
    "partition_of",
    "process_message",
    "publish",
    "run_worker",
    "store_upload",
    "subject_of",
]

BLOB_PIECE = 1 << 20  # bytes per IngestBlobChunk row
_PIECES_PER_COMMIT = 16
SUBJECT = "ingest"
#: Runs of one ingest that ended without a final row (a worker crashed or was killed each time) before
#: the ingest is failed with ``ingest_attempts_exhausted`` instead of being run again.
MAX_ATTEMPTS = 5
#: A ``queued`` row this old whose upload never completed (the API process stopped while receiving it)
#: is failed and its bytes dropped; one stored whole but never run (the API stopped between its commit
#: and the publish) is published again. Workers sweep at start and every :data:`SWEEP_SECONDS`.
STALE_QUEUED_SECONDS = 3600
SWEEP_SECONDS = 600
POLL_SECONDS = 0.1  # how long an idle worker waits before looking at its partitions again
FINAL_STATES = (IngestState.done, IngestState.failed, IngestState.rejected)


def partition_of(source_id: str, partitions: int) -> int:
    """The partition of a source (its 0x source id): stable across processes, hosts and releases."""
    return zlib.crc32(source_id.lower().encode()) % partitions


def subject_of(partition: int) -> str:
    return f"{SUBJECT}.{partition}"


async def _log_error(exc: Exception) -> None:
    log.warning("nats: %s: %s", type(exc).__name__, exc)


def _servers(settings: Settings) -> list[str]:
    return [s.strip() for s in settings.nats_url.split(",") if s.strip()]


# --------------------------------------------------------------------------------------------------------
# The stored upload
# --------------------------------------------------------------------------------------------------------


def _drop_blob(session: Session, ingest_pk: int) -> None:
    session.execute(delete(IngestBlobChunk).where(IngestBlobChunk.ingest_file_pk == ingest_pk))


def _mark_failed(session: Session, ingest_pk: int, code: str, message: str, claim: str | None = None) -> None:
    """The ingest ends ``failed`` with ``code`` (its stored upload deleted in the same transaction)."""
    session.rollback()
    session.execute(
        update(IngestFile)
        .where(IngestFile.id == ingest_pk, IngestFile.state.not_in(FINAL_STATES), IngestFile.claim == claim)
        .values(state=IngestState.failed, error_code=code, error_message=message[:500], finished_at=utcnow())
    )
    _drop_blob(session, ingest_pk)
    session.commit()


class BlobReader:
    """The stored upload as a binary file, read piece by piece (one 1 MiB row at a time, bounded memory)
    through its own short connections, so the ingest session's commits do not touch it."""

    def __init__(self, engine: Engine, ingest_pk: int) -> None:
        self._engine = engine
        self._pk = ingest_pk
        self._seq = 0
        self._piece = b""
        self._pos = 0
        self._done = False

    def readable(self) -> bool:
        return True

    def _next_piece(self) -> bool:
        query = select(IngestBlobChunk.data).where(
            IngestBlobChunk.ingest_file_pk == self._pk, IngestBlobChunk.seq == self._seq
        )
        with self._engine.connect() as connection:
            data = connection.execute(query).scalar()
        if data is None:
            self._done = True
            return False
        self._piece, self._pos, self._seq = bytes(data), 0, self._seq + 1
        return True

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        want = size if size >= 0 else 1 << 62
        while want > 0 and not self._done:
            if self._pos >= len(self._piece) and not self._next_piece():
                break
            part = self._piece[self._pos : self._pos + want]
            self._pos += len(part)
            want -= len(part)
            parts.append(part)
        return b"".join(parts)


# --------------------------------------------------------------------------------------------------------
# API side: store and enqueue
# --------------------------------------------------------------------------------------------------------

_known_streams: set[tuple[str, str]] = set()


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    """The work-queue stream of ``ingest.*`` (file storage: a message survives a server restart)."""
    key = (settings.nats_url, settings.ingest_stream)
    if key in _known_streams:
        return
    try:
        await js.stream_info(settings.ingest_stream)
    except NotFoundError:
        await js.add_stream(
            name=settings.ingest_stream,
            subjects=[f"{SUBJECT}.*"],
            retention=RetentionPolicy.WORK_QUEUE,
            storage=StorageType.FILE,
        )
    _known_streams.add(key)


async def _publish(settings: Settings, ingest_pk: int, partition: int) -> None:
    nc = await nats.connect(
        servers=_servers(settings),
        connect_timeout=3,
        allow_reconnect=False,
        max_reconnect_attempts=2,  # per server; 0 would mean forever
        reconnect_time_wait=0.5,
        error_cb=_log_error,
    )
    try:
        js = nc.jetstream(timeout=5)
        await ensure_stream(js, settings)
        await js.publish(
            subject_of(partition),
            json.dumps({"ingest_id": ingest_pk}).encode(),
            stream=settings.ingest_stream,
            headers={"Nats-Msg-Id": f"ingest-{ingest_pk}"},  # a retried publish is stored once
        )
    finally:
        await nc.close()


def publish(settings: Settings, ingest_pk: int, partition: int) -> None:
    """Publish one queued ingest (blocking; called from the endpoint's worker thread)."""
    asyncio.run(_publish(settings, ingest_pk, partition))


def store_upload(
    session: Session,
    settings: Settings,
    source: DeliverySource,
    stream: IO[bytes] | Iterable[str],
    *,
    name: str,
    created_by: int | None,
    log_format: str | None = None,
) -> IngestFile:
    """The first half of :func:`enqueue_upload`: the ``queued`` row and its stored bytes, not yet
    published (a message for it is what makes a worker run it)."""
    check_ingestable(source, log_format)
    reader: Any = stream
    if not hasattr(stream, "read"):  # text lines (tests, tools): stored as UTF-8
        lines = iter(stream)  # type: ignore[arg-type]
        reader = _LinesReader(lines)
    ingest = IngestFile(
        source_pk=source.id,
        name=name[:255],
        log_format=log_format,
        state=IngestState.queued,
        pseudonym_key_id=service.pseudonym_key_id(),
        created_by=created_by,
    )
    session.add(ingest)
    session.commit()
    digest, size, seq = hashlib.sha256(), 0, 0
    try:
        while data := reader.read(BLOB_PIECE):
            session.execute(insert(IngestBlobChunk).values(ingest_file_pk=ingest.id, seq=seq, data=data))
            digest.update(data)
            size += len(data)
            seq += 1
            if seq % _PIECES_PER_COMMIT == 0:
                session.commit()
        session.execute(
            update(IngestFile)
            .where(IngestFile.id == ingest.id)
            .values(sha256=digest.hexdigest(), size_bytes=size)
        )
        session.commit()
    except BaseException as exc:
        code = exc.code if isinstance(exc, service.DeliveryError) else "upload_interrupted"
        _mark_failed(session, ingest.id, code, f"{type(exc).__name__}: {exc}")
        if isinstance(exc, service.DeliveryError):
            exc.details.setdefault("ingest_id", ingest.id)
        raise
    return ingest


def enqueue_upload(
    session: Session,
    settings: Settings,
    source: DeliverySource,
    stream: IO[bytes] | Iterable[str],
    *,
    name: str,
    created_by: int | None,
    log_format: str | None = None,
) -> IngestFile:
    """Store the upload and enqueue it: the ``queued`` IngestFile (202). Same refusals as
    :func:`ingest.ingest_log` before anything is stored; ``upload_too_large`` and ``upload_interrupted``
    while receiving (the ingest is ``failed``, nothing kept); 503 ``ingest_queue_unavailable`` when
    JetStream cannot take the message (``failed`` likewise: the client may send it again)."""
    ingest = store_upload(
        session, settings, source, stream, name=name, created_by=created_by, log_format=log_format
    )
    try:
        publish(settings, ingest.id, partition_of(source.source_id, settings.ingest_partitions))
    except Exception as exc:  # nats raises connection, timeout and API errors of its own
        _mark_failed(session, ingest.id, "ingest_queue_unavailable", f"{type(exc).__name__}: {exc}")
        raise service.DeliveryError(
            "the ingest queue is unavailable; send the log again later",
            code="ingest_queue_unavailable",
            status=503,
            ingest_id=ingest.id,
        ) from exc
    session.refresh(ingest)
    return ingest


class _LinesReader:
    def __init__(self, lines: Any) -> None:
        self._lines = lines

    def read(self, size: int = -1) -> bytes:
        out = bytearray()
        for line in self._lines:
            out += line.encode("utf-8", "surrogatepass")
            if len(out) >= size:
                break
        return bytes(out)


# --------------------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------------------


def _claim(session: Session, settings: Settings, ingest_pk: int, token: str) -> str | None:
    """Take the row for this run (``token``), unless a live run holds it; None then."""
    stale = utcnow() - timedelta(seconds=settings.ingest_ack_wait_seconds)
    taken = session.execute(
        update(IngestFile)
        .where(
            IngestFile.id == ingest_pk,
            IngestFile.state.in_((IngestState.queued, IngestState.processing)),
            IngestFile.sha256.is_not(None),  # stored whole
            or_(
                IngestFile.claim.is_(None), IngestFile.heartbeat_at.is_(None), IngestFile.heartbeat_at < stale
            ),
        )
        .values(
            claim=token, heartbeat_at=utcnow(), state=IngestState.processing, attempts=IngestFile.attempts + 1
        )
    )
    session.commit()
    return token if taken.rowcount == 1 else None  # type: ignore[attr-defined]


def touch(engine: Engine, ingest_pk: int, token: str) -> None:
    """The run holding ``token`` is alive (between chunk commits, which also say so)."""
    with engine.begin() as connection:
        connection.execute(
            update(IngestFile)
            .where(IngestFile.id == ingest_pk, IngestFile.claim == token)
            .values(heartbeat_at=utcnow())
        )


def message_ingest(data: bytes) -> int:
    return int(json.loads(data)["ingest_id"])


def process_message(
    settings: Settings,
    engine: Engine,
    data: bytes,
    token: str | None = None,
) -> str:
    """Run the ingest a message names, as the run ``token`` (default a fresh one). ``"ack"`` when its
    row is final (now or before), ``"nak"`` when a live run of another worker holds it (try later),
    ``"leave"`` when this run lost its claim (the run that took over acknowledges)."""
    ingest_pk = message_ingest(data)
    token = token or secrets.token_hex(16)
    with Session(engine, expire_on_commit=False) as session:
        row = session.get(IngestFile, ingest_pk)
        if row is None:
            return "ack"
        if row.state in FINAL_STATES:
            _drop_blob(session, ingest_pk)  # a run that finished but died before deleting it
            session.commit()
            return "ack"
        claim = _claim(session, settings, ingest_pk, token)
        if claim is None:
            return "nak"
        session.refresh(row)
        if row.attempts > MAX_ATTEMPTS:
            _mark_failed(
                session, ingest_pk, "ingest_attempts_exhausted", f"{MAX_ATTEMPTS} runs ended early", claim
            )
            return "ack"
        source = session.get(DeliverySource, row.source_pk)
        assert source is not None
        try:
            ingest_log(
                session,
                settings,
                source,
                BlobReader(engine, ingest_pk),
                name=row.name,
                created_by=row.created_by,
                log_format=row.log_format,
                queued=row,
            )
        except ClaimLost:
            return "leave"
        except (service.DeliveryError, IngestLimitError) as exc:
            session.rollback()
            log.info("ingest %s: %s", ingest_pk, exc)
            # refusals before the run started (e.g. the source was suspended since) leave it running
            _mark_failed(session, ingest_pk, getattr(exc, "code", "ingest_failed"), str(exc), claim)
        session.rollback()
        _drop_blob(session, ingest_pk)
        session.commit()
        return "ack"


def sweep(settings: Settings, engine: Engine) -> list[tuple[int, int]]:
    """Fail the stale uploads that never completed; the (ingest, partition) of stale ones never run.

    Publishing one of those again is safe even when its first message is only waiting behind a long
    backlog: whichever message comes second finds the row final and is acknowledged without work.
    """
    cutoff = utcnow() - timedelta(seconds=STALE_QUEUED_SECONDS)
    stale = (IngestFile.state == IngestState.queued, IngestFile.created_at < cutoff)
    with Session(engine, expire_on_commit=False) as session:
        broken = session.scalars(select(IngestFile.id).where(*stale, IngestFile.sha256.is_(None))).all()
        for ingest_pk in broken:
            _mark_failed(session, ingest_pk, "upload_interrupted", "the upload never completed")
        unsent = session.execute(
            select(IngestFile.id, DeliverySource.source_id)
            .join(DeliverySource, DeliverySource.id == IngestFile.source_pk)
            .where(*stale, IngestFile.sha256.is_not(None), IngestFile.attempts == 0)
        ).all()
    return [(pk, partition_of(source_id, settings.ingest_partitions)) for pk, source_id in unsent]


async def _sweep(js: JetStreamContext, settings: Settings, engine: Engine) -> None:
    for ingest_pk, partition in await asyncio.to_thread(sweep, settings, engine):
        log.warning("ingest %s was stored but never published: publishing it", ingest_pk)
        await js.publish(
            subject_of(partition),
            json.dumps({"ingest_id": ingest_pk}).encode(),
            stream=settings.ingest_stream,
            headers={"Nats-Msg-Id": f"ingest-{ingest_pk}"},
        )


async def _subscription(js: JetStreamContext, settings: Settings, partition: int) -> Any:
    durable = f"ingest-{partition}"
    try:
        await js.consumer_info(settings.ingest_stream, durable)
    except NotFoundError:
        await js.add_consumer(
            settings.ingest_stream,
            ConsumerConfig(
                durable_name=durable,
                filter_subject=subject_of(partition),
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                max_ack_pending=1,  # one message of the partition in flight: a source's order
                ack_wait=settings.ingest_ack_wait_seconds,
                max_deliver=-1,  # MAX_ATTEMPTS decides, on the row
            ),
        )
    return await js.pull_subscribe_bind(durable=durable, stream=settings.ingest_stream)


async def _work(
    settings: Settings,
    partitions: list[int],
    stop: threading.Event,
    idle_exit: float | None,
    on_ready: Callable[[], None] | None,
) -> int:
    engine = make_engine(settings.resolved_database_url)
    nc = await nats.connect(
        servers=_servers(settings), name=f"edgeledger-ingest-worker-{os.getpid()}", error_cb=_log_error
    )
    processed = 0
    try:
        js = nc.jetstream(timeout=10)
        await ensure_stream(js, settings)
        subs = {p: await _subscription(js, settings, p) for p in partitions}
        if on_ready is not None:
            on_ready()
        turn = 0
        idle_since = time.monotonic()
        swept: float | None = None
        while not stop.is_set():
            if swept is None or time.monotonic() - swept > SWEEP_SECONDS:
                swept = time.monotonic()
                try:
                    await _sweep(js, settings, engine)
                except Exception:  # the database or NATS is away: the next sweep tries again
                    log.exception("sweeping stale queued ingests")
            turn += 1
            msg = await _next_message(js, settings, subs, turn)
            if msg is None:
                if idle_exit is not None and time.monotonic() - idle_since > idle_exit:
                    break
                await asyncio.sleep(POLL_SECONDS)
                continue

            token = secrets.token_hex(16)
            beat = asyncio.create_task(_heartbeat(settings, engine, msg, token))
            try:
                outcome = await asyncio.to_thread(process_message, settings, engine, msg.data, token)
            except Exception:  # the database went away, a bug: the row says how far it got; try later
                log.exception("ingest message %r", msg.data[:100])
                outcome = "nak"
            finally:
                beat.cancel()
            if outcome == "ack":
                await msg.ack_sync(timeout=10)
                processed += 1
            elif outcome == "nak":
                await msg.nak(delay=settings.ingest_ack_wait_seconds / 2)
            idle_since = time.monotonic()
    finally:
        await nc.close()
        engine.dispose()
    return processed


async def _heartbeat(settings: Settings, engine: Engine, msg: Any, token: str) -> None:
    """While a file runs: every third of the ack wait, tell JetStream (in-progress ack) and the row
    (``heartbeat_at``) that this run is alive, also while a resumed run re-reads the lines it stored
    before (no chunk commits then)."""
    ingest_pk = message_ingest(msg.data)
    while True:
        await asyncio.sleep(settings.ingest_ack_wait_seconds / 3)
        try:
            await msg.in_progress()
            await asyncio.to_thread(touch, engine, ingest_pk, token)
        except Exception as exc:  # a missed beat only lets another worker take over: logged, not fatal
            log.warning("ingest %s heartbeat: %s", ingest_pk, exc)


async def _next_message(js: JetStreamContext, settings: Settings, subs: dict[int, Any], turn: int) -> Any:
    """One message of one of the partitions, or None when none has work for this worker now.

    The consumers' counters pick where to fetch (a fetch on an empty partition would wait its whole
    timeout): first partitions with undelivered messages and none in flight (a fetch there returns at
    once unless another worker was quicker), then partitions with a message in flight, which may be
    waiting for its redelivery (a short fetch; it returns nothing while a live worker holds it). The
    starting partition rotates, so no partition waits behind busier ones.
    """
    order = sorted(subs, key=lambda p: (p - turn) % len(subs))
    fresh, in_flight = [], []
    for p in order:
        info = await js.consumer_info(settings.ingest_stream, f"ingest-{p}")
        if info.num_pending and not info.num_ack_pending:
            fresh.append(p)
        elif info.num_ack_pending:
            in_flight.append(p)
    for partitions, timeout in ((fresh, 1.0), (in_flight, 0.05)):
        for p in partitions:
            try:
                return (await subs[p].fetch(1, timeout=timeout))[0]
            except (TimeoutError, nats.errors.TimeoutError):
                continue
    return None


def run_worker(
    settings: Settings,
    partitions: list[int] | None = None,
    *,
    stop: threading.Event | None = None,
    idle_exit: float | None = None,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Consume ``partitions`` (default all) until ``stop`` is set (or idle for ``idle_exit`` seconds);
    one file at a time per process. Returns the messages acknowledged. Any number of workers may take
    the same partitions: each partition still runs one file at a time (``max_ack_pending=1``)."""
    chosen = list(range(settings.ingest_partitions)) if partitions is None else partitions
    if not chosen or any(not 0 <= p < settings.ingest_partitions for p in chosen):
        raise ValueError(f"partitions must be within 0..{settings.ingest_partitions - 1}")
    return asyncio.run(_work(settings, chosen, stop or threading.Event(), idle_exit, on_ready))
