"""The ingestion benchmark's generated logs (benchmarks/ingest_formats.py) through the real ingest path, on
SQLite, so that its generators cannot rot into a fast but empty run:

* every line of every format (CloudFront, Alibaba Cloud CDN, Tencent Cloud CDN, nginx combined) becomes a
  new record of the benchmark's source, which declares the format: nothing quarantined, no duplicate;
* the formats carry the same population: each record has its request's time (UTC, whatever zone the
  format writes), client, host (nginx: the declared one), path, body bytes, status and the format's edge
  location;
* the benchmark's completeness check refuses a run in which a line did not become a record.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from benchmarks.ingest import bench_source, check_complete
from benchmarks.ingest_formats import BENCH_FORMATS, BenchFormat, Request, generate, requests
from edgeledger.config import Settings
from edgeledger.db import make_engine, migrate
from edgeledger.deliveries import service
from edgeledger.deliveries.ingest import ingest_log
from edgeledger.deliveries.models import DeliveryRecordRow, IngestFile
from edgeledger.deliveries.parsers.accesslog import ALIYUN_EDGE_LOCATION
from edgeledger.deliveries.parsers.cdnlogs import TENCENT_EDGE_LOCATION

LINES = 2_000
SEED = 7


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Engine]]:
    url = f"sqlite:///{tmp_path_factory.mktemp('bench-formats') / 'edgeledger.db'}"
    migrate(url)
    engine = make_engine(url)
    yield url, engine
    engine.dispose()


def _ingest(sqlite: tuple[str, Engine], tmp_path: Path, fmt: BenchFormat, log: Path) -> IngestFile:
    url, engine = sqlite
    settings = Settings(data_dir=tmp_path, database_url=url, pseudonym_master_key="11" * 32)
    with Session(engine, expire_on_commit=False) as session:
        source = bench_source(fmt, f"bench-{fmt.name}-{log.stem}")
        session.add(source)
        session.commit()
        with log.open("rb") as handle:
            return ingest_log(session, settings, source, handle, name=log.name, created_by=None)


def _edge(fmt: BenchFormat, request: Request) -> str:
    if fmt.site_edge_location:
        return fmt.site_edge_location
    return {"cloudfront": request.edge, "alibaba": ALIYUN_EDGE_LOCATION, "tencent": TENCENT_EDGE_LOCATION}[
        fmt.name
    ]


@pytest.mark.parametrize("name", list(BENCH_FORMATS))
def test_every_generated_line_becomes_its_request_s_record(
    name: str, sqlite: tuple[str, Engine], tmp_path: Path
) -> None:
    fmt = BENCH_FORMATS[name]
    log = tmp_path / f"{name}.log.gz"
    generate(log, LINES, SEED, name)

    ingest = _ingest(sqlite, tmp_path, fmt, log)

    check_complete(ingest, fmt, LINES)  # raises unless LINES new records, nothing quarantined
    assert (ingest.records_new, ingest.quarantined, ingest.duplicates) == (LINES, 0, 0)
    url, engine = sqlite
    settings = Settings(data_dir=tmp_path, database_url=url, pseudonym_master_key="11" * 32)
    with Session(engine) as session:
        columns = (
            DeliveryRecordRow.line_number,
            DeliveryRecordRow.timestamp_ms,
            DeliveryRecordRow.client_pseudonym,
            DeliveryRecordRow.host,
            DeliveryRecordRow.uri,
            DeliveryRecordRow.bytes_delivered,
            DeliveryRecordRow.status,
            DeliveryRecordRow.edge_location,
        )
        stored = session.execute(
            select(*columns)
            .where(DeliveryRecordRow.ingest_file_pk == ingest.id)
            .order_by(DeliveryRecordRow.line_number)
        ).all()
        pseudonymiser = service.pseudonymiser_for(session, settings, ingest.pseudonym_key_id)
    expected = [
        (
            fmt.header_lines + n,
            r.t * 1000,
            pseudonymiser.pseudonym(r.client),
            fmt.site_host or r.host,
            r.path,
            r.size,
            r.status,
            _edge(fmt, r),
        )
        for n, r in enumerate(requests(LINES, SEED), start=1)
    ]
    assert [tuple(row) for row in stored] == expected


def test_the_completeness_check_refuses_a_run_that_lost_a_line(
    sqlite: tuple[str, Engine], tmp_path: Path
) -> None:
    """A line written twice gets the same derived request id: one record, one quarantined duplicate."""
    fmt = BENCH_FORMATS["tencent"]
    good = tmp_path / "tencent.log.gz"
    generate(good, 200, SEED, "tencent")
    lines = gzip.decompress(good.read_bytes()).splitlines(keepends=True)
    doubled = tmp_path / "doubled.log.gz"
    doubled.write_bytes(gzip.compress(b"".join(lines[:100] + lines[99:])))

    ingest = _ingest(sqlite, tmp_path, fmt, doubled)

    assert (ingest.records_new, ingest.quarantined) == (200, 1)
    with pytest.raises(AssertionError, match="tencent: the ingest report"):
        check_complete(ingest, fmt, 201)
