"""Settling a merchant's period, step by step, crash-safe (docs/settlement.md, "Settling a period").

    due period --open--> blocked | empty | computed --post--> posting --> posted --> claimable
                                                                           |
                                                                           +--> challenged --> claimable
                                                                                           \\-> cancelled

* **open**: after a period's late window, once every batch of the period is anchored, one
  :class:`Settlement` row per (merchant, period) is written in the same transaction that moves the
  merchant's period cursor: a period is never skipped and never opened twice (unique constraint).
* **compute**: receipts (anchored, not excluded records of the merchant's hosts, per batch, asset,
  region, country) + the assets' on-chain terms + rate card + FX table + reconciliation decisions go
  through :func:`compute_payouts`; the payout tree is stored with the statement. Anything missing (rate
  card, FX rate, a decision on an open reconciliation case, the CDN bill when required) leaves the row
  ``blocked`` with the reason; it is recomputed every run until it succeeds.
* **post**: exactly once. Before sending, the vault is asked for (period, merchant): a settlement there
  with our root is adopted, never re-sent; a pending transaction is waited for, never duplicated, and
  replaced at its nonce with a higher bid when stuck (settlement/post_tx.py). The state ``posting`` is
  committed before the send, and the transaction's nonce and hash before it leaves, so a crash anywhere
  resumes to one post. Escrow below the total blocks the row (``insufficient_escrow``) until deposited.
  **One post in flight per merchant** (settlement/posting.py): the vault's checks are read and the post
  sent only under the merchant's lock, and only while no other settlement of the merchant is ``posting``
  (a post the chain has not mined passes the checks of the next one, which the vault then refuses);
  otherwise the row is left as it is, reported ``waiting`` (``merchant_post_in_flight``) or ``busy``,
  and a later run posts it. The rule only withholds sends: a row becomes ``posting`` only under the
  lock, a lock dies with its worker, and a row a crash left ``posting`` holds back its merchant's other
  posts until it is resumed as above, to its one post.
* **late records**: batches of a settled period anchored afterwards are paid once by a *correction* of
  the period (settlement/corrections.py), computed and posted like the period but without reconciliation
  (the period's statement charged its decisions' adjustments); held royalties are released by *releases*
  (settlement/releases.py).
* **follow**: the vault's status (Posted / Challenged / Upheld / Cancelled) and the chain's clock move
  the row on; a post that disappeared from the chain (reorg) goes back to ``computed`` and is re-posted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eth_utils import to_checksum_address
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient, ChainError, ContractRevert
from edgeledger.config import Settings
from edgeledger.db import exclusive_work, utcnow
from edgeledger.deliveries.hosts import authorised_source_pks
from edgeledger.deliveries.models import (
    BatchState,
    DeliveryBatch,
    DeliveryRecordRow,
)
from edgeledger.ledger.abis import CONTENT_REGISTRY
from edgeledger.ledger.payout_leaf import UINT128_MAX, PayoutTree, held_only_root
from edgeledger.ledger.vault import SettlementStatus as ChainStatus
from edgeledger.settlement import SettlementError
from edgeledger.settlement.corrections import (
    check_computable,
    claimed_batches,
    open_corrections,
    period_terms_block,
    prior_usage,
    registered_at,
)
from edgeledger.settlement.held import RELEASE_VERSION
from edgeledger.settlement.models import (
    CaseState,
    ReconciliationCase,
    Settlement,
    SettlementAccount,
    SettlementKind,
    SettlementPayout,
    SettlementState,
)
from edgeledger.settlement.payouts import (
    DOCUMENT_VERSION,
    PayoutInputs,
    canonical_inputs,
    compute_payouts,
    licence_boundaries,
)
from edgeledger.settlement.period_inputs import (
    PeriodData,
    chain_terms_block,
    merchant_raw_ids,
    period_receipts,
    platform_address,
    reconcile_period,
    settlement_currency,
    split_at_licence,
    unbillable_batches,
)
from edgeledger.settlement.post_tx import (
    POST_IN_MEMPOOL,
    NotSent,
    current_tx,
    replace_if_stuck,
    send_post,
)
from edgeledger.settlement.posting import (
    MERCHANT_POST_IN_FLIGHT,
    chain_time,
    merchant_lock,
    post_call,
    post_in_flight,
    preflight,
)
from edgeledger.settlement.rates import card_at
from edgeledger.settlement.releases import open_releases, record_held
from edgeledger.settlement.service import (
    current_import,
    decision_of,
    fx_table,
    get_account,
    merchant_key,
    period_id_for,
    rate_cards,
)
from edgeledger.settlement.terms import read_terms

log = logging.getLogger(__name__)

VAULT = "SettlementVault"
UNSETTLED_BATCH_STATES = (
    BatchState.open,
    BatchState.closed,
    BatchState.awaiting_signature,
    BatchState.anchoring,
)
#: blocked reasons that only the post step can clear (the statement itself is fine)
POST_BLOCKS = (
    "insufficient_escrow",
    "token_not_allowed",
    "posted_elsewhere",
    "period_cap_exceeded",
    "rate_cap_exceeded",
    "settler_not_chosen",
    "period_not_ended",
    "period_length_mismatch",
)


@dataclass
class RunReport:
    opened: list[int] = field(default_factory=list)
    computed: list[int] = field(default_factory=list)
    blocked: dict[int, str] = field(default_factory=dict)
    posted: list[int] = field(default_factory=list)
    claimable: list[int] = field(default_factory=list)
    cancelled: list[int] = field(default_factory=list)
    #: another worker holds the settlement's lock, or its merchant's posting lock (settlement/posting.py)
    busy: list[int] = field(default_factory=list)
    #: settlement id -> why it was left as it is this run, to go on by itself in a later one
    #: (``merchant_post_in_flight``: another post of its merchant is not mined yet; ``post_in_mempool``,
    #: ``post_fee_capped``, ``post_queued_behind:<nonce>`` and the other reasons of settlement/post_tx.py:
    #: its own post waits, or was not sent)
    waiting: dict[int, str] = field(default_factory=dict)
    #: settlements whose post, stuck in the mempool, was sent again at its nonce bidding more
    replaced: list[int] = field(default_factory=list)
    #: releases of held royalties opened this run (settlement/releases.py)
    released: list[int] = field(default_factory=list)
    #: corrections (late records of settled periods) opened this run (settlement/corrections.py)
    corrections: list[int] = field(default_factory=list)
    retryable: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "opened": self.opened,
            "computed": self.computed,
            "blocked": {str(k): v for k, v in self.blocked.items()},
            "posted": self.posted,
            "claimable": self.claimable,
            "cancelled": self.cancelled,
            "busy": self.busy,
            "waiting": {str(k): v for k, v in self.waiting.items()},
            "replaced": self.replaced,
            "released": self.released,
            "corrections": self.corrections,
            "retryable": self.retryable,
        }


# ----------------------------------------------------------------------------------------------
# Opening and computing periods
# ----------------------------------------------------------------------------------------------


def period_is_due(
    session: Session,
    settings: Settings,
    account: SettlementAccount,
    period_start: int,
    now: int,
    *,
    early: bool = False,
) -> bool:
    """After the late window (``early``: once the period has ended), with no batch still to be anchored
    that holds records of the merchant's hosts from a source it authorises. Other merchants' batches, a
    source it does not authorise, and a source that never anchors a batch without this merchant's records
    never hold its period back; a batch that will never anchor is abandoned by an admin
    (deliveries/batches.py ``abandon_batch``) and then no longer waited for."""
    period_end = period_start + settings.delivery_period_seconds
    if period_end + (0 if early else settings.delivery_late_window_seconds) > now:
        return False
    merchant_ids = merchant_raw_ids(session, account.merchant_user_id)
    authorised = authorised_source_pks(session, account.merchant_user_id)
    if not merchant_ids or not authorised:
        return True
    carries_ours = (
        select(DeliveryRecordRow.id)
        .where(
            DeliveryRecordRow.batch_pk == DeliveryBatch.id, DeliveryRecordRow.merchant_id.in_(merchant_ids)
        )
        .exists()
    )
    waiting = session.scalar(
        select(DeliveryBatch.id)
        .where(
            DeliveryBatch.period_start == period_start,
            DeliveryBatch.state.in_(list(UNSETTLED_BATCH_STATES)),
            DeliveryBatch.source_pk.in_(authorised),
            carries_ours,
        )
        .limit(1)
    )
    return waiting is None


#: Periods one account may open in one run: a backlog (an account started in the past, a worker down for
#: days) is caught up over several runs instead of holding one run, and every other merchant, for hours.
MAX_PERIODS_OPENED_PER_RUN = 500


def open_due_periods(
    session: Session, settings: Settings, now: int, report: RunReport, *, early: bool = False
) -> None:
    """Writes a settlement row for every due period of every auto-settling account, in period order.

    ``early`` (an admin's choice, e.g. for a demo) does not wait for the late window: late records of
    such a period go to correction batches, paid by a correction of the period (settlement/corrections.py)."""
    accounts = list(
        session.scalars(
            select(SettlementAccount)
            .where(SettlementAccount.auto_settle.is_(True))
            .order_by(SettlementAccount.id)
        )
    )
    for account in accounts:
        opened = 0
        while opened < MAX_PERIODS_OPENED_PER_RUN and period_is_due(
            session, settings, account, account.next_period_start, now, early=early
        ):
            opened += 1
            start = account.next_period_start
            settlement = Settlement(
                merchant_user_id=account.merchant_user_id,
                period_start=start,
                period_end=start + settings.delivery_period_seconds,
                period_id=period_id_for(start, settings),
                attempt=1,
                state=SettlementState.blocked,
                error_code="not_computed",
                error_message="waiting to be computed",
                merchant_address=account.address,
                token=account.token,
            )
            session.add(settlement)
            account.next_period_start = start + settings.delivery_period_seconds
            try:
                session.commit()  # the row and the cursor move together
            except IntegrityError:  # another worker opened it first
                session.rollback()
                break
            report.opened.append(settlement.id)


def _block(session: Session, settlement: Settlement, code: str, message: str) -> None:
    settlement.state = SettlementState.blocked
    settlement.error_code = code[:64]
    settlement.error_message = message
    session.commit()


def compute(
    session: Session, settings: Settings, chain: ChainClient, settlement: Settlement, platform: str
) -> None:
    """blocked -> computed | empty | blocked: the statement and payout tree of the attempt, with the
    assets' terms read from the chain at a block recorded with it."""
    account = get_account(session, settlement.merchant_user_id)
    try:
        check_computable(session, settlement)
        inputs, data = _inputs(session, settings, chain, account, settlement, platform)
        statement = compute_payouts(inputs) if inputs is not None else None
    except SettlementError as exc:
        session.rollback()
        _block(session, settlement, exc.code, exc.message)
        return
    if statement is not None and statement.charge > UINT128_MAX:
        # The vault counts in uint128 (the charge bounds every payout and held item): past that, this
        # merchant's attempt waits with a reason instead of a post every run that the vault refuses.
        session.rollback()
        _block(
            session,
            settlement,
            "amount_too_large",
            f"charge of {statement.charge} minor units exceeds the vault's {UINT128_MAX} (docs/limits.md)",
        )
        return
    session.execute(delete(SettlementPayout).where(SettlementPayout.settlement_pk == settlement.id))
    settlement.merchant_address = account.address
    settlement.token = account.token
    settlement.receipt_count = len(data.receipts)
    settlement.batch_ids_json = json.dumps(data.batch_ids)
    settlement.usage_json = json.dumps([[r, d, b, q] for (r, d), (b, q) in sorted(data.usage.items())])
    settlement.error_code = settlement.error_message = None
    settlement.computed_at = utcnow()
    settlement.terms_block = inputs.terms_block if inputs is not None else data.terms_block
    if settlement.kind == SettlementKind.period:  # a correction's period lists them
        settlement.unbillable_json = json.dumps(unbillable_batches(session, account, settlement.period_start))
    record_held(session, settlement, statement.held_back if statement is not None else ())
    settlement.inputs_digest = settlement.inputs_gz = None
    if inputs is not None:  # kept even when nothing is charged: what the receipts were priced from
        canonical = canonical_inputs(inputs)
        settlement.inputs_digest = "0x" + hashlib.sha256(canonical).hexdigest()
        settlement.inputs_gz = gzip.compress(canonical, compresslevel=6, mtime=0)
    if statement is None or not (statement.payees or statement.held_back):
        settlement.state = SettlementState.empty
        settlement.statement_json = statement.model_dump_json() if statement is not None else None
        settlement.root, settlement.total, settlement.payee_count = None, 0, 0
        session.commit()
        return
    if len(statement.payees) > settings.settlement_max_payees:
        session.rollback()
        _block(session, settlement, "too_many_payees", f"{len(statement.payees)} payees")
        return
    assert inputs is not None and settlement.inputs_digest is not None
    settlement.statement_json = statement.model_dump_json()
    if not statement.payees:
        # Every royalty held and nothing else to pay: the held royalties are still reserved (a held-only
        # post, total 0), so their release or refund follows the dispute like any period's.
        held = statement.held_items()  # what the root commits to
        settlement.root = held_only_root(settlement.period_id, account.address, account.token, held)
        settlement.total = settlement.payee_count = 0
        settlement.state = SettlementState.computed
        session.commit()
        return
    tree = PayoutTree(settlement.period_id, account.address, account.token, statement.payees)
    settlement.root = tree.root_hex
    settlement.total = tree.total
    settlement.payee_count = len(tree)
    for payee, amount in tree.payouts.items():
        session.add(
            SettlementPayout(
                settlement_pk=settlement.id,
                payee=payee.lower(),
                amount=amount,
                leaf="0x" + tree.proof(payee).leaf.hex(),
            )
        )
    settlement.state = SettlementState.computed
    session.commit()


def _inputs(
    session: Session,
    settings: Settings,
    chain: ChainClient,
    account: SettlementAccount,
    settlement: Settlement,
    platform: str,
) -> tuple[PayoutInputs | None, PeriodData]:
    correction = settlement.kind == SettlementKind.correction
    # batches another live settlement of the period counts (settlement/corrections.py)
    data = period_receipts(session, account, settlement.period_start, claimed_batches(session, settlement))
    if not data.receipts:
        if data.reviewed and not correction:
            # Nothing billed now, but batches wait for a fraud review: the correction that bills them
            # prices them at this period's block (corrections.py), so the period records one, read as
            # when it bills (pending until a final block follows the period's end). Stored with the
            # ``empty`` state in one commit, it is there before any correction can open.
            data.terms_block = chain_terms_block(chain, settings, settlement.period_end)
        return None, data
    block = period_terms_block(session, settlement) if correction else None
    if block is None:
        block = chain_terms_block(chain, settings, settlement.period_end)
    registry = chain.contract(CONTENT_REGISTRY)
    delivered = {int(r.asset_id) for r in data.receipts} - {0}
    if correction:  # late records of content registered after the period's block (corrections.py)
        data.receipts, delivered = registered_at(
            registry, lambda fn: chain.call(fn, block), data.receipts, delivered
        )
    assets = read_terms(
        registry,
        lambda fn: chain.call(fn, block),
        delivered,
        get_logs=chain.get_logs,
        block=block,
        from_block=chain.deployment.contracts[CONTENT_REGISTRY].block,
    )
    # a licence starting or ending inside the period splits its receipts there (docs/settlement.md)
    edges = {
        t.asset_id: b
        for t in assets
        if int(t.asset_id) in delivered
        and (b := licence_boundaries(t, settlement.period_start, settlement.period_end))
    }
    data.receipts = split_at_licence(session, account, data.receipts, edges)
    cards = rate_cards(session, account)
    card = card_at(cards, merchant_key(account), settlement.period_start, settlement.period_end)
    billing = current_import(session, account, settlement.period_start)
    if billing is None and account.require_billing and not correction:
        raise SettlementError("waiting for the CDN's billing report of the period", code="billing_missing")
    decisions, flagged = [], []
    fx = fx_table(session)
    # A correction opens no case and applies no decision: its period's statement charged each adjustment,
    # a one-time amount of the period's bill (applying it again would charge it twice, or block the
    # correction for good where it makes a region's fee negative or has no late deliveries to go on).
    if billing is not None and not correction:
        reconcile_period(session, account, billing, data, card, fx)
        cases = session.scalars(
            select(ReconciliationCase).where(
                ReconciliationCase.import_pk == billing.id, ReconciliationCase.state != CaseState.superseded
            )
        )
        for case in cases:
            flagged.append((case.region, case.day))
            if case.state != CaseState.open:
                decisions.append(decision_of(case, merchant_key(account)))
        session.commit()  # the cases stay open for people to decide, whatever happens next
    inputs = PayoutInputs(
        merchant=merchant_key(account),
        period_start=settlement.period_start,
        period_end=settlement.period_end,
        receipts=tuple(data.receipts),
        assets=tuple(assets),
        cards=tuple(cards),
        platform=platform,
        settlement_currency=settlement_currency(account),
        fx=fx,
        decisions=tuple(decisions),
        flagged=tuple(flagged),
        terms_block=block,
        # the volume tiers go on from what the period's other live settlements charged
        prior_usage=tuple(prior_usage(session, settlement)),
        licence_end="inclusive",  # as isLicensedFor, and licence_boundaries above
    )
    return inputs, data


def payout_tree(session: Session, settlement: Settlement) -> PayoutTree:
    """The stored payouts as a tree; its root must be the stored root (checked)."""
    payouts = dict(
        session.execute(
            select(SettlementPayout.payee, SettlementPayout.amount).where(
                SettlementPayout.settlement_pk == settlement.id
            )
        ).all()
    )
    if not payouts:
        raise SettlementError(f"settlement {settlement.id} pays nobody", code="nothing_to_pay", status=409)
    tree = PayoutTree(settlement.period_id, settlement.merchant_address, settlement.token, payouts)
    if tree.root_hex != settlement.root:
        raise SettlementError(
            f"stored payouts of settlement {settlement.id} do not match its root",
            code="payouts_corrupt",
            status=500,
        )
    return tree


# ----------------------------------------------------------------------------------------------
# On chain
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainSettlement:
    root: str
    token: str
    claims_open_at: int
    status: int
    total: int
    remaining: int


def chain_settlement(chain: ChainClient, settlement: Settlement) -> ChainSettlement:
    vault = chain.contract(VAULT)
    raw = chain.call(
        vault.functions.settlementOf(settlement.period_id, to_checksum_address(settlement.merchant_address))
    )
    root, token, opens, status, total, remaining = raw
    return ChainSettlement(
        "0x" + bytes(root).hex(), token, int(opens), int(status), int(total), int(remaining)
    )


def _adopt(session: Session, settlement: Settlement, on_chain: ChainSettlement, now: int) -> bool:
    """Moves the row to what the vault says about our root; False when the vault has not got it."""
    if on_chain.root != settlement.root or on_chain.status == ChainStatus.NONE:
        return False
    settlement.claims_open_at = on_chain.claims_open_at
    settlement.posted_at = settlement.posted_at or utcnow()
    settlement.error_code = settlement.error_message = None
    if on_chain.status == ChainStatus.CANCELLED:
        settlement.state = SettlementState.cancelled
    elif on_chain.status == ChainStatus.CHALLENGED:
        settlement.state = SettlementState.challenged
    elif on_chain.status == ChainStatus.UPHELD or now >= on_chain.claims_open_at:
        settlement.state = SettlementState.claimable
    else:
        settlement.state = SettlementState.posted
    session.commit()
    return True


def post(
    session: Session, chain: ChainClient, settings: Settings, settlement: Settlement, report: RunReport
) -> None:
    """computed (or blocked at posting) -> posting -> posted, sending at most one post per attempt, and
    only while no other post of the merchant is in flight (settlement/posting.py): holding the merchant's
    lock (another worker holds it: ``busy``, nothing done) from the vault's checks to the receipt."""
    with merchant_lock(session, settings, settlement.merchant_user_id) as locked:
        if not locked:
            report.busy.append(settlement.id)
            return
        _post(session, chain, settings, settlement, report)


def _post(
    session: Session, chain: ChainClient, settings: Settings, settlement: Settlement, report: RunReport
) -> None:
    now = chain_time(chain)
    on_chain = chain_settlement(chain, settlement)
    cancelled_before = on_chain.status == ChainStatus.CANCELLED and on_chain.root == settlement.root
    if cancelled_before and settlement.state != SettlementState.posting:
        _block(
            session,
            settlement,
            "root_cancelled",
            "the vault cancelled this very payout tree before: decide the open questions or correct the "
            "rate card, then recompute",
        )
        report.blocked[settlement.id] = "root_cancelled"
        return
    if _adopt(session, settlement, on_chain, now):
        _report(report, settlement)
        return
    if on_chain.status in (ChainStatus.POSTED, ChainStatus.CHALLENGED, ChainStatus.UPHELD):
        _block(
            session,
            settlement,
            "posted_elsewhere",
            f"the vault holds another root {on_chain.root} for period {settlement.period_id}: an admin must "
            "have it challenged and cancelled before this one can be posted",
        )
        report.blocked[settlement.id] = "posted_elsewhere"
        return
    other = post_in_flight(session, settlement) if settlement.state != SettlementState.posting else None
    if other is not None:  # sent after it, this post could pass every check below and still be refused
        log.info("settlement %s waits: settlement %s of its merchant is being posted", settlement.id, other)
        # the reason names the settlement in flight: the one to look at if it never leaves ``posting``
        report.waiting[settlement.id] = f"{MERCHANT_POST_IN_FLIGHT}:{other}"
        return
    refused = preflight(chain, settlement)
    if refused is not None:
        code, message = refused
        _block(session, settlement, code, message)
        report.blocked[settlement.id] = code
        return
    settlement.state = SettlementState.posting
    settlement.error_code = settlement.error_message = None
    settlement.send_attempts += 1
    session.commit()  # from here on a crash resumes in posting, which re-checks the vault first
    source = session.get(Settlement, settlement.funded_by_pk) if settlement.funded_by_pk else None
    fn = post_call(chain, settlement, source)
    tx_hash = current_tx(session, chain, settlement)  # waiting or mined: never a second
    if tx_hash is None:
        try:
            tx_hash = send_post(session, chain, settings, settlement, fn)  # recorded before it leaves
        except ContractRevert as exc:
            _after_revert(session, chain, settlement, exc, report)
            return
        except NotSent as exc:
            _wait(session, settlement, report, exc.reason, exc.detail)
            return
    try:
        result = chain.wait_for_receipt(tx_hash, replay=fn, sender=chain.signer_address)
    except ContractRevert as exc:
        _after_revert(session, chain, settlement, exc, report)
        return
    except ChainError as exc:
        if exc.code != "chain_timeout":
            raise
        # sent and waiting in the mempool: the next run follows it (and replaces it once stuck); the
        # other settlements of this run go on
        _wait(session, settlement, report, POST_IN_MEMPOOL, exc.message)
        return
    settlement.block_number = result.block_number
    session.commit()
    _adopt(session, settlement, chain_settlement(chain, settlement), chain_time(chain))
    _report(report, settlement)


def _after_revert(
    session: Session, chain: ChainClient, settlement: Settlement, exc: ContractRevert, report: RunReport
) -> None:
    # Whatever the revert says, a settlement with our root on chain means someone's post carried it.
    if _adopt(session, settlement, chain_settlement(chain, settlement), chain_time(chain)):
        _report(report, settlement)
        return
    code = {
        "InsufficientEscrow": "insufficient_escrow",
        "TokenNotAllowed": "token_not_allowed",
        "PeriodCapExceeded": "period_cap_exceeded",
        "RateCapExceeded": "rate_cap_exceeded",
        "SettlerNotChosen": "settler_not_chosen",
        "PeriodNotEnded": "period_not_ended",
    }.get(exc.error, f"post_reverted:{exc.error}")
    settlement.tx_hash = settlement.tx_prev_hash = None
    _block(session, settlement, code, exc.message)
    report.blocked[settlement.id] = code


def follow(
    session: Session, chain: ChainClient, settings: Settings, settlement: Settlement, report: RunReport
) -> None:
    """posting / posted / challenged -> whatever the vault and the chain's clock say now."""
    if settlement.state == SettlementState.posting:
        current = current_tx(session, chain, settlement)
        if current is not None and chain.receipt_if_mined(current) is None:
            # in the mempool: never a second post; the same one bidding more, once stuck (post_tx.py)
            source = session.get(Settlement, settlement.funded_by_pk) if settlement.funded_by_pk else None
            try:
                if replace_if_stuck(session, chain, settings, settlement, source) is not None:
                    report.replaced.append(settlement.id)
            except NotSent as exc:
                _wait(session, settlement, report, exc.reason, exc.detail)
            return
        post(session, chain, settings, settlement, report)
        return
    on_chain = chain_settlement(chain, settlement)
    if _adopt(session, settlement, on_chain, chain_time(chain)):
        _report(report, settlement)
        return
    # Our post is gone from the chain (reorged out): post it again. It stays ``posting`` (its merchant's
    # other posts wait for it), and its transaction, back in a mempool after the reorg, is still the
    # post's (post_tx.current_tx).
    log.warning("settlement %s: post no longer on chain, re-posting", settlement.id)
    settlement.state = SettlementState.posting
    settlement.tx_prev_hash = settlement.tx_hash
    settlement.tx_hash = settlement.block_number = settlement.claims_open_at = None
    session.commit()
    post(session, chain, settings, settlement, report)


def _wait(session: Session, settlement: Settlement, report: RunReport, reason: str, detail: str) -> None:
    """Leaves a post as it is for a later run: the reason in the run's report, and on a row in
    ``posting`` (what the settlement API shows) until the post is adopted."""
    log.warning("settlement %s: post waits (%s): %s", settlement.id, reason, detail)
    report.waiting[settlement.id] = reason
    if settlement.state == SettlementState.posting:
        settlement.error_code, settlement.error_message = reason[:64], detail
        session.commit()


def _report(report: RunReport, settlement: Settlement) -> None:
    if settlement.state == SettlementState.claimable:
        report.claimable.append(settlement.id)
    elif settlement.state == SettlementState.cancelled:
        report.cancelled.append(settlement.id)
    elif settlement.state in (SettlementState.posted, SettlementState.challenged):
        report.posted.append(settlement.id)


# ----------------------------------------------------------------------------------------------
# One run of the scheduler
# ----------------------------------------------------------------------------------------------


@contextmanager
def _settlement_lock(session: Session, settings: Settings, settlement_pk: int) -> Iterator[bool]:
    lock_dir = Path(settings.data_dir) / "locks"
    with exclusive_work(session, lock_dir, "settlement", settlement_pk) as locked:
        yield locked


def advance(
    session: Session, chain: ChainClient, settings: Settings, settlement: Settlement, report: RunReport
) -> None:
    """One step (or several) of one settlement, holding its lock."""
    with _settlement_lock(session, settings, settlement.id) as locked:
        if not locked:
            report.busy.append(settlement.id)
            return
        session.refresh(settlement)
        state = settlement.state
        # a release is computed when it is opened
        computes = settlement.kind in (SettlementKind.period, SettlementKind.correction)
        if state == SettlementState.blocked and computes and settlement.error_code not in POST_BLOCKS:
            compute(session, settings, chain, settlement, platform_address(settings, chain.signer_address))
            if settlement.state == SettlementState.computed:
                report.computed.append(settlement.id)
            elif settlement.state == SettlementState.blocked:
                report.blocked[settlement.id] = settlement.error_code or "blocked"
                return
        if settlement.state in (SettlementState.computed, SettlementState.blocked):
            post(session, chain, settings, settlement, report)
        elif settlement.state in (
            SettlementState.posting,
            SettlementState.posted,
            SettlementState.challenged,
        ):
            follow(session, chain, settings, settlement, report)


def run_once(
    session: Session, chain: ChainClient, settings: Settings, now: int, *, early: bool = False
) -> RunReport:
    """Opens due periods, computes, posts and follows every open settlement, oldest period first.

    RPC trouble stops the run (``retryable``); every step is resumable from the database.
    """
    report = RunReport()
    open_due_periods(session, settings, now, report, early=early)
    report.corrections = open_corrections(session)
    try:
        report.released = open_releases(
            session, chain, settings, platform_address(settings, chain.signer_address)
        )
    except ChainError as exc:
        session.rollback()
        log.warning("held royalties: chain unavailable: %s", exc.message)
        report.retryable = True
    except SettlementError as exc:
        session.rollback()
        log.warning("held royalties not released: %s", exc.message)
    ids = list(
        session.scalars(
            select(Settlement.id)
            .where(Settlement.state.in_([s.value for s in _ACTIVE]))
            .order_by(Settlement.period_start, Settlement.id)
        )
    )
    for settlement_id in ids:
        settlement = session.get(Settlement, settlement_id)
        if settlement is None:
            continue
        try:
            advance(session, chain, settings, settlement, report)
        except ContractRevert as exc:
            session.rollback()
            report.blocked[settlement_id] = exc.error
        except ChainError as exc:
            session.rollback()
            log.warning("settlement %s: chain unavailable: %s", settlement_id, exc.message)
            report.retryable = True
            break
        except Exception as exc:  # one settlement's unforeseen failure must not stop the others'
            session.rollback()
            if isinstance(exc, OperationalError | InterfaceError) or getattr(
                exc, "connection_invalidated", False
            ):
                raise  # the database itself: the whole run retries
            _isolate(session, settlement_id, exc, report)
    return report


def _isolate(session: Session, settlement_id: int, exc: Exception, report: RunReport) -> None:
    """After one settlement's unexpected failure (rolled back): one not sent yet (blocked or computed, as
    committed) is blocked with the error's code (``internal_error`` for anything but a SettlementError),
    so every run recomputes it; one being sent or posted stays as it is, for the next run to follow
    (recomputing it could change the root the vault holds, and lose the payouts behind it)."""
    code = exc.code if isinstance(exc, SettlementError) else "internal_error"
    log.error("settlement %s: %s", settlement_id, code, exc_info=exc)
    report.blocked[settlement_id] = code
    failed = session.get(Settlement, settlement_id)  # as committed: a post under way is ``posting`` by now
    if failed is None or failed.state not in (SettlementState.blocked, SettlementState.computed):
        return
    if failed.tx_hash is not None:
        return
    message = (
        exc.message
        if isinstance(exc, SettlementError)
        else f"an unexpected {type(exc).__name__} stopped this settlement (logged on the server); "
        "every run retries it"
    )
    _block(session, failed, code, message)


_ACTIVE = (
    SettlementState.blocked,
    SettlementState.computed,
    SettlementState.posting,
    SettlementState.posted,
    SettlementState.challenged,
)


def recompute(session: Session, settings: Settings, settlement: Settlement) -> Settlement:
    """A new attempt after a cancelled one, or a fresh computation of a blocked one (admin action)."""
    if settlement.state == SettlementState.blocked:
        settlement.error_code = "not_computed"
        settlement.error_message = "recompute requested"
        session.commit()
        return settlement
    if settlement.kind != SettlementKind.period:
        raise SettlementError(
            f"settlement {settlement.id} is a {settlement.kind}: a cancelled release's royalties are held "
            "again and released anew, a cancelled correction's batches go to the next correction, by the "
            "next run",
            code="settlement_not_recomputable",
            status=409,
        )
    if settlement.state != SettlementState.cancelled:
        raise SettlementError(
            f"settlement {settlement.id} is {settlement.state}: only blocked or cancelled ones can be "
            "recomputed",
            code="settlement_not_recomputable",
            status=409,
        )
    newer = session.scalar(
        select(func.max(Settlement.attempt)).where(
            Settlement.merchant_user_id == settlement.merchant_user_id,
            Settlement.period_start == settlement.period_start,
            Settlement.sequence == 0,
        )
    )
    if newer is not None and newer > settlement.attempt:
        raise SettlementError(
            f"period already has attempt {newer}", code="settlement_not_recomputable", status=409
        )
    attempt = Settlement(
        merchant_user_id=settlement.merchant_user_id,
        period_start=settlement.period_start,
        period_end=settlement.period_end,
        period_id=settlement.period_id,
        attempt=settlement.attempt + 1,
        state=SettlementState.blocked,
        error_code="not_computed",
        error_message=f"recompute of cancelled attempt {settlement.attempt}",
        merchant_address=settlement.merchant_address,
        token=settlement.token,
    )
    session.add(attempt)
    session.commit()
    return attempt


def inputs_document(
    settlement: Settlement, chain_id: int | None, vault: str | None, registry: str | None = None
) -> dict[str, Any]:
    """The published inputs of a computed settlement: enough to recompute its payouts and root
    (verify/settlement.py) and to compare them with the vault. An ``empty`` settlement with receipts has
    them too (no root: it charged nothing and was never posted)."""
    if settlement.inputs_gz is None:
        raise SettlementError(
            f"settlement {settlement.id} has no inputs ({settlement.state}: nothing computed or delivered)",
            code="nothing_to_pay",
            status=409,
        )
    release = settlement.kind == SettlementKind.release
    return {
        "version": RELEASE_VERSION if release else DOCUMENT_VERSION,
        "kind": settlement.kind,
        "sequence": settlement.sequence,
        "settlement_id": settlement.id,
        "chain_id": chain_id,
        "vault": vault,
        "period_id": settlement.period_id,
        "merchant": to_checksum_address(settlement.merchant_address),
        "token": to_checksum_address(settlement.token),
        "registry": registry,
        "terms_block": settlement.terms_block,
        "root": settlement.root,
        "total": settlement.total,
        # the block of our posting transaction (None until posted): verify reads its events there
        "posted_block": settlement.block_number,
        "inputs_digest": settlement.inputs_digest,
        "inputs": json.loads(gzip.decompress(settlement.inputs_gz)),
    }
