"""Fuzz targets for the parsers of untrusted input, shared by the hypothesis properties
(``tests/backend/test_input_fuzz.py``) and the coverage-guided atheris driver (``scripts/fuzz.py``).

Each target takes arbitrary bytes, feeds them to the parser the way the service does, and checks what it
promises; anything else (an exception of another type, a broken invariant: ``AssertionError``) is a
finding:

* ``logs``: :func:`parse_log` with the format detected, then forced to each format. The only exception
  allowed is :class:`LogFormatError` (the whole file refused). Every record has non-negative bytes below
  2^63, a timestamp in 1970..9999, a status in 100..599, a request id of 1..MAX_LINE_CHARS characters, a
  checked edge location, host and country, a 32-byte client pseudonym and no field for a client IP; every
  quarantined line has a known reason code, at most RAW_LINE_LIMIT characters and no IP literal; line
  numbers rise; the totals add up (lines = records + quarantined + skipped).
* ``billing``: the billing CSV reader on the file's lines (:func:`billing_lines`, as an import does):
  it never raises; problems carry line numbers within the file; rows hold 64-bit non-negative integers,
  a known region, currency and calendar day.
* ``siwe``: :func:`parse_siwe_message` raises nothing but ``AuthError("siwe_invalid_message")``; what it
  accepts names a checksummed address, a positive chain id, an alphanumeric nonce of 8+ characters and
  time-zoned timestamps, all present in the text; signature recovery over the text with a signature made
  of the same bytes raises nothing but ``AuthError("siwe_bad_signature")``.
"""

from __future__ import annotations

import datetime as dt
import io
import re
from collections.abc import Callable
from dataclasses import fields

from edgeledger.auth.service import AuthError, _recover_signer, parse_siwe_message
from edgeledger.deliveries.parsers import FORMATS, MAX_LINE_CHARS, ParseStats, Reason, SourceSite, parse_log
from edgeledger.deliveries.records import (
    MAX_BYTES,
    RAW_LINE_LIMIT,
    CacheResult,
    DeliveryRecord,
    LogFormatError,
    Pseudonymiser,
    QuarantinedLine,
    mask_ips,
)
from edgeledger.deliveries.regions import REGION_CODES
from edgeledger.settlement.billing import INT64_MAX, ISO_CURRENCIES, BillingReader, billing_lines
from edgeledger.territories import TERRITORY_CODES

PSEUDONYMISER = Pseudonymiser(b"fuzzing-period-key-0123456789", "fuzz")
MAX_TIMESTAMP_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
RECORD_FIELDS = (
    "source_format request_id timestamp_ms edge_location country host uri bytes_delivered status "
    "cache_result client_pseudonym line_number"
).split()
REASONS = frozenset(reason.value for reason in Reason)
_DOTTED_QUAD = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_NONCE = re.compile(r"[A-Za-z0-9]{8,}")
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF.:%")
assert [f.name for f in fields(DeliveryRecord)] == RECORD_FIELDS  # no field for a raw client IP
#: What a source declares for the formats that need it: host and edge location (nginx and Fastly CLF) and
#: the Akamai structured columns (those of the seed ``akamai_structured.log``).
SITE = SourceSite(
    "media.example.com",
    "FRA1",
    (1000, 1002, 1100, 1005, 1006, 1008, 1009, 1011, 1012, 1013, 1017, 2010, 2012),
)


# --- logs ---------------------------------------------------------------------------------------------


def check_record(record: DeliveryRecord, log_format: str) -> None:
    assert type(record) is DeliveryRecord
    assert record.source_format == log_format
    assert type(record.bytes_delivered) is int and 0 <= record.bytes_delivered <= MAX_BYTES, record
    assert type(record.timestamp_ms) is int and 0 <= record.timestamp_ms <= MAX_TIMESTAMP_MS, record
    assert type(record.status) is int and 100 <= record.status <= 599, record
    assert isinstance(record.request_id, str) and 0 < len(record.request_id) < MAX_LINE_CHARS, record
    assert record.request_id != "-", record
    loc = record.edge_location
    assert 1 <= len(loc) <= 16 and loc.isascii() and loc.isprintable() and " " not in loc, record
    assert record.country == "" or record.country in TERRITORY_CODES, record
    assert record.host and record.host != "-" and record.host.isprintable(), record
    assert " " not in record.host and "/" not in record.host, record
    assert record.uri and record.uri != "-", record
    assert isinstance(record.cache_result, CacheResult), record
    assert type(record.client_pseudonym) is bytes and len(record.client_pseudonym) == 32, record
    assert record.line_number >= 1, record


def check_quarantined(line: QuarantinedLine) -> None:
    assert type(line) is QuarantinedLine
    assert line.reason in REASONS, line
    assert line.line_number >= 1, line
    assert len(line.raw) <= RAW_LINE_LIMIT, line
    for text in (line.raw, line.detail, json_unescaped(line.raw)):
        assert not _DOTTED_QUAD.search(text), line  # no IPv4 literal, valid or damaged
        assert mask_ips(text) == text, line  # nor any IPv6 one


