"""Recompute a settlement from its published inputs and check it against the vault (no database needed).

A settlement's inputs document (``GET /settlement/settlements/{id}/inputs``) holds the exact
:class:`PayoutInputs` the statement was computed from: receipts (each naming its anchored batch), the
assets' on-chain terms, the rate card versions, the FX table, the recorded reconciliation decisions and
the platform address. Anyone can recompute the statement and the payout tree from it and compare the
root with the one the SettlementVault holds::

    edgeledger verify settlement inputs.json --rpc-url http://127.0.0.1:8545
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from eth_utils.address import to_checksum_address

from edgeledger.ledger.payout_leaf import PayoutTree
from edgeledger.settlement import SettlementError
from edgeledger.settlement.payouts import PayoutInputs, Statement, compute_payouts, inputs_digest
from edgeledger.verify.result import Check, UnusableInput
from edgeledger.verify.rpc import VaultSettlement


def recompute(document: Mapping[str, Any]) -> tuple[PayoutInputs, Statement, PayoutTree]:
    """The statement and payout tree the document's inputs give (UnusableInput when they give none)."""
    try:
        inputs = PayoutInputs.model_validate_json(json.dumps(document["inputs"]))
        period_id, merchant, token = int(document["period_id"]), document["merchant"], document["token"]
        statement = compute_payouts(inputs)
        return inputs, statement, PayoutTree(period_id, merchant, token, statement.payees)
    except (KeyError, TypeError, ValueError) as exc:  # pydantic's ValidationError and FormatError too
        raise UnusableInput(f"not a settlement inputs document: {exc}") from None
    except SettlementError as exc:
        raise UnusableInput(f"the inputs cannot be settled: {exc.message}") from None


def check_document(document: Mapping[str, Any], on_chain: VaultSettlement | None) -> list[Check]:
    """Checks of the document against itself and against the vault's ``settlementOf`` (None: not checked
    on chain)."""
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
        chain_root = "0x" + on_chain.root.hex()
        try:
            same_token = to_checksum_address(on_chain.token) == to_checksum_address(document["token"])
        except (ValueError, TypeError):
            same_token = False
        checks += [
            Check("posted in the vault", on_chain.status != 0, f"status {on_chain.status}"),
            Check("vault root", chain_root == tree.root_hex, f"vault holds {chain_root}"),
            Check("vault total", on_chain.total == tree.total, f"vault total {on_chain.total}"),
            Check("vault token", same_token, f"vault token {on_chain.token}"),
        ]
    return checks
