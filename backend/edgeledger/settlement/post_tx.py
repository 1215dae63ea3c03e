"""A post's transaction: one nonce per post, sent again bidding more when stuck (flows.py ``post`` and
``follow``; docs/settlement.md, "A post stuck in the mempool").

A post is one transaction of the server's signer at one nonce, and only one transaction per nonce can
ever be mined: whatever is sent again at that nonce, the post lands at most once (and the vault takes
one root per period besides).

* **Recorded before it leaves.** :func:`send_post` and :func:`replace_if_stuck` commit the nonce and the
  hash (``tx_nonce``, ``tx_hash``; a replacement keeps the one it replaces in ``tx_prev_hash``) before
  the transaction is broadcast, so whatever may be in the mempool is named by the row. A worker dying
  between the record and the broadcast leaves a hash the node never saw: :func:`current_tx` then finds
  the one it was to replace, still waiting, and names it again; a node refusing the broadcast is undone
  the same way at once.
* **The recorded nonce first.** A post whose transaction is gone (dropped from the mempool, or reorged
  out) is sent again at its recorded nonce while that nonce is free, and not at all while a transaction
  the row does not name waits there (``waiting``: :data:`POST_NONCE_TAKEN`; that nonce's transaction is
  then another flow's, and the post goes once it is mined). Once the nonce is mined by something else,
  the post takes the signer's next one.
* **Stuck: the same call, bidding more.** A post waiting in the mempool for ``POST_REPLACE_AFTER_SECONDS``
  is sent again at its nonce, with its own gas limit (never re-estimated: a call that would now revert
  must still take the nonce, or the signer's every later transaction waits behind it; it is mined,
  reverts, and its receipt blocks the settlement with the vault's reason), bidding 25 % more on both
  fee cap and tip, and at least the market (chain/fees.py). Only when its nonce is the next the chain
  mines and its bid is below the market's: a post queued behind another transaction of the signer
  (``post_queued_behind:<nonce>``) or already bidding the market (:data:`POST_NOT_MINED`) gains nothing
  from a higher bid, and repeated raises would only overpay once the queue moves.
* **A ceiling.** No bid of a post is above ``TX_MAX_FEE_PER_GAS_WEI``, nor sent below the latest base
  fee (a node refuses it, or holds it unmined): :data:`POST_FEE_CAPPED` instead, and nothing is sent.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session
from web3.exceptions import Web3RPCError

from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.chain.fees import Fees, capped, replacement
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.settlement.models import Settlement
from edgeledger.settlement.posting import post_call

log = logging.getLogger(__name__)

#: ``waiting``: no bid under TX_MAX_FEE_PER_GAS_WEI would be taken (below the base fee, or not enough
#: above the post's waiting transaction); nothing is sent
POST_FEE_CAPPED = "post_fee_capped"
#: ``waiting``: a transaction the row does not name waits at the post's recorded nonce; nothing is sent
#: until that nonce is mined
POST_NONCE_TAKEN = "post_nonce_taken"
#: ``waiting``: the node kept the transaction waiting at the post's nonce (it bids at least as much)
POST_REPLACEMENT_REFUSED = "post_replacement_refused"
#: ``waiting`` (with ``:<nonce>``): the post waits behind an earlier transaction of the signer
POST_QUEUED_BEHIND = "post_queued_behind"
#: ``waiting``: the post was sent and is not mined within TX_TIMEOUT_SECONDS; the next run follows it
POST_IN_MEMPOOL = "post_in_mempool"
#: ``waiting``: the post is next in line and bids at least the market, yet is not mined
POST_NOT_MINED = "post_not_mined"
#: ``waiting``: the node refused the post's fees as too low (below the base fee or its minimum)
POST_FEE_TOO_LOW = "post_fee_too_low"
#: the node's refusals of a broadcast, as the run's ``waiting`` reasons
REFUSALS = {
    "chain_replacement_underpriced": POST_REPLACEMENT_REFUSED,
    "chain_fee_too_low": POST_FEE_TOO_LOW,
    "chain_nonce_used": "post_nonce_used",
    "chain_nonce_taken": POST_NONCE_TAKEN,
    "chain_insufficient_funds": "signer_insufficient_funds",
}
#: ``waiting``: the node refused the broadcast for a reason not listed above (its message is logged)
POST_REFUSED = "post_refused"


class NotSent(Exception):
    """Nothing was sent for the post; ``reason`` is the run's ``waiting`` reason, ``detail`` what the
    node or the check said."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or _DETAILS.get(reason.split(":")[0], reason)


def current_tx(session: Session, chain: ChainClient, settlement: Settlement) -> str | None:
    """The hash of the post's transaction as the node knows it (waiting or mined), or None: the recorded
    one, else the one it replaced (a replacement recorded but never broadcast), named again."""
    for tx_hash in (settlement.tx_hash, settlement.tx_prev_hash):
        if tx_hash is not None and chain.known_tx(tx_hash):
            if tx_hash != settlement.tx_hash:
                settlement.tx_hash, settlement.tx_prev_hash = tx_hash, None
                session.commit()
            return tx_hash
    return None


