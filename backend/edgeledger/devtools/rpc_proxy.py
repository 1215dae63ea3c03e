"""A JSON-RPC endpoint in front of a node that behaves as a hosted provider or a racing node would.

The tests and benchmarks put it between a client and the local anvil to show what the client does when
the endpoint refuses a log query's span, refuses batches, adds a round trip's latency or answers a
receipt late. :class:`JsonRpcProxy` forwards every request to ``upstream`` as it is, except what its hooks
answer themselves:

* :meth:`JsonRpcProxy.answer`: one call's own answer (a JSON-RPC object), or None to forward it;
* :meth:`JsonRpcProxy.refuse_batch`: the whole HTTP answer to a batch, or None to take it.

Every request waits ``latency`` seconds first (a provider's round trip). Connections are kept alive and
sent without Nagle's delay, as a client's connection pool to a provider is, so the latency added is the
one asked for. The proxy counts the HTTP requests and records each one's methods.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import requests

JSON = {"Content-Type": "application/json"}
BATCH_REFUSAL = {"code": -32600, "message": "batch requests are not supported"}
"""The error object providers that take no batches answer one with."""


def error_answer(call: dict[str, Any], code: int, message: str) -> dict[str, Any]:
    """A JSON-RPC error answering ``call``."""
    return {"jsonrpc": "2.0", "id": call.get("id"), "error": {"code": code, "message": message}}


@dataclass
class JsonRpcProxy:
    upstream: str
    #: seconds every HTTP request waits before it is answered
    latency: float = 0.0
    #: where the proxy listens, once serving
    url: str = ""
    #: HTTP requests received
    requests: int = 0
    #: the methods of each HTTP request received (a batch: several)
    received: list[list[str]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _local: threading.local = field(default_factory=threading.local)

    def answer(self, call: dict[str, Any]) -> dict[str, Any] | None:
        """The proxy's own answer to one call, or None to forward it (every call, unless overridden)."""
        return None

    def refuse_batch(self, calls: list[dict[str, Any]]) -> tuple[int, bytes] | None:
        """(HTTP status, body) refusing a batch, or None to take it (every batch, unless overridden)."""
        return None

    def forward(self, body: bytes) -> bytes:
        """``body`` sent to the upstream node; its answer (one kept-alive session per proxy thread)."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return bytes(session.post(self.upstream, data=body, headers=JSON, timeout=60).content)

    def reply(self, body: bytes) -> tuple[int, bytes]:
        """(HTTP status, body) answering one HTTP request's ``body``."""
        payload = json.loads(body)
        calls = payload if isinstance(payload, list) else [payload]
        with self._lock:
            self.requests += 1
            self.received.append([str(call.get("method")) for call in calls])
        if isinstance(payload, list):
            refusal = self.refuse_batch(calls)
            if refusal is not None:
                return refusal
        answers = [self.answer(call) for call in calls]
        if all(answer is None for answer in answers):
            return 200, self.forward(body)
        filled = [
            answer if answer is not None else json.loads(self.forward(json.dumps(call).encode()))
            for call, answer in zip(calls, answers, strict=True)
        ]
        return 200, json.dumps(filled if isinstance(payload, list) else filled[0]).encode()

    @contextmanager
    def serving(self) -> Iterator[JsonRpcProxy]:
        """Listens on a free loopback port (``url``) for the block."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        server.daemon_threads = True
        self.url = f"http://127.0.0.1:{server.server_address[1]}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


def _handler(proxy: JsonRpcProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as a client's connection pool to a provider

        def setup(self) -> None:
            super().setup()
            # Headers and body go as two writes: without this, Nagle's algorithm holds the body until
            # the client's delayed ACK (about 40 ms on Linux), which a real provider does not add.
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if proxy.latency:
                time.sleep(proxy.latency)
            status, reply = proxy.reply(body)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
