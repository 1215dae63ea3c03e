"""One transaction of the server's signer at one nonce, sent again bidding more when it is stuck: the
discipline every flow whose transaction may wait in a mempool follows (settlement posts:
settlement/post_tx.py; anchors: deliveries/anchoring.py; relayed registrations and catalogues:
assets/flows.py ``send_journalled``, ``follow_journalled``; docs/settlement.md, "A post stuck in the
mempool").

Only one transaction per nonce can ever be mined: whatever is sent again at a slot's nonce, its call
lands at most once. The caller's row is the *slot*: it names the nonce, the hash, the transaction it
replaced and when it was sent (:class:`TxSlot`), and ``save`` makes what the row says durable (a commit).
This module holds no database session: it only needs the row's four attributes and ``save``.

* **Recorded before it leaves.** :func:`send_once` and :func:`replace_if_stuck` save the nonce and the
  hash (a replacement keeps the one it replaces in ``tx_prev_hash``) before the transaction is broadcast,
  so whatever may be in the mempool is named by the row. A worker dying between the save and the
  broadcast leaves a hash the node never saw: :func:`current_tx` then finds the one it was to replace,
  still waiting, and names it again; a node refusing the broadcast is undone the same way at once.
* **The recorded nonce first.** A slot whose transaction is gone (dropped from the mempool, or reorged
  out) is sent again at its recorded nonce while that nonce is free, and not at all while a transaction
  the row does not name waits there (``<what>_nonce_taken``: that nonce's transaction is another flow's,
  and the slot's goes once it is mined). Once the nonce is mined by something else, the slot takes the
  signer's next one.
* **Stuck: the same call, bidding more.** A transaction waiting in the mempool for
  ``TX_REPLACE_AFTER_SECONDS`` is sent again at its nonce, with its own gas limit (never re-estimated:
  a call that would now revert must still take the nonce, or the signer's every later transaction waits
  behind it), bidding 25 % more on both fee cap and tip, and at least the market (chain/fees.py). Only
  when its nonce is the next the chain mines and its bid is below the market's: one queued behind
  another transaction of the signer (``<what>_queued_behind:<nonce>``) or already bidding the market
  (``<what>_not_mined``) gains nothing from a higher bid, and repeated raises would only overpay once the
  queue moves.
* **A ceiling.** No bid is above ``TX_MAX_FEE_PER_GAS_WEI``, nor sent below the latest base fee (a node
  refuses it, or holds it unmined): ``<what>_fee_capped`` instead, and nothing is sent.

Every wait is a :class:`NotSent` whose ``reason`` is ``<what>_<why>`` (``what`` is the flow's noun:
``post``, ``anchor``, ``registration``, ``catalogue``), except ``signer_insufficient_funds``, which is
the signer's whatever it sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from web3.exceptions import Web3RPCError

from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.chain.fees import Fees, capped, replacement

log = logging.getLogger(__name__)

#: why a slot waits, as ``<what>_<why>`` (:func:`reason`)
FEE_CAPPED = "fee_capped"  # no bid under TX_MAX_FEE_PER_GAS_WEI would be taken; nothing is sent
NONCE_TAKEN = "nonce_taken"  # a transaction the row does not name waits at its nonce; nothing is sent
REPLACEMENT_REFUSED = "replacement_refused"  # the node kept the transaction waiting at its nonce
QUEUED_BEHIND = "queued_behind"  # (with ``:<nonce>``) it waits behind an earlier transaction of the signer
IN_MEMPOOL = "in_mempool"  # sent, and not mined within TX_TIMEOUT_SECONDS; the next run follows it
NOT_MINED = "not_mined"  # next in line and bidding at least the market, yet not mined
FEE_TOO_LOW = "fee_too_low"  # the node refused its fees as too low
NONCE_USED = "nonce_used"  # the node refused it: its nonce is mined
REFUSED = "refused"  # the node refused the broadcast for a reason not listed (its message is kept)
#: the signer's own trouble, whatever it sends
SIGNER_INSUFFICIENT_FUNDS = "signer_insufficient_funds"

#: the node's refusals of a broadcast (ChainClient._broadcast's codes) -> why the slot waits
_REFUSALS = {
    "chain_replacement_underpriced": REPLACEMENT_REFUSED,
    "chain_fee_too_low": FEE_TOO_LOW,
    "chain_nonce_used": NONCE_USED,
    "chain_nonce_taken": NONCE_TAKEN,
}
REFUSAL_CODES = frozenset(_REFUSALS) | {"chain_insufficient_funds"}


def reason(what: str, why: str) -> str:
    """The waiting reason ``<what>_<why>`` (``post_fee_capped``)."""
    return f"{what}_{why}"


def refusal(what: str, code: str | None) -> str:
    """The waiting reason of a node's refusal (a :class:`ChainError` code; None: unlisted)."""
    if code == "chain_insufficient_funds":
        return SIGNER_INSUFFICIENT_FUNDS
    return reason(what, _REFUSALS.get(code or "", REFUSED))


