"""A source's log format is declared or detected, never guessed (SQLite and PostgreSQL, through the API).

* nginx combined logs of our own edge nodes are ingested end to end once the source declares its format,
  host and edge location: every record carries the declared host and edge location;
* lines that fit several formats (nginx and Fastly combined) are refused with 422 ``ambiguous_log_format``
  naming the candidates until the source declares one;
* a declared format always wins over detection (a file of another format is quarantined line by line,
  not re-detected); a declaration lacking what its format needs is refused before it is stored;
* an Akamai DataStream 2 structured source declares its columns by data set field id;
* a source registered on chain declares its format at creation (an incomplete declaration is refused
  before anything is written or sent).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role
from edgeledger.deliveries.models import DeliveryRecordRow, DeliverySource, IngestFile
from edgeledger.ledger.ids import source_id_for
from tests.backend.support.stack import Caller, make_caller

FORMATS = Path(__file__).parent / "samples" / "formats"
AKAMAI_FIELDS = [1000, 1002, 1100, 1005, 1006, 1008, 1009, 1011, 1012, 1013, 1017, 2010, 2012]


def _source(app_client: TestClient, name: str, operator: Caller) -> None:
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        session.add(
            DeliverySource(
                source_id=source_id_for(name),
                name=name,
                kind="edge_node",
                provider="edgeledger",
                operator="0x" + "11" * 20,
                signer="0x" + "22" * 20,
                regions_bitmap="0x0",
                jurisdiction="DE",
                status="active",
                operator_user_id=operator.user_id,
            )
        )
        session.commit()


def _upload(app_client: TestClient, caller: Caller, source: str, log: str, query: str = "") -> Any:
    return app_client.post(
        f"/deliveries/sources/{source}/logs?name={log}{query}",
        headers={**caller.headers, "Content-Type": "application/octet-stream"},
        content=(FORMATS / log).read_bytes(),
    )


def _records(app_client: TestClient, ingest_id: int) -> list[DeliveryRecordRow]:
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        query = select(DeliveryRecordRow).where(DeliveryRecordRow.ingest_file_pk == ingest_id)
        return list(session.scalars(query.order_by(DeliveryRecordRow.line_number)))


def test_nginx_logs_of_our_edge_nodes_are_ingested_with_the_declared_host(app_client: TestClient) -> None:
    operator = make_caller(app_client, Role.operator, "edge operator")
    other = make_caller(app_client, Role.operator, "someone else")
    _source(app_client, "edge-fra-1", operator)

    # Undeclared: the lines fit nginx combined and Fastly combined alike, so nothing is guessed.
    refused = _upload(app_client, operator, "edge-fra-1", "nginx_combined.log")
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "ambiguous_log_format"
    assert error["details"]["candidates"] == ["nginx_combined", "fastly_combined"]
    with Session(app_client.app.state.engine) as session:  # type: ignore[attr-defined]
        rejected = session.get(IngestFile, error["details"]["ingest_id"])
        assert rejected is not None and (rejected.state, rejected.error_code) == (
            "rejected",
            "ambiguous_log_format",
        )
    assert _records(app_client, error["details"]["ingest_id"]) == []

    url = "/deliveries/sources/edge-fra-1/log-format"
    incomplete = app_client.put(url, headers=operator.headers, json={"log_format": "nginx_combined"})
    assert incomplete.status_code == 422
    assert incomplete.json()["error"]["code"] == "log_declaration_incomplete"
    assert incomplete.json()["error"]["details"]["missing"] == ["site_host", "site_edge_location"]
    declaration = {
        "log_format": "nginx_combined",
        "site_host": "Media.Example.com.",
        "site_edge_location": "FRA1",
    }
    assert app_client.put(url, headers=other.headers, json=declaration).status_code == 403
    declared = app_client.put(url, headers=operator.headers, json=declaration)
    assert declared.status_code == 200, declared.text
    assert (declared.json()["log_format"], declared.json()["site_host"]) == (
        "nginx_combined",
        "media.example.com",
    )
    shown = app_client.get("/deliveries/sources/edge-fra-1", headers=operator.headers).json()
    assert (shown["site_edge_location"], shown["log_fields"]) == ("FRA1", None)

    done = _upload(app_client, operator, "edge-fra-1", "nginx_combined.log")
    assert done.status_code == 201, done.text
    report = done.json()
    assert (report["log_format"], report["records_new"], report["quarantined"]) == ("nginx_combined", 4, 3)
    records = _records(app_client, report["id"])
    assert len(records) == 4
    assert {(r.host, r.edge_location, r.country) for r in records} == {("media.example.com", "FRA1", "DE")}
    assert [r.line_number for r in records] == [1, 2, 3, 4]
    assert records[0].timestamp_ms == 971_211_336_000  # [10/Oct/2000:13:55:36 -0700] in UTC
    assert all(r.request_id.startswith("ngx-") and len(r.request_id) == 36 for r in records)

    again = _upload(app_client, operator, "edge-fra-1", "nginx_combined.log")  # the same file: all duplicates
    assert (again.json()["records_new"], again.json()["duplicates"]) == (0, 4)

    # The stream endpoint's edge-node JSON default gives way to the declared format too.
    line = b'198.51.100.9 - - [02/May/2024:12:00:00 +0000] "GET /media/new.mp4 HTTP/1.1" 200 512 "-" "curl"\n'
    streamed = app_client.post(
        "/deliveries/sources/edge-fra-1/stream?name=live", headers=operator.headers, content=iter([line])
    )
    assert streamed.status_code == 201, streamed.text
    assert (streamed.json()["log_format"], streamed.json()["records_new"]) == ("nginx_combined", 1)


def test_a_declared_format_always_wins_and_akamai_columns_are_declared_by_id(app_client: TestClient) -> None:
    operator = make_caller(app_client, Role.operator, "cdn account operator")
    _source(app_client, "akamai-1", operator)
    url = "/deliveries/sources/akamai-1/log-format"
    for body, code in (
        ({"log_format": "akamai_structured"}, "log_declaration_incomplete"),
        ({"log_format": "akamai_structured", "log_fields": [1000, 1002, 1100]}, "invalid_log_declaration"),
        ({"log_format": "w3c"}, "bad_log_format"),
        (
            {"log_format": "nginx_combined", "site_host": "a b", "site_edge_location": "FRA1"},
            "invalid_log_declaration",
        ),
        ({"site_edge_location": "far too long an edge name"}, "validation_error"),
    ):
        response = app_client.put(url, headers=operator.headers, json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["error"]["code"] == code, (body, response.text)

    declared = app_client.put(
        url, headers=operator.headers, json={"log_format": "akamai_structured", "log_fields": AKAMAI_FIELDS}
    )
    assert declared.status_code == 200, declared.text
    report = _upload(app_client, operator, "akamai-1", "akamai_structured.log").json()
    assert (report["log_format"], report["records_new"], report["quarantined"]) == ("akamai_structured", 5, 2)
    records = _records(app_client, report["id"])
    assert [r.request_id for r in records[:3]] == ["1239f220", "2a7c01d5", "2a7c01d6"]
    assert records[0].uri == "/media/trailer hd.mp4" and records[0].timestamp_ms == 1_714_564_801_123

    # The declared format wins: a Tencent file uploaded to this source is not re-detected, its lines are
    # quarantined (their field count is not the declared columns'); an explicit ?log_format= wins in turn.
    wrong = _upload(app_client, operator, "akamai-1", "tencent.log").json()
    assert (wrong["log_format"], wrong["records_new"], wrong["quarantined"]) == ("akamai_structured", 0, 8)
    explicit = _upload(app_client, operator, "akamai-1", "tencent.log", "&log_format=tencent").json()
    assert (explicit["log_format"], explicit["records_new"]) == ("tencent", 5)

    # Back to detection: all null.
    reset = app_client.put(url, headers=operator.headers, json={})
    assert reset.status_code == 200 and reset.json()["log_format"] is None
    detected = _upload(app_client, operator, "akamai-1", "fastly_json.ndjson").json()
    assert (detected["log_format"], detected["records_new"]) == ("fastly_json", 5)


def test_a_source_registered_on_chain_declares_its_format_at_creation(app_client: TestClient) -> None:
    admin = make_caller(app_client, Role.admin, "platform admin")
    base = {"kind": "cdn_provider", "regions": ["DE"], "jurisdiction": "DE"}
    incomplete = app_client.post(
        "/deliveries/sources",
        headers=admin.headers,
        json={**base, "name": "akamai-main", "provider": "akamai", "log_format": "akamai_structured"},
    )
    assert incomplete.status_code == 422
    assert incomplete.json()["error"]["details"]["missing"] == ["log_fields"]
    # refused before the journal row: nothing was written, nothing sent to the chain
    assert app_client.get("/deliveries/sources/akamai-main", headers=admin.headers).status_code == 404

    created = app_client.post(
        "/deliveries/sources",
        headers=admin.headers,
        json={
            **base,
            "name": "fastly-main",
            "provider": "fastly",
            "log_format": "fastly_combined",
            "site_host": "Media.Example.com",
            "site_edge_location": "FRA1",
        },
    )
    assert created.status_code == 201, created.text
    source = created.json()
    assert source["tx_hash"] and source["status"] == "active"
    assert (source["log_format"], source["site_host"], source["site_edge_location"]) == (
        "fastly_combined",
        "media.example.com",
        "FRA1",
    )
    report = _upload(app_client, admin, "fastly-main", "fastly_combined.log").json()
    assert (report["log_format"], report["records_new"], report["quarantined"]) == ("fastly_combined", 3, 1)
    assert {r.host for r in _records(app_client, report["id"])} == {"media.example.com"}
