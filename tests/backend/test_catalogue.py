"""A catalogue registered in one transaction (ContentRegistry.registerBatch, devtools/catalogue.py), on a
real anvil chain, IPFS node and database: each asset verifies from its file alone, the indexer projects
every one with the shared licence and split, and settlement's terms read (read_terms) and the API's
provenance read (read_on_chain) give each asset its split: the shared one from the catalogue's first
asset's event, or its own once it set one (copy on write)."""

from __future__ import annotations

import hashlib
from typing import Any

from eth_account import Account
from sqlalchemy import select
from sqlalchemy.orm import Session

from edgeledger.assets import service as assets_service
from edgeledger.chain.client import ChainClient
from edgeledger.config import Settings
from edgeledger.devtools.catalogue import run_catalogue_demo
from edgeledger.devtools.samples import demo_png
from edgeledger.indexer import flows
from edgeledger.indexer.models import IndexedAsset
from edgeledger.ipfs import IpfsClient
from edgeledger.settlement.terms import read_terms
from tests.backend.support.settlement import send_as
from tests.backend.support.stack import rpc


def _split(record: Any) -> list[tuple[str, int]]:
    return [(s.recipient.lower(), s.bps) for s in record.split]


def test_a_catalogue_of_100_in_one_transaction_verifies_indexes_and_settles_per_asset(
    settings: Settings, db_session: Session, ipfs_client: IpfsClient
) -> None:
    settings = settings.model_copy(update={"indexer_confirmations": 0})
    chain = ChainClient.from_settings(settings)
    creator = Account.create()
    rpc(chain.rpc_url, "anvil_setBalance", creator.address, hex(10**21))
    label = "catalogue test"
    report = run_catalogue_demo(settings, creator.key.hex(), label, count=100)
    assert report.count == 100 and report.gas_used < 2**24
    first = report.first_id
    # Every asset is its own token, verifiable from the file alone; files are pinned after the landing.
    for n in (0, 57, 99):
        data = demo_png(f"EdgeLedger catalogue {label} #{n}", size=32)
        verdict = assets_service.verify_content_hash(chain, "0x" + hashlib.sha256(data).hexdigest())
        assert (verdict.registered, verdict.asset_id) == (True, first + n)
        assert verdict.creator is not None and verdict.creator.lower() == creator.address.lower()
        assert verdict.content_cid is not None and ipfs_client.is_pinned(verdict.content_cid)

    # The API's provenance read and settlement's terms read: the shared split, from the first's event.
    shared = [(creator.address.lower(), 10_000)]
    assert _split(assets_service.read_on_chain(chain, first + 57)) == shared
    registry = chain.contract("ContentRegistry")
    co_holder = Account.create().address
    own_split = registry.functions.updateSplit(first + 3, [creator.address, co_holder], [6_000, 4_000])
    send_as(chain, creator, own_split)
    block = chain.block_number()
    terms = read_terms(
        registry,
        lambda fn: chain.call(fn, block),
        [first, first + 3, first + 4],
        get_logs=chain.get_logs,
        block=block,
    )
    by_id = {int(t.asset_id): [(r.address, r.bps) for r in t.recipients] for t in terms}
    assert by_id == {
        first: shared,
        first + 3: [(creator.address.lower(), 6_000), (co_holder.lower(), 4_000)],
        first + 4: shared,
    }
    assert _split(assets_service.read_on_chain(chain, first + 4)) == shared

    # The indexer projects all 100 with the catalogue's licence and split, and follows the one change.
    indexer = flows.make_indexer(db_session, chain, settings, ipfs_client)
    assert indexer.catch_up().caught_up
    rows = {
        int(a.asset_id): a
        for a in db_session.scalars(select(IndexedAsset)).all()
        if first <= int(a.asset_id) < first + 100
    }
    assert len(rows) == 100
    assert {a.royalty_bps for a in rows.values()} == {500}
    assert rows[first + 99].split_json == f'[["{creator.address}",10000]]'
    assert rows[first + 3].split_json == f'[["{creator.address}",6000],["{co_holder}",4000]]'
    assert rows[first + 57].title == "Catalogue image 58"
