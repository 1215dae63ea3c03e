"""Amazon CloudFront standard (access) logs: tab-separated, with ``#Version``/``#Fields`` headers; columns
are mapped through the ``#Fields`` header, not by position (docs/log-formats.md)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from edgeledger.deliveries.parsers.edges import (
    _check_edge_location,
    edge_location_country,
)
from edgeledger.deliveries.parsers.fields import (
    _CACHE_LIMIT,
    _NO_BODY_STATUS,
    _STATUS,
    Reason,
    _Bad,
    _count,
    _day_ms,
    _normalise_host,
    _Run,
    _status,
    _time_ms,
    _too_long,
    unquote_fast,
)
from edgeledger.deliveries.parsers.names import CLOUDFRONT
from edgeledger.deliveries.parsers.text import (
    MAX_LINE_CHARS,
)
from edgeledger.deliveries.records import (
    CacheResult,
    DeliveryRecord,
    QuarantinedLine,
    _RecordBuilder,
)

_CF_REQUIRED = (
    "date",
    "time",
    "x-edge-location",
    "sc-bytes",
    "c-ip",
    "cs-uri-stem",
    "sc-status",
    "x-edge-request-id",
)


def _cloudfront_columns(fields_line: str) -> list[str]:
    return fields_line.split(":", 1)[1].split()


def _missing_cloudfront_columns(columns: list[str]) -> list[str]:
    missing = [name for name in _CF_REQUIRED if name not in columns]
    if "cs(Host)" not in columns and "x-host-header" not in columns:
        missing.append("cs(Host) or x-host-header")
    return missing


_CF_CACHE = {
    "Hit": CacheResult.hit,
    "RefreshHit": CacheResult.refresh_hit,
    "Miss": CacheResult.miss,
    "Error": CacheResult.error,
    "LimitExceeded": CacheResult.error,
    "CapacityExceeded": CacheResult.error,
    "Redirect": CacheResult.unknown,
    "OriginShieldHit": CacheResult.hit,
    "MissGeneratedResponse": CacheResult.miss,
}


# x-edge-detailed-result-type values that refine x-edge-result-type (the edge missed, the regional
# origin shield cache answered: the origin was not contacted).
_CF_DETAILED = {"OriginShieldHit": CacheResult.hit}


def _cloudfront_layout(columns: list[str]) -> tuple[int, ...]:
    """Field count and column positions from a usable ``#Fields`` header (-1 for absent optional columns)."""
    index = {name: i for i, name in enumerate(columns)}
    host = index.get("cs(Host)", index.get("x-host-header", 0))
    return (
        len(columns),
        index["date"],
        index["time"],
        index["x-edge-location"],
        index["sc-bytes"],
        index["c-ip"],
        host,
        index.get("x-host-header", host),
        index["cs-uri-stem"],
        index["sc-status"],
        index["x-edge-request-id"],
        index.get("cs-method", -1),
        index.get("x-edge-result-type", -1),
        index.get("x-edge-detailed-result-type", -1),
        index.get("sc-content-len", -1),
        index.get("sc-range-start", -1),
        index.get("sc-range-end", -1),
    )


