"""Delivery log ingestion (deliveries.ingest) on SQLite and PostgreSQL, its API and its CLI."""

from __future__ import annotations

import gzip
import io
import json
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, LargeBinary, String, Text, event, func, select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.assets.models import Asset
from edgeledger.auth.models import Role
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings
from edgeledger.db import Base
from edgeledger.deliveries import ingest as ingestion
from edgeledger.deliveries import service
from edgeledger.deliveries.ingest import ingest_log
from edgeledger.deliveries.models import (
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    IngestFile,
    IngestState,
    QuarantinedLineRow,
)
from edgeledger.deliveries.parsers import ParseStats, parse_log
from edgeledger.deliveries.records import Pseudonymiser, QuarantinedLine
from edgeledger.deliveries.regions import REGIONS, UNKNOWN_REGION, region_of
from edgeledger.ipfs.cid import cid_of_bytes
from edgeledger.ledger.delivery_leaf import leaf_hash
from edgeledger.ledger.hashing import hex32
from edgeledger.ledger.ids import batch_id_for, client_commitment, merchant_id_for, source_id_for
from edgeledger.territories import TERRITORY_CODES
from tests.backend.support.stack import Caller, make_caller

SAMPLES = Path(__file__).parent / "samples" / "logs"
LOGS = (
    "cloudfront.log",
    "cloudfront.log.gz",
    "cloudflare.ndjson",
    "cloudflare.ndjson.gz",
    "edgeledger.jsonl",
    "cloudfront_broken.log",
    "cloudflare_broken.ndjson",
    "edgeledger_broken.jsonl",
)
DAY = 1_714_521_600  # 2024-05-01T00:00:00Z


# --------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------


@pytest.fixture
def db_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=database_url, pseudonym_master_key="22" * 32)


def make_source(session: Session, name: str = "cdn-a", **values: Any) -> DeliverySource:
    source = DeliverySource(
        source_id=source_id_for(name),
        name=name,
        kind="cdn_provider",
        provider="cloudfront",
        operator="0x" + "11" * 20,
        signer="0x" + "22" * 20,
        regions_bitmap="0x0",
        jurisdiction="DE",
        status=values.pop("status", "active"),
        **values,
    )
    session.add(source)
    session.commit()
    return source


@pytest.fixture
def source(db_session: Session) -> DeliverySource:
    return make_source(db_session)


def node_line(request_id: str, ts_ms: int, uri: str = "/media/a.mp4", host: str = "media.example.com") -> str:
    """One line of the edge-node JSON format."""
    return json.dumps(
        {
            "v": 1,
            "request_id": request_id,
            "ts": ts_ms,
            "edge_location": "FRA1",
            "country": "DE",
            "host": host,
            "uri": uri,
            "body_bytes": 1000,
            "status": 200,
            "cache": "HIT",
            "client_ip": "198.51.100.23",
        }
    )


def node_log(*lines: str) -> io.BytesIO:
    return io.BytesIO(("\n".join(lines) + "\n").encode())


def ingest_sample(session: Session, settings: Settings, source: DeliverySource, name: str) -> IngestFile:
    with (SAMPLES / name).open("rb") as handle:
        return ingest_log(session, settings, source, handle, name=name, created_by=None)


def parsed(name: str) -> tuple[list[Any], ParseStats]:
    """What the parser alone makes of a sample (the reference for ingestion's counts)."""
    stats = ParseStats()
    items = list(parse_log(SAMPLES / name, pseudonymiser=Pseudonymiser(b"k" * 32, "t"), stats=stats))
    return items, stats


def count(session: Session, model: Any, *where: Any) -> int:
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def check_counts(ingest: IngestFile) -> None:
    assert ingest.lines == ingest.records_new + ingest.duplicates + ingest.quarantined + ingest.skipped


# --------------------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------------------


def test_every_territory_has_a_pricing_region() -> None:
    assert set(REGIONS) == set(TERRITORY_CODES)
    assert all(region_of(code) in {"NA", "EU", "SA", "JP", "AU", "IN", "AP", "ME", "AF"} for code in REGIONS)
    assert [region_of(c) for c in ("US", "de", "IL", "BR", "JP", "NZ", "IN", "SG", "AE", "NG")] == [
        "NA",
        "EU",
        "EU",
        "SA",
        "JP",
        "AU",
        "IN",
        "AP",
        "ME",
        "AF",
    ]
    assert region_of("") == UNKNOWN_REGION == "ZZ"
    assert region_of("XX") == "ZZ"


