"""The access-log parsers' speed-ups give exactly what the plain code gives (pure unit tests, no services).

Each fast path is compared with the straightforward code it replaces, on edge cases and on random input:
the field split's regular expression with the one it replaced, the per-minute time caches with the
uncached conversions (values, and for a bad time the same quarantine reason and detail, whatever the
cache holds), Alibaba's cached host and path with the code that cut them out of the URL on every line;
each including when a cache is cleared at its size limit. Records of the shared access-log loop, built
without the frozen dataclass's ``__init__``, are ordinary, equal, hashable and immutable records.
"""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable, Iterator

import pytest

from edgeledger.deliveries.parsers import (
    ParseStats,
    Reason,
    SourceSite,
    accesslog,
    cdnlogs,
    clear_caches,
    parse_log,
)
from edgeledger.deliveries.parsers.accesslog import (
    _aliyun_record,
    _tokens,
    cached_local_time_ms,
    local_time_ms,
)
from edgeledger.deliveries.parsers.cdnlogs import cached_tencent_time_ms, tencent_time_ms
from edgeledger.deliveries.parsers.fields import _CACHE_LIMIT, _Bad, _normalise_host, _path_of, _Run
from edgeledger.deliveries.records import DeliveryRecord, Pseudonymiser

# The field split as first written: the quoted string as an alternation per character.
_PLAIN_TOKEN_RE = re.compile(r'\[[^\]]*\]|"(?:[^"\\]|\\.)*"|\S+')


def test_split_matches_the_plain_expression_on_edge_cases() -> None:
    lines = [
        '1.2.3.4 - - [01/May/2024:02:00:00 +0200] "GET /a HTTP/1.1" 200 5 "-" "UA x"',
        '"unterminated quote and [bracket',
        '"escaped \\" quote" next',
        '"ends in a backslash\\',
        '"escape then newline\\\n" x',
        'a"b c"d [e "f] g" h',
        '[x]"y"z',
        '""""',
        '"a\\\\" "b\\\\\\"c"',
        '\u3000"wide space"\u3000[t]\x0bv',
        "",
    ]
    for line in lines:
        assert _tokens(line) == _PLAIN_TOKEN_RE.findall(line), line


def test_split_matches_the_plain_expression_on_random_lines() -> None:
    rng = random.Random(20240501)
    alphabet = ['"', "[", "]", "\\", " ", "\t", "\n", "\u3000", "a", "b", "é"]
    for _ in range(100_000):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 16)))
        assert _tokens(line) == _PLAIN_TOKEN_RE.findall(line), repr(line)


# --------------------------------------------------------------------------------------------------------
# Per-minute time caches
# --------------------------------------------------------------------------------------------------------

Outcome = tuple[str, object, object]


def _outcome(convert: Callable[[str], int], text: str) -> Outcome:
    """("ok", ms, None) or ("bad", reason, detail): what a line's quarantine would record."""
    try:
        return ("ok", convert(text), None)
    except _Bad as bad:
        return ("bad", bad.reason, bad.detail)


@pytest.fixture(autouse=True)
def _clean_caches() -> Iterator[None]:
    clear_caches()
    yield
    clear_caches()


LOCAL_TIMES = [
    "[1/May/2024:08:00:00 +0800]",
    "[1/May/2024:08:00:59 +0800]",  # last second of a minute ...
    "[1/May/2024:08:01:00 +0800]",  # ... and the first of the next
    "[01/May/2024:02:00:00 +0200]",  # the same instant, padded day, another offset
    "[1/May/2024:00:00:59 +0800]",  # the UTC day before
    "[1/May/2024:07:59:59 +0800]",
    "[30/Apr/2024:23:59:59 -0100]",  # the UTC day after
    "[31/Dec/2023:23:59:30 -0030]",  # the UTC year after
    "[1/Jan/2024:00:00:00 +1400]",
    "[29/Feb/2024:12:34:56 +0000]",
    "[1/Jan/1970:00:00:00 +0000]",  # the first valid second
    "[1/Jan/1970:00:00:30 +0001]",  # before 1970 in UTC
    "[1/Jan/1970:00:01:30 +0001]",
    "[31/Dec/9999:23:59:59 +0000]",  # the last valid second
    "[31/Dec/9999:23:59:59 -0001]",  # after year 9999 in UTC
    "[1/May/2024:08:00:60 +0800]",  # seconds out of range
    "[1/May/2024:08:00:99 +0800]",
    "[1/May/2024:08:00:6x +0800]",
    "[1/May/2024:08:00:\u0661\u0662 +0800]",  # digits, but not ASCII
    "[1/May/2024:08:00:6 +0800]",
    "[1/May/2024:08:00:000 +0800]",
    "[1/May/2024:08:60:00 +0800]",
    "[1/May/2024:24:00:00 +0800]",
    "[1/May/2024:08:00:00 +2400]",
    "[1/May/2024:08:00:00 +0860]",
    "[1/May/2024:08:00:00 0800]",
    "[29/Feb/2023:12:00:00 +0000]",
    "[31/Apr/2024:12:00:00 +0000]",
    "[1/Mai/2024:08:00:00 +0800]",
    "[1/may/2024:08:00:00 +0800]",
    "1/May/2024:08:00:00 +0800",
    "[1/May/2024:08:00:00 +0800",
    "[1/May/2024:08:00:00  +0800]",
    "-",
    "",
    "[]",
]


