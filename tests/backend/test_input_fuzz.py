"""Fuzzing of the parsers of untrusted input: the CDN / edge-node log parsers, the billing CSV importer and
Sign-In with Ethereum message handling (docs/testing.md, "Fuzzing the parsers").

* Replays: every seed in ``tests/backend/fuzz_corpus`` goes through the fuzz targets of
  ``tests/backend/support/fuzzing.py`` (which say what each parser promises), and each finding of the
  fuzzers has a regression test below.
* Hypothesis properties, seeded (derandomised, no example database) with ``INPUT_FUZZ_EXAMPLES`` examples
  each (default 60): arbitrary and mutated bytes into the same targets; generated valid lines (edge-node
  JSON; Tencent, Fastly CLF, Akamai structured) that must parse to the fields they were generated from;
  no client IP, however written, in any record or quarantined line; billing rows and problems at the
  physical line they start on; SIWE messages whose domain, chain id, nonce, validity window or address do
  not match are refused with the matching code and leave the nonce unused (SQLite and PostgreSQL).
* A short coverage-guided atheris run of each target (``INPUT_FUZZ_SECONDS`` per target, default 5;
  ``scripts/fuzz.py``); ``make fuzz-long`` is the long run.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
import urllib.parse
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import SiweNonce
from edgeledger.config import PROJECT_ROOT
from edgeledger.deliveries.parsers import EDGE_LOCATION_COUNTRIES
from edgeledger.deliveries.parsers.jsonlines import _EDGELEDGER_CACHE
from edgeledger.deliveries.records import CacheResult, DeliveryRecord, Pseudonymiser, QuarantinedLine
from edgeledger.deliveries.regions import REGION_CODES
from edgeledger.settlement.billing import ISO_CURRENCIES, BillingReader, billing_lines
from tests.backend.support.fuzzing import (
    PSEUDONYMISER,
    TARGETS,
    check_billing,
    check_quarantined,
    check_siwe_text,
    json_unescaped,
    parse_all,
    physical_line_count,
)

CORPUS = Path(__file__).parent / "fuzz_corpus"
SAMPLES = Path(__file__).parent / "samples" / "logs"
FORMAT_SAMPLES = Path(__file__).parent / "samples" / "formats"
EXAMPLES = int(os.environ.get("INPUT_FUZZ_EXAMPLES", "60"))
SECONDS = int(os.environ.get("INPUT_FUZZ_SECONDS", "5"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
EPOCH = dt.datetime(1970, 1, 1)
MS = dt.timedelta(milliseconds=1)


# ------------------------------------------------------------------------------------------------------
# Replays of the seed corpus
# ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "seed", sorted(CORPUS.glob("*/*")), ids=lambda path: f"{path.parent.name}/{path.name}"
)
def test_every_seed_passes_its_target(seed: Path) -> None:
    TARGETS[seed.parent.name](seed.read_bytes())


def test_the_corpus_covers_every_target_and_sample() -> None:
    assert {path.name for path in CORPUS.iterdir() if path.is_dir()} == set(TARGETS)
    seeds = {path.name for path in (CORPUS / "logs").iterdir()}
    assert {path.name for path in SAMPLES.iterdir()} <= seeds
    formats = {path.name for path in FORMAT_SAMPLES.iterdir() if path.suffix not in (".json", ".md")}
    assert formats <= seeds  # every format's golden file seeds the fuzzer


# ------------------------------------------------------------------------------------------------------
# Arbitrary and mutated bytes
# ------------------------------------------------------------------------------------------------------

# Tokens the mutator splices in: separators, the parsers' special values, boundary numbers and dates,
# encodings (BOM, invalid UTF-8, U+2028, gzip magic) and address-like text.
_TOKENS = [
    b"\t",
    b"\n",
    b"\r",
    b"\r\n",
    b",",
    b'"',
    b"-",
    b"%",
    b"%ff",
    b"%2e",
    b"\xff",
    b"\x00",
    b"\xef\xbb\xbf",
    b"\xe2\x80\xa8",
    b"\x1f\x8b",
    b"{",
    b"}",
    b"[]",
    b"null",
    b"true",
    b"1e400",
    b"NaN",
    b"-1",
    b"0",
    b"9223372036854775807",
    b"9223372036854775808",
    b"9" * 40,
    b"1969-12-31",
    b"9999-12-31",
    b"2024-02-30",
    b"23:59:60",
    b"T",
    b"Z",
    b"+14:00",
    b"#Fields: date",
    b"198.51.100.7",
    b"2001:db8::7",
    b"\\u002e",
    b"\\ud800",
    b"USD",
    b"JPY",
    b"EU",
    b"HEAD",
    b"Chain ID: ",
    b"Nonce: ",
    b"0x",
]


def _seeds(target: str) -> list[bytes]:
    return [path.read_bytes() for path in sorted((CORPUS / target).iterdir())]


@st.composite
def _mutated(draw: st.DrawFn, target: str) -> bytes:
    data = bytearray(draw(st.sampled_from(_seeds(target))))
    for _ in range(draw(st.integers(1, 8))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["byte", "token", "delete", "repeat"]))
        if kind == "byte" and data:
            data[min(at, len(data) - 1)] = draw(st.integers(0, 255))
        elif kind == "token":
            data[at:at] = draw(st.sampled_from(_TOKENS) | st.binary(max_size=6))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 40))]
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 80))] * draw(st.integers(1, 4))
    return bytes(data)


@pytest.mark.parametrize("target", sorted(TARGETS))
@FUZZ
@given(data=st.data())
def test_mutated_seeds(target: str, data: st.DataObject) -> None:
    TARGETS[target](data.draw(_mutated(target)))


@pytest.mark.parametrize("target", sorted(TARGETS))
@FUZZ
@given(blob=st.binary(max_size=2048) | st.text(max_size=600).map(str.encode))
def test_arbitrary_bytes(target: str, blob: bytes) -> None:
    TARGETS[target](blob)


# ------------------------------------------------------------------------------------------------------
# Logs: round trips and the client IP
# ------------------------------------------------------------------------------------------------------

_EDGE_CODES = sorted(EDGE_LOCATION_COUNTRIES)
_ipv4 = st.builds(
    "{}.{}".format, st.sampled_from(["192.0.2", "198.51.100", "203.0.113"]), st.integers(0, 255)
)
_ipv6 = st.integers(0, 2**96 - 1).map(
    lambda n: f"2001:db8:{n >> 64 & 0xFFFF:x}:{n >> 48 & 0xFFFF:x}::{n & 0xFFFF:x}"
)
_client_ip = _ipv4 | _ipv6 | _ipv4.map(lambda ip: "::ffff:" + ip) | _ipv6.map(str.upper)
_host = st.from_regex(r"[a-z][a-z0-9-]{0,12}(\.[a-z][a-z0-9-]{0,8}){1,3}", fullmatch=True)
_path = st.lists(
    st.text(
        st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters='/?#%\\"'),
        min_size=1,
        max_size=10,
    ),
    min_size=1,
    max_size=4,
).map(lambda parts: "/" + "/".join(parts))
_request_id = st.text(
    st.characters(min_codepoint=33, max_codepoint=0x2FFF, blacklist_categories=("Cs",)),
    min_size=1,
    max_size=200,
).filter(lambda rid: rid != "-")


def _escape_some(text: str, draw: st.DrawFn) -> str:
    """A JSON string body for ``text`` with some characters written as \\uXXXX escapes."""
    picks = draw(st.lists(st.booleans(), min_size=len(text), max_size=len(text)))
    return "".join(f"\\u{ord(ch):04x}" if pick else ch for ch, pick in zip(text, picks, strict=True))


@st.composite
def _rfc3339(draw: st.DrawFn) -> tuple[str, int | None]:
    """An RFC 3339 time with an offset and a fraction, and its unix ms (None outside 1970..9999 UTC)."""
    local = draw(st.datetimes(min_value=dt.datetime(1969, 12, 30), max_value=dt.datetime(9999, 12, 31, 23)))
    offset = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59))
    digits = draw(st.integers(0, 9))
    fraction = f"{local.microsecond:06d}000"[:digits]
    zone = (
        "Z"
        if offset == 0 and draw(st.booleans())
        else f"{'+' if offset >= 0 else '-'}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"
    )
    text = local.strftime("%Y-%m-%dT%H:%M:%S") + (f".{fraction}" if digits else "") + zone
    ms = (local.replace(microsecond=0) - EPOCH) // MS + int((fraction + "000")[:3]) - offset * 60_000
    return text, ms if 0 <= ms <= 253_402_300_799_999 else None


@FUZZ
@given(
    request_id=_request_id,
    stamp=_rfc3339() | st.integers(100_000_000_000, 253_402_300_799_999).map(lambda n: (n, n)),
    edge=st.tuples(st.sampled_from(_EDGE_CODES), st.integers(1, 99)),
    country=st.sampled_from(["", "DE", "us", "Jp"]),
    host=_host,
    path=_path,
    query=st.sampled_from(["", "?q=1", "?a=%20#frag"]),
    body=st.integers(0, 2**63 - 1),
    status=st.integers(100, 599),
    cache=st.sampled_from(sorted(_EDGELEDGER_CACHE)),
    upper=st.booleans(),
    ip=_client_ip,
    data=st.data(),
)
def test_edgeledger_line_round_trip(
    request_id, stamp, edge, country, host, path, query, body, status, cache, upper, ip, data
) -> None:
    """A generated valid edge-node line parses to the fields it was generated from (escapes and all)."""
    stamp_text, expected_ms = stamp
    loc = f"{edge[0]}{edge[1]}"
    obj = {
        "v": 1,
        "request_id": request_id,
        "ts": stamp_text,
        "edge_location": loc,
        "country": country,
        "host": host,
        "uri": path + query,
        "body_bytes": body,
        "status": status,
        "cache": cache.upper() if upper else cache,
        "client_ip": ip,
    }
    line = json.dumps(obj, ensure_ascii=data.draw(st.booleans()))
    line = line.replace(json.dumps(ip), '"' + _escape_some(ip, data.draw) + '"')
    (item,) = parse_all(line.encode() + b"\n", None)[0]
    if expected_ms is None:
        assert type(item) is QuarantinedLine and item.reason == "bad_timestamp", item
        return
    assert item == DeliveryRecord(
        "edgeledger",
        request_id,
        expected_ms,
        loc,
        country.upper() or EDGE_LOCATION_COUNTRIES[edge[0]],
        host,
        path,
        body,
        status,
        _EDGELEDGER_CACHE[cache],
        PSEUDONYMISER.pseudonym(ip),
        1,
    )


_MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()
_NO_BODY = frozenset((*range(100, 200), 204, 304))


@FUZZ
@given(
    log_format=st.sampled_from(["tencent", "fastly_common", "akamai_structured"]),
    seconds=st.integers(86_400, 253_402_000_000),
    millis=st.none() | st.integers(0, 999),
    host=_host,
    path=_path,
    body=st.integers(0, 2**63 - 1),
    status=st.integers(100, 599),
    hit=st.booleans(),
    ip=_client_ip,
)
def test_cdn_line_round_trip(log_format, seconds, millis, host, path, body, status, hit, ip) -> None:
    """A generated valid Tencent, Fastly CLF or Akamai structured line parses to the fields it was generated
    from (Tencent's Beijing time, Fastly's offset and Akamai's fraction included), and no form of its
    client IP is anywhere in the record but the pseudonym."""
    encoded = urllib.parse.quote(path)
    utc = EPOCH + dt.timedelta(seconds=seconds)
    if log_format == "tencent":
        beijing = (utc + dt.timedelta(hours=8)).strftime("%Y%m%d%H%M%S").zfill(14)
        cache = "hit" if hit else "miss"
        line = (
            f'{beijing} {ip} {host} {encoded} {body} 22 2 {status} - 12 "Mozilla/5.0 (X)" - GET HTTP/3 '
            f"{cache} 443"
        )
        expected = (host, "FRA1", "DE", CacheResult.hit if hit else CacheResult.miss)  # the declared edge
        millis = None
    elif log_format == "fastly_common":
        stamp = f"{utc.day:02d}/{_MONTHS[utc.month - 1]}/{utc.year:04d}:{utc:%H:%M:%S} +0000"
        line = f'{ip} - - [{stamp}] "GET {encoded} HTTP/1.1" {status} {body}'
        expected = ("media.example.com", "FRA1", "DE", CacheResult.unknown)
        millis = None
    else:
        stamp = f"{seconds}.{millis:03d}" if millis is not None else str(seconds)
        line = f"1 rid-{seconds} {stamp} {body} {ip} {status} HTTPS {host} GET {encoded} - {int(hit)} -"
        expected = (host, "FRA1", "DE", CacheResult.hit if hit else CacheResult.miss)
    (item,) = parse_all(line.encode() + b"\n", log_format)[0]
    assert type(item) is DeliveryRecord, (line, item)
    assert (item.host, item.edge_location, item.country, item.cache_result) == expected
    assert item.timestamp_ms == seconds * 1000 + (millis or 0)
    assert (item.uri, item.status) == (path, status)
    assert item.bytes_delivered == (0 if status in _NO_BODY and log_format != "fastly_common" else body)
    assert item.client_pseudonym == PSEUDONYMISER.pseudonym(ip)
    if log_format == "akamai_structured":
        assert item.request_id == f"rid-{seconds}"
    for form in _forms(ip):
        assert not any(form in text for text in (item.request_id, item.edge_location, item.host, item.uri))


_TEMPLATES = {
    "cloudfront": SAMPLES / "cloudfront.log",
    "cloudflare": SAMPLES / "cloudflare.ndjson",
    "edgeledger": SAMPLES / "edgeledger.jsonl",
}
_IP_KEY = {"cloudflare": "ClientIP", "edgeledger": "client_ip"}
# How a line is broken -> (CloudFront column and value, JSON key and value, the reason it is quarantined)
_BREAKAGES = {
    "status": (
        "sc-status",
        "99",
        {"cloudflare": "EdgeResponseStatus", "edgeledger": "status"},
        99,
        "bad_status",
    ),
    "timestamp": (
        "date",
        "1969-12-31",
        {"cloudflare": "EdgeStartTimestamp", "edgeledger": "ts"},
        "1969-12-31",
        "bad_timestamp",
    ),
    "request_id": (
        "x-edge-request-id",
        "-",
        {"cloudflare": "RayID", "edgeledger": "request_id"},
        "",
        "empty_request_id",
    ),
    "edge": (
        "x-edge-location",
        "bad edge",
        {"cloudflare": "EdgeColoCode", "edgeledger": "edge_location"},
        "bad edge",
        "bad_edge_location",
    ),
}


def _forms(ip: str) -> set[str]:
    """The texts an address can be recognised by: as written, compressed, and the IPv4 of a mapped one."""
    normal = Pseudonymiser.normalise(ip)
    return {ip, ip.lower(), normal, normal.upper()}


@FUZZ
@given(
    log_format=st.sampled_from(sorted(_TEMPLATES)),
    row=st.integers(0, 4),
    ip=_client_ip,
    breakage=st.sampled_from([None, *sorted(_BREAKAGES)]),
    data=st.data(),
)
def test_no_client_ip_in_any_output(
    log_format: str, row: int, ip: str, breakage: str | None, data: st.DataObject
) -> None:
    """A valid or broken line with a client IP (in JSON, possibly escaped): a record carries only the
    pseudonym of its IP, a quarantined line none of the IP's forms."""
    lines = _TEMPLATES[log_format].read_text().splitlines()
    if log_format == "cloudfront":
        header, body = lines[:2], lines[2:]
        columns = header[1].split()[1:]
        values = dict(zip(columns, body[row % len(body)].split("\t"), strict=True))
        values["c-ip"] = ip
        if breakage:
            column, value, *_ = _BREAKAGES[breakage]
            values[column] = value
        text = "\n".join([*header, "\t".join(values.values())])
    else:
        obj = json.loads(lines[row % len(lines)])
        obj[_IP_KEY[log_format]] = "IP-HERE"
        if breakage:
            _, _, keys, value, _ = _BREAKAGES[breakage]
            obj[keys[log_format]] = value
        text = json.dumps(obj).replace("IP-HERE", _escape_some(ip, data.draw))
    (item, *rest) = parse_all(text.encode() + b"\n", log_format)[0]
    assert not rest
    if breakage is None:
        assert type(item) is DeliveryRecord, item
        assert item.client_pseudonym == PSEUDONYMISER.pseudonym(ip)
        texts = [item.request_id, item.edge_location, item.host, item.uri]
    else:
        assert type(item) is QuarantinedLine and item.reason == _BREAKAGES[breakage][4], item
        check_quarantined(item)
        texts = [item.raw, item.detail, json_unescaped(item.raw)]
    for form in _forms(ip):
        assert not any(form in text for text in texts), (form, item)


# ------------------------------------------------------------------------------------------------------
# Billing CSV: line numbers and amounts
# ------------------------------------------------------------------------------------------------------

_CORRUPTIONS = {
    "date": ("date", "2026-02-30"),
    "date_digits": ("date", "\u0662026-11-20"),
    "region": ("region", "XX"),
    "negative": ("bytes", "-5"),
    "too_big": ("requests", "9223372036854775808"),
    "huge": ("bytes", "7" * 5000),
    "digits": ("bytes", "\u0661\u0662"),
    "currency": ("currency", "XYZ"),
    "amount": ("amount", "1.2.3"),
    "amount_huge": ("amount", "1" * 4500 + ".5"),
    "fields": (None, None),
}
_merchant = st.text(st.sampled_from(list('ab ,"\n\r\u2028\x0c\x1c\u0085')), max_size=8).map(
    lambda text: '"' + text.replace('"', '""') + '"'
)
_BILLING_COLUMNS = ("date", "region", "bytes", "requests", "amount", "currency", "merchant")


@FUZZ
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(sorted(REGION_CODES)),
            st.integers(0, 2**63 - 1),
            st.integers(0, 2**63 - 1),
            st.integers(0, 10**12),
            _merchant,
            st.sampled_from(["\n", "\r\n", "\r"]),
            st.integers(0, 2),
        ),
        min_size=1,
        max_size=8,
    ),
    currency=st.sampled_from(sorted(ISO_CURRENCIES)),
    bad=st.none() | st.tuples(st.integers(0, 7), st.sampled_from(sorted(_CORRUPTIONS))),
)
def test_billing_rows_and_problems_carry_the_line_they_start_on(rows, currency, bad) -> None:
    decimals = ISO_CURRENCIES[currency]
    text = ",".join(_BILLING_COLUMNS) + "\n"
    expected: list[tuple[int, dict[str, str]]] = []
    for n, (region, size, requests, minor, merchant, ending, blanks) in enumerate(rows):
        text += ending * blanks
        amount = f"{Decimal(minor).scaleb(-decimals):f}"
        values = {
            "date": "2026-11-20",
            "region": region,
            "bytes": str(size),
            "requests": str(requests),
            "amount": amount,
            "currency": currency,
            "merchant": merchant,
        }
        if bad is not None and bad[0] % len(rows) == n:
            column, value = _CORRUPTIONS[bad[1]]
            if column is None:
                values.pop("requests")
            else:
                values[column] = value
        expected.append((physical_line_count(text) + 1, values))
        text += ",".join(values.values()) + ending
    reader = BillingReader(billing_lines(text.encode()), merchant="shop")
    parsed = list(reader)
    check_billing(reader, parsed, physical_line_count(text))
    if bad is None:
        assert reader.problems == []
        assert [(r.line, r.region, r.bytes, r.requests, r.amount, r.currency) for r in parsed] == [
            (line, row[0], row[1], row[2], row[3], currency)
            for (line, _), row in zip(expected, rows, strict=True)
        ]
    else:
        broken_line = expected[bad[0] % len(rows)][0]
        assert [problem.line for problem in reader.problems] == [broken_line], (reader.problems, text)
        assert broken_line not in {row.line for row in parsed}
        assert len(parsed) == len(rows) - 1


