"""Rate limits: per-caller one-minute windows, in memory and shared through a real Redis."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest
import redis
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient

from edgeledger.api_errors import install_error_handlers
from edgeledger.config import Settings
from edgeledger.ratelimit import (
    MemoryCounter,
    RateLimited,
    RateLimiter,
    RedisCounter,
    WriteRateLimit,
    rate_limit,
)

REDIS_URL = "redis://127.0.0.1:6379/15"


def build_app(limiter: RateLimiter) -> FastAPI:
    app = FastAPI()
    app.state.rate_limiter = limiter
    install_error_handlers(app)

    @app.get("/limited", dependencies=[Depends(rate_limit("audit"))])
    def limited() -> dict[str, str]:
        return {"ok": "yes"}

    return app


def limiter(counter: MemoryCounter | RedisCounter, limit: int = 3) -> RateLimiter:
    return RateLimiter(counter, {"auth": limit, "audit": limit}, secret=secrets.token_bytes(32))


@pytest.fixture
def redis_counter() -> Iterator[RedisCounter]:
    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    yield RedisCounter(REDIS_URL)
    client.flushdb()


def test_over_the_limit_is_429_with_retry_after_and_other_callers_are_unaffected() -> None:
    with TestClient(build_app(limiter(MemoryCounter()))) as client:
        for _ in range(3):
            assert client.get("/limited", headers={"X-API-Key": "key-one"}).status_code == 200
        refused = client.get("/limited", headers={"X-API-Key": "key-one"})
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(refused.headers["Retry-After"]) <= 60
        assert client.get("/limited", headers={"X-API-Key": "key-two"}).status_code == 200


def test_a_new_window_starts_a_new_count() -> None:
    rl = limiter(MemoryCounter(), limit=1)
    app = build_app(rl)
    with TestClient(app) as client:
        assert client.get("/limited").status_code == 200
        assert client.get("/limited").status_code == 429
    request = type("R", (), {"headers": {}, "cookies": {}, "client": None})()
    rl.check("audit", request, now=10_000_000.0)  # type: ignore[arg-type]
    with pytest.raises(RateLimited):
        rl.check("audit", request, now=10_000_001.0)  # type: ignore[arg-type]
    rl.check("audit", request, now=10_000_060.0)  # type: ignore[arg-type]


def test_redis_counters_are_shared_between_processes_and_hold_no_credential(
    redis_counter: RedisCounter,
) -> None:
    secret = secrets.token_bytes(32)
    first = RateLimiter(redis_counter, {"audit": 2}, secret)
    second = RateLimiter(RedisCounter(REDIS_URL), {"audit": 2}, secret)  # another API process
    with TestClient(build_app(first)) as a, TestClient(build_app(second)) as b:
        headers = {"X-API-Key": "el_secret-api-key"}
        assert a.get("/limited", headers=headers).status_code == 200
        assert b.get("/limited", headers=headers).status_code == 200
        assert a.get("/limited", headers=headers).status_code == 429
    keys = [k.decode() for k in redis.Redis.from_url(REDIS_URL).keys("edgeledger:rl:*")]
    assert keys and all("secret" not in k and "testclient" not in k for k in keys)


def test_settings_choose_the_counter() -> None:
    assert isinstance(RateLimiter.from_settings(Settings()).counter, MemoryCounter)
    shared = RateLimiter.from_settings(Settings(rate_limit_redis_url=REDIS_URL))
    assert isinstance(shared.counter, RedisCounter)
    assert shared.limits == {"auth": 60, "audit": 300, "write": 600}


def test_every_state_changing_request_counts_against_the_write_bucket() -> None:
    app = FastAPI()
    app.state.rate_limiter = RateLimiter(MemoryCounter(), {"write": 2}, secret=secrets.token_bytes(32))
    app.add_middleware(WriteRateLimit)

    @app.post("/things")
    def create() -> dict[str, str]:
        return {"created": "yes"}

    @app.get("/things")
    def read() -> dict[str, str]:
        return {"read": "yes"}

    with TestClient(app) as client:
        headers = {"X-API-Key": "writer"}
        assert [client.post("/things", headers=headers).status_code for _ in range(3)] == [200, 200, 429]
        refused = client.post("/things", headers=headers)
        assert refused.json()["error"]["code"] == "rate_limited" and refused.headers["Retry-After"]
        assert client.get("/things", headers=headers).status_code == 200  # reads are not counted
        assert client.post("/things", headers={"X-API-Key": "someone else"}).status_code == 200
