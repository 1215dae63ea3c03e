"""Deploys EdgeLedger's contracts and grants least-privilege roles (brownie script).

    brownie run scripts/deploy.py --network edgeledger-rpc      # any node at $ETH_RPC_URL
    python -m edgeledger.chain.brownie_run run scripts/deploy.py --network edgeledger-rpc
                                                              # the same, also from a path with dots

Environment:
    DEPLOYER_PRIVATE_KEY  key that pays for deployment (development networks: accounts[0] if unset)
    ADMIN_ADDRESS         receives DEFAULT_ADMIN_ROLE (default: the deployer); on SettlementVault it also
                          receives PAUSER_ROLE, and proposes and executes the timelock's operations
    REGISTRAR_ADDRESS     the API's server signer, receives REGISTRAR_ROLE on ContentRegistry,
                          NODE_ADMIN_ROLE + ANCHORER_ROLE on DeliveryLedger and SETTLER_ROLE on
                          SettlementVault (required)
    ARBITER_ADDRESS       handles notice-and-takedown, receives ARBITER_ROLE, and decides challenged
                          settlements, RESOLVER_ROLE on SettlementVault (default: the admin)
    AUDITOR_ADDRESS       may challenge settlements, receives AUDITOR_ROLE on SettlementVault (optional)
    SETTLEMENT_CHALLENGE_WINDOW
                          SettlementVault's challenge window in seconds (default 86400, at most 30 days),
                          also its lifetime minimum
    DELIVERY_PERIOD_SECONDS
                          length of a settlement period (default 86400; must divide a day), the vault's
                          PERIOD_SECONDS: no root is posted for a period before it ends. Must equal the
                          service's DELIVERY_PERIOD_SECONDS (the worker checks)
    VAULT_TIMELOCK_DELAY  seconds of the EdgeLedgerTimelock that becomes DEFAULT_ADMIN_ROLE of every
                          contract this run deploys (vault, registry, ledger; default: the challenge window
                          + 1 hour; must exceed the window). The deployer grants the operational roles,
                          then hands each admin role to the timelock and renounces its own (docs/custody.md)
    REASSIGN_DELAY        ContentRegistry's REASSIGN_DELAY: seconds an asset stays contested before the
                          arbiter may move its rights (default: the timelock's delay + 1 day; must exceed
                          the timelock's delay, so that the admin can revoke a stolen arbiter key in time)
    DEPLOY_TEST_TOKEN     "1": also deploy the 6-decimal TestStablecoin ("Test USD Coin", tUSDC), owned by
                          the deployer, and allow-list it in the vault (always on the "development" network)
    DEPLOYMENT_FILE       where addresses are written (default: var/deployment.json)

Idempotent per contract: a contract the deployment file names with code on this chain is not deployed again,
so a file written before a contract existed (say ContentRegistry and DeliveryLedger only) gets just the
missing ones on the next run. The test token is allow-listed whenever this run deployed it or the vault.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from brownie import (
    ContentRegistry,
    DeliveryLedger,
    EdgeLedgerTimelock,
    SettlementVault,
    TestStablecoin,
    accounts,
    network,
    web3,
)

from edgeledger.chain import brownie_receipts

CORE = ("ContentRegistry", "DeliveryLedger", "SettlementVault")
STABLECOIN = "TestStablecoin"
DEFAULT_CHALLENGE_WINDOW = 86_400
MAX_CHALLENGE_WINDOW = 30 * 86_400
MIN_CHALLENGE_WINDOW = 60  # SettlementVault.MIN_CHALLENGE_WINDOW_FLOOR


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
            data.setdefault("contracts", {})
            data.setdefault("roles", {})
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


def _period_seconds() -> int:
    raw = os.environ.get("DELIVERY_PERIOD_SECONDS") or "86400"
    try:
        seconds = int(raw)
    except ValueError:
        raise SystemExit(f"DELIVERY_PERIOD_SECONDS must be whole seconds, got {raw!r}") from None
    if not 60 <= seconds <= 86400 or 86400 % seconds:
        raise SystemExit(f"DELIVERY_PERIOD_SECONDS must divide a day (60..86400), got {seconds}")
    return seconds


def _challenge_window() -> int:
    raw = os.environ.get("SETTLEMENT_CHALLENGE_WINDOW") or str(DEFAULT_CHALLENGE_WINDOW)
    try:
        window = int(raw)
    except ValueError:
        raise SystemExit(f"SETTLEMENT_CHALLENGE_WINDOW must be whole seconds, got {raw!r}") from None
    if not MIN_CHALLENGE_WINDOW <= window <= MAX_CHALLENGE_WINDOW:
        raise SystemExit(
            f"SETTLEMENT_CHALLENGE_WINDOW must be {MIN_CHALLENGE_WINDOW}..{MAX_CHALLENGE_WINDOW} seconds, "
            f"got {window}"
        )
    if window < DEFAULT_CHALLENGE_WINDOW:
        print(
            f"note: a {window} s challenge window gives merchants less than a day to challenge a root "
            "(fine for a throwaway chain, not for production)"
        )
    return window


def _timelock_delay(window: int) -> int:
    raw = os.environ.get("VAULT_TIMELOCK_DELAY") or str(window + 3_600)
    try:
        delay = int(raw)
    except ValueError:
        raise SystemExit(f"VAULT_TIMELOCK_DELAY must be whole seconds, got {raw!r}") from None
    if delay <= window:
        raise SystemExit(f"VAULT_TIMELOCK_DELAY ({delay} s) must exceed the challenge window ({window} s)")
    return delay


def _reassign_delay(timelock_delay: int) -> int:
    raw = os.environ.get("REASSIGN_DELAY") or str(timelock_delay + 86_400)
    try:
        delay = int(raw)
    except ValueError:
        raise SystemExit(f"REASSIGN_DELAY must be whole seconds, got {raw!r}") from None
    if delay <= timelock_delay:
        raise SystemExit(
            f"REASSIGN_DELAY ({delay} s) must exceed the timelock's delay ({timelock_delay} s): revoking a "
            "stolen arbiter key goes through the timelock"
        )
    return delay


def _timelock(data: dict, admin: str, delay: int, deployer):  # type: ignore[no-untyped-def]
    """The deployment's EdgeLedgerTimelock (proposer and executor: the admin), deployed on first use."""
    address = _live(data, "EdgeLedgerTimelock")
    if address is not None:
        return EdgeLedgerTimelock.at(address)
    timelock = EdgeLedgerTimelock.deploy(delay, [admin], [admin], {"from": deployer})
    _record(data, "EdgeLedgerTimelock", timelock)
    return timelock


