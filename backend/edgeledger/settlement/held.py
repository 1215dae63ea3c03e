"""Held royalties and their release, computed deterministically (pure, like payouts.py).

A period's royalty that cannot be paid when the period settles (its asset, or an ancestor its royalty
passes to, is disputed or taken down at the terms block) is held back (``payouts.HeldBack``) and reserved
in the vault with the period's root (``SettlementVault.postWithHeld``): the merchant can no longer
withdraw it, and nobody can claim it yet. Each later run reads the held assets' terms again at a new
recorded block (settlement/terms.py) and decides every held item by the dispute's outcome:

* **release** when the asset that held it and every ancestor above it are active again (the arbiter
  cleared the dispute, or reassigned the rights, which also resets the split to the new holder): paid
  down the split and lineage *as they stand at that block*, exactly as a period pays a royalty (a
  ``disputed`` item still owes the platform's fee; a ``parent_disputed`` one paid it already and passes
  on from the ancestor that held it);
* **refund** to the merchant when the asset that held it is taken down: the takedown says the content
  infringed, so the licence the merchant paid for was never validly given and nobody else is owed;
* **hold** otherwise (still disputed, or an ancestor is now disputed or taken down).

Released and refunded items of one period go out together as one *release*: a supplementary settlement
of the period with its own id on chain (``period id + (sequence << 32)``), its own payout root and
challenge window, funded from the period's held reserve (``SettlementVault.releaseHeld``); refunds are
leaves paying the merchant's own address. The release's inputs (:class:`ReleaseInputs`) are published like
a period's, so ``verify settlement`` recomputes it and re-reads the terms at its block.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from edgeledger.ledger.vault import SUPPLEMENT_SHIFT
from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import (
    AssetTerms,
    LineItem,
    Statement,
    _distribute_royalty,
    _Frozen,
    _Ledger,
    payee,
)
from edgeledger.settlement.rates import BPS, Currency, largest_remainder

#: Version of the published release inputs document.
RELEASE_VERSION = 1


def supplementary_id(period_id: int, sequence: int) -> int:
    """The vault's id of the ``sequence``-th supplementary settlement of ``period_id``."""
    if not 0 <= period_id < 1 << SUPPLEMENT_SHIFT or sequence < 1:
        raise SettlementError(f"no supplementary id for period {period_id}, sequence {sequence}")
    return period_id + (sequence << SUPPLEMENT_SHIFT)


class HeldItem(_Frozen):
    """One held-back royalty of a posted period, as reserved in the vault."""

    #: ``<settlement id>:<index in the statement's held_back>``: unique, and what release lines cite
    key: str = Field(min_length=1)
    asset_id: str = Field(min_length=1)
    reason: Literal["disputed", "parent_disputed"]
    #: the asset, then each ancestor the royalty passed to, up to the one that held it
    via: tuple[str, ...] = Field(min_length=1)
    amount: int = Field(gt=0)
    #: the period's receipts that earned it (``<batch id>:<asset>:<region>:<country>``): release lines
    #: cite them, so a release statement leads to the batches and proofs like the period's
    receipt_keys: tuple[str, ...] = Field(min_length=1)

    @property
    def holder_asset(self) -> str:
        """The asset whose status held the item back (the last of ``via``)."""
        return self.via[-1]


class ReleaseInputs(_Frozen):
    merchant: str = Field(min_length=1)
    #: where refunds are paid (the merchant's escrow address)
    merchant_address: str = Field(min_length=1)
    period_start: int = Field(ge=0)
    period_end: int
    items: tuple[HeldItem, ...] = Field(min_length=1)
    #: terms of every item's holding asset and its ancestors, at ``terms_block``
    assets: tuple[AssetTerms, ...]
    terms_block: int = Field(ge=0)
    platform: str = Field(min_length=1)
    platform_fee_bps: int = Field(ge=0, le=BPS)
    derivative_share_bps: int = Field(ge=0, le=BPS)
    #: the period's rate card version and currency, and the settlement currency (for the statement)
    card_version: int = Field(ge=1)
    card_currency: Currency
    currency: Currency


class Release(_Frozen):
    payees: dict[str, int]
    line_items: tuple[LineItem, ...]
    released: tuple[str, ...]
    refunded: tuple[str, ...]
    held: tuple[str, ...]
    total: int


Outcome = Literal["release", "refund", "hold"]