# --------------------------------------------------------------------------------------------------------
# ingest_log on both databases
# --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOGS)
def test_every_sample_is_ingested(
    db_session: Session, db_settings: Settings, source: DeliverySource, name: str
) -> None:
    items, stats = parsed(name)
    ingest = ingest_sample(db_session, db_settings, source, name)
    assert ingest.state == IngestState.done and ingest.error_code is None
    assert ingest.lines == stats.lines and ingest.skipped == stats.skipped
    assert ingest.records_new == stats.records and ingest.quarantined == stats.quarantined
    assert ingest.duplicates == ingest.duplicates_in_file == ingest.late_records == 0
    check_counts(ingest)
    raw = (SAMPLES / name).read_bytes()
    assert ingest.size_bytes == len(raw)
    assert ingest.sha256 == __import__("hashlib").sha256(raw).hexdigest()
    assert ingest.log_format == name.split(".")[0].removesuffix("_broken").replace("edgeledger", "edgeledger")
    stored = db_session.scalars(
        select(DeliveryRecordRow).where(DeliveryRecordRow.ingest_file_pk == ingest.id)
    ).all()
    records = [i for i in items if not isinstance(i, QuarantinedLine)]
    assert sorted(r.request_id for r in stored) == sorted(r.request_id for r in records)
    by_id = {r.request_id: r for r in records}
    for row in stored:
        want = by_id[row.request_id]
        assert (row.line_number, row.timestamp_ms, row.host, row.uri, row.status) == (
            want.line_number,
            want.timestamp_ms,
            want.host,
            want.uri,
            want.status,
        )
        assert row.region == region_of(row.country) and row.pseudonym_key_id == ingest.pseudonym_key_id
    quarantined = db_session.scalars(
        select(QuarantinedLineRow)
        .where(QuarantinedLineRow.ingest_file_pk == ingest.id)
        .order_by(QuarantinedLineRow.line_number)
    ).all()
    expected = [(q.line_number, q.reason, q.raw) for q in items if isinstance(q, QuarantinedLine)]
    assert [(q.line_number, q.reason, q.raw) for q in quarantined] == sorted(expected)
    if "broken" in name:
        assert quarantined and all(q.detail for q in quarantined)


def test_gzip_and_plain_give_the_same_records(
    db_session: Session, db_settings: Settings, source: DeliverySource
) -> None:
    plain = ingest_sample(db_session, db_settings, source, "cloudfront.log")
    again = ingest_sample(db_session, db_settings, source, "cloudfront.log.gz")
    assert plain.records_new == 10
    assert again.records_new == 0 and again.duplicates == 10 and again.state == IngestState.done


def test_reingesting_a_file_changes_nothing(
    db_session: Session, db_settings: Settings, source: DeliverySource
) -> None:
    first = ingest_sample(db_session, db_settings, source, "cloudfront_broken.log")
    leaves = sorted(db_session.scalars(select(DeliveryRecordRow.leaf)))
    batches = count(db_session, DeliveryBatch)
    second = ingest_sample(db_session, db_settings, source, "cloudfront_broken.log")
    assert second.id != first.id and second.state == IngestState.done
    assert (second.records_new, second.duplicates, second.quarantined) == (
        0,
        first.records_new,
        first.quarantined,
    )
    assert second.sha256 == first.sha256
    check_counts(second)
    assert sorted(db_session.scalars(select(DeliveryRecordRow.leaf))) == leaves
    assert count(db_session, DeliveryBatch) == batches
    # Another source may log the same request ids: they are its own records.
    other = make_source(db_session, "cdn-b")
    third = ingest_sample(db_session, db_settings, other, "cloudfront_broken.log")
    assert third.records_new == first.records_new


@pytest.mark.parametrize("chunk", [ingestion.CHUNK_RECORDS, 2])
def test_repeats_inside_a_file_are_quarantined(
    db_session: Session,
    db_settings: Settings,
    source: DeliverySource,
    monkeypatch: pytest.MonkeyPatch,
    chunk: int,
) -> None:
    monkeypatch.setattr(ingestion, "CHUNK_RECORDS", chunk)  # 2: repeats also across chunk transactions
    ts = (DAY + 3600) * 1000
    log = node_log(
        node_line("r1", ts),
        node_line("r2", ts),
        node_line("r1", ts + 5, uri="/other"),
        node_line("r3", ts),
        node_line("r4", ts),
        node_line("r2", ts + 9),
        node_line("r1", ts),
    )
    ingest = ingest_log(db_session, db_settings, source, log, name="dups.jsonl", created_by=None)
    assert (ingest.records_new, ingest.duplicates_in_file, ingest.quarantined, ingest.lines) == (4, 3, 3, 7)
    check_counts(ingest)
    rows = db_session.scalars(select(DeliveryRecordRow).order_by(DeliveryRecordRow.line_number)).all()
    assert [(r.request_id, r.line_number) for r in rows] == [("r1", 1), ("r2", 2), ("r3", 4), ("r4", 5)]
    assert rows[0].uri == "/media/a.mp4"  # the first line of a request id is the one kept
    lines = db_session.scalars(select(QuarantinedLineRow).order_by(QuarantinedLineRow.line_number)).all()
    assert [(q.line_number, q.reason) for q in lines] == [
        (3, "duplicate_request_id"),
        (6, "duplicate_request_id"),
        (7, "duplicate_request_id"),
    ]
    assert "line 1" in lines[0].detail and "line 2" in lines[1].detail
    assert [q.request_id for q in lines] == ["r1", "r2", "r1"]
    assert (
        '"request_id": "r1"' in lines[0].raw
        and "198.51.100.23" not in lines[0].raw
        and "[ip]" in lines[0].raw
    )


