"""Chain indexer on a real anvil chain, IPFS node and database (SQLite and PostgreSQL): it follows the
three contracts' events into its projections, survives restarts, rolls back reorgs (evm_revert to a
snapshot, anvil_reorg), waits for its confirmation depth, and a rebuild from the chain and IPFS alone
gives exactly the live state."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from edgeledger.auth.models import Role
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.devtools.samples import demo_png
from edgeledger.indexer import flows
from edgeledger.indexer.models import (
    ChainEventRow,
    IndexedAsset,
    IndexedBatch,
    IndexedSettlement,
    IndexedSource,
)
from edgeledger.indexer.service import projection_snapshot
from edgeledger.ipfs import IpfsClient
from edgeledger.ipfs.cid import cid_of_bytes
from tests.backend.support.deliveries import add_records, close_and_anchor, register_source
from tests.backend.support.settlement import delivery_records, deposit, send_as
from tests.backend.support.stack import Caller, DeployedChain, make_caller, post_asset, rpc, self_register

PERIOD = 86_400
DAY0 = 1_763_596_800  # 2025-11-20T00:00:00Z


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"indexer_confirmations": 0, "indexer_log_chunk": 7})


@pytest.fixture
def chain(settings: Settings) -> ChainClient:
    return ChainClient.from_settings(settings)


@pytest.fixture
def indexer_session(db_engine: Any) -> Iterator[Session]:
    with Session(db_engine, expire_on_commit=False) as session:
        yield session


def _indexer(session: Session, settings: Settings) -> flows.Indexer:
    # A fresh chain client each time: after evm_revert the old one's local nonce is stale.
    return flows.make_indexer(
        session, ChainClient.from_settings(settings), settings, IpfsClient.from_settings(settings)
    )


def _register_asset(client: TestClient, creator: Caller, title: str) -> int:
    response = post_asset(
        client,
        creator,
        files={"file": ("shot.png", demo_png(os.urandom(8).hex()), "image/png")},
        data={"metadata": json.dumps({"title": title})},
    )
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _signer(settings: Settings) -> LocalAccount:
    assert settings.signer_private_key is not None
    return Account.from_key(settings.signer_private_key.get_secret_value())


def _anchor(session: Session, settings: Settings, name: str, day: int) -> str:
    chain = ChainClient.from_settings(settings)
    signer = _signer(settings)
    source = register_source(session, chain, name, provider="cloudfront", signer=signer.address)
    batches = add_records(
        session, settings, source, delivery_records(DAY0 + day * PERIOD, 3, 1000, "shop.example")
    )
    close_and_anchor(session, settings, chain, batches, signer)
    return source.source_id


def _table(session: Session, model: Any) -> list[Any]:
    session.expire_all()
    return list(session.scalars(select(model)))


def test_follows_events_restarts_without_duplicates_and_rebuilds_the_same_state(
    app_client: TestClient,
    settings: Settings,
    db_session: Session,
    indexer_session: Session,
    chain_snapshot: DeployedChain,
) -> None:
    creator = make_caller(app_client, Role.creator, "creator")
    first = _register_asset(app_client, creator, "Sneaker, side view")
    second = _register_asset(app_client, creator, "Sneaker, AI variant")
    source_id = _anchor(db_session, settings, "cf-index", 0)
    chain = ChainClient.from_settings(settings)
    admin = chain_snapshot.admin
    merchant = Account.create()
    rpc(settings.eth_rpc_url, "anvil_setBalance", merchant.address, hex(10**21))
    deposit(chain, admin, merchant, 5_000_000)
    vault, token = chain.contract("SettlementVault"), chain.contract("TestStablecoin")
    root = b"\x11" * 32
    chain.transact(vault.functions.post(7, merchant.address, token.address, root, 1_000_000))
    send_as(chain, merchant, vault.functions.challenge(7, merchant.address, b"\x22" * 32))

    indexer = _indexer(indexer_session, settings)
    report = indexer.catch_up()
    assert report.caught_up and report.to_block == chain.block_number()

    assets = {a.asset_id: a for a in _table(indexer_session, IndexedAsset)}
    assert set(assets) == {str(first), str(second)}
    assert assets[str(first)].title == "Sneaker, side view"  # read from the metadata on IPFS
    assert assets[str(first)].owner == creator.account.address and assets[str(first)].status == "active"
    on_chain = chain.call(chain.contract("ContentRegistry").functions.ownerOf(first))
    assert assets[str(first)].owner == on_chain
    (source,) = _table(indexer_session, IndexedSource)
    assert source.source_id == source_id and source.batch_count == 1 and not source.chain_broken
    (batch,) = _table(indexer_session, IndexedBatch)
    ledger = chain.contract("DeliveryLedger").functions
    assert chain.call(ledger.isBatchRoot(bytes.fromhex(batch.batch_id[2:]), bytes.fromhex(batch.root[2:])))
    assert source.last_manifest_hash == batch.manifest_hash
    (settlement,) = _table(indexer_session, IndexedSettlement)
    assert (settlement.period_id, settlement.merchant, settlement.total) == (7, merchant.address, "1000000")
    assert settlement.state == "challenged" and settlement.root == "0x" + root.hex()

    # Restart: a new indexer continues from the stored cursor and stores nothing twice.
    events = indexer_session.scalar(select(func.count(ChainEventRow.id)))
    send_as(chain, admin, vault.functions.resolve(7, merchant.address, False))
    restarted = _indexer(indexer_session, settings).catch_up()
    assert restarted.events == 1 and restarted.from_block > indexer.start_block()
    assert indexer_session.scalar(select(func.count(ChainEventRow.id))) == events + 1
    assert _table(indexer_session, IndexedSettlement)[0].state == "cancelled"

    # Rebuild from nothing but the chain and IPFS: the same projections, row for row.
    live = projection_snapshot(indexer_session)
    rebuilt = flows.rebuild(
        indexer_session, ChainClient.from_settings(settings), settings, IpfsClient.from_settings(settings)
    )
    assert rebuilt.caught_up
    assert projection_snapshot(indexer_session) == live
    status = _ok(app_client.get("/chain/status", headers=make_caller(app_client, Role.auditor, "a").headers))
    assert status["lag_blocks"] == 0 and status["events"] == events + 1


def _ok(response: Any) -> Any:
    assert response.status_code == 200, response.text
    return response.json()


def test_a_reverted_chain_is_rolled_back_to_the_common_ancestor(
    settings: Settings, db_session: Session, indexer_session: Session
) -> None:
    _anchor(db_session, settings, "kept", 0)
    snapshot = rpc(settings.eth_rpc_url, "evm_snapshot")
    _anchor(db_session, settings, "orphaned", 1)
    indexer = _indexer(indexer_session, settings)
    indexer.catch_up()
    names = {s.source_id for s in _table(indexer_session, IndexedSource)}
    assert len(names) == 2

    rpc(settings.eth_rpc_url, "evm_revert", snapshot)
    for _ in range(6):  # the new branch is longer than the old one
        rpc(settings.eth_rpc_url, "evm_mine")
    replacement = _anchor(db_session, settings, "replacement", 2)
    report = _indexer(indexer_session, settings).catch_up()
    assert report.caught_up
    sources = {s.source_id for s in _table(indexer_session, IndexedSource)}
    assert replacement in sources and len(sources) == 2
    kept = names & sources
    assert len(kept) == 1  # "kept" survived, "orphaned" is gone
    batches = _table(indexer_session, IndexedBatch)
    assert {b.source_id for b in batches} == sources
    status = flows.status(indexer_session, ChainClient.from_settings(settings), settings)
    assert status.reorgs == 1 and status.last_reorg_depth > 0
    live = projection_snapshot(indexer_session)
    flows.rebuild(indexer_session, ChainClient.from_settings(settings), settings, None)
    assert projection_snapshot(indexer_session) == live


def test_anvil_reorg_drops_the_reorged_batch(
    settings: Settings, db_session: Session, indexer_session: Session
) -> None:
    _anchor(db_session, settings, "early", 0)
    _anchor(db_session, settings, "late", 1)
    indexer = _indexer(indexer_session, settings)
    indexer.catch_up()
    assert len(_table(indexer_session, IndexedBatch)) == 2
    # Replace the last blocks (the "late" source's anchor is in them) with empty ones.
    rpc(settings.eth_rpc_url, "anvil_reorg", 2, [])
    report = _indexer(indexer_session, settings).catch_up()
    assert report.caught_up
    batches = _table(indexer_session, IndexedBatch)
    chain = ChainClient.from_settings(settings)
    ledger = chain.contract("DeliveryLedger").functions
    anchored = [b for b in batches if chain.call(ledger.isAnchored(bytes.fromhex(b.batch_id[2:])))]
    assert batches == anchored and len(batches) == 1


def test_confirmation_depth_holds_back_the_newest_blocks(
    settings: Settings, db_session: Session, indexer_session: Session
) -> None:
    deep = settings.model_copy(update={"indexer_confirmations": 3})
    _anchor(db_session, deep, "fresh", 0)
    indexer = flows.make_indexer(indexer_session, ChainClient.from_settings(deep), deep, None)
    indexer.catch_up()
    assert _table(indexer_session, IndexedBatch) == []  # its block has fewer than 3 on top
    for _ in range(3):
        rpc(deep.eth_rpc_url, "evm_mine")
    indexer.catch_up()
    assert len(_table(indexer_session, IndexedBatch)) == 1


def _register_on_chain(
    chain: ChainClient, metadata_cid: str, content_cid: str, import_profile: int = 0
) -> None:
    """An asset registered straight on the registry (as any registrar could), with this metadata CID
    (and CIDs cut with this import profile's code)."""
    registrar = chain.signer_address
    licence = (1, 0, 0, 0, "")
    registration = (
        os.urandom(32),
        content_cid,
        metadata_cid,
        registrar,
        0,
        False,
        licence,
        [registrar],
        [10_000],
        import_profile,
    )
    self_register(chain.transact, chain.contract("ContentRegistry"), registration)


def test_oversized_slow_or_invalid_metadata_is_recorded_and_skipped(
    settings: Settings, db_session: Session, indexer_session: Session, ipfs_client: IpfsClient
) -> None:
    """A metadata CID pointing at a file above the cap, one at a file that is not JSON, then a normal
    one: the indexer indexes all three (the normal one with its title, the others with their reason),
    its cursor passes them, a batch anchored after them is indexed, and nothing is read twice."""
    capped = settings.model_copy(
        update={"indexer_metadata_max_bytes": 4_096, "indexer_metadata_timeout_seconds": 5.0}
    )
    chain = ChainClient.from_settings(capped)
    content = ipfs_client.add_bytes(os.urandom(64))
    huge = ipfs_client.add_bytes(os.urandom(2 * 1024 * 1024))  # 2 MiB, 512 times the cap
    not_json = ipfs_client.add_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(100))
    normal = ipfs_client.add_json({"name": "Sneaker, side view"})
    for metadata_cid in (huge, not_json):
        _register_on_chain(chain, metadata_cid, content)
    _register_on_chain(chain, normal, content, import_profile=1)
    source_id = _anchor(db_session, capped, "after-bad-metadata", 0)

    report = _indexer(indexer_session, capped).catch_up()
    assert report.caught_up and report.to_block == chain.block_number()
    assets = {a.metadata_cid: a for a in _table(indexer_session, IndexedAsset)}
    assert set(assets) == {huge, not_json, normal}
    assert (assets[huge].metadata_state, assets[huge].title) == ("too_large", None)
    assert "larger than 4096 bytes" in (assets[huge].metadata_error or "")
    assert assets[not_json].metadata_state == "invalid"
    assert "not a JSON document" in (assets[not_json].metadata_error or "")
    assert (assets[normal].metadata_state, assets[normal].title) == ("ok", "Sneaker, side view")
    # The registry's record of the import profile is projected as its name.
    assert [assets[cid].import_profile for cid in (huge, normal)] == ["legacy-cidv1", "unixfs-v1-2025"]
    assert assets[normal].metadata_error is None
    assert {a.metadata_attempts for a in assets.values()} == {1}
    (batch,) = _table(indexer_session, IndexedBatch)  # anchored after the bad assets: indexed too
    assert batch.source_id == source_id

    # Permanent reasons are not read again; the cursor is where the chain is.
    assert _indexer(indexer_session, capped).retry_metadata() == 0
    assert {a.metadata_attempts for a in _table(indexer_session, IndexedAsset)} == {1}


