"""IpfsClient and LocalIpfsNode.

Tests marked ``integration`` run against a real js-ipfs daemon (the session's ``ipfs_node``); the others
use a closed port or a tiny fake HTTP API, to pin down the error mapping and exactly what is sent.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import ipfshttpclient
import pytest

from edgeledger.errors import EdgeLedgerError
from edgeledger.ipfs import (
    CidBuilder,
    InvalidCidError,
    IpfsClient,
    IpfsError,
    LocalIpfsNode,
    canonical_json_bytes,
    cid_of_bytes,
    cid_of_file,
    cid_of_json,
    normalize_cid,
)
from edgeledger.ipfs.cid import CHUNKER_SIZE, MAX_LINKS, UNIXFS_V1_2025, base58btc_encode, parse_cid
from edgeledger.ipfs.client import ADD_OPTIONS, add_options
from edgeledger.processes import free_ports

integration = pytest.mark.integration

C = CHUNKER_SIZE
MiB = 1024 * 1024
HELLO = b"hello world\n"
HELLO_CID = "bafkreifjjcie6lypi6ny7amxnfftagclbuxndqonfipmb64f2km2devei4"
HELLO_CID_B58 = "zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY"


def data_of(size: int) -> bytes:
    return random.Random(size).randbytes(size)


def write_random_file(path: Path, size: int) -> Path:
    with path.open("wb") as fh:
        left = size
        while left:
            piece = min(left, 4 * MiB)
            fh.write(os.urandom(piece))
            left -= piece
    return path


# ----------------------------------------------------------------------------------------------
# Against the real daemon: CIDs
# ----------------------------------------------------------------------------------------------


@integration
@pytest.mark.parametrize("size", [0, 1, C - 1, C, C + 1, MAX_LINKS * C, MAX_LINKS * C + 1])
def test_local_cid_equals_daemon_cid(ipfs_client: IpfsClient, size: int) -> None:
    data = data_of(size)
    assert ipfs_client.add_bytes(data) == cid_of_bytes(data)


@integration
def test_large_random_file(ipfs_client: IpfsClient, tmp_path: Path) -> None:
    path = write_random_file(tmp_path / "big.bin", 50 * MiB + 12_345)
    cid = ipfs_client.add_file(path)
    assert cid == cid_of_file(path)
    assert cid.startswith("bafybei")


@integration
def test_three_layer_tree_matches_daemon(ipfs_node: LocalIpfsNode) -> None:
    """Depth 3 needs > 174**2 leaves: 7.9 GB with the real chunker, 31 MB with size-1024."""
    data = data_of(MAX_LINKS**2 * 1024 + 1)
    raw = ipfshttpclient.Client(ipfs_node.api_multiaddr, timeout=120)
    answer = raw.add_bytes(data, opts={**ADD_OPTIONS, "chunker": "size-1024", "pin": "false"})
    builder = CidBuilder(chunker_size=1024)
    builder.update(data)
    assert parse_cid(answer) == parse_cid(builder.finalize())


@integration
@pytest.mark.parametrize("size", [C + 1, MiB, MiB + 1, 3 * MiB + 5])
def test_unixfs_v1_2025_small_files_match_the_daemon(ipfs_client: IpfsClient, size: int) -> None:
    """Below 175 chunks the width never matters, so js-ipfs builds unixfs-v1-2025 exactly."""
    data = data_of(size)
    assert ipfs_client.add_bytes(data, profile="unixfs-v1-2025") == cid_of_bytes(data, UNIXFS_V1_2025)
    assert cid_of_bytes(data, UNIXFS_V1_2025) != cid_of_bytes(data)


@integration
def test_js_ipfs_ignores_the_file_width(ipfs_node: LocalIpfsNode, ipfs_client: IpfsClient) -> None:
    """js-ipfs's HTTP add drops max-file-links: past 174 chunks it builds another tree than the one we
    (and kubo >= 0.35) build for unixfs-v1-2025, and the width probe says so. Small chunks keep it cheap."""
    data = data_of(175 * 1024 + 1)
    raw = ipfshttpclient.Client(ipfs_node.api_multiaddr, timeout=120)
    options = {**add_options(UNIXFS_V1_2025), "chunker": "size-1024", "pin": "false"}
    answer = normalize_cid(raw.add_bytes(data, opts=options), allow_v0=True)
    wide, narrow = CidBuilder(chunker_size=1024, max_links=1024), CidBuilder(chunker_size=1024)
    wide.update(data)
    narrow.update(data)
    assert answer == narrow.finalize() != wide.finalize()
    assert ipfs_client.builds_file_width() is False


@integration
def test_a_layout_the_node_cannot_build_is_refused_and_unpinned(
    ipfs_node: LocalIpfsNode, ipfs_client: IpfsClient
) -> None:
    """The registration's pin check, against the real node and the width it ignores (1 KiB chunks keep
    175 chunks small): the node's CID is unpinned and refused, never taken, with the reason."""
    from edgeledger.assets.flows import _pin_expecting
    from edgeledger.assets.service import AssetError

    data = data_of(175 * 1024 + 3)
    raw = ipfshttpclient.Client(ipfs_node.api_multiaddr, timeout=120)
    options = {**add_options(UNIXFS_V1_2025), "chunker": "size-1024"}
    expected = CidBuilder(chunker_size=1024, max_links=1024)
    expected.update(data)
    with pytest.raises(AssetError) as info:
        _pin_expecting(
            ipfs_client,
            lambda: normalize_cid(raw.add_bytes(data, opts=options), allow_v0=True),
            expected.finalize(),
            "unixfs-v1-2025",
        )
    error = info.value
    assert (error.code, error.status) == ("ipfs_cid_mismatch", 502)
    assert error.details["node_honours_max_file_links"] is False
    assert error.details["import_profile"] == "unixfs-v1-2025"
    assert "ignores max-file-links" in error.message
    assert not ipfs_client.is_pinned(error.details["node_cid"])


