"""Chain-only verification of a file (or a sha-256): was this content registered, when, by whom
(``edgeledger verify asset FILE``).

The file is hashed locally (sha-256, streamed); the ContentRegistry answers ``assetIdOf(hash)``, the
asset's record (``getAsset``, ``ownerOf``) and its ``AssetRegistered`` event, all from one JSON-RPC
endpoint and the packaged ABI: no API, no database. Not registered is a failed check (exit code 1).

In the same read the file's IPFS CID is computed under every import profile (``legacy-cidv1`` and
``unixfs-v1-2025``, :data:`edgeledger.ipfs.cid.PROFILES`; ``--import-profile`` computes one only). The
registry records the profile each registration's CIDs were cut with (``importProfileOf``), so the
check "content CID" passes only when the file's CID under the registered profile is the on-chain content
CID. A file with the registered sha-256 fails it when its CID under that profile differs (the on-chain
CID does not address these bytes; the report says if another profile's CID matches, i.e. the
registration names the wrong profile), or when that profile was not computed. A registry of the earlier
layout records no profile (``getAsset`` and ``AssetRegistered`` are the same in both): there the check
passes when the CID under either profile is the on-chain one, and names it.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from web3 import Web3
from web3.contract import Contract
from web3.exceptions import ContractLogicError

from edgeledger.ipfs.cid import PROFILES, CidBuilder
from edgeledger.ledger.registration import import_profile_name
from edgeledger.verify.result import Report, UnusableInput
from edgeledger.verify.rpc import Chain, registry, topic_hex

#: ContentRegistry.Status
STATUS_NAMES = {0: "active", 1: "disputed", 2: "taken_down"}


def sha256_of_file(path: Path) -> str:
    return digests_of_file(path, profiles=())[0]


def digests_of_file(path: Path, profiles: tuple[str, ...] | None = None) -> tuple[str, dict[str, str]]:
    """The file's sha-256 and its CID under each import profile (default: all), in one streamed read."""
    digest = hashlib.sha256()
    builders = {name: CidBuilder(name) for name in (PROFILES if profiles is None else profiles)}
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                for builder in builders.values():
                    builder.update(chunk)
    except OSError as exc:
        raise UnusableInput(f"{path}: cannot read the file ({exc.strerror or exc})") from None
    return "0x" + digest.hexdigest(), {name: b.finalize() for name, b in builders.items()}


def check_content_cid(report: Report, verdict: dict[str, Any], cids: dict[str, str]) -> None:
    """Adds the "content CID" check: the file's CID under the registered import profile is the on-chain
    content CID (``cids``: the file's CID per profile computed)."""
    on_chain = verdict.get("content_cid")
    profile = verdict.get("import_profile")
    if profile is None:  # a registry of the earlier layout: whichever profile gives the on-chain CID
        matched = [name for name, cid in cids.items() if cid == on_chain]
        verdict["import_profile"] = matched[0] if matched else None
        if matched:
            report.add(
                "content CID", True, f"{on_chain} (import profile {matched[0]}; not recorded on chain)"
            )
        else:
            tried = ", ".join(f"{name} gives {cid}" for name, cid in cids.items())
            report.add("content CID", False, f"the chain records {on_chain}; {tried}")
        return
    mine = cids.get(profile)
    if mine is None:
        report.add(
            "content CID",
            False,
            f"the chain records import profile {profile}; the file's CID was computed under "
            f"{', '.join(cids)} only",
        )
    elif mine == on_chain:
        report.add("content CID", True, f"{on_chain} (import profile {profile}, as registered)")
    else:
        others = [name for name, cid in cids.items() if cid == on_chain]
        wrong = f"; under {others[0]} it is: the registration names the wrong profile" if others else ""
        report.add(
            "content CID",
            False,
            f"the chain records {on_chain}, cut as {profile}; the file's CID under {profile} is "
            f"{mine}{wrong}",
        )


