"""Hostile inputs through the real app and database (no chain or IPFS node: each is refused before either
is needed): JSON nested past the recursion limit, Unicode digits where a number is parsed, client IP
addresses in the text of a refused log, and a merchant probing other merchants' request ids. Each gets
its 4xx and code, never a 500, stores nothing it should not, and leaves what was already accepted."""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from benchmarks.ingest_bombs import good_log
from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.config import Settings
from edgeledger.deliveries.models import DeliveryRecordRow, IngestFile
from edgeledger.deliveries.records import CacheResult, make_record
from edgeledger.indexer.service import ipfs_title_reader
from edgeledger.ipfs.client import IpfsClient
from edgeledger.main import create_app
from edgeledger.settlement import service as settlement_service
from tests.backend.support.deliveries import add_merchant_host, add_records, close_batch
from tests.backend.support.stack import Caller, make_caller
from tests.backend.test_ingest_limits import make_source

DEEP = "[" * 50_000  # far past the interpreter's recursion limit (1,000)
RAW = {"content-type": "application/octet-stream"}


@pytest.fixture
def settings(database_url: str, db_engine: Engine, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        pseudonym_master_key="22" * 32,
        deployment_file=tmp_path / "no-deployment.json",
    )


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
    app.state.engine.dispose()


@pytest.fixture
def operator(client: TestClient) -> Caller:
    caller = make_caller(client, Role.operator, "node operator")
    with Session(client.app.state.engine) as session:  # type: ignore[attr-defined]
        make_source(session, "cf-1", caller.user_id)  # no declared format: uploads are detected
    return caller


def engine_of(client: TestClient) -> Engine:
    return client.app.state.engine  # type: ignore[attr-defined,no-any-return]


