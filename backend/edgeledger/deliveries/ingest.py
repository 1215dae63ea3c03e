"""Delivery log ingestion: parse -> normalise -> dedupe -> leaf -> store (docs/ingestion.md).

:func:`ingest_log` streams one log file (plain or gzip, any format of :mod:`parsers`) into the database:
every physical line becomes a :class:`DeliveryRecordRow` (with its Merkle leaf), a
:class:`QuarantinedLineRow`, a counted duplicate of an already stored request, or a skipped header /
blank line. Records are written in chunks (:data:`CHUNK_RECORDS` records and quarantined lines, or fewer
once the lines read take :data:`CHUNK_TEXT_BYTES`) with bulk Core inserts, one transaction per chunk that
also moves the :class:`IngestFile` counters, so a crash leaves consistent counts and running the file
again completes it (what was stored counts as duplicates).

An upload that breaks one of the ``INGEST_MAX_*`` limits (:mod:`limits`: decompressed bytes, compression
ratio, lines, line length, quarantined lines) is refused (413 or 422) as soon as the limit trips. What it
had committed is kept whole, not taken back: the chunk being read is dropped (rolled back), the chunks
committed before stay with the ``failed`` IngestFile, whose counts are exactly theirs, as after a crash.
Taking them back could not be done safely: a stored chunk's records may already be in a batch that closed
and was anchored since. The quarantine limit is checked before each chunk commits, so a refused upload
leaves at most ``INGEST_MAX_QUARANTINED_LINES`` quarantined rows.

Queued ingestion (:mod:`ingest_queue`) runs the same pipeline on a stored upload, at least once per
message: each chunk commit also checks the run's claim on the row and moves the line watermark, and a
run that takes over resumes after it (:func:`_resume`), so each chunk is still stored exactly once.

Memory stays flat as the file grows, whatever its lines are: the file is read in 64 KiB pieces, only the
current chunk's records and quarantined lines are held, raw text only for the lines that may need it (the
chunk's record lines, which an in-file repeat quarantines when the chunk is written; quarantined lines
carry theirs, masked and cut to 2,000 characters), nothing for comment or blank lines; and duplicates are
found in the database (the unique index on ``(source_pk, request_id)``), not in an in-memory set of every
request id seen.
"""

from __future__ import annotations

import io
import json
import os
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from edgeledger.compliance.service import edge_zone, storage_refusal
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries import service
from edgeledger.deliveries.asset_match import CACHE_LIMIT, asset_candidates
from edgeledger.deliveries.asset_match import AssetResolver as _AssetResolver
from edgeledger.deliveries.limits import IngestLimitError, UploadLimits, UploadLines
from edgeledger.deliveries.models import (
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    IngestFile,
    IngestState,
    QuarantinedLineRow,
    SourceStatus,
)
from edgeledger.deliveries.parsers import FORMATS, ParseStats, SourceSite, parse_log
from edgeledger.deliveries.pgcopy import copy_text as _copy_text
from edgeledger.deliveries.records import (
    AmbiguousLogFormatError,
    CacheResult,
    DeliveryRecord,
    LogFormatError,
    QuarantinedLine,
)
from edgeledger.deliveries.regions import region_of
from edgeledger.ledger.delivery_leaf import LEAF_STRUCT
from edgeledger.ledger.hashing import bytes32, hex32, keccak_hasher
from edgeledger.ledger.ids import batch_id_for, country_bytes, edge_location_bytes, merchant_id_for

__all__ = [
    "CHUNK_RECORDS",
    "CHUNK_TEXT_BYTES",
    "DUPLICATE_REQUEST_ID",
    "ClaimLost",
    "IngestFileRead",
    "QuarantinedLineRead",
    "asset_candidates",
    "ingest_log",
]

