"""JSON-lines formats: Cloudflare Logpush ``http_requests`` NDJSON and the project's own edge-node JSON lines
(``{"v":1, ...}``) (docs/log-formats.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from typing import Any

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
from edgeledger.deliveries.parsers.names import CLOUDFLARE, EDGELEDGER
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
