"""Deploys EdgeLedger's contracts and grants least-privilege roles (brownie script).

    brownie run scripts/deploy.py --network edgeledger-rpc      # any node at $ETH_RPC_URL

Environment:
    DEPLOYER_PRIVATE_KEY  key that pays for deployment (development networks: accounts[0] if unset)
    ADMIN_ADDRESS         receives DEFAULT_ADMIN_ROLE (default: the deployer)
    REGISTRAR_ADDRESS     the API's server signer, receives REGISTRAR_ROLE on ContentRegistry and
                          NODE_ADMIN_ROLE + ANCHORER_ROLE on DeliveryLedger (required)
    ARBITER_ADDRESS       handles notice-and-takedown, receives ARBITER_ROLE (default: the admin)
    DEPLOYMENT_FILE       where addresses are written (default: var/deployment.json)

Idempotent per contract: a contract the deployment file names with code on this chain is not deployed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from brownie import ContentRegistry, DeliveryLedger, accounts, network, web3


def _deployer():  # type: ignore[no-untyped-def]
    key = os.environ.get("DEPLOYER_PRIVATE_KEY")
    if key:
        return accounts.add(key)
    if network.show_active() == "development" or len(accounts) > 0:
        return accounts[0]
    raise SystemExit("set DEPLOYER_PRIVATE_KEY to deploy on a live network")


def _load(path: Path) -> dict:
    """The deployment file's contents if it is for this chain, else an empty deployment."""
    if path.is_file():
        data = json.loads(path.read_text())
        if int(data.get("chain_id", -1)) == web3.eth.chain_id:
            return data
    return {"chain_id": web3.eth.chain_id, "contracts": {}, "roles": {}}


def _live(data: dict, name: str) -> str | None:
    info = data["contracts"].get(name)
    if info is not None and web3.eth.get_code(info["address"]):
        return info["address"]
    return None


def _record(data: dict, name: str, contract) -> None:  # type: ignore[no-untyped-def]
    receipt = contract.tx
    data["contracts"][name] = {
        "address": contract.address,
        "block": receipt.block_number,
        "tx_hash": receipt.txid,
    }
    print(f"{name} deployed at {contract.address} (block {receipt.block_number})")


def _grant(contract, roles: list[tuple[str, str]], admin: str, deployer) -> None:  # type: ignore[no-untyped-def]
    for role_name, holder in roles:
        role = getattr(contract, role_name)()
        if admin == deployer.address:
            contract.grantRole(role, holder, {"from": deployer})
        else:
            print(f"admin {admin} must grant {role_name} on {contract.address} to {holder}")


def main() -> None:
    out = Path(os.environ.get("DEPLOYMENT_FILE", "var/deployment.json"))
    data = _load(out)
    missing = [name for name in ("ContentRegistry", "DeliveryLedger") if _live(data, name) is None]
    if not missing:
        print(f"contracts already deployed on chain {web3.eth.chain_id}; nothing to do")
        return

    registrar = os.environ.get("REGISTRAR_ADDRESS")
    if not registrar:
        raise SystemExit("REGISTRAR_ADDRESS (the API's server signer) is required")
    deployer = _deployer()
    admin = os.environ.get("ADMIN_ADDRESS") or deployer.address
    arbiter = os.environ.get("ARBITER_ADDRESS") or admin

    if "ContentRegistry" in missing:
        registry = ContentRegistry.deploy(admin, {"from": deployer})
        _grant(registry, [("REGISTRAR_ROLE", registrar), ("ARBITER_ROLE", arbiter)], admin, deployer)
        _record(data, "ContentRegistry", registry)
    if "DeliveryLedger" in missing:
        # The API's server signer registers sources and submits manifests the sources signed.
        ledger = DeliveryLedger.deploy(admin, {"from": deployer})
        _grant(ledger, [("NODE_ADMIN_ROLE", registrar), ("ANCHORER_ROLE", registrar)], admin, deployer)
        _record(data, "DeliveryLedger", ledger)

    data["roles"] = {"admin": admin, "registrar": registrar, "arbiter": arbiter}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")
