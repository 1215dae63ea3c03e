"""Sources on chain, batch closing, EIP-712 manifests, exactly-once anchoring and confirmations, against a
real anvil, real databases (SQLite and PostgreSQL) and a real Celery worker on Redis."""

from __future__ import annotations

import json
import secrets
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from eth_account import Account
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger import db as db_module
from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.cli import app as cli_app
from edgeledger.config import Settings, get_settings
from edgeledger.deliveries import anchoring, batches, service, sources, tasks, trees
from edgeledger.deliveries.models import (
    BatchKind,
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
    DeliverySource,
    IngestFile,
    IngestState,
)
from edgeledger.ledger.abis import DELIVERY_LEDGER
from edgeledger.ledger.delivery_leaf import leaf_hash
from edgeledger.ledger.hashing import bytes32
from edgeledger.ledger.ids import batch_id_for, client_commitment, merchant_id_for, source_id_for
from edgeledger.ledger.manifest import MANIFEST_FIELDS, Manifest
from edgeledger.worker import RetryableChainError
from tests.backend.support.services import REDIS_URL, celery_worker, worker_env
from tests.backend.support.stack import Caller, free_port, make_caller, rpc

pytestmark = pytest.mark.integration

DAY0 = 1767225600  # 2026-01-01T00:00:00Z
PERIOD = 86400


# ----------------------------------------------------------------------------------------------
# Helpers: batches and records written directly (no ingestion), with real leaves
# ----------------------------------------------------------------------------------------------


def db(client: TestClient) -> Session:
    return Session(client.app.state.engine, expire_on_commit=False)  # type: ignore[attr-defined]


def open_batch(
    session: Session,
    source: DeliverySource,
    period_start: int,
    *,
    kind: str = BatchKind.regular,
    seq: int = 0,
    corrects: DeliveryBatch | None = None,
) -> DeliveryBatch:
    end = period_start + PERIOD
    batch = DeliveryBatch(
        batch_id=batch_id_for(source.source_id, period_start, end, kind, seq),
        source_pk=source.id,
        period_start=period_start,
        period_end=end,
        kind=kind,
        correction_seq=seq,
        corrects_pk=corrects.id if corrects else None,
        state=BatchState.open,
    )
    session.add(batch)
    session.commit()
    return batch


def add_records(
    session: Session,
    settings: Settings,
    batch: DeliveryBatch,
    count: int,
    *,
    client_ip: str = "203.0.113.9",
    host: str = "shop.example",
    asset_id: int = 0,
    nbytes: int = 1000,
    region: str = "EU",
    start_ms: int | None = None,
    step_ms: int = 1000,
    key_id: str = "2026-01-01",
    request_ids: list[str] | None = None,
    commit: bool = True,
) -> list[DeliveryRecordRow]:
    """``count`` records of one client in ``batch`` with real pseudonyms, commitments and leaves
    (``commit=False``: only flushed, the transaction stays open)."""
    source = session.get(DeliverySource, batch.source_pk)
    assert source is not None
    pseudonym = service.pseudonymiser_for(session, settings, key_id).pseudonym(client_ip)
    ingest = IngestFile(
        source_pk=source.id, name="test.log", state=IngestState.done, pseudonym_key_id=key_id, lines=count
    )
    session.add(ingest)
    session.flush()
    first = start_ms if start_ms is not None else batch.period_start * 1000 + 5_000
    rows = []
    for i in range(count):
        salt = secrets.token_bytes(32)
        record = DeliveryRecordRow(
            source_pk=source.id,
            batch_pk=batch.id,
            ingest_file_pk=ingest.id,
            line_number=i + 1,
            request_id=request_ids[i] if request_ids else f"req-{secrets.token_hex(8)}",
            timestamp_ms=first + i * step_ms,
            edge_location="FRA56-C1",
            country="DE",
            region=region,
            host=host,
            uri=f"/media/{asset_id}.mp4",
            asset_id=asset_id,
            merchant_id=merchant_id_for(host),
            bytes_delivered=nbytes,
            status=200,
            cache_result=1,
            pseudonym_key_id=key_id,
            client_pseudonym=pseudonym,
            salt=salt,
            client_commitment=client_commitment(salt, pseudonym),
            leaf=b"",
        )
        record.leaf = leaf_hash(service.leaf_values_of(source.source_id, record))
        rows.append(record)
    session.add_all(rows)
    if commit:
        session.commit()
    else:
        session.flush()
    return rows


def register(client: TestClient, admin: Caller, name: str, **body: Any) -> dict[str, Any]:
    payload = {"name": name, "kind": "cdn_provider", "provider": "cloudfront", "regions": ["DE", "AT"]}
    payload |= {"jurisdiction": "DE", **body}
    response = client.post("/deliveries/sources", json=payload, headers=admin.headers)
    assert response.status_code == 201, response.text
    return response.json()


def source_row(session: Session, name: str) -> DeliverySource:
    return service.get_source(session, name)


def nonce(chain: ChainClient) -> int:
    return chain.w3.eth.get_transaction_count(chain.signer_address)


