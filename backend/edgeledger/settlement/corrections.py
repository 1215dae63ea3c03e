"""Late records: supplementary settlements of a period that already settled (flows.py computes and posts
them like the period itself).

A record can reach an anchored batch of a period after the merchant's period was computed: a correction
batch of records that arrived after the late window, a batch anchored late, a batch of a source the
merchant authorised afterwards. Such a batch is paid by a *correction*: one ``settlements`` row
(``kind = "correction"``, ``sequence`` n) with its own id on chain (``period id + (n << 32)``, the
sequence shared with the period's releases), its own statement, payout root, held royalties and challenge
window, charged to the merchant's escrow like a period (``SettlementVault.postWithHeld``) and linked from
the period's statement.

Exactly once: every settlement of a merchant's period records the batches it counted
(``batch_ids_json``). A batch belongs to the period or correction that is not cancelled and lists it;
every computation of a period or correction leaves out the batches its siblings list
(:func:`claimed_batches`), so an anchored batch is paid by exactly one live settlement. In detail:

* a correction is opened only when the period's latest attempt is settled (posted, claimable or empty)
  and no other correction of the period is still unposted, with the late batches as its ``batch_ids``:
  from then on no sibling can count them;
* it is computed (and recomputed while blocked) over every batch of the period no sibling lists, and
  only while the period's latest attempt is settled: a period cancelled on chain is recomputed first
  (its new attempt leaves out the corrections' batches), so two live settlements never count a batch;
* a correction cancelled on chain lists nothing any more: its batches go to the next correction, under
  the next sequence number.

The terms are those of the period: a correction reads its assets' terms at the period's recorded block
(a block after the period closed, final), so a late record is priced and paid as the period would have
paid it. A period that billed nothing because its batches were under a fraud review records its block
all the same (flows.py), for the correction that bills them once the review is decided; a period that had
nothing at all to bill has no block, and its correction records one as a period does.
A late record of content registered after that block (so unregistered when delivered) is priced as
unregistered content (:func:`registered_at`), instead of blocking the correction, and every later one.
Its delivery fee is marginal: the region's whole usage (its own and what the period's other live
settlements recorded) costs ``fee(all)``, they charged ``F``, it charges ``fee(all) - F``
(:func:`prior_usage`, published as the inputs' ``prior_usage``; a period's new attempt after a cancel
is priced the same way against its live corrections). So the live settlements of a period together
charge what the period would have charged with every record in it, whatever was cancelled and recomputed
in between, and nobody's earlier share changes (the late records' fee is shared among their own
operators).
The CDN's bill was reconciled with the period, and each decision's adjustment (a one-time amount of the
period's bill) was charged by the period's statement: a correction opens no reconciliation case and
applies no decision (its inputs carry none), so an adjustment is never charged twice and never blocks a
correction (a negative one, or one for a region without late records, would make it uncomputable).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgeledger.deliveries.hosts import authorised_source_pks
from edgeledger.deliveries.models import ANCHORED_STATES, DeliveryBatch, DeliveryReceipt
from edgeledger.settlement import SettlementError
from edgeledger.settlement.held import supplementary_id
from edgeledger.settlement.models import (
    Settlement,
    SettlementAccount,
    SettlementKind,
    SettlementState,
)
from edgeledger.settlement.payouts import UNREGISTERED, PriorUsage, Receipt, Statement
from edgeledger.settlement.period_inputs import merchant_ids_of, under_review
from edgeledger.settlement.service import next_sequence
from edgeledger.settlement.terms import unknown_at

log = logging.getLogger(__name__)

#: The period's latest attempt is settled: its batches are fixed, late ones go to corrections.
SETTLED = (SettlementState.posted, SettlementState.claimable, SettlementState.empty)
#: A correction in these states is not posted yet: the period opens no other one meanwhile.
UNPOSTED = (SettlementState.blocked, SettlementState.computed, SettlementState.posting)
#: Settlements that count batches of the period.
COUNTING = (SettlementKind.period, SettlementKind.correction)


def _siblings(session: Session, merchant_user_id: int, period_start: int) -> list[Settlement]:
    return list(
        session.scalars(
            select(Settlement)
            .where(Settlement.merchant_user_id == merchant_user_id, Settlement.period_start == period_start)
            .order_by(Settlement.sequence, Settlement.attempt)
        )
    )


def latest_period(siblings: list[Settlement]) -> Settlement | None:
    """The latest attempt of the period itself (sequence 0)."""
    periods = [s for s in siblings if s.kind == SettlementKind.period]
    return max(periods, key=lambda s: s.attempt) if periods else None


def _counted(siblings: list[Settlement], besides: int | None = None) -> set[str]:
    """Batch ids counted by the live (not cancelled) periods and corrections among ``siblings``, but
    ``besides``."""
    counted: set[str] = set()
    for sibling in siblings:
        if sibling.id != besides and sibling.kind in COUNTING and sibling.state != SettlementState.cancelled:
            counted.update(json.loads(sibling.batch_ids_json or "[]"))
    return counted


def claimed_batches(session: Session, settlement: Settlement) -> set[str]:
    """Batch ids counted by the other live (not cancelled) periods and corrections of the same merchant and
    period: a computation of ``settlement`` leaves them out."""
    return _counted(_siblings(session, settlement.merchant_user_id, settlement.period_start), settlement.id)


def prior_usage(session: Session, settlement: Settlement) -> list[PriorUsage]:
    """What the period's other live settlements (the period or its latest attempt, its live corrections)
    counted per region, from the usage each recorded, and charged there (their statements' delivery fees
    less any bill adjustment): this one's fee goes on from there."""
    totals: dict[str, list[int]] = {}
    for sibling in _siblings(session, settlement.merchant_user_id, settlement.period_start):
        if sibling.id == settlement.id or sibling.kind not in COUNTING:
            continue
        if sibling.state == SettlementState.cancelled or sibling.statement_json is None:
            continue
        for region, _day, nbytes, requests in json.loads(sibling.usage_json or "[]"):
            counts = totals.setdefault(region, [0, 0, 0])
            counts[0] += int(nbytes)
            counts[1] += int(requests)
        statement = Statement.model_validate_json(sibling.statement_json)
        adjusted = {region: 0 for region in statement.delivery_fees}
        for decision in statement.decisions:
            if decision.region in adjusted:
                adjusted[decision.region] += decision.adjustment
        for region, fee in statement.delivery_fees.items():
            totals.setdefault(region, [0, 0, 0])[2] += fee - adjusted[region]
    return [PriorUsage(region=r, bytes=b, requests=q, fee=f) for r, (b, q, f) in sorted(totals.items())]


