"""The provenance-read benchmark (benchmarks/provenance_reads.py) at CI size, so that it cannot rot into a
run that measures something else: both of its clients read every asset's record exactly as a direct
client does (the benchmark exits non-zero otherwise), the batching client in 2 requests per read (the
batch, the split's block), the other in 8 (one per read)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgeledger.config import PROJECT_ROOT

pytestmark = pytest.mark.integration


def test_the_benchmark_reads_the_same_records_in_2_requests_against_8() -> None:
    small = ["--assets", "3", "--rounds", "1", "--latency-ms", "0"]
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.provenance_reads", *small],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["batch"]["requests_per_read"] == 2
    assert result["one_by_one"]["requests_per_read"] == 8
    assert result["assets"] == 3 and result["ratio"] > 0