class TxSlot(Protocol):
    """A row naming one transaction of the signer (``settlements``, ``delivery_batches``,
    ``asset_registrations``, ``asset_catalogues``)."""

    tx_nonce: int | None
    tx_hash: str | None
    tx_prev_hash: str | None
    tx_sent_at: datetime | None


class NotSent(Exception):
    """Nothing was sent; ``reason`` is the run's ``waiting`` reason, ``detail`` what the node or the check
    said."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail or _detail(reason)


def current_tx(slot: TxSlot, chain: ChainClient, save: Callable[[], None]) -> str | None:
    """The hash of the slot's transaction as the node knows it (waiting or mined), or None: the recorded
    one, else the one it replaced (a replacement recorded but never broadcast), named again."""
    for tx_hash in (slot.tx_hash, slot.tx_prev_hash):
        if tx_hash is not None and chain.known_tx(tx_hash):
            if tx_hash != slot.tx_hash:
                slot.tx_hash, slot.tx_prev_hash = tx_hash, None
                save()
            return tx_hash
    return None


def send_once(
    slot: TxSlot,
    chain: ChainClient,
    fn: Any,
    *,
    what: str,
    max_fee_per_gas: int,
    save: Callable[[], None],
) -> str:
    """Sends ``fn`` for a slot none of whose transactions the node knows: at its recorded nonce while
    that is free, else at the signer's next; nonce and hash saved before it leaves. :class:`NotSent`
    when the recorded nonce is taken, the ceiling is below the base fee, or the node refuses it; reverts
    raise as from :meth:`ChainClient.send`."""
    nonce = slot.tx_nonce
    again: int | None = None  # its recorded nonce, if no transaction has taken it (read under the lock)
    if nonce is not None and not chain.nonce_mined(nonce):
        if chain.pending_nonce() > nonce:
            raise NotSent(reason(what, NONCE_TAKEN))
        again = nonce
    fees = _bid(chain, chain.market_fees(), max_fee_per_gas, what)
    recorded: list[str] = []

    def record(nonce: int, tx_hash: str) -> None:
        slot.tx_nonce, slot.tx_hash, slot.tx_prev_hash = nonce, tx_hash, None
        slot.tx_sent_at = _now()
        save()
        recorded.append(tx_hash)

    try:
        return chain.send(fn, nonce_if_next=again, fees=fees, before_broadcast=record)
    except ChainError as exc:
        if exc.code not in REFUSAL_CODES:
            raise  # the transport failed: the transaction may have left; the row names it
        _refused(slot, recorded, save)
        raise NotSent(refusal(what, exc.code), exc.message) from exc
    except Web3RPCError as exc:  # a refusal no node message above names: the row says so, every run
        _refused(slot, recorded, save)
        raise NotSent(refusal(what, None), str(exc)) from exc


def _refused(slot: TxSlot, recorded: list[str], save: Callable[[], None]) -> None:
    """The node refused the broadcast: the transaction the row names never left. Its hash goes (the
    nonce stays, for the next send), so nothing reads as "out" that is not (an admin may abandon a batch
    whose every send the node refused)."""
    if recorded and slot.tx_hash == recorded[-1]:
        slot.tx_hash = None
        save()


def stuck(slot: TxSlot, replace_after_seconds: float, now: datetime) -> bool:
    """Whether the slot's transaction has waited unmined long enough to be replaced."""
    sent = slot.tx_sent_at
    if sent is not None and sent.tzinfo is None:  # SQLite hands back naive UTC
        sent = sent.replace(tzinfo=UTC)
    return sent is not None and (now - sent).total_seconds() >= replace_after_seconds


