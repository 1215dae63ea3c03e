"""What every log format shares once a line is split: quarantine reasons, parse statistics, and the checked
conversions of status, byte counts, hosts, paths and timestamps."""

from __future__ import annotations

import datetime as dt
import re
from collections import Counter
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any
from urllib.parse import unquote

from edgeledger.deliveries.parsers.text import (
    MAX_LINE_CHARS,
)
from edgeledger.deliveries.records import (
    MAX_BYTES,
    Pseudonymiser,
    QuarantinedLine,
)


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


_NO_BODY_STATUS = frozenset((*range(100, 200), 204, 304))


_STATUS = {str(code): code for code in range(100, 600)}


_CACHE_LIMIT = 4_096


#: Two-digit seconds "00".."59" -> milliseconds (ASCII digits only, as ``[0-9]{2}``, and in range).
_SECOND_MS = {f"{second:02d}": second * 1000 for second in range(60)}


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
        if (
            port.isascii() and port.isdigit() and name and ":" not in name
        ):  # (a bare IPv6 literal keeps its colons)
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
