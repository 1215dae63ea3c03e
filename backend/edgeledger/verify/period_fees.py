"""A period's live settlements together charge what all their usage costs: the check of the
``prior_usage`` a server states (no chain, no database: the published inputs of the period's
settlements and which of them the vault still holds).

A correction of a period, or the period's new attempt after a cancel, is priced on top of what the
period's other live settlements counted and charged (docs/settlement.md, "Late records are paid once"):
its delivery fee in a region is ``fee(prior + own) - prior fee``, where ``prior`` is what its inputs'
``prior_usage`` states. Recomputing one settlement from its inputs (verify/settlement.py) proves its
payouts follow from that statement, not that the statement is true: a server that understated the prior
usage would overcharge the merchant for the late records (and overpay their operators), one that
overstated it would underpay them. What the statements must add up to is checked here, over every
settlement of the period in the package:

* the live settlements (not cancelled in the vault) together charge, per region, exactly the card's
  fee of all the bytes and requests they counted (their delivery fees less each bill adjustment);
  this holds whatever was cancelled and recomputed in between, because the settlement computed last
  is priced on top of every other live one (the fees telescope);
* two live settlements never count the same batch;
* while a settlement cancelled after the last computation is not settled again (its batches wait for
  the next run), the last one still counted it: the live settlements then charge ``fee(their usage +
  its usage) - its fees``, which is checked instead (reported as pending), for the cancelled ones whose
  batches no live settlement counts;
* the live settlements must price with the same rate card, or the check fails.

Which settlements of the period exist is the vault's to say, not the package's: verify/package.py
also reads every ``SettlementPosted`` of the merchant from the vault and fails a package that leaves
one of the period's out (an omitted live correction would otherwise hide its charge from this sum).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import PayoutInputs, Statement
from edgeledger.settlement.rates import RateCard, card_at
from edgeledger.verify.result import Check

#: The check's name in reports.
NAME = "period fees"


@dataclass(frozen=True)
class Member:
    """One settlement of a period (kind ``period`` or ``correction``) as its published inputs give it."""

    subject: str
    merchant: str  # the merchant's address, lower case
    base_period_id: int  # the vault id of the period itself (sequence 0)
    live: bool  # the vault holds it (or it charged nothing and was never posted), not cancelled
    inputs: PayoutInputs
    statement: Statement
    batch_ids: frozenset[str]


def _usage(inputs: PayoutInputs) -> dict[str, list[int]]:
    """Bytes and requests per region of the settlement's receipts (what its prior_usage would list)."""
    usage: dict[str, list[int]] = {}
    for receipt in inputs.receipts:
        counts = usage.setdefault(receipt.region, [0, 0])
        counts[0] += receipt.bytes
        counts[1] += receipt.requests
    return usage


def _charged(statement: Statement) -> dict[str, int]:
    """Delivery fees per region before any bill adjustment (what prior_usage's ``fee`` counts)."""
    charged = dict(statement.delivery_fees)
    for decision in statement.decisions:
        if decision.region in charged:
            charged[decision.region] -= decision.adjustment
    return charged


#: A period with more cancelled settlements waiting than this is not searched for the pending ones (2^n
#: sets): its check fails, saying so.
MAX_CANCELLED = 12


