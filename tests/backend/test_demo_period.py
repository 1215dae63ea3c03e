"""The demo's period is fixed once per run: a run that crosses midnight UTC delivers in, settles and
audits one day (pure tests of edgeledger.devtools.demo.demo_period and the sample log's day)."""

from __future__ import annotations

import gzip
from datetime import UTC, datetime

from edgeledger.devtools.demo import demo_period
from edgeledger.devtools.samples import demo_cloudfront_log


def _ts(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def test_the_demo_period_is_yesterday_utc_as_of_the_given_instant():
    start = int(_ts("2026-12-05T00:00:00"))
    assert demo_period(_ts("2026-12-06T00:00:00")) == start
    assert demo_period(_ts("2026-12-06T23:59:59.999")) == start
    assert demo_period(_ts("2026-12-07T00:00:00")) == start + 86_400
    assert demo_period(_ts("2027-01-01T08:00:00")) == int(_ts("2026-12-31T00:00:00"))


def test_the_sample_log_is_dated_on_the_given_day_whatever_the_clock():
    day_start = int(_ts("2024-02-29T00:00:00"))
    log, ids = demo_cloudfront_log("bafkqaaa", 1_000, "fixed", lines=20, day_start=day_start)
    lines = [line for line in gzip.decompress(log).decode().splitlines() if not line.startswith("#")]
    assert len(lines) == len(ids) == 20
    assert {line.split("\t")[0] for line in lines} == {"2024-02-29"}