def registered_at(
    registry: Any, call: Callable[[Any], Any], receipts: list[Receipt], delivered: set[int]
) -> tuple[list[Receipt], set[int]]:
    """A correction's receipts with those of content the registry did not know at the period's block
    (``call`` reads there) priced as unregistered, and the registered ones among the asset ids
    ``delivered`` (the receipts' registered assets). Such content
    was registered after the period's end, so it was unregistered when delivered: the records are priced
    as they would have been had they arrived in time, instead of blocking the correction, and every
    later one of the period, for good (``asset_unknown``). The receipts' keys still name the asset;
    verify/settlement.py checks the registry did not know it at the block."""
    unknown = unknown_at(registry, call, delivered)
    if not unknown:
        return receipts, delivered
    relabelled = [
        r.model_copy(update={"asset_id": UNREGISTERED}) if int(r.asset_id) in unknown else r for r in receipts
    ]
    return relabelled, delivered - unknown


def check_computable(session: Session, settlement: Settlement) -> None:
    """A correction is computed only while its period's latest attempt is settled (module docstring)."""
    if settlement.kind != SettlementKind.correction:
        return
    period = latest_period(_siblings(session, settlement.merchant_user_id, settlement.period_start))
    if period is None or period.state not in SETTLED:
        state = period.state if period is not None else "missing"
        raise SettlementError(
            f"the period of correction {settlement.id} is {state}: it settles first",
            code="period_not_settled",
        )


def period_terms_block(session: Session, settlement: Settlement) -> int | None:
    """The block a correction reads terms at: its period's (None when the period recorded none: it had
    nothing to bill and no batch waiting for a review)."""
    period = latest_period(_siblings(session, settlement.merchant_user_id, settlement.period_start))
    return period.terms_block if period is not None else None


def _late_batches(session: Session, account: SettlementAccount) -> dict[int, set[str]]:
    """Anchored batches of the account's past periods holding its billable receipts, per period."""
    merchant_ids = merchant_ids_of(session, account.merchant_user_id)
    authorised = authorised_source_pks(session, account.merchant_user_id)
    if not merchant_ids or not authorised:
        return {}
    rows = session.execute(
        select(DeliveryBatch.period_start, DeliveryBatch.batch_id)
        .join(DeliveryReceipt, DeliveryReceipt.batch_pk == DeliveryBatch.id)
        .where(
            DeliveryBatch.period_start < account.next_period_start,
            DeliveryBatch.state.in_(sorted(ANCHORED_STATES)),
            DeliveryBatch.source_pk.in_(authorised),
            DeliveryReceipt.merchant_id.in_(merchant_ids),
            DeliveryReceipt.requests > 0,
            DeliveryBatch.id.not_in(under_review(merchant_ids)),  # counted once the review is done
        )
        .distinct()
    )
    found: dict[int, set[str]] = {}
    for period_start, batch_id in rows:
        found.setdefault(int(period_start), set()).add(batch_id)
    return found


def open_corrections(session: Session) -> list[int]:
    """A correction for every settled period of an auto-settling account with anchored batches no live
    settlement of the period counts; returns the new settlements' ids."""
    opened: list[int] = []
    accounts = list(
        session.scalars(
            select(SettlementAccount)
            .where(SettlementAccount.auto_settle.is_(True))
            .order_by(SettlementAccount.id)
        )
    )
    for account in accounts:
        for period_start, batches in sorted(_late_batches(session, account).items()):
            siblings = _siblings(session, account.merchant_user_id, period_start)
            period = latest_period(siblings)
            if period is None or period.state not in SETTLED:
                continue  # not settled yet (or cancelled: its recompute counts these batches)
            if any(s.kind == SettlementKind.correction and s.state in UNPOSTED for s in siblings):
                continue  # one unposted correction at a time; it counts new batches while blocked
            late = sorted(batches - _counted(siblings))
            if not late:
                continue
            sequence = next_sequence(session, account.merchant_user_id, period_start)
            row = Settlement(
                merchant_user_id=account.merchant_user_id,
                period_start=period_start,
                period_end=period.period_end,
                period_id=supplementary_id(period.period_id, sequence),
                attempt=1,
                kind=SettlementKind.correction,
                sequence=sequence,
                state=SettlementState.blocked,
                error_code="not_computed",
                error_message=f"{len(late)} batch(es) anchored after the period settled",
                merchant_address=account.address,
                token=account.token,
                batch_ids_json=json.dumps(late),
            )
            session.add(row)
            try:
                session.commit()
            except IntegrityError:  # another worker opened it first
                session.rollback()
                continue
            log.info("correction %s of period %s: %s late batch(es)", row.id, period.id, len(late))
            opened.append(row.id)
    return opened
