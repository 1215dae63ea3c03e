"""Signatures replayed where they do not belong are refused on chain: a batch manifest signed for another
chain id or another DeliveryLedger address, a malleable (high-s) twin of a valid signature, and the same
valid manifest anchored twice. Real anvil and databases; the contract's own errors are checked."""

from __future__ import annotations

from typing import Any

import pytest
from eth_account import Account
from eth_keys.constants import SECPK1_N
from hexbytes import HexBytes
from sqlalchemy.orm import Session

from edgeledger.chain.client import ChainClient, ContractRevert
from edgeledger.config import Settings
from edgeledger.deliveries.models import DeliveryBatch
from tests.backend.support.deliveries import (
    MANIFEST_TYPES,
    add_records,
    close_batch,
    manifest_of,
    register_source,
    sign_manifest,
)
from tests.backend.support.settlement import delivery_records

pytestmark = pytest.mark.integration
DAY0 = 1_763_596_800


def _closed_batch(session: Session, settings: Settings, node: Any) -> tuple[Any, DeliveryBatch]:
    chain = ChainClient.from_settings(settings)
    source = register_source(session, chain, "edge-replay", provider="edgeledger", signer=node.address)
    (batch,) = add_records(session, settings, source, delivery_records(DAY0, 5, 1000, "shop.example"))
    return chain, close_batch(session, settings, batch)


def _anchor(chain: Any, manifest: dict[str, Any], signature: str) -> Any:
    ledger = chain.contract("DeliveryLedger")
    as_tuple = tuple(manifest[n] for n, _ in MANIFEST_TYPES)
    return chain.transact(ledger.functions.anchor(as_tuple, HexBytes(signature)))


def _high_s_twin(signature: str) -> str:
    raw = bytes.fromhex(signature[2:])
    r, s, v = raw[:32], int.from_bytes(raw[32:64]), raw[64]
    flipped = 27 + 28 - v if v in (27, 28) else v ^ 1
    return "0x" + (r + (SECPK1_N - s).to_bytes(32) + bytes([flipped])).hex()


def test_manifest_signatures_do_not_travel(settings: Settings, db_session: Session) -> None:
    node = Account.create()
    chain, batch = _closed_batch(db_session, settings, node)
    ledger = chain.contract("DeliveryLedger")
    manifest = manifest_of(db_session, batch, b"\0" * 32)
    chain_id = chain.chain_id

    other_chain = sign_manifest(manifest, node, chain_id + 1, ledger.address)
    other_contract = sign_manifest(manifest, node, chain_id, Account.create().address)
    valid = sign_manifest(manifest, node, chain_id, ledger.address)
    for forged, expected in ((other_chain, "WrongSigner"), (other_contract, "WrongSigner")):
        with pytest.raises(ContractRevert) as refused:
            _anchor(chain, manifest, forged)
        assert refused.value.error == expected
    with pytest.raises(ContractRevert) as malleable:
        _anchor(chain, manifest, _high_s_twin(valid))
    assert malleable.value.error == "ECDSAInvalidSignatureS"  # OpenZeppelin ECDSA: low-s only

    _anchor(chain, manifest, valid)  # the genuine signature, once
    with pytest.raises(ContractRevert) as replayed:
        _anchor(chain, manifest, valid)
    assert replayed.value.error == "BatchAlreadyAnchored"
    assert chain.call(ledger.functions.isAnchored(bytes.fromhex(batch.batch_id[2:])))