@integration
def test_add_json_is_deterministic(ipfs_client: IpfsClient) -> None:
    doc: dict[str, Any] = {"title": "Ünïcode ✓", "n": 1, "nested": {"z": [1, 2.5], "a": None, "t": True}}
    reordered = {"nested": {"t": True, "a": None, "z": [1, 2.5]}, "n": 1, "title": "Ünïcode ✓"}
    first = ipfs_client.add_json(doc)
    assert ipfs_client.add_json(reordered) == first
    assert first == cid_of_json(doc) == cid_of_bytes(canonical_json_bytes(doc))
    stored = ipfs_client.cat(first)
    assert stored == canonical_json_bytes(doc)
    assert json.loads(stored) == doc


# ----------------------------------------------------------------------------------------------
# Against the real daemon: cat, pins, health
# ----------------------------------------------------------------------------------------------


@integration
def test_cat_round_trip(ipfs_client: IpfsClient) -> None:
    data = os.urandom(3 * C + 99)
    cid = ipfs_client.add_bytes(data)
    assert ipfs_client.cat(cid) == data
    assert ipfs_client.cat("z" + base58btc_encode(parse_cid(cid).to_bytes())) == data  # any spelling


@integration
def test_pin_rm_and_is_pinned(ipfs_client: IpfsClient) -> None:
    cid = ipfs_client.add_bytes(os.urandom(1000))
    assert ipfs_client.is_pinned(cid)
    ipfs_client.pin_rm(cid)
    assert not ipfs_client.is_pinned(cid)
    ipfs_client.pin_rm(cid)  # idempotent
    never_added = cid_of_bytes(os.urandom(64))
    assert not ipfs_client.is_pinned(never_added)
    ipfs_client.pin_rm(never_added)


@integration
def test_chunk_of_a_pinned_file_is_not_reported_as_pinned(ipfs_client: IpfsClient) -> None:
    data = os.urandom(C + 1)
    root = ipfs_client.add_bytes(data)
    first_leaf = cid_of_bytes(data[:C])
    assert ipfs_client.is_pinned(root)
    assert not ipfs_client.is_pinned(first_leaf)  # only indirectly pinned
    ipfs_client.pin_rm(root)


@integration
def test_version_and_ping(ipfs_client: IpfsClient) -> None:
    assert ipfs_client.version()
    ipfs_client.ping()


@integration
def test_invalid_cid_is_refused_before_the_node_is_asked(ipfs_client: IpfsClient) -> None:
    for call in (ipfs_client.cat, ipfs_client.pin_rm, ipfs_client.is_pinned):
        with pytest.raises(InvalidCidError):
            call("not-a-cid")


# ----------------------------------------------------------------------------------------------
# Against the real daemon: process lifecycle
# ----------------------------------------------------------------------------------------------