@FUZZ
@given(
    currency=st.sampled_from(sorted(ISO_CURRENCIES)),
    whole=st.integers(0, 10**15),
    fraction=st.text(st.sampled_from("0123456789"), max_size=30),
    zeros=st.integers(0, 30),
    plus=st.booleans(),
)
def test_billing_amounts_are_exact_and_rounded_half_up(currency, whole, fraction, zeros, plus) -> None:
    decimals = ISO_CURRENCIES[currency]
    written = ("+" if plus else "") + "0" * zeros + str(whole) + (f".{fraction}" if fraction else "")
    text = f"date,region,bytes,requests,amount,currency\n2026-11-20,EU,1,1,{written},{currency}\n"
    reader = BillingReader(billing_lines(text.encode()), merchant="shop")
    (row,) = list(reader)
    exact = Decimal(f"{whole}.{fraction or '0'}").scaleb(decimals)
    assert row.amount == int(exact.quantize(Decimal(1), rounding=ROUND_HALF_UP))


# ------------------------------------------------------------------------------------------------------
# Sign-In with Ethereum: no mismatch is ever accepted
# ------------------------------------------------------------------------------------------------------

DOMAIN = "edgeledger.test"
CHAIN_ID = 31337
WALLETS = [Account.from_key(bytes([n]) * 32) for n in (1, 2, 3)]
NOW = dt.datetime(2026, 12, 5, 12, 0, tzinfo=dt.UTC)
# mismatch -> the error codes that may refuse it (a generated domain EIP-4361 does not allow is refused
# as an invalid message)
MISMATCHES: dict[str, set[str]] = {
    "none": set(),
    "domain": {"siwe_domain_mismatch", "siwe_invalid_message"},
    "chain": {"siwe_chain_mismatch"},
    "nonce_unknown": {"siwe_nonce_unknown"},
    "nonce_used": {"siwe_nonce_replayed"},
    "nonce_expired": {"siwe_expired"},
    "expired": {"siwe_expired"},
    "not_yet_valid": {"siwe_not_yet_valid"},
    "address": {"siwe_bad_signature"},
    "other_text": {"siwe_bad_signature"},
}


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _message(
    address: str,
    nonce: str,
    domain: str,
    chain_id: int,
    expires: dt.datetime | None,
    not_before: dt.datetime | None,
) -> str:
    lines = [
        f"{domain} wants you to sign in with your Ethereum account:",
        address,
        "",
        "Sign in to EdgeLedger.",
        "",
        f"URI: https://{domain}/login",
        "Version: 1",
        f"Chain ID: {chain_id}",
        f"Nonce: {nonce}",
        f"Issued At: {_iso(NOW - dt.timedelta(minutes=1))}",
    ]
    if expires is not None:
        lines.append(f"Expiration Time: {_iso(expires)}")
    if not_before is not None:
        lines.append(f"Not Before: {_iso(not_before)}")
    return "\n".join(lines)