@pytest.mark.parametrize("name", ["not_a_log.csv", "not_a_log.html"])
def test_a_file_that_is_not_a_log_is_rejected(
    db_session: Session, db_settings: Settings, source: DeliverySource, name: str
) -> None:
    with pytest.raises(service.DeliveryError) as caught:
        ingest_sample(db_session, db_settings, source, name)
    assert caught.value.code == "not_a_log" and caught.value.status == 422
    ingest = db_session.scalars(select(IngestFile)).one()
    assert ingest.state == IngestState.rejected and ingest.error_code == "not_a_log"
    assert ingest.error_message and "not" not in ingest.error_message[:0]
    assert caught.value.details["ingest_id"] == ingest.id
    assert count(db_session, DeliveryRecordRow) == count(db_session, QuarantinedLineRow) == 0
    assert count(db_session, DeliveryBatch) == 0


def test_a_truncated_gzip_keeps_what_was_read_and_a_rerun_completes_it(
    db_session: Session, db_settings: Settings, source: DeliverySource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingestion, "CHUNK_RECORDS", 100)
    ts = (DAY + 60) * 1000
    text = "".join(node_line(f"req-{n:05d}-{'x' * 40}", ts + n) + "\n" for n in range(3_000)).encode()
    whole = gzip.compress(text, compresslevel=1)
    cut = whole[: len(whole) * 2 // 3]
    with pytest.raises(service.DeliveryError) as caught:
        ingest_log(db_session, db_settings, source, io.BytesIO(cut), name="cut.jsonl.gz", created_by=None)
    assert caught.value.code == "log_truncated" and caught.value.status == 422
    failed = db_session.scalars(select(IngestFile)).one()
    assert failed.state == IngestState.failed and failed.error_code == "log_truncated"
    kept = count(db_session, DeliveryRecordRow)
    assert 0 < kept < 3_000 and failed.records_new == kept and failed.lines >= kept
    assert failed.size_bytes == len(cut)
    check_counts(failed)

    done = ingest_log(
        db_session, db_settings, source, io.BytesIO(whole), name="whole.jsonl.gz", created_by=None
    )
    assert done.state == IngestState.done
    assert (done.records_new, done.duplicates, done.lines) == (3_000 - kept, kept, 3_000)
    assert count(db_session, DeliveryRecordRow) == 3_000


def test_late_records_go_to_correction_batches(
    db_session: Session, db_settings: Settings, source: DeliverySource
) -> None:
    ts = (DAY + 7200) * 1000
    first = ingest_log(
        db_session, db_settings, source, node_log(node_line("a", ts)), name="1", created_by=None
    )
    assert first.late_records == 0
    regular = db_session.scalars(select(DeliveryBatch)).one()
    assert (regular.kind, regular.state, regular.period_start, regular.period_end) == (
        "regular",
        "open",
        DAY,
        DAY + 86400,
    )
    assert regular.batch_id == batch_id_for(source.source_id, DAY, DAY + 86400, "regular", 0)
    db_session.execute(update(DeliveryBatch).values(state=BatchState.closed))
    db_session.commit()

    # A closed regular batch: late lines go to correction 1 (the next day's line is on time).
    late = node_log(
        node_line("b", ts), node_line("c", ts + 1), node_line("a", ts), node_line("d", ts + 86_400_000)
    )
    second = ingest_log(db_session, db_settings, source, late, name="2", created_by=None)
    assert (second.records_new, second.late_records, second.duplicates) == (3, 2, 1)
    correction = db_session.scalars(
        select(DeliveryBatch).where(DeliveryBatch.kind == BatchKind.correction)
    ).one()
    assert (correction.correction_seq, correction.corrects_pk, correction.state) == (1, regular.id, "open")
    assert correction.batch_id == batch_id_for(source.source_id, DAY, DAY + 86400, "correction", 1)
    in_correction = db_session.scalars(
        select(DeliveryRecordRow.request_id).where(DeliveryRecordRow.batch_pk == correction.id)
    ).all()
    assert sorted(in_correction) == ["b", "c"]

    # While correction 1 is open it takes more; once it is closed too, correction 2 opens.
    ingest_log(db_session, db_settings, source, node_log(node_line("e", ts)), name="3", created_by=None)
    db_session.execute(
        update(DeliveryBatch).where(DeliveryBatch.id == correction.id).values(state="anchored")
    )
    db_session.commit()
    fourth = ingest_log(
        db_session, db_settings, source, node_log(node_line("f", ts)), name="4", created_by=None
    )
    assert fourth.late_records == 1
    seqs = db_session.execute(
        select(DeliveryBatch.correction_seq, DeliveryBatch.corrects_pk, func.count(DeliveryRecordRow.id))
        .join(DeliveryRecordRow, DeliveryRecordRow.batch_pk == DeliveryBatch.id)
        .where(DeliveryBatch.period_start == DAY)
        .group_by(DeliveryBatch.id)
        .order_by(DeliveryBatch.correction_seq)
    ).all()
    assert [tuple(s) for s in seqs] == [(0, None, 1), (1, regular.id, 3), (2, regular.id, 1)]


def test_an_empty_batch_is_reopened(
    db_session: Session, db_settings: Settings, source: DeliverySource
) -> None:
    empty = DeliveryBatch(
        batch_id=batch_id_for(source.source_id, DAY, DAY + 86400, "regular", 0),
        source_pk=source.id,
        period_start=DAY,
        period_end=DAY + 86400,
        state=BatchState.empty,
    )
    db_session.add(empty)
    db_session.commit()
    ingest = ingest_log(
        db_session, db_settings, source, node_log(node_line("x", DAY * 1000 + 5)), name="e", created_by=None
    )
    assert ingest.late_records == 0
    db_session.refresh(empty)
    assert empty.state == BatchState.open
    assert db_session.scalars(select(DeliveryRecordRow.batch_pk)).one() == empty.id
    assert count(db_session, DeliveryBatch) == 1


def add_asset(session: Session, asset_id: int, content: bytes) -> str:
    cid = cid_of_bytes(content)
    session.add(
        Asset(
            id=asset_id,
            content_hash="0x" + __import__("hashlib").sha256(content).hexdigest(),
            content_cid=cid,
            metadata_cid=cid,
            creator="0x" + "33" * 20,
            owner="0x" + "33" * 20,
            aigc=False,
            title="film",
            media_type="video/mp4",
            size_bytes=len(content),
            territories_bitmap="0x1",
            valid_from=0,
            valid_until=0,
            royalty_bps=0,
            status="active",
            chain_id=31337,
            contract_address="0x" + "44" * 20,
            tx_hash="0x" + "55" * 32,
            block_number=1,
            log_index=0,
            registered_at=datetime.now(UTC),
        )
    )
    session.commit()
    return cid


def test_assets_are_resolved_from_the_request(
    db_session: Session, db_settings: Settings, source: DeliverySource
) -> None:
    film = add_asset(db_session, 7, b"a registered film")
    song = add_asset(db_session, 9, b"a registered song")
    unregistered = cid_of_bytes(b"never registered")
    ts = (DAY + 10) * 1000
    cases = {
        "ipfs-path": (f"/ipfs/{film}/video.mp4", "media.example.com", 7),
        "bare": (f"/{song}", "media.example.com", 9),
        "extension": (f"/assets/{film}.mp4", "media.example.com", 7),
        "deep": (f"/v/{song}/hls/seg-0001.ts", "media.example.com", 9),
        "subdomain": ("/video.mp4", f"{film}.ipfs.dweb.link", 7),
        "second-cid": (f"/ipfs/{unregistered}/{song}.mp4", "media.example.com", 9),
        "unregistered": (f"/ipfs/{unregistered}/x.mp4", "media.example.com", 0),
        "plain": ("/media/trailer.mp4", "media.example.com", 0),
    }
    lines = [node_line(rid, ts, uri=uri, host=host) for rid, (uri, host, _) in cases.items()]
    ingest_log(db_session, db_settings, source, node_log(*lines), name="assets", created_by=None)
    got = dict(db_session.execute(select(DeliveryRecordRow.request_id, DeliveryRecordRow.asset_id)).all())
    assert got == {rid: asset for rid, (_, _, asset) in cases.items()}
    assert list(ingestion.asset_candidates("x.example", f"/a/{film}.mp4/b")) == [film]


def test_stored_leaves_equal_the_leaf_of_the_stored_row(
    db_session: Session, db_settings: Settings, source: DeliverySource
) -> None:
    for name in ("cloudfront.log", "cloudflare.ndjson", "edgeledger.jsonl"):
        ingest_sample(db_session, db_settings, source, name)
    rows = db_session.scalars(select(DeliveryRecordRow)).all()
    assert len(rows) == 21 and len({r.salt for r in rows}) == 21
    for row in rows:
        assert row.leaf == leaf_hash(service.leaf_values_of(source.source_id, row))
        assert row.client_commitment == client_commitment(row.salt, row.client_pseudonym)
        assert row.merchant_id == merchant_id_for(row.host) and len(row.salt) == 32
        batch = db_session.get(DeliveryBatch, row.batch_pk)
        assert batch is not None
        assert (
            batch.period_start
            == service.period_bounds(row.timestamp_ms, db_settings.delivery_period_seconds)[0]
        )


_IPV4 = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}\b")
_IPV6 = re.compile(r"\b[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{0,4}){2,7}\b")


