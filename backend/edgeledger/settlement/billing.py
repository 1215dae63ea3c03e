"""CDN billing / usage report import (streamed, errors collected with line numbers) and reconciliation.

Two CSV layouts are accepted (docs/settlement.md lists the columns): EdgeLedger's own
``date,region,bytes,requests,amount|amount_minor,currency[,merchant]`` and the CloudFront usage report
``Service,Operation,UsageType,Resource,StartTime,EndTime,UsageValue``. Both become :class:`BillingRow`s
keyed by (merchant, region, day), which :func:`reconcile` compares with the anchored receipts.

Hostile files are expected (``tests/backend/test_input_fuzz.py`` fuzzes this module): nothing a file holds
makes the reader raise; every problem is collected with the physical line its row starts on (lines end at
LF, CR LF or CR only: :func:`billing_lines`), numbers are ASCII digits of at most 64 bits before any
``int()`` sees them, and a CSV the ``csv`` module cannot read (a field over its size limit) is one problem
at the line where reading stopped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from edgeledger.deliveries.regions import REGION_CODES
from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import Receipt
from edgeledger.settlement.rates import (
    BPS,
    INT64_MAX,
    Currency,
    FxSnapshot,
    FxTable,
    RateCard,
    largest_remainder,
)

#: (merchant, pricing region, UTC day ``YYYY-MM-DD``)
UsageKey = tuple[str, str, str]

#: ISO 4217 currencies a billing file may use, with their minor-unit exponents.
ISO_CURRENCIES: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "JPY": 0, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "INR": 2, "BRL": 2,
    "ZAR": 2, "SGD": 2, "HKD": 2, "CNY": 2, "KRW": 0, "SEK": 2, "NOK": 2, "DKK": 2, "MXN": 2, "PLN": 2,
}  # fmt: skip
#: CloudFront's two-letter location prefixes that are not our region codes (US and CA are our NA, ZA is
#: in our AF); AP AU EU IN JP ME SA are the same.
CLOUDFRONT_REGIONS: dict[str, str] = {"US": "NA", "CA": "NA", "ZA": "AF"}
OWN_COLUMNS = ("date", "region", "bytes", "requests", "currency")
CLOUDFRONT_COLUMNS = ("service", "operation", "usagetype", "resource", "starttime", "endtime", "usagevalue")
# ASCII digits only: ``\d`` would also take other scripts' digits, which int() and strptime accept.
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INT = re.compile(r"([+-]?)([0-9]+)(?:\.0*)?")
_AMOUNT = re.compile(r"([+-]?)([0-9]+)(?:\.([0-9]+))?")
#: Digits of INT64_MAX: a longer number (leading zeros aside) does not fit, whatever its digits.
_INT64_DIGITS = len(str(INT64_MAX))
_TIME_FORMATS = (
    "%m/%d/%y %H:%M:%S",
    "%m/%d/%Y %H:%M:%S",
    "%Y-%m-%dT%H:%M:%SZ",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d",
)


@dataclass(frozen=True)
class BillingRow:
    line: int
    merchant: str
    region: str
    day: str
    bytes: int
    requests: int
    #: minor units of ``currency``; None when the report has no amounts (the CloudFront usage report)
    amount: int | None
    currency: str | None


@dataclass(frozen=True)
class BillingProblem:
    """A bad line: its number, the problem in English, and the same as a code with the values it names
    (``code`` and ``values`` let a client word it in its own language; docs/settlement.md lists them)."""

    line: int
    problem: str
    code: str = "invalid_row"
    values: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Usage:
    bytes: int = 0
    requests: int = 0
    amount: int | None = None
    currency: str | None = None


class _RowError(ValueError):
    """One row's problem: ``code`` and ``values`` for :class:`BillingProblem`, the English text as message."""

    def __init__(self, code: str, message: str, **values: str) -> None:
        super().__init__(message)
        self.code = code
        self.values = values


