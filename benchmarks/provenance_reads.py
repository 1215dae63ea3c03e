"""Provenance reads of assets not in the read cache: one JSON-RPC batch against one request per read.

``GET /assets/{id}`` reads the asset's on-chain record at the latest block (``assets.service.read_on_chain``):
seven contract reads (record, licence, split hash and key, import profile, holder, split block) and the
split's ``SplitUpdated`` event. The record is cached per block hash, so each new block makes every asset
a cache miss again; on a hosted RPC every request costs its round trip. This benchmark times
``read_on_chain`` per asset with the reads sent as one batch (``ChainClient.call_many``) and, in the same
run, with the batch refused so that each read is its own request (what the client falls back to, and
what it did before batching), through a local proxy that delays every HTTP request by ``--latency-ms``
(a hosted provider's round trip; 0 for anvil alone).

Sets up its own anvil with the contracts deployed and ``--assets`` assets registered in one catalogue.
The two modes alternate per asset and round, so load from other work falls on both alike. Prints the
median milliseconds per read and HTTP requests per read of each mode, and the ratio.

    .venv/bin/python -m benchmarks.provenance_reads --assets 50 --rounds 3 --latency-ms 20
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_account import Account

from edgeledger.assets.service import read_on_chain
from edgeledger.chain.anvil import LocalAnvil, anvil_rpc
from edgeledger.chain.client import ChainClient
from edgeledger.chain.deploy import deploy_with_fresh_keys
from edgeledger.devtools.rpc_proxy import BATCH_REFUSAL, JsonRpcProxy
from edgeledger.devtools.wallet import send_call
from edgeledger.ipfs.cid import cid_of_bytes
from edgeledger.ledger import registration as registration_formats
from edgeledger.ledger.hashing import keccak256
from edgeledger.processes import free_port
from edgeledger.territories import encode_territories


@dataclass
class _Delay(JsonRpcProxy):
    """Delays every HTTP request by the round trip; answers a JSON-RPC batch with one error while
    ``refuse`` (the one-read-per-request path)."""

    refuse: bool = False

    def refuse_batch(self, calls: list[dict[str, Any]]) -> tuple[int, bytes] | None:
        if not self.refuse:
            return None
        return 200, json.dumps({"jsonrpc": "2.0", "id": None, "error": BATCH_REFUSAL}).encode()


def _register_catalogue(chain: ChainClient, creator_key: str, count: int) -> list[int]:
    """``count`` assets (random content, no IPFS needed: only their CIDs go on chain) in one catalogue."""
    registry = chain.contract("ContentRegistry")
    creator = Account.from_key(creator_key).address
    items = []
    for n in range(count):
        data = os.urandom(64) + n.to_bytes(4, "big")
        content = cid_of_bytes(data)
        items.append((keccak256(data), content, cid_of_bytes(content.encode()), 0, False, 0))
    licence = (encode_territories(["DE", "US", "JP"]), 0, 0, 500, "")
    salt = os.urandom(32)
    batch_hash = keccak256(b"".join(item[0] for item in items))
    send_call(
        chain,
        creator_key,
        registry.functions.commitRegistration(registration_formats.commitment(batch_hash, creator, salt)),
    )
    reveal = registry.functions.registerBatch(items, licence, [creator], [10_000], salt)
    receipt = send_call(chain, creator_key, reveal, estimate_block="pending")
    first = int(registry.events.BatchRegistered().process_receipt(receipt)[0]["args"]["firstId"])
    return list(range(first, first + count))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--assets", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    args = parser.parse_args()

    base = Path(tempfile.mkdtemp(prefix="edgeledger-provenance-"))
    anvil = LocalAnvil(free_port(), log_file=base / "anvil.log")
    try:
        anvil.start()
        anvil.wait_ready()
        deployment = deploy_with_fresh_keys(anvil.rpc_url, base / "deployment.json").deployment_file
        creator = Account.create()
        anvil_rpc(anvil.rpc_url, "anvil_setBalance", creator.address, hex(10**22))
        direct = ChainClient(anvil.rpc_url, deployment_file=deployment)
        asset_ids = _register_catalogue(direct, creator.key.to_0x_hex(), args.assets)
        anvil_rpc(anvil.rpc_url, "anvil_mine", hex(10))
        block = direct.block_number()
        with _Delay(anvil.rpc_url, latency=args.latency_ms / 1000).serving() as proxy:
            url = proxy.url
            # One client per mode: the batching one keeps batching, the other one has its batch refused
            # once (before timing), so it reads one request at a time, as a provider without batches.
            batching = ChainClient(url, deployment_file=deployment)
            single = ChainClient(url, deployment_file=deployment)
            proxy.refuse = True
            read_on_chain(single, asset_ids[0], block)
            proxy.refuse = False
            for client in (batching, single):  # warm-up: contract objects, selectors, connections
                read_on_chain(client, asset_ids[0], block)
            times: dict[str, list[float]] = {"batch": [], "one by one": []}
            calls: dict[str, list[int]] = {"batch": [], "one by one": []}
            expected = {a: read_on_chain(direct, a, block) for a in asset_ids}
            for _ in range(args.rounds):
                for asset_id in asset_ids:
                    for mode, client in (("batch", batching), ("one by one", single)):
                        before = proxy.requests
                        start = time.perf_counter()
                        record = read_on_chain(client, asset_id, block)
                        times[mode].append(time.perf_counter() - start)
                        calls[mode].append(proxy.requests - before)
                        if record != expected[asset_id]:
                            raise SystemExit(f"asset {asset_id}: {mode} read another record")
    finally:
        anvil.stop()
        shutil.rmtree(base, ignore_errors=True)

    result: dict[str, Any] = {"assets": args.assets, "rounds": args.rounds, "latency_ms": args.latency_ms}
    print(f"{'mode':<12} {'ms / read (median)':>20} {'HTTP requests / read':>22}")
    for mode in times:
        ms = statistics.median(times[mode]) * 1000
        requests_per_read = statistics.median(calls[mode])
        result[mode.replace(" ", "_")] = {"ms_per_read": round(ms, 2), "requests_per_read": requests_per_read}
        print(f"{mode:<12} {ms:>20.2f} {requests_per_read:>22}")
    ratio = statistics.median(times["one by one"]) / statistics.median(times["batch"])
    result["ratio"] = round(ratio, 2)
    print(f"one by one / batch: {ratio:.2f}x")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
