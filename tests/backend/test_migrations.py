"""Data migrations on real databases (SQLite and PostgreSQL): what a deployment's existing rows become.

0008 (receipts per country): receipts stored per (batch, asset, merchant, region) are recomputed per
country from the batch's records, excluded records counted apart; the downgrade restores the old grain.
"""

from __future__ import annotations

import secrets

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.orm import Session

from edgeledger.config import PROJECT_ROOT
from edgeledger.db import make_engine, migrate
from edgeledger.deliveries.models import (
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    IngestFile,
    IngestState,
    SourceKind,
    SourceStatus,
)
from edgeledger.ledger.ids import batch_id_for, merchant_id_for, source_id_for

pytestmark = pytest.mark.integration

DAY = 1_764_547_200
HOST = "shop.example"


def _world(url: str) -> int:
    """A source with one anchored batch: 3 records from DE (one excluded by a fraud flag), 2 from FR, all
    for asset 7; and the receipt the previous release stored for it. Returns the batch's key."""
    engine = make_engine(url)
    with Session(engine) as session:
        source = DeliverySource(
            source_id=source_id_for("cf-migrate"),
            name="cf-migrate",
            kind=SourceKind.cdn_provider,
            provider="cloudfront",
            operator="0x" + "11" * 20,
            signer="0x" + "22" * 20,
            regions_bitmap="0x1",
            jurisdiction="US",
            status=SourceStatus.active,
        )
        session.add(source)
        session.flush()
        batch = DeliveryBatch(
            batch_id=batch_id_for(source.source_id, DAY, DAY + 86400, BatchKind.regular, 0),
            source_pk=source.id,
            period_start=DAY,
            period_end=DAY + 86400,
            kind=BatchKind.regular,
            correction_seq=0,
            state=BatchState.final,
        )
        ingest = IngestFile(source_pk=source.id, name="x.log", state=IngestState.done, pseudonym_key_id="k")
        session.add_all([batch, ingest])
        session.flush()
        for n, (country, nbytes, excluded) in enumerate(
            [
                ("DE", 100, False),
                ("DE", 200, False),
                ("DE", 400, True),
                ("FR", 1000, False),
                ("FR", 3000, False),
            ]
        ):
            session.add(
                DeliveryRecordRow(
                    source_pk=source.id,
                    batch_pk=batch.id,
                    ingest_file_pk=ingest.id,
                    line_number=n + 1,
                    request_id=f"req-{n}",
                    timestamp_ms=DAY * 1000 + n,
                    edge_location="FRA56-P1",
                    country=country,
                    region="EU",
                    host=HOST,
                    uri="/ipfs/x",
                    asset_id=7,
                    merchant_id=merchant_id_for(HOST),
                    bytes_delivered=nbytes,
                    status=200,
                    cache_result=1,
                    pseudonym_key_id="k",
                    client_pseudonym=secrets.token_bytes(32),
                    salt=secrets.token_bytes(32),
                    client_commitment=secrets.token_bytes(32),
                    leaf=secrets.token_bytes(32),
                    excluded=excluded,
                )
            )
        session.commit()
        batch_pk = batch.id
    with engine.begin() as conn:  # the previous release's receipt: no country column yet
        conn.execute(
            text(
                "INSERT INTO delivery_receipts (batch_pk, period_start, period_end, asset_id, merchant_id, "
                "host, region, requests, bytes_delivered, excluded_requests, excluded_bytes, computed_at) "
                "VALUES (:b, :s, :e, 7, :m, :h, 'EU', 4, 4300, 1, 400, CURRENT_TIMESTAMP)"
            ),
            {"b": batch_pk, "s": DAY, "e": DAY + 86400, "m": "0x" + merchant_id_for(HOST).hex(), "h": HOST},
        )
    engine.dispose()
    return batch_pk


_OLD_RECEIPTS = text(
    "SELECT asset_id, region, requests, bytes_delivered, excluded_requests, excluded_bytes "
    "FROM delivery_receipts ORDER BY 1, 2"
)
_NEW_RECEIPTS = text(
    "SELECT asset_id, region, country, requests, bytes_delivered, excluded_requests, excluded_bytes "
    "FROM delivery_receipts ORDER BY 1, 2, 3"
)


def _receipts(url: str, *, country: bool) -> list[tuple[object, ...]]:
    engine = make_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(_NEW_RECEIPTS if country else _OLD_RECEIPTS).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def test_0008_recomputes_receipts_per_country_and_back(database_url: str) -> None:
    migrate(database_url, "0007")
    _world(database_url)
    assert _receipts(database_url, country=False) == [(7, "EU", 4, 4300, 1, 400)]

    migrate(database_url, "0008")
    assert _receipts(database_url, country=True) == [
        (7, "EU", "DE", 2, 300, 1, 400),
        (7, "EU", "FR", 2, 4000, 0, 0),
    ]

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = database_url
    command.downgrade(config, "0007")
    assert _receipts(database_url, country=False) == [(7, "EU", 4, 4300, 1, 400)]
