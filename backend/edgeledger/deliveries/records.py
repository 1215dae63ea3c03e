"""Normalised delivery records, client pseudonyms and quarantined log lines.

Every CDN or edge-node log line that the parsers in :mod:`edgeledger.deliveries.parsers` accept becomes one
:class:`DeliveryRecord`; every line they cannot accept becomes one :class:`QuarantinedLine`. Neither type
has a field for the raw client IP: the parser turns the IP into a keyed pseudonym
(:class:`Pseudonymiser`) while reading the line, and quarantined raw text has IP literals replaced by
``[ip]``. See ``docs/log-formats.md`` and ``docs/delivery-leaf.md``.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
import socket
import struct
from dataclasses import dataclass, field
from enum import IntEnum

__all__ = [
    "MAX_BYTES",
    "RAW_LINE_LIMIT",
    "AmbiguousLogFormatError",
    "CacheResult",
    "DeliveryRecord",
    "LogFormatError",
    "Pseudonymiser",
    "QuarantinedLine",
    "make_record",
    "mask_ips",
]

#: Largest byte count a record may carry: records go to a signed 64-bit database column and a
#: ``uint64`` leaf field, so a count must stay below 2^63.
MAX_BYTES = 2**63 - 1
#: Quarantined raw text is cut to this many characters (after IP masking).
RAW_LINE_LIMIT = 2_000
#: Characters of a raw line examined for IP masking before truncation (more than enough to fill
#: ``RAW_LINE_LIMIT`` after masking, far less than a pathological multi-megabyte line).
_MASK_WINDOW = 8_192


class CacheResult(IntEnum):
    """How the edge answered the request; the value is the leaf's ``cacheResult`` byte."""

    unknown = 0
    hit = 1
    miss = 2
    refresh_hit = 3
    error = 4
    bypass = 5


@dataclass(frozen=True, slots=True)
class DeliveryRecord:
    """One delivered request, normalised from any supported log format.

    ``client_pseudonym`` is ``HMAC-SHA256(period key, normalised client IP)``; the raw IP is never
    stored. ``line_number`` is the 1-based physical line of the source file (header lines count).
    """

    source_format: str
    request_id: str
    timestamp_ms: int
    edge_location: str
    country: str
    host: str
    uri: str
    bytes_delivered: int
    status: int
    cache_result: CacheResult
    client_pseudonym: bytes
    line_number: int


class _RecordBuilder:
    """Same slot layout as :class:`DeliveryRecord`, but writable: the parsers' fast constructor.

    A frozen dataclass's generated ``__init__`` sets each field through ``object.__setattr__``, which
    costs ~1.7 us per record (a third of the per-line budget of the CloudFront parser). Filling this
    class and switching ``__class__`` (allowed between classes with identical ``__slots__``) gives an
    ordinary, equal, hashable, immutable ``DeliveryRecord`` for ~0.3 us.
    """

    __slots__ = DeliveryRecord.__slots__

    def __init__(
        self,
        source_format: str,
        request_id: str,
        timestamp_ms: int,
        edge_location: str,
        country: str,
        host: str,
        uri: str,
        bytes_delivered: int,
        status: int,
        cache_result: CacheResult,
        client_pseudonym: bytes,
        line_number: int,
    ) -> None:
        self.source_format = source_format
        self.request_id = request_id
        self.timestamp_ms = timestamp_ms
        self.edge_location = edge_location
        self.country = country
        self.host = host
        self.uri = uri
        self.bytes_delivered = bytes_delivered
        self.status = status
        self.cache_result = cache_result
        self.client_pseudonym = client_pseudonym
        self.line_number = line_number


def make_record(
    source_format: str,
    request_id: str,
    timestamp_ms: int,
    edge_location: str,
    country: str,
    host: str,
    uri: str,
    bytes_delivered: int,
    status: int,
    cache_result: CacheResult,
    client_pseudonym: bytes,
    line_number: int,
) -> DeliveryRecord:
    """Fast positional ``DeliveryRecord(...)`` for parsers (no validation, same result)."""
    record = _RecordBuilder(
        source_format,
        request_id,
        timestamp_ms,
        edge_location,
        country,
        host,
        uri,
        bytes_delivered,
        status,
        cache_result,
        client_pseudonym,
        line_number,
    )
    record.__class__ = DeliveryRecord  # type: ignore[assignment]
    return record  # type: ignore[return-value]


def _compress_v6(packed: bytes) -> str:
    """:mod:`ipaddress`'s text of 16 packed bytes: lower-case hex, longest zero run (>1 group) as ``::``."""
    hextets = [f"{group:x}" for group in struct.unpack("!8H", packed)]
    best_start, best_len, start, length = -1, 0, -1, 0
    for i, hextet in enumerate(hextets):
        if hextet == "0":
            if start < 0:
                start, length = i, 0
            length += 1
            if length > best_len:
                best_start, best_len = start, length
        else:
            start, length = -1, 0
    if best_len > 1:
        end = best_start + best_len
        if end == 8:
            hextets.append("")
        hextets[best_start:end] = [""]
        if best_start == 0:
            hextets.insert(0, "")
    return ":".join(hextets)


