"""The formats of merchants' CDNs and of our own nginx edge nodes against golden files (pure unit tests, no
services): nginx combined, Alibaba Cloud CDN, Tencent Cloud CDN, Fastly (common, combined, JSON), Akamai
DataStream 2 (JSON, structured).

Each ``samples/formats/<format>.<ext>`` holds lines built from the vendor's documented layout and example
(``samples/formats/README.md`` names the documentation page of each), then variants and broken lines;
``<format>.expected.json`` is every outcome in order (the expected client IP stands in for its
pseudonym, computed here with the test key). Also: detection names a format only when exactly one fits,
and what each format needs declared is refused when missing.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from edgeledger.deliveries.parsers import (
    AKAMAI_JSON,
    AKAMAI_STRUCTURED,
    ALIYUN,
    FASTLY_COMBINED,
    FASTLY_COMMON,
    FASTLY_JSON,
    NGINX_COMBINED,
    TENCENT,
    NginxSite,
    ParseStats,
    SourceSite,
    detect_format,
    parse_log,
)
from edgeledger.deliveries.parsers.accesslog import _tokens
from edgeledger.deliveries.records import (
    AmbiguousLogFormatError,
    DeliveryRecord,
    LogFormatError,
    Pseudonymiser,
)

SAMPLES = Path(__file__).parent / "samples" / "formats"
PSEUDONYMISER = Pseudonymiser(b"k" * 32, "formats")
SITE = NginxSite("Media.Example.com", "FRA1")
#: The data set field ids of the Akamai structured sample's columns, in order: CP code, request id, request
#: time, bytes, client IP, status, protocol, host, method, path, user agent, cache status, country.
AKAMAI_FIELDS = (1000, 1002, 1100, 1005, 1006, 1008, 1009, 1011, 1012, 1013, 1017, 2010, 2012)
GOLDEN = [
    # log, format, what the source declares, what detection says (a format, or the candidates)
    ("nginx_combined.log", NGINX_COMBINED, {"site": SITE}, (NGINX_COMBINED, FASTLY_COMBINED)),
    ("aliyun.log", ALIYUN, {}, ALIYUN),
    ("tencent.log", TENCENT, {}, TENCENT),
    ("fastly_common.log", FASTLY_COMMON, {"site": SITE}, FASTLY_COMMON),
    ("fastly_combined.log", FASTLY_COMBINED, {"site": SITE}, (NGINX_COMBINED, FASTLY_COMBINED)),
    ("fastly_json.ndjson", FASTLY_JSON, {}, FASTLY_JSON),
    ("akamai_json.ndjson", AKAMAI_JSON, {}, AKAMAI_JSON),
    ("akamai_structured.log", AKAMAI_STRUCTURED, {"site": SourceSite(fields=AKAMAI_FIELDS)}, None),
]


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


@pytest.mark.parametrize(("log", "log_format", "kwargs", "detected"), GOLDEN, ids=[g[1] for g in GOLDEN])
def test_golden_file(log: str, log_format: str, kwargs: dict[str, object], detected: object) -> None:
    golden = log.rsplit(".", 1)[0] + ".expected.json"
    stats = ParseStats()
    assert _outcomes(log, stats=stats, log_format=log_format, **kwargs) == _expected(golden)
    assert stats.lines == stats.records + stats.quarantined + stats.skipped
    assert stats.by_format == {log_format: 1}
    assert stats.records >= 3 and stats.quarantined >= 1  # every golden file has good and broken lines
    lines = (SAMPLES / log).read_text().splitlines()
    if isinstance(detected, str):
        assert detect_format(lines, file_name=log) == detected
        assert _outcomes(log, **kwargs) == _expected(golden)  # detected, not declared: the same outcomes
    elif detected is None:
        with pytest.raises(LogFormatError) as refused:
            detect_format(lines, file_name=log)
        assert not isinstance(refused.value, AmbiguousLogFormatError)
    else:
        with pytest.raises(AmbiguousLogFormatError) as ambiguous:
            detect_format(lines, file_name=log)
        assert ambiguous.value.candidates == detected
        with pytest.raises(AmbiguousLogFormatError):
            list(parse_log(SAMPLES / log, pseudonymiser=PSEUDONYMISER, **kwargs))  # type: ignore[arg-type]


def test_every_golden_file_is_tested_and_cited() -> None:
    logs = {path.name for path in SAMPLES.iterdir() if not path.name.endswith((".json", ".md"))}
    assert logs == {g[0] for g in GOLDEN}
    readme = (SAMPLES / "README.md").read_text()
    assert all(f"`{log}`" in readme for log in logs)


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
        parse_log(
            [line + "\n", line + "\n", other + "\n"],
            pseudonymiser=PSEUDONYMISER,
            site=SITE,
            log_format=NGINX_COMBINED,
        )
    )
    ids = [r.request_id for r in records if isinstance(r, DeliveryRecord)]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2]


@pytest.mark.parametrize("log_format", [NGINX_COMBINED, FASTLY_COMMON, FASTLY_COMBINED])
def test_formats_without_host_need_the_declared_site(log_format: str) -> None:
    for site in (None, SourceSite(host="media.example.com"), SourceSite(edge_location="FRA1")):
        with pytest.raises(LogFormatError, match="no host or edge location"):
            list(
                parse_log(
                    SAMPLES / "fastly_common.log",
                    pseudonymiser=PSEUDONYMISER,
                    log_format=log_format,
                    site=site,
                )
            )


def test_akamai_structured_needs_its_declared_field_ids() -> None:
    log = SAMPLES / "akamai_structured.log"
    with pytest.raises(LogFormatError, match="field ids"):
        list(parse_log(log, pseudonymiser=PSEUDONYMISER, log_format=AKAMAI_STRUCTURED))
    without_host = tuple(f for f in AKAMAI_FIELDS if f != 1011)
    with pytest.raises(LogFormatError, match="lack 1011"):
        list(
            parse_log(
                log,
                pseudonymiser=PSEUDONYMISER,
                log_format=AKAMAI_STRUCTURED,
                site=SourceSite(fields=without_host),
            )
        )


def test_a_declared_edge_location_is_used_where_the_log_names_none() -> None:
    site = SourceSite(edge_location="HKG1", fields=AKAMAI_FIELDS)
    (first, *_) = parse_log(
        SAMPLES / "akamai_structured.log",
        pseudonymiser=PSEUDONYMISER,
        log_format=AKAMAI_STRUCTURED,
        site=site,
    )
    assert isinstance(first, DeliveryRecord) and first.edge_location == "HKG1"
    (first, *_) = parse_log(SAMPLES / "tencent.log", pseudonymiser=PSEUDONYMISER, site=site)
    assert isinstance(first, DeliveryRecord) and (first.edge_location, first.source_format) == (
        "HKG1",
        TENCENT,
    )


def test_tencent_http3_and_beijing_time() -> None:
    line = (SAMPLES / "tencent.log").read_text().splitlines()[1]
    assert " HTTP/3 " in line and line.startswith("20240501200002 ")
    (record,) = parse_log([line], pseudonymiser=PSEUDONYMISER)
    assert isinstance(record, DeliveryRecord)
    assert record.timestamp_ms == 1_714_564_802_000  # 2024-05-01T12:00:02Z: the line's 20:00:02 at UTC+8


@pytest.mark.parametrize(
    "line",
    [
        # nginx's default "main" format (combined + X-Forwarded-For): one field too many
        '127.0.0.1 - - [10/Oct/2000:13:55:36 -0700] "GET / HTTP/1.0" 200 2 "-" "curl" "198.51.100.1"',
        # a bracketed-time layout of another CDN (protocol, method, host, path as separate fields)
        '[05/Feb/2018:07:54:52 +0800] 192.0.2.1 1 "-" "HTTP/1.1" "GET" "www.test.com" "/a.apk" 206 720 HIT',
    ],
)
def test_an_ambiguous_access_log_line_is_rejected_not_guessed(line: str) -> None:
    with pytest.raises(LogFormatError, match="an access-log line of no known layout"):
        detect_format([line], file_name="x.log")


def test_json_lines_that_fit_several_schemas_are_ambiguous() -> None:
    line = '{"RayID": "r", "ClientIP": "192.0.2.1", "cliIP": "192.0.2.1", "reqTimeSec": "1714564801"}'
    with pytest.raises(AmbiguousLogFormatError) as ambiguous:
        detect_format([line], file_name="x.ndjson")
    assert ambiguous.value.candidates == ("cloudflare", "akamai_json")
    assert "declare the source's log format" in ambiguous.value.reason
