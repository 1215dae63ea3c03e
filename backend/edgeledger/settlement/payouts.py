"""Deterministic payout computation of one merchant's period: :func:`compute_payouts`.

The result depends only on the inputs as sets (receipts, assets, decisions are aggregated into sorted
dictionaries before any arithmetic), every amount is an ``int``, and payees plus held-back amounts sum to
exactly what the merchant is charged. See docs/settlement.md for the formulas.

Fraud-flagged records are excluded before this point: the caller passes only receipts built from
records that were anchored and not excluded, so nothing here looks at fraud signals.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from edgeledger.deliveries.regions import REGION_CODES, REGIONS, UNKNOWN_REGION, region_of
from edgeledger.ledger.merkle import gc_paused
from edgeledger.settlement import SettlementError
from edgeledger.settlement.rates import (
    BPS,
    INT64_MAX,
    Currency,
    FxSnapshot,
    FxTable,
    RateCard,
    card_at,
    largest_remainder,
)
from edgeledger.territories import ALL_TERRITORIES_BITMAP, TERRITORY_CODES

_TERRITORY_BIT = {code: 1 << i for i, code in enumerate(TERRITORY_CODES)}
# Bitmap of every country of a pricing region: a receipt that only says its region is licensed when the
# licence covers the whole region (we cannot show that its deliveries stayed in the licensed part).
_REGION_BITMAP: dict[str, int] = {region: 0 for region in REGION_CODES}
for _country, _region in REGIONS.items():
    _REGION_BITMAP[_region] |= _TERRITORY_BIT[_country]
_REGION_BITMAP[UNKNOWN_REGION] = ALL_TERRITORIES_BITMAP
_REGION_SET = frozenset(REGION_CODES)
_REGION_OF = REGIONS.get  # upper-case codes; region_of also takes other spellings

#: Field order of the rows :meth:`Receipt.from_rows` takes (the order of ``Receipt``'s fields).
RECEIPT_ROW = (
    "key",
    "asset_id",
    "merchant",
    "region",
    "country",
    "period",
    "at",
    "operator",
    "requests",
    "bytes",
)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


M = TypeVar("M", bound=_Frozen)
_new = object.__new__
_set = object.__setattr__
# One fields-set object per model class, shared by the instances built with _trusted. Pydantic copies an
# instance's fields set before changing it (model_copy) and a frozen model never changes it in place, so
# sharing is safe; a set of ten names per instance is 728 bytes, more than the rest of a Receipt.
_FIELDS_SET: dict[type[BaseModel], set[str]] = {}


def _trusted(cls: type[M], values: dict[str, Any]) -> M:
    """An instance from values known to be valid, without pydantic's validation (as ``model_construct``,
    with every field set and one shared fields set): for values checked in plain Python or computed here
    from validated inputs."""
    fields = _FIELDS_SET.get(cls)
    if fields is None:
        fields = _FIELDS_SET[cls] = set(cls.model_fields)
    model = _new(cls)
    _set(model, "__dict__", values)
    _set(model, "__pydantic_fields_set__", fields)
    _set(model, "__pydantic_extra__", None)
    _set(model, "__pydantic_private__", None)
    return model


def _pricing_region(value: str) -> str:
    if value not in REGION_CODES:
        raise ValueError(f"unknown pricing region {value!r}")
    return value


#: A pricing region code (``edgeledger.deliveries.regions``).
PricingRegion = Annotated[str, AfterValidator(_pricing_region)]


class Receipt(_Frozen):
    """Anchored, non-excluded deliveries of one asset, aggregated per (operator, region[, country], period).

    ``key`` names the receipt (e.g. ``"<batch id>:<leaf index>"``) so statement lines link back to the
    receipts and proofs behind them. ``at`` is the delivery time checked against the licence window and
    the day used by reconciliation. ``country`` is optional: when given the licence is checked per
    country, otherwise per region (see :data:`_REGION_BITMAP`).
    """

    key: str = Field(min_length=1)
    asset_id: str = Field(min_length=1)
    merchant: str = Field(min_length=1)
    region: PricingRegion
    country: str = ""
    period: int = Field(ge=0)
    at: int = Field(ge=0)
    operator: str = Field(min_length=1)
    requests: int = Field(ge=0, le=INT64_MAX)
    bytes: int = Field(ge=0, le=INT64_MAX)

    @model_validator(mode="after")
    def _country_in_region(self) -> Receipt:
        if self.country and region_of(self.country) != self.region:
            raise ValueError(f"country {self.country} is not in region {self.region}")
        return self

    @classmethod
    def from_rows(cls, rows: Iterable[Sequence[Any]]) -> list[Receipt]:
        """Receipts from rows of values in :data:`RECEIPT_ROW` order: the receipts
        ``Receipt(**dict(zip(RECEIPT_ROW, row)))`` gives, for a fraction of the time and memory.

        Each row gets the model's checks in plain Python (exact ``str``/``int`` types, non-empty strings,
        bounds, a known region, the country inside it); a row that does not pass them goes through the
        model's own validation, which raises pydantic's ``ValidationError`` for it. The receipts share one
        fields-set object (every field counts as set) and one object per distinct asset id, merchant,
        region, country, operator and period, as rows from a database bring a fresh copy of each.
        """
        shared: dict[str, str] = {}
        share = shared.setdefault
        periods: dict[int, int] = {}
        share_int = periods.setdefault
        fields = _FIELDS_SET.get(cls)
        if fields is None:
            fields = _FIELDS_SET[cls] = set(cls.model_fields)
        receipts: list[Receipt] = []
        append = receipts.append
        with gc_paused():
            for row in rows:
                key, asset_id, merchant, region, country, period, at, operator, requests, nbytes = row
                if not (
                    type(key) is str
                    and key
                    and type(asset_id) is str
                    and asset_id
                    and type(merchant) is str
                    and merchant
                    and type(region) is str
                    and region in _REGION_SET
                    and type(country) is str
                    and (not country or _REGION_OF(country) == region or region_of(country) == region)
                    and type(period) is int
                    and period >= 0
                    and type(at) is int
                    and at >= 0
                    and type(operator) is str
                    and operator
                    and type(requests) is int
                    and 0 <= requests <= INT64_MAX
                    and type(nbytes) is int
                    and 0 <= nbytes <= INT64_MAX
                ):
                    append(cls(**dict(zip(RECEIPT_ROW, row, strict=True))))
                    continue
                receipt = _new(cls)
                _set(
                    receipt,
                    "__dict__",
                    {
                        "key": key,
                        "asset_id": share(asset_id, asset_id),
                        "merchant": share(merchant, merchant),
                        "region": share(region, region),
                        "country": share(country, country),
                        "period": share_int(period, period),
                        "at": at,
                        "operator": share(operator, operator),
                        "requests": requests,
                        "bytes": nbytes,
                    },
                )
                _set(receipt, "__pydantic_fields_set__", fields)
                _set(receipt, "__pydantic_extra__", None)
                _set(receipt, "__pydantic_private__", None)
                append(receipt)
        return receipts


class Recipient(_Frozen):
    address: str = Field(min_length=1)
    bps: int = Field(gt=0, le=BPS)


#: The asset id of deliveries of content not registered: they pay the delivery fee (operators and the
#: platform's margin), and no royalty.
UNREGISTERED = "0"


class AssetTerms(_Frozen):
    """What the chain says about an asset: split, lineage, licence territories and window, dispute; with
    (from document version 2) its status and rights holder as read at the inputs' ``terms_block``.

    The licence covers ``valid_from <= t <= valid_until`` (unix seconds, both ends included, as
    ``ContentRegistry.isLicensedFor`` judges them; ``valid_until = None`` is open-ended): :func:`licensed_at`.
    Documents before version 4 left ``valid_until`` itself out (``PayoutInputs.licence_end``).
    """

    asset_id: str = Field(min_length=1)
    recipients: tuple[Recipient, ...] = Field(min_length=1)
    parent: str | None = None
    territories: int = Field(default=ALL_TERRITORIES_BITMAP, ge=0, le=ALL_TERRITORIES_BITMAP)
    valid_from: int = Field(default=0, ge=0)
    valid_until: int | None = None
    disputed: bool = False
    holder: str | None = None
    status: Literal["active", "disputed", "taken_down"] | None = None

    @field_validator("recipients")
    @classmethod
    def _full_split(cls, recipients: tuple[Recipient, ...]) -> tuple[Recipient, ...]:
        if sum(r.bps for r in recipients) != BPS:
            raise ValueError("recipient shares must sum to 10,000 bps")
        return recipients

    @model_validator(mode="after")
    def _status_and_dispute_agree(self) -> AssetTerms:
        if self.status is not None and self.disputed != (self.status != "active"):
            raise ValueError(f"status {self.status} disagrees with disputed={self.disputed}")
        if self.asset_id == UNREGISTERED:
            raise ValueError("asset 0 means unregistered content: it has no terms")
        return self


class Decision(_Frozen):
    """A resolved reconciliation case of (merchant, region, day): accepted as is, or adjusted.

    ``adjustment`` (rate-card currency minor units, may be negative) is added to the region's delivery
    fee of the period.
    """

    merchant: str
    region: str
    #: UTC date ``YYYY-MM-DD`` of the reconciliation key
    day: str
    action: Literal["accept", "adjust"]
    adjustment: int = 0
    decided_by: str = Field(min_length=1)
    decided_at: int = Field(ge=0)
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _accept_has_no_adjustment(self) -> Decision:
        if self.action == "accept" and self.adjustment:
            raise ValueError("an accepted case carries no adjustment")
        return self


class PriorUsage(_Frozen):
    """What the period's other live settlements (the period or its new attempt, its corrections) counted
    and charged in one region: this settlement's delivery fee there is what the region's whole usage costs
    less what they charged (``compute_payouts``), so the volume tiers go on where they stopped."""

    region: PricingRegion
    bytes: int = Field(ge=0)
    requests: int = Field(ge=0)
    #: their delivery fees in the region, in the card's minor units, before any bill adjustment
    fee: int = Field(ge=0)


class PayoutInputs(_Frozen):
    merchant: str = Field(min_length=1)
    period_start: int = Field(ge=0)
    period_end: int
    receipts: tuple[Receipt, ...]
    assets: tuple[AssetTerms, ...]
    cards: tuple[RateCard, ...]
    platform: str = Field(min_length=1)
    settlement_currency: Currency
    fx: FxTable = FxTable()
    decisions: tuple[Decision, ...] = ()
    #: (region, day) cases reconciliation flagged for this merchant; each needs a decision.
    flagged: tuple[tuple[str, str], ...] = ()
    #: the block the assets' terms were read at (settlement/terms.py); None in version 1 documents
    terms_block: int | None = Field(default=None, ge=0)
    #: what the period's other live settlements counted and charged, per region (version 3)
    prior_usage: tuple[PriorUsage, ...] = ()
    #: whether a licence's ``valid_until`` second is licensed: ``inclusive`` from version 4, as the
    #: registry's ``isLicensedFor`` judges it (the worker always says so); ``exclusive`` in earlier
    #: documents, which recompute as they were computed
    licence_end: Literal["exclusive", "inclusive"] = "exclusive"

    @field_validator("prior_usage")
    @classmethod
    def _one_per_region(cls, usage: tuple[PriorUsage, ...]) -> tuple[PriorUsage, ...]:
        regions = [u.region for u in usage]
        if regions != sorted(set(regions)):
            raise ValueError("prior usage lists each region once, in order")
        return usage


#: Version of the published settlement inputs document (``GET /settlement/settlements/{id}/inputs``).
#: 2: terms read from the chain at ``terms_block`` (with each asset's status and holder); receipts of
#: unregistered content (asset ``"0"``) pay the delivery fee. 3: ``prior_usage`` (corrections, new attempts).
#: 4: ``licence_end: inclusive``, and receipts split at licence boundaries inside the period (keys
#: ``<receipt key>:<b>``, ``licence_boundaries``).
DOCUMENT_VERSION = 4


def canonical_inputs(inputs: PayoutInputs) -> bytes:
    """The inputs as canonical JSON (sorted keys, no spaces): what ``inputs_digest`` hashes. Fields added
    in versions 2 to 4 are left out while unset, so earlier documents keep their digests."""
    data = inputs.model_dump(mode="json")
    if data["terms_block"] is None:
        del data["terms_block"]
    if not data["prior_usage"]:
        del data["prior_usage"]
    if data["licence_end"] == "exclusive":
        del data["licence_end"]
    for asset in data["assets"]:
        for name in ("holder", "status"):
            if asset[name] is None:
                del asset[name]
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def inputs_digest(inputs: PayoutInputs) -> str:
    """sha-256 of the canonical inputs: what the published inputs document states and verifiers check."""
    return "0x" + hashlib.sha256(canonical_inputs(inputs)).hexdigest()


class LineItem(_Frozen):
    """One amount paid to one payee and where it came from."""

    payee: str
    amount: int
    kind: Literal["delivery", "delivery_margin", "platform_fee", "royalty", "refund"]
    #: the region (delivery kinds) or the asset whose receipts earned the royalty
    source: str
    #: royalty lineage: the asset itself, then each parent the pass-through went to
    via: tuple[str, ...] = ()
    receipt_keys: tuple[str, ...]


class Violation(_Frozen):
    receipt_key: str
    asset_id: str
    reason: Literal["territory", "window"]


class HeldBack(_Frozen):
    asset_id: str
    amount: int
    reason: Literal["disputed", "parent_disputed"]
    via: tuple[str, ...]
    receipt_keys: tuple[str, ...]


class Statement(_Frozen):
    merchant: str
    period_start: int
    period_end: int
    card_version: int
    card_currency: Currency
    currency: Currency
    #: the charge in the rate card's currency, before conversion
    charge_card_currency: int
    #: what the merchant is charged, in the settlement currency: == sum(payees) + sum(held_back)
    charge: int
    fx: FxSnapshot | None
    delivery_fees: dict[str, int]
    royalties: dict[str, int]
    payees: dict[str, int]
    line_items: tuple[LineItem, ...]
    violations: tuple[Violation, ...]
    held_back: tuple[HeldBack, ...]
    decisions: tuple[Decision, ...]

    def held_items(self) -> list[tuple[int, int]]:
        """(asset id, amount) of each held-back royalty, in order: what a held-only settlement's root
        commits to (``ledger.payout_leaf.held_only_root``)."""
        return [(int(h.asset_id), h.amount) for h in self.held_back]


@dataclass(slots=True)
class _Usage:
    requests: int = 0
    bytes: int = 0
    #: receipt keys as aggregated (input order), then emptied by _Aggregate.sort_keys
    keys: list[str] = field(default_factory=list)
    sorted_keys: tuple[str, ...] = ()


def payee(address: str) -> str:
    """Payees are compared as lower-case addresses so a checksummed and a plain spelling merge."""
    return address.lower()


def licensed_at(at: int, valid_from: int, valid_until: int | None, *, inclusive: bool = True) -> bool:
    """Whether second ``at`` lies in the licence window: ``valid_from <= at <= valid_until``, both ends
    included as ``ContentRegistry.isLicensedFor`` judges them (``valid_until = None``: open-ended;
    ``inclusive=False``: ``valid_until`` itself left out, as documents before version 4 judged it)."""
    last = None if valid_until is None else valid_until if inclusive else valid_until - 1
    return valid_from <= at and (last is None or at <= last)


def licence_boundaries(
    terms: AssetTerms, period_start: int, period_end: int, *, inclusive: bool = True
) -> tuple[int, ...]:
    """The seconds strictly inside ``[period_start, period_end)`` at which the asset's licence starts or
    stops covering deliveries: ``valid_from``, and the second after ``valid_until`` (``valid_until``
    itself when not ``inclusive``: documents before version 4) (sorted, at most two).

    A receipt of such an asset is split there, by its records' times, into parts each judged at its own
    first second (``Receipt.at``), so a licence starting or ending during a period pays royalties for what
    was delivered inside it and for nothing outside (settlement/period_inputs.py ``split_at_licence``;
    the part from ``b`` on is keyed ``<receipt key>:<b>``, docs/settlement.md "Licences")."""
    edges = [terms.valid_from]
    if terms.valid_until is not None:
        edges.append(terms.valid_until + 1 if inclusive else terms.valid_until)
    return tuple(sorted({b for b in edges if period_start < b < period_end}))


def licence_problem(
    terms: AssetTerms, receipt: Receipt, *, inclusive: bool = True
) -> Literal["territory", "window"] | None:
    """Why a receipt earns no royalty, or None when its deliveries were licensed."""
    if not licensed_at(receipt.at, terms.valid_from, terms.valid_until, inclusive=inclusive):
        return "window"
    return _territory_problem(terms, receipt.region, receipt.country)


def _territory_problem(terms: AssetTerms, region: str, country: str) -> Literal["territory"] | None:
    if country:
        needed = _TERRITORY_BIT.get(country.upper())
        if needed is None:
            return "territory"
    else:
        needed = _REGION_BITMAP[region]
    return None if terms.territories & needed == needed else "territory"


def _weights_or_requests(usage: Mapping[str, _Usage]) -> dict[str, int]:
    """Split weights: bytes, or requests when no bytes, or equal weights when neither (fee from decisions)."""
    for pick in (lambda u: u.bytes, lambda u: u.requests, lambda u: 1):
        weights = {k: pick(u) for k, u in usage.items()}
        if sum(weights.values()):
            return weights
    return {}


class _Ledger:
    """Collects line items and held-back amounts, then sums payees."""

    def __init__(self) -> None:
        self.items: list[LineItem] = []
        self.held: list[HeldBack] = []

    def pay(
        self,
        address: str,
        amount: int,
        kind: str,
        source: str,
        keys: tuple[str, ...],
        via: tuple[str, ...] = (),
    ) -> None:
        if amount:
            # Validated pieces (a payee string, an int, a kind of the Literal, sorted receipt keys): built
            # without pydantic's validation, which would copy ``keys`` into every line of a region or asset.
            item = _trusted(
                LineItem,
                {
                    "payee": payee(address),
                    "amount": amount,
                    "kind": kind,
                    "source": source,
                    "via": via,
                    "receipt_keys": keys,
                },
            )
            self.items.append(item)


def _check_assets(inputs: PayoutInputs) -> dict[str, AssetTerms]:
    if inputs.period_end <= inputs.period_start:
        raise SettlementError("period must end after it starts", code="period_invalid")
    assets: dict[str, AssetTerms] = {}
    for terms in inputs.assets:
        if terms.asset_id in assets and assets[terms.asset_id] != terms:
            raise SettlementError(f"asset {terms.asset_id} given twice", code="asset_duplicate")
        assets[terms.asset_id] = terms
    return assets


def _check_receipts(inputs: PayoutInputs, assets: Mapping[str, AssetTerms]) -> None:
    """Raise the first receipt problem in input order (the aggregation only detects that there is one)."""
    seen: set[str] = set()
    for receipt in inputs.receipts:
        if receipt.key in seen:
            raise SettlementError(f"receipt {receipt.key} given twice", code="receipt_duplicate")
        seen.add(receipt.key)
        if receipt.merchant != inputs.merchant:
            raise SettlementError(f"receipt {receipt.key} is another merchant's", code="receipt_foreign")
        if not inputs.period_start <= receipt.period < inputs.period_end:
            raise SettlementError(f"receipt {receipt.key} is outside the period", code="receipt_foreign")
        if receipt.asset_id not in assets and receipt.asset_id != UNREGISTERED:
            raise SettlementError(
                f"receipt {receipt.key} names unknown asset {receipt.asset_id}", code="asset_unknown"
            )


def _check_cases(inputs: PayoutInputs) -> RateCard:
    decided = {(d.region, d.day) for d in inputs.decisions if d.merchant == inputs.merchant}
    open_cases = sorted(set(inputs.flagged) - decided)
    if open_cases:
        raise SettlementError(
            f"{len(open_cases)} reconciliation case(s) of {inputs.merchant} are open",
            code="reconciliation_open",
            cases=[list(c) for c in open_cases],
        )
    return card_at(inputs.cards, inputs.merchant, inputs.period_start, inputs.period_end)


_RECEIPT_VALUES = attrgetter(*RECEIPT_ROW)


@dataclass(slots=True)
class _Aggregate:
    """The period's receipts per (region, operator) and per royalty-earning asset, and the violations."""

    by_region: dict[str, dict[str, _Usage]] = field(default_factory=dict)
    royalty_usage: dict[str, _Usage] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)
    #: every receipt key of a region, sorted (filled by :meth:`sort_keys`)
    region_keys: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def sort_keys(self) -> None:
        """Sort every list of keys; a region's keys from its operators' sorted lists (a merge of runs)."""
        usages = [*itertools.chain.from_iterable(o.values() for o in self.by_region.values())]
        for usage in [*usages, *self.royalty_usage.values()]:
            usage.sorted_keys = tuple(sorted(usage.keys))
            usage.keys = []
        for region, operators in self.by_region.items():
            self.region_keys[region] = tuple(
                sorted(itertools.chain.from_iterable(u.sorted_keys for u in operators.values()))
            )


