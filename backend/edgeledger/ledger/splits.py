"""An asset's revenue split as ContentRegistry commits to it, and how to read it back from the chain.

The registry stores one word per asset for its split, ``splitHash = keccak256(abi.encode(address[]
recipients, uint16[] shares))``; the split itself is in calldata and in the asset's ``SplitUpdated(uint256
indexed assetId, address[] recipients, uint16[] shares)`` events (registration, ``updateSplit`` /
``updateSplitFor``, and the reset to the new holder on every transfer or reassignment). The split in
force at block B is the asset's last ``SplitUpdated`` event at or before B; it is accepted only when its
hash equals ``splitHashOf`` / ``settlementTerms(...).splitHash`` read at B, so a node that leaves out or
reorders events cannot change who is paid (:func:`splits_at`).

DB-free: settlement, the API and ``edgeledger verify settlement`` share it (docs/registration.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.address import to_checksum_address

from edgeledger.ledger.hashing import FormatError, keccak256

__all__ = [
    "SPLIT_UPDATED_TOPIC",
    "Split",
    "SplitMismatch",
    "decode_split_event",
    "split_hash",
    "split_query",
    "splits_at",
]

#: topic 0 of ``SplitUpdated(uint256,address[],uint16[])``
SPLIT_UPDATED_TOPIC = keccak256(b"SplitUpdated(uint256,address[],uint16[])")

#: (recipients as lower-case hex addresses, shares in basis points)
Split = tuple[tuple[str, ...], tuple[int, ...]]

#: asset ids per ``eth_getLogs`` query (one topic-1 alternative each)
_IDS_PER_QUERY = 100


class SplitMismatch(FormatError):
    """The latest ``SplitUpdated`` event of an asset does not hash to the split hash the chain states."""

    def __init__(self, asset_id: int, message: str) -> None:
        super().__init__(message)
        self.asset_id = asset_id


def split_hash(recipients: Sequence[str], shares: Sequence[int]) -> bytes:
    """``keccak256(abi.encode(recipients, shares))``, as ``ContentRegistry.splitHash``."""
    checksummed = [to_checksum_address(r) for r in recipients]
    return keccak256(encode(["address[]", "uint16[]"], [checksummed, list(shares)]))


def decode_split_event(log: Mapping[str, Any]) -> tuple[int, Split]:
    """(asset id, split) of one raw ``SplitUpdated`` log (``eth_getLogs`` entry)."""
    topics = log["topics"]
    if len(topics) != 2 or bytes(topics[0]) != SPLIT_UPDATED_TOPIC:
        raise FormatError("not a SplitUpdated log")
    recipients, shares = decode(["address[]", "uint16[]"], bytes(log["data"]))
    return int.from_bytes(bytes(topics[1]), "big"), (
        tuple(str(r).lower() for r in recipients),
        tuple(int(s) for s in shares),
    )


def split_query(
    registry: str, asset_ids: Sequence[int], to_block: int, from_block: int = 0
) -> dict[str, Any]:
    """The ``eth_getLogs`` filter for the ``SplitUpdated`` events of ``asset_ids`` up to ``to_block``."""
    return {
        "address": to_checksum_address(registry),
        "fromBlock": from_block,
        "toBlock": to_block,
        "topics": [
            "0x" + SPLIT_UPDATED_TOPIC.hex(),
            ["0x" + int(a).to_bytes(32, "big").hex() for a in asset_ids],
        ],
    }


def splits_at(
    get_logs: Callable[[dict[str, Any]], Iterable[Mapping[str, Any]]],
    registry: str,
    hashes: Mapping[int, bytes],
    block: int,
    from_block: int = 0,
) -> dict[int, Split]:
    """The split in force at ``block`` of every asset in ``hashes`` (asset id -> split hash read at that
    block), each checked against its hash.

    ``get_logs`` runs one ``eth_getLogs`` query (``w3.eth.get_logs``). Raises :class:`SplitMismatch` for an
    asset without a ``SplitUpdated`` event up to ``block`` or whose latest one hashes differently."""
    ids = sorted(hashes)
    latest: dict[int, tuple[tuple[int, int], Split]] = {}
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        for log in get_logs(split_query(registry, chunk, block, from_block)):
            asset_id, split = decode_split_event(log)
            position = (int(log["blockNumber"]), int(log["logIndex"]))
            if asset_id in hashes and (asset_id not in latest or position > latest[asset_id][0]):
                latest[asset_id] = (position, split)
    out: dict[int, Split] = {}
    for asset_id in ids:
        if asset_id not in latest:
            raise SplitMismatch(asset_id, f"asset {asset_id}: no SplitUpdated event up to block {block}")
        split = latest[asset_id][1]
        if split_hash(*split) != bytes(hashes[asset_id]):
            raise SplitMismatch(
                asset_id,
                f"asset {asset_id}: its latest SplitUpdated event does not match the split hash"
                f" at block {block}",
            )
        out[asset_id] = split
    return out
