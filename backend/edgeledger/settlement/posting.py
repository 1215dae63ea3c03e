"""Before a post is sent (flows.py ``post``; docs/settlement.md, "Posting, exactly once"): one post in
flight per merchant, and the vault's own checks read from the chain.

* **One post in flight per merchant.** The vault checks a post against what the merchant's earlier posts
  reserved (its cap per period, its rate cap per span, its escrow), and a post not mined yet has reserved
  nothing: two posts of one merchant sent before the first is mined both pass the checks below, and the
  vault refuses the second (recorded as the cap's or the escrow's code) or, when both land in one block,
  reverts it where a replay at the previous block cannot say why (``post_reverted:Reverted``). So a post
  is sent only by the worker holding the merchant's lock (:func:`merchant_lock`, across workers and
  hosts, held from these checks through the send to the receipt) and only while no other settlement of
  the merchant is ``posting`` (:func:`post_in_flight`: its post sent, or about to be, and not yet seen in
  the vault). Otherwise the settlement is left as it is, reported by the run (``busy``: another worker
  holds the lock; ``waiting``: :data:`MERCHANT_POST_IN_FLIGHT` and the id in flight), and a later run
  posts it once the other post is mined and followed. Nothing is sent and nothing needs a person.
* **The vault's checks** (:func:`preflight`), in the vault's order (its ``_post``): the period's end on
  the vault's clock, the merchant's bounds (settlement/bounds.py), the token, the escrow. A post one of
  them would refuse is not sent; the settlement is blocked with the reason until it clears.
* **One transaction per post, at one nonce** (:func:`send_post`, :func:`replace_stuck`): the nonce and
  the hash are recorded before the transaction leaves, so whatever may be in the mempool is known. A
  post left unmined ``POST_REPLACE_AFTER_SECONDS`` is sent again at its nonce with fees 25 % higher
  (chain/fees.py), never above ``TX_MAX_FEE_PER_GAS_WEI``: one transaction per nonce can be mined, so
  the replacement and the one it replaces never both post. A replacement's hash is recorded after the
  node took it (until then the one it replaces may still be mined); a worker dying between the two
  leaves a transaction at the post's nonce that the row does not name, so no new one is sent while the
  nonce is taken and not mined (``waiting``: :data:`POST_NONCE_TAKEN`). Either way, at most one
  transaction of a post can be mined, and the vault takes one root per period besides.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient, ChainError, ContractRevert
from edgeledger.chain.fees import capped, replacement
from edgeledger.config import Settings
from edgeledger.db import exclusive_work, utcnow
from edgeledger.ledger.abis import SETTLEMENT_VAULT
from edgeledger.ledger.vault import PERIOD_MASK
from edgeledger.settlement import SettlementError
from edgeledger.settlement.bounds import merchant_bounds
from edgeledger.settlement.models import Settlement, SettlementKind, SettlementState

log = logging.getLogger(__name__)

#: the run's ``waiting`` reason of a settlement whose merchant has another post in flight
MERCHANT_POST_IN_FLIGHT = "merchant_post_in_flight"
#: ``waiting``: the post's transaction waits in the mempool, and a replacement would bid above
#: TX_MAX_FEE_PER_GAS_WEI
POST_FEE_CAPPED = "post_fee_capped"
#: ``waiting``: a transaction the row does not name waits at the post's nonce (a replacement the worker
#: sent as it died): nothing is sent until that nonce is mined
POST_NONCE_TAKEN = "post_nonce_taken"
#: ``waiting``: the node kept the pending transaction at the post's nonce, bidding at least as much
POST_REPLACEMENT_REFUSED = "post_replacement_refused"


@contextmanager
def merchant_lock(session: Session, settings: Settings, merchant_user_id: int) -> Iterator[bool]:
    """Posting for one merchant, one worker at a time (``exclusive_work``): yields False, at once, when
    another worker holds it."""
    lock_dir = Path(settings.data_dir) / "locks"
    with exclusive_work(session, lock_dir, "settlement-merchant", merchant_user_id) as locked:
        yield locked


def post_in_flight(session: Session, settlement: Settlement) -> int | None:
    """The id of another settlement of the merchant in ``posting`` (its post sent or about to be, not yet
    adopted from the vault), or None. Read under :func:`merchant_lock`, which every move into ``posting``
    is made under, so none can appear between this read and the send."""
    return session.scalar(
        select(Settlement.id)
        .where(
            Settlement.merchant_user_id == settlement.merchant_user_id,
            Settlement.state == SettlementState.posting,
            Settlement.id != settlement.id,
        )
        .order_by(Settlement.id)
        .limit(1)
    )


def chain_time(chain: ChainClient) -> int:
    """The latest block's timestamp, read now: what the vault's ``block.timestamp`` checks see."""
    return chain.latest_timestamp(max_age=0)


def preflight(chain: ChainClient, settlement: Settlement) -> tuple[str, str] | None:
    """Why the vault would refuse this post now, as a blocked reason (code, message), in the vault's order:
    the period's end, the merchant's bounds, the token, the escrow; None when it would take it. Only
    what is mined counts: hence one post in flight per merchant."""
    vault = chain.contract(SETTLEMENT_VAULT)
    merchant, token = to_checksum_address(settlement.merchant_address), to_checksum_address(settlement.token)
    timing = period_timing(chain, settlement)
    if timing is not None:
        return timing
    bounded = merchant_bounds(chain, settlement, merchant, token)
    if bounded is not None:
        return bounded
    if not chain.call(vault.functions.isTokenAllowed(token)):
        return ("token_not_allowed", f"token {token} is not allow-listed in the vault")
    escrow = int(chain.call(vault.functions.escrowOf(merchant, token)))
    needed = settlement.total + settlement.held_total  # a release is paid from its period's held reserve
    if settlement.kind != SettlementKind.release and escrow < needed:
        held = f" and {settlement.held_total} held back" if settlement.held_total else ""
        return (
            "insufficient_escrow",
            f"escrow {escrow} is below the settlement total {settlement.total}{held}: not posted; the "
            f"merchant must deposit {needed - escrow} more",
        )
    return None


def period_timing(chain: ChainClient, settlement: Settlement) -> tuple[str, str] | None:
    """The vault's own period clock (``PERIOD_SECONDS``) against this settlement: a vault deployed with
    another period length would price other periods than the ones settled here, and no root is posted
    before the vault's clock says the period ended."""
    seconds = int(chain.call(chain.contract(SETTLEMENT_VAULT).functions.PERIOD_SECONDS()))
    ends_at = ((settlement.period_id & PERIOD_MASK) + 1) * seconds
    if ends_at != settlement.period_end:
        return (
            "period_length_mismatch",
            f"the vault's periods last {seconds} s, so period {settlement.period_id} ends at {ends_at} on "
            f"chain, not at {settlement.period_end}: DELIVERY_PERIOD_SECONDS must equal the vault's "
            "PERIOD_SECONDS (docs/custody.md)",
        )
    now = chain_time(chain)
    if now < ends_at:
        return ("period_not_ended", f"the period ends at {ends_at}; the chain's clock says {now}")
    return None


