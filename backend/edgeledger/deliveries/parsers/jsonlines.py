"""JSON-lines formats: Cloudflare Logpush ``http_requests`` NDJSON, the project's own edge-node JSON lines
(``{"v":1, ...}``), Fastly's documented JSON log format and Akamai DataStream 2 JSON (docs/log-formats.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from edgeledger.deliveries.parsers.accesslog import SourceSite, derived_request_id
from edgeledger.deliveries.parsers.cdnlogs import AKAMAI_FIELD_IDS, akamai_record
from edgeledger.deliveries.parsers.edges import (
    _check_edge_location,
    _country_code,
    edge_location_country,
)
from edgeledger.deliveries.parsers.fields import (
    _NO_BODY_STATUS,
    Reason,
    _Bad,
    _check_ms,
    _int_count,
    _int_status,
    _normalise_host,
    _path_of,
    _require,
    _require_str,
    _rfc3339_ms,
    _Run,
    _too_long,
    _unix_auto_ms,
)
from edgeledger.deliveries.parsers.names import AKAMAI_JSON, CLOUDFLARE, EDGELEDGER, FASTLY_JSON
from edgeledger.deliveries.parsers.text import (
    MAX_LINE_CHARS,
)
from edgeledger.deliveries.records import (
    CacheResult,
    DeliveryRecord,
    QuarantinedLine,
)

_CLOUDFLARE_KEYS = frozenset(
    ("RayID", "EdgeStartTimestamp", "ClientRequestHost", "ClientRequestURI", "EdgeResponseStatus", "ClientIP")
)


_CLOUDFLARE_CACHE = {
    "hit": CacheResult.hit,
    "stream_hit": CacheResult.hit,
    "stale": CacheResult.hit,
    "updating": CacheResult.hit,
    "revalidated": CacheResult.refresh_hit,
    "miss": CacheResult.miss,
    "expired": CacheResult.miss,
    "bypass": CacheResult.bypass,
    "dynamic": CacheResult.bypass,
    "ignored": CacheResult.bypass,
    "deferred": CacheResult.unknown,
    "unknown": CacheResult.unknown,
    "none": CacheResult.unknown,
    "": CacheResult.unknown,
}


_EDGELEDGER_CACHE = {
    **{member.name: member for member in CacheResult},
    # nginx $upstream_cache_status values (lower-cased); "" = no cache involved
    "expired": CacheResult.miss,
    "stale": CacheResult.hit,
    "updating": CacheResult.hit,
    "revalidated": CacheResult.refresh_hit,
    "": CacheResult.unknown,
}


def _cloudflare_record(
    obj: dict[str, Any], line_number: int, pseudonym: Callable[[str], bytes]
) -> DeliveryRecord:
    request_id = _require_str(obj, "RayID", empty_ok=True)
    if not request_id:
        raise _Bad(Reason.empty_request_id, "RayID is empty")
    stamp = _require(obj, "EdgeStartTimestamp")
    if type(stamp) is str:
        timestamp_ms = _rfc3339_ms(stamp, "EdgeStartTimestamp")
    elif type(stamp) is int:
        timestamp_ms = _unix_auto_ms(stamp, "EdgeStartTimestamp")
    else:
        raise _Bad(
            Reason.wrong_type,
            f"EdgeStartTimestamp must be a string or an integer, got {type(stamp).__name__}",
        )
    edge_location = _check_edge_location(_require_str(obj, "EdgeColoCode"), "EdgeColoCode")
    if "ClientCountry" in obj:
        country = _require_str(obj, "ClientCountry", empty_ok=True)
        country = _country_code(country, "") if country else ""
    else:
        country = edge_location_country(edge_location)
    host = _normalise_host(_require_str(obj, "ClientRequestHost"), "ClientRequestHost")
    uri = _path_of(_require_str(obj, "ClientRequestURI"), "ClientRequestURI")
    status = _int_status(_require(obj, "EdgeResponseStatus"), "EdgeResponseStatus")
    if "EdgeResponseBodyBytes" in obj:
        body = _int_count(obj["EdgeResponseBodyBytes"], "EdgeResponseBodyBytes")
    else:
        body = _int_count(_require(obj, "EdgeResponseBytes"), "EdgeResponseBytes")
        method = obj.get("ClientRequestMethod")
        if status in _NO_BODY_STATUS or method == "HEAD":
            body = 0
    cache_status = obj.get("CacheCacheStatus", "")
    if type(cache_status) is not str:
        raise _Bad(Reason.wrong_type, f"CacheCacheStatus must be a string, got {type(cache_status).__name__}")
    cache = _CLOUDFLARE_CACHE.get(cache_status.lower(), CacheResult.unknown)
    client_ip = _require_str(obj, "ClientIP")
    return DeliveryRecord(
        CLOUDFLARE,
        request_id,
        timestamp_ms,
        edge_location,
        country,
        host,
        uri,
        body,
        status,
        cache,
        pseudonym(client_ip),
        line_number,
    )


_MIN_PLAUSIBLE_MS = 100_000_000_000  # 1973-03-03 in ms; smaller integers are almost surely seconds


def _edgeledger_record(
    obj: dict[str, Any], line_number: int, pseudonym: Callable[[str], bytes]
) -> DeliveryRecord:
    version = _require(obj, "v")
    if type(version) is not int or version != 1:
        raise _Bad(Reason.unsupported_version, f"v={version!r}: only version 1 is supported")
    request_id = _require_str(obj, "request_id", empty_ok=True)
    if not request_id:
        raise _Bad(Reason.empty_request_id, "request_id is empty")
    stamp = _require(obj, "ts")
    if type(stamp) is str:
        timestamp_ms = _rfc3339_ms(stamp, "ts")
    elif type(stamp) is int:
        if 0 <= stamp < _MIN_PLAUSIBLE_MS:
            raise _Bad(Reason.bad_timestamp, f"ts {stamp} looks like seconds; unix milliseconds expected")
        timestamp_ms = _check_ms(stamp, "ts")
    else:
        raise _Bad(Reason.wrong_type, f"ts must be a string or an integer, got {type(stamp).__name__}")
    if "node_id" in obj and type(obj["node_id"]) is not str:
        raise _Bad(Reason.wrong_type, "node_id must be a string")
    edge_location = _check_edge_location(_require_str(obj, "edge_location"), "edge_location")
    country = _require_str(obj, "country", empty_ok=True)
    if country and (len(country) != 2 or not country.isascii() or not country.isalpha()):
        raise _Bad(Reason.bad_value, f"country {country[:20]!r} is not an ISO 3166-1 alpha-2 code")
    country = _country_code(country, edge_location)
    host = _normalise_host(_require_str(obj, "host"), "host")
    uri = _path_of(_require_str(obj, "uri"), "uri")
    body = _int_count(_require(obj, "body_bytes"), "body_bytes")
    status = _int_status(_require(obj, "status"), "status")
    cache_text = _require_str(obj, "cache", empty_ok=True).lower()
    cache = _EDGELEDGER_CACHE.get(cache_text)
    if cache is None:
        raise _Bad(Reason.bad_value, f"cache {cache_text[:30]!r} is not a known cache status")
    client_ip = _require_str(obj, "client_ip")
    return DeliveryRecord(
        EDGELEDGER,
        request_id,
        timestamp_ms,
        edge_location,
        country,
        host,
        uri,
        body,
        status,
        cache,
        pseudonym(client_ip),
        line_number,
    )


# --------------------------------------------------------------------------------------------------------
# Fastly: the JSON log format of Fastly's "Useful log formats" guide
# --------------------------------------------------------------------------------------------------------

_FASTLY_KEYS = frozenset(
    ("fastly_server", "response_state", "response_body_size", "response_status", "request_user_agent")
)


#: fastly_info.state -> cache result, by the state's first word (HIT-STALE, HIT-CLUSTER, MISS-WAIT, ...).
_FASTLY_STATE = {
    "HIT": CacheResult.hit,
    "MISS": CacheResult.miss,
    "PASS": CacheResult.bypass,
    "HITPASS": CacheResult.bypass,
    "PIPE": CacheResult.bypass,
    "ERROR": CacheResult.error,
}


#: Edge location of Fastly JSON records that log no POP (neither ``pop`` nor a ``fastly_server`` ending
#: in one) and whose source declares none.
FASTLY_EDGE_LOCATION = "FASTLY"


def _fastly_time_ms(stamp: Any) -> int:
    if type(stamp) is int:
        return _unix_auto_ms(stamp, "timestamp")
    if type(stamp) is not str:
        raise _Bad(Reason.wrong_type, f"timestamp must be a string or an integer, got {type(stamp).__name__}")
    # strftime's %z writes +0000 (no colon): RFC 3339 wants +00:00
    if len(stamp) > 5 and stamp[-5] in "+-" and stamp[-4:].isascii() and stamp[-4:].isdigit():
        stamp = f"{stamp[:-2]}:{stamp[-2:]}"
    return _rfc3339_ms(stamp, "timestamp")


def _fastly_edge(obj: dict[str, Any], site: SourceSite) -> str:
    pop = obj.get("pop")
    if type(pop) is str and pop:
        return _check_edge_location(pop, "pop")
    server = obj.get("fastly_server")
    if type(server) is str:
        tail = server.rpartition("-")[2]  # server.identity: cache-fra19120-FRA
        if len(tail) == 3 and tail.isascii() and tail.isalpha() and tail.isupper():
            return tail
    return site.edge_location or FASTLY_EDGE_LOCATION


def _fastly_json_record(
    obj: dict[str, Any], line_number: int, pseudonym: Callable[[str], bytes], site: SourceSite
) -> DeliveryRecord:
    timestamp_ms = _fastly_time_ms(_require(obj, "timestamp"))
    edge_location = _fastly_edge(obj, site)
    code = obj.get("geo_country_code")
    country = _country_code(code, "") if type(code) is str and code else edge_location_country(edge_location)
    host = _normalise_host(_require_str(obj, "host"), "host")
    uri = _path_of(_require_str(obj, "url"), "url")
    status = _int_status(_require(obj, "response_status"), "response_status")
    body = _int_count(_require(obj, "response_body_size"), "response_body_size")
    if status in _NO_BODY_STATUS or obj.get("request_method") == "HEAD":
        body = 0
    state = obj.get("response_state", "")
    if type(state) is not str:
        raise _Bad(Reason.wrong_type, f"response_state must be a string, got {type(state).__name__}")
    cache = _FASTLY_STATE.get(state.upper().partition("-")[0], CacheResult.unknown)
    if state.upper() == "HIT-SYNTH":  # a synthetic response: neither cache nor origin content
        cache = CacheResult.unknown
    client_ip = _require_str(obj, "client_ip")
    request_id = obj.get("request_id")
    if request_id is None:
        request_id = derived_request_id("fst-", [json.dumps(obj, sort_keys=True, ensure_ascii=False)])
    elif type(request_id) is not str or not request_id:
        raise _Bad(Reason.empty_request_id, "request_id is empty or not a string")
    return DeliveryRecord(
        FASTLY_JSON,
        request_id,
        timestamp_ms,
        edge_location,
        country,
        host,
        uri,
        body,
        status,
        cache,
        pseudonym(client_ip),
        line_number,
    )


# --------------------------------------------------------------------------------------------------------
# Akamai DataStream 2 JSON
# --------------------------------------------------------------------------------------------------------

_AKAMAI_KEYS = frozenset(("reqTimeSec", "cliIP", "reqHost", "reqPath", "statusCode", "reqId", "cp"))


_AKAMAI_NAMES = tuple(AKAMAI_FIELD_IDS.values())


def _akamai_json_record(
    obj: dict[str, Any], line_number: int, pseudonym: Callable[[str], bytes], site: SourceSite
) -> DeliveryRecord:
    values: dict[str, str] = {}
    for name in _AKAMAI_NAMES:
        value = obj.get(name)
        if value is None:
            continue
        if type(value) is int:  # DataStream writes numbers as strings; integers are read as such
            value = str(value)
        elif type(value) is not str:
            raise _Bad(Reason.wrong_type, f"{name} must be a string, got {type(value).__name__}")
        values[name] = value
    tokens = [json.dumps(obj, sort_keys=True, ensure_ascii=False)]
    return akamai_record(AKAMAI_JSON, values, tokens, line_number, pseudonym, site)


def _parse_json_lines(
    lines: Iterable[str],
    run: _Run,
    counts: list[int],
    convert: Callable[[dict[str, Any], int, Callable[[str], bytes]], DeliveryRecord],
) -> Iterator[DeliveryRecord | QuarantinedLine]:
    pseudonym = run.pseudonym
    loads = json.loads
    line_number = records = skipped = 0
    continuation = False
    try:
        for line in lines:
            if continuation:
                continuation = not line.endswith("\n")
                continue
            line_number += 1
            if _too_long(line):
                continuation = True
                yield run.quarantine(line_number, Reason.line_too_long, line, f"over {MAX_LINE_CHARS} chars")
                continue
            text = line.strip()
            if not text:
                skipped += 1
                continue
            try:
                if "\ufffd" in text:
                    raise _Bad(Reason.invalid_encoding, "the line is not valid UTF-8")
                try:
                    obj = loads(text)
                except (ValueError, RecursionError) as exc:
                    raise _Bad(Reason.invalid_json, str(exc)[:120]) from None
                if type(obj) is not dict:
                    raise _Bad(Reason.invalid_json, f"a JSON {type(obj).__name__}, not an object")
                record = convert(obj, line_number, pseudonym)
                records += 1
                yield record
            except _Bad as bad:
                yield run.quarantine(line_number, bad.reason, line, bad.detail)
            except Exception as exc:  # never let one line stop the file
                yield run.quarantine(line_number, Reason.invalid_line, line, type(exc).__name__)
    finally:
        counts[:] = [line_number, records, skipped]
