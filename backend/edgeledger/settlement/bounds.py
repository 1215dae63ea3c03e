"""The merchant's own bounds in the SettlementVault, checked before a post is sent (flows.py): a post
that would break one waits with the reason instead of sending a transaction the vault reverts.

The vault is the authority (contracts/vault/MerchantBounds.sol); this mirrors its rules so the worker
blocks with a readable reason: the merchant's cap per period (what the period's postings already
reserved counts), and its chosen settler, which binds a release of held royalties only while the chosen
address holds ``SETTLER_ROLE`` (a merchant cannot freeze what it owes the rights holders by choosing an
address that cannot settle).
"""

from __future__ import annotations

from edgeledger.chain.client import ChainClient
from edgeledger.ledger.abis import SETTLEMENT_VAULT
from edgeledger.settlement.models import Settlement, SettlementKind


def merchant_bounds(
    chain: ChainClient, settlement: Settlement, merchant: str, token: str
) -> tuple[str, str] | None:
    """The merchant's own bounds in the vault (``boundsOf``) that this post would break, as a blocked
    reason: more than its cap leaves to the period (what the period's postings already reserved,
    ``periodReservedOf``, counts), or a settler other than the one it chose. A release takes nothing
    from escrow and is not bounded by the cap."""
    vault = chain.contract(SETTLEMENT_VAULT)
    cap, chosen = chain.call(vault.functions.boundsOf(merchant, token))
    release = settlement.kind == SettlementKind.release
    if not release and int(cap):
        already = int(chain.call(vault.functions.periodReservedOf(merchant, token, settlement.period_id)))
        reserved = settlement.total + settlement.held_total
        if already + reserved > int(cap):
            return (
                "period_cap_exceeded",
                f"this settlement reserves {reserved} and the period's postings already reserved {already}, "
                f"above the merchant's own cap of {int(cap)} per period (SettlementVault.setPeriodCap): the "
                "merchant raises the cap, or the period is challenged",
            )
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