def _aggregate(inputs: PayoutInputs, assets: Mapping[str, AssetTerms]) -> _Aggregate:
    """One pass over the receipts, in input order (their order in memory, which is much faster to walk
    than any other for a million receipts): checks them, sums usage, lists violations. On any problem,
    :func:`_check_receipts` raises the first one in input order."""
    out = _Aggregate()
    merchant, start, end = inputs.merchant, inputs.period_start, inputs.period_end
    # Per asset: terms, window, and an index of its territory bitmap (few distinct bitmaps, so the licence
    # check of a place is computed once per bitmap and place, not per receipt).
    bitmaps: dict[int, int] = {}
    # the last licensed second (PayoutInputs.licence_end), None when open-ended
    shift = 0 if inputs.licence_end == "inclusive" else 1
    terms_of = {
        asset_id: (
            terms,
            terms.valid_from,
            None if terms.valid_until is None else terms.valid_until - shift,
            bitmaps.setdefault(terms.territories, len(bitmaps)),
        )
        for asset_id, terms in assets.items()
    }
    licensed_at: dict[tuple[int, str, str], bool] = {}  # (bitmap index, region, country) -> licensed
    operators: dict[str, str] = {}  # as given -> payee spelling
    seen: set[str] = set()
    add_seen = seen.add
    by_region, royalty_usage, violations = out.by_region, out.royalty_usage, out.violations
    for key, asset_id, owner, region, country, period, at, given, requests, nbytes in map(
        _RECEIPT_VALUES, inputs.receipts
    ):
        add_seen(key)
        asset = terms_of.get(asset_id)
        if (asset is None and asset_id != UNREGISTERED) or owner != merchant or not start <= period < end:
            _check_receipts(inputs, assets)
            raise AssertionError(f"receipt {key} failed a check")  # pragma: no cover
        operator = operators.get(given)
        if operator is None:
            operator = operators[given] = payee(given)
        region_usage = by_region.get(region)
        if region_usage is None:
            region_usage = by_region[region] = {}
        usage = region_usage.get(operator)
        if usage is None:
            usage = region_usage[operator] = _Usage()
        usage.requests += requests
        usage.bytes += nbytes
        usage.keys.append(key)
        if asset is None:  # unregistered content: the delivery fee only
            continue

        terms, valid_from, last, bitmap = asset
        if at < valid_from or (last is not None and at > last):  # licensed_at, inlined
            violations.append(
                _trusted(Violation, {"receipt_key": key, "asset_id": asset_id, "reason": "window"})
            )
            continue
        place = (bitmap, region, country)
        licensed = licensed_at.get(place)
        if licensed is None:
            licensed = licensed_at[place] = _territory_problem(terms, region, country) is None
        if not licensed:
            violations.append(
                _trusted(Violation, {"receipt_key": key, "asset_id": asset_id, "reason": "territory"})
            )
            continue
        usage = royalty_usage.get(asset_id)
        if usage is None:
            usage = royalty_usage[asset_id] = _Usage()
        usage.requests += requests
        usage.bytes += nbytes
        usage.keys.append(key)
    if len(seen) != len(inputs.receipts):
        _check_receipts(inputs, assets)  # a key given twice
    del seen
    out.sort_keys()
    return out


