"""Recompute a settlement from its published inputs and check it against the vault (no database needed).

A settlement's inputs document (``GET /settlement/settlements/{id}/inputs``) holds the exact
:class:`PayoutInputs` the statement was computed from: receipts (each naming its anchored batch), the
assets' on-chain terms, the rate card versions, the FX table, the recorded reconciliation decisions and
the platform address. Anyone can recompute the statement and the payout tree from it and compare the
root with the one the SettlementVault holds::

    edgeledger settlement verify inputs.json --rpc-url http://127.0.0.1:8545
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils import to_checksum_address

from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import PayoutInputs, Statement, compute_payouts
from edgeledger.settlement.tree import PayoutTree

DOCUMENT_VERSION = 1


def canonical_inputs(inputs: PayoutInputs) -> bytes:
    """The inputs as canonical JSON (sorted keys, no spaces): what ``inputs_digest`` hashes."""
    return json.dumps(inputs.model_dump(mode="json"), sort_keys=True, separators=(",", ":")).encode()


def inputs_digest(inputs: PayoutInputs) -> str:
    return "0x" + hashlib.sha256(canonical_inputs(inputs)).hexdigest()


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


def recompute(document: Mapping[str, Any]) -> tuple[PayoutInputs, Statement, PayoutTree]:
    """The statement and payout tree the document's inputs give."""
    try:
        inputs = PayoutInputs.model_validate_json(json.dumps(document["inputs"]))
        period_id, merchant, token = int(document["period_id"]), document["merchant"], document["token"]
    except (KeyError, TypeError, ValueError) as exc:
        raise SettlementError(f"not a settlement inputs document: {exc}", code="document_invalid") from None
    statement = compute_payouts(inputs)
    return inputs, statement, PayoutTree(period_id, merchant, token, statement.payees)


def check_document(document: Mapping[str, Any], on_chain: tuple[Any, ...] | None) -> list[Check]:
    """Checks of the document against itself and against the vault's ``settlementOf`` tuple
    ``(root, token, claimsOpenAt, status, total, remaining)`` (None: not checked on chain)."""
    inputs, statement, tree = recompute(document)
    checks = [
        Check(
            "inputs digest",
            inputs_digest(inputs) == document.get("inputs_digest"),
            f"sha256 of the canonical inputs {inputs_digest(inputs)}",
        ),
        Check(
            "payouts sum to the charge",
            tree.total == statement.charge - sum(h.amount for h in statement.held_back),
            f"total {tree.total}",
        ),
        Check("root recomputed", tree.root_hex == document.get("root"), f"recomputed {tree.root_hex}"),
        Check("total recomputed", tree.total == document.get("total"), f"recomputed {tree.total}"),
    ]
    if on_chain is not None:
        root, token, _opens, status, total, _remaining = on_chain
        chain_root = "0x" + bytes(root).hex()
        checks += [
            Check("posted in the vault", int(status) != 0, f"status {int(status)}"),
            Check("vault root", chain_root == tree.root_hex, f"vault holds {chain_root}"),
            Check("vault total", int(total) == tree.total, f"vault total {int(total)}"),
            Check(
                "vault token",
                to_checksum_address(token) == to_checksum_address(document["token"]),
                f"vault token {token}",
            ),
        ]
    return checks


#: ``SettlementVault.settlementOf`` only: the verifier needs no build artifacts.
_SETTLEMENT_OF_ABI = [
    {
        "type": "function",
        "name": "settlementOf",
        "stateMutability": "view",
        "inputs": [{"name": "periodId", "type": "uint64"}, {"name": "merchant", "type": "address"}],
        "outputs": [
            {
                "name": "",
                "type": "tuple",
                "components": [
                    {"name": "root", "type": "bytes32"},
                    {"name": "token", "type": "address"},
                    {"name": "claimsOpenAt", "type": "uint40"},
                    {"name": "status", "type": "uint8"},
                    {"name": "total", "type": "uint128"},
                    {"name": "remaining", "type": "uint128"},
                ],
            }
        ],
    }
]


def vault_settlement(rpc_url: str, vault: str, period_id: int, merchant: str) -> tuple[Any, ...]:
    """``settlementOf(periodId, merchant)`` read from the vault at ``vault`` through ``rpc_url``."""
    from web3 import HTTPProvider, Web3

    w3 = Web3(HTTPProvider(rpc_url, request_kwargs={"timeout": 30}))
    contract = w3.eth.contract(address=to_checksum_address(vault), abi=_SETTLEMENT_OF_ABI)
    return tuple(contract.functions.settlementOf(period_id, to_checksum_address(merchant)).call())
