"""Fraud signals on crafted records (SQLite and PostgreSQL), admin review, and delivery receipts through
the API on a real chain."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.assets.models import Asset
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.deliveries import anchoring, batches, receipts, service, signals
from edgeledger.deliveries.models import (
    BatchState,
    DeliveryBatch,
    DeliveryReceipt,
    DeliveryRecordRow,
    DeliverySource,
    FlagState,
    FraudFlag,
    IngestFile,
    IngestState,
    MerchantHost,
    MerchantSource,
    QuarantinedLineRow,
    SourceStatus,
)
from edgeledger.ledger.hashing import hex32
from edgeledger.ledger.ids import merchant_id_for, source_id_for
from edgeledger.settlement.period_inputs import under_review
from tests.backend.support.stack import Caller, make_caller
from tests.backend.test_anchoring import DAY0, PERIOD, add_records, db, open_batch, register, reload

pytestmark = pytest.mark.integration

NODE_IP = "192.0.2.10"


# ----------------------------------------------------------------------------------------------
# Signals, straight on the database
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def base_settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=database_url)


@pytest.fixture
def source(db_session: Session) -> DeliverySource:
    row = DeliverySource(
        source_id=source_id_for("edge-signals"),
        name="edge-signals",
        kind="edge_node",
        provider="edgeledger",
        operator="0x" + "11" * 20,
        signer="0x" + "22" * 20,
        regions_bitmap=hex(1),
        jurisdiction="DE",
        node_ips_json=json.dumps([NODE_IP]),
        status=SourceStatus.active,
    )
    db_session.add(row)
    db_session.commit()
    return row


def close_and_flag(session: Session, settings: Settings, batch: DeliveryBatch) -> dict[str, list[FraudFlag]]:
    closed = batches.close_batch(session, settings, batch.id)
    assert closed is not None and closed.state == "closed"
    by_signal: dict[str, list[FraudFlag]] = {}
    for flag in signals.list_flags(session, batch=closed):
        by_signal.setdefault(flag.signal, []).append(flag)
    return by_signal


def excluded_ids(session: Session, batch: DeliveryBatch) -> set[int]:
    query = select(DeliveryRecordRow.id).where(
        DeliveryRecordRow.batch_pk == batch.id, DeliveryRecordRow.excluded.is_(True)
    )
    return set(session.scalars(query))


def ids(rows: list[DeliveryRecordRow]) -> set[int]:
    return {r.id for r in rows}


def test_clean_batch_raises_no_flag(
    db_session: Session, base_settings: Settings, source: DeliverySource
) -> None:
    batch = open_batch(db_session, source, DAY0)
    for i, ip in enumerate(["198.51.100.1", "198.51.100.2", "2001:db8::7"]):
        add_records(db_session, base_settings, batch, 3, client_ip=ip, nbytes=50_000 + i, step_ms=30_000)
    assert close_and_flag(db_session, base_settings, batch) == {}
    assert excluded_ids(db_session, batch) == set()


def test_requests_and_bytes_per_client(
    db_session: Session, base_settings: Settings, source: DeliverySource
) -> None:
    settings = base_settings.model_copy(
        update={"fraud_max_requests_per_client": 5, "fraud_max_bytes_per_client": 10_000}
    )
    batch = open_batch(db_session, source, DAY0)
    chatty = add_records(db_session, settings, batch, 6, client_ip="198.51.100.1", nbytes=10, step_ms=120_000)
    heavy = add_records(
        db_session, settings, batch, 3, client_ip="198.51.100.2", nbytes=4_000, step_ms=120_000
    )
    fine = add_records(
        db_session, settings, batch, 5, client_ip="198.51.100.3", nbytes=2_000, step_ms=120_000
    )
    flags = close_and_flag(db_session, settings, batch)
    assert set(flags) == {signals.Signal.requests_per_client, signals.Signal.bytes_per_client}
    (requests_flag,) = flags[signals.Signal.requests_per_client]
    (bytes_flag,) = flags[signals.Signal.bytes_per_client]
    assert requests_flag.subject == chatty[0].client_pseudonym.hex()  # type: ignore[union-attr]
    assert requests_flag.record_count == 6 and json.loads(requests_flag.details_json)["requests"] == 6
    assert bytes_flag.record_count == 3 and json.loads(bytes_flag.details_json)["bytes"] == 12_000
    assert excluded_ids(db_session, batch) == ids(chatty) | ids(heavy)
    assert not ids(fine) & excluded_ids(db_session, batch)
    # Flagged records stay in the tree: the root covers every record.
    assert reload(db_session, batch).leaf_count == 14


def test_single_client_dominance(
    db_session: Session, base_settings: Settings, source: DeliverySource
) -> None:
    settings = base_settings.model_copy(
        update={"fraud_dominance_min_requests": 10, "fraud_dominance_share_bps": 5_000}
    )
    dominated = open_batch(db_session, source, DAY0)
    big = add_records(db_session, settings, dominated, 6, client_ip="198.51.100.1", step_ms=120_000)
    add_records(db_session, settings, dominated, 5, client_ip="198.51.100.2", step_ms=120_000)
    flags = close_and_flag(db_session, settings, dominated)
    (flag,) = flags[signals.Signal.client_dominance]
    assert json.loads(flag.details_json)["share_bps"] == 6 * 10_000 // 11
    assert excluded_ids(db_session, dominated) == ids(big)

    balanced = open_batch(db_session, source, DAY0 + PERIOD)  # 5 of 11 each is below half
    add_records(db_session, settings, balanced, 5, client_ip="198.51.100.1", step_ms=120_000)
    add_records(db_session, settings, balanced, 5, client_ip="198.51.100.2", step_ms=120_000)
    add_records(db_session, settings, balanced, 1, client_ip="198.51.100.3", step_ms=120_000)
    assert close_and_flag(db_session, settings, balanced) == {}

    small = open_batch(db_session, source, DAY0 + 2 * PERIOD)  # under the minimum size: no dominance
    add_records(db_session, settings, small, 4, client_ip="198.51.100.1", step_ms=120_000)
    add_records(db_session, settings, small, 1, client_ip="198.51.100.2", step_ms=120_000)
    assert close_and_flag(db_session, settings, small) == {}


def test_self_requests_from_the_nodes_own_ip(
    db_session: Session, base_settings: Settings, source: DeliverySource
) -> None:
    batch = open_batch(db_session, source, DAY0)
    own = add_records(db_session, base_settings, batch, 2, client_ip=NODE_IP, step_ms=120_000)
    own_other_day = add_records(
        db_session, base_settings, batch, 1, client_ip=NODE_IP, key_id="2026-01-02", step_ms=120_000
    )
    add_records(db_session, base_settings, batch, 3, client_ip="192.0.2.11", step_ms=120_000)
    flags = close_and_flag(db_session, base_settings, batch)
    assert set(flags) == {signals.Signal.self_request}
    assert sorted(f.record_count for f in flags[signals.Signal.self_request]) == [1, 2]
    assert {json.loads(f.details_json)["node_ip"] for f in flags[signals.Signal.self_request]} == {NODE_IP}
    assert excluded_ids(db_session, batch) == ids(own) | ids(own_other_day)


def _asset(session: Session, asset_id: int, size: int) -> None:
    session.add(
        Asset(
            id=asset_id,
            content_hash="0x" + f"{asset_id:064x}",
            content_cid="bafy",
            metadata_cid="bafy",
            creator="0x" + "33" * 20,
            owner="0x" + "33" * 20,
            aigc=False,
            title="clip",
            media_type="video/mp4",
            size_bytes=size,
            territories_bitmap=hex(1),
            valid_from=0,
            valid_until=0,
            royalty_bps=0,
            chain_id=31337,
            contract_address="0x" + "44" * 20,
            tx_hash="0x" + "55" * 32,
            block_number=1,
            log_index=0,
            registered_at=datetime.now(UTC),
        )
    )
    session.commit()


def test_bytes_above_the_assets_size(
    db_session: Session, base_settings: Settings, source: DeliverySource
) -> None:
    _asset(db_session, 7, 5_000)
    batch = open_batch(db_session, source, DAY0)
    too_big = add_records(db_session, base_settings, batch, 2, asset_id=7, nbytes=5_001, step_ms=120_000)
    add_records(db_session, base_settings, batch, 2, asset_id=7, nbytes=5_000, client_ip="198.51.100.4")
    add_records(db_session, base_settings, batch, 1, asset_id=0, nbytes=10**9, client_ip="198.51.100.5")
    add_records(db_session, base_settings, batch, 1, asset_id=99, nbytes=10**9, client_ip="198.51.100.6")
    flags = close_and_flag(db_session, base_settings, batch)
    (flag,) = flags[signals.Signal.bytes_above_asset_size]
    assert flag.subject == "asset:7" and flag.record_count == 2
    assert json.loads(flag.details_json) == {"asset_size": 5_000, "records": 2, "largest": 5_001}
    assert excluded_ids(db_session, batch) == ids(too_big)


def test_impossible_transfer_speed(
    db_session: Session, base_settings: Settings, source: DeliverySource
) -> None:
    settings = base_settings.model_copy(update={"fraud_max_client_bytes_per_second": 100})  # 6,000 B/min
    batch = open_batch(db_session, source, DAY0)
    minute = DAY0 * 1000 + 60_000
    fast = add_records(db_session, settings, batch, 2, nbytes=4_000, start_ms=minute + 1_000, step_ms=10_000)
    slow = add_records(
        db_session,
        settings,
        batch,
        2,
        client_ip="198.51.100.9",
        nbytes=4_000,
        start_ms=minute,
        step_ms=120_000,
    )
    flags = close_and_flag(db_session, settings, batch)
    (flag,) = flags[signals.Signal.impossible_speed]
    assert flag.subject.endswith(f"@{minute}") and flag.record_count == 2
    assert json.loads(flag.details_json)["bytes"] == 8_000
    assert excluded_ids(db_session, batch) == ids(fast)
    assert not ids(slow) & excluded_ids(db_session, batch)


def test_duplicate_request_ids_quarantined_by_ingestion(
    db_session: Session, base_settings: Settings, source: DeliverySource
) -> None:
    other = DeliverySource(
        source_id=source_id_for("other"),
        name="other",
        kind="cdn_provider",
        provider="cloudfront",
        operator="0x" + "11" * 20,
        signer="0x" + "22" * 20,
        regions_bitmap=hex(1),
        jurisdiction="DE",
        status=SourceStatus.active,
    )
    db_session.add(other)
    db_session.commit()
    batch = open_batch(db_session, source, DAY0)
    ids_ = ["req-dup-column", "req-dup-raw", "req-dup-elsewhere", "req-clean"]
    records = add_records(db_session, base_settings, batch, 4, request_ids=ids_, step_ms=120_000)
    mine = IngestFile(source_pk=source.id, name="replay.log", state=IngestState.done, pseudonym_key_id="k")
    theirs = IngestFile(source_pk=other.id, name="x.log", state=IngestState.done, pseudonym_key_id="k")
    db_session.add_all([mine, theirs])
    db_session.flush()
    reason = signals.DUPLICATE_REASON
    db_session.add_all(
        [
            QuarantinedLineRow(
                ingest_file_pk=mine.id, line_number=1, reason=reason, raw="...", request_id=ids_[0]
            ),
            QuarantinedLineRow(
                ingest_file_pk=mine.id,
                line_number=2,
                reason=reason,
                raw='{"request_id": "req-dup-raw", "client_ip": "[ip]", "bytes": 10}',
            ),
            QuarantinedLineRow(
                ingest_file_pk=theirs.id, line_number=1, reason=reason, raw="x", request_id=ids_[2]
            ),
            QuarantinedLineRow(
                ingest_file_pk=mine.id, line_number=3, reason="bad_status", raw="req-clean 999"
            ),
        ]
    )
    db_session.commit()
    flags = close_and_flag(db_session, base_settings, batch)
    assert sorted(f.subject for f in flags[signals.Signal.duplicate_request_id]) == [
        "req-dup-column",
        "req-dup-raw",
    ]
    assert excluded_ids(db_session, batch) == {records[0].id, records[1].id}
    # Running the signals again raises nothing new (one flag per signal and subject).
    assert signals.flag_batch(db_session, base_settings, reload(db_session, batch)) == []


# ----------------------------------------------------------------------------------------------
# Review and receipts through the API (anchored on the real chain)
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def admin(app_client: TestClient) -> Caller:
    return make_caller(app_client, Role.admin, "admin")


@pytest.fixture
def anchored(app_client: TestClient, admin: Caller, settings: Settings) -> Iterator[dict[str, Any]]:
    """One anchored batch: client A (6 requests of shop.example, asset 1, EU) trips both per-client
    signals; client B's records (2 on shop.example asset 1 EU, 3 on other.example asset 2 NA) are clean."""
    register(app_client, admin, "cdn-receipts")
    strict = settings.model_copy(
        update={"fraud_max_requests_per_client": 5, "fraud_max_bytes_per_client": 3_500}
    )
    chain: ChainClient = app_client.app.state.chain  # type: ignore[attr-defined]
    with db(app_client) as session:
        source = service.get_source(session, "cdn-receipts")
        batch = open_batch(session, source, DAY0)
        a = add_records(session, strict, batch, 6, client_ip="198.51.100.1", asset_id=1, nbytes=1_000)
        b1 = add_records(session, strict, batch, 2, client_ip="198.51.100.2", asset_id=1, nbytes=700)
        b2 = add_records(
            session,
            strict,
            batch,
            3,
            client_ip="198.51.100.2",
            asset_id=2,
            nbytes=300,
            host="Other.Example",
            region="NA",
        )
        batches.close_due_batches(session, strict, force=True)
        assert anchoring.anchor_pending(session, chain, strict).anchored == [batch.batch_id]
        yield {"batch": batch, "a": a, "b1": b1, "b2": b2}


