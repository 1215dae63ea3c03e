"""Deploys EdgeLedger's contracts and grants least-privilege roles (brownie script).

    brownie run scripts/deploy.py --network edgeledger-rpc      # any node at $ETH_RPC_URL

Environment:
    DEPLOYER_PRIVATE_KEY  key that pays for deployment (development networks: accounts[0] if unset)
    ADMIN_ADDRESS         receives DEFAULT_ADMIN_ROLE (default: the deployer)
    REGISTRAR_ADDRESS     the API's server signer, receives REGISTRAR_ROLE (required)
    ARBITER_ADDRESS       handles notice-and-takedown, receives ARBITER_ROLE (default: the admin)
    DEPLOYMENT_FILE       where addresses are written (default: var/deployment.json)

Idempotent: if the deployment file names a contract with code on this chain, nothing is deployed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from brownie import ContentRegistry, accounts, network, web3


def _deployer():  # type: ignore[no-untyped-def]
    key = os.environ.get("DEPLOYER_PRIVATE_KEY")
    if key:
        return accounts.add(key)
    if network.show_active() == "development" or len(accounts) > 0:
        return accounts[0]
    raise SystemExit("set DEPLOYER_PRIVATE_KEY to deploy on a live network")


def _existing(path: Path) -> dict | None:
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    registry = data.get("contracts", {}).get("ContentRegistry")
    if int(data.get("chain_id", -1)) != web3.eth.chain_id or registry is None:
        return None
    return data if web3.eth.get_code(registry["address"]) else None


def main() -> None:
    out = Path(os.environ.get("DEPLOYMENT_FILE", "var/deployment.json"))
    existing = _existing(out)
    if existing is not None:
        address = existing["contracts"]["ContentRegistry"]["address"]
        print(f"ContentRegistry already deployed at {address} on chain {web3.eth.chain_id}; nothing to do")
        return

    registrar = os.environ.get("REGISTRAR_ADDRESS")
    if not registrar:
        raise SystemExit("REGISTRAR_ADDRESS (the API's server signer) is required")
    deployer = _deployer()
    admin = os.environ.get("ADMIN_ADDRESS") or deployer.address
    arbiter = os.environ.get("ARBITER_ADDRESS") or admin

    registry = ContentRegistry.deploy(admin, {"from": deployer})
    if admin == deployer.address:
        registry.grantRole(registry.REGISTRAR_ROLE(), registrar, {"from": deployer})
        registry.grantRole(registry.ARBITER_ROLE(), arbiter, {"from": deployer})
    else:
        print(f"admin {admin} must grant REGISTRAR_ROLE to {registrar} and ARBITER_ROLE to {arbiter}")

    receipt = registry.tx
    data = {
        "chain_id": web3.eth.chain_id,
        "contracts": {
            "ContentRegistry": {
                "address": registry.address,
                "block": receipt.block_number,
                "tx_hash": receipt.txid,
            }
        },
        "roles": {"admin": admin, "registrar": registrar, "arbiter": arbiter},
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"ContentRegistry deployed at {registry.address} (block {receipt.block_number}); wrote {out}")