def sample_ips() -> set[str]:
    ips: set[str] = set()
    for name in LOGS:
        if name.endswith(".gz"):
            continue
        text = (SAMPLES / name).read_text(errors="replace")
        ips.update(_IPV4.findall(text))
        ips.update(ip for ip in _IPV6.findall(text) if ip.count(":") >= 2 and not re.fullmatch(r"[\d:]+", ip))
    return ips


def test_no_raw_client_ip_reaches_the_database(
    db_session: Session, db_settings: Settings, source: DeliverySource, db_engine: Engine
) -> None:
    for name in LOGS:
        ingest_sample(db_session, db_settings, source, name)
    ips = sample_ips()
    assert {"198.51.100.23", "192.0.2.100", "203.0.113.77"} <= ips
    assert any(":" in ip for ip in ips)
    needles = [ip.lower() for ip in ips]
    scanned = 0
    with db_engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            columns = [c for c in table.columns if isinstance(c.type, String | Text | LargeBinary)]
            if not columns:
                continue
            for row in conn.execute(select(*columns)):
                for value in row:
                    if value is None:
                        continue
                    text = bytes(value).decode("latin-1") if isinstance(value, bytes | memoryview) else value
                    scanned += 1
                    low = text.lower()
                    assert not any(ip in low for ip in needles), (table.name, text)
    assert scanned > 200  # every record row (request id, host, uri ...) and quarantined line


