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
* **The post's transaction**, one nonce per post, replaced when stuck: settlement/post_tx.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eth_utils.address import to_checksum_address
from hexbytes import HexBytes
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.db import exclusive_work
from edgeledger.ledger.abis import SETTLEMENT_VAULT
from edgeledger.ledger.vault import PERIOD_MASK
from edgeledger.settlement import SettlementError
from edgeledger.settlement.bounds import merchant_bounds
from edgeledger.settlement.models import Settlement, SettlementKind, SettlementState

#: the run's ``waiting`` reason of a settlement whose merchant has another post in flight
MERCHANT_POST_IN_FLIGHT = "merchant_post_in_flight"


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
