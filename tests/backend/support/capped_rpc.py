"""A JSON-RPC endpoint in front of the test chain that caps ``eth_getLogs`` as hosted providers do.

Every request is forwarded to the upstream node as it is, except an ``eth_getLogs`` whose block span is
over ``cap`` blocks: that one is answered with a provider-like error (HTTP 200, a JSON-RPC ``error``), as
a provider would. Block tags are resolved against the upstream's head, as a provider does, so a query
"from the deployment block to latest" is refused too. The proxy counts what it forwarded and refused, and
can refuse JSON-RPC batches in the three ways providers do (``batches``, ``batch_refusal``). Built on the
shared proxy of edgeledger.devtools.rpc_proxy.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

from edgeledger.devtools.rpc_proxy import BATCH_REFUSAL, JsonRpcProxy, error_answer

#: (code, message) of the refusal, like geth-based public endpoints ("exceed maximum block range")
RANGE_ERROR = (-32000, "exceed maximum block range: {cap}")
#: like Infura's cap on results (here triggered by the span, which is what the test can control)
RESULTS_ERROR = (-32005, "query returned more than 10000 results")


@dataclass
class CappedRpc(JsonRpcProxy):
    cap: int = 10**9
    error: tuple[int, str] = RANGE_ERROR
    #: (fromBlock, toBlock) of every eth_getLogs forwarded
    served: list[tuple[int, int]] = field(default_factory=list)
    #: (fromBlock, toBlock) of every eth_getLogs refused
    refused: list[tuple[int, int]] = field(default_factory=list)
    #: eth_getLogs that named a block by tag ("latest", ...) instead of a number
    tagged: int = 0
    #: whether JSON-RPC batches are taken; when not, a batch gets one error object, as from providers
    #: that do not take them
    batches: bool = True
    #: how a batch is refused: "error" (one JSON-RPC error object), "http" (HTTP 405) or "short" (only the
    #: first call answered, as a provider that caps a batch's size)
    batch_refusal: str = "error"

    def reset(self) -> None:
        with self._lock:
            self.served.clear()
            self.refused.clear()
            self.tagged = 0
            self.requests = 0
            self.received.clear()

    def refuse_batch(self, calls: list[dict[str, Any]]) -> tuple[int, bytes] | None:
        if self.batches:
            return None
        if self.batch_refusal == "http":
            return 405, json.dumps({"message": "batch requests are not supported"}).encode()
        if self.batch_refusal == "short":
            return 200, json.dumps([json.loads(self.forward(json.dumps(calls[0]).encode()))]).encode()
        return 200, json.dumps({"jsonrpc": "2.0", "id": None, "error": BATCH_REFUSAL}).encode()

    def _block(self, value: Any) -> int:
        if isinstance(value, str) and value.startswith("0x") and len(value) < 66:
            return int(value, 16)
        with self._lock:
            self.tagged += 1
        reply = requests.post(
            self.upstream,
            json={"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
            timeout=60,
        )
        head = int(reply.json()["result"], 16)
        return 0 if value == "earliest" else head

    def answer(self, call: dict[str, Any]) -> dict[str, Any] | None:
        """The refusal of a call, or None to forward it."""
        if call.get("method") != "eth_getLogs":
            return None
        query = (call.get("params") or [{}])[0]
        if "blockHash" in query:
            return None
        first = self._block(query.get("fromBlock", "latest"))
        last = self._block(query.get("toBlock", "latest"))
        with self._lock:
            if last - first + 1 > self.cap:
                self.refused.append((first, last))
                code, message = self.error
                return error_answer(call, code, message.format(cap=self.cap))
            self.served.append((first, last))
        return None


@contextmanager
def capped_rpc(upstream: str, cap: int, error: tuple[int, str] = RANGE_ERROR) -> Iterator[CappedRpc]:
    """A :class:`CappedRpc` in front of ``upstream`` on a free loopback port, for the block."""
    with CappedRpc(upstream, cap=cap, error=error).serving() as proxy:
        yield proxy
