"""Rate limits on the whole app (real database, real Redis): counted per authenticated user, else per
client address, never per credential sent; a global budget for the routes anyone may call without a
credential; X-Forwarded-For only from trusted proxies; counters shared through Redis between two app
instances with the address key derived from the deployment's master key file."""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from edgeledger import ratelimit
from edgeledger.auth.identity import client_address
from edgeledger.auth.models import Role
from edgeledger.config import Settings, proxy_networks
from edgeledger.main import create_app
from edgeledger.ratelimit import RateLimiter
from edgeledger.server import uvicorn_command
from tests.backend.support.services import REDIS_URL
from tests.backend.support.stack import Caller, _caller

HOME = ("192.0.2.10", 50000)  # documentation addresses (RFC 5737): only ever strings in an ASGI scope
OTHER = ("198.51.100.7", 50000)
PROXY = ("127.0.0.1", 50000)


@pytest.fixture
def base(database_url: str, db_engine: Engine, tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, database_url=database_url)


@contextmanager
def client_of(settings: Settings, client: tuple[str, int] = HOME) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app, client=client) as test_client:
        yield test_client
    app.state.engine.dispose()


def user(db_engine: Engine, name: str = "creator") -> Caller:
    return _caller(db_engine, Role.creator, name, True)


def random_key() -> dict[str, str]:
    return {"X-API-Key": "el_" + secrets.token_hex(16)}


def test_a_fresh_random_key_per_request_opens_no_fresh_bucket(base: Settings) -> None:
    settings = base.model_copy(update={"rate_limit_write_per_minute": 5, "rate_limit_auth_per_minute": 3})
    with client_of(settings) as client:
        writes = [
            client.post("/auth/api-keys", json={"label": "x"}, headers=random_key()).status_code
            for _ in range(8)
        ]
        assert writes == [401] * 5 + [429] * 3  # every bad key counted against the sender's address
        refused = client.post("/auth/siwe/nonce", headers=random_key())  # the same write bucket
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        reads = [client.get("/auth/me", headers=random_key()).status_code for _ in range(5)]
        assert reads == [401, 401, 401, 429, 429]  # the auth bucket, per address too
    with client_of(settings, OTHER) as client:  # another address has its own buckets
        assert client.get("/auth/me", headers=random_key()).status_code == 401
        # Sign-in routes ignore a stale credential (a client signing in again may still send one).
        assert client.post("/auth/siwe/nonce", headers={"Authorization": "Bearer expired"}).status_code == 201


def test_an_authenticated_caller_is_counted_as_its_user_from_any_address(
    base: Settings, db_engine: Engine
) -> None:
    settings = base.model_copy(update={"rate_limit_auth_per_minute": 3})
    alice, bob = user(db_engine, "alice"), user(db_engine, "bob")
    app = create_app(settings)  # one process, two client addresses
    with TestClient(app, client=HOME) as home, TestClient(app, client=OTHER) as away:
        assert [home.get("/auth/me", headers=alice.headers).status_code for _ in range(2)] == [200, 200]
        assert away.get("/auth/me", headers=alice.headers).status_code == 200
        assert away.get("/auth/me", headers=alice.headers).status_code == 429  # 4th of alice's, anywhere
        assert home.get("/auth/me", headers=bob.headers).status_code == 200
        assert home.get("/auth/me").status_code == 401  # the address's own bucket is untouched
    app.state.engine.dispose()


def test_the_anonymous_budget_is_global_per_route_and_spares_authenticated_callers(
    base: Settings, db_engine: Engine
) -> None:
    settings = base.model_copy(
        update={"rate_limit_anonymous_per_minute": 3, "trusted_proxies": "127.0.0.0/8"}
    )
    creator = user(db_engine)
    with client_of(settings, PROXY) as client:

        def from_address(n: int) -> dict[str, str]:
            return {"X-Forwarded-For": f"203.0.113.{n}"}  # a different client each time

        nonces = [client.post("/auth/siwe/nonce", headers=from_address(n)).status_code for n in range(5)]
        assert nonces == [201, 201, 201, 429, 429]
        refused = client.post("/auth/siwe/nonce", headers=from_address(9))
        assert refused.json()["error"]["details"]["bucket"] == "anonymous"
        assert "Retry-After" in refused.headers
        assert client.post("/auth/siwe/nonce", headers=creator.headers).status_code == 201
        # Sign-in (a wallet's first creates an account) has a budget of its own.
        sign_ins = [
            client.post("/auth/siwe/verify", json={}, headers=from_address(n)).status_code for n in range(4)
        ]
        assert sign_ins == [422, 422, 422, 429]


def test_forwarded_for_counts_only_from_a_trusted_proxy(base: Settings) -> None:
    tight = base.model_copy(update={"rate_limit_auth_per_minute": 2})

    def codes(settings: Settings, peer: tuple[str, int]) -> list[int]:
        with client_of(settings, peer) as client:
            return [
                client.get("/auth/me", headers={"X-Forwarded-For": f"203.0.113.{n}"}).status_code
                for n in range(4)
            ]

    assert codes(tight, PROXY) == [401, 401, 429, 429]  # default: no proxy trusted, the header is ignored
    trusted = tight.model_copy(update={"trusted_proxies": "127.0.0.1/32"})
    assert codes(trusted, HOME) == [401, 401, 429, 429]  # a peer that is no trusted proxy
    assert codes(trusted, PROXY) == [401, 401, 401, 401]  # four clients behind the proxy


