"""The payout tree of one (period, merchant) settlement (docs/settlement-leaf.md).

One leaf per payee, OpenZeppelin ``StandardMerkleTree`` over ``PAYOUT_LEAF_TYPES``; the same encoding as
``SettlementVault.leafHash``. The tree depends only on the set of payouts, never on their order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from eth_utils.address import is_address, to_checksum_address

from edgeledger.ledger.hashing import FormatError, keccak256
from edgeledger.ledger.merkle import MerkleTree, verify_proof

PAYOUT_LEAF_TYPES = ("uint64", "address", "address", "address", "uint256")
UINT64_MAX = (1 << 64) - 1
UINT128_MAX = (1 << 128) - 1  # the vault keeps totals as uint128


def _address_word(address: str, what: str) -> bytes:
    if not is_address(address):
        raise FormatError(f"{what} {address!r} is not an address", code="address_invalid")
    return bytes(12) + bytes.fromhex(address[2:])


def encode_payout(period_id: int, merchant: str, token: str, payee: str, amount: int) -> bytes:
    """``abi.encode(periodId, merchant, token, payee, amount)``: five static 32-byte words."""
    if not 0 <= period_id <= UINT64_MAX:
        raise FormatError(f"period id {period_id} does not fit uint64", code="period_invalid")
    if not 0 < amount <= UINT128_MAX:
        raise FormatError(f"payout amount {amount} out of range", code="amount_invalid")
    return (
        period_id.to_bytes(32, "big")
        + _address_word(merchant, "merchant")
        + _address_word(token, "token")
        + _address_word(payee, "payee")
        + amount.to_bytes(32, "big")
    )


def payout_leaf(period_id: int, merchant: str, token: str, payee: str, amount: int) -> bytes:
    """``keccak256(bytes.concat(keccak256(abi.encode(...))))``, as ``SettlementVault.leafHash``."""
    return keccak256(keccak256(encode_payout(period_id, merchant, token, payee, amount)))


@dataclass(frozen=True)
class PayoutProof:
    payee: str
    amount: int
    leaf: bytes
    proof: tuple[bytes, ...]


class PayoutTree:
    """The payouts of one settlement with their Merkle tree; payees are checksummed addresses."""

    __slots__ = ("_index", "_tree", "merchant", "payouts", "period_id", "token")

    def __init__(self, period_id: int, merchant: str, token: str, payouts: Mapping[str, int]) -> None:
        if not payouts:
            raise FormatError("a payout tree needs at least one payee", code="nothing_to_pay")
        self.period_id = period_id
        self.merchant = to_checksum_address(merchant)
        self.token = to_checksum_address(token)
        merged: dict[str, int] = {}
        for address, amount in payouts.items():
            if not is_address(address):
                raise FormatError(f"payee {address!r} is not an address", code="address_invalid")
            key = to_checksum_address(address)
            merged[key] = merged.get(key, 0) + amount
        self.payouts: dict[str, int] = dict(sorted(merged.items(), key=lambda kv: kv[0].lower()))
        order = list(self.payouts)
        self._index = {payee.lower(): i for i, payee in enumerate(order)}
        leaves = [payout_leaf(period_id, merchant, token, p, self.payouts[p]) for p in order]
        self._tree = MerkleTree.build(leaves)

    @property
    def root(self) -> bytes:
        return self._tree.root

    @property
    def root_hex(self) -> str:
        return "0x" + self._tree.root.hex()

    @property
    def total(self) -> int:
        return sum(self.payouts.values())

    def __len__(self) -> int:
        return len(self.payouts)

    def __contains__(self, payee: object) -> bool:
        return isinstance(payee, str) and payee.lower() in self._index

    def proof(self, payee: str) -> PayoutProof:
        """The payee's amount, leaf and proof; ``payee_unknown`` when it has no leaf here."""
        index = self._index.get(payee.lower())
        if index is None:
            raise FormatError(f"{payee} has no payout in this settlement", code="payee_unknown")
        address = to_checksum_address(payee)
        amount = self.payouts[address]
        return PayoutProof(
            payee=address,
            amount=amount,
            leaf=self._tree.leaf(index),
            proof=tuple(self._tree.proof(index)),
        )


def verify_payout(root: bytes, period_id: int, merchant: str, token: str, proof: PayoutProof) -> bool:
    """Whether ``proof`` proves the payee's amount under ``root`` (the on-chain check, off chain)."""
    leaf = payout_leaf(period_id, merchant, token, proof.payee, proof.amount)
    return verify_proof(root, leaf, proof.proof)


#: Domain tag of a held-only root (``keccak256("EdgeLedger.heldOnly.v1")``): no payout tree hashes to it.
HELD_ONLY_TAG = keccak256(b"EdgeLedger.heldOnly.v1")


def held_only_root(period_id: int, merchant: str, token: str, held: Sequence[tuple[int, int]]) -> str:
    """The root a *held-only* settlement is posted with (``SettlementVault.postWithHeld`` with total 0
    and held royalties: the settlement pays nobody now and holds every royalty back)::

        keccak256(abi.encode(HELD_ONLY_TAG, periodId, merchant, token,
                             keccak256(abi.encodePacked((assetId, amount) for each held item))))

    with the items in the statement's ``held_back`` order. There is no payout tree: the root commits to
    what is held, as a tree's root commits to what is paid, so a cancelled held-only post recomputed with
    the same held items has the same root (and waits for a decision, like a tree). No claim can take
    anything from it (its total is 0, and no leaf hashes to it)."""
    if not held:
        raise FormatError("a held-only settlement holds something", code="nothing_held")
    packed = b""
    for asset_id, amount in held:
        if not 0 < asset_id < 1 << 256 or not 0 < amount <= UINT128_MAX:
            raise FormatError(f"held item ({asset_id}, {amount}) out of range", code="amount_invalid")
        packed += asset_id.to_bytes(32, "big") + amount.to_bytes(32, "big")
    if not 0 <= period_id <= UINT64_MAX:
        raise FormatError(f"period id {period_id} does not fit uint64", code="period_invalid")
    encoded = (
        HELD_ONLY_TAG
        + period_id.to_bytes(32, "big")
        + _address_word(merchant, "merchant")
        + _address_word(token, "token")
        + keccak256(packed)
    )
    return "0x" + keccak256(encoded).hex()
