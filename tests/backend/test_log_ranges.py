"""``eth_getLogs`` in pieces (edgeledger.ledger.log_ranges): pure tests of the piece arithmetic, the
halving on a provider's refusal, the order and uniqueness of the result, block tags and the recognised
provider errors. The same reads over a real chain behind a capped JSON-RPC endpoint are in
tests/backend/test_log_ranges_chain.py."""

from __future__ import annotations

from typing import Any

import pytest
from web3.exceptions import Web3RPCError

from edgeledger.ledger.log_ranges import (
    LogQueryRefused,
    SpanMemory,
    is_block_span_refusal,
    is_range_refusal,
    provider_error,
    read_logs,
    resolve_range,
)


def rpc_error(code: int, message: str) -> Web3RPCError:
    """The exception web3 raises for a JSON-RPC error answer."""
    error = {"code": code, "message": message}
    return Web3RPCError(repr(error), rpc_response={"jsonrpc": "2.0", "id": 1, "error": error})


class Node:
    """A fake node holding one log per block in ``blocks`` (two in block 7), refusing spans over ``cap``."""

    def __init__(
        self,
        cap: int | None = None,
        head: int = 1_000,
        blocks: range = range(0, 1_001, 3),
        refusal: str = "exceed maximum block range: {cap}",
    ) -> None:
        self.cap, self.head, self.refusal = cap, head, refusal
        self.logs = [{"blockNumber": b, "logIndex": 0, "data": f"b{b}"} for b in blocks]
        self.logs.append({"blockNumber": 7, "logIndex": 1, "data": "b7-1"})
        self.asked: list[tuple[int, int]] = []
        self.refused: list[tuple[int, int]] = []

    def get_logs(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        first, last = query["fromBlock"], query["toBlock"]
        assert isinstance(first, int) and isinstance(last, int), "tags must be resolved before asking"
        if self.cap is not None and last - first + 1 > self.cap:
            self.refused.append((first, last))
            raise rpc_error(-32600, self.refusal.format(cap=self.cap))
        self.asked.append((first, last))
        found = [e for e in self.logs if first <= e["blockNumber"] <= last]
        return list(reversed(found))  # any order from the node

    def resolve(self, ref: str | bytes) -> int:
        if ref in ("latest", "safe", "finalized"):
            return self.head - {"latest": 0, "safe": 32, "finalized": 64}[str(ref)]
        if ref == b"\x11" * 32 or ref == "0x" + "11" * 32:
            return 500
        raise AssertionError(f"unexpected block reference {ref!r}")


def positions(logs: list[Any]) -> list[tuple[int, int]]:
    return [(int(e["blockNumber"]), int(e["logIndex"])) for e in logs]


def test_a_range_goes_as_consecutive_pieces_of_at_most_max_blocks_in_canonical_order():
    node = Node()
    logs = read_logs(
        node.get_logs, {"fromBlock": 5, "toBlock": 1_000}, max_blocks=300, resolve_block=node.resolve
    )
    assert node.asked == [(5, 304), (305, 604), (605, 904), (905, 1_000)]
    expected = sorted([(b, 0) for b in range(6, 1_001, 3)] + [(7, 1)])
    assert positions(logs) == expected


def test_no_limit_is_one_query_and_a_range_ending_before_it_starts_asks_nothing():
    node = Node()
    read_logs(node.get_logs, {"fromBlock": 0, "toBlock": 1_000}, max_blocks=0, resolve_block=node.resolve)
    assert node.asked == [(0, 1_000)]
    assert read_logs(node.get_logs, {"fromBlock": 9, "toBlock": 8}, resolve_block=node.resolve) == []
    assert node.asked == [(0, 1_000)]
    with pytest.raises(ValueError, match="max_blocks"):
        read_logs(node.get_logs, {"fromBlock": 0, "toBlock": 1}, max_blocks=-1, resolve_block=node.resolve)


def test_a_refused_piece_is_asked_again_with_half_the_span_and_the_rest_keeps_it():
    node = Node(cap=100)
    logs = read_logs(
        node.get_logs, {"fromBlock": 0, "toBlock": 1_000}, max_blocks=400, resolve_block=node.resolve
    )
    # 400 refused, 200 refused, 100 accepted; the rest of the range goes 100 at a time.
    assert node.refused == [(0, 399), (0, 199)]
    assert node.asked[:3] == [(0, 99), (100, 199), (200, 299)]
    assert all(last - first + 1 <= 100 for first, last in node.asked)
    assert node.asked[-1] == (1_000, 1_000)
    assert positions(logs) == positions(
        read_logs(
            Node().get_logs, {"fromBlock": 0, "toBlock": 1_000}, max_blocks=0, resolve_block=node.resolve
        )
    )


def test_halving_goes_down_to_one_block_then_fails_naming_it():
    node = Node(cap=0)  # refuses everything
    with pytest.raises(LogQueryRefused) as refused:
        read_logs(node.get_logs, {"fromBlock": 40, "toBlock": 71}, max_blocks=32, resolve_block=node.resolve)
    assert node.refused == [(40, 71), (40, 55), (40, 47), (40, 43), (40, 41), (40, 40)]
    assert refused.value.block == 40
    assert "single block 40" in str(refused.value) and "exceed maximum block range" in str(refused.value)


def test_other_errors_are_not_retried():
    calls = []

    def rate_limited(query: dict[str, Any]) -> list[Any]:
        calls.append(query)
        raise rpc_error(-32005, "daily request count exceeded, request rate limited")

    with pytest.raises(Web3RPCError, match="rate limited"):
        read_logs(rate_limited, {"fromBlock": 0, "toBlock": 10_000}, resolve_block=Node().resolve)
    assert len(calls) == 1


def test_each_log_is_kept_once_and_only_from_the_piece_that_holds_its_block():
    def sloppy(query: dict[str, Any]) -> list[dict[str, Any]]:
        # A node answering with neighbours' logs too, and one log twice.
        first, last = query["fromBlock"], query["toBlock"]
        return [{"blockNumber": b, "logIndex": 0} for b in range(first - 2, last + 3)] + [
            {"blockNumber": first, "logIndex": 0}
        ]

    logs = read_logs(sloppy, {"fromBlock": 10, "toBlock": 29}, max_blocks=5, resolve_block=Node().resolve)
    assert positions(logs) == [(b, 0) for b in range(10, 30)]


def test_tags_and_hashes_are_resolved_to_numbers_once_before_asking():
    node = Node()
    resolved: list[Any] = []

    def resolve(ref: str | bytes) -> int:
        resolved.append(ref)
        return node.resolve(ref)

    assert resolve_range({}, resolve) == (1_000, 1_000)  # both ends default to "latest", asked once
    assert resolved == ["latest"]
    assert resolve_range({"fromBlock": "earliest", "toBlock": "pending"}, resolve) == (0, 1_000)
    assert resolve_range({"fromBlock": "0x10", "toBlock": "safe"}, resolve) == (16, 968)
    assert resolve_range({"fromBlock": 3, "toBlock": "finalized"}, resolve) == (3, 936)
    assert resolve_range({"fromBlock": b"\x11" * 32, "toBlock": "0x" + "11" * 32}, resolve) == (500, 500)
    read_logs(
        node.get_logs, {"fromBlock": 990, "toBlock": "latest"}, max_blocks=6, resolve_block=node.resolve
    )
    assert node.asked == [(990, 995), (996, 1_000)]
    with pytest.raises(ValueError):
        resolve_range({"fromBlock": True}, resolve)


def test_a_block_hash_query_is_one_block_sent_as_it_is():
    asked = []

    def get_logs(query: dict[str, Any]) -> list[dict[str, Any]]:
        asked.append(query)
        return [{"blockNumber": 5, "logIndex": 2}, {"blockNumber": 5, "logIndex": 1}]

    query = {"blockHash": "0x" + "22" * 32, "address": "0x" + "12" * 20}
    assert positions(read_logs(get_logs, query, resolve_block=Node().resolve)) == [(5, 1), (5, 2)]
    assert asked == [query]


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-32005, "query returned more than 10000 results"),
        (-32602, "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range"),
        (-32602, "eth_getLogs is limited to a 10,000 range"),
        (-32600, "block range is too wide"),
        (-32000, "exceed maximum block range: 5000"),
        (-32000, "query exceeds max block range 100000"),
        (-32000, "query exceeds max results 20000, retry with the range 24383075-24383096"),
        (-32000, "Block range limit exceeded."),
        (-32000, "requested too many blocks from 0 to 20000, maximum is set to 2048"),
        (-32047, "block range too large"),
        (-32000, "logs matched by query exceeds limit of 10000"),
        (-32005, "limit exceeded"),
    ],
)
def test_provider_refusals_of_a_large_query_are_recognised(code: int, message: str):
    assert is_range_refusal(rpc_error(code, message))
    assert is_range_refusal(ValueError({"code": code, "message": message}))  # older web3
    assert provider_error(rpc_error(code, message)) == (code, message)