@integration
def test_stopped_node_is_unavailable(ipfs_node: LocalIpfsNode, ipfs_client: IpfsClient) -> None:
    ipfs_node.stop()
    try:
        assert not ipfs_node.is_running()
        with pytest.raises(IpfsError) as info:
            ipfs_client.add_bytes(b"while stopped")
        assert info.value.code == "ipfs_unavailable"
        assert info.value.status == 503
        assert ipfs_node.api_multiaddr in info.value.message
    finally:
        ipfs_node.start()
        ipfs_node.wait_ready()
    ipfs_client.ping()


@integration
def test_restart_keeps_pins(ipfs_node: LocalIpfsNode, ipfs_client: IpfsClient) -> None:
    data = os.urandom(2 * C + 5)
    cid = ipfs_client.add_bytes(data)
    ipfs_node.restart()
    assert ipfs_client.is_pinned(cid)
    assert ipfs_client.cat(cid) == data


@integration
def test_restart_after_kill_9_clears_the_stale_lock(
    ipfs_node: LocalIpfsNode, ipfs_client: IpfsClient
) -> None:
    cid = ipfs_client.add_bytes(os.urandom(4096))
    pid = ipfs_node.pid
    assert pid is not None
    try:
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while ipfs_node.is_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not ipfs_node.is_running()
        assert (ipfs_node.repo_dir / "repo.lock").exists()  # what a killed js-ipfs leaves behind
    finally:
        ipfs_node.start()
        ipfs_node.wait_ready()
    assert ipfs_client.is_pinned(cid)


@integration
def test_second_daemon_on_a_repo_in_use_is_refused(ipfs_node: LocalIpfsNode, tmp_path: Path) -> None:
    api, gateway, grpc = free_ports(3)
    intruder = LocalIpfsNode(ipfs_node.repo_dir, api, gateway, grpc, tmp_path / "intruder.log")
    with pytest.raises(RuntimeError, match="in use"):
        intruder.start()
    assert ipfs_node.is_running()


@integration
def test_port_in_use_is_refused(tmp_path: Path) -> None:
    api, gateway, grpc = free_ports(3)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", api))
        squatter.listen()
        node = LocalIpfsNode(tmp_path / "repo", api, gateway, grpc, tmp_path / "node.log")
        with pytest.raises(RuntimeError, match="already in use"):
            node.start()
    config = json.loads((tmp_path / "repo" / "config").read_text())
    assert config["Addresses"]["API"] == f"/ip4/127.0.0.1/tcp/{api}"
    assert config["Addresses"]["RPC"] == f"/ip4/127.0.0.1/tcp/{grpc}/ws"
    assert config["Addresses"]["Swarm"] == [] and config["Bootstrap"] == []
    assert config["Discovery"]["MDNS"]["Enabled"] is False


@integration
def test_daemon_that_dies_is_reported_with_its_log(tmp_path: Path) -> None:
    api, gateway, grpc = free_ports(3)
    node = LocalIpfsNode(tmp_path / "repo", api, gateway, grpc, tmp_path / "node.log")
    node.ensure_initialised()
    (tmp_path / "repo" / "version").write_text("999")  # a repo from the future: js-ipfs refuses it
    node.start()
    try:
        with pytest.raises(RuntimeError, match="exited") as info:
            node.wait_ready(timeout=60)
        assert "Daemon is ready" not in str(info.value)
        assert "jsipfs daemon" in str(info.value)  # the log tail is included
    finally:
        node.stop()