def _distribute_royalty(
    ledger: _Ledger,
    assets: Mapping[str, AssetTerms],
    share_bps: int,
    origin: str,
    amount: int,
    keys: tuple[str, ...],
) -> None:
    """Pay ``amount`` of ``origin``'s royalty down its split, passing ``share_bps`` up each parent link."""
    via: tuple[str, ...] = (origin,)
    current = assets[origin]
    while amount:
        if current.disputed and current.asset_id != origin:
            ledger.held.append(
                _trusted(
                    HeldBack,
                    {
                        "asset_id": origin,
                        "amount": amount,
                        "reason": "parent_disputed",
                        "via": via,
                        "receipt_keys": keys,
                    },
                )
            )
            return
        own = amount
        parent_id = current.parent
        if parent_id is not None:
            if parent_id not in assets:
                raise SettlementError(
                    f"parent {parent_id} of {current.asset_id} is unknown", code="asset_unknown"
                )
            if parent_id in via:
                raise SettlementError(f"lineage of {origin} has a cycle", code="lineage_cycle")
            parts = largest_remainder(amount, {"parent": share_bps, "own": BPS - share_bps})
            own, amount = parts["own"], parts["parent"]
        else:
            amount = 0
        weights: dict[str, int] = {}
        for recipient in current.recipients:
            weights[payee(recipient.address)] = weights.get(payee(recipient.address), 0) + recipient.bps
        for address, part in sorted(largest_remainder(own, weights).items()):
            ledger.pay(address, part, "royalty", origin, keys, via)
        if parent_id is None:
            return
        current = assets[parent_id]
        via = (*via, parent_id)


