"""The split commitment shared by ContentRegistry, settlement, the API and the verifier
(edgeledger.ledger.splits): pure tests of the hash and of picking the split in force from raw logs.
The contract side (splitHashOf equals split_hash, the events carry the split) is in
tests/contracts/test_content_registry.py; settlement over the real chain in the settlement suites."""

from __future__ import annotations

import pytest
from eth_abi.abi import encode

from edgeledger.ledger.hashing import keccak256
from edgeledger.ledger.splits import (
    SPLIT_UPDATED_TOPIC,
    SplitMismatch,
    decode_split_event,
    read_split_blocks,
    split_hash,
    split_queries,
    split_query,
    splits_at,
)

A = "0x" + "aa" * 20
B = "0x" + "bb" * 20
REGISTRY = "0x" + "12" * 20


def log(asset_id: int, recipients: list[str], shares: list[int], block: int, index: int = 0) -> dict:
    return {
        "topics": [SPLIT_UPDATED_TOPIC, asset_id.to_bytes(32, "big")],
        "data": encode(["address[]", "uint16[]"], [recipients, shares]),
        "blockNumber": block,
        "logIndex": index,
    }


def test_split_hash_is_keccak_of_the_abi_encoding():
    # The bytes the contract hashes, abi.encode(address[], uint16[]); address case does not matter.
    expected = keccak256(encode(["address[]", "uint16[]"], [[A, B], [6_000, 4_000]]))
    assert split_hash([A.upper().replace("0X", "0x"), B], [6_000, 4_000]) == expected
    assert split_hash([A, B], [4_000, 6_000]) != expected
    assert split_hash([B, A], [6_000, 4_000]) != expected


def test_the_latest_event_up_to_the_block_is_the_split_in_force():
    logs = [
        log(7, [A], [10_000], block=10),
        log(7, [A, B], [5_000, 5_000], block=12, index=3),
        log(7, [B], [10_000], block=12, index=1),  # earlier in the same block
        log(8, [B], [10_000], block=11),
    ]
    queries = []

    def get_logs(query):
        queries.append(query)
        return list(reversed(logs))  # any order from the node

    hashes = {7: (7, split_hash([A, B], [5_000, 5_000])), 8: (8, split_hash([B], [10_000]))}
    assert splits_at(get_logs, REGISTRY, hashes, block=12) == {
        7: ((A, B), (5_000, 5_000)),
        8: ((B,), (10_000,)),
    }
    assert queries == [split_query(REGISTRY, [7, 8], 12)]
    assert queries[0]["topics"][1] == ["0x" + f"{7:064x}", "0x" + f"{8:064x}"]


def test_a_catalogue_asset_reads_the_shared_split_under_its_first_asset():
    """Asset 9 still has its catalogue's split, emitted under asset 7, which has since set its own: the
    preimage of 9's hash is 7's older event, not 7's latest."""
    logs = [log(7, [A], [10_000], block=10), log(7, [B], [10_000], block=15)]
    wanted = {7: (7, split_hash([B], [10_000])), 9: (7, split_hash([A], [10_000]))}
    found = splits_at(lambda q: logs, REGISTRY, wanted, block=20)
    assert found == {7: ((B,), (10_000,)), 9: ((A,), (10_000,))}


def test_an_event_that_does_not_match_the_commitment_is_refused():
    # A node that leaves out the latest event answers an older split: it no longer matches the hash.
    older = [log(7, [A], [10_000], block=10)]
    with pytest.raises(SplitMismatch) as refused:
        splits_at(lambda q: older, REGISTRY, {7: (7, split_hash([A, B], [5_000, 5_000]))}, block=12)
    assert refused.value.asset_id == 7
    with pytest.raises(SplitMismatch, match="no SplitUpdated event"):
        splits_at(lambda q: [], REGISTRY, {7: (7, split_hash([A], [10_000]))}, block=12)


def test_queries_hold_at_most_100_assets():
    hashes = {i: (i, split_hash([A], [10_000])) for i in range(1, 251)}
    queries = []

    def get_logs(query):
        queries.append(query)
        return [log(int(t, 16), [A], [10_000], block=5) for t in query["topics"][1]]

    assert len(splits_at(get_logs, REGISTRY, hashes, block=9)) == 250
    assert [len(q["topics"][1]) for q in queries] == [100, 100, 50]


def test_decode_refuses_other_events():
    other = log(7, [A], [10_000], block=1)
    other["topics"] = [keccak256(b"LicenceUpdated(uint256)"), other["topics"][1]]
    with pytest.raises(ValueError, match="not a SplitUpdated log"):
        decode_split_event(other)


