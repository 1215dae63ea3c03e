"""Streaming parsers: CDN and edge-node logs -> :class:`DeliveryRecord` / :class:`QuarantinedLine`.

Three formats are understood (``docs/log-formats.md`` documents every field decision):

* ``cloudfront``: Amazon CloudFront standard (access) logs, tab-separated, with ``#Version``/``#Fields``
  headers; columns are mapped through the ``#Fields`` header, not by position.
* ``cloudflare``: Cloudflare Logpush ``http_requests`` NDJSON.
* ``edgeledger``: the project's own edge-node JSON lines (``{"v":1, ...}``).

Files are read line by line (plain or gzip, detected from the magic bytes), so memory does not grow with
the file. Every physical line ends up as exactly one of: a record, a quarantined line (file, line number,
reason code, detail, IP-masked raw text), or a skipped line (blank lines and CloudFront ``#`` header
lines). One bad line never stops the file; a file that is not a recognised log at all raises
:class:`LogFormatError` before any line is produced.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import os
import re
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from itertools import chain, islice
from typing import IO, Any
from urllib.parse import unquote

from edgeledger.deliveries.records import (
    MAX_BYTES,
    CacheResult,
    DeliveryRecord,
    LogFormatError,
    Pseudonymiser,
    QuarantinedLine,
    _RecordBuilder,
    mask_ips,
)
from edgeledger.territories import TERRITORY_CODES

__all__ = [
    "CLOUDFLARE",
    "CLOUDFRONT",
    "EDGELEDGER",
    "EDGE_LOCATION_COUNTRIES",
    "FORMATS",
    "LogLines",
    "ParseStats",
    "Reason",
    "detect_format",
    "edge_location_country",
    "open_log",
    "parse_log",
    "unquote_fast",
]

CLOUDFRONT = "cloudfront"
CLOUDFLARE = "cloudflare"
EDGELEDGER = "edgeledger"
FORMATS = (CLOUDFRONT, CLOUDFLARE, EDGELEDGER)

#: Longest physical line read in one piece; a longer line is quarantined as ``line_too_long`` and the
#: rest of it is skipped without being held in memory.
MAX_LINE_CHARS = 1 << 20
#: Physical lines read to decide the format of a file.
DETECT_LINES = 20
_GZIP_MAGIC = b"\x1f\x8b"
_READ_CHUNK = 1 << 16


class Reason(StrEnum):
    """Quarantine reason codes (``QuarantinedLine.reason``, ``ParseStats.by_reason``)."""

    invalid_encoding = "invalid_encoding"  # bytes that are not UTF-8
    line_too_long = "line_too_long"  # longer than MAX_LINE_CHARS
    field_count = "field_count"  # CloudFront: not as many tab-separated fields as the #Fields header
    invalid_json = "invalid_json"  # JSON formats: not parseable, or not a JSON object
    missing_field = "missing_field"  # a required field is absent, "-" or empty
    wrong_type = "wrong_type"  # JSON formats: a value of the wrong JSON type
    empty_request_id = "empty_request_id"
    bad_timestamp = "bad_timestamp"  # unparsable, no time zone, before 1970, out of range
    bad_bytes = "bad_bytes"  # non-numeric, negative, >= 2^63, inconsistent range
    bad_status = "bad_status"  # non-numeric or outside 100..599
    bad_edge_location = "bad_edge_location"  # not 1..16 printable ASCII characters
    bad_value = "bad_value"  # any other invalid value (unknown cache status, bad host, ...)
    unsupported_version = "unsupported_version"  # edge-node format "v" other than 1
    invalid_line = "invalid_line"  # an unexpected error while reading the line


@dataclass(slots=True)
class ParseStats:
    """Running totals of one or more :func:`parse_log` runs (pass the same object to accumulate).

    ``lines == records + quarantined + skipped`` once a run has finished (or was closed early).
    """

    files: int = 0
    lines: int = 0
    records: int = 0
    quarantined: int = 0
    skipped: int = 0
    by_reason: Counter[str] = field(default_factory=Counter)
    by_format: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "lines": self.lines,
            "records": self.records,
            "quarantined": self.quarantined,
            "skipped": self.skipped,
            "by_reason": dict(self.by_reason),
            "by_format": dict(self.by_format),
        }


class _Bad(Exception):
    """A line-level validation failure (internal; becomes a QuarantinedLine)."""

    __slots__ = ("detail", "reason")

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------------------
# Edge location -> country
# --------------------------------------------------------------------------------------------------------

# IATA airport (or metro) code that starts a CloudFront edge location name (e.g. "FRA56-P7") -> ISO
# 3166-1 alpha-2 country of that airport. Compiled from the airport codes CloudFront uses in
# x-edge-location and AWS's published list of edge location cities; Cloudflare's EdgeColoCode and the
# edge-node format use the same IATA convention. Unknown codes map to "" (unknown country).
_EDGE_TABLE = """
    ATL US  BNA US  BOS US  CMH US  DEN US  DFW US  DTW US  EWR US  HIO US  HNL US  IAD US  IAH US
    IND US  JAX US  JFK US  LAS US  LAX US  MCI US  MIA US  MSP US  ORD US  PDX US  PHL US  PHX US
    PIT US  SEA US  SFO US  SJC US  SLC US  ANC US  BUF US  CLT US  MCO US  SAN US  STL US  TPA US
    YUL CA  YTO CA  YYZ CA  YVR CA  YYC CA  QRO MX  MEX MX  GDL MX
    GRU BR  GIG BR  FOR BR  POA BR  EZE AR  SCL CL  BOG CO  LIM PE
    AMS NL  ARN SE  ATH GR  BCN ES  BER DE  BRU BE  BUD HU  CDG FR  CPH DK  DUB IE  DUS DE  EDI GB
    FCO IT  FRA DE  HAM DE  HEL FI  IST TR  LHR GB  LIS PT  MAD ES  MAN GB  MRS FR  MUC DE  MXP IT
    OSL NO  OTP RO  PMO IT  PRG CZ  SOF BG  TXL DE  VIE AT  WAW PL  ZAG HR  ZRH CH
    BAH BH  DOH QA  DXB AE  FJR AE  JED SA  RUH SA  TLV IL
    CAI EG  CPT ZA  JNB ZA  LOS NG  NBO KE
    BLR IN  BOM IN  CCU IN  DEL IN  HYD IN  MAA IN  PNQ IN  CMB LK
    BKK TH  CGK ID  HAN VN  HKG HK  ICN KR  KIX JP  KUL MY  MNL PH  NRT JP  HND JP  SGN VN  SIN SG
    TPE TW  PEK CN  PVG CN  SZX CN  ZHY CN
    AKL NZ  BNE AU  MEL AU  PER AU  SYD AU
