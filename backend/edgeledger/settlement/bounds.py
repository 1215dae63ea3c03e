"""The merchant's own bounds in the SettlementVault, checked before a post is sent (posting.py): a post
that would break one waits with the reason instead of sending a transaction the vault reverts.

The vault is the authority (contracts/vault/MerchantBounds.sol); this mirrors its rules so the worker
blocks with a readable reason: the merchant's cap per period (what the period's postings already
reserved counts), its rate cap per span of block time (what all its postings reserved in the current
span counts, whatever periods they named; the vault's spans are its period length), and its chosen
settler, which binds a release of held royalties only while the chosen
address holds ``SETTLER_ROLE`` (a merchant cannot freeze what it owes the rights holders by choosing an
address that cannot settle).
"""

from __future__ import annotations

from typing import Any

from edgeledger.chain.client import ChainClient
from edgeledger.ledger.abis import SETTLEMENT_VAULT
from edgeledger.settlement.models import Settlement, SettlementKind


def merchant_bounds(
    chain: ChainClient, settlement: Settlement, merchant: str, token: str
) -> tuple[str, str] | None:
    """The merchant's own bounds in the vault (``boundsOf``) that this post would break, as a blocked
    reason, in the vault's order: a settler other than the one it chose; more than its cap leaves to the
    period (what the period's postings already reserved, ``periodReservedOf``, counts); more than its
    rate cap leaves to the current span (``rateSpentOf``: the post waits for the next span, the next run
    retries; a settlement larger than the rate cap itself waits for the merchant to raise it). A release
    takes nothing from escrow and is bounded by neither cap.

    The vault reads the span at the post's block: a post read just before a span ends may land in the
    next, where the vault counts less. Only another post for the same merchant mined between this read
    and this post's block can make the vault count more: the worker sends none while one of the
    merchant's is in flight (settlement/posting.py), so only a post sent from outside this service can,
    and the vault then refuses this one (``RateCapExceeded``, ``PeriodCapExceeded``), recorded as the
    same code."""
    vault = chain.contract(SETTLEMENT_VAULT)
    # one round trip: the merchant's bounds and what the period already reserved
    (cap, chosen, rate_cap, rate_spent), already = chain.call_many(
        [
            vault.functions.boundsOf(merchant, token),
            vault.functions.periodReservedOf(merchant, token, settlement.period_id),
        ]
    )
    release = settlement.kind == SettlementKind.release
    reserved = settlement.total + settlement.held_total
    settler = _settler_problem(chain, vault, release, chosen)
    if settler is not None:
        return settler
    if not release and int(cap) and int(already) + reserved > int(cap):
        return (
            "period_cap_exceeded",
            f"this settlement reserves {reserved} and the period's postings already reserved {int(already)}, "
            f"above the merchant's own cap of {int(cap)} per period (SettlementVault.setPeriodCap): the "
            "merchant raises the cap, or the period is challenged",
        )
    if not release and int(rate_cap) and reserved > int(rate_cap):
        return (
            "rate_cap_exceeded",
            f"this settlement reserves {reserved}, more than the merchant's own rate cap of {int(rate_cap)} "
            "per span (SettlementVault.setRateCap) allows in any span: it posts once the merchant raises "
            "the cap",
        )
    if not release and int(rate_cap) and int(rate_spent) + reserved > int(rate_cap):
        return (
            "rate_cap_exceeded",
            f"this settlement reserves {reserved} and the merchant's postings already reserved "
            f"{int(rate_spent)} in the vault's current span, above the merchant's own rate cap of "
            f"{int(rate_cap)} per span (SettlementVault.setRateCap): the post waits for the next span, or "
            "the merchant raises the cap",
        )
    return None


def _settler_problem(chain: ChainClient, vault: Any, release: bool, chosen: str) -> tuple[str, str] | None:
    """``settler_not_chosen`` when the merchant chose another settler than this server's signer (for a
    release, only while the chosen address holds ``SETTLER_ROLE``)."""
    signer = chain.signer_address
    if int(chosen, 16) == 0 or signer is None or chosen.lower() == signer.lower():
        return None
    if release and not chain.call(
        vault.functions.hasRole(chain.call(vault.functions.SETTLER_ROLE()), chosen)
    ):
        return None  # the choice names an address that cannot settle: it binds no release
    return (
        "settler_not_chosen",
        f"the merchant chose {chosen} to post for it, not this server's signer {signer}",
    )