def ledger(chain: ChainClient) -> Any:
    return chain.contract(DELIVERY_LEDGER).functions


def reload(session: Session, batch: DeliveryBatch) -> DeliveryBatch:
    fresh = session.get(DeliveryBatch, batch.id, populate_existing=True)
    assert fresh is not None
    return fresh


@pytest.fixture
def admin(app_client: TestClient) -> Caller:
    return make_caller(app_client, Role.admin, "admin")


@pytest.fixture
def chain(app_client: TestClient) -> ChainClient:
    return app_client.app.state.chain  # type: ignore[attr-defined]


def closed_cdn_batches(
    client: TestClient, admin: Caller, settings: Settings, name: str = "cdn-a", days: int = 1
) -> list[DeliveryBatch]:
    register(client, admin, name)
    with db(client) as session:
        source = source_row(session, name)
        opened = []
        for day in range(days):
            batch = open_batch(session, source, DAY0 + day * PERIOD)
            add_records(session, settings, batch, 3 + day)
            opened.append(batch)
        batches.close_due_batches(session, settings, force=True)
        return [reload(session, b) for b in opened]


# ----------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------


def test_sources_register_suspend_reactivate_and_sync(
    app_client: TestClient, admin: Caller, chain: ChainClient, settings: Settings
) -> None:
    operator = make_caller(app_client, Role.operator, "node operator")
    node_signer = Account.create()
    edge = register(
        app_client,
        admin,
        "edge-fra-1",
        kind="edge_node",
        provider="edgeledger",
        operator=operator.account.address,
        signer=node_signer.address,
        regions=["de", "FR"],
        node_ips=["192.0.2.10", "2001:DB8::1"],
        operator_user_id=operator.user_id,
    )
    assert edge["status"] == "active" and edge["tx_hash"] and edge["block_number"]
    assert edge["source_id"] == source_id_for("edge-fra-1")
    assert edge["regions"] == ["DE", "FR"] and edge["node_ips"] == ["192.0.2.10", "2001:db8::1"]
    on_chain = sources.chain_source(chain, edge["source_id"])
    assert on_chain is not None and on_chain["signer"] == node_signer.address and on_chain["kind"] == 0
    assert on_chain["operator"] == operator.account.address and on_chain["jurisdiction"] == "DE"

    cdn = register(app_client, admin, "cloudfront-main")
    ingest_address = Account.from_key(settings.resolved_ingest_signer_key.get_secret_value()).address  # type: ignore[union-attr]
    assert cdn["signer"] == ingest_address and cdn["kind"] == "cdn_provider"

    listed = app_client.get("/deliveries/sources", headers=operator.headers).json()
    assert [s["name"] for s in listed] == ["edge-fra-1", "cloudfront-main"]
    assert (
        app_client.get(f"/deliveries/sources/{edge['source_id']}", headers=admin.headers).json()["id"]
        == edge["id"]
    )

    again = app_client.post(
        "/deliveries/sources",
        json={
            "name": "cloudfront-main",
            "kind": "cdn_provider",
            "provider": "cloudfront",
            "regions": ["DE"],
            "jurisdiction": "DE",
        },
        headers=admin.headers,
    )
    assert again.status_code == 409 and again.json()["error"]["code"] == "source_exists"
    bad = app_client.post(
        "/deliveries/sources",
        json={
            "name": "x",
            "kind": "cdn_provider",
            "provider": "cloudfront",
            "regions": ["XX"],
            "jurisdiction": "DE",
        },
        headers=admin.headers,
    )
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "unknown_region"
    nobody = app_client.post(
        "/deliveries/sources",
        json={
            "name": "y",
            "kind": "edge_node",
            "provider": "edgeledger",
            "regions": ["DE"],
            "jurisdiction": "DE",
            "operator": operator.account.address,
            "signer": node_signer.address,
            "operator_user_id": 424242,
        },
        headers=admin.headers,
    )
    assert nobody.status_code == 422 and nobody.json()["error"]["code"] == "unknown_user"
    unsigned = app_client.post(
        "/deliveries/sources",
        json={
            "name": "z",
            "kind": "edge_node",
            "provider": "edgeledger",
            "regions": ["DE"],
            "jurisdiction": "DE",
        },
        headers=admin.headers,
    )
    assert unsigned.status_code == 422 and unsigned.json()["error"]["code"] == "signer_required"
    forbidden = app_client.post("/deliveries/sources/edge-fra-1/suspend", headers=operator.headers)
    assert forbidden.status_code == 403

    suspended = app_client.post("/deliveries/sources/edge-fra-1/suspend", headers=admin.headers)
    assert suspended.status_code == 200 and suspended.json()["status"] == "suspended"
    assert sources.chain_source(chain, edge["source_id"])["status"] == "suspended"  # type: ignore[index]
    reactivated = app_client.post("/deliveries/sources/edge-fra-1/reactivate", headers=admin.headers)
    assert reactivated.json()["status"] == "active"
    assert sources.chain_source(chain, edge["source_id"])["status"] == "active"  # type: ignore[index]

    # The node's operator rotates the signer from its own wallet; sync pulls it into the database.
    rpc(settings.eth_rpc_url, "anvil_setBalance", operator.account.address, hex(10**20))
    new_signer = Account.create()
    fn = ledger(chain).rotateSigner(bytes32(edge["source_id"]), new_signer.address)
    tx = fn.build_transaction(
        {
            "from": operator.account.address,
            "nonce": chain.w3.eth.get_transaction_count(operator.account.address),
            "chainId": chain.chain_id,
        }
    )
    raw = operator.account.sign_transaction(tx).raw_transaction
    chain.wait_for_receipt(chain.send_raw_transaction(raw))
    assert (
        app_client.get("/deliveries/sources/edge-fra-1", headers=admin.headers).json()["signer"]
        == node_signer.address
    )
    other = make_caller(app_client, Role.operator, "someone else")
    assert app_client.post("/deliveries/sources/edge-fra-1/sync", headers=other.headers).status_code == 403
    synced = app_client.post("/deliveries/sources/edge-fra-1/sync", headers=operator.headers)
    assert synced.status_code == 200 and synced.json()["signer"] == new_signer.address

    # CDN providers rotate through the platform; edge nodes may not.
    provider_key = Account.create()
    rotated = app_client.post(
        "/deliveries/sources/cloudfront-main/signer",
        json={"signer": provider_key.address},
        headers=admin.headers,
    )
    assert rotated.status_code == 200 and rotated.json()["signer"] == provider_key.address
    refused = app_client.post(
        "/deliveries/sources/edge-fra-1/signer", json={"signer": provider_key.address}, headers=admin.headers
    )
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "rotation_not_allowed"


