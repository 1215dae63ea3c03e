"""Serving the API: uvicorn's HTTP/1.1 protocol with Nagle's algorithm off on every connection.

    edgeledger serve --workers 4 --host 0.0.0.0 --port 8000

Why a protocol class of our own: asyncio turns on ``TCP_NODELAY`` for a connection only when the
listening socket's ``proto`` is ``IPPROTO_TCP``. uvicorn binds the shared socket of ``--workers N`` with
``socket.socket(family)`` (``proto`` 0), so every connection accepted by a worker process keeps Nagle's
algorithm on. A response leaves in two writes (head, then body); the body waits for the client's ACK
of the head, and the client delays that ACK by up to 40 ms. Every keep-alive request after a
connection's first then took about 44 ms even for ``/health`` (measured with ``benchmarks/api_load.py``
and with plain ``http.client`` on one connection: 44 ms per request with ``--workers 2``, 1.3 ms with a
single process). :class:`NoDelayH11Protocol` sets ``TCP_NODELAY`` on each accepted TCP socket before
uvicorn's own ``connection_made`` runs, whatever the socket came from.

Why an event loop of our own: with ``--workers N`` every worker process waits on the one shared
listening socket, and asyncio accepts up to 100 pending connections each time that socket becomes
readable (bpo-27906). A burst of new connections (a load balancer filling its keep-alive pool, a client
opening several) then lands on whichever process woke first: ``benchmarks/api_load.py --bursts 8``
found all 32 of wrk's connections held by one of the two workers in 3 runs of 8, and such a run served
half the requests per second of a run where they were spread. :class:`FairAcceptEventLoop` accepts one
connection each time the socket is readable; the socket stays readable while connections wait, so every
process takes its turn, and a process busy with requests comes back to the socket less often than an
idle one.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

#: What ``uvicorn --http`` takes to use :class:`NoDelayH11Protocol`.
HTTP_PROTOCOL = "edgeledger.server:NoDelayH11Protocol"
#: What ``uvicorn --loop`` takes to use :class:`FairAcceptEventLoop`.
EVENT_LOOP = "edgeledger.server:FairAcceptEventLoop"
APP_FACTORY = "edgeledger.main:create_app"


def set_nodelay(transport: asyncio.BaseTransport) -> bool:
    """Turns Nagle's algorithm off on the transport's TCP socket; False when it has none (Unix socket)."""
    sock: Any = transport.get_extra_info("socket")
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return False
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return True


class NoDelayH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, with ``TCP_NODELAY`` set on every connection (see the module docstring)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:  # type: ignore[override]
        set_nodelay(transport)
        super().connection_made(transport)  # type: ignore[arg-type]


class FairAcceptEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop, accepting one connection per readiness of a listening socket (see the
    module docstring); everything else is asyncio's."""

    def _accept_connection(  # type: ignore[override]
        self,
        protocol_factory: Any,
        sock: Any,
        sslcontext: Any = None,
        server: Any = None,
        backlog: int = 100,
        *args: Any,
        **kwargs: Any,
    ) -> None:
        super()._accept_connection(  # type: ignore[misc]
            protocol_factory, sock, sslcontext, server, 1, *args, **kwargs
        )


def uvicorn_command(
    host: str, port: int, *, workers: int = 1, log_level: str = "info", access_log: bool = True
) -> list[str]:
    """The command line that serves the API with this interpreter's uvicorn and our protocol."""
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        APP_FACTORY,
        "--factory",
        "--http",
        HTTP_PROTOCOL,
        "--loop",
        EVENT_LOOP,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--log-level",
        log_level,
        # The client address is the app's to find (TRUSTED_PROXIES, edgeledger.auth.identity): uvicorn
        # would otherwise take X-Forwarded-For from any peer at 127.0.0.1 before the app sees it.
        "--no-proxy-headers",
    ]
    return command if access_log else [*command, "--no-access-log"]
