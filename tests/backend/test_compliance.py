"""Compliance operations end to end on a real chain, IPFS node and database (SQLite and PostgreSQL):
reads and exports are logged with their legal basis and anchored; erasure and retention keep every root
and proof valid; the residency policy refuses EU raw data to a non-EU destination and logs the refusal."""

from __future__ import annotations

import gzip
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session
from typer.testing import CliRunner

from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.cli import app as cli_app
from edgeledger.compliance import service
from edgeledger.config import PROJECT_ROOT, Settings
from edgeledger.deliveries.models import DeliveryRecordRow, PseudonymKey
from edgeledger.deliveries.service import pseudonymiser_for
from edgeledger.ledger.compliance_leaf import event_leaf
from edgeledger.ledger.delivery_leaf import leaf_values_from_json
from edgeledger.ledger.hashing import bytes32
from tests.backend.support.stack import Caller, make_caller

SAMPLE = PROJECT_ROOT / "tests" / "backend" / "samples" / "logs" / "cloudfront.log.gz"
SUBJECT_IP = "198.51.100.23"  # the client of the sample's FRA56 (Frankfurt) lines
BASIS = "GDPR Art. 17 request #42"


def _lines() -> list[str]:
    text = gzip.decompress(SAMPLE.read_bytes()).decode()
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def _request_id(line: str) -> str:
    return line.split("\t")[14]


def _ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def _error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


def _anchored_source(client: TestClient, admin: Caller, operator: Caller) -> None:
    body = {
        "name": "cf-dist",
        "kind": "cdn_provider",
        "provider": "cloudfront",
        "regions": ["*"],
        "jurisdiction": "US",
        "operator_user_id": operator.user_id,
    }
    _ok(client.post("/deliveries/sources", json=body, headers=admin.headers), 201)
    with SAMPLE.open("rb") as handle:
        files = {"file": ("E2SAMPLE.gz", handle)}
        _ok(client.post("/deliveries/sources/cf-dist/logs", files=files, headers=operator.headers), 201)
    close = {"force": False, "anchor_now": True}
    assert _ok(client.post("/deliveries/batches/close", json=close, headers=admin.headers))["closed"]


def _verify_on_chain(
    client: TestClient, chain: ChainClient, auditor: Caller, request_id: str
) -> dict[str, Any]:
    proof = _ok(
        client.get(
            "/deliveries/proofs",
            params={"source": "cf-dist", "request_id": request_id},
            headers=auditor.headers,
        )
    )
    ledger = chain.contract("DeliveryLedger").functions
    values = tuple(leaf_values_from_json(proof["leaf_values"]))
    siblings = [bytes32(p) for p in proof["proof"]]
    batch_id = bytes32(proof["batch"]["batch_id"])
    assert chain.call(ledger.isBatchRoot(batch_id, bytes32(proof["root"])))
    assert chain.call(ledger.verifyRecord(batch_id, values, siblings))
    return proof


def _records(session: Session) -> dict[str, DeliveryRecordRow]:
    session.expire_all()
    return {r.request_id: r for r in session.scalars(select(DeliveryRecordRow))}


def _events(client: TestClient, admin: Caller, **params: Any) -> list[dict[str, Any]]:
    return _ok(client.get("/compliance/events", params={"limit": 1000, **params}, headers=admin.headers))[
        "items"
    ]