def _parse_cloudfront(
    lines: Iterable[str], run: _Run, counts: list[int]
) -> Iterator[DeliveryRecord | QuarantinedLine]:
    """CloudFront standard log lines. ``counts`` receives [lines, records, skipped] when done or closed."""
    pseudonym = run.pseudonym
    make = _RecordBuilder
    record_class = DeliveryRecord
    status_table = _STATUS
    cf_cache = _CF_CACHE
    cf_detailed = _CF_DETAILED
    no_body = _NO_BODY_STATUS
    unknown = CacheResult.unknown
    day_cache: dict[str, int] = {}
    time_cache: dict[str, int] = {}
    edge_cache: dict[str, tuple[str, str]] = {}
    host_cache: dict[str, str] = {}
    uri_cache: dict[str, str] = {}

    max_line = MAX_LINE_CHARS
    n_fields = -1  # no usable #Fields header seen yet
    i_date = i_time = i_loc = i_bytes = i_ip = i_host = i_xhost = i_uri = i_status = i_rid = 0
    i_method = i_rt = i_drt = i_clen = i_rstart = i_rend = -1
    line_number = records = skipped = 0
    continuation = False  # inside the remainder of an over-long line
    try:
        for line in lines:
            if continuation:
                continuation = not line.endswith("\n")
                continue
            line_number += 1
            parts = line.rstrip("\r\n").split("\t")
            if len(parts) == n_fields and len(line) < max_line:
                try:
                    request_id = parts[i_rid]
                    if not request_id or request_id == "-":
                        raise _Bad(Reason.empty_request_id, "x-edge-request-id is empty")
                    text = parts[i_date]
                    day = day_cache.get(text)
                    if day is None:
                        day = _day_ms(text)
                        if len(day_cache) >= 64:
                            day_cache.clear()
                        day_cache[text] = day
                    text = parts[i_time]
                    ms = time_cache.get(text)
                    if ms is None:
                        ms = _time_ms(text)
                        if len(time_cache) >= _CACHE_LIMIT:
                            time_cache.clear()
                        time_cache[text] = ms
                    text = parts[i_loc]
                    edge = edge_cache.get(text)
                    if edge is None:
                        edge = (_check_edge_location(text, "x-edge-location"), edge_location_country(text))
                        if len(edge_cache) >= _CACHE_LIMIT:
                            edge_cache.clear()
                        edge_cache[text] = edge
                    text = parts[i_xhost]
                    if text == "-":
                        text = parts[i_host]
                    host = host_cache.get(text)
                    if host is None:
                        host = _normalise_host(text, "host")
                        if len(host_cache) >= _CACHE_LIMIT:
                            host_cache.clear()
                        host_cache[text] = host
                    uri = parts[i_uri]
                    if "%" in uri:
                        text = uri
                        uri = uri_cache.get(text)
                        if uri is None:
                            uri = unquote_fast(text)
                            if len(uri_cache) >= _CACHE_LIMIT:
                                uri_cache.clear()
                            uri_cache[text] = uri
                    elif not uri or uri == "-":
                        raise _Bad(Reason.missing_field, "cs-uri-stem is empty")
                    text = parts[i_status]
                    status = status_table.get(text)
                    if status is None:
                        status = _status(text)
                    text = parts[i_bytes]
                    if text.isdigit() and text.isascii() and len(text) < 19:
                        total = int(text)
                    else:
                        total = _count(text, "sc-bytes")
                    # Body bytes (docs/log-formats.md): none for HEAD and 1xx/204/304; else the range length
                    # or Content-Length, capped by sc-bytes (all bytes sent, headers included); else sc-bytes.
                    if status in no_body or (i_method >= 0 and parts[i_method] == "HEAD"):
                        body = 0
                    elif i_rstart >= 0 and parts[i_rstart] != "-":
                        start = _count(parts[i_rstart], "sc-range-start")
                        end = _count(parts[i_rend], "sc-range-end") if i_rend >= 0 else -1
                        if end < start:
                            raise _Bad(
                                Reason.bad_bytes, f"sc-range-end {end} is before sc-range-start {start}"
                            )
                        body = end - start + 1
                        if body > total:
                            body = total
                    elif i_clen >= 0 and (text := parts[i_clen]) != "-":
                        if text.isdigit() and text.isascii() and len(text) < 19:
                            body = int(text)
                        else:
                            body = _count(text, "sc-content-len")
                        if body > total:
                            body = total
                    else:
                        body = total
                    cache = cf_cache.get(parts[i_rt], unknown) if i_rt >= 0 else unknown
                    if i_drt >= 0:
                        refined = cf_detailed.get(parts[i_drt])
                        if refined is not None:
                            cache = refined
                        elif i_rt < 0:
                            cache = cf_cache.get(parts[i_drt], unknown)
                    text = parts[i_ip]
                    if not text or text == "-":
                        raise _Bad(Reason.missing_field, "c-ip is empty")
                    if "\ufffd" in line:
                        raise _Bad(Reason.invalid_encoding, "the line is not valid UTF-8")
                    record = make(
                        CLOUDFRONT,
                        request_id,
                        day + ms,
                        edge[0],
                        edge[1],
                        host,
                        uri,
                        body,
                        status,
                        cache,
                        pseudonym(text),
                        line_number,
                    )
                    record.__class__ = record_class  # type: ignore[assignment]
                    records += 1
                    yield record  # type: ignore[misc]
                except _Bad as bad:
                    yield run.quarantine(line_number, bad.reason, line, bad.detail)
                except Exception as exc:  # never let one line stop the file
                    yield run.quarantine(line_number, Reason.invalid_line, line, type(exc).__name__)
                continue
            # Slow path (kept after the hot one): header, blank, over-long or malformed line.
            if _too_long(line):
                continuation = True
                yield run.quarantine(line_number, Reason.line_too_long, line, f"over {max_line} chars")
                continue
            stripped = line.strip()
            if not stripped:
                skipped += 1
                continue
            if stripped[0] == "#":
                skipped += 1
                if stripped.startswith("#Fields:"):  # also a later header (concatenated files)
                    columns = _cloudfront_columns(stripped)
                    if _missing_cloudfront_columns(columns):
                        n_fields = -1  # lines under an unusable header are quarantined
                        continue
                    (
                        n_fields, i_date, i_time, i_loc, i_bytes, i_ip, i_host, i_xhost, i_uri, i_status,
                        i_rid, i_method, i_rt, i_drt, i_clen, i_rstart, i_rend,
                    ) = _cloudfront_layout(columns)  # fmt: skip
                continue
            if n_fields < 0:
                detail = "data line without a usable #Fields header"
            else:
                detail = f"{len(parts)} tab-separated fields, the #Fields header has {n_fields}"
            yield run.quarantine(line_number, Reason.field_count, line, detail)
    finally:
        counts[:] = [line_number, records, skipped]