def test_stuck_registration_resumes_without_a_second_transaction(
    app_client: TestClient, admin: Caller, chain: ChainClient, settings: Settings
) -> None:
    params = sources.SourceCreate(
        name="cdn-stuck", kind="cdn_provider", provider="fastly", regions=["*"], jurisdiction="NL"
    )
    with db(app_client) as session:
        # The journal row was committed, the transaction landed, the process died before marking it.
        row = sources._new_source_row(settings, params)
        session.add(row)
        session.commit()
        fn = ledger(chain).registerSource(
            bytes32(row.source_id), 1, row.operator, row.signer, int(row.regions_bitmap, 16), b"NL"
        )
        chain.transact(fn)
    before = nonce(chain)
    resumed = app_client.post(
        "/deliveries/sources", json=params.model_dump(mode="json"), headers=admin.headers
    )
    assert resumed.status_code == 201, resumed.text
    assert resumed.json()["status"] == "active"
    assert nonce(chain) == before  # nothing sent again

    with db(app_client) as session:  # a journal row whose transaction never went out is sent on retry
        row = sources._new_source_row(settings, params.model_copy(update={"name": "cdn-stuck-2"}))
        session.add(row)
        session.commit()
    synced = app_client.post("/deliveries/sources/cdn-stuck-2/sync", headers=admin.headers)
    assert synced.status_code == 200 and synced.json()["status"] == "active"
    assert nonce(chain) == before + 1


# ----------------------------------------------------------------------------------------------
# Closing
# ----------------------------------------------------------------------------------------------


def test_close_respects_late_window_corrections_empty_and_force(
    app_client: TestClient, admin: Caller, settings: Settings
) -> None:
    register(app_client, admin, "cdn-close")
    late = settings.delivery_late_window_seconds
    with db(app_client) as session:
        source = source_row(session, "cdn-close")
        regular = open_batch(session, source, DAY0)
        add_records(session, settings, regular, 4, nbytes=250)
        empty = open_batch(session, source, DAY0 + PERIOD)
        today = int(time.time()) // PERIOD * PERIOD
        current = open_batch(session, source, today)
        add_records(session, settings, current, 1)

        just_before = DAY0 + PERIOD + late - 1
        assert batches.close_due_batches(session, settings, just_before) == []
        closed = batches.close_due_batches(session, settings, DAY0 + PERIOD + late)
        assert [b.id for b in closed] == [regular.id]
        regular = reload(session, regular)
        assert regular.state == BatchState.closed and regular.closed_at is not None
        assert (regular.leaf_count, regular.total_requests, regular.total_bytes) == (4, 4, 1000)
        with trees.open_batch_tree(session, settings, regular) as tree:
            assert "0x" + tree.root.hex() == regular.root and tree.leaf_count == 4

        # A correction closes min(late window, 1 h) after it opened.
        correction = open_batch(session, source, DAY0, kind=BatchKind.correction, seq=1, corrects=regular)
        add_records(session, settings, correction, 2)
        opened = correction.created_at
        cutoff = min(late, batches.CORRECTION_MAX_OPEN_SECONDS)
        closed = batches.close_due_batches(session, settings, opened + timedelta(seconds=cutoff - 5))
        assert [b.id for b in closed] == [empty.id]  # its late window is long over, the correction's not
        closed = batches.close_due_batches(session, settings, opened + timedelta(seconds=cutoff + 1))
        assert [b.id for b in closed] == [correction.id]
        assert reload(session, empty).state == BatchState.empty and reload(session, empty).root is None
        assert reload(session, current).state == BatchState.open

        # force closes the current period too (demos): later records of it go to a correction batch.
        forced = batches.close_due_batches(session, settings, force=True)
        assert [b.id for b in forced] == [current.id]
        assert reload(session, current).state == BatchState.closed
        assert batches.close_batch(session, settings, current.id) is None  # already closed

    listed = app_client.get(
        "/deliveries/batches", params={"source": "cdn-close"}, headers=admin.headers
    ).json()
    assert {b["state"] for b in listed} == {"closed", "empty"} and len(listed) == 4


