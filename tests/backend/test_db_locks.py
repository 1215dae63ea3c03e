"""Work locks (``db.exclusive_work``) on real PostgreSQL hold for as long as the work runs, whatever the
server's idle-transaction timeout: the lock lives in a transaction left idle while the work commits step
by step, and a timeout ending that transaction would free the lock under a worker still posting."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from edgeledger.db import exclusive_work
from tests.backend.support.database import _database_urls, _with_installed_driver

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("server_url", [u for u in _database_urls() if u != "sqlite"])
def test_a_work_lock_outlives_the_servers_idle_transaction_timeout(server_url: str, tmp_path: Path) -> None:
    """Every connection runs under a 200 ms idle-transaction timeout, as a server configured for it
    would set: the lock taken stays held across five of them, and a rival worker cannot take it."""
    url = _with_installed_driver(make_url(server_url))
    engine = create_engine(url, connect_args={"options": "-c idle_in_transaction_session_timeout=200"})
    name = f"lock-test-{secrets.token_hex(4)}"
    try:
        with Session(engine) as probe:  # the timeout is in force for this engine's sessions
            assert probe.scalar(text("SHOW idle_in_transaction_session_timeout")) == "200ms"
        with Session(engine) as work, exclusive_work(work, tmp_path, name, 7) as locked:
            assert locked
            time.sleep(1.0)  # the work runs (a post waiting for its receipt): five timeouts long
            with Session(engine) as rival, exclusive_work(rival, tmp_path, name, 7) as also:
                assert not also
        with Session(engine) as later, exclusive_work(later, tmp_path, name, 7) as free_again:
            assert free_again  # released when the work ended, not before
    finally:
        engine.dispose()