@pytest.mark.parametrize(
    ("code", "message"),
    [
        (-32005, "daily request count exceeded, request rate limited"),
        (-32005, "limit exceeded: too many requests per second"),
        (-32602, "invalid argument 0: hex string has length 3, want 40 for common.Address"),
        (-32000, "header not found"),
        (-32603, "internal error"),
    ],
)
def test_other_provider_errors_are_not_taken_for_a_refused_range(code: int, message: str):
    assert not is_range_refusal(rpc_error(code, message))


#: Each refusal recognised above: True when it caps the block span (learned across searches), False when
#: it caps the results (depends on the logs' density: not learned) or could be either.
SPAN_OR_RESULTS = {
    "query returned more than 10000 results": False,
    "Log response size exceeded. You can make eth_getLogs requests with up to a 2K block range": False,
    "eth_getLogs is limited to a 10,000 range": True,
    "block range is too wide": True,
    "exceed maximum block range: 5000": True,
    "query exceeds max block range 100000": True,
    "query exceeds max results 20000, retry with the range 24383075-24383096": False,
    "Block range limit exceeded.": True,
    "requested too many blocks from 0 to 20000, maximum is set to 2048": True,
    "block range too large": True,
    "logs matched by query exceeds limit of 10000": False,
    "limit exceeded": False,
}