def test_reads_erasure_residency_and_retention_are_logged_anchored_and_keep_every_proof_valid(
    app_client: TestClient, settings: Settings, db_session: Session, tmp_path: Path
) -> None:
    client = app_client
    admin = make_caller(client, Role.admin, "admin")
    operator = make_caller(client, Role.operator, "operator")
    auditor = make_caller(client, Role.auditor, "auditor")
    _anchored_source(client, admin, operator)
    chain = ChainClient.from_settings(settings)
    request_ids = [_request_id(line) for line in _lines()]
    before = _records(db_session)
    subject_ids = {_request_id(line) for line in _lines() if line.split("\t")[4] == SUBJECT_IP}
    assert subject_ids and len(subject_ids) < len(request_ids)
    # One more record of the subject, as an earlier release stored it when a dual-stack server logged the
    # client as ::ffff:198.51.100.23 (the pseudonym of that IPv6 text): the erasure finds it too.
    legacy_id = next(rid for rid in request_ids if rid not in subject_ids)
    legacy_row = before[legacy_id]
    pseudonymiser = pseudonymiser_for(db_session, settings, legacy_row.pseudonym_key_id)
    (legacy,) = pseudonymiser.pseudonyms(SUBJECT_IP) - {pseudonymiser.pseudonym(SUBJECT_IP)}
    legacy_row.client_pseudonym = legacy
    db_session.commit()
    subject_ids.add(legacy_id)
    proofs_before = {rid: _verify_on_chain(client, chain, auditor, rid) for rid in request_ids}

    # Reads of raw data are logged with the stated legal basis, or the role's default.
    stated = "ISAE 3402 audit engagement 2026-11"
    params = {"source": "cf-dist", "request_id": request_ids[0]}
    client.get("/deliveries/proofs", params=params, headers={**auditor.headers, "X-Legal-Basis": stated})
    reads = _events(client, admin, action="read_raw")
    assert len(reads) == len(request_ids) + 1
    assert reads[0]["legal_basis"] == stated and reads[0]["actor"] == f"user:{auditor.user_id}:auditor"
    assert reads[0]["subject"] == f"record:cf-dist/{request_ids[0]}"
    assert reads[1]["legal_basis"] == service.DEFAULT_LEGAL_BASIS[Role.auditor]

    # Right to erasure: the subject's records lose pseudonym, salt and URI; nothing else changes.
    erasure = _ok(
        client.post(
            "/compliance/erasures",
            json={"client_ip": SUBJECT_IP, "legal_basis": BASIS, "reference": "#42"},
            headers=admin.headers,
        ),
        201,
    )
    assert erasure["records_erased"] == len(subject_ids)
    after = _records(db_session)
    for rid, record in after.items():
        erased = rid in subject_ids
        assert (record.client_pseudonym is None) == erased and (record.salt is None) == erased
        assert (record.redacted_at is not None) == erased and (record.uri == "") == erased
        assert record.leaf == before[rid].leaf and record.client_commitment == before[rid].client_commitment
    for rid in request_ids:  # every root and every proof, the erased records' included, still verify
        assert _verify_on_chain(client, chain, auditor, rid)["proof"] == proofs_before[rid]["proof"]
    again = _ok(
        client.post(
            "/compliance/erasures",
            json={"client_ip": SUBJECT_IP, "legal_basis": BASIS},
            headers=admin.headers,
        ),
        201,
    )
    assert again["records_erased"] == 0  # nothing links the records to the IP any more
    _error(
        client.post(
            "/compliance/erasures",
            json={"client_ip": SUBJECT_IP, "legal_basis": BASIS},
            headers=auditor.headers,
        ),
        403,
        "forbidden",
    )

    # Residency: the sample has Frankfurt (EU) and US edge lines; EU raw data may not go to the US.
    export = {
        "source": "cf-dist",
        "period_start": 0,
        "period_end": 2_000_000_000,
        "legal_basis": "audit request",
    }
    refused = _error(
        client.post("/compliance/exports", json={**export, "destination": "US"}, headers=auditor.headers),
        403,
        "residency_violation",
    )
    assert refused["details"]["refused_zones"] == ["EU"]
    (logged,) = _events(client, admin, action="export_refused")
    assert logged["detail"]["destination"] == "US" and logged["detail"]["refused"] == ["EU"]
    document = _ok(
        client.post("/compliance/exports", json={**export, "destination": "DE"}, headers=auditor.headers)
    )
    assert len(document["records"]) == len(request_ids)
    assert {r["zone"] for r in document["records"]} >= {"EU", "US", "GB", "JP"}
    assert sum(r["redacted"] for r in document["records"]) == len(subject_ids)
    assert _events(client, admin, action="export")[0]["event_id"] == document["event_id"]

    # Storage: once US raw logs may only be stored in the US, this EU deployment refuses the upload.
    _ok(
        client.put(
            "/compliance/policies/US",
            json={"storage_zones": ["US"], "export_zones": ["*"]},
            headers=admin.headers,
        )
    )
    with SAMPLE.open("rb") as handle:
        upload = client.post(
            "/deliveries/sources/cf-dist/logs", files={"file": ("again.gz", handle)}, headers=operator.headers
        )
    _error(upload, 403, "residency_violation")
    assert _events(client, admin, action="upload_refused")

    # No raw IP anywhere in the log.
    everything = _events(client, admin)
    assert SUBJECT_IP not in json.dumps(everything)

    # One pass of the compliance job. Retention first: the sample's lines (2019, 2024) are older than
    # RAW_RETENTION_DAYS, so every anchored record not erased yet is redacted; proofs stay valid.
    logged_so_far = _events(client, admin)
    run = _ok(client.post("/compliance/run", params={"force": True}, headers=admin.headers))
    assert run["error"] is None and len(run["batches"]) == 1, run
    assert run["retention"]["records_redacted"] == len(request_ids) - len(subject_ids)
    assert run["retention"]["keys_destroyed"] == 0  # today's key is within the retention time
    assert all(r.client_pseudonym is None and r.uri == "" for r in _records(db_session).values())
    for rid in request_ids:
        _verify_on_chain(client, chain, auditor, rid)

    # The log is anchored like deliveries: a batch of the compliance source, each event provable.
    ledger = chain.contract("DeliveryLedger").functions
    batched = {e["event_id"]: e for e in _events(client, admin) if e["batch_id"]}
    earlier = {e["event_id"] for e in logged_so_far}
    assert set(batched) >= earlier  # reads after the cut wait for the next batch
    assert {batched[e]["action"] for e in set(batched) - earlier} == {"retention_purge"}  # the run's own
    for event in batched.values():
        proof = _ok(client.get(f"/compliance/events/{event['event_id']}/proof", headers=auditor.headers))
        leaf = event_leaf(
            bytes32(event["event_id"]),
            event["occurred_at_ms"],
            event["actor"],
            event["action"],
            event["subject"],
            event["legal_basis"],
            event["detail"],
        )
        assert "0x" + leaf.hex() == proof["leaf"] == event["leaf"]
        assert chain.call(
            ledger.verifyLeaf(bytes32(proof["batch_id"]), leaf, [bytes32(p) for p in proof["proof"]])
        )
    erase_event = _events(client, admin, action="erase")[-1]
    assert erase_event["event_id"] == erasure["event_id"] and erase_event["legal_basis"] == BASIS
    assert erase_event["batch_state"] in ("anchored", "final")

    # An auditor with only the proof document and an RPC URL checks the erasure (chain only).
    erase_proof = _ok(client.get(f"/compliance/events/{erasure['event_id']}/proof", headers=auditor.headers))
    proof_file = tmp_path / "erasure.json"
    proof_file.write_text(json.dumps(erase_proof))
    verify = ["verify", "event", str(proof_file), "--rpc-url", settings.eth_rpc_url]
    result = CliRunner().invoke(cli_app, verify)
    assert result.exit_code == 0 and result.output.count("PASS") == 5, result.output
    erase_proof["event"]["legal_basis"] = "a basis nobody recorded"
    proof_file.write_text(json.dumps(erase_proof))
    result = CliRunner().invoke(cli_app, verify)
    assert result.exit_code == 1 and "FAIL leaf" in result.output, result.output

    # Past the retention time of the ingest day its pseudonym key is destroyed (its records are all
    # anchored): nobody can compute those pseudonyms from an IP any more.
    later = datetime.now(UTC) + timedelta(days=settings.raw_retention_days + 2)
    purged = service.purge_expired(db_session, settings, now=later)
    assert purged.records_redacted == 0 and purged.keys_destroyed >= 1 and purged.event is not None
    assert all(k.key_wrapped is None for k in db_session.scalars(select(PseudonymKey)))
    assert service.purge_expired(db_session, settings, now=later).event is None  # nothing left to do
    unlinkable = _ok(
        client.post(
            "/compliance/erasures",
            json={"client_ip": SUBJECT_IP, "legal_basis": BASIS},
            headers=admin.headers,
        ),
        201,
    )
    assert unlinkable["records_erased"] == 0 and unlinkable["keys_destroyed"] >= 1