@integration
def test_add_file_streams_from_disk(ipfs_node: LocalIpfsNode, tmp_path: Path) -> None:
    """Peak RSS of a process adding a 300 MB file stays far below the file size.

    Measured in a fresh interpreter from /proc/self/status (VmHWM, the peak resident set) before and
    after the add, so nothing else this session did can mask or inflate it.
    """
    size = 300 * MiB
    path = write_random_file(tmp_path / "huge.bin", size)
    script = (
        "import json, sys, time\n"
        "from edgeledger.ipfs import IpfsClient\n"
        "def hwm():\n"
        "    for line in open('/proc/self/status'):\n"
        "        if line.startswith('VmHWM:'):\n"
        "            return int(line.split()[1]) * 1024\n"
        "client = IpfsClient(sys.argv[1], timeout=600)\n"
        "client.version()\n"
        "before = hwm()\n"
        "start = time.monotonic()\n"
        "cid = client.add_file(sys.argv[2])\n"
        "print(json.dumps({'cid': cid, 'before': before, 'after': hwm(),"
        " 'seconds': time.monotonic() - start}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, ipfs_node.api_multiaddr, str(path)],
        capture_output=True,
        text=True,
        timeout=900,
        check=True,
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    growth = measured["after"] - measured["before"]
    print(
        f"\nadd_file({size // MiB} MiB): peak RSS {measured['after'] / MiB:.1f} MiB, "
        f"growth during add {growth / MiB:.1f} MiB, {measured['seconds']:.1f} s"
    )
    assert growth < 64 * MiB
    assert measured["cid"] == cid_of_file(path)


# ----------------------------------------------------------------------------------------------
# Without a daemon: unreachable nodes and a fake HTTP API
# ----------------------------------------------------------------------------------------------


def _calls(client: IpfsClient) -> list[Callable[[], object]]:
    return [
        client.version,
        client.ping,
        lambda: client.add_bytes(b"x"),
        lambda: client.add_json({"a": 1}),
        lambda: client.cat(HELLO_CID),
        lambda: client.pin_rm(HELLO_CID),
        lambda: client.is_pinned(HELLO_CID),
    ]


def test_nothing_listening_is_unavailable_503() -> None:
    (port,) = free_ports(1)
    addr = f"/ip4/127.0.0.1/tcp/{port}/http"
    client = IpfsClient(addr, timeout=5)
    for call in _calls(client):
        with pytest.raises(IpfsError) as info:
            call()
        error = info.value
        assert isinstance(error, EdgeLedgerError)
        assert (error.code, error.status) == ("ipfs_unavailable", 503)
        assert error.message.startswith(f"the IPFS node at {addr} is unreachable")
        assert error.to_body()["error"]["code"] == "ipfs_unavailable"


def test_silent_node_times_out_as_unavailable() -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = IpfsClient(f"/ip4/127.0.0.1/tcp/{silent.getsockname()[1]}/http", timeout=0.5)
        started = time.monotonic()
        with pytest.raises(IpfsError) as info:
            client.version()
        assert time.monotonic() - started < 10
    assert (info.value.code, info.value.status) == ("ipfs_unavailable", 503)
    assert "timed out" in info.value.message


def test_invalid_multiaddr_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        IpfsClient("http://127.0.0.1:5001")


@dataclass
class _Recorded:
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeIpfsApi:
    """Answers ``/api/v0/<command>`` with canned (status, JSON) replies and records every request."""

    replies: dict[str, tuple[int, Any]]
    requests: list[_Recorded] = field(default_factory=list)
    addr: str = ""


def _error(message: str) -> dict[str, Any]:
    """An error reply as kubo and js-ipfs shape it."""
    return {"Message": message, "Code": 0, "Type": "error"}


def _read_body(handler: BaseHTTPRequestHandler) -> bytes:
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip(), 16)
            if size == 0:
                handler.rfile.readline()
                return bytes(body)
            body += handler.rfile.read(size)
            handler.rfile.readline()
    return handler.rfile.read(int(handler.headers.get("Content-Length", "0")))


@pytest.fixture
def fake_api() -> Iterator[FakeIpfsApi]:
    api = FakeIpfsApi(replies={})

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            url = urlsplit(self.path)
            command = url.path.removeprefix("/api/v0/")
            api.requests.append(_Recorded(command, parse_qs(url.query), dict(self.headers), _read_body(self)))
            status, reply = api.replies.get(command, (404, _error("no such command")))
            payload = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    api.addr = f"/ip4/127.0.0.1/tcp/{server.server_address[1]}/http"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()


def test_add_sends_the_cid_defining_options_and_a_content_type(fake_api: FakeIpfsApi, tmp_path: Path) -> None:
    # js-ipfs answers in base58btc; the client must hand back base32.
    fake_api.replies["add"] = (
        200,
        {"Name": "x", "Hash": "zb2rhi36Gc9GJWijLEL6zW45MBux5FcFv5gJmjXA7VAMozEXY"},
    )
    client = IpfsClient(fake_api.addr, timeout=10)
    path = tmp_path / "f.bin"
    path.write_bytes(HELLO)
    assert client.add_file(path) == HELLO_CID
    assert client.add_bytes(HELLO) == HELLO_CID
    for sent in fake_api.requests:
        assert sent.path == "add"
        for key, value in {
            "cid-version": "1",
            "raw-leaves": "true",
            "hash": "sha2-256",
            "chunker": "size-262144",
            "max-file-links": "174",
            "pin": "true",
        }.items():
            assert sent.query[key] == [value]
        assert b"Content-Type: application/octet-stream" in sent.body
        assert HELLO in sent.body


