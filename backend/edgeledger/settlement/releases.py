"""Opening releases of held royalties (settlement/held.py decides; flows.py posts and follows them).

Crash safety and exactly-once:

* a period's (or correction's) held items are written with its statement (flows.compute) and can be
  released once it is final (``claimable``: upheld, or past its challenge window; the vault refuses
  ``releaseHeld`` before, ``NotReleasable``): a settlement that can still be cancelled never funds a
  release, so a release never outlives the reserve it was paid from;
* a release is one ``settlements`` row (``kind = "release"``, ``sequence`` n, on chain
  ``period id + (n << 32)``) written in the same transaction that marks its items ``released`` or
  ``refunded`` with its id: a crash leaves either both or neither. From there the release is posted
  exactly once like any settlement (flows.post asks the vault for the release id first), with
  ``releaseHeld`` instead of ``post``;
* runs overlap (the beat and ``POST /settlement/run``, several workers), and a run reads a period's held
  items long before it writes (terms are read from the chain in between). So that transaction begins
  with a compare-and-set: one conditional UPDATE of every item the release was computed from, still
  ``held`` and in no release, which must match them all, before the release row is inserted. PostgreSQL
  re-checks each row as committed (waiting for a run that is writing it) and keeps it locked to the end;
  SQLite serialises writers. A run that lost the race writes nothing and skips the period, as does one
  whose sequence number another run took meanwhile (unique constraint ``uq_settlement_attempt``): an item
  is in at most one live release, and the period's items as one run saw them make at most one release;
* a release cancelled on chain (challenged, then cancelled by an admin) returned its amount to the
  period's held reserve in the vault; its items go back to ``held`` here and a later release takes them
  under the next sequence number;
* one release at a time per period: a period whose last release is not yet final on our side
  (blocked, computed, posting, posted, challenged) waits for it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.ledger.abis import CONTENT_REGISTRY
from edgeledger.ledger.payout_leaf import PayoutTree
from edgeledger.ledger.vault import PERIOD_MASK
from edgeledger.settlement.held import (
    HeldItem,
    ReleaseInputs,
    canonical_release_inputs,
    compute_release,
    release_statement,
    supplementary_id,
)
from edgeledger.settlement.models import (
    HeldState,
    Settlement,
    SettlementHeld,
    SettlementKind,
    SettlementPayout,
    SettlementState,
)
from edgeledger.settlement.payouts import HeldBack, PayoutInputs, Statement
from edgeledger.settlement.period_inputs import chain_terms_block
from edgeledger.settlement.rates import card_at
from edgeledger.settlement.service import next_sequence
from edgeledger.settlement.terms import read_terms

log = logging.getLogger(__name__)

#: A period's held reserve is final (no longer cancellable) in this state: releases may draw on it.
_LIVE = (SettlementState.claimable,)
#: A release in these states is still in flight: its period waits for it.
_IN_FLIGHT = (
    SettlementState.blocked,
    SettlementState.computed,
    SettlementState.posting,
    SettlementState.posted,
    SettlementState.challenged,
)


def record_held(session: Session, settlement: Settlement, held_back: tuple[HeldBack, ...]) -> None:
    """The statement's held-back royalties as rows of the settlement (replacing an earlier computation's)."""
    session.query(SettlementHeld).filter(SettlementHeld.settlement_pk == settlement.id).delete()
    for position, held in enumerate(held_back):
        session.add(
            SettlementHeld(
                settlement_pk=settlement.id,
                position=position,
                asset_id=held.asset_id,
                reason=held.reason,
                via_json=json.dumps(list(held.via)),
                amount=held.amount,
                state=HeldState.held,
            )
        )
    settlement.held_total = sum(h.amount for h in held_back)


def held_item(row: SettlementHeld, statement: Statement) -> HeldItem:
    """The held row as a release input, with the receipts that earned it (its period's statement)."""
    return HeldItem(
        key=f"{row.settlement_pk}:{row.position}",
        asset_id=row.asset_id,
        reason=row.reason,  # type: ignore[arg-type]
        via=tuple(json.loads(row.via_json)),
        amount=int(row.amount),
        receipt_keys=statement.held_back[row.position].receipt_keys,
    )


def _return_cancelled(session: Session) -> None:
    """Items of releases cancelled on chain are held again (the vault returned their amount)."""
    cancelled = select(Settlement.id).where(
        Settlement.kind == SettlementKind.release, Settlement.state == SettlementState.cancelled
    )
    session.execute(
        update(SettlementHeld)
        .where(SettlementHeld.release_pk.in_(cancelled))
        .values(state=HeldState.held, release_pk=None, updated_at=utcnow())
    )
    session.commit()


def open_releases(session: Session, chain: ChainClient, settings: Settings, platform: str) -> list[int]:
    """A release for every live period whose held items the chain's terms now decide; returns the new
    settlements' ids. Terms are read at one recorded block for all of them."""
    _return_cancelled(session)
    in_flight = select(Settlement.funded_by_pk).where(
        Settlement.kind == SettlementKind.release,
        Settlement.state.in_([s.value for s in _IN_FLIGHT]),
        Settlement.funded_by_pk.is_not(None),
    )
    periods = list(
        session.scalars(
            select(Settlement)
            .where(
                Settlement.kind.in_([SettlementKind.period, SettlementKind.correction]),
                Settlement.state.in_([s.value for s in _LIVE]),
                Settlement.id.in_(
                    select(SettlementHeld.settlement_pk).where(SettlementHeld.state == HeldState.held)
                ),
                Settlement.id.not_in(in_flight),
            )
            .order_by(Settlement.period_start, Settlement.id)
        )
    )
    if not periods:
        return []
    block = chain_terms_block(chain, settings, 0)
    registry = chain.contract(CONTENT_REGISTRY)
    opened: list[int] = []
    for period in periods:
        rows = list(
            session.scalars(
                select(SettlementHeld)
                .where(SettlementHeld.settlement_pk == period.id, SettlementHeld.state == HeldState.held)
                .order_by(SettlementHeld.position)
            )
        )
        statement = Statement.model_validate_json(period.statement_json or "{}")
        items = [held_item(r, statement) for r in rows]
        assets = read_terms(
            registry,
            lambda fn: chain.call(fn, block),
            {int(i.holder_asset) for i in items},
            get_logs=chain.get_logs,
            block=block,
            from_block=chain.deployment.contracts[CONTENT_REGISTRY].block,
        )
        inputs = _release_inputs(period, statement, items, assets, block, platform)
        release = compute_release(inputs)
        if not release.total:
            continue
        release_pk = _write_release(session, period, statement, inputs, release, rows)
        if release_pk is not None:
            opened.append(release_pk)
    return opened


def _release_inputs(
    period: Settlement,
    statement: Statement,
    items: list[HeldItem],
    assets: list[Any],
    block: int,
    platform: str,
) -> ReleaseInputs:
    assert period.inputs_gz is not None  # a posted period with held items has its inputs
    period_inputs = PayoutInputs.model_validate_json(gzip.decompress(period.inputs_gz))
    card = card_at(period_inputs.cards, period_inputs.merchant, period.period_start, period.period_end)
    return ReleaseInputs(
        merchant=statement.merchant,
        merchant_address=period.merchant_address.lower(),
        period_start=period.period_start,
        period_end=period.period_end,
        items=tuple(items),
        assets=tuple(assets),
        terms_block=block,
        platform=platform,
        platform_fee_bps=card.platform_fee_bps,
        derivative_share_bps=card.derivative_share_bps,
        card_version=statement.card_version,
        card_currency=statement.card_currency,
        currency=statement.currency,
    )


def _write_release(
    session: Session,
    period: Settlement,
    statement: Statement,
    inputs: ReleaseInputs,
    release: Any,
    rows: list[SettlementHeld],
) -> int | None:
    """The release and its items' outcome in one transaction; None (nothing written) when another run
    changed the items since they were read, or took the sequence number first."""
    funding = period.id
    # Compare-and-set first: every item the release was computed from must still be held by no release.
    # On PostgreSQL the UPDATE re-checks each row as committed (waiting for a run writing it) and keeps it
    # locked until this transaction ends; SQLite serialises writers from this first write on.
    claimed = session.execute(
        update(SettlementHeld)
        .where(
            SettlementHeld.id.in_([held.id for held in rows]),
            SettlementHeld.state == HeldState.held,
            SettlementHeld.release_pk.is_(None),
        )
        .values(updated_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if claimed != len(rows):
        session.rollback()
        log.info("held items of settlement %s changed while its release was computed: skipped", funding)
        return None
    sequence = next_sequence(session, period.merchant_user_id, period.period_start)
    # a correction's held royalties are released under its period's next id too (ledger.vault)
    release_id = supplementary_id(period.period_id & PERIOD_MASK, sequence)
    tree = PayoutTree(release_id, period.merchant_address, period.token, release.payees)
    canonical = canonical_release_inputs(inputs)
    row = Settlement(
        merchant_user_id=period.merchant_user_id,
        period_start=period.period_start,
        period_end=period.period_end,
        period_id=release_id,
        attempt=1,
        kind=SettlementKind.release,
        sequence=sequence,
        funded_by_pk=period.id,
        state=SettlementState.computed,
        merchant_address=period.merchant_address,
        token=period.token,
        root=tree.root_hex,
        total=tree.total,
        payee_count=len(tree),
        inputs_digest="0x" + hashlib.sha256(canonical).hexdigest(),
        inputs_gz=gzip.compress(canonical, compresslevel=6, mtime=0),
        statement_json=release_statement(inputs, release).model_dump_json(),
        terms_block=inputs.terms_block,
        computed_at=utcnow(),
    )
    session.add(row)
    try:
        session.flush()
    except IntegrityError:  # another run took this sequence number (uq_settlement_attempt) first
        session.rollback()
        log.info("sequence %s of settlement %s's period was taken meanwhile: skipped", sequence, funding)
        return None
    for payee, amount in tree.payouts.items():
        session.add(
            SettlementPayout(
                settlement_pk=row.id,
                payee=payee.lower(),
                amount=amount,
                leaf="0x" + tree.proof(payee).leaf.hex(),
            )
        )
    outcome = {key: HeldState.released for key in release.released}
    outcome.update({key: HeldState.refunded for key in release.refunded})
    for held in rows:
        state = outcome.get(f"{held.settlement_pk}:{held.position}")
        if state is not None:
            held.state, held.release_pk = state, row.id
    session.commit()  # the release and its items' outcome together
    log.info(
        "release %s of settlement %s: %s released, %s refunded, total %s",
        row.id,
        period.id,
        len(release.released),
        len(release.refunded),
        row.total,
    )
    return row.id
