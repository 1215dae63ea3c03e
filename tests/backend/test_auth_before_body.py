"""Upload routes refuse a wrong or missing credential with 401, and a valid credential of the wrong role with
403, before the request body is read: the app
served by uvicorn on a loopback port, a raw socket declaring a 256 MiB body and sending only the first
MiB of it, and the bytes the app received counted at its door. The control case (an anonymous file
verification, which needs no credential) shows the same harness waiting for a body that is read."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import uvicorn
from sqlalchemy import Engine
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edgeledger.auth import service as auth_service
from edgeledger.auth.identity import role_requirements
from edgeledger.auth.models import Role
from edgeledger.config import Settings
from edgeledger.main import create_app
from tests.backend.support.stack import free_port

DECLARED = 256 * 1024 * 1024
SENT = 1024 * 1024
BOUNDARY = "edgeledgerboundary"


@dataclass
class CountingDoor:
    """ASGI wrapper: how many body bytes the app has taken from the server, per request path."""

    app: ASGIApp
    read: dict[str, int] = field(default_factory=dict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")

        async def counting() -> Message:
            message = await receive()
            self.read[path] = self.read.get(path, 0) + len(message.get("body", b""))
            return message

        await self.app(scope, counting, send)


@dataclass
class Served:
    port: int
    door: CountingDoor


@pytest.fixture
def served(database_url: str, db_engine: Engine, tmp_path: Path) -> Iterator[Served]:
    settings = Settings(data_dir=tmp_path, database_url=database_url, max_upload_bytes=1024**3)
    app = create_app(settings)
    door = CountingDoor(app)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(door, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    yield Served(port, door)
    server.should_exit = True
    thread.join(timeout=10)
    app.state.engine.dispose()


def _multipart_start() -> bytes:
    return (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def post_partially(
    port: int, path: str, headers: dict[str, str], *, multipart: bool = False, chunked: bool = False
) -> tuple[int, dict[str, object]] | None:
    """Declares a DECLARED-byte body, sends SENT bytes of it, then waits up to 5 s for an answer:
    (status, JSON body), or None when the server is still waiting for the rest of the body."""
    head = [f"POST {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close"]
    head += [f"{name}: {value}" for name, value in headers.items()]
    if multipart:
        head.append(f"Content-Type: multipart/form-data; boundary={BOUNDARY}")
    head.append("Transfer-Encoding: chunked" if chunked else f"Content-Length: {DECLARED}")
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        first = _multipart_start() if multipart else b""
        body = first + b"\0" * (SENT - len(first))
        try:
            for offset in range(0, len(body), 64 * 1024):
                piece = body[offset : offset + 64 * 1024]
                sock.sendall(f"{len(piece):x}\r\n".encode() + piece + b"\r\n" if chunked else piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before taking it all
        return _read_response(sock)
    finally:
        sock.close()


def _read_response(sock: socket.socket) -> tuple[int, dict[str, object]] | None:
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
        while len(rest) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            rest += chunk
    except TimeoutError:
        return None
    return int(lines[0].split()[1]), json.loads(rest[:length])


BAD_KEY = {"X-API-Key": "el_this-key-was-never-issued"}


@pytest.mark.parametrize(
    ("path", "headers", "multipart", "chunked", "code"),
    [
        ("/assets", BAD_KEY, True, False, "api_key_invalid"),
        ("/assets", {}, True, False, "unauthenticated"),
        ("/assets/catalogues", BAD_KEY, True, False, "api_key_invalid"),
        ("/verify", BAD_KEY, True, False, "api_key_invalid"),
        ("/deliveries/sources/cf-shop/logs?name=a.log", BAD_KEY, False, False, "api_key_invalid"),
        (
            "/deliveries/sources/cf-shop/stream",
            {"Authorization": "Bearer stale"},
            False,
            True,
            "unauthenticated",
        ),
    ],
)
def test_a_wrong_or_missing_credential_is_refused_before_the_body(
    served: Served, path: str, headers: dict[str, str], multipart: bool, chunked: bool, code: str
) -> None:
    answer = post_partially(served.port, path, headers, multipart=multipart, chunked=chunked)
    assert answer is not None, "the server waited for the body instead of answering 401"
    status, body = answer
    assert status == 401 and body["error"]["code"] == code, body  # type: ignore[index]
    assert served.door.read.get(path.split("?")[0], 0) == 0  # not one byte of the body was taken


def test_control_a_route_that_reads_the_body_keeps_waiting_for_it(served: Served) -> None:
    """Anonymous verification needs no credential: the app reads the body, so with only SENT of
    DECLARED bytes sent there is no answer yet; this is what a wrong key used to get too."""
    assert post_partially(served.port, "/verify", {}, multipart=True) is None
    deadline = time.monotonic() + 5
    while served.door.read.get("/verify", 0) < SENT // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.door.read["/verify"] >= SENT // 2


def _key_of(engine: Engine, role: Role) -> dict[str, str]:
    with Session(engine) as session:
        user = auth_service.create_user(session, role=role, name=f"a {role}")
        key, _ = auth_service.create_api_key(session, user, "tests")
        session.commit()
    return {"X-API-Key": key}


@pytest.mark.parametrize(
    ("path", "role", "multipart"),
    [
        ("/deliveries/sources/cf-shop/logs?name=a.log", Role.creator, False),  # operators upload logs
        ("/assets", Role.merchant, True),  # creators register
        ("/assets", Role.auditor, True),
        ("/assets/catalogues", Role.merchant, True),  # a catalogue: up to 100 uploads, creators only
        ("/settlement/accounts/1/billing?period_start=0", Role.creator, False),  # merchants import bills
    ],
)
def test_a_valid_key_of_the_wrong_role_is_refused_before_the_body(
    served: Served, db_engine: Engine, path: str, role: Role, multipart: bool
) -> None:
    answer = post_partially(served.port, path, _key_of(db_engine, role), multipart=multipart)
    assert answer is not None, "the server waited for the body instead of answering 403"
    status, body = answer
    assert status == 403 and body["error"]["code"] == "forbidden", body  # type: ignore[index]
    assert f"you are {role}" in body["error"]["message"]  # type: ignore[index]
    assert served.door.read.get(path.split("?")[0], 0) == 0


def test_the_right_role_still_sends_its_body(served: Served, db_engine: Engine) -> None:
    """Control: a creator's upload to the same route passes the early role check and its body is read."""
    assert post_partially(served.port, "/assets", _key_of(db_engine, Role.creator), multipart=True) is None
    deadline = time.monotonic() + 5
    while served.door.read.get("/assets", 0) < SENT // 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert served.door.read["/assets"] >= SENT // 2


def test_role_requirements_follow_the_routes_dependencies(database_url: str, tmp_path: Path) -> None:
    """The early check reads the same role sets the routes enforce: one per role-checked write route."""
    app = create_app(Settings(data_dir=tmp_path, database_url=database_url))
    try:
        table = {
            (m, regex.pattern): allowed
            for methods, regex, allowed in role_requirements(app.routes)
            for m in methods
        }
        logs = next(
            v for (m, p), v in table.items() if m == "POST" and "/sources/" in p and p.endswith("/logs$")
        )
        assert logs == frozenset({Role.operator, Role.admin})
        assets = next(v for (m, p), v in table.items() if m == "POST" and p == "^/assets$")
        assert assets == frozenset({Role.creator, Role.admin})
        verify = next(v for (m, p), v in table.items() if m == "POST" and p == "^/verify$")
        assert verify is None  # anonymous file checks: no role
    finally:
        app.state.engine.dispose()
