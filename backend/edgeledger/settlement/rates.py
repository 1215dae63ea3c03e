"""Rate cards, FX conversion and the one rounding primitive (largest remainder) of settlement.

All amounts are ``int`` minor units of a :class:`Currency`. Prices per GB use GB = 10**9 bytes and are
charged as ``floor(sum(bytes_in_tier * price_per_gb) / 10**9)`` once per (merchant, region, period): the
sub-minor-unit remainder is dropped in the merchant's favour, and because the floor is taken once over
the whole sum (not per receipt) the charge does not depend on how the bytes were split into receipts.
"""

from __future__ import annotations

import re
from collections.abc import Hashable, Iterable, Mapping, Sequence
from fractions import Fraction
from itertools import pairwise
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeledger.deliveries.regions import REGION_CODES
from edgeledger.settlement import SettlementError

GB = 10**9
BPS = 10_000
REQUESTS_PER_PRICE_UNIT = 10_000
INT64_MAX = 2**63 - 1
K = TypeVar("K", bound=Hashable)
_CODE = re.compile(r"^[A-Z][A-Z0-9]{2,9}$")
_DECIMAL = re.compile(r"^[0-9]+(\.[0-9]+)?$")
_WHOLE = re.compile(r"[0-9]+")  # ASCII digits: str.isdigit() also takes "²", which int() refuses


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


# ----------------------------------------------------------------------------------------------
# Rounding
# ----------------------------------------------------------------------------------------------


def largest_remainder(total: int, weights: Mapping[K, int]) -> dict[K, int]:
    """Split ``total`` over ``weights`` so the parts sum to exactly ``total`` (Hamilton's method).

    Each key first gets ``floor(total * w / sum(w))``; the units left over go one each to the keys with
    the largest remainders, ties broken by ascending key so the result never depends on input order.
    Keys with weight 0 get 0; with all weights 0 (or no keys) ``total`` must be 0.
    """
    if total < 0 or any(w < 0 for w in weights.values()):
        raise SettlementError(
            "largest remainder needs a non-negative total and weights", code="negative_amount"
        )
    weight_sum = sum(weights.values())
    if weight_sum == 0:
        if total:
            raise SettlementError(f"cannot split {total} over zero weights", code="nothing_to_split")
        return dict.fromkeys(weights, 0)
    shares: dict[K, int] = {}
    remainders: list[tuple[int, K]] = []
    for key, weight in weights.items():
        quotient, remainder = divmod(total * weight, weight_sum)
        shares[key] = quotient
        remainders.append((remainder, key))
    left = total - sum(shares.values())
    # Largest remainder first; among equals the smallest key (keys are str/tuples of str and int).
    remainders.sort(key=lambda item: (-item[0], item[1]))
    for _, key in remainders[:left]:
        shares[key] += 1
    return shares


def mul_floor(amount: int, numerator: int, denominator: int) -> int:
    """``floor(amount * numerator / denominator)`` in integers (amount and fraction non-negative)."""
    return amount * numerator // denominator


# ----------------------------------------------------------------------------------------------
# Currency and rate cards
# ----------------------------------------------------------------------------------------------


class Currency(_Frozen):
    """A currency and the exponent of its minor unit.

    ``code`` is an ISO 4217 code (or a token symbol such as USDC). ``decimals`` is the minor-unit exponent
    this card or token counts in; a rate card may count USD in 10**-6 (like USDC) so that sub-cent CDN
    prices are integers.
    """

    code: str
    decimals: int = Field(ge=0, le=18)

    @field_validator("code")
    @classmethod
    def _code_shape(cls, value: str) -> str:
        if not _CODE.match(value):
            raise ValueError(
                "currency code must be 3-10 upper-case letters or digits, starting with a letter"
            )
        return value


class Tier(_Frozen):
    """Price per GB for the bytes of a period up to ``up_to_bytes`` (cumulative; None = no upper bound)."""

    up_to_bytes: int | None = Field(default=None, gt=0)
    price_per_gb: int = Field(ge=0)