def test_metadata_reads_that_found_ipfs_down_are_retried_a_bounded_number_of_times(
    settings: Settings, indexer_session: Session, ipfs_client: IpfsClient
) -> None:
    bounded = settings.model_copy(update={"indexer_metadata_attempts": 2})
    chain = ChainClient.from_settings(bounded)
    content = ipfs_client.add_bytes(os.urandom(64))
    normal = ipfs_client.add_json({"name": "Sneaker, AI variant"})
    _register_on_chain(chain, normal, content)
    _register_on_chain(chain, ipfs_client.add_bytes(b"{not json"), content)

    # IPFS down: both recorded "unavailable" and the cursor moves on.
    down = flows.make_indexer(indexer_session, ChainClient.from_settings(bounded), bounded, None)
    assert down.catch_up().caught_up  # its retry pass ran too: 2 attempts each, the bound
    assets = _table(indexer_session, IndexedAsset)
    assert {(a.metadata_state, a.metadata_attempts) for a in assets} == {("unavailable", 2)}
    assert _indexer(indexer_session, bounded).retry_metadata() == 0  # bound reached: never again

    # With a higher bound and IPFS back, the next pass reads them: one title, one reason.
    more = bounded.model_copy(update={"indexer_metadata_attempts": 3})
    assert _indexer(indexer_session, more).retry_metadata() == 2
    states = {(a.metadata_state, a.title, a.metadata_attempts) for a in _table(indexer_session, IndexedAsset)}
    assert states == {("ok", "Sneaker, AI variant", 3), ("invalid", None, 3)}
    assert _indexer(indexer_session, more).retry_metadata() == 0