def _node(logs: list[dict], queries: list[dict]):
    """A node answering eth_getLogs from ``logs`` as a node filters them (block range and topic 1)."""

    def get_logs(query):
        queries.append(query)
        keys = {int(t, 16) for t in query["topics"][1]}
        return [
            entry
            for entry in logs
            if query["fromBlock"] <= entry["blockNumber"] <= query["toBlock"]
            and int.from_bytes(entry["topics"][1], "big") in keys
        ]

    return get_logs


def test_located_splits_are_fetched_from_their_blocks_alone():
    """With splitBlocks' answer, only the named blocks are asked for: however long the history, one query
    per span of nearby blocks and 100 keys, and the same splits as the search from block 0."""
    logs = [log(7, [A], [10_000], block=1_000), log(7, [B], [10_000], block=900_000)]
    logs += [log(k, [A], [10_000], block=2_000_000 + k) for k in range(10, 260)]
    wanted = {7: (7, split_hash([B], [10_000])), 9: (7, split_hash([A], [10_000]))}
    wanted |= {k: (k, split_hash([A], [10_000])) for k in range(10, 260)}
    located = {7: 900_000, 9: 1_000} | {k: 2_000_000 + k for k in range(10, 260)}
    searched: list[dict] = []
    expected = splits_at(_node(logs, searched), REGISTRY, wanted, block=3_000_000)
    queries: list[dict] = []
    assert splits_at(_node(logs, queries), REGISTRY, wanted, 3_000_000, split_blocks=located) == expected
    assert expected[9] == ((A,), (10_000,)) and expected[7] == ((B,), (10_000,))
    assert [(q["fromBlock"], q["toBlock"], len(q["topics"][1])) for q in queries] == [
        (1_000, 1_000, 1),
        (900_000, 900_000, 1),
        (2_000_010, 2_000_109, 100),
        (2_000_110, 2_000_209, 100),
        (2_000_210, 2_000_259, 50),
    ]
    # The search from block 0 asks for the whole history (a capped provider's get_logs cuts it up).
    assert [(q["fromBlock"], q["toBlock"]) for q in searched] == [(0, 3_000_000)] * 3


def test_split_queries_group_blocks_within_a_span():
    at = [(10, 1), (10, 2), (4_000, 1), (5_010, 3), (5_011, 3), (20_000, 4)]
    assert [(q["fromBlock"], q["toBlock"], q["topics"][1]) for q in split_queries(REGISTRY, at)] == [
        (10, 4_000, ["0x" + f"{1:064x}", "0x" + f"{2:064x}"]),
        (5_010, 5_011, ["0x" + f"{3:064x}"]),
        (20_000, 20_000, ["0x" + f"{4:064x}"]),
    ]
    assert len(split_queries(REGISTRY, at, span=1)) == 5  # one per distinct block
    assert split_queries(REGISTRY, []) == []


def test_a_wrong_split_block_cannot_change_the_split():
    """A node (or registry) naming another block finds no event there that hashes to the commitment:
    refused, never another split."""
    logs = [log(7, [A], [10_000], block=10), log(7, [B], [10_000], block=20)]
    wanted = {7: (7, split_hash([B], [10_000]))}
    with pytest.raises(SplitMismatch, match="in block 10"):
        splits_at(_node(logs, []), REGISTRY, wanted, 30, split_blocks={7: 10}, span=1)
    # An asset without a block (0) is searched for over the history, beside located ones.
    queries: list[dict] = []
    found = splits_at(_node(logs, queries), REGISTRY, wanted, 30, split_blocks={7: 0})
    assert found == {7: ((B,), (10_000,))}
    assert [(q["fromBlock"], q["toBlock"]) for q in queries] == [(0, 30)]


class _Functions:
    def __init__(self, refuse: bool) -> None:
        self.refuse = refuse

    def splitBlocks(self, ids):
        if self.refuse:
            raise RuntimeError("execution reverted")  # a registry without splitBlocks
        return ("splitBlocks", list(ids))


class _Registry:
    def __init__(self, refuse: bool = False) -> None:
        self.functions = _Functions(refuse)


def test_read_split_blocks_chunks_and_falls_back_on_older_registries():
    calls: list[list[int]] = []

    def call(fn):
        calls.append(fn[1])
        return [i * 10 for i in fn[1]]

    assert read_split_blocks(_Registry(), call, list(range(1, 251))) == {i: i * 10 for i in range(1, 251)}
    assert [len(c) for c in calls] == [100, 100, 50]
    assert read_split_blocks(_Registry(refuse=True), call, [1, 2]) == {}
    with pytest.raises(ValueError, match="other assets"):
        read_split_blocks(_Registry(), lambda fn: [1], [1, 2])