def test_suspended_source_and_bad_format_are_refused_before_anything_is_written(
    db_session: Session, db_settings: Settings
) -> None:
    suspended = make_source(db_session, "cdn-s", status="suspended")
    with pytest.raises(service.DeliveryError) as caught:
        ingest_sample(db_session, db_settings, suspended, "cloudfront.log")
    assert (caught.value.code, caught.value.status) == ("source_suspended", 409)
    active = make_source(db_session, "cdn-t")
    with pytest.raises(service.DeliveryError) as caught:
        ingest_log(
            db_session, db_settings, active, io.BytesIO(b""), name="x", created_by=None, log_format="csv"
        )
    assert caught.value.code == "bad_log_format"
    assert count(db_session, IngestFile) == 0


def test_text_lines_and_progress(db_session: Session, db_settings: Settings, source: DeliverySource) -> None:
    seen: list[int] = []
    lines = [node_line(f"t{n}", (DAY + n) * 1000) + "\n" for n in range(5)]
    ingest = ingest_log(
        db_session, db_settings, source, lines, name="lines", created_by=42, progress=seen.append
    )
    assert ingest.records_new == 5 and ingest.created_by == 42 and seen == [5]
    assert ingest.sha256 == __import__("hashlib").sha256("".join(lines).encode()).hexdigest()