def post_call(chain: ChainClient, settlement: Settlement, source: Settlement | None) -> Any:
    """``postWithHeld`` of a period or a correction (its root, total and held royalties), or
    ``releaseHeld`` of a release (paid from the held reserve of ``source``, the period or correction that
    held the royalties: same low 32 bits of the id)."""
    assert settlement.root is not None
    vault = chain.contract(SETTLEMENT_VAULT)
    merchant = to_checksum_address(settlement.merchant_address)
    if settlement.kind == SettlementKind.release:
        if source is None:
            raise SettlementError(f"release {settlement.id} has no source settlement", code="release_orphan")
        return vault.functions.releaseHeld(
            source.period_id, merchant, settlement.period_id, HexBytes(settlement.root), settlement.total
        )
    return vault.functions.postWithHeld(
        settlement.period_id,
        merchant,
        to_checksum_address(settlement.token),
        HexBytes(settlement.root),
        settlement.total,
        settlement.held_total,
    )


def send_post(
    session: Session, chain: ChainClient, settings: Settings, settlement: Settlement, fn: Any
) -> str | None:
    """Sends the post ``fn`` of a settlement whose recorded transaction is not in the mempool: its hash,
    or None (``waiting``, :data:`POST_NONCE_TAKEN`) while a transaction the row does not name waits at
    its nonce. The nonce and hash are committed before the transaction leaves. Reverts raise as from
    :meth:`ChainClient.send`."""
    nonce = settlement.tx_nonce
    if nonce is not None and not chain.nonce_mined(nonce) and chain.pending_nonce() > nonce:
        return None

    def record(nonce: int, tx_hash: str) -> None:
        settlement.tx_nonce, settlement.tx_hash, settlement.tx_sent_at = nonce, tx_hash, utcnow()
        session.commit()

    fees = capped(chain.market_fees(), settings.tx_max_fee_per_gas_wei)
    return chain.send(fn, fees=fees, before_broadcast=record)