def test_a_close_waits_for_an_ingest_chunk_in_flight_and_includes_its_records(
    app_client: TestClient, admin: Caller, settings: Settings
) -> None:
    """An ingest chunk locked the batch and wrote records it has not committed yet (as ingest.py does:
    batch row FOR UPDATE, insert, commit). A close that starts meanwhile must wait for it and count its
    records, or they would sit in a closed batch without being in its tree. On SQLite FOR UPDATE is a
    no-op: the close's leading UPDATE is what waits for the chunk's write lock."""
    register(app_client, admin, "cdn-race")
    with db(app_client) as session:
        batch = open_batch(session, source_row(session, "cdn-race"), DAY0)
        add_records(session, settings, batch, 3)
    chunk = db(app_client)
    locked = chunk.scalar(select(DeliveryBatch).where(DeliveryBatch.id == batch.id).with_for_update())
    assert locked is not None and locked.state == BatchState.open
    add_records(chunk, settings, locked, 2, commit=False)

    results: list[DeliveryBatch | None] = []

    def close() -> None:
        with db(app_client) as session:
            results.append(batches.close_batch(session, settings, batch.id))

    closer = threading.Thread(target=close)
    closer.start()
    closer.join(timeout=1.0)  # gives the close time to reach the lock; it must still be waiting
    assert closer.is_alive(), "the close did not wait for the chunk in flight"
    chunk.commit()
    chunk.close()
    closer.join()
    assert results and results[0] is not None
    with db(app_client) as session:
        closed = reload(session, batch)
        assert closed.state == BatchState.closed and closed.leaf_count == 5
        with trees.open_batch_tree(session, settings, closed) as tree:
            assert tree.leaf_count == 5


