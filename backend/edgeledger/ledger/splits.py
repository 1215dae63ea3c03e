"""An asset's revenue split as ContentRegistry commits to it, and how to read it back from the chain.

The registry stores one word for a split, ``splitHash = keccak256(abi.encode(address[] recipients,
uint16[] shares))``; the split itself is in calldata and in ``SplitUpdated(uint256 indexed assetId,
address[] recipients, uint16[] shares)`` events (registration, ``updateSplit`` / ``updateSplitFor``, the
reset to the new holder on every transfer or reassignment). A catalogue registered in one transaction
shares one split, emitted once under its first asset's id, until an asset sets its own; the registry
names, per asset, the id whose events hold its split (``splitKeyOf``, ``settlementTerms(...).splitKey``).
The split in force at block B is the latest event of that key up to B whose split hashes to the hash
read at B (:func:`splits_at`): the hash authenticates it, so a node that leaves out, reorders or alters
events cannot change who is paid. The registry also records the block of that event (``splitBlocks``),
so a reader fetches that block's logs instead of searching the chain's history: reading a split costs
the same on a chain of a year as of a day.

DB-free: settlement, the API and ``edgeledger verify settlement`` share it (docs/registration.md).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from eth_abi.abi import decode, encode
from eth_utils.address import to_checksum_address

from edgeledger.ledger.hashing import FormatError, keccak256
from edgeledger.ledger.log_ranges import DEFAULT_MAX_BLOCKS

__all__ = [
    "SPLIT_UPDATED_TOPIC",
    "Split",
    "SplitMismatch",
    "decode_split_event",
    "read_split_blocks",
    "split_hash",
    "split_queries",
    "split_query",
    "splits_at",
]

log = logging.getLogger(__name__)

#: topic 0 of ``SplitUpdated(uint256,address[],uint16[])``
SPLIT_UPDATED_TOPIC = keccak256(b"SplitUpdated(uint256,address[],uint16[])")

#: (recipients as lower-case hex addresses, shares in basis points)
Split = tuple[tuple[str, ...], tuple[int, ...]]

#: asset ids per ``eth_getLogs`` query (one topic-1 alternative each)
_IDS_PER_QUERY = 100
#: blocks one query of events at known blocks spans at most (:func:`split_queries`): the default piece
#: of ``ETH_LOGS_MAX_BLOCKS``, so such a query is one request
LOCATED_SPAN_BLOCKS = DEFAULT_MAX_BLOCKS


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


def read_split_blocks(registry: Any, call: Callable[[Any], Any], asset_ids: Sequence[int]) -> dict[int, int]:
    """Where each asset's split event is: ``ContentRegistry.splitBlocks`` through ``call`` (which runs a
    contract function at the block the terms are read at), asset id -> block, for :func:`splits_at`.

    Empty for a registry deployed before ``splitBlocks`` existed, whose splits are then searched for
    from the registry's deployment: the same splits, found by more queries. Any failed call (a node error
    as much as an older registry) falls back to that search, which reports a node error itself; a wrong
    answer cannot change a split (the event must still hash to the committed split)."""
    located: dict[int, int] = {}
    for start in range(0, len(asset_ids), _IDS_PER_QUERY):
        chunk = [int(a) for a in asset_ids[start : start + _IDS_PER_QUERY]]
        try:
            answered = call(registry.functions.splitBlocks(chunk))
        except Exception as exc:  # any failure only costs the faster path
            log.info("splitBlocks unavailable (%s): split events searched from the deployment on", exc)
            return {}
        if len(answered) != len(chunk):
            raise FormatError("the registry's splitBlocks answered for other assets")
        located.update((a, int(b)) for a, b in zip(chunk, answered, strict=True))
    return located


def split_queries(
    registry: str,
    keys_at: Iterable[tuple[int, int]],
    span: int = LOCATED_SPAN_BLOCKS,
) -> list[dict[str, Any]]:
    """The ``eth_getLogs`` filters that fetch the ``SplitUpdated`` events at known blocks: ``keys_at`` is
    (block, split key) pairs (``splitBlocks`` read with the keys). Nearby blocks share a query (one range
    of at most ``span`` blocks and :data:`_IDS_PER_QUERY` keys), so the number of queries grows with the
    number of assets and of ``span``-block windows they were registered or updated in, never with the
    chain's age."""
    located = sorted(set(keys_at))
    queries: list[dict[str, Any]] = []
    i = 0
    while i < len(located):
        first = last = located[i][0]
        keys: set[int] = set()
        while i < len(located):
            at, key = located[i]
            if at - first >= span or (key not in keys and len(keys) >= _IDS_PER_QUERY):
                break
            keys.add(key)
            last = at
            i += 1
        queries.append(split_query(registry, sorted(keys), last, first))
    return queries


def splits_at(
    get_logs: Callable[[dict[str, Any]], Iterable[Mapping[str, Any]]],
    registry: str,
    wanted: Mapping[int, tuple[int, bytes]],
    block: int,
    from_block: int = 0,
    *,
    split_blocks: Mapping[int, int] | None = None,
    span: int = LOCATED_SPAN_BLOCKS,
) -> dict[int, Split]:
    """The split in force at ``block`` of every asset in ``wanted`` (asset id -> (split key, split hash),
    both read at that block: ``settlementTerms`` or ``splitKeyOf`` / ``splitHashOf``).

    The split is the preimage of the hash, found in the ``SplitUpdated`` events of the split key (the
    asset itself, or the first asset of the catalogue whose shared split it still has); the latest event
    that hashes to it is taken. ``get_logs`` runs one ``eth_getLogs`` query (``w3.eth.get_logs``). Raises
    :class:`SplitMismatch` for an asset none of whose key's events up to ``block`` hashes to its hash: a node
    that leaves out or alters events cannot make another split pass.

    Where the event is: ``split_blocks`` (asset id -> block, ``ContentRegistry.splitBlocks`` read at
    ``block``) names the block of each asset's event, and only those blocks are fetched
    (:func:`split_queries`, nearby ones within ``span`` blocks in one query). An asset without one (a
    registry older than ``splitBlocks``, or 0) is searched for from ``from_block`` to ``block``. A wrong
    block cannot change who is paid: the event found there must still hash to the committed split, or
    the asset fails as above."""
    located = split_blocks or {}
    search = sorted({key for asset, (key, _) in wanted.items() if not located.get(asset)})
    queries = [
        split_query(registry, search[start : start + _IDS_PER_QUERY], block, from_block)
        for start in range(0, len(search), _IDS_PER_QUERY)
    ]
    queries += split_queries(
        registry, ((int(located[a]), key) for a, (key, _) in wanted.items() if located.get(a)), span
    )
    events: dict[int, list[tuple[tuple[int, int], Split]]] = {}
    for query in queries:
        for entry in get_logs(query):
            key, split = decode_split_event(entry)
            events.setdefault(key, []).append(((int(entry["blockNumber"]), int(entry["logIndex"])), split))
    out: dict[int, Split] = {}
    for asset_id in sorted(wanted):
        key, expected = wanted[asset_id]
        found = [
            split
            for _, split in sorted(events.get(key, []), key=lambda entry: entry[0], reverse=True)
            if split_hash(*split) == bytes(expected)
        ]
        if not found:
            where = f"in block {located[asset_id]}" if located.get(asset_id) else f"up to block {block}"
            raise SplitMismatch(
                asset_id,
                f"asset {asset_id}: no SplitUpdated event of asset {key} {where} matches its split hash",
            )
        out[asset_id] = found[0]
    return out