TENCENT_TIMES = [
    "20240501080000",
    "20240501080059",
    "20240501080100",
    "20240501000059",  # the UTC day before
    "20240101075959",  # the UTC year before
    "20240229235959",
    "19700101080000",  # the first valid second
    "19700101075959",  # before 1970 in UTC
    "99991231235959",
    "20230229000000",
    "20240501080060",
    "20240501086000",
    "20240501240000",
    "2024050108005x",
    "202405010800\u0661\u0662",
    "2024050108000",
    "202405010800000",
    "2024-05-01 08:00",
    "-",
    "",
]


def _siblings(text: str, seconds_at: int) -> list[str]:
    """``text`` with its two seconds characters (at ``seconds_at`` from the end) replaced: the strings that
    share its cache key."""
    if len(text) < -seconds_at:
        return []
    end = seconds_at + 2
    return [text[:seconds_at] + second + (text[end:] if end else "") for second in ("00", "30", "59")]


@pytest.mark.parametrize(
    ("cached", "plain", "texts", "seconds_at"),
    [
        (cached_local_time_ms, local_time_ms, LOCAL_TIMES, -9),
        (cached_tencent_time_ms, tencent_time_ms, TENCENT_TIMES, -2),
    ],
    ids=["local", "tencent"],
)
def test_cached_time_is_the_uncached_one_cold_and_warm(
    cached: Callable[[str], int], plain: Callable[[str], int], texts: list[str], seconds_at: int
) -> None:
    valid = 0
    for text in texts:
        clear_caches()
        expected = _outcome(plain, text)
        valid += expected[0] == "ok"
        assert _outcome(cached, text) == expected, text  # cold
        assert _outcome(cached, text) == expected, text  # its own minute cached (or a failure not cached)
        for primer in _siblings(text, seconds_at):  # a sibling's minute cached first
            clear_caches()
            assert _outcome(cached, primer) == _outcome(plain, primer), primer
            assert _outcome(cached, text) == expected, (primer, text)
    assert 5 <= valid < len(texts)  # both kinds were exercised


def test_cached_time_after_a_cached_minute_on_random_strings() -> None:
    """Random mutations of valid times, converted in one run (so whatever the cache holds is in play)."""
    rng = random.Random(7)
    chars = "0123456789:/+-[] x\u0663"
    for cached, plain, seeds in (
        (cached_local_time_ms, local_time_ms, LOCAL_TIMES[:15]),
        (cached_tencent_time_ms, tencent_time_ms, TENCENT_TIMES[:9]),
    ):
        for _ in range(20_000):
            text = list(rng.choice(seeds))
            for _ in range(rng.choice((0, 0, 1, 2))):
                text[rng.randrange(len(text))] = rng.choice(chars)
            mutated = "".join(text)
            assert _outcome(cached, mutated) == _outcome(plain, mutated), mutated


def test_failures_are_not_cached() -> None:
    assert _outcome(cached_local_time_ms, "[1/May/2024:08:00:60 +0800]")[0] == "bad"
    assert _outcome(cached_tencent_time_ms, "20240501080060")[0] == "bad"
    assert accesslog._local_minutes == {} and cdnlogs._tencent_minutes == {}


def _local_minute(m: int) -> str:
    """A local time of minute ``m`` (distinct for distinct ``m`` below 13 days), a varying second."""
    return f"[1/May/2024:{m // 60 % 24:02d}:{m % 60:02d}:{m % 7 * 8:02d} +{m // 1440 % 13:02d}00]"