#: Records (plus quarantined lines) written per transaction.
CHUNK_RECORDS = 10_000
#: Quarantine reasons added by ingestion (the parsers' reasons are in ``parsers.Reason``).
DUPLICATE_REQUEST_ID = "duplicate_request_id"  # the request id appeared earlier in the same file
REQUEST_ID_TOO_LONG = "request_id_too_long"  # over the 128 characters the records table keeps
HOST_TOO_LONG = "host_too_long"  # over the 255 characters the records table keeps
RESIDENCY = "residency"  # the edge location's data zone may not be stored here (no raw text is kept)
NUL_CHARACTER = "nul_character"  # a NUL in the request id, host or URI (PostgreSQL text cannot hold it)
#: Memory the lines read since the last chunk take as strings (all lines, skipped ones too; see
#: ``UploadLines.held``) after which a chunk is written however few records it holds: with CHUNK_RECORDS
#: it bounds what a chunk holds, whatever the lines are (docs/ingestion.md, "Upload limits").
CHUNK_TEXT_BYTES = 8 << 20
_IN_CHUNK = 2_000  # request ids per IN (...) lookup
_CACHE_LIMIT = CACHE_LIMIT  # entries of each per-run cache (host, edge, country ...) before it is cleared
_RETRIES = 3  # chunk transactions retried after a unique-constraint race with a concurrent ingest
#: SQLite page cache (KiB) while a chunk's records are inserted, instead of the connection's own (2 MiB
#: by default). A chunk's random request ids touch most leaf pages of the ``(source_pk, request_id)``
#: index (about 30 MiB of pages at a million records); in 2 MiB those pages are spilled to the WAL and
#: read back during the insert. Set for the insert only and put back before the chunk commits: memory
#: only, no change to what is written or when it is durable (docs/ingestion.md, "Benchmark").
_SQLITE_CHUNK_CACHE_KIB = 32 << 10

_RECORDS = DeliveryRecordRow.__table__
_QUARANTINE = QuarantinedLineRow.__table__
_BATCHES = DeliveryBatch.__table__
# Column order of the record tuples built by _Ingest._rows.
_RECORD_COLUMNS = (
    "source_pk",
    "batch_pk",
    "ingest_file_pk",
    "line_number",
    "request_id",
    "timestamp_ms",
    "edge_location",
    "country",
    "region",
    "host",
    "uri",
    "asset_id",
    "merchant_id",
    "bytes_delivered",
    "status",
    "cache_result",
    "pseudonym_key_id",
    "client_pseudonym",
    "salt",
    "client_commitment",
    "leaf",
    "excluded",
)
assert set(_RECORD_COLUMNS) == {c.name for c in _RECORDS.columns} - {"id", "redacted_at"}  # NULL at ingest
# Table and column names are the module's own constants (no outside text reaches this SQL).
_COLUMN_LIST = ", ".join(_RECORD_COLUMNS)
_CACHE_CODES = {member: int(member) for member in CacheResult}  # IntEnum -> plain int, no int() call
_LOOKUP = (
    f"SELECT request_id, ingest_file_pk, line_number FROM {_RECORDS.name} "  # noqa: S608
    "WHERE source_pk = {mark} AND request_id IN ({marks})"
)
_COPY_PG = f"COPY {_RECORDS.name} ({_COLUMN_LIST}) FROM STDIN"
_INSERT_QMARK = (
    f"INSERT INTO {_RECORDS.name} ({_COLUMN_LIST}) VALUES ({', '.join('?' * len(_RECORD_COLUMNS))})"  # noqa: S608
)


# --------------------------------------------------------------------------------------------------------
# API schemas
# --------------------------------------------------------------------------------------------------------


