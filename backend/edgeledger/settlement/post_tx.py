"""A post's transaction: one nonce per post, sent again bidding more when stuck (flows.py ``post`` and
``follow``; docs/settlement.md, "A post stuck in the mempool").

A post is one transaction of the server's signer at one nonce, and only one transaction per nonce can
ever be mined: whatever is sent again at that nonce, the post lands at most once (and the vault takes
one root per period besides). The discipline is the signer's for every flow (chain/stuck_tx.py: recorded
before it leaves, the recorded nonce first, the same call bidding more once stuck, a ceiling); this
module is the settlement's side of it: the row (``tx_nonce``, ``tx_hash``, ``tx_prev_hash``,
``tx_sent_at``), its commit, the post's call and the ``post_*`` waiting reasons.
"""

from __future__ import annotations

from sqlalchemy.orm import Session

from edgeledger.chain import stuck_tx
from edgeledger.chain.client import ChainClient
from edgeledger.chain.stuck_tx import NotSent
from edgeledger.config import Settings
from edgeledger.settlement.models import Settlement
from edgeledger.settlement.posting import post_call

__all__ = [
    "POST_FEE_CAPPED",
    "POST_IN_MEMPOOL",
    "POST_NONCE_TAKEN",
    "POST_NOT_MINED",
    "POST_QUEUED_BEHIND",
    "POST_REFUSED",
    "POST_REPLACEMENT_REFUSED",
    "NotSent",
    "current_tx",
    "replace_if_stuck",
    "send_post",
]

WHAT = "post"
#: ``waiting``: no bid under TX_MAX_FEE_PER_GAS_WEI would be taken (below the base fee, or not enough
#: above the post's waiting transaction); nothing is sent
POST_FEE_CAPPED = stuck_tx.reason(WHAT, stuck_tx.FEE_CAPPED)
#: ``waiting``: a transaction the row does not name waits at the post's recorded nonce; nothing is sent
#: until that nonce is mined
POST_NONCE_TAKEN = stuck_tx.reason(WHAT, stuck_tx.NONCE_TAKEN)
#: ``waiting``: the node kept the transaction waiting at the post's nonce (it bids at least as much)
POST_REPLACEMENT_REFUSED = stuck_tx.reason(WHAT, stuck_tx.REPLACEMENT_REFUSED)
#: ``waiting`` (with ``:<nonce>``): the post waits behind an earlier transaction of the signer
POST_QUEUED_BEHIND = stuck_tx.reason(WHAT, stuck_tx.QUEUED_BEHIND)
#: ``waiting``: the post was sent and is not mined within TX_TIMEOUT_SECONDS; the next run follows it
POST_IN_MEMPOOL = stuck_tx.reason(WHAT, stuck_tx.IN_MEMPOOL)
#: ``waiting``: the post is next in line and bids at least the market, yet is not mined
POST_NOT_MINED = stuck_tx.reason(WHAT, stuck_tx.NOT_MINED)
#: ``waiting``: the node refused the broadcast for a reason no code names (its message is kept)
POST_REFUSED = stuck_tx.reason(WHAT, stuck_tx.REFUSED)


def current_tx(session: Session, chain: ChainClient, settlement: Settlement) -> str | None:
    """The hash of the post's transaction as the node knows it (waiting or mined), or None
    (stuck_tx.current_tx)."""
    return stuck_tx.current_tx(settlement, chain, session.commit)


def send_post(
    session: Session, chain: ChainClient, settings: Settings, settlement: Settlement, fn: object
) -> str:
    """Sends the post ``fn`` of a settlement none of whose transactions the node knows, recorded before
    it leaves (stuck_tx.send_once); :class:`NotSent` with a ``post_*`` reason when it waits."""
    return stuck_tx.send_once(
        settlement,
        chain,
        fn,
        what=WHAT,
        max_fee_per_gas=settings.tx_max_fee_per_gas_wei,
        save=session.commit,
    )


def replace_if_stuck(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    settlement: Settlement,
    source: Settlement | None,
) -> str | None:
    """The post waiting in the mempool, sent again at its nonce bidding more once stuck
    (stuck_tx.replace_if_stuck): the replacement's hash, or None; :class:`NotSent` when it waits."""
    return stuck_tx.replace_if_stuck(
        settlement,
        chain,
        lambda: post_call(chain, settlement, source),
        what=WHAT,
        max_fee_per_gas=settings.tx_max_fee_per_gas_wei,
        replace_after_seconds=settings.tx_replace_after_seconds,
        save=session.commit,
    )
