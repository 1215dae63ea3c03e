"""The API's PostgreSQL connection pool is bounded by DB_POOL_SIZE + DB_MAX_OVERFLOW per process (real
PostgreSQL; SQLite opens its file per connection and takes no pool settings)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import TimeoutError as PoolTimeout

from edgeledger.config import Settings
from edgeledger.db import make_engine
from edgeledger.main import create_app
from tests.backend.support.database import _database_urls, _with_installed_driver


def test_the_pool_settings_reach_the_apis_engine(tmp_path) -> None:  # type: ignore[no-untyped-def]
    settings = Settings(
        database_url="postgresql+psycopg2://postgres@127.0.0.1:5432/test",
        data_dir=tmp_path,
        db_pool_size=7,
        db_max_overflow=3,
    )
    engine = create_app(settings).state.engine
    assert engine.pool.size() == 7
    assert engine.pool._max_overflow == 3  # no public reader; the bound itself is tested below
    assert Settings(database_url="sqlite://", data_dir=tmp_path).db_pool_size == 5
    with pytest.raises(ValidationError):
        Settings(database_url="sqlite://", data_dir=tmp_path, db_pool_size=0)


@pytest.mark.parametrize("server_url", [u for u in _database_urls() if u != "sqlite"])
def test_a_process_never_holds_more_than_size_plus_overflow(server_url: str) -> None:
    url = _with_installed_driver(make_url(server_url)).render_as_string(hide_password=False)
    engine = make_engine(url, pool_size=2, max_overflow=1)
    engine.pool._timeout = 0.5  # type: ignore[attr-defined]
    held = [engine.connect() for _ in range(3)]
    try:
        for conn in held:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        with pytest.raises(PoolTimeout):
            engine.connect()
        held.pop().close()  # the overflow connection is closed on return, not kept
        assert engine.pool.checkedout() == 2
        again = engine.connect()
        assert again.execute(text("SELECT 1")).scalar() == 1
        held.append(again)
    finally:
        for conn in held:
            conn.close()
        engine.dispose()