def replace_if_stuck(
    slot: TxSlot,
    chain: ChainClient,
    call: Callable[[], Any],
    *,
    what: str,
    max_fee_per_gas: int,
    replace_after_seconds: float,
    save: Callable[[], None],
) -> str | None:
    """The slot's transaction ``tx_hash`` waits in the mempool: once it has waited
    ``replace_after_seconds`` at the head of the signer's queue, bidding below the market, ``call()`` is
    sent again at its nonce bidding more. The replacement's hash, or None while it has not waited long
    enough or was mined meanwhile; :class:`NotSent` with the run's ``waiting`` reason when it is left as
    it is."""
    now = _now()
    if slot.tx_sent_at is None:  # sent before its time was recorded: dated from now
        slot.tx_sent_at = now
        save()
    if not stuck(slot, replace_after_seconds, now):
        return None
    old = slot.tx_hash
    assert old is not None
    pending = chain.pending_tx(old)
    if pending is None:  # mined or gone since it was looked at: the next run follows it
        return None
    if pending.sender != chain.signer_address:  # another key's transaction carries the call: not ours
        return None  # to replace; the next run follows it (it lands, or is dropped and ours goes)
    head = chain.mined_nonce()
    if head < pending.nonce:
        raise NotSent(f"{reason(what, QUEUED_BEHIND)}:{head}")
    market = chain.market_fees()
    if (
        pending.fees.max_fee_per_gas >= market.max_fee_per_gas
        and pending.fees.max_priority_fee_per_gas >= market.max_priority_fee_per_gas
    ):
        raise NotSent(reason(what, NOT_MINED))
    bid = replacement(pending.fees, market, max_fee_per_gas)
    if bid is None:
        raise NotSent(reason(what, FEE_CAPPED))
    bid = _bid(chain, bid, max_fee_per_gas, what)

    def record(nonce: int, tx_hash: str) -> None:
        slot.tx_nonce, slot.tx_hash, slot.tx_prev_hash = nonce, tx_hash, old
        slot.tx_sent_at = _now()
        save()

    try:
        tx_hash = chain.send(call(), nonce=pending.nonce, fees=bid, gas=pending.gas, before_broadcast=record)
    except (ChainError, Web3RPCError) as exc:
        code = exc.code if isinstance(exc, ChainError) else None
        if isinstance(exc, ChainError) and code not in REFUSAL_CODES:
            raise
        slot.tx_hash, slot.tx_prev_hash, slot.tx_sent_at = old, None, now
        save()  # the node kept the one it was to replace: named again
        if code == "chain_nonce_used":
            return None  # mined meanwhile: the next run follows it
        raise NotSent(refusal(what, code), str(exc)) from exc
    log.warning("%s transaction %s stuck in the mempool, sent again as %s", what, old, tx_hash)
    return tx_hash


def _bid(chain: ChainClient, wanted: Fees, max_fee_per_gas: int, what: str) -> Fees:
    """``wanted`` under the ceiling, or :class:`NotSent` when the ceiling is below the base fee."""
    bid = capped(wanted, max_fee_per_gas)
    if bid.max_fee_per_gas < chain.base_fee():
        raise NotSent(reason(what, FEE_CAPPED))
    return bid


def _now() -> datetime:
    return datetime.now(UTC)


def _detail(full_reason: str) -> str:
    """What a waiting reason means, for the row's ``error_message``."""
    if full_reason == SIGNER_INSUFFICIENT_FUNDS:
        return "the server's signer cannot pay for the gas: fund it"
    what, _, rest = full_reason.partition("_")
    why, _, nonce = rest.partition(":")
    the = f"the {what}"
    return {
        FEE_CAPPED: f"no bid under TX_MAX_FEE_PER_GAS_WEI would be taken: {the} waits for the base fee "
        "to fall, or for the ceiling to be raised",
        NONCE_TAKEN: f"a transaction the row does not name waits at {the}'s nonce: nothing is sent until "
        "that nonce is mined",
        QUEUED_BEHIND: f"{the} waits behind an earlier transaction of the server's signer, at nonce {nonce}",
        NOT_MINED: f"{the} is next in line and bids at least the market, yet is not mined",
        REPLACEMENT_REFUSED: f"the node kept the transaction waiting at {the}'s nonce",
    }.get(why, full_reason)