def outcome(item: HeldItem, assets: Mapping[str, AssetTerms]) -> Outcome:
    """What the terms at the release's block say about one held item (see the module docstring)."""
    holder = assets.get(item.holder_asset)
    if holder is None:
        raise SettlementError(f"no terms for asset {item.holder_asset}", code="asset_unknown")
    if holder.status == "taken_down":
        return "refund"
    current: AssetTerms | None = holder
    seen: set[str] = set()
    while current is not None:
        if current.disputed:
            return "hold"
        if current.asset_id in seen:
            raise SettlementError(f"lineage of {item.holder_asset} has a cycle", code="lineage_cycle")
        seen.add(current.asset_id)
        if current.parent is None:
            break
        current = assets.get(current.parent)
        if current is None:
            raise SettlementError(f"no terms for an ancestor of {item.holder_asset}", code="asset_unknown")
    return "release"


def compute_release(inputs: ReleaseInputs) -> Release:
    """Payees and lines of releasing and refunding what the terms now allow; the rest stays held."""
    assets: dict[str, AssetTerms] = {}
    for terms in inputs.assets:
        if assets.setdefault(terms.asset_id, terms) != terms:
            raise SettlementError(f"asset {terms.asset_id} given twice", code="asset_duplicate")
    keys = [i.key for i in inputs.items]
    if len(set(keys)) != len(keys):
        raise SettlementError("a held item is given twice", code="receipt_duplicate")
    ledger = _Ledger()
    released: list[str] = []
    refunded: list[str] = []
    held: list[str] = []
    moved = 0
    for item in sorted(inputs.items, key=lambda i: i.key):
        decided = outcome(item, assets)
        if decided == "hold":
            held.append(item.key)
            continue
        moved += item.amount
        if decided == "refund":
            refunded.append(item.key)
            ledger.pay(inputs.merchant_address, item.amount, "refund", item.asset_id, item.receipt_keys)
            continue
        released.append(item.key)
        amount = item.amount
        if item.reason == "disputed":  # the platform's fee was never taken from it
            parts = largest_remainder(
                amount, {"fee": inputs.platform_fee_bps, "net": BPS - inputs.platform_fee_bps}
            )
            ledger.pay(inputs.platform, parts["fee"], "platform_fee", item.asset_id, item.receipt_keys)
            amount = parts["net"]
        _distribute_royalty(
            ledger, assets, inputs.derivative_share_bps, item.holder_asset, amount, item.receipt_keys
        )
    payees: dict[str, int] = {}
    for line in ledger.items:
        payees[line.payee] = payees.get(line.payee, 0) + line.amount
    if sum(payees.values()) != moved or ledger.held:  # an invariant, not an input error
        raise AssertionError("a release does not sum to what it moves")
    return Release(
        payees=dict(sorted(payees.items())),
        line_items=tuple(sorted(ledger.items, key=lambda i: (i.kind, i.source, i.via, i.payee))),
        released=tuple(released),
        refunded=tuple(refunded),
        held=tuple(held),
        total=moved,
    )


def release_statement(inputs: ReleaseInputs, release: Release) -> Statement:
    """A release as a statement (stored, issued and recomputed by the verifiers alike): what it pays,
    royalties released or refunded per asset, and to whom; it charges the merchant nothing new (the
    period's held reserve pays)."""
    by_key = {i.key: i for i in inputs.items}
    royalties: dict[str, int] = {}
    for key in (*release.released, *release.refunded):
        item = by_key[key]
        royalties[item.asset_id] = royalties.get(item.asset_id, 0) + item.amount
    return Statement(
        merchant=inputs.merchant,
        period_start=inputs.period_start,
        period_end=inputs.period_end,
        card_version=inputs.card_version,
        card_currency=inputs.card_currency,
        currency=inputs.currency,
        charge_card_currency=0,
        charge=release.total,
        fx=None,
        delivery_fees={},
        royalties=dict(sorted(royalties.items())),
        payees=release.payees,
        line_items=release.line_items,
        violations=(),
        held_back=(),
        decisions=(),
    )


def canonical_release_inputs(inputs: ReleaseInputs) -> bytes:
    return json.dumps(inputs.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def release_digest(inputs: ReleaseInputs) -> str:
    return "0x" + hashlib.sha256(canonical_release_inputs(inputs)).hexdigest()


__all__ = [
    "RELEASE_VERSION",
    "HeldItem",
    "Release",
    "ReleaseInputs",
    "compute_release",
    "outcome",
    "payee",
    "release_digest",
    "release_statement",
    "supplementary_id",
]