def _hand_over(contracts: dict, admin: str, delay: int, deployer, data: dict) -> None:  # type: ignore[no-untyped-def]
    """Each contract's DEFAULT_ADMIN_ROLE moves to the timelock; the deployer renounces its own. Only when
    the deployer is the admin (else the admin does it)."""
    if not contracts:
        return
    if admin != deployer.address:
        for name in contracts:
            print(f"admin {admin} must hand {name}'s DEFAULT_ADMIN_ROLE to a timelock (docs/custody.md)")
        return
    timelock = _timelock(data, admin, delay, deployer)
    for name, contract in contracts.items():
        role = contract.DEFAULT_ADMIN_ROLE()
        contract.grantRole(role, timelock.address, {"from": deployer})
        contract.renounceRole(role, deployer.address, {"from": deployer})
        print(f"{name} administered by the timelock {timelock.address} ({delay} s delay)")


def _wants_test_token() -> bool:
    return network.show_active() == "development" or os.environ.get("DEPLOY_TEST_TOKEN") == "1"


def main() -> None:
    brownie_receipts.install()  # anvil can show the deployer's nonce before a receipt (make up's chain)
    out = Path(os.environ.get("DEPLOYMENT_FILE", "var/deployment.json"))
    data = _load(out)
    names = [*CORE, STABLECOIN] if _wants_test_token() else list(CORE)
    missing = [name for name in names if _live(data, name) is None]
    if not missing:
        print(f"contracts already deployed on chain {web3.eth.chain_id}; nothing to do")
        return

    registrar = os.environ.get("REGISTRAR_ADDRESS")
    if not registrar:
        raise SystemExit("REGISTRAR_ADDRESS (the API's server signer) is required")
    window = _challenge_window()
    delay = _timelock_delay(window)
    deployer = _deployer()
    admin = os.environ.get("ADMIN_ADDRESS") or deployer.address
    arbiter = os.environ.get("ARBITER_ADDRESS") or admin
    auditor = os.environ.get("AUDITOR_ADDRESS") or None

    administered = {}  # contracts of this run, whose admin role goes to the timelock at the end
    if "ContentRegistry" in missing:
        registry = ContentRegistry.deploy(admin, _reassign_delay(delay), {"from": deployer})
        _grant(registry, [("REGISTRAR_ROLE", registrar), ("ARBITER_ROLE", arbiter)], admin, deployer)
        _record(data, "ContentRegistry", registry)
        administered["ContentRegistry"] = registry
    if "DeliveryLedger" in missing:
        # The API's server signer registers sources and submits manifests the sources signed.
        ledger = DeliveryLedger.deploy(admin, {"from": deployer})
        _grant(ledger, [("NODE_ADMIN_ROLE", registrar), ("ANCHORER_ROLE", registrar)], admin, deployer)
        _record(data, "DeliveryLedger", ledger)
        administered["DeliveryLedger"] = ledger
    if "SettlementVault" in missing:
        # The API's server signer posts payout roots; an auditor (if any) may challenge them.
        vault = SettlementVault.deploy(admin, window, _period_seconds(), {"from": deployer})
        roles = [("SETTLER_ROLE", registrar), ("PAUSER_ROLE", admin), ("RESOLVER_ROLE", arbiter)]
        roles += [("AUDITOR_ROLE", auditor)] if auditor else []
        _grant(vault, roles, admin, deployer)
        _record(data, "SettlementVault", vault)
    else:
        vault = SettlementVault.at(data["contracts"]["SettlementVault"]["address"])
    if STABLECOIN in missing:
        # Owned by the deployer, which mints test balances (development chains only).
        token = TestStablecoin.deploy("Test USD Coin", "tUSDC", deployer.address, {"from": deployer})
        _record(data, STABLECOIN, token)
    if STABLECOIN in names and ("SettlementVault" in missing or STABLECOIN in missing):
        token_address = data["contracts"][STABLECOIN]["address"]
        if vault.isTokenAllowed(token_address):
            pass
        elif admin == deployer.address:
            vault.setTokenAllowed(token_address, True, {"from": deployer})
            print(f"{STABLECOIN} {token_address} allow-listed in SettlementVault")
        else:
            print(f"admin {admin} must allow-list {STABLECOIN} {token_address} in SettlementVault")
    if "SettlementVault" in missing:
        administered["SettlementVault"] = vault
    _hand_over(administered, admin, delay, deployer, data)

    data["roles"] = {"admin": admin, "registrar": registrar, "arbiter": arbiter, "pauser": admin}
    timelock_info = data["contracts"].get("EdgeLedgerTimelock")
    if timelock_info is not None:
        # Every contract's DEFAULT_ADMIN_ROLE ("vault_admin": the name older deployment files use).
        data["roles"]["vault_admin"] = data["roles"]["contracts_admin"] = timelock_info["address"]
    if auditor:
        data["roles"]["auditor"] = auditor
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}")
