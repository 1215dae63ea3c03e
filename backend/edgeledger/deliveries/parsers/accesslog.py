"""Space-separated access-log formats: nginx ``combined`` (the project's own edge nodes before they log
edge-node JSON) and Alibaba Cloud CDN offline logs (docs/log-formats.md), and the line loop every
space-separated format shares (:func:`_parse_access_log`; the other formats are in ``cdnlogs``).

Neither format logs a request id: each line gets a derived one, ``<prefix>`` + the first 32 hex digits
of SHA-256 over the line's fields (see :func:`derived_request_id`); what that means for dedupe is in
the docs. Nothing here holds state across lines beyond bounded caches of pure functions (the minute of a
time string, the host of a URL's authority): a cached value is the one the uncached function returns for
that string, failures are never cached (a bad line goes through the uncached function and gets its exact
quarantine reason and detail), and a cache is cleared when it reaches ``_CACHE_LIMIT`` entries, so memory
stays flat over any number of lines. The caches are shared by all parse runs of the process; every value
is a function of its key alone, so concurrent runs cannot see a wrong one.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from edgeledger.deliveries.parsers.edges import _check_edge_location, edge_location_country
from edgeledger.deliveries.parsers.fields import (
    _CACHE_LIMIT,
    _EPOCH_ORDINAL,
    _NO_BODY_STATUS,
    _SECOND_MS,
    Reason,
    _Bad,
    _check_ms,
    _count,
    _normalise_host,
    _path_of,
    _Run,
    _status,
    _too_long,
)
from edgeledger.deliveries.parsers.names import ALIYUN, NGINX_COMBINED
from edgeledger.deliveries.parsers.text import MAX_LINE_CHARS
from edgeledger.deliveries.records import CacheResult, DeliveryRecord, QuarantinedLine, make_record

# One token: a [bracketed] time, a "quoted" string (nginx escapes a quote inside as \x22; a backslash
# escape is tolerated), or a run of non-spaces. The quoted string is written "unrolled" (a run of plain
# characters, then escape + run, ...): it matches exactly the strings "(?:[^"\\]|\\.)*" matched (each
# character is either plain or one escape's, so there is only one way to match), without putting every
# character through an alternation, which made splitting cost 1.7-2.7 times as much.
_TOKEN_RE = re.compile(r'\[[^\]]*\]|"[^"\\]*(?:\\.[^"\\]*)*"|\S+')


# [9/Jun/2015:01:58:09 +0800]: nginx $time_local, also Alibaba Cloud CDN's time field.
_LOCAL_TIME_RE = re.compile(
    r"\[([0-9]{1,2})/([A-Z][a-z]{2})/([0-9]{4}):([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})\]"
)


_MONTHS = {name: i for i, name in enumerate("Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split(), 1)}


_ALIYUN_CACHE = {"HIT": CacheResult.hit, "MISS": CacheResult.miss}


#: Edge location of Alibaba Cloud CDN records: the offline log does not name the node that served.
ALIYUN_EDGE_LOCATION = "ALIYUN-CDN"


@dataclass(frozen=True, slots=True)
class SourceSite:
    """What a source declares because its lines do not say it: the site's host name, the node's edge
    location, and (Akamai DataStream 2 structured logs) the data set field ids of its columns in order.

    ``parse_log(..., site=SourceSite("media.example.com", "FRA1"))``; a ``nginx_combined``,
    ``fastly_common`` or ``fastly_combined`` file without host and edge location, or an
    ``akamai_structured`` file without field ids, is rejected (``LogFormatError``), never given a
    guessed value.
    """

    host: str | None = None
    edge_location: str | None = None
    fields: tuple[int, ...] = ()


#: The name this class had when only nginx combined needed it.
NginxSite = SourceSite


def _tokens(line: str) -> list[str]:
    return _TOKEN_RE.findall(line)


def _unquote(token: str, field_name: str) -> str:
    if len(token) < 2 or token[0] != '"' or token[-1] != '"':
        raise _Bad(Reason.bad_value, f"{field_name} {token[:40]!r} is not a quoted string")
    return token[1:-1]


def local_time_ms(text: str, field_name: str = "time") -> int:
    """Unix ms of ``[9/Jun/2015:01:58:09 +0800]`` (the offset is applied; second precision)."""
    match = _LOCAL_TIME_RE.fullmatch(text)
    if match is None:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {text[:40]!r} is not [dd/Mon/yyyy:HH:MM:SS +hhmm]")
    month = _MONTHS.get(match[2])
    if month is None:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {text!r}: unknown month")
    try:
        ordinal = dt.date(int(match[3]), month, int(match[1])).toordinal()
    except ValueError as exc:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {text!r}: {exc}") from None
    hour, minute, second = int(match[4]), int(match[5]), int(match[6])
    off_h, off_m = int(match[8]), int(match[9])
    if hour > 23 or minute > 59 or second > 59 or off_h > 23 or off_m > 59:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {text!r}: out of range")
    offset = (off_h * 60 + off_m) * (1 if match[7] == "+" else -1)
    ms = (ordinal - _EPOCH_ORDINAL) * 86_400_000 + ((hour * 60 + minute - offset) * 60 + second) * 1000
    return _check_ms(ms, field_name)


_local_minutes: dict[str, int] = {}


def cached_local_time_ms(text: str, field_name: str = "time") -> int:
    """:func:`local_time_ms`, cached per minute (lines of one minute share the calendar and offset work).

    The key is the string without its two seconds digits (``[9/Jun/2015:01:58:SS +0800]``), the value the
    Unix ms of second 00. A string whose key is cached differs from one that converted successfully only
    in those two characters, so when they are ``00``..``59`` it is valid too and its time is that value
    plus the seconds (a whole minute of a valid time is within 1970..9999: minutes are aligned to the
    epoch and to the end of year 9999). Anything else, and every miss, goes to :func:`local_time_ms`
    (errors included); only successes are stored.
    """
    key = text[:-9] + text[-7:]
    minute = _local_minutes.get(key)
    if minute is not None:
        second = _SECOND_MS.get(text[-9:-7])
        if second is not None:
            return minute + second
    ms = local_time_ms(text, field_name)
    if len(_local_minutes) >= _CACHE_LIMIT:
        _local_minutes.clear()
    _local_minutes[key] = ms - _SECOND_MS[text[-9:-7]]  # a match ends "SS +hhmm]"
    return ms


def derived_request_id(prefix: str, fields: Iterable[str]) -> str:
    """``prefix`` + 32 hex digits of SHA-256 over the fields (NUL-separated): the same logged request
    always gets the same id; two requests logged identically (same second, client, URL, status, bytes,
    agent, ...) get the same id too, and dedupe keeps one of them (docs/log-formats.md)."""
    digest = hashlib.sha256("\x00".join(fields).encode("utf-8", "surrogatepass")).hexdigest()
    return prefix + digest[:32]


def _request_line(text: str, field_name: str) -> tuple[str, str]:
    """``"GET /path HTTP/1.1"`` (or ``"GET http://host/path"``) -> (method, target)."""
    parts = text.split(" ")
    if len(parts) not in (2, 3) or not parts[0].isalpha() or not parts[1]:
        raise _Bad(Reason.bad_value, f"{field_name} {text[:60]!r} is not 'METHOD target [protocol]'")
    return parts[0], parts[1]


def _body_bytes(method: str, status: int, text: str, field_name: str) -> int:
    total = _count(text, field_name)
    return 0 if status in _NO_BODY_STATUS or method == "HEAD" else total


def _nginx_record(tokens: list[str], line_number: int, run: _Run, site: SourceSite) -> DeliveryRecord:
    # $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer"
    # "$http_user_agent"
    if len(tokens) != NGINX_TOKENS:
        raise _Bad(Reason.field_count, f"{len(tokens)} fields, nginx combined has {NGINX_TOKENS}")
    return _clf_record(NGINX_COMBINED, "ngx-", tokens, line_number, run, site, _NGINX_NAMES)


_NGINX_NAMES = ("remote_addr", "time_local", "body_bytes_sent")


def _clf_record(
    log_format: str,
    prefix: str,
    tokens: list[str],
    line_number: int,
    run: _Run,
    site: SourceSite,
    names: tuple[str, str, str],
) -> DeliveryRecord:
    """A Common Log Format line (and its combined extension): host and edge location from ``site``;
    ``names`` name the client, time and bytes fields in quarantine details."""
    client_ip, _, _, stamp, request, status_text, bytes_text = tokens[:7]
    if not client_ip or client_ip == "-":
        raise _Bad(Reason.missing_field, f"{names[0]} is empty")
    timestamp_ms = cached_local_time_ms(stamp, names[1])
    _, target = _request_line(_unquote(request, "request"), "request")
    uri = _path_of(target, "request")
    status = _status(status_text)
    # already the body (0 for HEAD and 304); CLF's %b writes "-" for no body
    body = 0 if bytes_text == "-" and log_format != NGINX_COMBINED else _count(bytes_text, names[2])
    assert site.host is not None and site.edge_location is not None
    return make_record(
        log_format,
        derived_request_id(prefix, tokens),
        timestamp_ms,
        site.edge_location,
        edge_location_country(site.edge_location),
        site.host,
        uri,
        body,
        status,
        CacheResult.unknown,
        run.pseudonym(client_ip),
        line_number,
    )


def _aliyun_record(tokens: list[str], line_number: int, run: _Run, site: SourceSite) -> DeliveryRecord:
    # [time] client-ip proxy-ip response-time-ms "referer" "METHOD url" status request-size
    # response-size cache-status "user-agent" "content-type" [fields appended later, ignored]
    if len(tokens) < ALIYUN_TOKENS:
        raise _Bad(Reason.field_count, f"{len(tokens)} fields, Alibaba Cloud CDN has {ALIYUN_TOKENS}")
    stamp, client_ip, _, _, _, request, status_text, _, bytes_text, cache_text = tokens[:10]
    if not client_ip or client_ip == "-":
        raise _Bad(Reason.missing_field, "client IP is empty")
    timestamp_ms = cached_local_time_ms(stamp, "time")
    method, url = _request_line(_unquote(request, "request"), "request")
    if url.startswith("https://"):
        start = 8
    elif url.startswith("http://"):
        start = 7
    else:
        raise _Bad(Reason.bad_value, f"request URL {url[:60]!r} is not absolute (http:// or https://)")
    # The authority ends at the first "/", "?" or "#"; the path starts at that "/" (none: "/").
    slash = url.find("/", start)
    authority = url[start:slash] if slash >= 0 else url[start:]
    for stop in "?#":
        found = authority.find(stop)
        if found >= 0:
            authority = authority[:found]
    host = _aliyun_hosts.get(authority)
    if host is None:
        host = _normalise_host(authority.rpartition("@")[2], "request URL host")
        if len(_aliyun_hosts) >= _CACHE_LIMIT:
            _aliyun_hosts.clear()
        _aliyun_hosts[authority] = host
    uri = _path_of(url[slash:] if slash >= 0 else "/", "request URL")
    status = _status(status_text)
    body = _body_bytes(method, status, bytes_text, "response size")
    return make_record(
        ALIYUN,
        derived_request_id("ali-", tokens),
        timestamp_ms,
        ALIYUN_EDGE_LOCATION,
        "",
        host,
        uri,
        body,
        status,
        _ALIYUN_CACHE.get(cache_text.upper(), CacheResult.unknown),
        run.pseudonym(client_ip),
        line_number,
    )


#: The request URL's authority (``user@host:port``) -> its normalised host (successes only).
_aliyun_hosts: dict[str, str] = {}


#: Tokens per line: nginx combined exactly; Alibaba at least (later fields are ignored).
NGINX_TOKENS = 9
ALIYUN_TOKENS = 12


def looks_like_nginx_combined(tokens: list[str]) -> bool:
    return (
        len(tokens) == NGINX_TOKENS
        and tokens[3][:1] == "["
        and tokens[4][:1] == '"'
        and tokens[7][:1] == '"'
        and tokens[8][:1] == '"'
    )


def looks_like_aliyun(tokens: list[str]) -> bool:
    return (
        len(tokens) >= ALIYUN_TOKENS
        and tokens[0][:1] == "["
        and tokens[4][:1] == '"'
        and tokens[5].startswith(('"', "'"))
        and "://" in tokens[5]
        and tokens[10][:1] == '"'
    )


#: Converts one line's fields to a record (raises ``_Bad``, field count included).
Convert = Callable[[list[str], int, _Run, SourceSite], DeliveryRecord]


def _parse_access_log(
    lines: Iterable[str],
    run: _Run,
    counts: list[int],
    convert: Convert,
    site: SourceSite,
    split: Callable[[str], list[str]] = _tokens,
) -> Iterator[DeliveryRecord | QuarantinedLine]:
    """Space-separated lines: ``split`` cuts each into fields, ``convert`` makes the record; ``counts``
    receives [lines, records, skipped]."""
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
                record = convert(split(text), line_number, run, site)
                records += 1
                yield record
            except _Bad as bad:
                yield run.quarantine(line_number, bad.reason, line, bad.detail)
            except Exception as exc:  # never let one line stop the file
                yield run.quarantine(line_number, Reason.invalid_line, line, type(exc).__name__)
    finally:
        counts[:] = [line_number, records, skipped]


def checked_site(site: SourceSite | None, *, host: bool, edge: bool) -> SourceSite:
    """``site`` with its host normalised and edge location checked (``ValueError`` if one is needed and
    missing or invalid)."""
    site = site or SourceSite()
    try:
        if site.host is not None:
            site = SourceSite(_normalise_host(site.host, "host"), site.edge_location, site.fields)
        if site.edge_location is not None:
            _check_edge_location(site.edge_location, "edge location")
    except _Bad as bad:
        raise ValueError(bad.detail) from None
    if (host and site.host is None) or (edge and site.edge_location is None):
        raise ValueError("the source must declare its host and edge location")
    return site