def test_metadata_the_node_cannot_find_times_out_and_does_not_hold_the_cursor(
    settings: Settings, indexer_session: Session, ipfs_client: IpfsClient
) -> None:
    """A metadata CID of content no node has (the offline node waits for its blocks): the read gives up
    after INDEXER_METADATA_TIMEOUT_SECONDS, the asset is indexed with reason "timeout" and the cursor
    reaches the head."""
    quick = settings.model_copy(
        update={"indexer_metadata_timeout_seconds": 1.0, "indexer_metadata_attempts": 1}
    )
    chain = ChainClient.from_settings(quick)
    missing = cid_of_bytes(os.urandom(256))  # never added anywhere
    _register_on_chain(chain, missing, ipfs_client.add_bytes(os.urandom(64)))
    started = time.monotonic()
    report = _indexer(indexer_session, quick).catch_up()
    assert report.caught_up and report.to_block == chain.block_number()
    assert time.monotonic() - started < 30
    (asset,) = _table(indexer_session, IndexedAsset)
    assert (asset.metadata_cid, asset.metadata_state, asset.title) == (missing, "timeout", None)
    assert "not read within 1 s" in (asset.metadata_error or "")
    assert _indexer(indexer_session, quick).retry_metadata() == 0  # one attempt allowed, made
