"""A release of held royalties pays only what its period held back, once: the check of a release's
inputs against its period's published settlement (no chain, no database).

A release (``kind: release``) is recomputed from its own inputs (verify/settlement.py): its held items,
the terms at its block and the card's shares. Recomputing it proves its payouts follow from those
inputs, not that the items are what the period held back, nor that the shares are the period's. The
vault bounds a release by the period's held reserve, but within it a dishonest server could relabel an
item's holder, raise the platform's share or pay a refund to another address. Checked here, over the
package's settlements:

* each item names its period's settlement and the index of one of that statement's held-back royalties
  (``<settlement id>:<index>``), and is that royalty: asset, reason, the assets it passed through,
  amount and the receipts that earned it;
* the release's platform fee, derivative share and card version are the period's, and its refunds go
  to the period's merchant (the document's escrow address); the platform's address is the server's
  configuration when it releases (it may have moved since the period);
* no held royalty is paid by two live releases (a release lists every item still held and pays those its
  terms release or refund; a cancelled release gives its items back).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from edgeledger.settlement import SettlementError
from edgeledger.settlement.held import ReleaseInputs, compute_release
from edgeledger.settlement.payouts import PayoutInputs, Statement
from edgeledger.settlement.rates import card_at
from edgeledger.verify.result import Check

#: The check's name in reports.
NAME = "release items"


@dataclass(frozen=True)
class Source:
    """A period's (or correction's) settlement as its published inputs give it."""

    merchant: str  # the escrow address, lower case
    inputs: PayoutInputs
    statement: Statement


@dataclass(frozen=True)
class Release:
    subject: str
    merchant: str  # the escrow address, lower case
    live: bool
    inputs: ReleaseInputs


def _problems(release: Release, sources: Mapping[str, Source]) -> list[str]:
    inputs, problems = release.inputs, []
    if inputs.merchant_address.lower() != release.merchant:
        problems.append(f"refunds go to {inputs.merchant_address}, not the merchant {release.merchant}")
    checked: set[str] = set()
    for item in inputs.items:
        settlement_id, _, index = item.key.rpartition(":")
        source = sources.get(settlement_id)
        if source is None or not index.isdigit():
            problems.append(f"item {item.key}: its period's settlement is not in the package")
            continue
        held = source.statement.held_back
        if int(index) >= len(held):
            problems.append(f"item {item.key}: settlement {settlement_id} held back {len(held)} royalties")
            continue
        original = held[int(index)]
        stated = (item.asset_id, item.reason, tuple(item.via), item.amount, tuple(item.receipt_keys))
        kept = (
            original.asset_id,
            original.reason,
            tuple(original.via),
            original.amount,
            original.receipt_keys,
        )
        if stated != kept or source.merchant != release.merchant:
            problems.append(f"item {item.key} is not the royalty settlement {settlement_id} held back")
        if settlement_id in checked:
            continue
        checked.add(settlement_id)
        period = source.inputs
        try:
            card = card_at(period.cards, period.merchant, period.period_start, period.period_end)
        except SettlementError as exc:
            problems.append(f"settlement {settlement_id} has no rate card: {exc.message}")
            continue
        # (the platform's address is the server's configuration at the release, which may have moved)
        names = ("platform fee", "derivative share", "card version")
        shares = (inputs.platform_fee_bps, inputs.derivative_share_bps, inputs.card_version)
        theirs = (card.platform_fee_bps, card.derivative_share_bps, card.version)
        for name, ours, its in zip(names, shares, theirs, strict=True):
            if ours != its:
                problems.append(f"{name} {ours} is not settlement {settlement_id}'s {its}")
    return problems


def release_checks(releases: Iterable[Release], sources: Mapping[str, Source]) -> list[Check]:
    """One check per release document; an item paid by two live releases fails both."""
    releases = list(releases)
    paid: dict[str, set[str]] = {}  # release subject -> the items it pays (released or refunded)
    paid_by: dict[str, list[str]] = {}
    for release in releases:
        # A release lists every item still held; only those its terms release or refund are paid by it.
        try:
            outcome = compute_release(release.inputs)
            paid[release.subject] = set(outcome.released) | set(outcome.refunded)
        except SettlementError:  # its own recomputation fails it (verify/settlement.py)
            paid[release.subject] = {item.key for item in release.inputs.items}
        if release.live:
            for key in paid[release.subject]:
                paid_by.setdefault(key, []).append(release.subject)
    checks = []
    for release in releases:
        problems = _problems(release, sources)
        twice = sorted(key for key in paid[release.subject] if len(paid_by.get(key, [])) > 1)
        if release.live and twice:
            problems.append("held royalties paid by two live releases: " + ", ".join(twice))
        detail = (
            "; ".join(problems) or f"{len(release.inputs.items)} item(s), each as its period held it back"
        )
        checks.append(Check(NAME, not problems, detail, release.subject))
    return checks