def _int64(text: str, what: str) -> int:
    value = text.strip()
    match = _INT.fullmatch(value)
    if not match:
        raise _RowError(
            "not_an_integer", f"{what} {text[:40]!r} is not an integer", field=what, value=text[:40]
        )
    digits = match.group(2).lstrip("0")
    if match.group(1) == "-" and digits:
        raise _RowError("negative", f"{what} {value[:40]} is negative", field=what, value=value[:40])
    if len(digits) > _INT64_DIGITS or int(digits or "0") > INT64_MAX:
        raise _RowError(
            "too_large",
            f"{what} {value[:40]} does not fit in a signed 64-bit integer",
            field=what,
            value=value[:40],
        )
    return int(digits or "0")


def amount_to_minor(text: str, decimals: int, what: str = "amount") -> int:
    """A decimal amount in major units as minor units: exact, or rounded half up past ``decimals``."""
    value = text.strip()
    match = _AMOUNT.fullmatch(value)
    if not match:
        raise _RowError(
            "not_a_decimal", f"{what} {value[:40]!r} is not a decimal number", field=what, value=value[:40]
        )
    sign, whole, fraction = match.group(1), match.group(2).lstrip("0"), match.group(3) or ""
    if sign == "-" and (whole + fraction).strip("0"):
        raise _RowError("negative", f"{what} {value[:40]} is negative", field=what, value=value[:40])
    if len(whole) + decimals > _INT64_DIGITS:
        raise _RowError(
            "too_large",
            f"{what} {value[:40]} does not fit in a signed 64-bit integer",
            field=what,
            value=value[:40],
        )
    # Rounding half up past ``decimals`` depends on the first dropped digit only.
    fraction = fraction[: decimals + 1]
    scaled = int(whole + fraction or "0")
    extra = len(fraction) - decimals
    minor = scaled * 10**-extra if extra <= 0 else (scaled + 5 * 10 ** (extra - 1)) // 10**extra
    if minor > INT64_MAX:
        raise _RowError(
            "too_large",
            f"{what} {value[:40]} does not fit in a signed 64-bit integer",
            field=what,
            value=value[:40],
        )
    return minor


def billing_region(code: str) -> str:
    value = code.strip().upper()
    region = CLOUDFRONT_REGIONS.get(value, value)
    if region not in REGION_CODES:
        raise _RowError("unknown_region", f"unknown region {code.strip()[:20]!r}", value=code.strip()[:20])
    return region


def _day_of(text: str) -> str:
    value = text.strip()
    for fmt in _TIME_FORMATS:
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=UTC).date().isoformat()
        except ValueError:
            continue
    raise _RowError(
        "bad_time", f"time {value[:40]!r} is not a date or time in a known format", value=value[:40]
    )


def billing_lines(data: bytes) -> io.StringIO:
    """The lines of an uploaded billing file for :class:`BillingReader`: UTF-8 (a BOM dropped), ended by
    LF, CR LF or CR only, as an editor counts them (``str.splitlines`` would also end a line at U+2028,
    form feeds and other separators inside a field, and shift every later line number).

    Raises :class:`UnicodeDecodeError` for bytes that are not UTF-8."""
    return io.StringIO(data.decode("utf-8-sig"), newline="")