class IngestFileRead(BaseModel):
    """The report of one ingested file. ``lines = records_new + duplicates + quarantined + skipped``;
    ``duplicates_in_file`` are quarantined lines (reason ``duplicate_request_id``), counted in both."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    source_pk: int
    name: str
    log_format: str | None
    sha256: str | None
    size_bytes: int
    state: str
    pseudonym_key_id: str
    lines: int
    records_new: int
    duplicates: int
    duplicates_in_file: int
    late_records: int
    quarantined: int
    skipped: int
    error_code: str | None
    error_message: str | None
    created_by: int | None
    created_at: datetime
    finished_at: datetime | None
    bytes_read: int = 0  # of size_bytes, while a queued ingest runs (progress)


class QuarantinedLineRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    line_number: int
    reason: str
    detail: str
    raw: str


# --------------------------------------------------------------------------------------------------------
# Chunks
# --------------------------------------------------------------------------------------------------------


@dataclass
class _Counts:
    lines: int = 0
    records_new: int = 0
    duplicates: int = 0
    duplicates_in_file: int = 0
    late_records: int = 0
    quarantined: int = 0

    def add(self, other: _Counts) -> None:
        self.lines = max(self.lines, other.lines)
        self.records_new += other.records_new
        self.duplicates += other.duplicates
        self.duplicates_in_file += other.duplicates_in_file
        self.late_records += other.late_records
        self.quarantined += other.quarantined


@dataclass
class _Chunk:
    records: list[DeliveryRecord] = field(default_factory=list)
    quarantined: list[QuarantinedLine] = field(default_factory=list)
    raw: dict[int, str] = field(default_factory=dict)  # line -> kept raw text, for the records' lines
    junk: int = 0  # quarantined lines that count against INGEST_MAX_QUARANTINED_LINES
    last_line: int = 0


class _Ingest:
    """One ingest_log run: per-run caches and the chunk writer."""

    def __init__(
        self, session: Session, settings: Settings, source: DeliverySource, ingest: IngestFile
    ) -> None:
        self.session = session
        self.source_pk = source.id
        self.source_id = bytes32(source.source_id)
        self.ingest = ingest
        self.ingest_pk = ingest.id
        self.claim = ingest.claim  # None inline; a queued run's token: every commit checks it still holds
        self.key_id = ingest.pseudonym_key_id
        self.period_seconds = settings.delivery_period_seconds
        self.totals = _Counts()
        self.log_format: str | None = ingest.log_format
        self.assets = _AssetResolver(session)
        self.merchants: dict[str, bytes] = {}
        self.edges: dict[str, bytes] = {}
        self.countries: dict[str, tuple[bytes, str]] = {}
        self._analyze_at = CHUNK_RECORDS
        self.limits = UploadLimits.from_settings(settings)
        self.max_junk = self.limits.quarantined
        self.junk = 0  # quarantined lines of the stored chunks that count against the limit
        self.lines: UploadLines | None = None

    def too_much_junk(self, line: int) -> IngestLimitError:
        """INGEST_MAX_QUARANTINED_LINES broken at ``line``."""
        assert self.lines is not None
        limit = self.max_junk
        return self.lines.refused(
            "upload_too_many_quarantined",
            422,
            "INGEST_MAX_QUARANTINED_LINES",
            limit,
            f"more than {limit:,} lines would be quarantined",
            line=line,
        )

    def _too_much_junk(self, chunk: _Chunk, repeated: dict[int, str]) -> None:
        """The chunk's in-file repeats take the quarantine over the limit: refuse at the crossing line."""
        junk = sorted([q.line_number for q in chunk.quarantined if q.reason != RESIDENCY] + list(repeated))
        raise self.too_much_junk(junk[max(0, self.max_junk - self.junk)])

    # --- the transaction of one chunk ---------------------------------------------------------------

    def write(self, chunk: _Chunk) -> None:
        """Store one chunk in one transaction (retried from scratch after a concurrent-insert race)."""
        for attempt in range(_RETRIES):
            try:
                counts = self._write(chunk)
                self.session.commit()
            except IntegrityError:
                self.session.rollback()
                if attempt == _RETRIES - 1:
                    raise
                continue
            self.totals.add(counts)
            self.junk += chunk.junk + counts.duplicates_in_file
            if self.totals.records_new >= self._analyze_at:
                self._analyze()
            return

    def _analyze(self) -> None:
        """PostgreSQL: refresh the records table's statistics while a big file loads.

        Until autovacuum gets to it, the planner believes the table is as small as when the load began
        and answers the dedupe lookup by reading every row of the source and filtering (EXPLAIN: index
        condition on ``source_pk`` only); measured 26 us per line at 300,000 lines, growing with the
        table. Re-analysed after 10k, 40k, 160k, ... new records (about 0.1 s each).
        """
        self._analyze_at *= 4
        bind = self.session.get_bind()
        if bind.dialect.name != "postgresql":
            return
        with bind.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.exec_driver_sql(f"ANALYZE {_RECORDS.name}")

    def _write(self, chunk: _Chunk) -> _Counts:
        session = self.session
        counts = _Counts(lines=chunk.last_line)
        # Write first: on SQLite this takes the database write lock before anything is read, so a batch
        # close cannot commit between our state check and our insert (PostgreSQL: the FOR UPDATE below).
        # The row lock it takes also orders this chunk with any other run of the same queued ingest: a
        # run whose claim was taken over writes nothing more (ClaimLost).
        held = session.execute(
            update(IngestFile)
            .where(IngestFile.id == self.ingest_pk, IngestFile.claim == self.claim)
            .values(
                log_format=self.log_format,
                bytes_read=self.lines.received if self.lines is not None else 0,
                heartbeat_at=utcnow(),
            )
        )
        if held.rowcount != 1:  # type: ignore[attr-defined]
            raise ClaimLost(f"ingest {self.ingest_pk}: another worker run took it over")
        stored = self._stored(chunk.records)
        quarantined = list(chunk.quarantined)
        new: list[DeliveryRecord] = []
        first_line: dict[str, int] = {}
        repeated: dict[int, str] = {}  # line -> request id of the in-file repeats (fraud signals use it)
        for record in chunk.records:
            rid = record.request_id
            earlier = stored.get(rid)
            if earlier is None:
                earlier_here = first_line.get(rid)
                if earlier_here is None:
                    first_line[rid] = record.line_number
                    new.append(record)
                    continue
                earlier = (self.ingest_pk, earlier_here)
            if earlier[0] != self.ingest_pk:
                counts.duplicates += 1  # stored by an earlier ingest of this source: nothing to do
                continue
            counts.duplicates_in_file += 1
            repeated[record.line_number] = rid
            quarantined.append(
                QuarantinedLine(
                    self.ingest.name,
                    record.line_number,
                    DUPLICATE_REQUEST_ID,
                    chunk.raw.get(record.line_number, ""),
                    f"request id already on line {earlier[1]}",
                )
            )
        if self.junk + chunk.junk + counts.duplicates_in_file > self.max_junk:
            self._too_much_junk(chunk, repeated)
        rows = self._rows(new, counts)
        if rows:
            self._insert_records(rows)
        if quarantined:
            session.execute(
                insert(_QUARANTINE),
                [
                    {
                        "ingest_file_pk": self.ingest_pk,
                        "line_number": q.line_number,
                        "reason": q.reason,
                        # PostgreSQL text cannot hold NUL: shown as U+FFFD, like undecodable bytes
                        "detail": q.detail.replace("\0", "\ufffd"),
                        "raw": q.raw.replace("\0", "\ufffd"),
                        "request_id": repeated.get(q.line_number),
                    }
                    for q in quarantined
                ],
            )
        counts.records_new = len(rows)
        counts.quarantined = len(quarantined)
        totals = _Counts(**vars(self.totals))
        totals.add(counts)
        session.execute(
            update(IngestFile)
            .where(IngestFile.id == self.ingest_pk)
            .values(
                lines=totals.lines,
                records_new=totals.records_new,
                duplicates=totals.duplicates,
                duplicates_in_file=totals.duplicates_in_file,
                late_records=totals.late_records,
                quarantined=totals.quarantined,
                # not known exactly until the end: lines read so far that became nothing else
                skipped=totals.lines - totals.records_new - totals.duplicates - totals.quarantined,
            )
        )
        return counts

    def _insert_records(self, rows: list[tuple[Any, ...]]) -> None:
        """Bulk insert at the driver level, in the chunk's transaction.

        Profiled: SQLAlchemy's per-row parameter processing of an ``insert()`` executemany (dict per row,
        a bind processor per LargeBinary value) cost as much as parsing the line; sqlite3's
        ``executemany`` takes the tuples as they are. PostgreSQL gets one ``COPY ... FROM STDIN`` per
        chunk: 1,000-row ``INSERT ... VALUES`` statements (psycopg2 ``execute_values``) left the server
        parsing and planning 22,000 parameters per statement, several times slower end to end. SQLite's
        insert runs with a bigger page cache (:data:`_SQLITE_CHUNK_CACHE_KIB`).
        """
        connection = self.session.connection()
        if connection.dialect.name == "postgresql":
            dbapi = connection.connection.dbapi_connection
            cursor = dbapi.cursor()  # type: ignore[union-attr]
            try:
                cursor.copy_expert(_COPY_PG, io.StringIO(_copy_text(rows)))
            except connection.dialect.loaded_dbapi.Error as exc:
                # Raised below SQLAlchemy, which therefore neither wrapped it nor noticed a lost
                # connection: do both as it would. The API then answers a lost connection 503
                # database_unavailable, and the rollback that follows does not fail on the dead
                # connection (it was an InterfaceError, answered 500).
                lost = connection.dialect.is_disconnect(exc, dbapi, cursor)
                if lost:
                    connection.invalidate(exc)
                raise DBAPIError.instance(
                    "COPY delivery_records FROM STDIN",
                    None,
                    exc,
                    connection.dialect.loaded_dbapi.Error,
                    connection_invalidated=lost,
                    dialect=connection.dialect,
                ) from exc
            finally:
                if not cursor.closed:
                    cursor.close()
        else:
            own = connection.exec_driver_sql("PRAGMA cache_size").scalar()
            connection.exec_driver_sql(f"PRAGMA cache_size=-{_SQLITE_CHUNK_CACHE_KIB}")
            try:
                connection.exec_driver_sql(_INSERT_QMARK, rows)
            finally:
                connection.exec_driver_sql(f"PRAGMA cache_size={int(own)}")  # type: ignore[arg-type]

    def _stored(self, records: list[DeliveryRecord]) -> dict[str, tuple[int, int]]:
        """request id -> (ingest file, line) of the chunk's request ids this source already has.

        Driver-level SQL: rendering a 2,000-value ``in_()`` through SQLAlchemy cost more than the query.
        """
        ids = list({r.request_id for r in records})
        found: dict[str, tuple[int, int]] = {}
        connection = self.session.connection()
        mark = "%s" if connection.dialect.paramstyle in ("format", "pyformat") else "?"
        for start in range(0, len(ids), _IN_CHUNK):
            part = ids[start : start + _IN_CHUNK]
            query = _LOOKUP.format(mark=mark, marks=", ".join([mark] * len(part)))
            for rid, file_pk, line in connection.exec_driver_sql(query, (self.source_pk, *part)):
                found[rid] = (file_pk, line)
        return found

    # --- rows ---------------------------------------------------------------------------------------

    def _rows(self, records: list[DeliveryRecord], counts: _Counts) -> list[tuple[Any, ...]]:
        if not records:
            return []
        salts = os.urandom(32 * len(records))  # one system call for the chunk's salts
        source_pk, ingest_pk, key_id, source_id = self.source_pk, self.ingest_pk, self.key_id, self.source_id
        period_seconds = self.period_seconds
        batches: dict[int, tuple[int, bool]] = {}
        merchants, edges, countries, assets = self.merchants, self.edges, self.countries, self.assets
        pack = LEAF_STRUCT.pack
        k = keccak_hasher  # the C hash object itself: no wrapper call per hash
        cache_codes = _CACHE_CODES
        rows = []
        late = 0
        offset = 0
        for r in records:
            start = r.timestamp_ms // 1000 // period_seconds * period_seconds
            slot = batches.get(start)
            if slot is None:
                slot = batches[start] = self._batch_for(start, start + period_seconds)
            if slot[1]:
                late += 1
            host = r.host
            merchant = merchants.get(host)
            if merchant is None:  # these caches are bounded as the resolver's are (flat memory)
                if len(merchants) >= _CACHE_LIMIT:
                    merchants.clear()
                merchant = merchants[host] = merchant_id_for(host)
            edge = edges.get(r.edge_location)
            if edge is None:
                if len(edges) >= _CACHE_LIMIT:
                    edges.clear()
                edge = edges[r.edge_location] = edge_location_bytes(r.edge_location)
            country = countries.get(r.country)
            if country is None:
                if len(countries) >= _CACHE_LIMIT:
                    countries.clear()
                country = countries[r.country] = (country_bytes(r.country), region_of(r.country))
            asset_id = assets(host, r.uri)
            salt = salts[offset : offset + 32]
            offset += 32
            pseudonym = r.client_pseudonym
            commitment = k(salt + pseudonym).digest()
            cache = cache_codes[r.cache_result]
            # The leaf over exactly what service.leaf_values_of reads back from the stored row.
            encoded = pack(
                source_id,
                k(r.request_id.encode("utf-8")).digest(),
                r.timestamp_ms,
                edge,
                country[0],
                asset_id.to_bytes(32),
                merchant,
                r.bytes_delivered,
                r.status,
                cache,
                commitment,
            )
            rows.append(
                (
                    source_pk,
                    slot[0],
                    ingest_pk,
                    r.line_number,
                    r.request_id,
                    r.timestamp_ms,
                    r.edge_location,
                    r.country,
                    country[1],
                    host,
                    r.uri,
                    asset_id,
                    merchant,
                    r.bytes_delivered,
                    r.status,
                    cache,
                    key_id,
                    pseudonym,
                    salt,
                    commitment,
                    k(k(encoded).digest()).digest(),
                    False,
                )
            )
        counts.late_records = late
        return rows

    # --- batches ------------------------------------------------------------------------------------

    def _locked(self, start: int, kind: str) -> Any:
        """The newest batch of (source, period, kind), row-locked until the chunk commits."""
        c = _BATCHES.c
        return self.session.execute(
            select(c.id, c.state, c.correction_seq)
            .where(c.source_pk == self.source_pk, c.period_start == start, c.kind == kind)
            .order_by(c.correction_seq.desc())
            .limit(1)
            .with_for_update()
        ).first()

    def _batch_for(self, start: int, end: int) -> tuple[int, bool]:
        """(batch pk, late) for a record of period [start, end), inside the chunk's transaction.

        The regular batch while open (created when missing, re-opened when it closed empty); else the
        open correction batch of the period, the next correction when the latest one is no longer open.
        """
        regular = self._locked(start, BatchKind.regular)
        if regular is None:
            return self._create(start, end, BatchKind.regular, 0, None), False
        if regular.state in (BatchState.open, BatchState.empty):
            if regular.state == BatchState.empty:
                self._reopen(regular.id)
            return regular.id, False
        correction = self._locked(start, BatchKind.correction)
        if correction is not None and correction.state in (BatchState.open, BatchState.empty):
            if correction.state == BatchState.empty:
                self._reopen(correction.id)
            return correction.id, True
        seq = (correction.correction_seq if correction is not None else 0) + 1
        return self._create(start, end, BatchKind.correction, seq, regular.id), True

    def _reopen(self, batch_pk: int) -> None:
        self.session.execute(
            update(_BATCHES)
            .where(_BATCHES.c.id == batch_pk)
            .values(state=BatchState.open, closed_at=None, updated_at=utcnow())
        )

    def _create(self, start: int, end: int, kind: str, seq: int, corrects: int | None) -> int:
        now = utcnow()
        result = self.session.execute(
            insert(_BATCHES).values(
                batch_id=batch_id_for(hex32(self.source_id), start, end, kind, seq),
                source_pk=self.source_pk,
                period_start=start,
                period_end=end,
                kind=kind,
                correction_seq=seq,
                corrects_pk=corrects,
                state=BatchState.open,
                leaf_count=0,
                total_bytes=0,
                total_requests=0,
                attempts=0,
                created_at=now,
                updated_at=now,
            )
        )
        return int(result.inserted_primary_key[0])