def test_the_client_address_is_the_nearest_untrusted_hop() -> None:
    trusted = proxy_networks("10.0.0.0/8, 2001:db8::/32")
    assert client_address("10.0.0.1", ["198.51.100.1, 203.0.113.5, 10.0.0.2"], trusted) == "203.0.113.5"
    assert client_address("10.0.0.1", ["198.51.100.1", "10.0.0.3"], trusted) == "198.51.100.1"
    assert client_address("203.0.113.9", ["198.51.100.1"], trusted) == "203.0.113.9"  # not via a proxy
    assert client_address("10.0.0.1", ["not-an-address, 10.0.0.2"], trusted) == "10.0.0.2"
    assert client_address("10.0.0.1", [], trusted) == "10.0.0.1"
    assert client_address("2001:db8::1", ["[2001:db8:1::5]:443"], trusted) == "2001:db8:1::5"
    assert client_address("10.0.0.1", ["198.51.100.1"], ()) == "10.0.0.1"  # default: trust none
    with pytest.raises(ValueError, match="not an address or CIDR"):
        Settings(trusted_proxies="10.0.0.0/8, proxy.example")


def test_the_serve_command_leaves_forwarded_for_to_the_app() -> None:
    assert "--no-proxy-headers" in uvicorn_command("127.0.0.1", 8000)  # uvicorn would trust 127.0.0.1


def test_addresses_are_keyed_hashes_and_ipv6_counts_per_64(tmp_path: Path) -> None:
    limiter = RateLimiter.from_settings(Settings(data_dir=tmp_path))
    key = limiter.address_key("192.0.2.10")
    # a keyed digest, never the address (a hex digest may hold the digits "192" by chance: 0.7 % of keys)
    assert re.fullmatch(r"a:[0-9a-f]{32}", key) and "192.0.2" not in key
    assert key == RateLimiter.from_settings(Settings(data_dir=tmp_path)).address_key("192.0.2.10")
    assert key != RateLimiter.from_settings(Settings(data_dir=tmp_path / "b")).address_key("192.0.2.10")
    assert limiter.address_key("2001:db8:1:2::1") == limiter.address_key("2001:db8:1:2:ffff::9")
    assert limiter.address_key("2001:db8:1:2::1") != limiter.address_key("2001:db8:1:3::1")


@pytest.fixture
def redis_prefix(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Counters of this test only (the Redis database is shared with other test runs)."""
    prefix = f"edgeledger:rl-test-{secrets.token_hex(6)}"
    monkeypatch.setattr(ratelimit, "REDIS_PREFIX", prefix)
    yield prefix
    store = redis.Redis.from_url(REDIS_URL)
    for key in store.scan_iter(f"{prefix}:*"):
        store.delete(key)


def test_two_app_instances_share_their_counts_through_redis(
    base: Settings, db_engine: Engine, redis_prefix: str
) -> None:
    # No PSEUDONYM_MASTER_KEY: the key comes from the master key file in DATA_DIR, as in a deployment
    # whose processes share that directory; nothing per process enters the counter's key.
    settings = base.model_copy(update={"rate_limit_redis_url": REDIS_URL, "rate_limit_auth_per_minute": 3})
    assert settings.pseudonym_master_key is None
    creator = user(db_engine)
    with client_of(settings) as first, client_of(settings) as second:
        assert [first.get("/auth/me").status_code for _ in range(2)] == [401, 401]
        assert second.get("/auth/me").status_code == 401
        assert second.get("/auth/me").status_code == 429  # the second process saw the first's count
        assert first.get("/auth/me").status_code == 429
        assert [first.get("/auth/me", headers=creator.headers).status_code for _ in range(3)] == [200] * 3
        assert second.get("/auth/me", headers=creator.headers).status_code == 429
    keys = [key.decode() for key in redis.Redis.from_url(REDIS_URL).scan_iter(f"{redis_prefix}:*")]
    assert any(f"/u:{creator.user_id}/" in key for key in keys), keys
    assert any("/a:" in key for key in keys), keys
    for key in keys:  # neither the credential nor the address is in Redis
        assert creator.api_key not in key and HOME[0] not in key and "testclient" not in key


def test_an_unreachable_counter_store_refuses_with_503(base: Settings, redis_prefix: str) -> None:
    settings = base.model_copy(update={"rate_limit_redis_url": "redis://127.0.0.1:1/0"})
    with client_of(settings) as client:
        refused = client.post("/auth/siwe/nonce")
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "rate_limit_unavailable" and refused.headers["Retry-After"]


@pytest.mark.parametrize("strategy", ["moving-window", "sliding-window-counter"])
def test_the_other_strategies_limit_too(base: Settings, strategy: str) -> None:
    settings = base.model_copy(update={"rate_limit_strategy": strategy, "rate_limit_write_per_minute": 2})
    if strategy == "sliding-window-counter":
        # Its counts live in fixed one-minute windows, the previous one weighted by what is left of it:
        # requests straddling a window's end are counted as slightly fewer than they are. Start well
        # inside a window so the three requests share one.
        while time.time() % 60 > 50:
            time.sleep(0.5)
    with client_of(settings) as client:
        assert [client.post("/auth/siwe/nonce").status_code for _ in range(3)] == [201, 201, 429]
        assert client.get("/health").status_code == 200  # reads are not writes


def test_settings_choose_the_store_and_the_limits(tmp_path: Path) -> None:
    memory = RateLimiter.from_settings(Settings(data_dir=tmp_path))
    assert not memory.shared
    shared = RateLimiter.from_settings(Settings(data_dir=tmp_path, rate_limit_redis_url=REDIS_URL))
    assert shared.shared
    assert shared.limits == {"auth": 60, "audit": 300, "write": 600, "app": 120, "anonymous": 300}
    assert not (tmp_path / "pseudonym-master.key").exists()  # read only when an address is first keyed
