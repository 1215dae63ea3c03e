"""Streaming parsers: CDN and edge-node logs -> :class:`DeliveryRecord` / :class:`QuarantinedLine`.

Eleven formats are understood (``docs/log-formats.md`` documents every field decision):

* ``cloudfront``: Amazon CloudFront standard (access) logs, tab-separated, with ``#Version``/``#Fields``
  headers; columns are mapped through the ``#Fields`` header, not by position.
* ``cloudflare``: Cloudflare Logpush ``http_requests`` NDJSON.
* ``edgeledger``: the project's own edge-node JSON lines (``{"v":1, ...}``).
* ``nginx_combined``: nginx's predefined ``combined`` access log (edge nodes not yet on edge-node JSON);
  it names neither host nor edge location, so the source declares them (:class:`SourceSite`).
* ``aliyun``: Alibaba Cloud CDN offline logs (mainland and overseas packages share the layout).
* ``tencent``: Tencent Cloud CDN offline logs (16 fields, HTTP/3 in the protocol field).
* ``fastly_common``, ``fastly_combined``: Fastly's Common and Combined Log Formats (host and edge
  location declared by the source, like nginx combined); ``fastly_json``: Fastly's documented JSON format.
* ``akamai_json``, ``akamai_structured``: Akamai DataStream 2 JSON and structured (space- or
  tab-delimited) logs; structured columns are mapped by the data set field ids the source declares.

Detection (:func:`detect_format`) names a format only when exactly one fits; lines that fit several
(nginx combined and Fastly combined are the same layout) raise :class:`AmbiguousLogFormatError` naming
the candidates, and a declared format always wins over detection.

Files are read line by line (plain or gzip, detected from the magic bytes), so memory does not grow with
the file. Every physical line ends up as exactly one of: a record, a quarantined line (file, line number,
reason code, detail, IP-masked raw text), or a skipped line (blank lines and CloudFront ``#`` header
lines). One bad line never stops the file; a file that is not a recognised log at all raises
:class:`LogFormatError` before any line is produced.

This package: ``parse_log`` and ``detect_format`` here; ``text`` (plain or gzip text, bounded reads),
``fields`` (quarantine reasons, statistics, checked conversions), ``edges`` (the edge-location table),
``cloudfront``, ``jsonlines``, ``accesslog`` and ``cdnlogs`` (the formats), ``names`` (format names).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator
from functools import partial
from itertools import chain, islice
from typing import IO

from edgeledger.deliveries.parsers import accesslog, cdnlogs
from edgeledger.deliveries.parsers.accesslog import (
    NginxSite,
    SourceSite,
    _aliyun_record,
    _nginx_record,
    _parse_access_log,
    _tokens,
    checked_site,
    looks_like_aliyun,
    looks_like_nginx_combined,
)
from edgeledger.deliveries.parsers.cdnlogs import (
    AKAMAI_FIELD_IDS,
    AKAMAI_REQUIRED_IDS,
    FASTLY_COMBINED_TOKENS,
    FASTLY_COMMON_TOKENS,
    _akamai_structured_record,
    _fastly_combined_record,
    _fastly_common_record,
    _split_whitespace,
    _tencent_record,
    looks_like_clf,
    looks_like_tencent,
    missing_akamai_ids,
)
from edgeledger.deliveries.parsers.cloudfront import (
    _cloudfront_columns,
    _missing_cloudfront_columns,
    _parse_cloudfront,
)
from edgeledger.deliveries.parsers.edges import EDGE_LOCATION_COUNTRIES, edge_location_country
from edgeledger.deliveries.parsers.fields import ParseStats, Reason, _Run, unquote_fast
from edgeledger.deliveries.parsers.jsonlines import (
    _AKAMAI_KEYS,
    _CLOUDFLARE_KEYS,
    _FASTLY_KEYS,
    _akamai_json_record,
    _cloudflare_record,
    _edgeledger_record,
    _fastly_json_record,
    _parse_json_lines,
)
from edgeledger.deliveries.parsers.names import (
    AKAMAI_JSON,
    AKAMAI_STRUCTURED,
    ALIYUN,
    CLOUDFLARE,
    CLOUDFRONT,
    EDGELEDGER,
    FASTLY_COMBINED,
    FASTLY_COMMON,
    FASTLY_JSON,
    FORMATS,
    NEEDS_EDGE,
    NEEDS_FIELDS,
    NEEDS_HOST,
    NGINX_COMBINED,
    TENCENT,
)
from edgeledger.deliveries.parsers.text import (
    DETECT_LINES,
    MAX_LINE_CHARS,
    LogLines,
    _line_reader,
    _open_text,
    _source_name,
    open_log,
)
from edgeledger.deliveries.records import (
    AmbiguousLogFormatError,
    DeliveryRecord,
    LogFormatError,
    Pseudonymiser,
    QuarantinedLine,
    masked_excerpt,
)

__all__ = [
    "AKAMAI_FIELD_IDS",
    "AKAMAI_JSON",
    "AKAMAI_REQUIRED_IDS",
    "AKAMAI_STRUCTURED",
    "ALIYUN",
    "CLOUDFLARE",
    "CLOUDFRONT",
    "EDGELEDGER",
    "EDGE_LOCATION_COUNTRIES",
    "FASTLY_COMBINED",
    "FASTLY_COMMON",
    "FASTLY_JSON",
    "FORMATS",
    "MAX_LINE_CHARS",
    "NEEDS_EDGE",
    "NEEDS_FIELDS",
    "NEEDS_HOST",
    "NGINX_COMBINED",
    "TENCENT",
    "AmbiguousLogFormatError",
    "LogLines",
    "NginxSite",
    "ParseStats",
    "Reason",
    "SourceSite",
    "clear_caches",
    "detect_format",
    "edge_location_country",
    "open_log",
    "parse_log",
    "unquote_fast",
]


# --------------------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------------------


def _describe(line: str) -> str:
    lowered = line[:200].lower()
    if "\ufffd" in line or any(ord(ch) < 32 and ch not in "\t\r\n" for ch in line[:200]):
        return "it looks like binary data"
    if lowered.startswith(("<!doctype html", "<html", "<?xml", "<")):
        return "it looks like an HTML/XML document"
    if "," in line and "\t" not in line:
        return f"it looks like CSV or plain text (first line {masked_excerpt(line, 60)!r})"
    if "\t" in line:
        return "tab-separated lines without the CloudFront #Version/#Fields header"
    return f"the first line is neither a CloudFront header nor a JSON object ({masked_excerpt(line, 60)!r})"


def detect_format(first_lines: Iterable[str], *, file_name: str = "<input>") -> str:
    """The format of a file from its first lines, when exactly one format fits (see ``FORMATS``).

    Raises :class:`AmbiguousLogFormatError` (with ``candidates``) when the lines fit several formats
    (nginx combined and Fastly combined share one layout), and :class:`LogFormatError` (naming
    ``file_name`` and why) for anything else: an empty file, a CSV or HTML document, a CloudFront header
    without the columns a record needs, JSON lines of an unknown schema, an edge-node format version other
    than 1, an access-log line of no known layout. Akamai structured logs are never detected: their
    columns are whatever the stream was configured with, so the source declares them.
    """
    lines = []
    for raw in first_lines:
        line = raw.strip().lstrip("\ufeff")
        if line:
            lines.append(line)
        if len(lines) >= DETECT_LINES:
            break
    if not lines:
        raise LogFormatError(file_name, "the file is empty")
    first = lines[0]
    if first.startswith("#"):
        for line in lines:
            if line.startswith("#Fields:"):
                missing = _missing_cloudfront_columns(_cloudfront_columns(line))
                if missing:
                    raise LogFormatError(
                        file_name, f"CloudFront #Fields header lacks required columns: {', '.join(missing)}"
                    )
                return CLOUDFRONT
        if first.startswith("#Version:"):
            raise LogFormatError(file_name, "CloudFront-style #Version header but no #Fields header")
        raise LogFormatError(file_name, "it starts with a comment that is not a CloudFront log header")
    if first.startswith("{"):
        return _detect_json(lines, file_name)
    tokens = _tokens(first)
    candidates = [
        name
        for name, fits in (
            (ALIYUN, looks_like_aliyun(tokens)),
            (TENCENT, looks_like_tencent(tokens)),
            (NGINX_COMBINED, looks_like_nginx_combined(tokens)),
            (FASTLY_COMBINED, looks_like_clf(tokens, FASTLY_COMBINED_TOKENS)),
            (FASTLY_COMMON, looks_like_clf(tokens, FASTLY_COMMON_TOKENS)),
        )
        if fits
    ]
    if len(candidates) == 1:
        return candidates[0]
    if candidates:
        raise AmbiguousLogFormatError(file_name, tuple(candidates))
    if first.startswith("[") or (len(tokens) > 3 and tokens[3].startswith("[")):
        raise LogFormatError(
            file_name,
            f"an access-log line of no known layout ({len(tokens)} fields; neither the Common or Combined "
            f"Log Format, 7 or 9 fields, nor Alibaba Cloud CDN, 12 or more): declare the format or convert "
            f"the file",
        )
    raise LogFormatError(file_name, _describe(first))


def _detect_json(lines: list[str], file_name: str) -> str:
    for line in lines:
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):  # RecursionError: nested too deeply to be a log record
            continue
        if not isinstance(obj, dict):
            continue
        if "v" in obj and "request_id" in obj:
            if obj["v"] != 1 or type(obj["v"]) is not int:
                version = obj["v"]
                shown = (
                    masked_excerpt(repr(version), 60)  # the line's own text: no client IP echoed
                    if version is None or isinstance(version, str | int | float)
                    else f"(a JSON {'array' if isinstance(version, list) else 'object'})"
                )
                raise LogFormatError(
                    file_name, f"edge-node log format version {shown} is not supported (only 1)"
                )
            return EDGELEDGER
        candidates = [
            name
            for name, keys in (
                (CLOUDFLARE, _CLOUDFLARE_KEYS),
                (FASTLY_JSON, _FASTLY_KEYS),
                (AKAMAI_JSON, _AKAMAI_KEYS),
            )
            if len(keys.intersection(obj)) >= 2
        ]
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise AmbiguousLogFormatError(file_name, tuple(candidates))
        keys = ", ".join(masked_excerpt(key, 40) for key in sorted(obj)[:8])
        raise LogFormatError(
            file_name,
            f"JSON lines of an unknown schema (neither Cloudflare, Fastly, Akamai nor edge-node v1; "
            f"keys {keys})",
        )
    raise LogFormatError(file_name, f"no valid JSON object in the first {len(lines)} lines")


# --------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------


_TEXT_CONVERT = {
    NGINX_COMBINED: _nginx_record,
    ALIYUN: _aliyun_record,
    TENCENT: _tencent_record,
    FASTLY_COMMON: _fastly_common_record,
    FASTLY_COMBINED: _fastly_combined_record,
    AKAMAI_STRUCTURED: _akamai_structured_record,
}


_JSON_CONVERT = {FASTLY_JSON: _fastly_json_record, AKAMAI_JSON: _akamai_json_record}


def _declared(name: str, log_format: str, site: SourceSite | None) -> SourceSite:
    """``site`` checked against what ``log_format`` needs declared (LogFormatError if it lacks it)."""
    try:
        site = checked_site(site, host=log_format in NEEDS_HOST, edge=log_format in NEEDS_EDGE)
    except ValueError as exc:
        raise LogFormatError(
            name, f"{log_format} lines name no host or edge location: the source must declare them ({exc})"
        ) from None
    if log_format in NEEDS_FIELDS:
        if not site.fields:
            raise LogFormatError(
                name, f"{log_format} columns are not named: the source must declare its field ids"
            )
        missing = missing_akamai_ids(site.fields)
        if missing:
            raise LogFormatError(
                name, f"the declared field ids lack {', '.join(map(str, missing))} (a record needs them)"
            )
    return site


def clear_caches() -> None:
    """Empty the access-log formats' bounded caches (they hold only values their keys determine, so this
    changes no result: benchmarks call it to time a cold start, tests to start from a known state)."""
    accesslog._local_minutes.clear()
    accesslog._aliyun_hosts.clear()
    cdnlogs._tencent_minutes.clear()


def parse_log(
    source: str | os.PathLike[str] | IO[bytes] | IO[str] | Iterable[str],
    *,
    pseudonymiser: Pseudonymiser,
    file_name: str | None = None,
    stats: ParseStats | None = None,
    log_format: str | None = None,
    site: SourceSite | None = None,
) -> Iterator[DeliveryRecord | QuarantinedLine]:
    """Stream the records and quarantined lines of one log file.

    ``source`` is a path, a binary or text file object, or an iterable of text lines. The format is
    detected from the first lines (:func:`detect_format`) unless ``log_format`` names it; an
    unrecognised file raises :class:`LogFormatError` on the first ``next()``, before anything is
    produced. ``file_name`` names the file in quarantined lines and errors (default: the path or the
    file object's name). Pass a :class:`ParseStats` as ``stats`` to receive the totals; it is updated
    when the generator finishes or is closed (quarantine counts as they happen). ``site`` gives an
    ``nginx_combined`` file its host and edge location; such a file without it raises
    :class:`LogFormatError`.

    A gzip stream that is cut short raises :class:`LogFormatError` where it breaks off: treat the file
    as failed (the lines before were valid and have been produced).
    """
    name = file_name or _source_name(source)
    stats = stats if stats is not None else ParseStats()
    text, close = _open_text(source)
    run = _Run(name, pseudonymiser, stats)
    counts = [0, 0, 0]
    try:
        lines = _line_reader(text)
        try:
            head = list(islice(lines, DETECT_LINES))
        except (EOFError, OSError, zlib.error) as exc:
            raise LogFormatError(name, f"unreadable compressed data ({exc})") from exc
        if log_format is None:
            log_format = detect_format(head, file_name=name)
        elif log_format not in FORMATS:
            raise ValueError(f"log_format must be one of {', '.join(FORMATS)}")
        site = _declared(name, log_format, site)
        stats.files += 1
        stats.by_format[log_format] += 1
        all_lines = chain(head, lines)
        if log_format == CLOUDFRONT:
            parser = _parse_cloudfront(all_lines, run, counts)
        elif log_format == CLOUDFLARE:
            parser = _parse_json_lines(all_lines, run, counts, _cloudflare_record)
        elif log_format == EDGELEDGER:
            parser = _parse_json_lines(all_lines, run, counts, _edgeledger_record)
        elif log_format in _JSON_CONVERT:
            convert = partial(_JSON_CONVERT[log_format], site=site)
            parser = _parse_json_lines(all_lines, run, counts, convert)
        else:
            split = _split_whitespace if log_format == AKAMAI_STRUCTURED else _tokens
            parser = _parse_access_log(all_lines, run, counts, _TEXT_CONVERT[log_format], site, split)
        try:
            yield from parser
        except (EOFError, OSError, zlib.error) as exc:
            raise LogFormatError(name, f"compressed data broken off after line {counts[0]}: {exc}") from exc
    finally:
        close()
        lines_read, records, skipped = counts
        stats.lines += lines_read
        stats.records += records
        stats.skipped += skipped
        stats.quarantined += run.quarantined