def _totals(members: Iterable[Member]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Bytes and requests counted, and delivery fees charged before adjustments, per region."""
    used: dict[str, list[int]] = {}
    charged: dict[str, int] = {}
    for member in members:
        for region, (nbytes, requests) in _usage(member.inputs).items():
            counts = used.setdefault(region, [0, 0])
            counts[0] += nbytes
            counts[1] += requests
        for region, fee in _charged(member.statement).items():
            charged[region] = charged.get(region, 0) + fee
    return used, charged


def _mismatches(
    card: RateCard, live: tuple[dict[str, list[int]], dict[str, int]], pending: tuple[Member, ...]
) -> list[str]:
    """Regions where the live settlements (their :func:`_totals`) do not charge ``fee(live usage +
    pending usage) - pending fees``: with ``pending`` empty, the card's fee of all they counted."""
    used, charged = live
    before, before_charged = _totals(pending)
    problems = []
    for region in sorted(used.keys() | charged.keys() | before.keys()):
        nbytes, requests = used.get(region, [0, 0])
        extra_bytes, extra_requests = before.get(region, [0, 0])
        try:
            price = card.region_price(region)
        except SettlementError as exc:
            problems.append(f"{region}: {exc.message}")
            continue
        expected = price.fee(nbytes + extra_bytes, requests + extra_requests) - before_charged.get(region, 0)
        if charged.get(region, 0) != expected:
            problems.append(
                f"{region}: the live settlements charge {charged.get(region, 0)} for {nbytes} bytes and "
                f"{requests} requests, which cost {expected} (a stated prior_usage is not what they counted)"
            )
    return problems


def _group_check(members: list[Member]) -> Check:
    first = members[0]
    subject = f"{first.merchant} period {first.base_period_id}"
    live = [m for m in members if m.live]
    cancelled = [m for m in members if not m.live]
    if not live:
        return Check(NAME, True, "every settlement of the period was cancelled: nothing charged", subject)
    seen: dict[str, str] = {}
    for member in live:
        for batch in sorted(member.batch_ids):
            if batch in seen:
                detail = f"batch {batch} is counted by both {seen[batch]} and {member.subject}"
                return Check(NAME, False, detail, subject)
            seen[batch] = member.subject
    try:
        cards = [
            card_at(m.inputs.cards, m.inputs.merchant, m.inputs.period_start, m.inputs.period_end)
            for m in live
        ]
    except SettlementError as exc:
        return Check(NAME, False, f"no rate card to price the period with: {exc.message}", subject)
    card = cards[0]
    # (a card names the merchant by its escrow address, which an admin may change between settlements)
    if any(other.model_copy(update={"merchant": card.merchant}) != card for other in cards):
        versions = ", ".join(sorted({str(other.version) for other in cards}))
        return Check(
            NAME, False, f"the live settlements price with different rate cards ({versions})", subject
        )
    totals = _totals(live)  # summed once: the search below tries many sets of cancelled ones with them
    problems = _mismatches(card, totals, ())
    if not problems:
        detail = f"{len(live)} live settlement(s) charge the card's fee of all their usage"
        return Check(NAME, True, detail, subject)
    # The settlement computed last counted the others as they were then: some since cancelled, whose
    # batches are not settled again yet (the next run does). Their usage and fees still count then.
    waiting = [m for m in cancelled if not m.batch_ids <= set(seen)]
    if len(waiting) > MAX_CANCELLED:
        detail = f"{len(waiting)} cancelled settlements wait to be settled again: too many to search"
        return Check(NAME, False, "; ".join([*problems, detail]), subject)
    for size in range(1, len(waiting) + 1):
        for pending in itertools.combinations(waiting, size):
            if not _mismatches(card, totals, pending):
                names = ", ".join(m.subject for m in pending)
                detail = (
                    f"{len(live)} live settlement(s) charge the card's fee of all their usage and that of "
                    f"{names}, cancelled since and not settled again yet (pending)"
                )
                return Check(NAME, True, detail, subject)
    return Check(NAME, False, "; ".join(problems), subject)


def period_fee_checks(members: Iterable[Member]) -> list[Check]:
    """One check per period with more than one settlement or a stated ``prior_usage`` (a period settled
    once, with nothing before it, is priced on its own and recomputing it is the whole check)."""
    # A package is one merchant's: its settlements of a period belong together even when the merchant's
    # escrow address changed between them (the server prices by merchant, not by address).
    groups: dict[int, list[Member]] = {}
    for member in members:
        groups.setdefault(member.base_period_id, []).append(member)
    return [
        _group_check(group)
        for _, group in sorted(groups.items())
        if len(group) > 1 or any(m.inputs.prior_usage for m in group)
    ]