@dataclass
class BillingReader:
    """Iterate the rows of one billing CSV; problems are collected in ``problems`` (with line numbers).

    ``merchant`` is used for rows without a merchant column (a CDN report covers one account).
    ``cloudfront_bytes_unit`` says whether a CloudFront report's byte UsageValues are bytes (integers) or
    GB (decimals, converted to bytes exactly and rounded half up to a byte). Only the
    first ``max_problems`` problems are kept; ``problem_count`` counts them all. ``ignored`` counts
    CloudFront usage lines that are not viewer bytes or requests (invalidations, origin bytes, ...).
    """

    lines: Iterable[str]
    merchant: str
    currencies: Mapping[str, int] = field(default_factory=lambda: ISO_CURRENCIES)
    max_problems: int = 1000
    cloudfront_bytes_unit: Literal["bytes", "GB"] = "bytes"
    problems: list[BillingProblem] = field(default_factory=list)
    problem_count: int = 0
    ignored: int = 0
    layout: str = ""
    _currency: str | None = None

    def _problem(self, line: int, message: str, code: str = "invalid_row", **values: str) -> None:
        self.problem_count += 1
        if len(self.problems) < self.max_problems:
            self.problems.append(BillingProblem(line, message, code, values))

    def __iter__(self) -> Iterator[BillingRow]:
        reader = csv.reader(self.lines)
        header: list[str] | None = None
        while True:
            # A row is numbered by the physical line it starts on (a quoted field may span lines).
            line = reader.line_num + 1
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:  # e.g. a field over csv.field_size_limit(): the rest is unreadable
                self._problem(line, f"unreadable CSV: {exc}", "unreadable_csv")
                return
            if not fields or all(not f.strip() for f in fields):
                continue
            if header is None:
                header = [f.strip().lstrip("\ufeff").lower() for f in fields]
                if not self._choose_layout(line, header):
                    return
                continue
            if len(fields) != len(header):
                self._problem(
                    line,
                    f"expected {len(header)} fields, found {len(fields)}",
                    "field_count",
                    expected=str(len(header)),
                    found=str(len(fields)),
                )
                continue
            row = dict(zip(header, fields, strict=True))
            try:
                parsed = self._own(line, row) if self.layout == "own" else self._cloudfront(line, row)
            except _RowError as exc:
                self._problem(line, str(exc), exc.code, **exc.values)
                continue
            if parsed is not None:
                yield parsed
        if header is None:
            self._problem(0, "empty file: no header line", "empty_file")

    def _choose_layout(self, line: int, header: list[str]) -> bool:
        if all(c in header for c in CLOUDFRONT_COLUMNS):
            self.layout = "cloudfront"
            return True
        missing = [c for c in OWN_COLUMNS if c not in header]
        if "amount" not in header and "amount_minor" not in header:
            missing.append("amount")
        if missing:
            self._problem(
                line,
                f"header lacks column(s): {', '.join(missing)}",
                "missing_columns",
                columns=", ".join(missing),
            )
            return False
        self.layout = "own"
        return True

    def _own(self, line: int, row: dict[str, str]) -> BillingRow:
        day = row["date"].strip()
        if not _DATE.fullmatch(day):
            raise _RowError("bad_date", f"date {day[:40]!r} is not YYYY-MM-DD", value=day[:40])
        _day_of(day)  # a real calendar date
        currency = row["currency"].strip().upper()
        if currency not in self.currencies:
            raise _RowError(
                "unknown_currency",
                f"unknown currency {row['currency'].strip()[:20]!r}",
                value=row["currency"].strip()[:20],
            )
        if self._currency is not None and currency != self._currency:
            raise _RowError(
                "mixed_currency",
                f"currency {currency} differs from the file's {self._currency}",
                value=currency,
                expected=self._currency,
            )
        if row.get("amount_minor", "").strip():
            amount = _int64(row["amount_minor"], "amount_minor")
        else:
            amount = amount_to_minor(row.get("amount", ""), self.currencies[currency])
        merchant = row.get("merchant", "").strip() or self.merchant
        result = BillingRow(
            line=line,
            merchant=merchant,
            region=billing_region(row["region"]),
            day=day,
            bytes=_int64(row["bytes"], "bytes"),
            requests=_int64(row["requests"], "requests"),
            amount=amount,
            currency=currency,
        )
        self._currency = currency
        return result

    def _cloudfront(self, line: int, row: dict[str, str]) -> BillingRow | None:
        usage_type = row["usagetype"].strip()
        prefix, _, kind = usage_type.partition("-")
        # Viewer bytes are <region>-Out-Bytes-*, viewer requests <region>-Requests-*; the rest (origin
        # bytes "Out-OBytes", invalidations, functions) is not delivery and is not reconciled.
        is_bytes = kind.startswith("Out-Bytes") or kind == "DataTransfer-Out-Bytes"
        is_requests = kind.startswith("Requests")
        if row["service"].strip() != "AmazonCloudFront" or not (is_bytes or is_requests):
            self.ignored += 1
            return None
        if is_bytes and self.cloudfront_bytes_unit == "GB":
            value = amount_to_minor(row["usagevalue"], 9, "UsageValue")
        else:
            value = _int64(row["usagevalue"], "UsageValue")
        return BillingRow(
            line=line,
            merchant=self.merchant,
            region=billing_region(prefix),
            day=_day_of(row["starttime"]),
            bytes=value if is_bytes else 0,
            requests=value if is_requests else 0,
            amount=None,
            currency=None,
        )