def error_of(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    return error


def post_log(client: TestClient, operator: Caller, body: bytes, name: str = "x.log") -> Any:
    return client.post(
        f"/deliveries/sources/cf-1/logs?name={name}", content=body, headers={**operator.headers, **RAW}
    )


def ingests(client: TestClient) -> list[IngestFile]:
    with Session(engine_of(client)) as session:
        return list(session.scalars(select(IngestFile).order_by(IngestFile.id)))


# --- JSON nested past the recursion limit ------------------------------------------------------------


def test_a_deeply_nested_json_line_is_not_a_log(client: TestClient, operator: Caller) -> None:
    """Detection reads the first lines as JSON: one nested 50,000 deep is no log (422), not a crash that
    leaves the ingest failed; an ordinary log afterwards is taken whole."""
    error_of(post_log(client, operator, ('{"a":' + DEEP + "\n").encode()), 422, "not_a_log")
    (refused,) = ingests(client)
    assert (refused.state, refused.error_code) == ("rejected", "not_a_log")
    assert post_log(client, operator, good_log(10), name="good.log.gz").status_code == 201
    with Session(engine_of(client)) as session:
        assert len(session.scalars(select(DeliveryRecordRow.id)).all()) == 10


def creator_session(client: TestClient) -> None:
    """A creator signed in to the web app (its session cookie)."""
    with Session(engine_of(client)) as session:
        user = auth_service.create_user(
            session, role=Role.creator, address=Account.create().address, name="c"
        )
        token, _ = auth_service.create_session(session, user, timedelta(hours=1))
        session.commit()
    client.cookies.set("edgeledger_session", token, path="/app")


@pytest.mark.parametrize(("path", "field"), [("/assets", "file"), ("/assets/catalogues", "files")])
def test_deeply_nested_metadata_is_a_validation_error(client: TestClient, path: str, field: str) -> None:
    creator = make_caller(client, Role.creator, "creator")
    answer = client.post(
        path, headers=creator.headers, files={field: ("a.bin", b"hello")}, data={"metadata": DEEP}
    )
    assert "nested too deeply" in error_of(answer, 422, "validation_error")["message"]


def test_deeply_nested_registration_details_are_a_validation_error_in_the_web_app(client: TestClient) -> None:
    creator_session(client)
    page = client.post("/app/upload", files={"file": ("a.bin", b"hello")}, data={"metadata": DEEP})
    error_of(page, 422, "validation_error")


def test_deeply_nested_asset_metadata_is_recorded_as_invalid_by_the_indexer(ipfs_client: IpfsClient) -> None:
    """The indexer reads asset metadata from IPFS (anyone's document): nested too deeply it is recorded as
    invalid, never raised (which would stop the indexer at that block)."""
    cid = ipfs_client.add_bytes(('{"name": ' + DEEP[:60_000] + "]").encode())
    read = ipfs_title_reader(ipfs_client)(cid)
    assert (read.state, read.title) == ("invalid", None)
    assert "nested too deeply" in (read.error or "")


# --- Unicode digits ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ref", ["%C2%B2", "%EF%BC%91", "9" * 30])  # superscript 2, fullwidth 1, > 64 bits
def test_a_batch_id_of_unicode_digits_is_not_found(client: TestClient, ref: str) -> None:
    """``"²".isdigit()`` is true but ``int("²")`` fails: such an id is looked up as a batch id (404)."""
    admin = make_caller(client, Role.admin, "admin")
    error_of(client.get(f"/deliveries/batches/{ref}", headers=admin.headers), 404, "batch_not_found")


@pytest.mark.parametrize("rate", ["\u00b2/1", "1/\u00b2", "\u00b9\u00b2/7", "\uff11/2"])
def test_an_fx_rate_of_unicode_digits_is_invalid(client: TestClient, rate: str) -> None:
    admin = make_caller(client, Role.admin, "admin")
    fx = {"source": "ecb", "timestamp": 1, "base": "EUR", "quote": "USD", "rate": rate}
    error_of(client.post("/settlement/fx-rates", headers=admin.headers, json=fx), 422, "fx_rate_invalid")


@pytest.mark.parametrize("slot", ["\u00b2", "x"])
def test_a_billing_period_slot_of_unicode_digits_is_refused(
    client: TestClient, settings: Settings, slot: str
) -> None:
    """The merchant app's billing import names its period by day and slot (seconds into the day)."""
    with Session(engine_of(client)) as session:
        merchant = auth_service.create_user(
            session, role=Role.merchant, address=Account.create().address, name="m"
        )
        params = settlement_service.AccountParams(
            token="0x" + "33" * 20, token_symbol="tUSDC", token_decimals=6, settle_from=1_714_521_600
        )
        settlement_service.upsert_account(session, settings, merchant, params, now=1_714_521_600)
        token, _ = auth_service.create_session(session, merchant, timedelta(hours=1))
        session.commit()
    client.cookies.set("edgeledger_session", token, path="/app")
    bill = {"file": ("bill.csv", b"not read")}
    page = client.post("/app/merchant/billing", files=bill, data={"day": "2024-05-01", "slot": slot})
    assert page.status_code == 400, page.text[:300]
    assert 'id="billing-error">Choose the period' in page.text  # period_invalid, in the page's words


# --- client IP addresses in a refused log's message ----------------------------------------------------

IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.")  # any start of a dotted quad
IPV6 = re.compile(r"2001:db8:")


@pytest.mark.parametrize(
    "body",
    [
        ("x" * 52 + " 198.51.100.23 GET /a\n").encode(),  # the address straddles the 60-character excerpt
        ("x" * 52 + ",2001:db8::7:1 GET /a\n").encode(),
        b'{"198.51.100.23": 1, "foo": 2}\n',  # keys echoed
        b'{"2001:db8::17": 1, "foo": 2}\n',
        b'{"v": "198.51.100.23", "request_id": "a"}\n',  # a version value echoed
        b'{"v": "x 2001:db8::17", "request_id": "a"}\n',
        b'{"v": ["198.51.100.23"], "request_id": "a"}\n',
    ],
)
def test_a_refused_logs_message_holds_no_client_ip(client: TestClient, operator: Caller, body: bytes) -> None:
    response = post_log(client, operator, body)
    message = error_of(response, 422, "not_a_log")["message"]
    (refused,) = ingests(client)
    for text in (message, response.text, refused.error_message or ""):
        assert not IPV4.search(text) and not IPV6.search(text), text
    assert "[ip]" in message or "JSON array" in message


# --- a merchant probing other merchants' request ids ---------------------------------------------------


def test_a_merchant_cannot_tell_another_merchants_request_id_from_a_missing_one(
    client: TestClient, settings: Settings
) -> None:
    ma = make_caller(client, Role.merchant, "merchant a")
    mb = make_caller(client, Role.merchant, "merchant b")
    admin = make_caller(client, Role.admin, "admin")
    with Session(engine_of(client)) as session:
        source = make_source(session, "cf-1", None)
        add_merchant_host(session, "a.example", ma.user_id)
        add_merchant_host(session, "b.example", mb.user_id)
        records = [
            make_record(
                "cloudfront",
                rid,
                1714521600000,
                "FRA1",
                "DE",
                host,
                "/x",
                10,
                200,
                CacheResult.hit,
                secrets.token_bytes(32),
                1,
            )
            for rid, host in (("ra", "a.example"), ("rb", "b.example"))
        ]
        batch = close_batch(session, settings, add_records(session, settings, source, records)[0])
        batch_id = batch.batch_id
    url = f"/deliveries/batches/{batch_id}/export?request_ids="

    def answer(ids: str, caller: Caller = ma) -> tuple[int, str]:
        response = client.get(url + ids, headers=caller.headers)
        return response.status_code, response.text

    assert answer("ra")[0] == 200  # its own record
    for other, missing in (("rb", "rc"), ("ra,rb", "ra,rc"), ("rb,ra", "ra,rc"), ("rb,a0", "rc,a0")):
        status, text = answer(other)
        assert status == 404 and answer(missing) == (
            status,
            text.replace('"rb"', '"rc"').replace("'rb'", "'rc'"),
        )
    # Admins are told which ids the batch lacks, as before.
    status, text = answer("zz", admin)
    assert status == 404 and "has no record with request id 'zz'" in text and batch_id in text
    assert answer("rb", admin)[0] == 200