@pytest.mark.parametrize(("message", "span"), sorted(SPAN_OR_RESULTS.items()))
def test_a_block_span_refusal_is_told_from_a_result_count_refusal(message: str, span: bool):
    assert is_range_refusal(rpc_error(-32005, message))
    assert is_block_span_refusal(rpc_error(-32005, message)) is span


def test_a_client_remembers_its_providers_block_span_cap_across_searches():
    """The first search learns the cap with two refused pieces; the next ones start below it and are
    never refused. A lower cap found later lowers what is remembered; no memory, no learning."""
    node, memory = Node(cap=100), SpanMemory()
    first = read_logs(
        node.get_logs,
        {"fromBlock": 0, "toBlock": 1_000},
        max_blocks=400,
        resolve_block=node.resolve,
        memory=memory,
    )
    assert node.refused == [(0, 399), (0, 199)] and memory.refused_span == 200
    node.refused.clear()
    again = read_logs(
        node.get_logs,
        {"fromBlock": 0, "toBlock": 1_000},
        max_blocks=400,
        resolve_block=node.resolve,
        memory=memory,
    )
    assert node.refused == [] and positions(again) == positions(first)
    node.cap = 30
    read_logs(
        node.get_logs,
        {"fromBlock": 0, "toBlock": 300},
        max_blocks=0,
        resolve_block=node.resolve,
        memory=memory,
    )
    assert memory.refused_span == 50 and memory.start_span(400) == 25 and memory.start_span(0) == 25
    fresh = Node(cap=100)
    for _ in range(2):
        read_logs(
            fresh.get_logs, {"fromBlock": 0, "toBlock": 1_000}, max_blocks=400, resolve_block=fresh.resolve
        )
    assert len(fresh.refused) == 4  # without memory each search relearns


def test_a_result_count_refusal_is_not_remembered():
    """A provider refusing for too many results: the span halves for this search only, as a sparser
    stretch later may take the full span."""
    node, memory = Node(cap=100, refusal="query returned more than 10000 results"), SpanMemory()
    for _ in range(2):
        read_logs(
            node.get_logs,
            {"fromBlock": 0, "toBlock": 1_000},
            max_blocks=400,
            resolve_block=node.resolve,
            memory=memory,
        )
    assert memory.refused_span is None and len(node.refused) == 4