"""
_edge_tokens = _EDGE_TABLE.split()
EDGE_LOCATION_COUNTRIES: dict[str, str] = dict(zip(_edge_tokens[::2], _edge_tokens[1::2], strict=True))
del _edge_tokens
_COUNTRIES = frozenset(TERRITORY_CODES)


def edge_location_country(edge_location: str) -> str:
    """Country of an edge location from its leading IATA code (``"FRA56-P7"`` -> ``"DE"``), or ``""``."""
    return EDGE_LOCATION_COUNTRIES.get(edge_location[:3].upper(), "")


def _check_edge_location(loc: str, field_name: str) -> str:
    if not loc or loc == "-":
        raise _Bad(Reason.missing_field, f"{field_name} is empty")
    if len(loc) > 16 or not loc.isascii() or not loc.isprintable() or " " in loc:
        raise _Bad(Reason.bad_edge_location, f"{field_name} {loc[:40]!r} is not 1-16 printable ASCII chars")
    return loc


def _country_code(value: str, edge_location: str) -> str:
    """A logged client country: "" -> the edge location's; a valid alpha-2 code -> it; else "" (unknown)."""
    if not value:
        return edge_location_country(edge_location)
    code = value.upper()
    return code if code in _COUNTRIES else ""


# --------------------------------------------------------------------------------------------------------
# Shared field helpers
# --------------------------------------------------------------------------------------------------------

