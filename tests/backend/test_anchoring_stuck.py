"""A stuck anchor and the signer's fee ceiling, on a real anvil and real databases (chain/stuck_tx.py,
deliveries/anchoring.py; docs/anchoring.md, "A stuck anchor").

An anchor is one transaction at one nonce, recorded before it leaves: while it waits in the mempool the
source's queue waits (``anchor_in_mempool``), and once it has waited TX_REPLACE_AFTER_SECONDS the same
call goes again at that nonce bidding more. Every other transaction of the signer bids under
TX_MAX_FEE_PER_GAS_WEI too: above it nothing is sent (``chain_fee_capped``). Anvil's automine is switched
off to hold an anchor in the mempool; a client with a one-second receipt timeout plays the worker whose
wait runs out.
"""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hexbytes import HexBytes

from edgeledger.auth.models import Role
from edgeledger.chain import stuck_tx
from edgeledger.chain.client import ChainClient, ChainError
from edgeledger.config import Settings
from edgeledger.deliveries import anchoring, sources
from edgeledger.deliveries.batches import stored_manifest
from edgeledger.deliveries.models import BatchState, DeliverySource
from edgeledger.ledger.abis import DELIVERY_LEDGER
from edgeledger.ledger.hashing import bytes32
from edgeledger.ledger.ids import source_id_for
from tests.backend.support.mempool import held_in_mempool, impatient, mined, sent
from tests.backend.support.stack import Caller, make_caller, rpc
from tests.backend.test_anchoring import closed_cdn_batches, db, reload

pytestmark = pytest.mark.integration


@pytest.fixture
def admin(app_client: TestClient) -> Caller:
    return make_caller(app_client, Role.admin, "admin")


@pytest.fixture
def chain(app_client: TestClient) -> ChainClient:
    return app_client.app.state.chain  # type: ignore[attr-defined]


def _anchors_on_chain(client: ChainClient) -> int:
    on_chain = sources.chain_source(client, source_id_for("cdn-a"))
    assert on_chain is not None
    return int(on_chain["batch_count"])


def test_a_stuck_anchor_is_sent_again_at_its_nonce_bidding_more(
    app_client: TestClient,
    admin: Caller,
    settings: Settings,
    chain: ChainClient,
) -> None:
    """Sent under a ceiling just above the base fee (what a fee spike since makes of any bid), the
    anchor waits in the mempool: the run says so and sends nothing more; before TX_REPLACE_AFTER_SECONDS
    nothing is sent again; after it, the same call goes at the same nonce bidding 25 % more, and the
    one it replaced leaves the mempool. Mined, the batch is anchored once, by the replacement."""
    first, second = closed_cdn_batches(app_client, admin, settings, days=2)
    with db(app_client) as session, held_in_mempool(settings):
        before = sent(chain)
        client, low = impatient(settings, tx_max_fee_per_gas_wei=chain.base_fee() + 1)
        report = anchoring.anchor_pending(session, client, low)
        assert report.waiting == {first.batch_id: anchoring.ANCHOR_IN_MEMPOOL}, report.as_dict()
        assert not report.retryable and not report.errors and not report.anchored
        row = reload(session, first)
        assert row.state == BatchState.anchoring and row.tx_nonce == before and row.tx_sent_at is not None
        assert row.error_code == anchoring.ANCHOR_IN_MEMPOOL
        first_hash = row.tx_hash
        assert first_hash is not None
        pending = chain.pending_tx(first_hash)
        assert pending is not None and pending.nonce == before
        assert pending.fees.max_fee_per_gas <= low.tx_max_fee_per_gas_wei
        # the source's queue waits behind it: the second batch is not sent
        assert reload(session, second).state == BatchState.closed and sent(chain) == before + 1

        client, not_yet = impatient(settings)  # the default: five minutes
        report = anchoring.anchor_pending(session, client, not_yet)
        assert report.waiting == {first.batch_id: anchoring.ANCHOR_IN_MEMPOOL} and not report.replaced
        assert chain.pending_tx(first_hash) is not None and sent(chain) == before + 1

        client, due = impatient(settings, tx_replace_after_seconds=0)
        report = anchoring.anchor_pending(session, client, due)
        assert report.replaced == [first.batch_id] and not report.errors, report.as_dict()
        row = reload(session, first)
        assert row.tx_nonce == before and row.tx_prev_hash == first_hash and row.tx_hash != first_hash
        assert chain.pending_tx(first_hash) is None  # replaced: gone from the mempool
        assert row.tx_hash is not None
        bid = chain.pending_tx(row.tx_hash)
        assert bid is not None and bid.nonce == before
        assert bid.fees.max_fee_per_gas >= pending.fees.max_fee_per_gas * 125 // 100
        assert bid.fees.max_priority_fee_per_gas >= pending.fees.max_priority_fee_per_gas * 125 // 100
        assert sent(chain) == before + 1 and mined(chain) == before  # one nonce, still unmined
        replacement = row.tx_hash
    with db(app_client) as session:
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.anchored == [first.batch_id, second.batch_id] and not report.waiting, report.as_dict()
        done = reload(session, first)
        assert done.state == BatchState.anchored and done.tx_hash == replacement
        assert done.error_code is None
    assert chain.receipt_if_mined(replacement) is not None and chain.receipt_if_mined(first_hash) is None
    assert _anchors_on_chain(chain) == 2 and sent(chain) == mined(chain) == before + 2


