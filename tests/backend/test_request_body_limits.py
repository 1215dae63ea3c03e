"""Request body limits (main.BodyLimit) through the real app and database: a JSON (or any non-upload) body
is held to MAX_JSON_BYTES and an upload to MAX_UPLOAD_BYTES, each refused with 413 and its code from the
declared length before a byte is read, or, sent chunked, the moment the bytes read pass the limit (never
after reading it all); what the app took from the server is counted at its door."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from benchmarks.ingest_bombs import good_log
from edgeledger import main
from edgeledger.auth.models import Role
from edgeledger.config import Settings
from edgeledger.main import create_app
from tests.backend.support.stack import make_caller_in
from tests.backend.test_auth import CHAIN_ID, DOMAIN, sign, siwe_message
from tests.backend.test_ingest_limits import make_source

JSON_LIMIT = 64 * 1024
UPLOAD_LIMIT = 200_000
CHUNK = 8192
BOUNDARY = "edgeledgerboundary"


@dataclass
class CountingDoor:
    """ASGI wrapper: hands the body to the app in CHUNK-byte messages, as a server does with a chunked
    upload (the test client sends it in one), and counts the body bytes the app took, per request path."""

    app: ASGIApp
    read: dict[str, int] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        pending: list[Message] = []

        async def counting() -> Message:
            if not pending:
                message = await receive()
                body = message.get("body", b"")
                if message["type"] != "http.request" or len(body) <= CHUNK:
                    pending.append(message)
                else:
                    more = message.get("more_body", False)
                    for offset in range(0, len(body), CHUNK):
                        last = offset + CHUNK >= len(body)
                        piece = body[offset : offset + CHUNK]
                        pending.append({**message, "body": piece, "more_body": more or not last})
            message = pending.pop(0)
            self.read[path] = self.read.get(path, 0) + len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


@dataclass
class Served:
    client: TestClient
    app: FastAPI
    door: CountingDoor
    settings: Settings


@pytest.fixture
def served(database_url: str, db_engine: Engine, tmp_path: Path) -> Iterator[Served]:
    settings = Settings(
        data_dir=tmp_path,
        database_url=database_url,
        pseudonym_master_key="22" * 32,
        deployment_file=tmp_path / "no-deployment.json",
        siwe_domain=DOMAIN,
        siwe_chain_id=CHAIN_ID,
        max_json_bytes=JSON_LIMIT,
        max_upload_bytes=UPLOAD_LIMIT,
    )
    app = create_app(settings)
    door = CountingDoor(app)
    with TestClient(door) as client:
        yield Served(client, app, door, settings)
    app.state.engine.dispose()


def chunked(data: bytes) -> Iterator[bytes]:
    """The body as a generator: sent with Transfer-Encoding: chunked, no Content-Length."""
    for offset in range(0, len(data), CHUNK):
        yield data[offset : offset + CHUNK]


def siwe_body(message: str, signature: str, padding: int = 0) -> bytes:
    return (
        b'{"message": "'
        + message.replace("\n", "\\n").encode()
        + b'", "signature": "'
        + signature.encode()
        + b'"'
        + b" " * padding
        + b"}"
    )


def assert_413(response: Any, code: str, limit: int) -> None:
    assert response.status_code == 413, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert str(limit) in error["message"]


def signed_in_body(served: Served, padding: int = 0) -> bytes:
    nonce = served.client.post("/auth/siwe/nonce").json()["nonce"]
    wallet = Account.create()
    message = siwe_message(wallet.address, nonce, expiration_time=datetime.now(UTC) + timedelta(minutes=5))
    return siwe_body(message, sign(wallet, message), padding)


JSON_HEADERS = {"content-type": "application/json"}


def test_a_json_body_over_the_limit_is_refused_before_it_is_read(served: Served) -> None:
    body = siwe_body("a" * (4 * JSON_LIMIT), "0x00")
    assert_413(
        served.client.post("/auth/siwe/verify", content=body, headers=JSON_HEADERS),
        "body_too_large",
        JSON_LIMIT,
    )
    assert served.door.read.get("/auth/siwe/verify", 0) == 0
    # A non-JSON content type on a JSON route gets the same limit (FastAPI would read it whole too).
    multipart = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    assert_413(
        served.client.post("/app/signin", content=body, headers=multipart), "body_too_large", JSON_LIMIT
    )
    assert served.door.read.get("/app/signin", 0) == 0


def test_a_chunked_json_body_is_cut_at_the_limit_with_413(served: Served) -> None:
    body = siwe_body("a" * (4 * JSON_LIMIT), "0x00")
    response = served.client.post("/auth/siwe/verify", content=chunked(body), headers=JSON_HEADERS)
    assert_413(response, "body_too_large", JSON_LIMIT)
    assert served.door.read["/auth/siwe/verify"] <= JSON_LIMIT + CHUNK


def test_a_json_body_of_normal_size_still_works(served: Served) -> None:
    """A sign-in just under the limit, sent whole and chunked, signs the wallet in."""
    for send in (lambda b: b, chunked):
        body = signed_in_body(served)
        body = signed_in_body(served, padding=JSON_LIMIT - len(body) - 1)
        assert len(body) < JSON_LIMIT
        response = served.client.post("/auth/siwe/verify", content=send(body), headers=JSON_HEADERS)
        assert response.status_code == 200, response.text
        assert response.json()["user"]["role"] == "creator"


def test_a_chunked_multipart_upload_over_the_limit_gets_413_upload_too_large(served: Served) -> None:
    creator = make_caller_in(served.settings, Role.creator, "creator")
    body = (
        (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="a.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + b"a" * (3 * 1024 * 1024)
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {**creator.headers, "content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    limit = UPLOAD_LIMIT + 1024 * 1024  # MAX_UPLOAD_BYTES plus the multipart overhead
    for path in ("/assets", "/verify"):
        response = served.client.post(path, content=chunked(body), headers=headers)
        assert_413(response, "upload_too_large", limit)
        assert served.door.read[path] <= limit + CHUNK


def test_upload_routes_keep_the_upload_limit(served: Served) -> None:
    """A log far over MAX_JSON_BYTES (and under MAX_UPLOAD_BYTES) is taken whole, sent whole or chunked."""
    operator = make_caller_in(served.settings, Role.operator, "node operator")
    with Session(served.app.state.engine) as session:
        make_source(session, "cf-1", operator.user_id)
    logs = {
        "whole.log": gzip.decompress(good_log(400)),
        "chunked.log": gzip.decompress(good_log(400, "chunk")),
    }
    assert all(JSON_LIMIT < len(log) < UPLOAD_LIMIT for log in logs.values())  # plain text, not gzip
    headers = {**operator.headers, "content-type": "application/octet-stream"}
    for name, content in (("whole.log", logs["whole.log"]), ("chunked.log", chunked(logs["chunked.log"]))):
        response = served.client.post(
            f"/deliveries/sources/cf-1/logs?name={name}", content=content, headers=headers
        )
        assert response.status_code == 201, response.text
        assert response.json()["records_new"] == 400


def test_every_upload_route_is_a_route_of_the_app(served: Served) -> None:
    """The upload routes BodyLimit lets past MAX_JSON_BYTES name routes that exist (a renamed upload route
    would otherwise fall to the JSON limit)."""
    routes = {(m, c.path) for c in iter_route_contexts(served.app.routes) for m in c.methods or ()}
    assert set(main.UPLOAD_ROUTES) <= routes
