"""A relayed registration or catalogue stuck in the mempool, on a real anvil, IPFS node and databases
(assets/flows.py ``send_journalled`` and ``follow_journalled``, chain/stuck_tx.py; docs/registration.md,
"A stuck registration").

The reconciler used to send a registration whose receipt had not come within TX_TIMEOUT_SECONDS again at
a new nonce: behind a stuck one, every run queued one more transaction that could only revert once the
first was mined, each paid for. Now the row names its nonce: while its transaction waits in the mempool
the reconciler leaves it, and once it has waited TX_REPLACE_AFTER_SECONDS it sends the same call at that
nonce bidding more. Anvil's automine is switched off to hold the transaction in the mempool.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from hexbytes import HexBytes
from sqlalchemy.orm import Session

from edgeledger.assets import catalogues, flows
from edgeledger.assets.models import Catalogue, CatalogueState, Registration, RegistrationState
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.config import Settings
from edgeledger.db import exclusive_work
from edgeledger.ipfs import IpfsClient
from tests.backend.support.mempool import held_in_mempool, impatient, mined, sent
from tests.backend.support.stack import Caller, rpc
from tests.backend.test_assets import _crashed_registration
from tests.backend.test_catalogue_api import _crashed

pytestmark = pytest.mark.integration


def _total_assets(chain: ChainClient) -> int:
    return int(chain.call(chain.contract("ContentRegistry").functions.totalAssets()))


def test_a_stuck_registration_is_followed_then_sent_again_at_its_nonce_never_twice(
    app_client: TestClient, creator: Caller, settings: Settings, ipfs_client: IpfsClient
) -> None:
    """Relayed under a ceiling just above the base fee, the registration waits in the mempool (504, kept
    ``submitted`` with its nonce). The reconciler, runs later, sends nothing while it waits; once it is
    due, the same call goes at the same nonce bidding more; mined, the asset is registered once and the
    signer has sent one nonce."""
    reg = _crashed_registration(app_client, creator, submit=False)  # signed, nothing sent
    chain = ChainClient.from_settings(settings)
    later = datetime.now(UTC) + timedelta(minutes=5)
    engine = app_client.app.state.engine  # type: ignore[attr-defined]
    with held_in_mempool(settings), Session(engine) as session:
        before = sent(chain)
        low, _ = impatient(settings, tx_max_fee_per_gas_wei=chain.base_fee() + 1)
        row = session.get(Registration, reg.id)
        assert row is not None
        with pytest.raises(ChainError) as waited:
            flows.submit_registration(session, low, ipfs_client, row)
        assert waited.value.code == "chain_timeout"
        session.refresh(row)
        assert row.state == RegistrationState.submitted and row.tx_nonce == before and row.tx_hash
        first_hash = row.tx_hash
        first = chain.pending_tx(first_hash)
        assert first is not None and first.nonce == before

        for _ in range(2):  # the old reconciler sent a second registration here, at a new nonce
            counts = flows.reconcile_registrations(session, chain, ipfs_client, settings, now=later)
            assert counts["deferred"] == 1 and counts["retried"] == 0, counts
            assert sent(chain) == before + 1 and chain.pending_tx(first_hash) is not None
            session.refresh(row)
            assert row.state == RegistrationState.submitted and row.tx_hash == first_hash
        # past its deadline while its transaction waits: not released, it may still land
        too_late = later + timedelta(seconds=settings.pending_registration_max_age_seconds)
        counts = flows.reconcile_registrations(session, chain, ipfs_client, settings, now=too_late)
        assert counts["deferred"] == 1 and counts["released"] == 0, counts
        session.refresh(row)
        assert row.state == RegistrationState.submitted

        _, due = impatient(settings, tx_replace_after_seconds=0)
        counts = flows.reconcile_registrations(session, chain, ipfs_client, due, now=later)
        assert counts["retried"] == 1, counts
        session.refresh(row)
        assert row.tx_nonce == before and row.tx_prev_hash == first_hash and row.tx_hash != first_hash
        assert row.tx_hash is not None and chain.pending_tx(first_hash) is None
        bid = chain.pending_tx(row.tx_hash)
        assert bid is not None and bid.nonce == before
        assert bid.fees.max_fee_per_gas >= first.fees.max_fee_per_gas * 125 // 100
        assert sent(chain) == before + 1 and mined(chain) == before
        replacement = row.tx_hash
    with Session(engine) as session:
        counts = flows.reconcile_registrations(session, chain, ipfs_client, settings, now=later)
        assert counts["registered"] == 1, counts
        done = session.get(Registration, reg.id)
        assert done is not None and done.state == RegistrationState.registered and done.asset_id == 1
        assert done.tx_hash == replacement
    assert chain.receipt_if_mined(replacement) is not None and chain.receipt_if_mined(first_hash) is None
    assert _total_assets(chain) == 1 and sent(chain) == mined(chain) == before + 1


def test_a_registration_over_the_fee_ceiling_is_kept_and_sent_once_fees_fall(
    app_client: TestClient, creator: Caller, settings: Settings, ipfs_client: IpfsClient
) -> None:
    """The base fee above TX_MAX_FEE_PER_GAS_WEI: relaying is refused before anything leaves (503
    ``registration_fee_capped``), the registration kept signed for the reconciler, which registers it
    once fees fall."""
    reg = _crashed_registration(app_client, creator, submit=False)
    chain = ChainClient.from_settings(settings)
    base = chain.base_fee()
    ceiling = 3 * base + 10**9
    capped, capped_settings = impatient(settings, tx_max_fee_per_gas_wei=ceiling)
    engine = app_client.app.state.engine  # type: ignore[attr-defined]
    later = datetime.now(UTC) + timedelta(minutes=5)
    try:
        rpc(settings.eth_rpc_url, "anvil_setNextBlockBaseFeePerGas", hex(ceiling + 1))
        rpc(settings.eth_rpc_url, "evm_mine")
        before = sent(chain)
        with Session(engine) as session:
            row = session.get(Registration, reg.id)
            assert row is not None
            with pytest.raises(ChainError) as refused:
                flows.submit_registration(session, capped, ipfs_client, row)
            assert refused.value.code == "registration_fee_capped" and refused.value.status == 503
            assert "TX_MAX_FEE_PER_GAS_WEI" in refused.value.message and sent(chain) == before
            session.refresh(row)
            assert row.state == RegistrationState.pinned and row.error_code == "registration_fee_capped"
            counts = flows.reconcile_registrations(session, capped, ipfs_client, capped_settings, now=later)
            assert counts["deferred"] == 1 and sent(chain) == before, counts
            session.refresh(row)
            assert row.state == RegistrationState.pinned and row.error_code == "registration_fee_capped"
    finally:  # the shared chain back to a cheap base fee
        rpc(settings.eth_rpc_url, "anvil_setNextBlockBaseFeePerGas", hex(base))
        rpc(settings.eth_rpc_url, "evm_mine")
    with Session(engine) as session:
        counts = flows.reconcile_registrations(session, capped, ipfs_client, capped_settings, now=later)
        assert counts["retried"] == 1, counts
    assert _total_assets(chain) == 1 and sent(chain) == before + 1


def test_a_stuck_catalogue_is_sent_again_at_its_nonce_never_twice(
    app_client: TestClient, creator: Caller, settings: Settings, ipfs_client: IpfsClient
) -> None:
    """The catalogue's one transaction, stuck: followed while it waits, replaced at its nonce once due;
    its three assets registered once, one nonce spent."""
    cat_id = _crashed(app_client, creator, stage="signed")
    chain = ChainClient.from_settings(settings)
    later = datetime.now(UTC) + timedelta(minutes=5)
    engine = app_client.app.state.engine  # type: ignore[attr-defined]
    with held_in_mempool(settings), Session(engine) as session:
        before = sent(chain)
        low, _ = impatient(settings, tx_max_fee_per_gas_wei=chain.base_fee() + 1)
        cat = session.get(Catalogue, cat_id)
        assert cat is not None
        with pytest.raises(ChainError):
            catalogues.submit_catalogue(session, low, ipfs_client, cat)
        session.refresh(cat)
        assert cat.state == CatalogueState.submitted and cat.tx_nonce == before and cat.tx_hash
        first_hash = cat.tx_hash
        counts = catalogues.reconcile_catalogues(session, chain, ipfs_client, settings, now=later)
        assert counts["deferred"] == 1 and sent(chain) == before + 1, counts
        session.refresh(cat)
        assert cat.state == CatalogueState.submitted and cat.tx_hash == first_hash
        _, due = impatient(settings, tx_replace_after_seconds=0)
        counts = catalogues.reconcile_catalogues(session, chain, ipfs_client, due, now=later)
        assert counts["retried"] == 1, counts
        session.refresh(cat)
        assert cat.tx_nonce == before and cat.tx_prev_hash == first_hash and cat.tx_hash != first_hash
        assert sent(chain) == before + 1 and chain.pending_tx(first_hash) is None
        replacement = cat.tx_hash
    with Session(engine) as session:
        counts = catalogues.reconcile_catalogues(session, chain, ipfs_client, settings, now=later)
        assert counts["registered"] == 1, counts
        done = session.get(Catalogue, cat_id)
        assert done is not None and done.state == CatalogueState.registered and done.tx_hash == replacement
    assert _total_assets(chain) == 3 and sent(chain) == mined(chain) == before + 1


def test_a_registration_whose_transaction_reverted_is_sent_anew(
    app_client: TestClient, creator: Caller, settings: Settings, ipfs_client: IpfsClient
) -> None:
    """The row names a transaction that was mined and reverted (its nonce spent): relaying again sends a
    new transaction at the signer's next nonce, rather than reading the old receipt again, and the asset
    is registered once."""
    reg = _crashed_registration(app_client, creator, submit=False)
    chain = ChainClient.from_settings(settings)
    engine = app_client.app.state.engine  # type: ignore[attr-defined]
    with Session(engine) as session:
        row = session.get(Registration, reg.id)
        assert row is not None
        nonce = sent(chain)
        reverted = chain.send(chain.contract("ContentRegistry").functions.totalAssets(), gas=21_500)
        assert chain.w3.eth.wait_for_transaction_receipt(HexBytes(reverted))["status"] == 0  # out of gas
        row.tx_hash, row.tx_nonce = reverted, nonce
        session.commit()
        asset = flows.submit_registration(session, chain, ipfs_client, row)
        session.refresh(row)
        assert asset.id == 1 and row.state == RegistrationState.registered
        assert row.tx_hash != reverted and row.tx_nonce == nonce + 1
    assert _total_assets(chain) == 1 and sent(chain) == mined(chain) == nonce + 2


def test_one_reconciler_at_a_time_relays_a_registration(
    app_client: TestClient, creator: Caller, settings: Settings, ipfs_client: IpfsClient
) -> None:
    """Two reconciler runs overlap (one waits for a receipt while the beat starts the next): the one
    that finds a registration held by the other leaves it ("busy") and sends nothing, so it is never
    relayed twice at two nonces; once the lock is free, the next run relays it, once."""
    reg = _crashed_registration(app_client, creator, submit=False)  # signed, nothing sent
    chain = ChainClient.from_settings(settings)
    later = datetime.now(UTC) + timedelta(minutes=5)
    engine = app_client.app.state.engine  # type: ignore[attr-defined]
    before = sent(chain)
    with Session(engine) as holder, Session(engine) as session:
        with exclusive_work(holder, settings.data_dir / "locks", "reconcile-registration", reg.id) as held:
            assert held
            counts = flows.reconcile_registrations(session, chain, ipfs_client, settings, now=later)
            assert counts["busy"] == 1 and counts["retried"] == 0, counts
            assert sent(chain) == before
        counts = flows.reconcile_registrations(session, chain, ipfs_client, settings, now=later)
        assert counts["retried"] == 1 and counts["busy"] == 0, counts
        done = session.get(Registration, reg.id)
        assert done is not None and done.state == RegistrationState.registered
    assert _total_assets(chain) == 1 and sent(chain) == before + 1