_NO_BODY_STATUS = frozenset((*range(100, 200), 204, 304))
_STATUS = {str(code): code for code in range(100, 600)}
_CACHE_LIMIT = 4_096


def _status(text: str) -> int:
    status = _STATUS.get(text)
    if status is not None:
        return status
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise _Bad(Reason.bad_status, f"status {text[:20]!r} is not a number")
    value = int(text)
    if not 100 <= value <= 599:
        raise _Bad(Reason.bad_status, f"status {value} is outside 100..599")
    return value


def _count(text: str, field_name: str) -> int:
    """A non-negative decimal byte count below 2^63, strictly ASCII digits."""
    if text.isdigit() and text.isascii():
        value = int(text)
        if value > MAX_BYTES:
            raise _Bad(Reason.bad_bytes, f"{field_name} {text[:25]} is not below 2^63")
        return value
    if text[:1] == "-" and text[1:].isdigit() and text.isascii():
        raise _Bad(Reason.bad_bytes, f"{field_name} {text[:25]} is negative")
    raise _Bad(Reason.bad_bytes, f"{field_name} {text[:25]!r} is not a number")


def _int_count(value: Any, field_name: str) -> int:
    if type(value) is not int:
        raise _Bad(Reason.wrong_type, f"{field_name} must be an integer, got {type(value).__name__}")
    if value < 0:
        raise _Bad(Reason.bad_bytes, f"{field_name} {value} is negative")
    if value > MAX_BYTES:
        raise _Bad(Reason.bad_bytes, f"{field_name} {value} is not below 2^63")
    return value


def _int_status(value: Any, field_name: str) -> int:
    if type(value) is not int:
        raise _Bad(Reason.wrong_type, f"{field_name} must be an integer, got {type(value).__name__}")
    if not 100 <= value <= 599:
        raise _Bad(Reason.bad_status, f"{field_name} {value} is outside 100..599")
    return value


_HEX_ASCII = {f"{b:02{case}}": chr(b) for b in range(128) for case in ("x", "X")}
_HEX_ASCII.update({f"{b:02x}"[0] + f"{b:02X}"[1]: chr(b) for b in range(128)})
_HEX_ASCII.update({f"{b:02X}"[0] + f"{b:02x}"[1]: chr(b) for b in range(128)})


def unquote_fast(text: str) -> str:
    """``urllib.parse.unquote(text)``, without its regex machinery when every escape is ASCII (%00-%7F)."""
    pieces = text.split("%")
    out = [pieces[0]]
    for piece in pieces[1:]:
        char = _HEX_ASCII.get(piece[:2])
        if char is None:  # a non-ASCII (UTF-8) or malformed escape: the stdlib's exact semantics
            return unquote(text)
        out.append(char)
        out.append(piece[2:])
    return "".join(out)


def _normalise_host(raw: str, field_name: str) -> str:
    """Lower-case host name without a trailing dot or ``:port``."""
    host = unquote_fast(raw) if "%" in raw else raw
    host = host.strip().lower()
    if host and host[-1] != "]" and ":" in host:
        name, _, port = host.rpartition(":")
        if port.isdigit() and name and ":" not in name:  # (a bare IPv6 literal keeps its colons)
            host = name
    host = host.rstrip(".")
    if not host or host == "-":
        raise _Bad(Reason.missing_field, f"{field_name} is empty")
    if not host.isprintable() or " " in host or "/" in host:
        raise _Bad(Reason.bad_value, f"{field_name} {host[:80]!r} is not a host name")
    return host


