"""The read paths' plumbing (docs/operations.md, "Read paths"): Nagle off on every served connection,
no connection held across thread hand-offs, credentials and provenance reused for at most the read max
age, and every change that must take effect at once (a revoked key, a new chain head) doing so."""

from __future__ import annotations

import asyncio
import socket
from typing import Annotated, Any

import pytest
from fastapi import Depends
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from edgeledger import cache as cache_module
from edgeledger.auth.dependencies import CurrentPrincipal, Principal
from edgeledger.auth.models import Role
from edgeledger.cache import TtlCache
from edgeledger.db import get_session
from edgeledger.devtools.samples import demo_png
from edgeledger.server import FairAcceptEventLoop, NoDelayH11Protocol, set_nodelay, uvicorn_command
from tests.backend.support.stack import Caller, make_caller, post_asset, rpc

pytestmark = pytest.mark.integration


class _Transport:
    """The one thing the protocol asks of an asyncio transport before uvicorn's own set-up."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.sock if name == "socket" else default


def test_connections_accepted_from_a_shared_socket_get_tcp_nodelay() -> None:
    # uvicorn --workers binds its shared socket like this: family only, so proto 0, and asyncio's own
    # TCP_NODELAY (which checks proto == IPPROTO_TCP) never applies to the accepted connections.
    listener = socket.socket(family=socket.AF_INET)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    try:
        assert accepted.proto == 0
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        protocol = NoDelayH11Protocol.__new__(NoDelayH11Protocol)  # only connection_made's first step
        assert set_nodelay(_Transport(accepted)) is True
        assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        assert isinstance(protocol, NoDelayH11Protocol)
    finally:
        for s in (client, accepted, listener):
            s.close()


def test_unix_sockets_are_left_alone() -> None:
    left, right = socket.socketpair()
    try:
        assert set_nodelay(_Transport(left)) is False
    finally:
        left.close()
        right.close()


def test_the_serve_command_uses_the_nodelay_protocol() -> None:
    command = uvicorn_command("127.0.0.1", 8000, workers=4, access_log=False)
    assert command[command.index("--http") + 1] == "edgeledger.server:NoDelayH11Protocol"
    assert command[command.index("--loop") + 1] == "edgeledger.server:FairAcceptEventLoop"
    assert command[command.index("--workers") + 1] == "4"
    assert "--factory" in command and "--no-access-log" in command


def _accepted_in_one_readiness(loop: asyncio.AbstractEventLoop, pending: int) -> int:
    """How many of ``pending`` waiting connections one readiness of the listening socket accepts."""
    listener = socket.socket(family=socket.AF_INET)  # as uvicorn binds the shared socket
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    clients = [socket.create_connection(listener.getsockname()) for _ in range(pending)]
    try:
        # What the loop runs when the selector reports the socket readable (asyncio's own arguments).
        loop._accept_connection(asyncio.Protocol, listener, None, None, 100)  # type: ignore[attr-defined]
        left = 0
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                break
            conn.close()
            left += 1
        return pending - left
    finally:
        for client in clients:
            client.close()
        listener.close()
        loop.run_until_complete(asyncio.sleep(0.05))  # the accepted connections' set-up, then closed
        loop.close()


def test_each_worker_accepts_one_connection_per_turn() -> None:
    """A burst of connections is spread over the worker processes sharing the socket (server.py)."""
    assert _accepted_in_one_readiness(asyncio.SelectorEventLoop(), 5) == 5  # asyncio: all at once
    assert _accepted_in_one_readiness(FairAcceptEventLoop(), 5) == 1


def test_ttl_cache_expires_and_bounds_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [100.0]
    monkeypatch.setattr(cache_module.time, "monotonic", lambda: now[0])
    values: TtlCache[str] = TtlCache(max_age=1.0, max_entries=3)
    values.put("a", "A")
    assert values.get("a") == "A"
    now[0] += 0.999
    assert values.get("a") == "A"
    now[0] += 0.001
    assert values.get("a") is None  # exactly max_age old: stale
    values.put("b", "B")
    values.put("c", "C")
    assert len(values) == 3  # a (stale), b, c: full
    values.put("d", "D")  # dropped whole, then holds the newest only
    assert len(values) == 1 and values.get("d") == "D" and values.get("b") is None
    disabled: TtlCache[str] = TtlCache(max_age=0)
    disabled.put("a", "A")
    assert disabled.get("a") is None


def test_authentication_gives_the_connection_back_before_the_endpoint(app_client: TestClient) -> None:
    """A session must not hold a pooled connection while its request waits for a thread: requests that
    hold every thread while waiting for connections would deadlock the process."""
    app: Any = app_client.app
    seen: dict[str, Any] = {}

    @app.get("/_test/after-auth")
    def after_auth(
        principal: CurrentPrincipal, session: Annotated[Session, Depends(get_session)]
    ) -> dict[str, Any]:
        seen["in_transaction"] = session.in_transaction()
        seen["checked_out"] = app.state.engine.pool.checkedout()
        return {"user": principal.user_id}

    caller = make_caller(app_client, Role.auditor, "reader")
    assert app_client.get("/_test/after-auth", headers=caller.headers).status_code == 200
    assert seen == {"in_transaction": False, "checked_out": 0}


def test_a_revoked_key_is_refused_at_once_despite_the_principal_cache(app_client: TestClient) -> None:
    caller = make_caller(app_client, Role.creator, "creator")
    first = app_client.post("/auth/api-keys", json={"label": "second"}, headers=caller.headers)
    assert first.status_code == 201, first.text
    second = {"X-API-Key": first.json()["key"]}
    assert app_client.get("/auth/me", headers=second).status_code == 200  # now cached
    cache: Any = app_client.app.state.principal_cache  # type: ignore[attr-defined]
    assert len(cache) >= 1
    revoked = app_client.delete(f"/auth/api-keys/{first.json()['id']}", headers=caller.headers)
    assert revoked.status_code == 204
    refused = app_client.get("/auth/me", headers=second)
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "api_key_invalid"


def test_a_scope_change_applies_at_once_despite_the_principal_cache(app_client: TestClient) -> None:
    admin = make_caller(app_client, Role.admin, "admin")
    auditor = make_caller(app_client, Role.auditor, "auditor")
    assert app_client.get("/auth/me/scope", headers=auditor.headers).json()["is_global"] is True
    merchant = make_caller(app_client, Role.merchant, "merchant")
    changed = app_client.put(
        f"/admin/users/{auditor.user_id}/scope",
        json={"merchants": [merchant.user_id], "sources": []},
        headers=admin.headers,
    )
    assert changed.status_code == 200, changed.text
    scope = app_client.get("/auth/me/scope", headers=auditor.headers).json()
    assert scope["is_global"] is False and scope["merchants"] == [merchant.user_id]


def test_provenance_is_served_per_chain_head_and_follows_a_new_one(
    app_client: TestClient, creator: Caller, chain_snapshot: Any
) -> None:
    created = post_asset(
        app_client,
        creator,
        files={"file": ("shot.png", demo_png("read paths"), "image/png")},
        data={"metadata": '{"title": "Read paths"}'},
    )
    assert created.status_code == 201, created.text
    asset_id = created.json()["id"]
    first = app_client.get(f"/assets/{asset_id}", headers=creator.headers)
    assert first.status_code == 200 and first.json()["on_chain"]["status"] == "active"
    assert app_client.get(f"/assets/{asset_id}", headers=creator.headers).content == first.content

    chain: Any = app_client.app.state.chain  # type: ignore[attr-defined]
    registry = chain.contract("ContentRegistry")
    rpc(chain.rpc_url, "anvil_impersonateAccount", chain_snapshot.admin.address)
    registry.functions.markDisputed(asset_id, "bafkreidispute").transact(
        {"from": chain_snapshot.admin.address}
    )
    # Within the read max age the shared head is the old block: the answer is that block's, unchanged.
    head, _ = chain.fresh_head() or (None, None)
    if head is not None:
        assert app_client.get(f"/assets/{asset_id}", headers=creator.headers).content == first.content
    chain.head(max_age=0)  # the head moves on (as it does by itself after READ_MAX_AGE_SECONDS)
    after = app_client.get(f"/assets/{asset_id}", headers=creator.headers).json()
    assert after["on_chain"]["status"] == "disputed" == after["asset"]["status"]


def test_an_unknown_asset_is_404_and_never_cached(app_client: TestClient, creator: Caller) -> None:
    for _ in range(2):
        missing = app_client.get("/assets/987654", headers=creator.headers)
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "asset_not_found"
    cache: Any = app_client.app.state.provenance_cache  # type: ignore[attr-defined]
    assert not any(key[0] == 987654 for key in cache._entries)


def test_principal_is_plain_data() -> None:
    # Cached principals are shared between requests and threads: they must be immutable values.
    principal = Principal(user_id=1, role=Role.auditor, address=None, via="api_key")
    with pytest.raises(AttributeError):
        principal.role = Role.admin  # type: ignore[misc]