def aggregate_billing(rows: Iterable[BillingRow]) -> dict[UsageKey, Usage]:
    """Sum billing rows per (merchant, region, day); amounts stay None if the report had none."""
    totals: dict[UsageKey, Usage] = {}
    for row in rows:
        key = (row.merchant, row.region, row.day)
        seen = totals.get(key, Usage(currency=row.currency))
        amount = None if row.amount is None else (seen.amount or 0) + row.amount
        totals[key] = Usage(seen.bytes + row.bytes, seen.requests + row.requests, amount, row.currency)
    return dict(sorted(totals.items()))


def utc_day(at: int) -> str:
    return datetime.fromtimestamp(at, UTC).date().isoformat()


def usage_from_receipts(receipts: Iterable[Receipt], card: RateCard) -> dict[UsageKey, Usage]:
    """Receipts of ``card``'s merchant per (merchant, region, day), with the amount the card charges.

    The delivery fee is computed once per region over the whole set (so volume tiers apply as on the
    bill), then shared over the days by bytes with largest remainder (by requests if there are no bytes).
    """
    per_day: dict[str, dict[str, list[int]]] = {}
    for receipt in receipts:
        if receipt.merchant != card.merchant:
            raise SettlementError(f"receipt {receipt.key} is not {card.merchant}'s", code="receipt_foreign")
        counts = per_day.setdefault(receipt.region, {}).setdefault(utc_day(receipt.at), [0, 0])
        counts[0] += receipt.bytes
        counts[1] += receipt.requests
    usage: dict[UsageKey, Usage] = {}
    for region, days in sorted(per_day.items()):
        fee = card.region_price(region).fee(
            sum(c[0] for c in days.values()), sum(c[1] for c in days.values())
        )
        weights = {day: c[0] for day, c in days.items()}
        if not sum(weights.values()):
            weights = {day: c[1] for day, c in days.items()}
        shares = largest_remainder(fee, weights) if fee else dict.fromkeys(days, 0)
        for day, (total_bytes, requests) in sorted(days.items()):
            usage[card.merchant, region, day] = Usage(total_bytes, requests, shares[day], card.currency.code)
    return usage


@dataclass(frozen=True)
class Delta:
    """Billing minus receipts for one (merchant, region, day); ``flagged`` when beyond the tolerance.
    ``theirs`` keeps the bill's minor units; ``amount`` is the difference in the rate card's."""

    key: UsageKey
    ours: Usage
    theirs: Usage
    bytes: int
    requests: int
    amount: int | None
    flagged: bool
    reasons: tuple[str, ...]
    #: a bill in another currency than the card's: its amount in the card's minor units, and the rate
    #: that converted it (None when not converted)
    theirs_converted: int | None = None
    fx: FxSnapshot | None = None


def beyond_tolerance(ours: int, theirs: int, tolerance_bps: int) -> bool:
    """``|theirs - ours| / ours > tolerance_bps / 10,000`` in integers; with ours == 0 any difference."""
    return abs(theirs - ours) * BPS > tolerance_bps * ours