# --------------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------------


class ClaimLost(RuntimeError):
    """A queued ingest's claim was taken over by another worker run (this one stalled): stop, write
    nothing more; the run holding the claim finishes the file."""


def _resume(run: _Ingest) -> int:
    """A queued ingest run again (crash, redelivery): the counters, quarantine budget and line watermark
    of its committed chunks. Returns the watermark: items up to that line are stored, not read again."""
    row = run.ingest
    fields = ("lines", "records_new", "duplicates", "duplicates_in_file", "late_records", "quarantined")
    run.totals = _Counts(*(getattr(row, f) for f in fields))
    junk = (QuarantinedLineRow.ingest_file_pk == row.id, QuarantinedLineRow.reason != RESIDENCY)
    run.junk = run.session.scalar(select(func.count()).where(*junk)) or 0
    return row.lines


def _too_long(record: DeliveryRecord, lines: UploadLines, name: str) -> QuarantinedLine:
    """A record the tables cannot hold as it is (never truncated silently) becomes a quarantined line."""
    raw = lines.raw_of(record.line_number)
    if len(record.request_id) > 128:
        return QuarantinedLine(name, record.line_number, REQUEST_ID_TOO_LONG, raw, "over 128 chars")
    if len(record.host) > 255:
        return QuarantinedLine(name, record.line_number, HOST_TOO_LONG, raw, "over 255 chars")
    return QuarantinedLine(name, record.line_number, NUL_CHARACTER, raw, "request id, host or URI holds NUL")