def _path_of(uri: str, field_name: str) -> str:
    """Path of a request URI (query and fragment stripped), percent-decoded."""
    if uri.startswith(("http://", "https://")):  # absolute-form request target
        slash = uri.find("/", uri.index("//") + 2)
        uri = uri[slash:] if slash >= 0 else "/"
    cut = uri.find("?")
    if cut >= 0:
        uri = uri[:cut]
    cut = uri.find("#")
    if cut >= 0:
        uri = uri[:cut]
    if not uri or uri == "-":
        raise _Bad(Reason.missing_field, f"{field_name} has no path")
    return unquote_fast(uri) if "%" in uri else uri


def _require_str(obj: dict[str, Any], key: str, *, empty_ok: bool = False) -> str:
    try:
        value = obj[key]
    except KeyError:
        raise _Bad(Reason.missing_field, f"{key} is missing") from None
    if type(value) is not str:
        raise _Bad(Reason.wrong_type, f"{key} must be a string, got {type(value).__name__}")
    if not empty_ok and not value:
        raise _Bad(Reason.missing_field, f"{key} is empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(Reason.bad_value, f"{key} holds a lone surrogate") from None
    return value


def _require(obj: dict[str, Any], key: str) -> Any:
    try:
        return obj[key]
    except KeyError:
        raise _Bad(Reason.missing_field, f"{key} is missing") from None


# --------------------------------------------------------------------------------------------------------
# Timestamps
# --------------------------------------------------------------------------------------------------------

_DAY_MS = 86_400_000
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()
_DATE_RE = re.compile(r"([0-9]{4})-([0-9]{2})-([0-9]{2})")
_TIME_RE = re.compile(r"([0-9]{2}):([0-9]{2}):([0-9]{2})")
_RFC3339_RE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?"
    r"(?:([Zz])|([+-])([0-9]{2}):([0-9]{2}))"
)
_MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def _day_ms(text: str) -> int:
    """Unix ms of 00:00 UTC of a ``YYYY-MM-DD`` date."""
    match = _DATE_RE.fullmatch(text)
    if match is None:
        raise _Bad(Reason.bad_timestamp, f"date {text[:30]!r} is not YYYY-MM-DD")
    try:
        ordinal = dt.date(int(match[1]), int(match[2]), int(match[3])).toordinal()
    except ValueError as exc:
        raise _Bad(Reason.bad_timestamp, f"date {text!r}: {exc}") from None
    if ordinal < _EPOCH_ORDINAL:
        raise _Bad(Reason.bad_timestamp, f"date {text!r} is before 1970")
    return (ordinal - _EPOCH_ORDINAL) * _DAY_MS


def _time_ms(text: str) -> int:
    """Milliseconds since midnight of an ``HH:MM:SS`` time."""
    match = _TIME_RE.fullmatch(text)
    if match is None:
        raise _Bad(Reason.bad_timestamp, f"time {text[:30]!r} is not HH:MM:SS")
    hours, minutes, seconds = int(match[1]), int(match[2]), int(match[3])
    if hours > 23 or minutes > 59 or seconds > 59:
        raise _Bad(Reason.bad_timestamp, f"time {text!r} is out of range")
    return ((hours * 60 + minutes) * 60 + seconds) * 1000


def _rfc3339_ms(text: str, field_name: str) -> int:
    match = _RFC3339_RE.fullmatch(text)
    if match is None:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {text[:40]!r} is not RFC 3339 with a time zone")
    year, month, day, hour, minute, second = (int(match[i]) for i in range(1, 7))
    fraction = match[7] or ""
    try:
        ordinal = dt.date(year, month, day).toordinal()
    except ValueError as exc:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {text!r}: {exc}") from None
    if hour > 23 or minute > 59 or second > 59:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {text!r}: time out of range")
    offset_min = 0
    if match[9]:
        off_h, off_m = int(match[10]), int(match[11])
        if off_h > 23 or off_m > 59:
            raise _Bad(Reason.bad_timestamp, f"{field_name} {text!r}: bad UTC offset")
        offset_min = (off_h * 60 + off_m) * (1 if match[9] == "+" else -1)
    ms = (
        (ordinal - _EPOCH_ORDINAL) * _DAY_MS
        + ((hour * 60 + minute - offset_min) * 60 + second) * 1000
        + int((fraction + "000")[:3])
    )
    return _check_ms(ms, field_name)