def _tencent_minute(m: int) -> str:
    month, day, hour, minute = m // 43200 % 12 + 1, m // 1440 % 28 + 1, m // 60 % 24, m % 60
    return f"2024{month:02d}{day:02d}{hour:02d}{minute:02d}{m % 7 * 8:02d}"


@pytest.mark.parametrize(
    ("cached", "plain", "cache", "text_of"),
    [
        (cached_local_time_ms, local_time_ms, accesslog._local_minutes, _local_minute),
        (cached_tencent_time_ms, tencent_time_ms, cdnlogs._tencent_minutes, _tencent_minute),
    ],
    ids=["local", "tencent"],
)
def test_time_cache_is_cleared_at_its_limit_and_stays_exact(
    cached: Callable[[str], int],
    plain: Callable[[str], int],
    cache: dict[str, int],
    text_of: Callable[[int], str],
) -> None:
    minutes = _CACHE_LIMIT + 1_000
    texts = [text_of(m) for m in range(minutes)]
    assert len({t[:-9] + t[-7:] if t[0] == "[" else t[:-2] for t in texts}) == minutes  # distinct keys
    largest = 0
    for text in texts:
        assert cached(text) == plain(text)
        largest = max(largest, len(cache))
    assert largest == _CACHE_LIMIT  # it filled up to the limit ...
    assert len(cache) == minutes - _CACHE_LIMIT  # ... was cleared once, and refilled since
    for text in texts[:50] + texts[-50:]:  # evicted minutes and cached ones convert the same
        assert cached(text) == plain(text)


def test_a_bad_second_in_a_cached_minute_is_quarantined_as_before() -> None:
    lines = [
        '1.2.3.4 - - [01/May/2024:02:00:00 +0200] "GET /a HTTP/1.1" 200 5 "-" "UA"\n',
        '1.2.3.4 - - [01/May/2024:02:00:60 +0200] "GET /a HTTP/1.1" 200 5 "-" "UA"\n',
        '1.2.3.4 - - [01/May/2024:02:00:59 +0200] "GET /a HTTP/1.1" 200 5 "-" "UA"\n',
    ]
    stats = ParseStats()
    out = list(
        parse_log(
            lines,
            pseudonymiser=Pseudonymiser(b"\x11" * 32, "t"),
            log_format="nginx_combined",
            site=SourceSite("cdn.example", "FRA1"),
            stats=stats,
        )
    )
    assert (stats.records, stats.quarantined) == (2, 1)
    assert out[0].timestamp_ms == 1_714_521_600_000  # type: ignore[union-attr]
    assert out[2].timestamp_ms == 1_714_521_659_000  # type: ignore[union-attr]
    assert (out[1].reason, out[1].detail) == (  # type: ignore[union-attr]
        "bad_timestamp",
        "time_local '[01/May/2024:02:00:60 +0200]': out of range",  # a log time is not masked as an IP
    )


# --------------------------------------------------------------------------------------------------------
# Alibaba Cloud CDN: the host of the request URL, cached
# --------------------------------------------------------------------------------------------------------


def _plain_host_and_path(url: str) -> tuple[str, str]:
    """Host and path of an absolute URL as they were cut out on every line before the host cache."""
    if not url.startswith(("http://", "https://")):
        raise _Bad(Reason.bad_value, f"request URL {url[:60]!r} is not absolute (http:// or https://)")
    authority = url[url.index("//") + 2 :]
    cut = len(authority)
    for stop in "/?#":
        found = authority.find(stop)
        if 0 <= found < cut:
            cut = found
    host = _normalise_host(authority[:cut].rpartition("@")[2], "request URL host")
    return host, _path_of(url, "request URL")


def _aliyun_outcome(url: str, run: _Run) -> Outcome:
    line = f'[1/May/2024:08:00:00 +0800] 1.2.3.4 - 42 "-" "GET {url}" 200 180 100 HIT "UA" "video/MP2T" https'
    try:
        record = _aliyun_record(_tokens(line), 1, run, SourceSite())
    except _Bad as bad:
        return ("bad", bad.reason, bad.detail)
    return ("ok", record.host, record.uri)


def _plain_outcome(url: str) -> Outcome:
    try:
        return ("ok", *_plain_host_and_path(url))
    except _Bad as bad:
        return ("bad", bad.reason, bad.detail)