def test_compliance_routes_are_for_admins_and_auditors_and_validate_input(app_client: TestClient) -> None:
    admin = make_caller(app_client, Role.admin, "admin")
    merchant = make_caller(app_client, Role.merchant, "merchant")
    auditor = make_caller(app_client, Role.auditor, "auditor")
    _error(app_client.get("/compliance/events", headers=merchant.headers), 403, "forbidden")
    _error(app_client.get("/compliance/events"), 401, "unauthenticated")
    _error(
        app_client.put(
            "/compliance/policies/EU",
            json={"storage_zones": ["EU"], "export_zones": ["EU"]},
            headers=auditor.headers,
        ),
        403,
        "forbidden",
    )
    _error(
        app_client.put(
            "/compliance/policies/EU",
            json={"storage_zones": ["Europe"], "export_zones": ["EU"]},
            headers=admin.headers,
        ),
        400,
        "zone_invalid",
    )
    _error(
        app_client.post("/compliance/erasures", json={"client_ip": "192.0.2.1"}, headers=admin.headers),
        422,
        "validation_error",
    )
    _error(
        app_client.get("/compliance/events/0x" + "00" * 32, headers=auditor.headers), 404, "event_not_found"
    )
    policies = _ok(app_client.get("/compliance/policies", headers=auditor.headers))
    assert {p["zone"]: p["export_zones"] for p in policies} == {"*": ["*"], "EU": ["EU"]}