def _sign(wallet, message: str) -> str:  # type: ignore[no-untyped-def]
    return "0x" + bytes(wallet.sign_message(encode_defunct(text=message)).signature).hex()


@settings(
    FUZZ,
    max_examples=max(10, EXAMPLES // 2),
    suppress_health_check=[*FUZZ.suppress_health_check, HealthCheck.function_scoped_fixture],
)
@given(
    mismatch=st.sampled_from(sorted(MISMATCHES)),
    wallet=st.sampled_from(range(len(WALLETS))),
    other_domain=st.from_regex(r"[a-zA-Z0-9.-]{1,20}(:[0-9]{1,5})?", fullmatch=True).filter(
        lambda d: d != DOMAIN
    ),
    other_chain=st.integers(1, 2**63 - 1).filter(lambda c: c != CHAIN_ID),
    seconds=st.integers(0, 10**8),
    window=st.booleans(),
)
def test_siwe_never_accepts_a_mismatch(
    db_session: Session, mismatch, wallet, other_domain, other_chain, seconds, window
) -> None:
    signer = WALLETS[wallet]
    ttl = dt.timedelta(seconds=1 if mismatch == "nonce_expired" else 600)
    issued = auth_service.issue_nonce(db_session, ttl, now=NOW - dt.timedelta(seconds=30))
    nonce = "NeverIssuedByTheServer1" if mismatch == "nonce_unknown" else issued.nonce
    if mismatch == "nonce_used":
        db_session.get(SiweNonce, nonce).used_at = NOW - dt.timedelta(seconds=5)  # type: ignore[union-attr]
        db_session.commit()
    later, earlier = NOW + dt.timedelta(seconds=seconds + 1), NOW - dt.timedelta(seconds=seconds)
    message = _message(
        WALLETS[(wallet + 1) % len(WALLETS)].address if mismatch == "address" else signer.address,
        nonce,
        other_domain if mismatch == "domain" else DOMAIN,
        other_chain if mismatch == "chain" else CHAIN_ID,
        earlier if mismatch == "expired" else (later if window else None),
        later if mismatch == "not_yet_valid" else (earlier if window else None),
    )
    signed = message.replace("Sign in to", "Log in to") if mismatch == "other_text" else message
    check_siwe_text(message)
    try:
        user = auth_service.verify_siwe(
            db_session,
            message=message,
            signature=_sign(signer, signed),
            expected_domain=DOMAIN,
            expected_chain_id=CHAIN_ID,
            now=NOW,
        )
    except auth_service.AuthError as exc:
        assert exc.code in MISMATCHES[mismatch], (mismatch, exc.code, str(exc))
        stored = db_session.get(SiweNonce, issued.nonce, populate_existing=True)
        assert stored is not None and (stored.used_at is None) == (mismatch != "nonce_used"), mismatch
        return
    assert not MISMATCHES[mismatch], f"{mismatch} accepted"
    assert user.address == signer.address
    assert db_session.get(SiweNonce, nonce, populate_existing=True).used_at is not None  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------------------------
# Coverage-guided: a short atheris run of every target
# ------------------------------------------------------------------------------------------------------


def test_a_short_coverage_guided_run_finds_nothing(tmp_path: Path) -> None:
    assert (PROJECT_ROOT / ".toolchain" / "atheris" / "atheris").is_dir(), (
        "scripts/bootstrap.sh installs atheris"
    )
    command = [sys.executable, "-m", "scripts.fuzz", "--seconds", str(SECONDS), "--artifacts", str(tmp_path)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROJECT_ROOT / "backend"), str(PROJECT_ROOT)])}
    done = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    report = done.stdout + done.stderr[-4000:]
    assert done.returncode == 0, report
    for target in TARGETS:
        found = re.search(rf"^{target}: (\d+) runs in \d+ s, cov (\d+) .*, no findings$", done.stdout, re.M)
        assert found and int(found.group(1)) > 0 and int(found.group(2)) > 0, report