#: The first 12 bytes of an IPv4-mapped IPv6 address (``::ffff:a.b.c.d``).
_V4_MAPPED = b"\x00" * 10 + b"\xff\xff"


class Pseudonymiser:
    """Keyed, stable pseudonyms for client IPs: ``HMAC-SHA256(key, normalised IP text)``.

    The key rotates: ingestion passes the key of the UTC day the file is ingested (one key per upload,
    whatever days its lines span: a file is pseudonymised under one key, and retention can destroy a
    day's key once everything ingested that day is past retention; deliveries/service.py
    ``pseudonym_key_id``), kept wrapped in the database under ``key_id``. Within one key the same
    client always gets the same pseudonym, so per-day unique-client counts still work; across keys
    pseudonyms cannot be linked, and once a key is destroyed nobody can recompute a pseudonym from an IP
    any more.

    Normalisation: IPv4 stays dotted-quad text as logged (a valid dotted quad is already canonical for
    :mod:`ipaddress`); an IPv4-mapped IPv6 address (``::ffff:203.0.113.9``, how a dual-stack server logs
    an IPv4 client) is that IPv4 client, so it becomes its dotted quad (``203.0.113.9``); other IPv6
    becomes :mod:`ipaddress`'s compressed lower-case form (Python 3.11), so ``2001:DB8:0::1`` and
    ``2001:db8::1`` get the same pseudonym. Anything that is not a valid address is used as-is. (IPv6
    goes through ``inet_pton``/``inet_ntop`` first, 15x faster than ``ipaddress`` and identical to its
    text; the unit tests check the equivalence.) Records ingested before mapped addresses were
    normalised carry the pseudonym of the mapped IPv6 text: :meth:`pseudonyms` gives both, for erasure.

    The HMAC is RFC 2104 over pre-keyed SHA-256 states (equal to ``hmac.digest(key, msg, "sha256")``,
    ~2.5x faster per call), and a small bounded cache (``cache_size`` recent IPs, process memory only)
    skips it for the many repeated client IPs of a CDN log.
    """

    __slots__ = ("_cache", "_cache_size", "_inner", "_outer", "key_id")

    def __init__(self, key: bytes, key_id: str, *, cache_size: int = 8_192) -> None:
        if not isinstance(key, bytes | bytearray) or len(key) < 16:
            raise ValueError("pseudonymisation key must be at least 16 bytes")
        if not key_id:
            raise ValueError("pseudonymisation key needs a key_id")
        block = bytes(key)
        if len(block) > 64:  # HMAC: keys longer than the block size are hashed first
            block = hashlib.sha256(block).digest()
        block = block.ljust(64, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in block))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in block))
        self.key_id = key_id
        self._cache: dict[str, bytes] = {}
        self._cache_size = max(0, cache_size)

    def __repr__(self) -> str:
        return f"Pseudonymiser(key_id={self.key_id!r})"

    @staticmethod
    def normalise(ip: str) -> str:
        """The text that is hashed for ``ip`` (see the class docstring)."""
        if ":" not in ip:
            # IPv4 (or garbage): ipaddress accepts only canonical dotted quads, whose text is unchanged.
            return ip
        try:
            packed = socket.inet_pton(socket.AF_INET6, ip)
        except (OSError, ValueError):
            try:
                return ipaddress.IPv6Address(ip).compressed  # e.g. with a %scope id
            except ValueError:
                return ip
        if packed[:12] == _V4_MAPPED:
            return socket.inet_ntop(socket.AF_INET, packed[12:])
        text = socket.inet_ntop(socket.AF_INET6, packed)
        return _compress_v6(packed) if "." in text else text

    def _hmac(self, text: str) -> bytes:
        inner = self._inner.copy()
        inner.update(text.encode("utf-8", "surrogatepass"))
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def pseudonyms(self, ip: str) -> set[bytes]:
        """Every pseudonym records of client ``ip`` may carry under this key: the current one, and for an
        IPv4 client the one of its IPv4-mapped IPv6 text as hashed before mapped addresses were
        normalised (records stored then keep it)."""
        found = {self.pseudonym(ip)}
        text = self.normalise(ip)
        try:
            quad = socket.inet_pton(socket.AF_INET, text)
        except (OSError, ValueError):
            return found
        found.add(self._hmac(_compress_v6(_V4_MAPPED + quad)))
        return found

    def pseudonym(self, ip: str) -> bytes:
        """32-byte pseudonym of ``ip`` under this key."""
        cached = self._cache.get(ip)
        if cached is not None:
            return cached
        value = self._hmac(self.normalise(ip))
        if self._cache_size:
            if len(self._cache) >= self._cache_size:
                self._cache.clear()
            self._cache[ip] = value
        return value

    __call__ = pseudonym


