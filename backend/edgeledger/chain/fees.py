"""EIP-1559 fees of the server signer's transactions: what the market asks now, what a replacement must
bid, and the most the signer ever bids (docs/settlement.md, "A post stuck in the mempool").

A transaction that waits in the mempool (its fee below a risen base fee, or a provider that lost it)
holds back its post and every later transaction of the signer, since nonces are mined in order. The
same call is then re-sent at the same nonce with higher fees: only one transaction per nonce can ever
be mined, so re-sending never posts twice. Nodes take a replacement only when both its fee cap and its
tip beat the pending one's by a margin (10 % in geth and reth): :data:`REPLACEMENT_BUMP_PCT` clears it.

The signer's key is hot, and a fee market can spike: :func:`capped` bounds every bid of the signer at
``TX_MAX_FEE_PER_GAS_WEI`` (``ChainClient.send``; replacements: chain/stuck_tx.py), so no transaction
costs more than that price per gas.
"""

from __future__ import annotations

from dataclasses import dataclass

#: TX_MAX_FEE_PER_GAS_WEI's default: the most the signer bids per gas (500 gwei)
DEFAULT_MAX_FEE_PER_GAS_WEI = 500 * 10**9
#: a replacement bids this much more than the transaction it replaces, fee cap and tip alike
REPLACEMENT_BUMP_PCT = 25
#: the least raise a node takes for a replacement (geth's and reth's default price bump)
NODE_PRICE_BUMP_PCT = 10


@dataclass(frozen=True)
class Fees:
    """An EIP-1559 bid, wei per gas."""

    max_fee_per_gas: int
    max_priority_fee_per_gas: int

    @classmethod
    def market(cls, base_fee: int, tip: int) -> Fees:
        """What a wallet bids now: the tip, and room for the base fee to double."""
        return cls(2 * base_fee + tip, tip)

    def bumped(self, pct: int = REPLACEMENT_BUMP_PCT) -> Fees:
        """Both fields raised by ``pct`` per cent, rounded up, and by at least one wei."""
        return Fees(_raise(self.max_fee_per_gas, pct), _raise(self.max_priority_fee_per_gas, pct))

    def at_least(self, other: Fees) -> Fees:
        """Field by field, the higher of the two."""
        return Fees(
            max(self.max_fee_per_gas, other.max_fee_per_gas),
            max(self.max_priority_fee_per_gas, other.max_priority_fee_per_gas),
        )

    def replaces(self, pending: Fees, pct: int = REPLACEMENT_BUMP_PCT) -> bool:
        """Whether a node would take this bid in place of ``pending``'s (both fields ``pct`` higher)."""
        wanted = pending.bumped(pct)
        return (
            self.max_fee_per_gas >= wanted.max_fee_per_gas
            and self.max_priority_fee_per_gas >= wanted.max_priority_fee_per_gas
        )


def _raise(value: int, pct: int) -> int:
    return max(value + 1, -(-value * (100 + pct) // 100))


def capped(fees: Fees, max_fee_per_gas: int) -> Fees:
    """The bid, its fee cap no higher than ``max_fee_per_gas`` and its tip no higher than its cap."""
    cap = min(fees.max_fee_per_gas, max_fee_per_gas)
    return Fees(cap, min(fees.max_priority_fee_per_gas, cap))


def replacement(pending: Fees | None, market: Fees, max_fee_per_gas: int) -> Fees | None:
    """The bid that replaces ``pending`` (None: not known, so the market's), at least the market's and
    within the cap; None when the cap leaves no bid a node would take in its place."""
    wanted = market if pending is None else pending.bumped().at_least(market)
    bid = capped(wanted, max_fee_per_gas)
    if pending is not None and not bid.replaces(pending, NODE_PRICE_BUMP_PCT):
        return None
    return bid
