"""The demo's catalogue: a merchant's product images registered in one transaction.

The creator's own wallet commits to the catalogue (``commitRegistration`` of
``registrationCommitment(batchHash(items), creator, salt)``: the content hashes stay hidden until the
reveal), then reveals it a block later with ``ContentRegistry.registerBatch``: every image its own asset
and ERC-721 token, all under one licence and split that the registry stores once (docs/registration.md,
"Catalogues"). The CIDs are computed locally with the IPFS node's import profile; the files and their
metadata documents are pinned only once the registration has landed, as for one asset.

The assets do not pass through the API's registration journal: the chain indexer projects them
(``indexed_assets``) like any asset registered on chain directly, and ``edgeledger verify asset FILE``
verifies any of them from the file alone.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from eth_account import Account
from web3.logs import DISCARD

from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.devtools.samples import demo_png
from edgeledger.devtools.stack import say
from edgeledger.devtools.wallet import send_call
from edgeledger.ipfs import IpfsClient
from edgeledger.ipfs.cid import canonical_json_bytes, cid_of_bytes
from edgeledger.ledger import registration as registration_formats
from edgeledger.ledger.abis import CONTENT_REGISTRY
from edgeledger.ledger.hashing import keccak256
from edgeledger.territories import encode_territories

#: assets in the demo's catalogue (ContentRegistry.MAX_BATCH)
CATALOGUE_SIZE = 100


@dataclass(frozen=True)
class CatalogueReport:
    first_id: int
    count: int
    gas_used: int
    tx_hash: str


def run_catalogue_demo(
    settings: Settings, creator_key: str, label: str, *, count: int = CATALOGUE_SIZE, valid_from: int = 0
) -> CatalogueReport:
    chain = ChainClient.from_settings(settings)
    ipfs = IpfsClient.from_settings(settings)
    registry = chain.contract(CONTENT_REGISTRY)
    creator = Account.from_key(creator_key).address
    say(f"demo: the creator registers a catalogue of {count} product images in one transaction")
    files, metadata, items = [], [], []
    profile_code = registration_formats.import_profile_code(ipfs.profile.name)
    for n in range(count):
        data = demo_png(f"EdgeLedger catalogue {label} #{n}", size=32)
        sha = hashlib.sha256(data).hexdigest()
        cid = cid_of_bytes(data, ipfs.profile)
        doc = canonical_json_bytes(
            {
                "name": f"Catalogue image {n + 1}",
                "image": f"ipfs://{cid}",
                "properties": {
                    "content_sha256": "0x" + sha,
                    "content_cid": cid,
                    "content_import_profile": ipfs.profile.name,
                    "media_type": "image/png",
                    "size_bytes": len(data),
                    "creator": creator,
                },
            }
        )
        files.append(data)
        metadata.append(doc)
        items.append((bytes.fromhex(sha), cid, cid_of_bytes(doc, ipfs.profile), 0, False, profile_code))
    licence = (encode_territories(["DE", "FR", "US", "JP", "CN"]), valid_from, 0, 500, "")
    salt = os.urandom(32)
    batch_hash = keccak256(b"".join(item[0] for item in items))
    commitment = registration_formats.commitment(batch_hash, creator, salt)
    send_call(chain, creator_key, registry.functions.commitRegistration(commitment))
    # The reveal must land a block after its commitment: estimated at the latest block it would revert.
    reveal = registry.functions.registerBatch(items, licence, [creator], [10_000], salt)
    receipt = send_call(chain, creator_key, reveal, estimate_block="pending")
    (event,) = registry.events.BatchRegistered().process_receipt(receipt, errors=DISCARD)
    first_id = int(event["args"]["firstId"])
    gas = int(receipt["gasUsed"])
    say(
        f"  assets #{first_id} to #{first_id + count - 1} in block {receipt['blockNumber']}, "
        f"tx {receipt['transactionHash'].to_0x_hex()}: {gas:,} gas, {gas // count:,} per asset "
        "(one asset alone: about 400,000)"
    )
    for data, doc, item in zip(files, metadata, items, strict=True):
        if ipfs.add_bytes(data) != item[1] or ipfs.add_bytes(doc) != item[2]:
            raise RuntimeError("the IPFS node computed another CID than the one registered")
    say(f"  {count} images and their metadata pinned once the registration landed")
    return CatalogueReport(first_id, count, gas, receipt["transactionHash"].to_0x_hex())