def test_sqlite_inserts_with_a_bigger_page_cache_and_gives_it_back(
    db_session: Session, db_settings: Settings, source: DeliverySource
) -> None:
    engine = db_session.get_bind()
    if engine.dialect.name != "sqlite":
        pytest.skip("SQLite's page cache")
    own = db_session.connection().exec_driver_sql("PRAGMA cache_size").scalar()
    db_session.commit()
    seen: list[str] = []

    def pragma(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if "cache_size" in statement:
            seen.append(statement)

    event.listen(engine, "before_cursor_execute", pragma)
    try:
        lines = [node_line(f"c{n}", (DAY + n) * 1000) + "\n" for n in range(3)]
        assert ingest_log(db_session, db_settings, source, lines, name="c", created_by=None).records_new == 3
    finally:
        event.remove(engine, "before_cursor_execute", pragma)
    big = f"PRAGMA cache_size=-{ingestion._SQLITE_CHUNK_CACHE_KIB}"
    assert seen == ["PRAGMA cache_size", big, f"PRAGMA cache_size={own}"]
    assert db_session.connection().exec_driver_sql("PRAGMA cache_size").scalar() == own


def test_per_run_caches_stay_bounded_and_give_the_same_values(
    db_session: Session, db_settings: Settings, source: DeliverySource, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingestion, "_CACHE_LIMIT", 2)
    runs: list[Any] = []
    init = ingestion._Ingest.__init__

    def capture(self: Any, *args: Any) -> None:
        init(self, *args)
        runs.append(self)

    monkeypatch.setattr(ingestion._Ingest, "__init__", capture)
    hosts = [f"h{n}.example.com" for n in range(5)]
    lines = [node_line(f"b{n}", (DAY + n) * 1000, host=host) + "\n" for n, host in enumerate(hosts)]
    assert ingest_log(db_session, db_settings, source, lines, name="b", created_by=None).records_new == 5
    (run,) = runs
    assert 0 < len(run.merchants) <= 2 and len(run.edges) == 1 and len(run.countries) == 1
    rows = db_session.scalars(select(DeliveryRecordRow).where(DeliveryRecordRow.host.in_(hosts))).all()
    assert sorted(r.host for r in rows) == hosts
    for row in rows:
        assert row.merchant_id == merchant_id_for(row.host)
        assert row.leaf == leaf_hash(service.leaf_values_of(source.source_id, row))


# --------------------------------------------------------------------------------------------------------
# API
# --------------------------------------------------------------------------------------------------------


def api_source(
    app_client: TestClient, name: str, operator: Caller | None = None, status: str = "active"
) -> int:
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        return make_source(
            session, name, status=status, operator_user_id=operator.user_id if operator else None
        ).id


@pytest.fixture
def operator(app_client: TestClient) -> Caller:
    return make_caller(app_client, Role.operator, "node operator")


@pytest.fixture
def admin(app_client: TestClient) -> Caller:
    return make_caller(app_client, Role.admin, "admin")


def test_api_upload_multipart_raw_and_reports(
    app_client: TestClient, operator: Caller, admin: Caller
) -> None:
    api_source(app_client, "node-1", operator)
    gz = (SAMPLES / "cloudfront.log.gz").read_bytes()
    response = app_client.post(
        "/deliveries/sources/node-1/logs",
        headers=operator.headers,
        files={"file": ("cloudfront.log.gz", gz, "application/gzip")},
    )
    assert response.status_code == 201, response.text
    report = response.json()
    assert (report["name"], report["records_new"], report["state"], report["log_format"]) == (
        "cloudfront.log.gz",
        10,
        "done",
        "cloudfront",
    )
    assert report["size_bytes"] == len(gz) and report["created_by"] == operator.user_id

    raw = (SAMPLES / "cloudfront_broken.log").read_bytes()
    response = app_client.post(
        "/deliveries/sources/node-1/logs?name=broken.log",
        headers={**admin.headers, "Content-Type": "application/octet-stream"},
        content=raw,
    )
    assert response.status_code == 201, response.text
    broken = response.json()
    assert broken["name"] == "broken.log" and broken["quarantined"] == 11
    assert (broken["records_new"], broken["duplicates"]) == (0, 3)  # its good lines were in the .gz file

    page = app_client.get(f"/deliveries/ingests/{broken['id']}/quarantine?limit=4", headers=operator.headers)
    assert page.status_code == 200
    body = page.json()
    assert body["total"] == 11 and len(body["items"]) == 4
    assert [i["line_number"] for i in body["items"]] == sorted(i["line_number"] for i in body["items"])
    assert {"line_number", "reason", "detail", "raw"} <= set(body["items"][0])
    rest = app_client.get(
        f"/deliveries/ingests/{broken['id']}/quarantine?limit=100&offset=4", headers=operator.headers
    ).json()
    assert len(rest["items"]) == 7
    assert all("198.51.100.23" not in i["raw"] for i in body["items"] + rest["items"])

    listing = app_client.get("/deliveries/ingests?source=node-1&state=done", headers=operator.headers).json()
    assert [i["id"] for i in listing["items"]] == [broken["id"], report["id"]] and listing["total"] == 2
    one = app_client.get(f"/deliveries/ingests/{report['id']}", headers=admin.headers).json()
    assert one["sha256"] == report["sha256"]
    assert app_client.get("/deliveries/ingests/999", headers=admin.headers).status_code == 404
    assert app_client.get("/deliveries/ingests?limit=0", headers=admin.headers).status_code == 422


def test_api_stream_chunked(app_client: TestClient, operator: Caller) -> None:
    api_source(app_client, "node-2", operator)
    text = (SAMPLES / "edgeledger.jsonl").read_bytes()

    def body() -> Iterator[bytes]:  # chunked transfer, cut mid-line
        for start in range(0, len(text), 37):
            yield text[start : start + 37]

    response = app_client.post(
        "/deliveries/sources/node-2/stream?name=live", headers=operator.headers, content=body()
    )
    assert response.status_code == 201, response.text
    assert response.json()["records_new"] == 5 and response.json()["log_format"] == "edgeledger"


def test_api_refusals(app_client: TestClient, operator: Caller, admin: Caller) -> None:
    api_source(app_client, "node-3", operator)
    api_source(app_client, "node-4", None, status="suspended")
    other = make_caller(app_client, Role.operator, "other operator")
    merchant = make_caller(app_client, Role.merchant, "shop")
    log = (SAMPLES / "edgeledger.jsonl").read_bytes()
    for caller, ref, status, code in (
        (other, "node-3", 403, "forbidden"),
        (merchant, "node-3", 403, "forbidden"),
        (operator, "nope", 404, "source_not_found"),
        (admin, "node-4", 409, "source_suspended"),
    ):
        response = app_client.post(f"/deliveries/sources/{ref}/logs", headers=caller.headers, content=log)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
    response = app_client.post(
        "/deliveries/sources/node-3/logs",
        headers=operator.headers,
        files={"file": ("x.csv", (SAMPLES / "not_a_log.csv").read_bytes(), "text/csv")},
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "not_a_log"
    ingest_id = response.json()["error"]["details"]["ingest_id"]
    report = app_client.get(f"/deliveries/ingests/{ingest_id}", headers=operator.headers).json()
    assert report["state"] == "rejected" and report["records_new"] == 0
    # the foreign operator sees neither the report nor the list entry
    assert app_client.get(f"/deliveries/ingests/{ingest_id}", headers=other.headers).status_code == 404
    assert app_client.get("/deliveries/ingests", headers=other.headers).json()["total"] == 0
    response = app_client.post(
        "/deliveries/sources/node-3/logs", headers=operator.headers, files={"other": ("a", b"x")}
    )
    assert response.status_code == 422 and response.json()["error"]["code"] == "missing_file"


def test_api_merchant_hosts(app_client: TestClient, admin: Caller) -> None:
    shop = make_caller(app_client, Role.merchant, "shop")
    rival = make_caller(app_client, Role.merchant, "rival")
    created = app_client.post(
        "/deliveries/merchant-hosts",
        headers=admin.headers,
        json={"host": "Media.Example.COM.", "merchant_user_id": shop.user_id},
    )
    assert created.status_code == 201, created.text
    assert created.json()["host"] == "media.example.com"
    assert created.json()["merchant_id"] == hex32(merchant_id_for("media.example.com"))
    taken = app_client.post(
        "/deliveries/merchant-hosts",
        headers=admin.headers,
        json={"host": "media.example.com", "merchant_user_id": rival.user_id},
    )
    assert taken.status_code == 409
    not_merchant = app_client.post(
        "/deliveries/merchant-hosts",
        headers=admin.headers,
        json={"host": "a.b", "merchant_user_id": admin.user_id},
    )
    assert not_merchant.status_code == 422
    assert (
        app_client.post(
            "/deliveries/merchant-hosts",
            headers=shop.headers,
            json={"host": "c.d", "merchant_user_id": shop.user_id},
        ).status_code
        == 403
    )
    assert [h["host"] for h in app_client.get("/deliveries/merchant-hosts", headers=shop.headers).json()] == [
        "media.example.com"
    ]
    assert app_client.get("/deliveries/merchant-hosts", headers=rival.headers).json() == []


# --------------------------------------------------------------------------------------------------------
# CLI against a live API
# --------------------------------------------------------------------------------------------------------


def test_cli_ingest(app_client: TestClient, operator: Caller, live_api: str, tmp_path: Path) -> None:
    api_source(app_client, "node-5", operator)
    cut = tmp_path / "cut.log.gz"
    cut.write_bytes(
        gzip.compress(b"".join(node_line(f"c{n}", DAY * 1000).encode() + b"\n" for n in range(50)))[:-30]
    )
    args = [
        "ingest",
        str(SAMPLES / "cloudfront.log.gz"),
        str(SAMPLES / "cloudflare.ndjson"),
        "--source",
        "node-5",
    ]
    args += ["--api", live_api, "--api-key", operator.api_key]
    result = CliRunner().invoke(cli_app, args)
    assert result.exit_code == 0, result.output
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["name"], r["records_new"], r["state"]) for r in reports] == [
        ("cloudfront.log.gz", 10, "done"),
        ("cloudflare.ndjson", 6, "done"),
    ]
    assert "uploading cloudfront.log.gz" in result.stderr and "lines/s" in result.stderr

    bad = CliRunner().invoke(
        cli_app,
        [
            "ingest",
            str(SAMPLES / "not_a_log.html"),
            str(cut),
            str(SAMPLES / "edgeledger.jsonl"),
            "--source",
            "node-5",
            "--api",
            live_api,
            "--api-key",
            operator.api_key,
        ],
    )
    assert bad.exit_code == 1
    assert "not_a_log.html: error 422 not_a_log" in bad.stderr
    assert "cut.log.gz: error 422 log_truncated" in bad.stderr
    assert json.loads(bad.stdout.splitlines()[-1])["records_new"] == 5  # the good file still went in