def _check_ms(ms: int, field_name: str) -> int:
    if ms < 0:
        raise _Bad(Reason.bad_timestamp, f"{field_name} is before 1970")
    if ms > _MAX_TIMESTAMP_MS:
        raise _Bad(Reason.bad_timestamp, f"{field_name} is after year 9999")
    return ms


def _unix_auto_ms(value: int, field_name: str) -> int:
    """Unix time whose unit is told by its magnitude: s < 1e11 <= ms < 1e14 <= us < 1e17 <= ns."""
    if value < 0:
        raise _Bad(Reason.bad_timestamp, f"{field_name} {value} is negative")
    if value >= 100_000_000_000_000_000:
        return _check_ms(value // 1_000_000, field_name)
    if value >= 100_000_000_000_000:
        return _check_ms(value // 1_000, field_name)
    if value >= 100_000_000_000:
        return _check_ms(value, field_name)
    return _check_ms(value * 1000, field_name)


# --------------------------------------------------------------------------------------------------------
# Opening files
# --------------------------------------------------------------------------------------------------------


class _Prefixed(io.RawIOBase):
    """A non-seekable binary stream with its first bytes (already read for sniffing) put back."""

    def __init__(self, prefix: bytes, stream: IO[bytes]) -> None:
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._prefix:
            n = min(len(view), len(self._prefix))
            view[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)


def _source_name(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) else "<stream>"


def _open_text(source: Any) -> tuple[Any, Callable[[], None]]:
    """A text stream (or an iterable of str lines) for ``source`` and the function that releases it."""
    if isinstance(source, str | os.PathLike):
        binary: Any = open(source, "rb")  # noqa: SIM115 (closed by the returned closer)
        owned = True
    elif isinstance(source, io.TextIOBase):
        return source, lambda: None
    elif hasattr(source, "read"):
        binary = source
        owned = False
    else:  # an iterable of str lines (already decoded), e.g. a list in tests
        return source, lambda: None

    if getattr(binary, "seekable", lambda: False)():
        position = binary.tell()
        magic = binary.read(2)
        binary.seek(position)
    elif hasattr(binary, "peek"):
        magic = binary.peek(2)[:2]
    else:
        magic = binary.read(2)
        binary = io.BufferedReader(_Prefixed(magic, binary), _READ_CHUNK)
    stream = gzip.GzipFile(fileobj=binary, mode="rb") if magic == _GZIP_MAGIC else binary
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="\n")
    text._CHUNK_SIZE = _READ_CHUNK  # type: ignore[attr-defined]  # fewer, larger reads

    def close() -> None:
        if owned:
            text.close()
        else:
            # Leave the caller's file object open: release the wrapper (and the gzip layer) only.
            text.detach()
            if stream is not binary:
                stream.close()

    return text, close


class LogLines:
    """Lines of a plain or gzip-compressed log, without line terminators (see :func:`open_log`)."""

    def __init__(self, source: Any) -> None:
        self.name = _source_name(source)
        self._text, self._close = _open_text(source)
        self._iter = iter(self._text)
        self._closed = False

    def __iter__(self) -> LogLines:
        return self

    def __next__(self) -> str:
        try:
            line: str = next(self._iter)
        except StopIteration:
            self.close()
            raise
        except (EOFError, OSError, zlib.error) as exc:
            self.close()
            raise LogFormatError(self.name, f"unreadable compressed data ({exc})") from exc
        return line.rstrip("\r\n")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._close()

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_log(path_or_fileobj: str | os.PathLike[str] | IO[bytes] | IO[str]) -> LogLines:
    """Stream the text lines of a log file, gzip or plain (told apart by the gzip magic bytes ``1f 8b``).

    Accepts a path, a binary file object (seekable or not; it is not closed) or a text file object. The
    file is decoded as UTF-8 (a BOM is dropped; undecodable bytes become U+FFFD) and read in 64 KiB
    chunks, never as a whole. Use it as a context manager or exhaust it to release the file.
    """
    return LogLines(path_or_fileobj)


def _line_reader(text: Any) -> Iterator[str]:
    readline = getattr(text, "readline", None)
    if readline is None:
        return iter(text)
    return iter(partial(readline, MAX_LINE_CHARS), "")


# --------------------------------------------------------------------------------------------------------
# Format detection
# --------------------------------------------------------------------------------------------------------

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
_CLOUDFLARE_KEYS = frozenset(
    ("RayID", "EdgeStartTimestamp", "ClientRequestHost", "ClientRequestURI", "EdgeResponseStatus", "ClientIP")
)


def _cloudfront_columns(fields_line: str) -> list[str]:
    return fields_line.split(":", 1)[1].split()


def _missing_cloudfront_columns(columns: list[str]) -> list[str]:
    missing = [name for name in _CF_REQUIRED if name not in columns]
    if "cs(Host)" not in columns and "x-host-header" not in columns:
        missing.append("cs(Host) or x-host-header")
    return missing


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
    """``"cloudfront"``, ``"cloudflare"`` or ``"edgeledger"`` from the first lines of a file.

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
    raise LogFormatError(file_name, _describe(first))


# --------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------

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


class _Run:
    """State of one parse_log run: the file name, pseudonymiser, stats and quarantine helper."""

    __slots__ = ("file", "pseudonym", "quarantined", "reasons", "stats")

    def __init__(self, file: str, pseudonymiser: Pseudonymiser, stats: ParseStats) -> None:
        self.file = file
        self.pseudonym = pseudonymiser.pseudonym
        self.stats = stats
        self.quarantined = 0
        self.reasons: Counter[str] = stats.by_reason

    def quarantine(self, line_number: int, reason: str, raw: str, detail: str = "") -> QuarantinedLine:
        self.quarantined += 1
        self.reasons[str(reason)] += 1
        return QuarantinedLine(self.file, line_number, str(reason), raw.rstrip("\r\n"), detail)


def _too_long(line: str) -> bool:
    return len(line) >= MAX_LINE_CHARS and not line.endswith("\n")


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


def parse_log(
    source: str | os.PathLike[str] | IO[bytes] | IO[str] | Iterable[str],
    *,
    pseudonymiser: Pseudonymiser,
    file_name: str | None = None,
    stats: ParseStats | None = None,
    log_format: str | None = None,
) -> Iterator[DeliveryRecord | QuarantinedLine]:
    """Stream the records and quarantined lines of one log file.

    ``source`` is a path, a binary or text file object, or an iterable of text lines. The format is
    detected from the first lines (:func:`detect_format`) unless ``log_format`` names it; an
    unrecognised file raises :class:`LogFormatError` on the first ``next()``, before anything is
    produced. ``file_name`` names the file in quarantined lines and errors (default: the path or the
    file object's name). Pass a :class:`ParseStats` as ``stats`` to receive the totals; it is updated
    when the generator finishes or is closed (quarantine counts as they happen).

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
        stats.files += 1
        stats.by_format[log_format] += 1
        all_lines = chain(head, lines)
        if log_format == CLOUDFRONT:
            parser = _parse_cloudfront(all_lines, run, counts)
        elif log_format == CLOUDFLARE:
            parser = _parse_json_lines(all_lines, run, counts, _cloudflare_record)
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