def _recorded_profile(chain: Chain, contract: Contract, asset_id: int) -> str | None:
    """The import profile the registry records for the asset (``importProfileOf``); None for a registry
    of the earlier layout, which has no such function (the call reverts without data)."""

    def read() -> int | None:
        try:
            return int(contract.functions.importProfileOf(asset_id).call())
        except ContractLogicError:
            return None

    code = chain.ask("importProfileOf", read)
    if code is None:
        return None
    try:
        return import_profile_name(code)
    except ValueError:  # a code the registry refuses: never recorded, but say so rather than fail
        return f"unknown ({code})"


def normalize_sha256(value: str) -> str:
    text = value.strip().lower().removeprefix("0x")
    if len(text) != 64 or any(c not in "0123456789abcdef" for c in text):
        raise UnusableInput(f"{value!r} is not a sha-256 (64 hex digits)")
    return "0x" + text


def verify_content(
    chain: Chain, registry_address: str, content_hash: str, *, from_block: int = 0
) -> tuple[Report, dict[str, Any]]:
    """The checks and the verdict (``registered``, asset id, creator, rights holder, status, CIDs,
    registration block, transaction and log) of one content hash."""
    content_hash = normalize_sha256(content_hash)
    report = Report()
    verdict: dict[str, Any] = {"content_hash": content_hash, "registered": False}
    contract = registry(chain, registry_address)
    raw_hash = bytes.fromhex(content_hash[2:])
    asset_id = int(chain.ask("assetIdOf", contract.functions.assetIdOf(raw_hash).call))
    if asset_id == 0:
        report.add(
            "registered", False, f"no asset in the ContentRegistry at {contract.address} has this hash"
        )
        return report, verdict
    report.add("registered", True, f"asset #{asset_id}")
    asset = chain.ask("getAsset", contract.functions.getAsset(asset_id).call)
    holder = chain.ask("ownerOf", contract.functions.ownerOf(asset_id).call)
    content, creator, registered_at, status, aigc, _block, parent_id, content_cid, metadata_cid = asset[:9]
    report.add(
        "record",
        bytes(content) == raw_hash,
        f"creator {creator}, rights holder {holder}, status {STATUS_NAMES.get(int(status), status)}",
    )
    topics = [
        topic_hex(contract, "AssetRegistered"),
        "0x" + asset_id.to_bytes(32).hex(),
        "0x" + raw_hash.hex(),
    ]
    logs = chain.logs(contract, topics, from_block, "latest")
    if not logs:
        report.add("registration event", False, "the RPC returns no AssetRegistered log (pruned history?)")
        return report, verdict
    log = logs[0]
    event = contract.events.AssetRegistered().process_log(log)
    block = int(log["blockNumber"])
    head = chain.block_number()
    report.add(
        "registration event",
        True,
        f"block {block}, tx 0x{bytes(log['transactionHash']).hex()}, log {int(log['logIndex'])}",
    )
    verdict.update(
        registered=True,
        asset_id=asset_id,
        creator=Web3.to_checksum_address(creator),
        rights_holder=Web3.to_checksum_address(holder),
        status=STATUS_NAMES.get(int(status), str(status)),
        registered_at=datetime.fromtimestamp(int(registered_at), UTC).isoformat(),
        content_cid=content_cid,
        import_profile=_recorded_profile(chain, contract, asset_id),
        metadata_cid=metadata_cid,
        parent_id=int(parent_id) or None,
        aigc=bool(aigc),
        registrar=Web3.to_checksum_address(event["args"]["registrar"]),
        chain={
            "chain_id": chain.chain_id(),
            "contract_address": contract.address,
            "tx_hash": "0x" + bytes(log["transactionHash"]).hex(),
            "block_number": block,
            "log_index": int(log["logIndex"]),
            "confirmations": max(0, head - block + 1),
        },
    )
    return report, verdict
