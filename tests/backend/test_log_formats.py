"""Access-log formats (nginx combined, Alibaba Cloud CDN) against golden files (pure unit tests, no services).

Each ``samples/formats/<format>.log`` holds the vendor's documented example line first, then variants and
broken lines; ``<format>.expected.json`` is every outcome in order (the expected client IP stands in
for its pseudonym, computed here with the test key).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgeledger.deliveries.parsers import (
    ALIYUN,
    NGINX_COMBINED,
    NginxSite,
    ParseStats,
    detect_format,
    parse_log,
)
from edgeledger.deliveries.parsers.accesslog import _tokens
from edgeledger.deliveries.records import DeliveryRecord, LogFormatError, Pseudonymiser

SAMPLES = Path(__file__).parent / "samples" / "formats"
PSEUDONYMISER = Pseudonymiser(b"k" * 32, "formats")
SITE = NginxSite("Media.Example.com", "FRA1")


def _outcomes(name: str, **kwargs: object) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for item in parse_log(SAMPLES / name, pseudonymiser=PSEUDONYMISER, file_name=name, **kwargs):  # type: ignore[arg-type]
        if isinstance(item, DeliveryRecord):
            fields = {slot: getattr(item, slot) for slot in DeliveryRecord.__slots__}
            fields["cache_result"] = item.cache_result.name
            out.append({"record": fields})
        else:
            out.append(
                {
                    "quarantined": {
                        "line_number": item.line_number,
                        "reason": item.reason,
                        "raw": item.raw,
                        "detail": item.detail,
                    }
                }
            )
    return out


def _expected(name: str) -> list[dict[str, object]]:
    expected = json.loads((SAMPLES / name).read_text())
    for item in expected:
        record = item.get("record")
        if record is not None:
            record["client_pseudonym"] = PSEUDONYMISER.pseudonym(record.pop("client_ip"))
    return expected


@pytest.mark.parametrize(
    ("log", "golden", "log_format", "kwargs"),
    [
        ("nginx_combined.log", "nginx_combined.expected.json", NGINX_COMBINED, {"site": SITE}),
        ("aliyun.log", "aliyun.expected.json", ALIYUN, {}),
    ],
)
def test_golden_file(log: str, golden: str, log_format: str, kwargs: dict[str, object]) -> None:
    assert detect_format((SAMPLES / log).read_text().splitlines(), file_name=log) == log_format
    stats = ParseStats()
    assert _outcomes(log, stats=stats, **kwargs) == _expected(golden)
    assert _outcomes(log, log_format=log_format, **kwargs) == _expected(golden)
    assert stats.lines == stats.records + stats.quarantined + stats.skipped
    assert stats.by_format == {log_format: 1}


def test_derived_request_id_is_the_documented_hash() -> None:
    line = (SAMPLES / "aliyun.log").read_text().splitlines()[0]
    digest = hashlib.sha256("\x00".join(_tokens(line)).encode()).hexdigest()
    (record,) = parse_log([line + "\n"], pseudonymiser=PSEUDONYMISER)
    assert isinstance(record, DeliveryRecord)
    assert record.request_id == "ali-" + digest[:32]


def test_identical_lines_share_an_id_and_any_difference_separates_them() -> None:
    line = (SAMPLES / "nginx_combined.log").read_text().splitlines()[1]
    other = line.replace("Linux x86_64", "Linux aarch64")
    records = list(
        parse_log([line + "\n", line + "\n", other + "\n"], pseudonymiser=PSEUDONYMISER, site=SITE)
    )
    ids = [r.request_id for r in records if isinstance(r, DeliveryRecord)]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]


def test_nginx_combined_without_a_site_is_rejected() -> None:
    with pytest.raises(LogFormatError, match="no host or edge location"):
        list(parse_log(SAMPLES / "nginx_combined.log", pseudonymiser=PSEUDONYMISER))


@pytest.mark.parametrize(
    "line",
    [
        # Common Log Format (no referer, no user agent): not nginx combined
        '127.0.0.1 - frank [10/Oct/2000:13:55:36 -0700] "GET /apache_pb.gif HTTP/1.0" 200 2326',
        # nginx's default "main" format (combined + X-Forwarded-For): one field too many
        '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2 "-" "curl" "198.51.100.1"',
        # a bracketed-time layout of another CDN (protocol, method, host, path as separate fields)
        '[05/Feb/2018:07:54:52 +0800] 192.0.2.1 1 "-" "HTTP/1.1" "GET" "www.test.com" "/a.apk" 206 720 HIT',
    ],
)
def test_an_ambiguous_access_log_line_is_rejected_not_guessed(line: str) -> None:
    with pytest.raises(LogFormatError, match="an access-log line of no known layout"):
        detect_format([line], file_name="x.log")
