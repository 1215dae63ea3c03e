"""pytest plugin: one private js-ipfs daemon per test session (``ipfs_node``) and a client for it.

Registered from ``tests/backend/conftest.py`` with ``pytest_plugins = ["tests.backend.support.ipfs"]``.
The daemon gets its own repository under pytest's tmp dir and free loopback ports, so tests never
touch a developer's node (or ``~/.jsipfs``) and parallel sessions (xdist workers) do not collide.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from edgeledger.ipfs import IpfsClient, LocalIpfsNode
from edgeledger.ipfs.node import jsipfs_binary
from edgeledger.processes import free_ports


def pytest_configure(config: pytest.Config) -> None:
    # ipfshttpclient 0.7 + urllib3 2.x warn on every request. edgeledger.ipfs.client filters this at
    # import, but pytest resets the warning filters around each test, so repeat it as an ini filter.
    config.addinivalue_line(
        "filterwarnings", "ignore:The 'strict' parameter is no longer needed:FutureWarning"
    )


@pytest.fixture(scope="session")
def ipfs_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalIpfsNode]:
    """A running js-ipfs daemon (offline, loopback only) shared by the session; stopped at the end.

    Tests may stop/restart it, but must leave it running (use ``node.restart()`` in a ``finally``).
    """
    try:
        jsipfs_binary()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    base = tmp_path_factory.mktemp("ipfs")
    api_port, gateway_port, grpc_port = free_ports(3)
    node = LocalIpfsNode(base / "repo", api_port, gateway_port, grpc_port, base / "jsipfs.log")
    with node:
        yield node


@pytest.fixture(scope="session")
def ipfs_client(ipfs_node: LocalIpfsNode) -> IpfsClient:
    """An :class:`IpfsClient` for :func:`ipfs_node`, with a timeout generous enough for big adds."""
    return ipfs_node.client(timeout=300.0)