def test_the_import_profile_decides_chunker_and_width(fake_api: FakeIpfsApi) -> None:
    """Sent explicitly either way, so a kubo initialised with another profile (its ``Import.*`` config)
    cannot change a CID; the client's profile is the default, an add may name another."""
    fake_api.replies["add"] = (200, {"Name": "x", "Hash": HELLO_CID})
    modern = IpfsClient(fake_api.addr, timeout=10, profile="unixfs-v1-2025")
    assert modern.profile.name == "unixfs-v1-2025" and "unixfs-v1-2025" in repr(modern)
    modern.add_bytes(HELLO)
    modern.add_bytes(HELLO, profile="legacy-cidv1")
    IpfsClient(fake_api.addr, timeout=10).add_json({"a": 1}, profile=UNIXFS_V1_2025)
    sent = [
        (r.query["chunker"], r.query["max-file-links"], r.query["cid-version"]) for r in fake_api.requests
    ]
    assert sent == [
        (["size-1048576"], ["1024"], ["1"]),
        (["size-262144"], ["174"], ["1"]),
        (["size-1048576"], ["1024"], ["1"]),
    ]
    assert add_options("unixfs-v1-2025")["raw-leaves"] == "true" and add_options() == ADD_OPTIONS
    with pytest.raises(ValueError, match="unknown IPFS import profile"):
        IpfsClient(fake_api.addr, timeout=10, profile="unixfs-v0-2015")


def test_width_probe_only_hashes_three_bytes(fake_api: FakeIpfsApi) -> None:
    """A node answering the two-level tree of 3 one-byte chunks under 2 links (what kubo's
    --max-file-links=2 builds) honours the width; the probe stores and pins nothing."""
    two_level = CidBuilder(chunker_size=1, max_links=2)
    two_level.update(b"abc")
    fake_api.replies["add"] = (200, {"Name": "x", "Hash": two_level.finalize()})
    assert IpfsClient(fake_api.addr, timeout=10).builds_file_width() is True
    (sent,) = fake_api.requests
    assert (sent.query["only-hash"], sent.query["pin"]) == (["true"], ["false"])
    assert (sent.query["chunker"], sent.query["max-file-links"]) == (["size-1"], ["2"])
    fake_api.replies["add"] = (200, {"Name": "x", "Hash": cid_of_bytes(b"abc")})  # anything else
    assert IpfsClient(fake_api.addr, timeout=10).builds_file_width() is False


def test_error_reply_is_ipfs_error_502(fake_api: FakeIpfsApi) -> None:
    fake_api.replies["cat"] = (500, _error("this dag node is a directory"))
    fake_api.replies["add"] = (500, _error("blockstore full"))
    fake_api.replies["pin/rm"] = (500, _error("permission denied"))
    client = IpfsClient(fake_api.addr, timeout=10)
    for call, node_says in [
        (lambda: client.cat(HELLO_CID), "this dag node is a directory"),
        (lambda: client.add_bytes(b"x"), "blockstore full"),
        (lambda: client.pin_rm(HELLO_CID), "permission denied"),
    ]:
        with pytest.raises(IpfsError) as info:
            call()
        assert (info.value.code, info.value.status) == ("ipfs_error", 502)
        assert node_says in info.value.message


def test_kubo_not_pinned_wording_is_handled(fake_api: FakeIpfsApi) -> None:
    fake_api.replies["pin/rm"] = (
        500,
        {"Message": "not pinned or pinned indirectly", "Code": 0, "Type": "error"},
    )
    fake_api.replies["pin/ls"] = (
        500,
        {"Message": f"path '{HELLO_CID}' is not pinned", "Code": 0, "Type": "error"},
    )
    client = IpfsClient(fake_api.addr, timeout=10)
    client.pin_rm(HELLO_CID)
    assert client.is_pinned(HELLO_CID) is False
    assert fake_api.requests[1].query["type"] == ["recursive"]


def test_add_reply_that_is_not_a_cid_is_ipfs_error(fake_api: FakeIpfsApi) -> None:
    fake_api.replies["add"] = (200, {"Name": "x", "Hash": "garbage"})
    with pytest.raises(IpfsError) as info:
        IpfsClient(fake_api.addr, timeout=10).add_bytes(b"x")
    assert info.value.code == "ipfs_error"
