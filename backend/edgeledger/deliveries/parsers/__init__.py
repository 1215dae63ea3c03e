"""Streaming parsers: CDN and edge-node logs -> :class:`DeliveryRecord` / :class:`QuarantinedLine`.

Five formats are understood (``docs/log-formats.md`` documents every field decision):

* ``cloudfront``: Amazon CloudFront standard (access) logs, tab-separated, with ``#Version``/``#Fields``
  headers; columns are mapped through the ``#Fields`` header, not by position.
* ``cloudflare``: Cloudflare Logpush ``http_requests`` NDJSON.
* ``edgeledger``: the project's own edge-node JSON lines (``{"v":1, ...}``).
* ``nginx_combined``: nginx's predefined ``combined`` access log (edge nodes not yet on edge-node JSON);
  it names neither host nor edge location, so the caller supplies them (:class:`NginxSite`).
* ``aliyun``: Alibaba Cloud CDN offline logs (mainland and overseas packages share the layout).

Files are read line by line (plain or gzip, detected from the magic bytes), so memory does not grow with
the file. Every physical line ends up as exactly one of: a record, a quarantined line (file, line number,
reason code, detail, IP-masked raw text), or a skipped line (blank lines and CloudFront ``#`` header
lines). One bad line never stops the file; a file that is not a recognised log at all raises
:class:`LogFormatError` before any line is produced.

This package: ``parse_log`` and ``detect_format`` here; ``text`` (plain or gzip text, bounded reads),
``fields`` (quarantine reasons, statistics, checked conversions), ``edges`` (the edge-location table),
``cloudfront``, ``jsonlines`` and ``accesslog`` (the formats), ``names`` (format names).
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import IO

from edgeledger.deliveries.parsers.accesslog import (
    NginxSite,
    _parse_access_log,
    _tokens,
    looks_like_aliyun,
    looks_like_nginx_combined,
)
from edgeledger.deliveries.parsers.cloudfront import (
    _cloudfront_columns,
    _missing_cloudfront_columns,
    _parse_cloudfront,
)
from edgeledger.deliveries.parsers.edges import EDGE_LOCATION_COUNTRIES, edge_location_country
from edgeledger.deliveries.parsers.fields import ParseStats, Reason, _Run, unquote_fast
from edgeledger.deliveries.parsers.jsonlines import (
    _CLOUDFLARE_KEYS,
    _cloudflare_record,
    _edgeledger_record,
    _parse_json_lines,
)
from edgeledger.deliveries.parsers.names import (
    ALIYUN,
    CLOUDFLARE,
    CLOUDFRONT,
    EDGELEDGER,
    FORMATS,
    NGINX_COMBINED,
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
    DeliveryRecord,
    LogFormatError,
    Pseudonymiser,
    QuarantinedLine,
    mask_ips,
)

__all__ = [
    "ALIYUN",
    "CLOUDFLARE",
    "CLOUDFRONT",
    "EDGELEDGER",
    "EDGE_LOCATION_COUNTRIES",
    "FORMATS",
    "MAX_LINE_CHARS",
    "NGINX_COMBINED",
    "LogLines",
    "NginxSite",
    "ParseStats",
    "Reason",
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
        return f"it looks like CSV or plain text (first line {mask_ips(line[:60])!r})"
    if "\t" in line:
        return "tab-separated lines without the CloudFront #Version/#Fields header"
    return f"the first line is neither a CloudFront header nor a JSON object ({mask_ips(line[:60])!r})"


def detect_format(first_lines: Iterable[str], *, file_name: str = "<input>") -> str:
    """``"cloudfront"``, ``"cloudflare"``, ``"edgeledger"``, ``"nginx_combined"`` or ``"aliyun"`` from the
    first lines of a file.

    Raises :class:`LogFormatError` (naming ``file_name`` and why) for anything else: an empty file, a
    CSV or HTML document, a CloudFront header without the columns a record needs, JSON lines of an
    unknown schema, an edge-node format version other than 1.
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
        for line in lines:
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if not isinstance(obj, dict):
                continue
            if "v" in obj and "request_id" in obj:
                if obj["v"] != 1 or type(obj["v"]) is not int:
                    raise LogFormatError(
                        file_name, f"edge-node log format version {obj['v']!r} is not supported (only 1)"
                    )
                return EDGELEDGER
            if len(_CLOUDFLARE_KEYS.intersection(obj)) >= 2:
                return CLOUDFLARE
            keys = ", ".join(sorted(obj)[:8])
            raise LogFormatError(
                file_name,
                f"JSON lines of an unknown schema (neither Cloudflare nor edge-node v1; keys {keys})",
            )
        raise LogFormatError(file_name, f"no valid JSON object in the first {len(lines)} lines")
    tokens = _tokens(first)
    if looks_like_aliyun(tokens):
        return ALIYUN
    if looks_like_nginx_combined(tokens):
        return NGINX_COMBINED
    if first.startswith("[") or (len(tokens) > 3 and tokens[3].startswith("[")):
        raise LogFormatError(
            file_name,
            f"an access-log line of no known layout ({len(tokens)} fields; neither nginx combined, 9 fields, "
            f"nor Alibaba Cloud CDN, 12 or more): declare the format or convert the file",
        )
    raise LogFormatError(file_name, _describe(first))


# --------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------


def parse_log(
    source: str | os.PathLike[str] | IO[bytes] | IO[str] | Iterable[str],
    *,
    pseudonymiser: Pseudonymiser,
    file_name: str | None = None,
    stats: ParseStats | None = None,
    log_format: str | None = None,
    site: NginxSite | None = None,
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
        if log_format == NGINX_COMBINED and site is None:
            raise LogFormatError(
                name, "nginx combined lines name no host or edge location: the source must declare them"
            )
        stats.files += 1
        stats.by_format[log_format] += 1
        all_lines = chain(head, lines)
        if log_format == CLOUDFRONT:
            parser = _parse_cloudfront(all_lines, run, counts)
        elif log_format == CLOUDFLARE:
            parser = _parse_json_lines(all_lines, run, counts, _cloudflare_record)
        elif log_format in (NGINX_COMBINED, ALIYUN):
            parser = _parse_access_log(all_lines, run, counts, log_format, site)
        else:
            parser = _parse_json_lines(all_lines, run, counts, _edgeledger_record)
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
