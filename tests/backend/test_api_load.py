"""The load benchmark's CI-sized run (benchmarks/api_load.py, 2 s per endpoint, one round): its own stack
(anvil, IPFS, a scratch PostgreSQL database, 2 uvicorn workers) under wrk; every answer must be a 2xx
(wrk reports any other) and every endpoint must serve requests. Throughput and its ratio to /health are
reported, not asserted: timings are the benchmark's business (README, "Faults, security and load")."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from edgeledger.config import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_the_load_benchmark_runs_error_free() -> None:
    server = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.api_load",
            "--seconds",
            "2",
            "--rounds",
            "1",
            "--database-url",
            server,
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary) == {"health", "proof", "asset"}
    assert all(row["rps"] > 0 for row in summary.values()), summary
    print(done.stdout)
