"""An asset's revenue split as ContentRegistry commits to it, and how to read it back from the chain.

The registry stores one word for a split, ``splitHash = keccak256(abi.encode(address[] recipients,
uint16[] shares))``; the split itself is in calldata and in ``SplitUpdated(uint256 indexed assetId,
address[] recipients, uint16[] shares)`` events (registration, ``updateSplit`` / ``updateSplitFor``, the
reset to the new holder on every transfer or reassignment). A catalogue registered in one transaction
shares one split, emitted once under its first asset's id, until an asset sets its own; the registry
names, per asset, the id whose events hold its split (``splitKeyOf``, ``settlementTerms(...).splitKey``).
The split in force at block B is the latest event of that key up to B whose split hashes to the hash
read at B (:func:`splits_at`): the hash authenticates it, so a node that leaves out, reorders or alters
events cannot change who is paid.

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
    wanted: Mapping[int, tuple[int, bytes]],
    block: int,
    from_block: int = 0,
) -> dict[int, Split]:
    """The split in force at ``block`` of every asset in ``wanted`` (asset id -> (split key, split hash),
    both read at that block: ``settlementTerms`` or ``splitKeyOf`` / ``splitHashOf``).

    The split is the preimage of the hash, found in the ``SplitUpdated`` events of the split key (the
    asset itself, or the first asset of the catalogue whose shared split it still has); the latest event
    that hashes to it is taken. ``get_logs`` runs one ``eth_getLogs`` query (``w3.eth.get_logs``). Raises
    :class:`SplitMismatch` for an asset none of whose key's events up to ``block`` hashes to its hash: a node
    that leaves out or alters events cannot make another split pass."""
    keys = sorted({key for key, _ in wanted.values()})
    events: dict[int, list[tuple[tuple[int, int], Split]]] = {}
    for start in range(0, len(keys), _IDS_PER_QUERY):
        chunk = keys[start : start + _IDS_PER_QUERY]
        for log in get_logs(split_query(registry, chunk, block, from_block)):
            key, split = decode_split_event(log)
            events.setdefault(key, []).append(((int(log["blockNumber"]), int(log["logIndex"])), split))
    out: dict[int, Split] = {}
    for asset_id in sorted(wanted):
        key, expected = wanted[asset_id]
        found = [
            split
            for _, split in sorted(events.get(key, []), key=lambda entry: entry[0], reverse=True)
            if split_hash(*split) == bytes(expected)
        ]
        if not found:
            raise SplitMismatch(
                asset_id,
                f"asset {asset_id}: no SplitUpdated event of asset {key} up to block {block}"
                " matches its split hash",
            )
        out[asset_id] = found[0]
    return out