def test_an_anchor_queued_behind_another_transaction_is_not_bid_up(
    app_client: TestClient,
    admin: Caller,
    settings: Settings,
    chain: ChainClient,
) -> None:
    """Another flow's transaction of the signer waits at the head of the queue, bidding under the
    market: the anchor behind it gains nothing from a higher bid and is left as it is, the run naming
    the nonce it waits behind; both are mined together, one anchor."""
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    with db(app_client) as session, held_in_mempool(settings):
        head = sent(chain)
        client, _ = impatient(settings, tx_max_fee_per_gas_wei=chain.base_fee() + 1)
        held = client.send(chain.contract(DELIVERY_LEDGER).functions.isAnchored(bytes32(batch.batch_id)))
        assert chain.pending_tx(held) is not None
        client, worker = impatient(settings)
        report = anchoring.anchor_pending(session, client, worker)
        assert report.waiting == {batch.batch_id: anchoring.ANCHOR_IN_MEMPOOL}, report.as_dict()
        assert reload(session, batch).tx_nonce == head + 1
        client, due = impatient(settings, tx_replace_after_seconds=0)
        report = anchoring.anchor_pending(session, client, due)
        behind = f"{stuck_tx.reason(anchoring.WHAT, stuck_tx.QUEUED_BEHIND)}:{head}"
        assert report.waiting == {batch.batch_id: behind} and not report.replaced, report.as_dict()
        row = reload(session, batch)
        assert row.error_code == behind and "nonce " + str(head) in (row.error_message or "")
        assert sent(chain) == head + 2
    with db(app_client) as session:
        assert anchoring.anchor_pending(session, chain, settings).anchored == [batch.batch_id]
    assert _anchors_on_chain(chain) == 1 and sent(chain) == mined(chain) == head + 2


def test_no_transaction_of_the_signer_bids_above_its_ceiling(
    app_client: TestClient,
    admin: Caller,
    settings: Settings,
    chain: ChainClient,
) -> None:
    """Every send bids the market under TX_MAX_FEE_PER_GAS_WEI. With the base fee above the ceiling no
    bid would be taken: a plain send is refused before anything leaves (503 ``chain_fee_capped``, the
    signer's nonce unmoved), and an anchor waits (``anchor_fee_capped``) until fees fall."""
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    base = chain.base_fee()
    ceiling = 3 * base + 10**9
    client, capped = impatient(settings, tx_max_fee_per_gas_wei=ceiling)
    probe = chain.contract(DELIVERY_LEDGER).functions.isAnchored(bytes32(batch.batch_id))
    probed = client.transact(probe)
    tx = chain.w3.eth.get_transaction(probed.tx_hash)
    assert tx["maxFeePerGas"] <= ceiling and tx["maxPriorityFeePerGas"] <= tx["maxFeePerGas"]
    try:
        rpc(settings.eth_rpc_url, "anvil_setNextBlockBaseFeePerGas", hex(ceiling + 1))
        rpc(settings.eth_rpc_url, "evm_mine")
        assert chain.base_fee() > ceiling
        before = sent(chain)
        with pytest.raises(ChainError) as refused:
            client.transact(probe)
        assert refused.value.code == "chain_fee_capped" and refused.value.status == 503
        assert "TX_MAX_FEE_PER_GAS_WEI" in refused.value.message and sent(chain) == before
        with db(app_client) as session:
            report = anchoring.anchor_pending(session, client, capped)
            capped_reason = stuck_tx.reason(anchoring.WHAT, stuck_tx.FEE_CAPPED)
            assert report.waiting == {batch.batch_id: capped_reason}, report.as_dict()
            row = reload(session, batch)
            assert row.state == BatchState.anchoring and row.tx_hash is None and sent(chain) == before
            assert "TX_MAX_FEE_PER_GAS_WEI" in (row.error_message or "")
    finally:  # the shared chain back to a cheap base fee
        rpc(settings.eth_rpc_url, "anvil_setNextBlockBaseFeePerGas", hex(base))
        rpc(settings.eth_rpc_url, "evm_mine")
    with db(app_client) as session:
        assert anchoring.anchor_pending(session, client, capped).anchored == [batch.batch_id]
    assert _anchors_on_chain(chain) == 1