def check_ingestable(source: DeliverySource, log_format: str | None) -> None:
    """The refusals made before anything of an upload is stored, inline or queued: a suspended source
    (409 ``source_suspended``), an unknown format (422 ``bad_log_format``)."""
    if source.status == SourceStatus.suspended:
        raise service.DeliveryError(
            f"source {source.name!r} is suspended", code="source_suspended", status=409, source=source.name
        )
    if log_format is not None and log_format not in FORMATS:
        raise service.DeliveryError(
            f"log format must be one of {', '.join(FORMATS)}", code="bad_log_format", log_format=log_format
        )


def source_site(source: DeliverySource) -> SourceSite:
    """What ``source`` declared about its logs (deliveries/sources.py), as the parsers take it."""
    fields = tuple(json.loads(source.log_fields_json)) if source.log_fields_json else ()
    return SourceSite(source.site_host, source.site_edge_location, fields)


def ingest_log(
    session: Session,
    settings: Settings,
    source: DeliverySource,
    stream: IO[bytes] | Iterable[str],
    *,
    name: str,
    created_by: int | None,
    log_format: str | None = None,
    progress: Callable[[int], None] | None = None,
    queued: IngestFile | None = None,
) -> IngestFile:
    """Ingest one log file (binary file object, plain or gzip, or an iterable of text lines).

    The format is ``log_format`` if given, else the one the source declares, else detected from the
    first lines (only when exactly one format fits); the source's declared host, edge location and field
    ids go to the parser (docs/log-formats.md, "Declared or detected").

    Returns the finished :class:`IngestFile` (state ``done``). Raises :class:`service.DeliveryError`:
    ``source_suspended`` (409), ``bad_log_format`` (422) before anything is written; ``not_a_log`` and
    ``ambiguous_log_format`` (422, ``candidates`` names the formats that fit; the IngestFile is
    ``rejected``, nothing else stored) and ``log_truncated`` (422, ``failed``, the records before the
    break are kept) after; :class:`limits.IngestLimitError` (413 or 422, ``failed``,
    the chunks stored before are kept whole, the chunk being read is dropped) when the upload breaks one of
    the ``INGEST_MAX_*`` limits. ``progress`` is called with the lines read so far after every chunk.

    ``queued``: the claimed row of a queued ingest (:mod:`ingest_queue`), run instead of a new row; a run
    of it that stopped part-way resumes after the last committed chunk (:func:`_resume`).
    """
    check_ingestable(source, log_format)
    log_format = log_format or source.log_format
    site = source_site(source)
    key_id = queued.pseudonym_key_id if queued is not None else service.pseudonym_key_id()
    pseudonymiser = service.pseudonymiser_for(session, settings, key_id)
    ingest = queued or IngestFile(
        source_pk=source.id,
        name=name[:255],
        log_format=log_format,
        state=IngestState.processing,
        pseudonym_key_id=key_id,
        created_by=created_by,
    )
    session.add(ingest)
    session.commit()

    run = _Ingest(session, settings, source, ingest)
    watermark = _resume(run) if queued is not None else 0
    # Residency per line: the zone of the line's edge location must be storable in this deployment.
    refused = storage_refusal(session, settings)
    edge_refused: dict[str, bool] = {}
    lines = run.lines = UploadLines(stream, run.limits, name)
    raw, mask = lines.raw, len(lines.raw) - 1
    stats = ParseStats()
    chunk = _Chunk()
    record_class = DeliveryRecord
    chunk_size = CHUNK_RECORDS
    chunk_bytes = CHUNK_TEXT_BYTES
    pending = 0
    try:
        items = parse_log(
            iter(lines),
            pseudonymiser=pseudonymiser,
            file_name=name,
            stats=stats,
            log_format=log_format,
            site=site,
        )
        for item in (i for i in items if i.line_number > watermark) if watermark else items:
            pending += 1
            if item.__class__ is record_class:
                if (
                    len(item.request_id) <= 128  # type: ignore[union-attr]
                    and len(item.host) <= 255  # type: ignore[union-attr]
                    and "\0" not in item.uri  # type: ignore[union-attr]
                    and "\0" not in item.request_id  # type: ignore[union-attr]
                    and "\0" not in item.host  # type: ignore[union-attr]
                ):
                    edge = item.edge_location  # type: ignore[union-attr]
                    blocked = edge_refused.get(edge)
                    if blocked is None:
                        if len(edge_refused) >= _CACHE_LIMIT:
                            edge_refused.clear()
                        blocked = edge_refused[edge] = refused(edge_zone(edge))
                    if blocked:
                        detail = (
                            f"edge zone {edge_zone(edge)} may not be stored in {settings.data_storage_zone}"
                        )
                        chunk.quarantined.append(
                            QuarantinedLine(name, item.line_number, RESIDENCY, "", detail)
                        )
                    else:
                        chunk.records.append(item)  # type: ignore[arg-type]
                        chunk.raw[item.line_number] = raw[item.line_number & mask]
                else:
                    chunk.quarantined.append(_too_long(item, lines, name))  # type: ignore[arg-type]
                    chunk.junk += 1
            else:
                chunk.quarantined.append(item)  # type: ignore[arg-type]
                chunk.junk += 1
                if run.junk + chunk.junk > run.max_junk:
                    raise run.too_much_junk(item.line_number)
            if pending >= chunk_size or lines.held >= chunk_bytes:
                pending = lines.held = 0
                chunk.last_line = item.line_number
                run.log_format = run.log_format or next(iter(stats.by_format), None)
                run.write(chunk)
                chunk = _Chunk()
                if progress is not None:
                    progress(item.line_number)
        broken: LogFormatError | None = None
    except LogFormatError as exc:
        session.rollback()
        broken = exc
    except BaseException as exc:
        _fail(run, stats, exc)
        raise
    truncated = broken is not None and isinstance(broken.__cause__, EOFError | OSError | zlib.error)
    try:
        if broken is None or truncated:  # a gzip cut short keeps the records before the break
            _write_rest(run, chunk, lines, stats)
    except BaseException as exc:
        _fail(run, stats, exc)
        raise
    lines.close()
    if broken is not None:
        details: dict[str, Any] = {}
        if truncated:
            code = "log_truncated"
        elif isinstance(broken, AmbiguousLogFormatError):
            code, details["candidates"] = "ambiguous_log_format", list(broken.candidates)
        else:
            code = "not_a_log"
        _finish(run, lines, stats, error=(code, broken.reason))
        raise service.DeliveryError(
            f"{name}: {broken.reason}",
            code=code,
            status=422,
            ingest_id=ingest.id,
            lines=run.totals.lines,
            **details,
        ) from broken
    _finish(run, lines, stats, error=None)
    if progress is not None:
        progress(stats.lines)
    return ingest