def replace_if_stuck(
    session: Session,
    chain: ChainClient,
    settings: Settings,
    settlement: Settlement,
    source: Settlement | None,
) -> tuple[str | None, str | None]:
    """A post waiting in the mempool for POST_REPLACE_AFTER_SECONDS is sent again at its nonce, bidding
    more: (its new hash, None), or (None, the run's ``waiting`` reason) when it was left as it is, or
    (None, None) while it has not waited long enough or was mined meanwhile."""
    now = utcnow()
    if settlement.tx_sent_at is None:  # sent before its time was recorded: dated from now
        settlement.tx_sent_at = now
        session.commit()
    if not stuck(settings, settlement, now):
        return None, None
    try:
        replaced = replace_stuck(session, chain, settings, settlement, post_call(chain, settlement, source))
    except NotReplaced as exc:
        log.warning("settlement %s: post %s left in the mempool (%s)", settlement.id, settlement.tx_hash, exc)
        return None, exc.reason
    except ContractRevert as exc:  # the pending post reverts too once mined, and its receipt says so
        return None, f"post_replacement_reverts:{exc.error}"
    if replaced is not None:
        log.warning("settlement %s: post stuck in the mempool, sent again as %s", settlement.id, replaced)
    return replaced, None


def stuck(settings: Settings, settlement: Settlement, now: datetime) -> bool:
    """Whether the post's transaction has waited unmined long enough to be replaced."""
    sent = settlement.tx_sent_at
    return sent is not None and (now - sent).total_seconds() >= settings.post_replace_after_seconds


def replace_stuck(
    session: Session, chain: ChainClient, settings: Settings, settlement: Settlement, fn: Any
) -> str | None:
    """Sends the post ``fn`` again at the nonce of its pending transaction, bidding 25 % more and at
    least the market (chain/fees.py), and records the new hash once the node took it. None when there is
    nothing to replace any more (mined meanwhile); :class:`NotReplaced` with the run's ``waiting``
    reason when the cap or the node leaves the pending one in place."""
    assert settlement.tx_hash is not None
    pending = chain.pending_tx(settlement.tx_hash)
    if pending is None:  # mined or gone since it was looked at: the next run follows it
        return None
    nonce, fees = pending
    bid = replacement(fees, chain.market_fees(), settings.tx_max_fee_per_gas_wei)
    if bid is None:
        raise NotReplaced(POST_FEE_CAPPED)
    try:
        tx_hash = chain.send(fn, nonce=nonce, fees=bid)
    except ChainError as exc:
        if exc.code == "chain_replacement_underpriced":
            raise NotReplaced(POST_REPLACEMENT_REFUSED) from exc
        if exc.code == "chain_nonce_used":
            return None  # the transaction it was to replace was mined meanwhile
        raise
    settlement.tx_nonce, settlement.tx_hash, settlement.tx_sent_at = nonce, tx_hash, utcnow()
    session.commit()
    return tx_hash


class NotReplaced(Exception):
    """A stuck post was left as it is; ``reason`` is the run's ``waiting`` reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