ALIYUN_URLS = [
    "https://cdn.example/a/b.ts",
    "http://cdn.example/a/b.ts",
    "https://CDN.Example./a%20b.ts?x=1#f",
    "https://cdn.example",
    "https://cdn.example?x=/y",  # a query before any slash: the host ends at "?"
    "https://cdn.example#frag/x",
    "https://cdn.example:8443/a",
    "https://user:pw@cdn.example:8443/a",
    "https://a@b@cdn.example/a",
    "https://[2001:db8::1]:8443/a",
    "https://[2001:db8::1]/a",
    "https://cdn%2Eexample/a",
    "https://cdn.example%2Fx/a",  # decodes to a "/" in the host: not a host name
    "https:///a",  # empty host
    "https://@/a",
    "https://:443/a",
    "https://-/a",
    "https://cdn\u00e9.example/a",
    "https://cdn\x01.example/a",
    "https://cdn.example/",
    "ftp://cdn.example/a",
    "//cdn.example/a",
    "/a/b.ts",
    "https:/cdn.example/a",
]


def test_aliyun_host_and_path_are_the_uncached_ones_cold_and_warm() -> None:
    run = _Run("f", Pseudonymiser(b"\x11" * 32, "t"), ParseStats())
    valid = 0
    for url in ALIYUN_URLS:
        expected = _plain_outcome(url)
        valid += expected[0] == "ok"
        clear_caches()
        assert _aliyun_outcome(url, run) == expected, url  # cold
        assert _aliyun_outcome(url, run) == expected, url  # its host cached (or a failure not cached)
    for url in ALIYUN_URLS:  # every host cached that could be, in one run
        assert _aliyun_outcome(url, run) == _plain_outcome(url), url
    assert 10 <= valid < len(ALIYUN_URLS)
    assert "cdn.example%2Fx" not in accesslog._aliyun_hosts  # failures are not stored
    assert "" not in accesslog._aliyun_hosts
    assert accesslog._aliyun_hosts["user:pw@cdn.example:8443"] == "cdn.example"


def test_aliyun_host_cache_is_cleared_at_its_limit() -> None:
    run = _Run("f", Pseudonymiser(b"\x11" * 32, "t"), ParseStats())
    urls = [f"https://Host{n}.example:443/seg-{n % 3}.ts" for n in range(_CACHE_LIMIT + 500)]
    largest = 0
    for url in urls:
        assert _aliyun_outcome(url, run) == _plain_outcome(url)
        largest = max(largest, len(accesslog._aliyun_hosts))
    assert largest == _CACHE_LIMIT
    assert len(accesslog._aliyun_hosts) == 500
    for url in urls[:20] + urls[-20:]:
        assert _aliyun_outcome(url, run) == _plain_outcome(url)


# --------------------------------------------------------------------------------------------------------
# Records of the shared access-log loop, built without the dataclass __init__
# --------------------------------------------------------------------------------------------------------

ACCESS_LOG_LINES = {
    "nginx_combined": '1.2.3.4 - - [01/May/2024:02:00:00 +0200] "GET /a HTTP/1.1" 200 5 "-" "UA"',
    "fastly_common": '1.2.3.4 - - [01/May/2024:02:00:00 +0200] "GET /a HTTP/1.1" 304 -',
    "aliyun": '[1/May/2024:08:00:00 +0800] 1.2.3.4 - 42 "-" "GET http://cdn.example/a" 200 9 1 HIT "UA" "v"',
    "tencent": '20240501080000 1.2.3.4 cdn.example /a 100 22 2 200 - 42 "UA" - GET HTTP/2.0 hit 2718',
    "akamai_structured": "1714521600 1.2.3.4 cdn.example /a 200 100",
}


@pytest.mark.parametrize("log_format", sorted(ACCESS_LOG_LINES))
def test_access_log_records_are_ordinary_frozen_records(log_format: str) -> None:
    stats = ParseStats()
    (record,) = parse_log(
        [ACCESS_LOG_LINES[log_format] + "\n"],
        pseudonymiser=Pseudonymiser(b"\x11" * 32, "t"),
        log_format=log_format,
        site=SourceSite("cdn.example", "FRA1", (1100, 1006, 1011, 1013, 1008, 1005)),
        stats=stats,
    )
    assert stats.records == 1
    assert type(record) is DeliveryRecord
    assert isinstance(record, DeliveryRecord)
    values = [getattr(record, f.name) for f in dataclasses.fields(DeliveryRecord)]
    slow = DeliveryRecord(*values)  # through the dataclass __init__
    assert record == slow and hash(record) == hash(slow) and repr(record) == repr(slow)
    assert dataclasses.astuple(record) == dataclasses.astuple(slow)
    assert record.timestamp_ms == 1_714_521_600_000 and record.uri == "/a"
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.host = "other.example"  # type: ignore[misc]