def test_values_the_tables_cannot_hold_are_quarantined(
    db_session: Session, db_settings: Settings, source: DeliverySource
) -> None:
    ts = DAY * 1000
    log = node_log(
        node_line("r" * 129, ts),
        node_line("ok", ts, uri="/tab\there\\back\rslash\\N"),  # COPY's escapes must round-trip
        node_line("h", ts, host="a" * 250 + ".example"),
        node_line("nul", ts, uri="/a\0b"),
        "\0 not a line \0",
    )
    ingest = ingest_log(db_session, db_settings, source, log, name="long", created_by=None)
    assert (ingest.records_new, ingest.quarantined) == (1, 4)
    reasons = db_session.execute(
        select(QuarantinedLineRow.line_number, QuarantinedLineRow.reason).order_by(
            QuarantinedLineRow.line_number
        )
    ).all()
    assert [tuple(r) for r in reasons] == [
        (1, "request_id_too_long"),
        (3, "host_too_long"),
        (4, "nul_character"),
        (5, "invalid_json"),
    ]
    raw = db_session.scalars(select(QuarantinedLineRow.raw).where(QuarantinedLineRow.line_number == 5)).one()
    assert raw == "\ufffd not a line \ufffd"
    assert db_session.scalars(select(DeliveryRecordRow.uri)).one() == "/tab\there\\back\rslash\\N"