def rescale_minor(amount: int, decimals: int, to_decimals: int) -> int:
    """``amount`` minor units of a currency counted in ``decimals`` as minor units counted in
    ``to_decimals``: exact when the target is finer, rounded half up when it is coarser."""
    if to_decimals >= decimals:
        return amount * 10 ** (to_decimals - decimals)
    unit = 10 ** (decimals - to_decimals)
    return (amount + unit // 2) // unit


def reconcile(
    ours: Mapping[UsageKey, Usage],
    theirs: Mapping[UsageKey, Usage],
    tolerance_bps: int,
    *,
    ours_decimals: int,
    bill_decimals: Mapping[str, int] = ISO_CURRENCIES,
    fx: FxTable | None = None,
    at: int = 0,
    ours_currency: str | None = None,
) -> tuple[Delta, ...]:
    """Deltas of bytes, requests and amount for every key on either side, sorted by key.

    A key missing on one side counts as zero usage there. Amounts are compared only when the billing
    side has them. Our amounts count the rate card's minor units (``ours_decimals``: a card may count USD
    in 10^-6), the bill's the currency's own (``bill_decimals``: cents for USD): they are compared at the
    coarser of the two, the finer side rounded half up to it (a bill in cents cannot differ from us by
    less than a cent), and ``Delta.amount`` is in the card's minor units. A bill in another currency than
    the card's (a USD bill, a card in a stablecoin) is converted to the card's currency with the FX table's
    rate at ``at`` (the period's end, as the statement converts), floored like every conversion; without a
    rate the key is flagged ``currency`` (the amounts cannot be compared). Converted amounts are compared
    in the card's units, a difference within the converted size of one of the bill's minor units being
    none (a bill in yen says nothing below a yen). ``ours_currency`` is the card's currency code, for
    keys only the bill has.
    """
    if tolerance_bps < 0:
        raise SettlementError("tolerance must not be negative", code="tolerance_invalid")
    deltas: list[Delta] = []
    for key in sorted(set(ours) | set(theirs)):
        mine, bill = ours.get(key, Usage(amount=0)), theirs.get(key, Usage())
        reasons: list[str] = []
        if beyond_tolerance(mine.bytes, bill.bytes, tolerance_bps):
            reasons.append("bytes")
        if beyond_tolerance(mine.requests, bill.requests, tolerance_bps):
            reasons.append("requests")
        amount_delta: int | None = None
        converted: tuple[int, FxSnapshot | None] | None = None
        if bill.amount is not None:
            places = bill_decimals.get(bill.currency or "", ours_decimals)
            card = mine.currency or ours_currency
            if card is not None and bill.currency != card:
                # Converted, the bill still says nothing finer than one of its own minor units: a
                # difference within that unit's converted size is no difference.
                converted = _converted(fx, bill.amount, bill.currency or "", places, card, ours_decimals, at)
                unit = _converted(fx, 1, bill.currency or "", places, card, ours_decimals, at)
                if converted is None or unit is None:
                    reasons.append("currency")
                else:
                    billed, unit = converted[0], unit[0]
                    amount_delta = billed - (mine.amount or 0)
                    if abs(amount_delta) > unit + 1 and beyond_tolerance(
                        mine.amount or 0, billed, tolerance_bps
                    ):
                        reasons.append("amount")
            else:
                coarse = min(places, ours_decimals)
                billed = rescale_minor(bill.amount, places, ours_decimals)
                amount_delta = billed - (mine.amount or 0)
                if beyond_tolerance(
                    rescale_minor(mine.amount or 0, ours_decimals, coarse),
                    rescale_minor(billed, ours_decimals, coarse),
                    tolerance_bps,
                ):
                    reasons.append("amount")
        deltas.append(
            Delta(
                key=key,
                ours=mine,
                theirs=bill,
                bytes=bill.bytes - mine.bytes,
                requests=bill.requests - mine.requests,
                amount=amount_delta,
                flagged=bool(reasons),
                theirs_converted=converted[0] if converted is not None else None,
                fx=converted[1] if converted is not None else None,
                reasons=tuple(reasons),
            )
        )
    return tuple(deltas)


def _converted(
    fx: FxTable | None, amount: int, code: str, places: int, ours: str, ours_decimals: int, at: int
) -> tuple[int, FxSnapshot | None] | None:
    """A bill's ``amount`` (minor units of ``code``, ``places`` decimals) in the card's minor units at
    ``at``, and the rate used; None without a rate."""
    if fx is None:
        return None
    try:
        return fx.convert(
            amount, Currency(code=code, decimals=places), Currency(code=ours, decimals=ours_decimals), at
        )
    except SettlementError:
        return None