def test_a_reverted_anchor_is_spent_and_its_queue_resumes_once_the_cause_is_fixed(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    """An anchor mined and reverted (its source suspended while it waited) spent its nonce: the run
    records the revert and forgets the transaction, and once the source is reactivated the next run
    sends a new one at the signer's next nonce instead of reading the old receipt again."""
    (batch,) = closed_cdn_batches(app_client, admin, settings)
    with db(app_client) as session:
        source = session.get(DeliverySource, batch.source_pk)
        assert source is not None
        anchoring._prepare(session, chain, settings, source, reload(session, batch), anchoring.AnchorReport())
    assert app_client.post("/deliveries/sources/cdn-a/suspend", headers=admin.headers).status_code == 200
    with db(app_client) as session:
        row = reload(session, batch)
        assert row.state == BatchState.anchoring and row.signature is not None
        manifest = stored_manifest(session, row)
        call = chain.contract(DELIVERY_LEDGER).functions.anchor(manifest.as_tuple(), HexBytes(row.signature))
        nonce = sent(chain)
        reverted = chain.send(call, gas=1_000_000)  # not estimated: sent, mined, reverted
        assert chain.w3.eth.wait_for_transaction_receipt(HexBytes(reverted))["status"] == 0
        row.tx_hash, row.tx_nonce = reverted, nonce
        session.commit()
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.errors == {batch.batch_id: "SourceNotActive"}, report.as_dict()
        row = reload(session, batch)
        assert (
            row.state == BatchState.anchoring and row.tx_hash is None and row.error_code == "SourceNotActive"
        )
    assert app_client.post("/deliveries/sources/cdn-a/reactivate", headers=admin.headers).status_code == 200
    after = sent(chain)  # the reactivation took the nonce after the reverted anchor's
    with db(app_client) as session:
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.anchored == [batch.batch_id] and not report.errors, report.as_dict()
        done = reload(session, batch)
        assert done.tx_hash != reverted and done.tx_nonce == after
    assert _anchors_on_chain(chain) == 1 and sent(chain) == mined(chain) == after + 1


def test_an_anchor_the_node_refused_names_no_transaction_and_can_be_abandoned(
    app_client: TestClient, admin: Caller, settings: Settings, chain: ChainClient
) -> None:
    """The signer cannot pay for gas: the node refuses the anchor's broadcast. The run says why
    (``signer_insufficient_funds``), the batch keeps its nonce but names no transaction (none left), so
    an admin may abandon it; funded again, a batch anchors at that nonce."""
    first, second = closed_cdn_batches(app_client, admin, settings, days=2)
    funds = chain.w3.eth.get_balance(chain.signer_address)
    nonce = sent(chain)
    try:
        rpc(settings.eth_rpc_url, "anvil_setBalance", chain.signer_address, "0x0")
        with db(app_client) as session:
            report = anchoring.anchor_pending(session, chain, settings)
            assert report.waiting == {first.batch_id: stuck_tx.SIGNER_INSUFFICIENT_FUNDS}, report.as_dict()
            row = reload(session, first)
            assert row.state == BatchState.anchoring and row.tx_hash is None and row.tx_nonce == nonce
            assert row.error_code == stuck_tx.SIGNER_INSUFFICIENT_FUNDS and sent(chain) == nonce
    finally:
        rpc(settings.eth_rpc_url, "anvil_setBalance", chain.signer_address, hex(funds))
    abandoned = app_client.post(
        f"/deliveries/batches/{first.batch_id}/abandon",
        json={"reason": "its node lost its key"},
        headers=admin.headers,
    )
    assert abandoned.status_code == 200, abandoned.json()
    with db(app_client) as session:
        report = anchoring.anchor_pending(session, chain, settings)
        assert report.anchored == [second.batch_id] and not report.waiting, report.as_dict()
        assert reload(session, second).tx_nonce == nonce
