"""Pytest plugin: a real anvil with the contracts deployed by the brownie script, and the API wired to
the real chain, the real IPFS node and a real database (SQLite and PostgreSQL).

Each test runs between an ``evm_snapshot`` and an ``evm_revert``, so chain state never leaks between
tests while the (slow) deployment happens once per session.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from edgeledger.auth import service as auth_service
from edgeledger.auth.models import Role
from edgeledger.chain.anvil import LocalAnvil
from edgeledger.chain.anvil import anvil_rpc as rpc
from edgeledger.chain.deploy import deploy_with_fresh_keys
from edgeledger.config import Settings
from edgeledger.db import make_engine
from edgeledger.devtools import wallet
from edgeledger.ipfs import cid_of_bytes
from edgeledger.ledger import registration as registration_formats
from edgeledger.main import create_app
from edgeledger.processes import free_port


@dataclass(frozen=True)
class DeployedChain:
    rpc_url: str
    deployment_file: Path
    admin: LocalAccount
    signer: LocalAccount


@pytest.fixture(scope="session")
def anvil(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAnvil]:
    node = LocalAnvil(free_port(), log_file=tmp_path_factory.mktemp("anvil") / "anvil.log")
    with node:
        yield node


@pytest.fixture(scope="session")
def deployed(anvil: LocalAnvil, tmp_path_factory: pytest.TempPathFactory) -> DeployedChain:
    done = deploy_with_fresh_keys(
        anvil.rpc_url,
        tmp_path_factory.mktemp("deployment") / "deployment.json",
        test_token=True,
        challenge_window=86400,
        period_seconds=86400,  # the tests' delivery_period_seconds (the default)
    )
    return DeployedChain(anvil.rpc_url, done.deployment_file, done.deployer, done.signer)


@pytest.fixture
def chain_snapshot(deployed: DeployedChain) -> Iterator[DeployedChain]:
    snapshot = rpc(deployed.rpc_url, "evm_snapshot")
    yield deployed
    rpc(deployed.rpc_url, "evm_revert", snapshot)


@pytest.fixture
def settings(
    chain_snapshot: DeployedChain, ipfs_node, database_url: str, db_engine, tmp_path: Path
) -> Settings:  # type: ignore[no-untyped-def]
    return Settings(
        data_dir=tmp_path,
        database_url=database_url,
        eth_rpc_url=chain_snapshot.rpc_url,
        deployment_file=chain_snapshot.deployment_file,
        signer_private_key=chain_snapshot.signer.key.to_0x_hex(),
        ipfs_api=ipfs_node.api_multiaddr,
        tx_timeout_seconds=30,
    )


@pytest.fixture
def app_client(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    with TestClient(app) as client:
        yield client
    app.state.engine.dispose()


@dataclass(frozen=True)
class Caller:
    account: LocalAccount
    api_key: str
    user_id: int

    @property
    def headers(self) -> dict[str, str]:
        return {"X-API-Key": self.api_key}


def make_caller(app_client: TestClient, role: Role, name: str, *, global_scope: bool = True) -> Caller:
    """A user of ``role`` with an API key. Auditors are granted the global audit scope by an admin
    unless ``global_scope=False`` (then they read nothing until scoped: scopes fail closed)."""
    return _caller(app_client.app.state.engine, role, name, global_scope)  # type: ignore[attr-defined]


def make_caller_in(settings: Settings, role: Role, name: str) -> Caller:
    """A caller made straight in the settings' database (for apps served by another process or thread)."""
    engine = make_engine(settings.resolved_database_url)
    try:
        return _caller(engine, role, name, True)
    finally:
        engine.dispose()


#: Every key a test made (callers' wallets, creators named by address): the creator of a registration
#: signs its typed data with it (post_asset), as its wallet would.
KNOWN_KEYS: dict[str, LocalAccount] = {}


def remember(account: LocalAccount) -> LocalAccount:
    """Makes `account` sign the registrations that name it as creator (see post_asset)."""
    KNOWN_KEYS[account.address] = account
    return account


def post_asset(client: Any, caller: Caller | dict[str, str], **request: Any) -> Any:
    """POST /assets as `caller`, then, when the registration awaits the creator's signature (202), signs
    its typed data with the creator's key (a caller's own wallet, or any account passed to remember())
    and submits it: the final response (201 with the asset, or the refusal)."""
    headers = caller.headers if isinstance(caller, Caller) else caller
    if isinstance(caller, Caller):
        remember(caller.account)
    response = client.post("/assets", headers=headers, **request)
    if response.status_code != 202:
        return response
    registration = response.json()
    creator = registration["typed_data"]["message"]["creator"]
    signer = KNOWN_KEYS.get(creator)
    assert signer is not None, f"no key for creator {creator}: remember() its account first"
    signature = registration_formats.sign(registration["typed_data"], signer.key)
    path = f"/assets/registrations/{registration['id']}/signature"
    return client.post(path, headers=headers, json={"signature": signature})


def self_register(transact: Any, registry: Any, registration: tuple[Any, ...]) -> Any:
    """A creator's own registration from its wallet: commitRegistration, then registerAsset revealing it
    a block later. `transact` sends a contract call from the creator."""
    salt = os.urandom(32)
    creator = registration[3]
    transact(
        registry.functions.commitRegistration(registration_formats.commitment(registration[0], creator, salt))
    )
    # A wallet estimates the reveal at the latest block, which must already be past the commitment's.
    registry.w3.provider.make_request("evm_mine", [])
    return transact(registry.functions.registerAsset(registration, salt))


def thief_registers(chain: Any, content_hash: str) -> LocalAccount:
    """A stranger's funded wallet registers ``content_hash`` for itself first (its own CIDs, all of the
    split, commit-reveal from its own wallet): the front-run a creator's late registration meets."""
    thief = Account.create()
    rpc(chain.rpc_url, "anvil_setBalance", thief.address, hex(10**20))
    stolen = registration_formats.registration_tuple(
        registration_formats.registration_message(
            (
                content_hash,
                cid_of_bytes(b"the thief's copy"),
                cid_of_bytes(b"the thief's metadata"),
                thief.address,
                0,
                False,
                (1, 0, 0, 0, ""),
                [thief.address],
                [10_000],
                0,
            )
        )
    )
    self_register(lambda fn: wallet.send_call(chain, thief, fn), chain.contract("ContentRegistry"), stolen)
    return thief


def _caller(engine: Engine, role: Role, name: str, global_scope: bool) -> Caller:
    account = remember(Account.create())
    with Session(engine) as session:
        user = auth_service.create_user(session, role=role, address=account.address, name=name)
        key, _ = auth_service.create_api_key(session, user, "tests")
        if role == Role.auditor and global_scope:
            admin = auth_service.create_user(session, role=Role.admin, name=f"scope admin of {name}")
            auth_service.set_audit_scope(session, user, [], [], granted_by=admin, is_global=True)
        session.commit()
        return Caller(account, key, user.id)


@pytest.fixture
def creator(app_client: TestClient) -> Caller:
    return make_caller(app_client, Role.creator, "creator")