def test_close_endpoint_forces_and_anchors_now(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    register(app_client, admin, "cdn-api")
    with db(app_client) as session:
        batch = open_batch(session, source_row(session, "cdn-api"), DAY0)
        add_records(session, settings, batch, 2)
    merchant = make_caller(app_client, Role.merchant, "merchant")
    assert app_client.post("/deliveries/batches/close", json={}, headers=merchant.headers).status_code == 403
    response = app_client.post(
        "/deliveries/batches/close", json={"force": True, "anchor_now": True}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert [b["batch_id"] for b in body["closed"]] == [batch.batch_id]
    assert body["anchoring"]["anchored"] == [batch.batch_id]
    assert body["confirmations"]["final"] == [batch.batch_id]
    shown = app_client.get(f"/deliveries/batches/{batch.batch_id}", headers=admin.headers).json()
    assert shown["state"] == "final" and shown["confirmations"] >= 1 and shown["tx_hash"]
    assert chain.call(ledger(chain).isAnchored(bytes32(batch.batch_id)))


# ----------------------------------------------------------------------------------------------
# Manifests
# ----------------------------------------------------------------------------------------------


def test_manifest_hash_and_digest_match_the_contract(chain: ChainClient, settings: Settings) -> None:
    manifest = Manifest(
        source_id=source_id_for("m"),
        batch_id="0x" + secrets.token_hex(32),
        period_start=DAY0,
        period_end=DAY0 + PERIOD,
        root="0x" + secrets.token_hex(32),
        leaf_count=12,
        total_bytes=2**100 + 7,
        total_requests=12,
        prev_manifest_hash="0x" + secrets.token_hex(32),
        kind=1,
        corrects="0x" + secrets.token_hex(32),
    )
    chain_id, contract = anchoring.ledger_domain(chain)
    on_chain_hash = chain.call(ledger(chain).manifestHash(manifest.as_tuple()))
    on_chain_digest = chain.call(ledger(chain).manifestDigest(manifest.as_tuple()))
    assert manifest.struct_hash() == "0x" + bytes(on_chain_hash).hex()
    assert manifest.digest(chain_id, contract) == "0x" + bytes(on_chain_digest).hex()
    key = Account.create()
    signature = manifest.sign(key.key.to_0x_hex(), chain_id, contract)
    assert manifest.recover(signature, chain_id, contract) == key.address


# ----------------------------------------------------------------------------------------------
# Anchoring
# ----------------------------------------------------------------------------------------------


def test_anchors_a_chain_of_three_batches_with_a_correction_in_order(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    register(app_client, admin, "cdn-chain")
    with db(app_client) as session:
        source = source_row(session, "cdn-chain")
        day1 = open_batch(session, source, DAY0)
        add_records(session, settings, day1, 3)
        day2 = open_batch(session, source, DAY0 + PERIOD)
        add_records(session, settings, day2, 2)
        batches.close_due_batches(session, settings, force=True)
        correction = open_batch(session, source, DAY0, kind=BatchKind.correction, seq=1, corrects=day1)
        add_records(session, settings, correction, 1)
        batches.close_due_batches(session, settings, force=True)

        report = anchoring.anchor_pending(session, chain, settings)
        assert report.errors == {}
        # period order, regular before its corrections: day 1, its correction, day 2
        assert report.anchored == [day1.batch_id, correction.batch_id, day2.batch_id]
        day1, correction, day2 = (reload(session, b) for b in (day1, correction, day2))

    zero = anchoring.ZERO32
    assert day1.prev_manifest_hash == zero
    assert correction.prev_manifest_hash == day1.manifest_hash
    assert day2.prev_manifest_hash == correction.manifest_hash
    assert all(
        b.state == BatchState.anchored and b.tx_hash and b.block_number for b in (day1, correction, day2)
    )
    on_chain = sources.chain_source(chain, source.source_id)
    assert on_chain is not None and on_chain["batch_count"] == 3
    assert on_chain["last_manifest_hash"] == day2.manifest_hash
    for batch in (day1, correction, day2):
        assert chain.call(ledger(chain).isAnchored(bytes32(batch.batch_id)))
        found = anchoring.find_anchor_log(chain, batch.batch_id)
        assert found is not None and found["manifest_hash"] == batch.manifest_hash
        assert found["tx_hash"] == batch.tx_hash
    with db(app_client) as session, trees.open_batch_tree(session, settings, day2) as tree:
        leaf = tree.node(tree.leaf_count - 1)
        proof = tree.proof(tree.leaf_count - 1)
        fn = ledger(chain).verifyLeaf(bytes32(day2.batch_id), leaf, proof)
        assert chain.call(fn) is True
        event = (
            chain.contract(DELIVERY_LEDGER)
            .events.BatchAnchored()
            .process_receipt(chain.w3.eth.get_transaction_receipt(correction.tx_hash))[0]["args"]
        )
        assert "0x" + bytes(event["corrects"]).hex() == day1.batch_id and event["kind"] == 1

        outcome = anchoring.confirm_anchors(session, chain, settings)
        assert sorted(outcome["final"]) == sorted([day1.batch_id, correction.batch_id, day2.batch_id])
        assert reload(session, day2).state == BatchState.final and reload(session, day2).finalized_at


def test_exactly_once_when_the_worker_died_after_sending(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    with db(app_client) as session:
        first = anchoring.anchor_pending(session, chain, settings)
        assert first.anchored == [batch.batch_id]
        anchored = reload(session, batch)
        tx_hash, block = anchored.tx_hash, anchored.block_number
        # As if the worker died right after broadcasting: state "anchoring", no tx hash recorded.
        session.execute(
            update(DeliveryBatch)
            .where(DeliveryBatch.id == batch.id)
            .values(state=BatchState.anchoring, tx_hash=None, block_number=None, anchored_at=None)
        )
        session.commit()
        sent = nonce(chain)
        again = anchoring.anchor_pending(session, chain, settings)
        assert again.anchored == [batch.batch_id] and again.errors == {}
        assert nonce(chain) == sent  # nothing was sent
        recovered = reload(session, batch)
        assert recovered.state == BatchState.anchored
        assert (recovered.tx_hash, recovered.block_number) == (tx_hash, block)
        assert recovered.attempts == 2
    on_chain = sources.chain_source(chain, source_id_for("cdn-a"))
    assert on_chain is not None and on_chain["batch_count"] == 1


def test_two_anchor_runs_back_to_back_send_one_transaction(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    batches = closed_cdn_batches(app_client, admin, settings, days=2)
    before = nonce(chain)
    with db(app_client) as session:
        first = anchoring.anchor_pending(session, chain, settings)
        second = anchoring.anchor_pending(session, chain, settings)
    assert first.anchored == [b.batch_id for b in batches] and second.anchored == []
    assert nonce(chain) == before + 2  # one anchor transaction per batch, none from the second run


def test_a_second_worker_skips_a_source_being_anchored(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    with db(app_client) as session:
        source = source_row(session, "cdn-a")
        with anchoring._source_lock(session, settings, source.id) as locked:
            assert locked
            with db(app_client) as other:
                busy = anchoring.anchor_pending(other, chain, settings)
        assert busy.busy_sources == ["cdn-a"] and busy.anchored == []
        assert reload(session, batch).state == BatchState.closed
        assert anchoring.anchor_pending(session, chain, settings).anchored == [batch.batch_id]


def test_rpc_down_records_the_error_and_a_later_run_resumes(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    dead = ChainClient.from_settings(
        settings.model_copy(update={"eth_rpc_url": f"http://127.0.0.1:{free_port()}"})
    )
    with db(app_client) as session:
        report = anchoring.anchor_pending(session, dead, settings)
        assert report.retryable and report.errors == {batch.batch_id: "chain_unavailable"}
        stuck = reload(session, batch)
        assert stuck.state == BatchState.closed and stuck.error_code == "chain_unavailable"
        shown = app_client.get(f"/deliveries/batches/{batch.id}", headers=admin.headers).json()
        assert shown["error_code"] == "chain_unavailable" and "unreachable" in shown["error_message"]

        # Signed and committed, then the RPC goes away before the send: resumable from "anchoring".
        source = source_row(session, "cdn-a")
        anchoring._prepare(session, chain, settings, source, stuck, anchoring.AnchorReport())
        assert reload(session, batch).state == BatchState.anchoring
        assert anchoring.anchor_pending(session, dead, settings).retryable
        assert reload(session, batch).state == BatchState.anchoring

        resumed = anchoring.anchor_pending(session, chain, settings)
        assert resumed.anchored == [batch.batch_id] and not resumed.retryable
        done = reload(session, batch)
        assert done.state == BatchState.anchored and done.error_code is None


def test_a_revert_stops_the_source_queue_without_skipping(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    first, second = closed_cdn_batches(app_client, admin, settings, days=2)
    assert app_client.post("/deliveries/sources/cdn-a/suspend", headers=admin.headers).status_code == 200
    with db(app_client) as session:
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.errors == {first.batch_id: "SourceNotActive"} and report.anchored == []
        assert not report.retryable
        assert reload(session, first).error_code == "SourceNotActive"
        untouched = reload(session, second)
        assert untouched.state == BatchState.closed and untouched.attempts == 0

        assert (
            app_client.post("/deliveries/sources/cdn-a/reactivate", headers=admin.headers).status_code == 200
        )
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.anchored == [first.batch_id, second.batch_id]


def test_a_rotated_signer_sends_the_batch_back_to_be_signed_again(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    with db(app_client) as session:
        source = source_row(session, "cdn-a")
        anchoring._prepare(session, chain, settings, source, reload(session, batch), anchoring.AnchorReport())
        old_signature = reload(session, batch).signature
    # The provider's key is rotated after the manifest was signed with the old one.
    new_key = Account.create()
    rotated = app_client.post(
        "/deliveries/sources/cdn-a/signer", json={"signer": new_key.address}, headers=admin.headers
    )
    assert rotated.status_code == 200
    with db(app_client) as session:
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.errors == {batch.batch_id: "WrongSigner"}
        back = reload(session, batch)
        assert back.state == BatchState.closed and back.signature is None
        # The platform now holds the new key (INGEST_SIGNER_PRIVATE_KEY): it signs again and anchors.
        new_settings = settings.model_copy(
            update={"ingest_signer_private_key": SecretStr(new_key.key.to_0x_hex())}
        )
        report = anchoring.anchor_pending(session, chain, new_settings)
        assert report.anchored == [batch.batch_id]
        done = reload(session, batch)
        assert done.signer == new_key.address and done.signature != old_signature


def test_a_reorg_that_dropped_the_anchor_sends_it_again_once(
    app_client: TestClient, admin: Caller, settings: Settings
) -> None:
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    before_anchor = rpc(settings.eth_rpc_url, "evm_snapshot")
    with db(app_client) as session:
        first_chain = ChainClient.from_settings(settings)
        assert anchoring.anchor_pending(session, first_chain, settings).anchored == [batch.batch_id]
        dropped_tx = reload(session, batch).tx_hash
        rpc(settings.eth_rpc_url, "evm_revert", before_anchor)  # the block with the anchor is gone

        chain = ChainClient.from_settings(settings)  # a fresh client: no locally cached nonce from before
        outcome = anchoring.confirm_anchors(session, chain, settings)
        assert outcome["reanchor"] == [batch.batch_id] and outcome["final"] == []
        assert reload(session, batch).state == BatchState.anchoring
        assert not chain.call(ledger(chain).isAnchored(bytes32(batch.batch_id)))

        assert anchoring.anchor_pending(session, chain, settings).anchored == [batch.batch_id]
        again = reload(session, batch)
        # Same signer nonce, same calldata: the re-sent transaction is byte-identical, hence the same hash.
        assert again.state == BatchState.anchored and again.tx_hash == dropped_tx
        assert chain.receipt_if_mined(dropped_tx) is not None
        assert chain.call(ledger(chain).isAnchored(bytes32(batch.batch_id)))
        on_chain = sources.chain_source(chain, source_id_for("cdn-a"))
        assert on_chain is not None and on_chain["batch_count"] == 1
        assert anchoring.confirm_anchors(session, chain, settings)["final"] == [batch.batch_id]


def test_edge_node_batches_wait_for_the_nodes_signature(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    operator = make_caller(app_client, Role.operator, "node operator")
    node = Account.create()
    register(
        app_client,
        admin,
        "edge-ams-1",
        kind="edge_node",
        provider="edgeledger",
        operator=operator.account.address,
        signer=node.address,
        operator_user_id=operator.user_id,
    )
    with db(app_client) as session:
        source = source_row(session, "edge-ams-1")
        batch = open_batch(session, source, DAY0)
        add_records(session, settings, batch, 2)
        later = open_batch(session, source, DAY0 + PERIOD)
        add_records(session, settings, later, 1)
        not_ready = app_client.get(f"/deliveries/batches/{batch.batch_id}/manifest", headers=operator.headers)
        assert not_ready.status_code == 409 and not_ready.json()["error"]["code"] == "manifest_not_ready"
        batches.close_due_batches(session, settings, force=True)
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.awaiting_signature == [batch.batch_id] and report.anchored == []
        assert reload(session, later).state == BatchState.closed  # strictly in order: waits behind it

    response = app_client.get(f"/deliveries/batches/{batch.batch_id}/manifest", headers=operator.headers)
    assert response.status_code == 200, response.text
    manifest = response.json()
    typed = manifest["typed_data"]
    assert typed["domain"]["name"] == "EdgeLedger DeliveryLedger" and typed["primaryType"] == "Manifest"
    assert typed["message"]["prevManifestHash"] == anchoring.ZERO32
    on_chain_digest = chain.call(
        ledger(chain).manifestDigest(Manifest(*[typed["message"][n] for n, _ in MANIFEST_FIELDS]).as_tuple())
    )
    assert manifest["digest"] == "0x" + bytes(on_chain_digest).hex()

    stranger = Account.create()
    wrong = Account.sign_typed_data(stranger.key, full_message=typed).signature.to_0x_hex()
    rejected = app_client.post(
        f"/deliveries/batches/{batch.batch_id}/signature", json={"signature": wrong}, headers=operator.headers
    )
    assert rejected.status_code == 422 and rejected.json()["error"]["code"] == "wrong_signer"
    garbage = app_client.post(
        f"/deliveries/batches/{batch.batch_id}/signature",
        json={"signature": "0x1234"},
        headers=operator.headers,
    )
    assert garbage.status_code == 422 and garbage.json()["error"]["code"] == "invalid_signature"
    other = make_caller(app_client, Role.operator, "other operator")
    signature = Account.sign_typed_data(node.key, full_message=typed).signature.to_0x_hex()
    assert (
        app_client.post(
            f"/deliveries/batches/{batch.batch_id}/signature",
            json={"signature": signature},
            headers=other.headers,
        ).status_code
        == 403
    )
    accepted = app_client.post(
        f"/deliveries/batches/{batch.batch_id}/signature",
        json={"signature": signature},
        headers=operator.headers,
    )
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "anchoring" and accepted.json()["signer"] == node.address

    with db(app_client) as session:
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.anchored == [batch.batch_id] and report.awaiting_signature == [later.batch_id]

    # The platform holds this node's key from now on (NODE_KEYS_FILE): waiting batches are signed here.
    keys = Path(settings.data_dir) / "node-keys.json"
    keys.write_text(json.dumps({"edge-ams-1": node.key.to_0x_hex()}))
    with_keys = settings.model_copy(update={"node_keys_file": keys})
    with db(app_client) as session:
        report = anchoring.anchor_pending(session, chain, with_keys)
        assert report.anchored == [later.batch_id]
        assert reload(session, later).prev_manifest_hash == reload(session, batch).manifest_hash
    on_chain = sources.chain_source(chain, source_id_for("edge-ams-1"))
    assert on_chain is not None and on_chain["batch_count"] == 2


# ----------------------------------------------------------------------------------------------
# Worker and CLI
# ----------------------------------------------------------------------------------------------


@pytest.fixture
def redis_worker(settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    with celery_worker(settings, REDIS_URL, "anchor-test") as proc:
        yield proc


def _wait_for_batch_state(
    client: TestClient, caller: Caller, batch_id: str, state: str, worker: subprocess.Popen[bytes]
) -> dict[str, Any]:
    """Polls the API for the worker's effect (bounded number of polls)."""
    shown: dict[str, Any] = {}
    for _ in range(240):
        assert worker.poll() is None, "worker died"
        shown = client.get(f"/deliveries/batches/{batch_id}", headers=caller.headers).json()
        if shown["state"] == state:
            return shown
        time.sleep(0.25)
    raise AssertionError(f"batch {batch_id} never reached {state}; last seen {shown}")


def test_celery_worker_closes_anchors_and_confirms(
    app_client: TestClient,
    admin: Caller,
    settings: Settings,
    chain: ChainClient,
    redis_worker: subprocess.Popen[bytes],
) -> None:
    register(app_client, admin, "cdn-worker")
    with db(app_client) as session:
        batch = open_batch(session, source_row(session, "cdn-worker"), DAY0)
        add_records(session, settings, batch, 5)
    sender = Celery(broker=REDIS_URL)
    try:
        sender.send_task("edgeledger.deliveries.close_due_batches", kwargs={"force": True})
        anchored = _wait_for_batch_state(app_client, admin, batch.batch_id, "anchored", redis_worker)
        assert anchored["leaf_count"] == 5 and anchored["tx_hash"] and anchored["confirmations"] >= 1
        sender.send_task("edgeledger.deliveries.confirm_anchors")
        final = _wait_for_batch_state(app_client, admin, batch.batch_id, "final", redis_worker)
        assert final["manifest_hash"] == anchored["manifest_hash"]
    finally:
        sender.close()
    assert chain.call(ledger(chain).isAnchored(bytes32(batch.batch_id)))


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key, value in worker_env(settings, settings.resolved_broker_url).items():
        monkeypatch.setenv(key, value)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_cli_sources_batches_and_anchor(
    app_client: TestClient, admin: Caller, settings: Settings, live_api: str, cli_env: None
) -> None:
    api = ["--api", live_api, "--api-key", admin.api_key]
    registered = CliRunner().invoke(
        cli_app,
        [
            "sources",
            "register",
            "--name",
            "cdn-cli",
            "--kind",
            "cdn_provider",
            "--provider",
            "cloudflare",
            "--regions",
            "DE,FR",
            "--jurisdiction",
            "FR",
            *api,
        ],
    )
    assert registered.exit_code == 0, registered.output
    assert json.loads(registered.stdout)["status"] == "active"
    listed = CliRunner().invoke(cli_app, ["sources", "list", *api])
    assert listed.exit_code == 0 and "cdn-cli" in listed.stdout and "active" in listed.stdout

    with db(app_client) as session:
        batch = open_batch(session, source_row(session, "cdn-cli"), DAY0)
        add_records(session, settings, batch, 3)
    ran = CliRunner().invoke(cli_app, ["anchor", "--force-close", "--wait", "--timeout", "60"])
    assert ran.exit_code == 0, ran.output
    summary = json.loads(ran.stdout)
    assert summary["closed"] == [batch.batch_id] and summary["anchoring"]["anchored"] == [batch.batch_id]
    assert summary["still_anchored"] == 0 and summary["final"] == [batch.batch_id]
    batches = CliRunner().invoke(cli_app, ["batches", "--source", "cdn-cli", *api])
    assert batches.exit_code == 0 and "final" in batches.stdout and batch.batch_id[:18] in batches.stdout

    # An edge node's batch needs the node's own signature: the command says so and exits 2, not 0.
    node = CliRunner().invoke(
        cli_app,
        [
            "sources",
            "register",
            "--name",
            "edge-cli",
            "--kind",
            "edge_node",
            "--provider",
            "edgeledger",
            "--regions",
            "DE",
            "--jurisdiction",
            "DE",
            "--signer",
            Account.create().address,
            "--operator",
            Account.create().address,
            *api,
        ],
    )
    assert node.exit_code == 0, node.output
    with db(app_client) as session:
        unsigned = open_batch(session, source_row(session, "edge-cli"), DAY0)
        add_records(session, settings, unsigned, 2)
    ran = CliRunner().invoke(cli_app, ["anchor", "--force-close"])
    assert ran.exit_code == 2, ran.output
    assert json.loads(ran.stdout)["awaiting_signature"] == [unsigned.batch_id]
    assert "wait for their edge node's signature" in ran.stderr


def test_batch_reads_need_a_role_and_unknown_ids_are_404(app_client: TestClient, admin: Caller) -> None:
    creator = make_caller(app_client, Role.creator, "creator")
    assert app_client.get("/deliveries/batches", headers=creator.headers).status_code == 403
    missing = app_client.get("/deliveries/batches/0x" + "ab" * 32, headers=admin.headers)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "batch_not_found"
    assert app_client.get("/deliveries/sources/nope", headers=admin.headers).status_code == 404


@pytest.fixture
def task_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Runs tasks in this process against a dead RPC (the process-wide settings come from the env)."""
    dead = settings.model_copy(update={"eth_rpc_url": f"http://127.0.0.1:{free_port()}"})
    for key, value in worker_env(dead, "memory://").items():
        monkeypatch.setenv(key, value)
    caches = (get_settings, db_module.get_engine, db_module.get_sessionmaker)
    for cache in caches:
        cache.cache_clear()
    yield dead
    db_module.get_engine().dispose()
    for cache in caches:
        cache.cache_clear()


def test_anchor_task_retries_with_bounded_backoff_while_the_rpc_is_down(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient, task_env: Settings
) -> None:
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    assert tasks.anchor_pending.retry_backoff and tasks.anchor_pending.max_retries == 8
    result = tasks.anchor_pending.apply()  # eager: the retries run at once instead of after the backoff
    assert result.failed() and isinstance(result.result, RetryableChainError)
    with db(app_client) as session:
        stuck = reload(session, batch)
        assert stuck.state == BatchState.closed and stuck.error_code == "chain_unavailable"
        assert anchoring.anchor_pending(session, chain, settings).anchored == [batch.batch_id]