# An IPv6 candidate: a run of letters, digits, dots and at least two colons. Masked when ipaddress
# accepts it, or anyway when it has three or more colons (a damaged address is still personal data);
# two-colon runs that are not addresses ("21:02:31", "urn:isbn:1") stay.
_IPV6_CANDIDATE = re.compile(r"[0-9A-Za-z.]*:[0-9A-Za-z:.]*:[0-9A-Za-z:.]*")
# Any dotted quad of 1-3 digit groups, valid or not (no look-behind: "%20198.51.100.2" must match).
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_IP_CHARS = "0123456789abcdefABCDEF:.%"
# A JSON escape of a character addresses are written with (digit, hex letter, ".", ":", "%"): JSON log
# formats decode "198\u002e51\u002e100\u002e23" to an address, so raw text shows it decoded before masking.
_JSON_IP_CHAR_ESCAPE = re.compile(r"\\u00(3[0-9Aa]|2[5Ee]|4[1-6]|6[1-6])")


def _unescape_ip_chars(text: str) -> str:
    return _JSON_IP_CHAR_ESCAPE.sub(lambda match: chr(int(match.group(1), 16)), text)


# The date and time of an access log's time field, `dd/Mon/yyyy:HH:MM:SS` (nginx `$time_local`, Alibaba
# Cloud CDN): its `yyyy:HH:MM:SS` has three colons, but after `dd/Mon/` and with a time's ranges it is a
# time, not a damaged address, and it stays (it is what a quarantine detail most often needs to show).
_LOG_TIME = re.compile(r"(?:19|20)\d\d:(?:[01]\d|2[0-3]):[0-5]\d:(?:[0-5]\d|60)")
_LOG_DATE_BEFORE = re.compile(r"(?:^|[^0-9A-Za-z])\d{1,2}/[A-Za-z]{3}/$")


def _is_log_time(match: re.Match[str]) -> bool:
    before = match.string[max(0, match.start() - 8) : match.start()]  # "[dd/Mon/" at most
    return bool(_LOG_TIME.fullmatch(match.group(0)) and _LOG_DATE_BEFORE.search(before))


def _mask_v6(match: re.Match[str]) -> str:
    token = match.group(0)
    stripped = token.strip(".")
    if stripped.count(":") >= 3:
        return token if _is_log_time(match) else "[ip]"
    try:
        ipaddress.IPv6Address(stripped)
    except ValueError:
        return token
    return "[ip]"


def mask_ips(text: str) -> str:
    """``text`` with every IPv4/IPv6 literal (and anything that looks like a damaged one) as ``[ip]``."""
    if ":" in text:
        text = _IPV6_CANDIDATE.sub(_mask_v6, text)
    return _IPV4.sub("[ip]", text)


def masked_excerpt(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text`` for a message, its IP literals masked *before* it is cut
    (an address straddling the cut would no longer be recognised as one)."""
    return _safe_raw(text)[:limit]


def _safe_raw(raw: str) -> str:
    if len(raw) > _MASK_WINDOW:
        # Drop a trailing partial token that might be the first half of an address.
        raw = raw[:_MASK_WINDOW].rstrip(_IP_CHARS)
    if "\\u" in raw:
        raw = _unescape_ip_chars(raw)
    return mask_ips(raw)[:RAW_LINE_LIMIT]


@dataclass(frozen=True, slots=True)
class QuarantinedLine:
    """A log line that did not become a record, kept for inspection.

    ``reason`` is a stable code (see ``docs/log-formats.md``); ``detail`` says what exactly was wrong.
    ``raw`` (and ``detail``) never hold a client IP: IP literals are replaced by ``[ip]`` on
    construction (JSON escapes of address characters, ``\\u002e``, decoded first), then ``raw`` is
    truncated to :data:`RAW_LINE_LIMIT` characters.
    """

    file: str
    line_number: int
    reason: str
    raw: str
    detail: str = field(default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "raw", _safe_raw(self.raw))
        if self.detail:
            object.__setattr__(self, "detail", _safe_raw(self.detail))


class LogFormatError(ValueError):
    """The whole file is not a log this service understands; it is rejected as a whole."""

    def __init__(self, file: str, reason: str) -> None:
        super().__init__(f"{file}: not a recognised delivery log: {reason}")
        self.file = file
        self.reason = reason


class AmbiguousLogFormatError(LogFormatError):
    """The file's lines fit more than one format equally well (``candidates``): the source must declare
    which one it writes; the file is rejected, never parsed under a guess."""

    def __init__(self, file: str, candidates: tuple[str, ...]) -> None:
        super().__init__(
            file,
            f"its lines fit several formats ({', '.join(candidates)}): declare the source's log format",
        )
        self.candidates = candidates