def test_no_raw_client_ip_reaches_logs_responses_or_the_database(
    app_client: TestClient, settings: Settings, db_session: Session, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = make_caller(app_client, Role.admin, "admin")
    operator = make_caller(app_client, Role.operator, "operator")
    auditor = make_caller(app_client, Role.auditor, "auditor")
    _anchored_source(app_client, admin, operator)
    ips = {line.split("\t")[4] for line in _lines()}
    seen: list[str] = []
    for line in _lines():
        body = {"source": "cf-dist", "line": line}
        seen.append(app_client.post("/deliveries/proofs/line", json=body, headers=auditor.headers).text)
    batches = _ok(
        app_client.get("/deliveries/batches", params={"source": "cf-dist"}, headers=auditor.headers)
    )
    for batch in batches:
        seen.append(
            app_client.get(f"/deliveries/batches/{batch['batch_id']}/export", headers=auditor.headers).text
        )
    export = {"source": "cf-dist", "period_start": 0, "period_end": 2_000_000_000, "legal_basis": "audit"}
    seen.append(
        app_client.post(
            "/compliance/exports", json={**export, "destination": "DE"}, headers=admin.headers
        ).text
    )
    seen.append(_ok(app_client.get("/compliance/events", headers=admin.headers)).__repr__())
    dumped = "\n".join(
        repr(row)
        for table in ("delivery_records", "quarantined_lines", "compliance_events", "ingest_files")
        for row in db_session.execute(text(f"SELECT * FROM {table}"))  # noqa: S608 - fixed table names
    )
    assert len(seen) > len(ips) and dumped
    for ip in ips:
        assert ip not in caplog.text, f"{ip} in the logs"
        assert all(ip not in text_ for text_ in seen), f"{ip} in a response"
        assert ip not in dumped, f"{ip} in the database"


def test_lines_whose_edge_zone_may_not_be_stored_here_are_quarantined_without_their_text(
    app_client: TestClient, db_session: Session
) -> None:
    admin = make_caller(app_client, Role.admin, "admin")
    operator = make_caller(app_client, Role.operator, "operator")
    # Japanese raw logs may only be stored in Japan; this deployment stores in the EU.
    policy = {"storage_zones": ["JP"], "export_zones": ["JP"]}
    _ok(app_client.put("/compliance/policies/JP", json=policy, headers=admin.headers))
    _anchored_source(app_client, admin, operator)
    japanese = {_request_id(line) for line in _lines() if line.split("\t")[2].startswith("NRT")}
    assert len(japanese) == 1  # NRT57 (Tokyo); OKA50 is not in the edge table: zone unknown, "*" applies
    stored = set(_records(db_session))
    assert stored == {_request_id(line) for line in _lines()} - japanese
    (ingest,) = _ok(app_client.get("/deliveries/ingests", headers=admin.headers))["items"]
    assert ingest["quarantined"] == 1 and ingest["records_new"] == len(stored)
    quarantined = _ok(app_client.get(f"/deliveries/ingests/{ingest['id']}/quarantine", headers=admin.headers))
    assert {q["reason"] for q in quarantined["items"]} == {"residency"}
    assert all(q["raw"] == "" and "JP" in q["detail"] for q in quarantined["items"])
