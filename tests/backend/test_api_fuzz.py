"""Schemathesis against the running API's OpenAPI schema, as an admin (the caller that reaches the most
code): no generated input may produce a 5xx. Schemathesis lives in its own virtualenv (.toolchain/fuzz,
made by scripts/bootstrap.sh from requirements-fuzz.lock) because it needs a newer hypothesis than
eth-brownie pins. CI runs a bounded, seeded run (FUZZ_MAX_EXAMPLES per operation, default 5); the full
run is the same test with a larger FUZZ_MAX_EXAMPLES (README, "Security")."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.config import PROJECT_ROOT, Settings
from edgeledger.db import make_engine

pytestmark = pytest.mark.integration
ST = PROJECT_ROOT / ".toolchain" / "fuzz" / "bin" / "st"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """Rate limits out of the fuzzer's way, so generated requests reach the handlers."""
    limits = (
        "rate_limit_auth_per_minute",
        "rate_limit_audit_per_minute",
        "rate_limit_write_per_minute",
        "rate_limit_anonymous_per_minute",
    )
    return settings.model_copy(update=dict.fromkeys(limits, 10**6))


def _admin_key(settings: Settings) -> str:
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        user = auth_service.create_user(session, role=Role.admin, name="fuzz admin")
        key, _ = auth_service.create_api_key(session, user, "fuzz")
        session.commit()
    engine.dispose()
    return key


def test_no_generated_request_gets_a_server_error(live_api: str, settings: Settings, tmp_path: Path) -> None:
    assert ST.is_file(), "scripts/bootstrap.sh installs Schemathesis into .toolchain/fuzz"
    examples = os.environ.get("FUZZ_MAX_EXAMPLES", "5")
    command = [
        str(ST),
        "run",
        f"{live_api}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--header",
        f"X-API-Key: {_admin_key(settings)}",
        "--max-examples",
        examples,
        "--seed",
        "20261122",
        "--workers",
        "1",
        "--request-timeout",
        "60",
        "--generation-database",
        "none",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3000, cwd=tmp_path, check=False)
    report = done.stdout[-8000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    counts = re.search(r"(\d+) generated, (\d+) passed", report)
    assert counts is not None and counts.group(1) == counts.group(2), report
    assert int(counts.group(1)) >= 40 * int(examples), report  # every operation was really exercised


def test_inputs_the_fuzzer_found_are_refused_with_a_4xx(app_client: Any) -> None:
    """Found by this fuzzer on PostgreSQL: a NUL character in a searched string and an offset beyond 64
    bits reached the database and came back as 500s. They are the client's error: 422 invalid_input."""
    from tests.backend.support.stack import make_caller

    admin = make_caller(app_client, Role.admin, "admin")
    for path, params in (
        ("/admin/users", {"offset": str(444907066217442443264)}),
        ("/deliveries/batches", {"source": "cf\x00x"}),
        ("/deliveries/proofs", {"source": "edgeledger-compliance-log", "request_id": "d\x00"}),
    ):
        response = app_client.get(path, params=params, headers=admin.headers)
        assert response.status_code < 500, (path, response.text)  # SQLite may simply find nothing
        if response.status_code >= 400:
            assert response.json()["error"]["code"] in ("invalid_input", "source_not_found"), response.text