def receipt_rows(client: TestClient, caller: Caller, **params: Any) -> list[dict[str, Any]]:
    response = client.get("/deliveries/receipts", params=params, headers=caller.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_receipts_sum_the_records_and_follow_flag_reviews(
    app_client: TestClient, admin: Caller, anchored: dict[str, Any]
) -> None:
    batch: DeliveryBatch = anchored["batch"]
    rows = receipt_rows(app_client, admin)
    by_asset = {r["asset_id"]: r for r in rows}
    assert set(by_asset) == {1, 2}
    shop, other = by_asset[1], by_asset[2]
    assert (shop["requests"], shop["bytes_delivered"]) == (2, 1_400)  # client A excluded
    assert (shop["excluded_requests"], shop["excluded_bytes"]) == (6, 6_000)
    assert (other["requests"], other["bytes_delivered"], other["excluded_requests"]) == (3, 900, 0)
    assert other["host"] == "other.example" and other["region"] == "NA"
    assert other["merchant_id"] == hex32(merchant_id_for("other.example"))
    assert shop["batch_ids"] == [batch.batch_id] and shop["period_start"] == DAY0
    assert sum(r["requests"] + r["excluded_requests"] for r in rows) == 11
    assert sum(r["bytes_delivered"] + r["excluded_bytes"] for r in rows) == 6_000 + 1_400 + 900

    flags = app_client.get(f"/deliveries/batches/{batch.batch_id}/flags", headers=admin.headers).json()
    assert sorted(f["signal"] for f in flags) == ["bytes_per_client", "requests_per_client"]
    assert all(f["record_count"] == 6 and f["state"] == "open" for f in flags)
    first, second = flags
    merchant = make_caller(app_client, Role.merchant, "merchant")
    denied = app_client.post(
        f"/deliveries/flags/{first['id']}/review",
        json={"decision": "dismissed", "reason": "x"},
        headers=merchant.headers,
    )
    assert denied.status_code == 403

    # Dismissing one of two flags over the same records keeps them excluded.
    reviewed = app_client.post(
        f"/deliveries/flags/{first['id']}/review",
        json={"decision": "dismissed", "reason": "load test by the merchant"},
        headers=admin.headers,
    )
    assert reviewed.status_code == 200, reviewed.text
    body = reviewed.json()
    assert body["state"] == "dismissed" and body["reviewed_by"] == admin.user_id and body["reviewed_at"]
    assert body["review_reason"] == "load test by the merchant"
    assert {r["asset_id"]: r["requests"] for r in receipt_rows(app_client, admin)}[1] == 2
    again = app_client.post(
        f"/deliveries/flags/{first['id']}/review",
        json={"decision": "confirmed", "reason": "x"},
        headers=admin.headers,
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "flag_already_reviewed"

    # Dismissing the other one too: client A's records count again and the receipts follow.
    app_client.post(
        f"/deliveries/flags/{second['id']}/review",
        json={"decision": "dismissed", "reason": "ok"},
        headers=admin.headers,
    )
    shop = {r["asset_id"]: r for r in receipt_rows(app_client, admin)}[1]
    assert (shop["requests"], shop["bytes_delivered"], shop["excluded_requests"]) == (8, 7_400, 0)
    open_flags = app_client.get("/deliveries/flags", params={"state": "open"}, headers=admin.headers).json()
    assert open_flags == []
    with db(app_client) as session:
        assert not any(
            session.scalars(select(DeliveryRecordRow.excluded).where(DeliveryRecordRow.batch_pk == batch.id))
        )


def test_confirmed_flag_keeps_records_excluded(
    app_client: TestClient, admin: Caller, anchored: dict[str, Any]
) -> None:
    batch: DeliveryBatch = anchored["batch"]
    auditor = make_caller(app_client, Role.auditor, "auditor")
    flags = app_client.get(
        "/deliveries/flags", params={"batch": batch.batch_id}, headers=auditor.headers
    ).json()
    assert len(flags) == 2
    confirmed = app_client.post(
        f"/deliveries/flags/{flags[0]['id']}/review",
        json={"decision": "confirmed", "reason": "bot traffic"},
        headers=admin.headers,
    )
    assert confirmed.json()["state"] == "confirmed"
    app_client.post(
        f"/deliveries/flags/{flags[1]['id']}/review",
        json={"decision": "dismissed", "reason": "dup"},
        headers=admin.headers,
    )
    shop = {r["asset_id"]: r for r in receipt_rows(app_client, admin)}[1]
    assert (shop["requests"], shop["excluded_requests"]) == (2, 6)
    with db(app_client) as session:
        states = set(session.scalars(select(FraudFlag.state)))
    assert states == {FlagState.confirmed, FlagState.dismissed}
    missing = app_client.post(
        "/deliveries/flags/9999/review", json={"decision": "confirmed", "reason": "x"}, headers=admin.headers
    )
    assert missing.status_code == 404


def test_merchants_see_only_their_hosts(
    app_client: TestClient, admin: Caller, anchored: dict[str, Any]
) -> None:
    shop_owner = make_caller(app_client, Role.merchant, "shop")
    stranger = make_caller(app_client, Role.merchant, "stranger")
    with db(app_client) as session:
        session.add(MerchantHost(host="shop.example", merchant_user_id=shop_owner.user_id))
        session.commit()
    own = receipt_rows(app_client, shop_owner)
    assert [r["host"] for r in own] == ["shop.example"] and own[0]["requests"] == 2
    assert receipt_rows(app_client, shop_owner, merchant="other.example") == []
    assert receipt_rows(app_client, stranger) == []
    auditor = make_caller(app_client, Role.auditor, "auditor")
    assert len(receipt_rows(app_client, auditor)) == 2
    by_host = receipt_rows(app_client, auditor, merchant="other.example")
    assert [r["asset_id"] for r in by_host] == [2]
    assert receipt_rows(app_client, auditor, asset=1)[0]["host"] == "shop.example"
    assert receipt_rows(app_client, auditor, period_start=DAY0 + PERIOD) == []
    operator = make_caller(app_client, Role.operator, "operator")
    assert app_client.get("/deliveries/receipts", headers=operator.headers).status_code == 403


def test_receipts_only_count_anchored_batches(
    db_session: Session, base_settings: Settings, source: DeliverySource
) -> None:
    batch = open_batch(db_session, source, DAY0)
    add_records(db_session, base_settings, batch, 3, nbytes=10)
    add_records(db_session, base_settings, batch, 2, nbytes=20, host="b.example", region="AP")
    closed = batches.close_batch(db_session, base_settings, batch.id)
    assert closed is not None
    rows = receipts.compute_receipts(db_session, closed)
    db_session.commit()
    assert sorted((r.host, r.requests, r.bytes_delivered) for r in rows) == [
        ("b.example", 2, 40),
        ("shop.example", 3, 30),
    ]
    assert receipts.aggregate_receipts(db_session) == []  # closed, not anchored: not a receipt yet
    closed.state = "final"
    db_session.commit()
    totals = receipts.aggregate_receipts(db_session, merchant_ids=[receipts.merchant_filter_id("B.example")])
    assert [(t.host, t.requests, t.bytes_delivered, t.batch_ids) for t in totals] == [
        ("b.example", 2, 40, [batch.batch_id])
    ]


def test_receipts_show_what_waits_for_a_fraud_review(
    app_client: TestClient, admin: Caller, anchored: dict[str, Any], settings: Settings
) -> None:
    """While a flag over a merchant's records is open, no settlement of that merchant counts the batch
    (settlement.period_inputs.under_review), for any of its hosts. The listing keeps the rows and says
    which part of each waits, and why (the batches), instead of showing it as billable or hiding it."""
    flagged: DeliveryBatch = anchored["batch"]
    register(app_client, admin, "cdn-clean")
    chain: ChainClient = app_client.app.state.chain  # type: ignore[attr-defined]
    with db(app_client) as session:  # a clean batch of another source, same merchant, asset and region
        clean = open_batch(session, service.get_source(session, "cdn-clean"), DAY0)
        add_records(session, settings, clean, 4, client_ip="198.51.100.3", asset_id=1, nbytes=500)
        batches.close_due_batches(session, settings, force=True)
        assert anchoring.anchor_pending(session, chain, settings).anchored == [clean.batch_id]
    shop_owner = make_caller(app_client, Role.merchant, "shop")
    with db(app_client) as session:
        session.add(MerchantHost(host="shop.example", merchant_user_id=shop_owner.user_id))
        session.commit()

    rows = {r["asset_id"]: r for r in receipt_rows(app_client, admin)}
    shop, other = rows[1], rows[2]
    assert sorted(shop["batch_ids"]) == sorted([flagged.batch_id, clean.batch_id])
    assert (shop["requests"], shop["bytes_delivered"]) == (2 + 4, 1_400 + 2_000)
    assert shop["under_review"] and shop["under_review_batch_ids"] == [flagged.batch_id]
    assert (shop["under_review_requests"], shop["under_review_bytes"]) == (2, 1_400)
    # other.example is no host of the shop's: its records in the batch are not under review
    assert not other["under_review"] and other["under_review_batch_ids"] == []
    assert (other["under_review_requests"], other["under_review_bytes"]) == (0, 0)
    with db(app_client) as session:  # the batches settlement holds back for the shop: the same
        held = set(session.scalars(under_review([hex32(merchant_id_for("shop.example"))])))
    assert held == {flagged.id}

    # Registered to the shop, other.example's records in the flagged batch wait too: settlement holds
    # the batch for the whole merchant, whichever host the flagged records name.
    with db(app_client) as session:
        session.add(MerchantHost(host="other.example", merchant_user_id=shop_owner.user_id))
        session.commit()
    own = {r["asset_id"]: r for r in receipt_rows(app_client, shop_owner)}
    assert own[2]["under_review"] and own[2]["under_review_batch_ids"] == [flagged.batch_id]
    assert (own[2]["under_review_requests"], own[2]["under_review_bytes"]) == (3, 900)
    assert (own[1]["under_review_requests"], own[1]["under_review_bytes"]) == (2, 1_400)

    # Decided (one confirmed, one dismissed): nothing waits any more.
    flags = app_client.get(f"/deliveries/batches/{flagged.batch_id}/flags", headers=admin.headers).json()
    for flag, decision in zip(flags, ("confirmed", "dismissed"), strict=True):
        reviewed = app_client.post(
            f"/deliveries/flags/{flag['id']}/review",
            json={"decision": decision, "reason": "reviewed"},
            headers=admin.headers,
        )
        assert reviewed.status_code == 200, reviewed.text
    after = receipt_rows(app_client, shop_owner)
    assert [r["under_review"] for r in after] == [False, False]
    assert all(r["under_review_requests"] == r["under_review_bytes"] == 0 for r in after)
    assert {r["asset_id"]: r["requests"] for r in after} == {1: 6, 2: 3}


def test_open_flags_say_they_hold_pay_and_when_their_review_is_overdue(
    app_client: TestClient, admin: Caller, anchored: dict[str, Any]
) -> None:
    """An open flag holds its batch's pay (once a merchant whose records it covers lets the batch's
    source bill it) and is due for review FRAUD_REVIEW_DUE_SECONDS (three days by default) after it was
    raised; ``overdue=true`` lists the open flags past that, and a decided flag holds nothing and is due
    for nothing."""
    batch: DeliveryBatch = anchored["batch"]
    url = f"/deliveries/batches/{batch.batch_id}/flags"

    def holding() -> list[bool]:
        return [f["holds_pay"] for f in app_client.get(url, headers=admin.headers).json()]

    # shop.example is no merchant's yet, then a merchant's that has not authorised the source: no
    # settlement would bill the batch, so the flags hold no pay.
    assert holding() == [False, False]
    shop_owner = make_caller(app_client, Role.merchant, "shop")
    with db(app_client) as session:
        session.add(MerchantHost(host="shop.example", merchant_user_id=shop_owner.user_id))
        session.commit()
    assert holding() == [False, False]
    with db(app_client) as session:
        session.add(
            MerchantSource(merchant_user_id=shop_owner.user_id, source_pk=batch.source_pk, authorised_by="t")
        )
        session.commit()
    assert holding() == [True, True]
    flags = app_client.get(url, headers=admin.headers).json()
    assert len(flags) == 2
    for flag in flags:
        assert flag["holds_pay"] and not flag["overdue"]
        raised = datetime.fromisoformat(flag["created_at"])
        assert datetime.fromisoformat(flag["due_at"]) - raised == timedelta(days=3)
    overdue = app_client.get("/deliveries/flags", params={"overdue": "true"}, headers=admin.headers)
    assert overdue.status_code == 200 and overdue.json() == []
    decided_ones = {"overdue": "true", "state": "dismissed"}  # only open flags can be overdue
    refused = app_client.get("/deliveries/flags", params=decided_ones, headers=admin.headers)
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "flag_filter_invalid"
    # One flag raised four days ago: overdue, and the only one on the reviewers' overdue list.
    old, recent = flags
    with db(app_client) as session:
        row = session.get(FraudFlag, old["id"])
        assert row is not None
        row.created_at = datetime.now(UTC) - timedelta(days=4)
        session.commit()
    listed = app_client.get("/deliveries/flags", params={"overdue": "true"}, headers=admin.headers).json()
    assert [f["id"] for f in listed] == [old["id"]] and listed[0]["overdue"] and listed[0]["holds_pay"]
    every = app_client.get("/deliveries/flags", headers=admin.headers).json()
    assert {f["id"]: f["overdue"] for f in every} == {old["id"]: True, recent["id"]: False}
    # one page at a time, oldest first
    pages = [
        app_client.get("/deliveries/flags", params={"limit": 1, "offset": o}, headers=admin.headers).json()
        for o in (0, 1, 2)
    ]
    assert [[f["id"] for f in page] for page in pages] == [[old["id"]], [recent["id"]], []]
    assert [p[0]["holds_pay"] for p in pages[:2]] == [True, True]
    too_many = app_client.get("/deliveries/flags", params={"limit": 10_001}, headers=admin.headers)
    assert too_many.status_code == 422, too_many.text
    # Decided: it holds nothing and is due for nothing.
    decided = app_client.post(
        f"/deliveries/flags/{old['id']}/review",
        json={"decision": "confirmed", "reason": "one client cannot fetch that much"},
        headers=admin.headers,
    ).json()
    assert not decided["holds_pay"] and decided["due_at"] is None and not decided["overdue"]
    assert app_client.get("/deliveries/flags", params={"overdue": "true"}, headers=admin.headers).json() == []
    # An abandoned batch is billed to no one: its open flag holds nothing either.
    with db(app_client) as session:
        row = session.get(DeliveryBatch, batch.id)
        assert row is not None
        row.state = BatchState.abandoned  # as POST /deliveries/batches/{id}/abandon leaves it
        session.commit()
    assert holding() == [False, False]


def test_a_review_during_anchoring_leaves_receipts_that_agree_with_the_records(
    app_client: TestClient, admin: Caller, settings: Settings
) -> None:
    """Anchoring marks the batch anchored and computes its receipts from the records in one transaction;
    a flag's review decided meanwhile waits for the batch's row, then sees it anchored and recomputes the
    receipts from its decision. Without that order the review read the batch as not anchored (anchoring's
    update uncommitted) and skipped the recomputation, while anchoring had read the records before the
    review's exclusions: receipts that disagree with the records for good."""
    engine = app_client.app.state.engine  # type: ignore[attr-defined]
    register(app_client, admin, "cdn-race")
    strict = settings.model_copy(update={"fraud_max_requests_per_client": 5})
    with db(app_client) as session:
        batch = open_batch(session, service.get_source(session, "cdn-race"), DAY0)
        add_records(session, strict, batch, 6, client_ip="198.51.100.1", asset_id=1, nbytes=1_000)
        add_records(session, strict, batch, 2, client_ip="198.51.100.2", asset_id=1, nbytes=700)
        batches.close_due_batches(session, strict, force=True)
        flags = signals.list_flags(session, batch=batch)
        assert flags and all(f.state == signals.FlagState.open for f in flags)
        flag_ids, batch_pk = [f.id for f in flags], batch.id

    # Anchoring, up to its commit: the batch marked anchored, its receipts computed (client A excluded).
    anchoring_session = db(app_client)
    marking = anchoring_session.get(DeliveryBatch, batch_pk)
    assert marking is not None
    marking.state = BatchState.anchored  # written (and its row locked) when the receipts' query flushes it
    receipts.compute_receipts(anchoring_session, marking)

    done: dict[str, Any] = {}

    def review() -> None:
        with db(app_client) as session:
            for flag_id in flag_ids:
                flag = signals.get_flag(session, flag_id)
                decision = signals.FlagReview(decision="dismissed", reason="a shared office gateway")
                signals.review_flag(session, flag, decision, admin.user_id)
        done["reviewed"] = True

    thread = threading.Thread(target=review)
    thread.start()
    if engine.dialect.name == "postgresql":
        for _ in range(400):  # until the review waits on the batch's row, or is done without waiting
            with engine.connect() as probe:
                waiting = probe.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                ).scalar()
            if waiting or not thread.is_alive():
                break
            time.sleep(0.05)
    else:
        time.sleep(0.5)  # the review reaches the database's write lock meanwhile
    anchoring_session.commit()
    anchoring_session.close()
    thread.join()
    assert done == {"reviewed": True}

    with db(app_client) as session:
        rows = session.scalars(select(DeliveryReceipt).where(DeliveryReceipt.batch_pk == batch_pk)).all()
        counted = session.scalar(
            select(func.count(DeliveryRecordRow.id)).where(
                DeliveryRecordRow.batch_pk == batch_pk, DeliveryRecordRow.excluded.is_(False)
            )
        )
    # Dismissed: every record counts again, and the receipts say so.
    assert counted == 8
    assert sum(r.requests for r in rows) == counted and sum(r.excluded_requests for r in rows) == 0
