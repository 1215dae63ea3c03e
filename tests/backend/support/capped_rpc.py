"""A JSON-RPC endpoint in front of the test chain that caps ``eth_getLogs`` as hosted providers do.

Every request is forwarded to the upstream node as it is, except an ``eth_getLogs`` whose block span is
over ``cap`` blocks: that one is answered with a provider-like error (HTTP 200, a JSON-RPC ``error``), as
a provider would. Block tags are resolved against the upstream's head, as a provider does, so a query
"from the deployment block to latest" is refused too. The proxy counts what it forwarded and refused.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

#: (code, message) of the refusal, like geth-based public endpoints ("exceed maximum block range")
RANGE_ERROR = (-32000, "exceed maximum block range: {cap}")
#: like Infura's cap on results (here triggered by the span, which is what the test can control)
RESULTS_ERROR = (-32005, "query returned more than 10000 results")


@dataclass
class CappedRpc:
    upstream: str
    cap: int
    error: tuple[int, str] = RANGE_ERROR
    url: str = ""
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
    #: the methods of each HTTP request received (a batch: several)
    received: list[list[str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.served.clear()
            self.refused.clear()
            self.tagged = 0
            self.received.clear()

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
                return {
                    "jsonrpc": "2.0",
                    "id": call.get("id"),
                    "error": {"code": code, "message": message.format(cap=self.cap)},
                }
            self.served.append((first, last))
        return None


def _handler(proxy: CappedRpc) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            payload = json.loads(body)
            calls = payload if isinstance(payload, list) else [payload]
            with proxy._lock:
                proxy.received.append([str(c.get("method")) for c in calls])
            refusals = [proxy.answer(c) for c in calls]
            if isinstance(payload, list) and not proxy.batches and proxy.batch_refusal == "http":
                self.send_error(405, "batch requests are not supported")
                return
            if isinstance(payload, list) and not proxy.batches and proxy.batch_refusal == "short":
                first = requests.post(proxy.upstream, json=calls[0], timeout=60).json()
                reply = json.dumps([first]).encode()
            elif isinstance(payload, list) and not proxy.batches:
                refusal = {"code": -32600, "message": "batch requests are not supported"}
                reply = json.dumps({"jsonrpc": "2.0", "id": None, "error": refusal}).encode()
            elif isinstance(payload, dict) and refusals[0] is not None:
                reply = json.dumps(refusals[0]).encode()
            elif any(r is not None for r in refusals):  # a batch: forward the rest one by one
                answers = [
                    r if r is not None else requests.post(proxy.upstream, json=c, timeout=60).json()
                    for c, r in zip(calls, refusals, strict=True)
                ]
                reply = json.dumps(answers).encode()
            else:
                forwarded = requests.post(
                    proxy.upstream, data=body, headers={"Content-Type": "application/json"}, timeout=60
                )
                reply = forwarded.content
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def capped_rpc(upstream: str, cap: int, error: tuple[int, str] = RANGE_ERROR) -> Iterator[CappedRpc]:
    """A :class:`CappedRpc` in front of ``upstream`` on a free loopback port, for the block."""
    proxy = CappedRpc(upstream, cap, error)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(proxy))
    server.daemon_threads = True
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield proxy
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