def test_a_close_holding_the_batch_lock_never_misses_a_record(
    db_session: Session,
    db_settings: Settings,
    source: DeliverySource,
    db_engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A close takes the regular batch's row lock between two chunks of an ingest: the next chunk waits
    for it, then sees the batch closed and writes a correction batch; nothing lands in the closed batch."""
    monkeypatch.setattr(ingestion, "CHUNK_RECORDS", 1)
    ts = (DAY + 30) * 1000
    ingest_log(db_session, db_settings, source, node_log(node_line("early", ts)), name="1", created_by=None)
    regular = db_session.scalars(select(DeliveryBatch)).one()
    first_chunk_stored, lock_taken = threading.Event(), threading.Event()
    result: dict[str, Any] = {}

    def between_chunks(lines: int) -> None:
        if lines == 1:
            first_chunk_stored.set()
            assert lock_taken.wait(60)

    def ingest_late() -> None:
        with Session(db_engine, expire_on_commit=False) as session:
            mine = session.get(DeliverySource, source.id)
            assert mine is not None
            log = node_log(node_line("next-day", ts + 86_400_000), node_line("late", ts))
            result["ingest"] = ingest_log(
                session, db_settings, mine, log, name="2", created_by=None, progress=between_chunks
            )

    thread = threading.Thread(target=ingest_late)
    thread.start()
    assert first_chunk_stored.wait(60)
    with Session(db_engine) as closer:
        # What a close does first: lock the batch row (on SQLite, a write takes the database lock).
        if db_engine.dialect.name == "sqlite":
            closer.execute(update(DeliveryBatch).where(DeliveryBatch.id == regular.id).values(attempts=0))
        else:
            closer.execute(select(DeliveryBatch.id).where(DeliveryBatch.id == regular.id).with_for_update())
        lock_taken.set()
        if db_engine.dialect.name == "postgresql":
            for _ in range(400):  # until the ingest waits on the row lock (a fresh snapshot each time)
                with db_engine.connect() as probe:
                    waiting = probe.exec_driver_sql(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    ).scalar()
                if waiting:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError("the ingest never waited for the batch lock")
        else:
            time.sleep(0.5)  # the ingest's next chunk reaches the database lock meanwhile
        closer.execute(update(DeliveryBatch).where(DeliveryBatch.id == regular.id).values(state="closed"))
        closer.commit()
    thread.join()
    assert result["ingest"].late_records == 1 and result["ingest"].records_new == 2
    in_regular = db_session.scalars(
        select(DeliveryRecordRow.request_id).where(DeliveryRecordRow.batch_pk == regular.id)
    ).all()
    assert in_regular == ["early"]