def json_unescaped(text: str) -> str:
    """``text`` with JSON escapes of the characters addresses are made of decoded (``\\u002e`` -> ``.``)."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 16)) if chr(int(m[1], 16)) in _ADDRESS_CHARS else m[0], text)


def parse_all(
    data: bytes, log_format: str | None
) -> tuple[list[DeliveryRecord | QuarantinedLine], ParseStats]:
    """Every item :func:`parse_log` yields for ``data`` (raises LogFormatError like parse_log)."""
    stats = ParseStats()
    items = list(
        parse_log(
            io.BytesIO(data),
            pseudonymiser=PSEUDONYMISER,
            file_name="fuzz.log",
            stats=stats,
            log_format=log_format,
            site=SITE,
        )
    )
    return items, stats


def fuzz_logs(data: bytes) -> None:
    for log_format in (None, *FORMATS):
        try:
            items, stats = parse_all(data, log_format)
        except LogFormatError as exc:
            assert exc.file == "fuzz.log" and exc.reason
            assert not _DOTTED_QUAD.search(exc.reason), exc.reason
            continue
        detected = log_format or next(iter(stats.by_format))
        last = 0
        records = quarantined = 0
        for item in items:
            if type(item) is DeliveryRecord:
                check_record(item, detected)
                records += 1
            else:
                check_quarantined(item)  # type: ignore[arg-type]
                quarantined += 1
            assert item.line_number > last, (last, item)
            last = item.line_number
        assert stats.records == records and stats.quarantined == quarantined, stats
        assert stats.lines == stats.records + stats.quarantined + stats.skipped, stats
        assert last <= stats.lines, stats


# --- billing ------------------------------------------------------------------------------------------


def check_billing(reader: BillingReader, rows: list, physical_lines: int) -> None:  # type: ignore[type-arg]
    assert reader.problem_count >= len(reader.problems) and len(reader.problems) <= reader.max_problems
    for problem in reader.problems:
        assert 0 <= problem.line <= physical_lines, (problem, physical_lines)
        assert isinstance(problem.problem, str) and problem.problem, problem
        assert len(problem.problem) < 400, problem  # messages quote at most a bounded part of a field
    last = 0
    for row in rows:
        assert 1 <= row.line <= physical_lines and row.line > last, (row, physical_lines)
        last = row.line
        assert type(row.bytes) is int and 0 <= row.bytes <= INT64_MAX, row
        assert type(row.requests) is int and 0 <= row.requests <= INT64_MAX, row
        assert row.amount is None or (type(row.amount) is int and 0 <= row.amount <= INT64_MAX), row
        assert row.currency is None or row.currency in ISO_CURRENCIES, row
        assert row.region in REGION_CODES, row
        assert _DAY.fullmatch(row.day) and dt.date.fromisoformat(row.day), row
        assert reader.layout in ("own", "cloudfront"), reader.layout


def physical_line_count(text: str) -> int:
    """Lines as an editor counts them: ended by \\n, \\r\\n or \\r (a final line without one counts)."""
    return len(io.StringIO(text, newline="").readlines())


def fuzz_billing(data: bytes) -> None:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return  # refused as a whole by the import (billing_invalid, "not UTF-8 text")
    count = physical_line_count(text)
    for unit in ("bytes", "GB"):
        reader = BillingReader(billing_lines(data), merchant="fuzz-merchant", cloudfront_bytes_unit=unit)  # type: ignore[arg-type]
        rows = list(reader)
        check_billing(reader, rows, count)


# --- Sign-In with Ethereum ------------------------------------------------------------------------------


def check_siwe_text(message: str) -> None:
    try:
        fields_ = parse_siwe_message(message)
    except AuthError as exc:
        assert exc.code == "siwe_invalid_message" and exc.status == 400, exc
        return
    assert fields_.domain and fields_.domain in message.partition("\n")[0], fields_
    assert _ADDRESS.fullmatch(fields_.address) and f"\n{fields_.address}\n" in message, fields_
    assert type(fields_.chain_id) is int and fields_.chain_id >= 1, fields_
    assert f"\nChain ID: {fields_.chain_id}" in message, fields_
    assert _NONCE.fullmatch(fields_.nonce) and f"\nNonce: {fields_.nonce}" in message, fields_
    for moment in (fields_.expiration_time, fields_.not_before):
        assert moment is None or moment.tzinfo is not None, fields_


def fuzz_siwe(data: bytes) -> None:
    message = data.decode("utf-8", "replace")
    check_siwe_text(message)
    for signature in ("0x" + data[:65].hex(), data[:140].decode("ascii", "replace")):
        try:
            _recover_signer(message, signature)
        except AuthError as exc:
            assert exc.code == "siwe_bad_signature", exc


TARGETS: dict[str, Callable[[bytes], None]] = {"logs": fuzz_logs, "billing": fuzz_billing, "siwe": fuzz_siwe}