class RegionPrice(_Frozen):
    """CDN-style delivery price of one region: volume tiers and a price per 10,000 requests."""

    tiers: tuple[Tier, ...] = Field(min_length=1)
    price_per_10k_requests: int = Field(default=0, ge=0)

    @field_validator("tiers")
    @classmethod
    def _tiers_ascending(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        bounds = [t.up_to_bytes for t in tiers]
        if bounds[-1] is not None or any(b is None for b in bounds[:-1]):
            raise ValueError("only the last tier, and it must, have no upper bound")
        finite = [b for b in bounds[:-1] if b is not None]
        if finite != sorted(set(finite)):
            raise ValueError("tier bounds must strictly increase")
        return tiers

    def bytes_numerator(self, total_bytes: int) -> int:
        """``sum(bytes_in_tier * price_per_gb)``: the byte charge times 10**9, before the single floor."""
        numerator, lower = 0, 0
        for tier in self.tiers:
            upper = total_bytes if tier.up_to_bytes is None else min(total_bytes, tier.up_to_bytes)
            if upper > lower:
                numerator += (upper - lower) * tier.price_per_gb
                lower = upper
        return numerator

    def fee(self, total_bytes: int, total_requests: int) -> int:
        """Delivery fee of a period's bytes and requests in this region (each part floored once)."""
        byte_fee = self.bytes_numerator(total_bytes) // GB
        request_fee = total_requests * self.price_per_10k_requests // REQUESTS_PER_PRICE_UNIT
        return byte_fee + request_fee


class Royalty(_Frozen):
    """Licence royalty of an asset: ``amount`` minor units per delivery (request) or per GB."""

    mode: Literal["per_delivery", "per_gb"]
    amount: int = Field(ge=0)

    def charge(self, requests: int, total_bytes: int) -> int:
        if self.mode == "per_delivery":
            return requests * self.amount
        return total_bytes * self.amount // GB


class RateCard(_Frozen):
    """One version of a merchant's rate card, valid for ``valid_from <= t < valid_until`` (unix seconds)."""

    merchant: str = Field(min_length=1)
    version: int = Field(ge=1)
    valid_from: int = Field(ge=0)
    valid_until: int | None = None
    currency: Currency
    delivery: Mapping[str, RegionPrice]
    default_royalty: Royalty
    asset_royalties: Mapping[str, Royalty] = Field(default_factory=dict)
    platform_fee_bps: int = Field(ge=0, le=BPS)
    operator_share_bps: int = Field(ge=0, le=BPS)
    derivative_share_bps: int = Field(ge=0, le=BPS)

    @field_validator("delivery")
    @classmethod
    def _known_regions(cls, delivery: Mapping[str, RegionPrice]) -> Mapping[str, RegionPrice]:
        unknown = sorted(set(delivery) - set(REGION_CODES))
        if unknown:
            raise ValueError(f"unknown pricing region(s): {', '.join(unknown)}")
        return delivery

    @model_validator(mode="after")
    def _window(self) -> RateCard:
        if self.valid_until is not None and self.valid_until <= self.valid_from:
            raise ValueError("valid_until must be after valid_from")
        return self

    def covers(self, start: int, end: int | None = None) -> bool:
        """Whether this version is valid at ``start`` and (if given) through ``end`` (exclusive)."""
        if start < self.valid_from:
            return False
        until = self.valid_until
        if until is None:
            return True
        return start < until and (end is None or end <= until)

    def region_price(self, region: str) -> RegionPrice:
        try:
            return self.delivery[region]
        except KeyError:
            raise SettlementError(
                f"rate card {self.merchant} v{self.version} has no delivery price for region {region}",
                code="region_not_priced",
                region=region,
            ) from None

    def royalty_for(self, asset_id: str) -> Royalty:
        return self.asset_royalties.get(asset_id, self.default_royalty)


def check_versions(cards: Iterable[RateCard]) -> None:
    """Reject overlapping validity windows and duplicate version numbers of one merchant."""
    by_merchant: dict[str, list[RateCard]] = {}
    for card in cards:
        by_merchant.setdefault(card.merchant, []).append(card)
    for merchant, versions in by_merchant.items():
        numbers = [c.version for c in versions]
        if len(numbers) != len(set(numbers)):
            raise SettlementError(f"rate card versions of {merchant} repeat", code="rate_card_version")
        ordered = sorted(versions, key=lambda c: c.valid_from)
        for earlier, later in pairwise(ordered):
            if earlier.valid_until is None or earlier.valid_until > later.valid_from:
                raise SettlementError(
                    f"rate card versions {earlier.version} and {later.version} of {merchant} overlap",
                    code="rate_card_overlap",
                    merchant=merchant,
                    versions=[earlier.version, later.version],
                )


def card_at(cards: Sequence[RateCard], merchant: str, start: int, end: int | None = None) -> RateCard:
    """The merchant's version valid at ``start`` (and through ``end`` when given); checks for overlaps."""
    check_versions(cards)
    for card in cards:
        if card.merchant == merchant and card.covers(start, end):
            return card
    raise SettlementError(
        f"no rate card of {merchant} valid from {start}" + (f" to {end}" if end is not None else ""),
        code="rate_card_missing",
        merchant=merchant,
        at=start,
    )


# ----------------------------------------------------------------------------------------------
# FX
# ----------------------------------------------------------------------------------------------


#: The FX rates the table accepts (major units of the quote per major unit of the base).
FX_RATE_MIN, FX_RATE_MAX = Fraction(1, 10**12), Fraction(10**12)


def parse_rate(text: str) -> tuple[int, int]:
    """A decimal string such as ``"1.0842"`` (or ``"27/25"``) as a reduced (numerator, denominator)."""
    value = text.strip()
    if "/" in value:
        top, _, bottom = value.partition("/")
        if not (_WHOLE.fullmatch(top.strip()) and _WHOLE.fullmatch(bottom.strip())):
            raise SettlementError(f"bad FX rate {text!r}", code="fx_rate_invalid")
        fraction = Fraction(int(top), int(bottom)) if int(bottom) else Fraction(0)
    elif _DECIMAL.match(value):
        fraction = Fraction(value)  # exact: Fraction parses the decimal string, no float involved
    else:
        raise SettlementError(f"bad FX rate {text!r}", code="fx_rate_invalid")
    if fraction <= 0:
        raise SettlementError(f"FX rate must be positive: {text!r}", code="fx_rate_invalid")
    if not FX_RATE_MIN <= fraction <= FX_RATE_MAX:
        # Far beyond traded pairs (1 BTC is about 2.5 * 10^9 VND): a typo, which would zero or inflate
        # every charge converted with it.
        raise SettlementError(
            f"FX rate {text!r} is outside 10^-12 .. 10^12: check the pair's direction and digits",
            code="fx_rate_out_of_range",
        )
    return fraction.numerator, fraction.denominator


class FxRate(_Frozen):
    """``1 base = numerator/denominator quote`` in major units, published by ``source`` at ``timestamp``."""

    source: str = Field(min_length=1)
    timestamp: int = Field(ge=0)
    base: str
    quote: str
    numerator: int = Field(gt=0)
    denominator: int = Field(gt=0)

    @classmethod
    def of(cls, source: str, timestamp: int, base: str, quote: str, rate: str) -> FxRate:
        numerator, denominator = parse_rate(rate)
        return cls(
            source=source,
            timestamp=timestamp,
            base=base,
            quote=quote,
            numerator=numerator,
            denominator=denominator,
        )


class FxSnapshot(_Frozen):
    """The rate a conversion used, recorded in the statement so anyone can redo the conversion."""

    source: str
    timestamp: int
    base: str
    quote: str
    numerator: int
    denominator: int
    inverted: bool


class FxTable(_Frozen):
    """A configurable table of FX rates; the rate used is the newest with ``timestamp <= at``."""

    rates: tuple[FxRate, ...] = ()

    def snapshot(self, base: str, quote: str, at: int) -> FxSnapshot:
        best: FxRate | None = None
        for rate in self.rates:
            if rate.timestamp > at or {rate.base, rate.quote} != {base, quote}:
                continue
            # Newest first; at equal timestamps the direct pair, then the source name, decides.
            rank = (rate.timestamp, rate.base == base, rate.source)
            if best is None or rank > (best.timestamp, best.base == base, best.source):
                best = rate
        if best is None:
            raise SettlementError(
                f"no FX rate {base}->{quote} at or before {at}",
                code="fx_rate_missing",
                base=base,
                quote=quote,
            )
        inverted = best.base != base
        return FxSnapshot(
            source=best.source,
            timestamp=best.timestamp,
            base=base,
            quote=quote,
            numerator=best.denominator if inverted else best.numerator,
            denominator=best.numerator if inverted else best.denominator,
            inverted=inverted,
        )

    def convert(
        self, amount: int, source: Currency, target: Currency, at: int
    ) -> tuple[int, FxSnapshot | None]:
        """``amount`` minor units of ``source`` in minor units of ``target``, rounded down (floor).

        ``target_minor = floor(amount * n * 10**target.decimals / (d * 10**source.decimals))`` for the rate
        ``n/d``. Same code: only the decimals are rescaled (still floored) and no snapshot is returned.
        """
        if amount < 0:
            raise SettlementError("cannot convert a negative amount", code="negative_amount")
        if source.code == target.code:
            return mul_floor(amount, 10**target.decimals, 10**source.decimals), None
        snap = self.snapshot(source.code, target.code, at)
        converted = mul_floor(
            amount, snap.numerator * 10**target.decimals, snap.denominator * 10**source.decimals
        )
        return converted, snap