def send_post(
    session: Session, chain: ChainClient, settings: Settings, settlement: Settlement, fn: Any
) -> str:
    """Sends the post ``fn`` of a settlement none of whose transactions the node knows: at its recorded
    nonce while that is free, else at the signer's next; nonce and hash committed before it leaves.
    :class:`NotSent` when the recorded nonce is taken, the ceiling is below the base fee, or the node
    refuses it; reverts raise as from :meth:`ChainClient.send`."""
    nonce = settlement.tx_nonce
    again: int | None = None  # its recorded nonce, if no transaction has taken it (read under the lock)
    if nonce is not None and not chain.nonce_mined(nonce):
        if chain.pending_nonce() > nonce:
            raise NotSent(POST_NONCE_TAKEN)
        again = nonce
    fees = _bid(chain, chain.market_fees(), settings)

    def record(nonce: int, tx_hash: str) -> None:
        settlement.tx_nonce, settlement.tx_hash, settlement.tx_prev_hash = nonce, tx_hash, None
        settlement.tx_sent_at = utcnow()
        session.commit()

    try:
        return chain.send(fn, nonce_if_next=again, fees=fees, before_broadcast=record)
    except ChainError as exc:
        if exc.code in REFUSALS:
            raise NotSent(REFUSALS[exc.code], exc.message) from exc
        raise
    except Web3RPCError as exc:  # a refusal no node message above names: the row says so, every run
        raise NotSent(POST_REFUSED, str(exc)) from exc


def stuck(settings: Settings, settlement: Settlement, now: datetime) -> bool:
    """Whether the post's transaction has waited unmined long enough to be replaced."""
    sent = settlement.tx_sent_at
    return sent is not None and (now - sent).total_seconds() >= settings.post_replace_after_seconds


def replace_if_stuck(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    settlement: Settlement,
    source: Settlement | None,
) -> str | None:
    """The post's transaction ``tx_hash`` waits in the mempool: once it has waited POST_REPLACE_AFTER_SECONDS
    at the head of the signer's queue, bidding below the market, the same call is sent again at its
    nonce bidding more. The replacement's hash, or None while it has not waited long enough or was mined
    meanwhile; :class:`NotSent` with the run's ``waiting`` reason when it is left as it is."""
    now = utcnow()
    if settlement.tx_sent_at is None:  # sent before its time was recorded: dated from now
        settlement.tx_sent_at = now
        session.commit()
    if not stuck(settings, settlement, now):
        return None
    old = settlement.tx_hash
    assert old is not None
    pending = chain.pending_tx(old)
    if pending is None:  # mined or gone since it was looked at: the next run follows it
        return None
    head = chain.mined_nonce()
    if head < pending.nonce:
        raise NotSent(f"{POST_QUEUED_BEHIND}:{head}")
    market = chain.market_fees()
    if (
        pending.fees.max_fee_per_gas >= market.max_fee_per_gas
        and pending.fees.max_priority_fee_per_gas >= market.max_priority_fee_per_gas
    ):
        raise NotSent(POST_NOT_MINED)
    bid = replacement(pending.fees, market, settings.tx_max_fee_per_gas_wei)
    if bid is None:
        raise NotSent(POST_FEE_CAPPED)
    bid = _bid(chain, bid, settings)

    def record(nonce: int, tx_hash: str) -> None:
        settlement.tx_nonce, settlement.tx_hash, settlement.tx_prev_hash = nonce, tx_hash, old
        settlement.tx_sent_at = utcnow()
        session.commit()

    fn = post_call(chain, settlement, source)
    try:
        tx_hash = chain.send(fn, nonce=pending.nonce, fees=bid, gas=pending.gas, before_broadcast=record)
    except (ChainError, Web3RPCError) as exc:
        code = exc.code if isinstance(exc, ChainError) else None
        if isinstance(exc, ChainError) and code not in REFUSALS:
            raise
        settlement.tx_hash, settlement.tx_prev_hash, settlement.tx_sent_at = old, None, now
        session.commit()  # the node kept the one it was to replace: named again
        if code == "chain_nonce_used":
            return None  # mined meanwhile: the next run follows it
        raise NotSent(REFUSALS.get(code or "", POST_REFUSED), str(exc)) from exc
    log.warning("settlement %s: post %s stuck in the mempool, sent again as %s", settlement.id, old, tx_hash)
    return tx_hash


def _bid(chain: ChainClient, wanted: Fees, settings: Settings) -> Fees:
    """``wanted`` under the ceiling, or :class:`NotSent` when the ceiling is below the base fee."""
    bid = capped(wanted, settings.tx_max_fee_per_gas_wei)
    if bid.max_fee_per_gas < chain.base_fee():
        raise NotSent(POST_FEE_CAPPED)
    return bid


_DETAILS = {
    POST_FEE_CAPPED: "no bid under TX_MAX_FEE_PER_GAS_WEI would be taken: the post waits for the base fee "
    "to fall, or for the ceiling to be raised",
    POST_NONCE_TAKEN: "a transaction the settlement does not name waits at its nonce: nothing is sent until "
    "that nonce is mined",
    POST_QUEUED_BEHIND: "the post waits behind an earlier transaction of the server's signer, at the nonce "
    "named in the reason",
    POST_NOT_MINED: "the post is next in line and bids at least the market, yet is not mined",
    POST_REPLACEMENT_REFUSED: "the node kept the transaction waiting at the post's nonce",
}