def _fail(run: _Ingest, stats: ParseStats, exc: BaseException) -> None:
    """The ingest stops on ``exc``: the chunk being read is dropped, the stored ones stay (``failed``)."""
    assert run.lines is not None
    run.session.rollback()
    run.lines.close()
    if isinstance(exc, service.DeliveryError):
        exc.details.setdefault("ingest_id", run.ingest_pk)
        error = (exc.code, exc.message[:500])
    else:
        error = ("ingest_interrupted", f"{type(exc).__name__}: {exc}"[:500])
    _finish(run, run.lines, stats, error=error)


def _write_rest(run: _Ingest, chunk: _Chunk, lines: UploadLines, stats: ParseStats) -> None:
    run.log_format = run.log_format or next(iter(stats.by_format), None)
    chunk.last_line = max(stats.lines, chunk.last_line, *(i.line_number for i in chunk.records[-1:]))
    run.write(chunk)


def _finish(run: _Ingest, lines: UploadLines, stats: ParseStats, *, error: tuple[str, str] | None) -> None:
    """Final counters, digest and state of the IngestFile (its own transaction)."""
    sha, size = lines.digest()
    totals = run.totals
    values: dict[str, Any] = {
        "sha256": sha,
        "size_bytes": size,
        "log_format": run.log_format or next(iter(stats.by_format), None),
        "finished_at": utcnow(),
    }
    if error is None:
        values.update(state=IngestState.done, lines=stats.lines, skipped=stats.skipped)
    elif error[0] in ("not_a_log", "ambiguous_log_format"):
        values.update(
            state=IngestState.rejected, error_code=error[0], error_message=error[1], lines=0, skipped=0
        )
    else:
        values.update(state=IngestState.failed, error_code=error[0], error_message=error[1])
        values["skipped"] = totals.lines - totals.records_new - totals.duplicates - totals.quarantined
        values["lines"] = totals.lines
    row = (IngestFile.id == run.ingest_pk, IngestFile.claim == run.claim)  # not over a run that took over
    run.session.execute(update(IngestFile).where(*row).values(**values))
    run.session.commit()
    run.session.refresh(run.ingest)


# --------------------------------------------------------------------------------------------------------
# API helpers (the endpoints in views.py stay thin)
# --------------------------------------------------------------------------------------------------------