def compute_payouts(inputs: PayoutInputs) -> Statement:
    """The statement of ``inputs.merchant`` for the period: charge, payees, line items, violations."""
    assets = _check_assets(inputs)
    # Aggregate first (in key order, and sorted keys below), so input order can never reach the arithmetic.
    aggregate = _aggregate(inputs, assets)
    card = _check_cases(inputs)
    by_region, royalty_usage, violations = aggregate.by_region, aggregate.royalty_usage, aggregate.violations

    adjustments: dict[str, int] = {}
    for decision in inputs.decisions:
        if decision.merchant == inputs.merchant:
            adjustments[decision.region] = adjustments.get(decision.region, 0) + decision.adjustment

    prior = {u.region: u for u in inputs.prior_usage}
    delivery_fees: dict[str, int] = {}
    for region in sorted(set(by_region) | set(adjustments)):
        operators = by_region.get(region, {})
        price = card.region_price(region)
        nbytes, requests = (
            sum(u.bytes for u in operators.values()),
            sum(u.requests for u in operators.values()),
        )
        before = prior.get(region)
        if before is None:
            fee = price.fee(nbytes, requests)
        else:  # the region's whole usage less what the other settlements charged: the tiers go on
            # (never below 0: a card made cheaper since cannot take back what was charged)
            fee = max(0, price.fee(before.bytes + nbytes, before.requests + requests) - before.fee)
        fee += adjustments.get(region, 0)
        if fee < 0:
            raise SettlementError(f"adjusted delivery fee of {region} is negative", code="adjustment_invalid")
        if fee and not operators:
            raise SettlementError(
                f"adjustment for {region} without deliveries there", code="adjustment_invalid"
            )
        delivery_fees[region] = fee
    royalties = {
        asset_id: card.royalty_for(asset_id).charge(usage.requests, usage.bytes)
        for asset_id, usage in sorted(royalty_usage.items())
    }

    charge_card = sum(delivery_fees.values()) + sum(royalties.values())
    charge, snapshot = inputs.fx.convert(
        charge_card, card.currency, inputs.settlement_currency, inputs.period_end
    )
    # Convert the total once, then share it out by the card-currency components: the payees always sum to
    # the converted charge, whatever the rate.
    components = {("delivery", r): fee for r, fee in delivery_fees.items()}
    components.update({("royalty", a): amount for a, amount in royalties.items()})
    converted = largest_remainder(charge, components)

    ledger = _Ledger()
    platform = payee(inputs.platform)
    for region in sorted(delivery_fees):
        operators = by_region.get(region, {})
        region_keys = aggregate.region_keys.get(region, ())
        parts = largest_remainder(
            converted["delivery", region],
            {"operators": card.operator_share_bps, "platform": BPS - card.operator_share_bps},
        )
        ledger.pay(platform, parts["platform"], "delivery_margin", region, region_keys)
        shares = largest_remainder(parts["operators"], _weights_or_requests(operators))
        for operator in sorted(shares):
            ledger.pay(operator, shares[operator], "delivery", region, operators[operator].sorted_keys)

    for asset_id in sorted(royalties):
        amount = converted["royalty", asset_id]
        keys = royalty_usage[asset_id].sorted_keys
        if assets[asset_id].disputed:
            if amount:
                ledger.held.append(
                    _trusted(
                        HeldBack,
                        {
                            "asset_id": asset_id,
                            "amount": amount,
                            "reason": "disputed",
                            "via": (asset_id,),
                            "receipt_keys": keys,
                        },
                    )
                )
            continue
        parts = largest_remainder(amount, {"fee": card.platform_fee_bps, "net": BPS - card.platform_fee_bps})
        ledger.pay(platform, parts["fee"], "platform_fee", asset_id, keys)
        _distribute_royalty(ledger, assets, card.derivative_share_bps, asset_id, parts["net"], keys)

    payees: dict[str, int] = {}
    for item in ledger.items:
        payees[item.payee] = payees.get(item.payee, 0) + item.amount
    held_total = sum(h.amount for h in ledger.held)
    if sum(payees.values()) + held_total != charge:  # an invariant, not an input error
        raise AssertionError("payouts do not sum to the charge")
    return Statement(
        merchant=inputs.merchant,
        period_start=inputs.period_start,
        period_end=inputs.period_end,
        card_version=card.version,
        card_currency=card.currency,
        currency=inputs.settlement_currency,
        charge_card_currency=charge_card,
        charge=charge,
        fx=snapshot,
        delivery_fees=delivery_fees,
        royalties=royalties,
        payees=dict(sorted(payees.items())),
        line_items=tuple(sorted(ledger.items, key=lambda i: (i.kind, i.source, i.via, i.payee))),
        violations=tuple(sorted(violations, key=lambda v: (v.receipt_key, v.reason))),
        held_back=tuple(sorted(ledger.held, key=lambda h: (h.asset_id, h.via))),
        decisions=tuple(
            sorted(
                (d for d in inputs.decisions if d.merchant == inputs.merchant),
                key=lambda d: (d.region, d.day, d.decided_at, d.decided_by),
            )
        ),
    )
