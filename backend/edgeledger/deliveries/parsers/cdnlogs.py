"""Space-separated logs of merchants' CDNs: Tencent Cloud CDN offline logs, Fastly's Common and Combined Log
Formats, and Akamai DataStream 2 structured (space- or tab-delimited) logs (docs/log-formats.md).

Each line is cut into fields and checked like every other format (``fields``); the record is built with
the same conversions, so a Tencent, Fastly or Akamai line maps to the same :class:`DeliveryRecord` as a
CloudFront one. Tencent and Fastly CLF lines carry no request id: they get a derived one
(``accesslog.derived_request_id``); an Akamai line without its request id column gets one too. Fastly
CLF lines name neither host nor edge location and Akamai structured columns are not self-describing:
those come from what the source declared (:class:`SourceSite`), never from a guess.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

from edgeledger.deliveries.parsers.accesslog import (
    SourceSite,
    _body_bytes,
    _clf_record,
    derived_request_id,
)
from edgeledger.deliveries.parsers.edges import _country_code, edge_location_country
from edgeledger.deliveries.parsers.fields import (
    _CACHE_LIMIT,
    _EPOCH_ORDINAL,
    _SECOND_MS,
    Reason,
    _Bad,
    _check_ms,
    _normalise_host,
    _path_of,
    _Run,
    _status,
)
from edgeledger.deliveries.parsers.names import (
    AKAMAI_STRUCTURED,
    FASTLY_COMBINED,
    FASTLY_COMMON,
    TENCENT,
)
from edgeledger.deliveries.records import CacheResult, DeliveryRecord, make_record

# --------------------------------------------------------------------------------------------------------
# Tencent Cloud CDN offline logs
# --------------------------------------------------------------------------------------------------------

#: Fields of a Tencent Cloud CDN offline log line (the 16 of the documented layout).
TENCENT_TOKENS = 16


#: Tencent's request time has no zone: the offline logs are written in Beijing time (UTC+8), mainland and
#: outside-mainland packages alike.
TENCENT_UTC_OFFSET_MINUTES = 8 * 60


#: Edge location of Tencent records: the offline log does not name the node that served.
TENCENT_EDGE_LOCATION = "TENCENT-CDN"


_TENCENT_TIME_RE = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})([0-9]{2})")


_HIT_MISS = {"hit": CacheResult.hit, "miss": CacheResult.miss}


def tencent_time_ms(text: str) -> int:
    """Unix ms of a Tencent ``yyyyMMddHHmmss`` request time (Beijing time)."""
    match = _TENCENT_TIME_RE.fullmatch(text)
    if match is None:
        raise _Bad(Reason.bad_timestamp, f"request time {text[:30]!r} is not yyyyMMddHHmmss")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    try:
        ordinal = dt.date(year, month, day).toordinal()
    except ValueError as exc:
        raise _Bad(Reason.bad_timestamp, f"request time {text!r}: {exc}") from None
    if hour > 23 or minute > 59 or second > 59:
        raise _Bad(Reason.bad_timestamp, f"request time {text!r} is out of range")
    minutes = hour * 60 + minute - TENCENT_UTC_OFFSET_MINUTES
    ms = (ordinal - _EPOCH_ORDINAL) * 86_400_000 + (minutes * 60 + second) * 1000
    return _check_ms(ms, "request time")


_tencent_minutes: dict[str, int] = {}


def cached_tencent_time_ms(text: str) -> int:
    """:func:`tencent_time_ms`, cached per minute: the key is the string without its last two characters
    (the seconds), the value the Unix ms of second 00. A string whose key is cached has the 12 digits of a
    valid time before its last two, so when those are ``00``..``59`` it is valid too and its time is that
    value plus the seconds; anything else, and every miss, goes to :func:`tencent_time_ms` (errors
    included; only successes are stored, the cache is cleared at ``_CACHE_LIMIT`` entries).
    """
    key = text[:-2]
    minute = _tencent_minutes.get(key)
    if minute is not None:
        second = _SECOND_MS.get(text[-2:])
        if second is not None:
            return minute + second
    ms = tencent_time_ms(text)
    if len(_tencent_minutes) >= _CACHE_LIMIT:
        _tencent_minutes.clear()
    _tencent_minutes[key] = ms - _SECOND_MS[text[-2:]]
    return ms


def looks_like_tencent(tokens: list[str]) -> bool:
    return (
        len(tokens) == TENCENT_TOKENS
        and _TENCENT_TIME_RE.fullmatch(tokens[0]) is not None
        and tokens[3][:1] == "/"
        and tokens[12].isalpha()
        and tokens[13].upper().startswith(("HTTP/", "HTTPS/", "QUIC"))
    )


def _tencent_record(tokens: list[str], line_number: int, run: _Run, site: SourceSite) -> DeliveryRecord:
    # time client-ip domain path bytes province isp status referer response-ms "user-agent" range method
    # protocol hit/miss client-port
    if len(tokens) != TENCENT_TOKENS:
        raise _Bad(Reason.field_count, f"{len(tokens)} fields, Tencent Cloud CDN has {TENCENT_TOKENS}")
    stamp, client_ip, domain, path, bytes_text = tokens[:5]
    if not client_ip or client_ip == "-":
        raise _Bad(Reason.missing_field, "client IP is empty")
    timestamp_ms = cached_tencent_time_ms(stamp)
    host = _normalise_host(domain, "domain")
    uri = _path_of(path, "request path")
    status = _status(tokens[7])
    method = tokens[12]
    body = _body_bytes(method, status, bytes_text, "bytes")
    edge = site.edge_location
    return make_record(
        TENCENT,
        derived_request_id("tc-", tokens),
        timestamp_ms,
        edge or TENCENT_EDGE_LOCATION,
        edge_location_country(edge) if edge else "",
        host,
        uri,
        body,
        status,
        _HIT_MISS.get(tokens[14].lower(), CacheResult.unknown),
        run.pseudonym(client_ip),
        line_number,
    )


# --------------------------------------------------------------------------------------------------------
# Fastly: Common Log Format and Combined Log Format
# --------------------------------------------------------------------------------------------------------

#: Fields of ``%h %l %u %t "%r" %>s %b`` and of the combined ``... "%{Referer}i" "%{User-agent}i"``.
FASTLY_COMMON_TOKENS = 7
FASTLY_COMBINED_TOKENS = 9


_FASTLY_NAMES = ("%h", "%t", "%b")


def looks_like_clf(tokens: list[str], size: int) -> bool:
    """``size`` fields laid out as the Common Log Format (combined: two more, quoted)."""
    return (
        len(tokens) == size
        and tokens[3][:1] == "["
        and tokens[4][:1] == '"'
        and all(token[:1] == '"' for token in tokens[7:])
    )


def _fastly_common_record(tokens: list[str], line_number: int, run: _Run, site: SourceSite) -> DeliveryRecord:
    if len(tokens) != FASTLY_COMMON_TOKENS:
        raise _Bad(Reason.field_count, f"{len(tokens)} fields, the Common Log Format has 7")
    return _clf_record(FASTLY_COMMON, "fst-", tokens, line_number, run, site, _FASTLY_NAMES)


def _fastly_combined_record(
    tokens: list[str], line_number: int, run: _Run, site: SourceSite
) -> DeliveryRecord:
    if len(tokens) != FASTLY_COMBINED_TOKENS:
        raise _Bad(Reason.field_count, f"{len(tokens)} fields, the Combined Log Format has 9")
    return _clf_record(FASTLY_COMBINED, "fst-", tokens, line_number, run, site, _FASTLY_NAMES)


# --------------------------------------------------------------------------------------------------------
# Akamai DataStream 2: structured (space- or tab-delimited) logs, columns by data set field id
# --------------------------------------------------------------------------------------------------------

#: DataStream 2 data set field ids the parser reads (any other id is a column it reads past).
AKAMAI_FIELD_IDS = {
    1002: "reqId",
    1005: "bytes",
    1006: "cliIP",
    1008: "statusCode",
    1011: "reqHost",
    1012: "reqMethod",
    1013: "reqPath",
    1100: "reqTimeSec",
    2010: "cacheStatus",
    2012: "country",
}


#: Field ids an Akamai structured source must declare (request id and cache status are optional).
AKAMAI_REQUIRED_IDS = (1100, 1006, 1011, 1013, 1008, 1005)


#: Edge location of Akamai records when the source declares none: DataStream names no edge location code
#: (only the edge server's IP, field 1066, which is not a location).
AKAMAI_EDGE_LOCATION = "AKAMAI"


_AKAMAI_CACHE = {"1": CacheResult.hit, "0": CacheResult.miss}


_EPOCH_RE = re.compile(r"([0-9]{1,12})(?:\.([0-9]{1,9}))?")


def epoch_seconds_ms(text: str, field_name: str) -> int:
    """Unix ms of ``1714564801`` or ``1714564801.123`` (seconds, optional fraction)."""
    match = _EPOCH_RE.fullmatch(text)
    if match is None:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {text[:30]!r} is not Unix seconds")
    return _check_ms(int(match[1]) * 1000 + int(((match[2] or "") + "000")[:3]), field_name)


def missing_akamai_ids(fields: tuple[int, ...]) -> list[int]:
    return [field_id for field_id in AKAMAI_REQUIRED_IDS if field_id not in fields]


def akamai_record(
    log_format: str,
    values: dict[str, str],
    tokens: list[str],
    line_number: int,
    pseudonym: Callable[[str], bytes],
    site: SourceSite,
) -> DeliveryRecord:
    """A DataStream 2 record from its values by field name (``-`` or absent = not logged); shared by the
    structured and JSON formats. ``tokens`` feed the derived request id when ``reqId`` is not logged."""

    def need(name: str) -> str:
        value = values.get(name, "-")
        if not value or value == "-":
            raise _Bad(Reason.missing_field, f"{name} is missing")
        return value

    client_ip = need("cliIP")
    timestamp_ms = epoch_seconds_ms(need("reqTimeSec"), "reqTimeSec")
    host = _normalise_host(need("reqHost"), "reqHost")
    uri = _path_of(need("reqPath"), "reqPath")
    if uri[0] != "/":  # a path logged without its leading slash is the same path
        uri = "/" + uri
    status = _status(need("statusCode"))
    method = values.get("reqMethod", "-")
    body = _body_bytes(method, status, need("bytes"), "bytes")
    request_id = values.get("reqId", "-")
    if not request_id or request_id == "-":
        request_id = derived_request_id("ak-", tokens)
    edge = site.edge_location or AKAMAI_EDGE_LOCATION
    country = values.get("country", "-")
    if country and country != "-":
        country = _country_code(country, "")
    else:  # not logged: the declared edge location's country, if any
        country = edge_location_country(site.edge_location) if site.edge_location else ""
    return make_record(
        log_format,
        request_id,
        timestamp_ms,
        edge,
        country,
        host,
        uri,
        body,
        status,
        _AKAMAI_CACHE.get(values.get("cacheStatus", "-"), CacheResult.unknown),
        pseudonym(client_ip),
        line_number,
    )


def _akamai_structured_record(
    tokens: list[str], line_number: int, run: _Run, site: SourceSite
) -> DeliveryRecord:
    fields = site.fields
    if len(tokens) != len(fields):
        raise _Bad(
            Reason.field_count, f"{len(tokens)} fields, the source declares {len(fields)} data set fields"
        )
    names = AKAMAI_FIELD_IDS
    values = {
        names[field_id]: value for field_id, value in zip(fields, tokens, strict=True) if field_id in names
    }
    return akamai_record(AKAMAI_STRUCTURED, values, tokens, line_number, run.pseudonym, site)


def _split_whitespace(text: str) -> list[str]:
    return text.split()
