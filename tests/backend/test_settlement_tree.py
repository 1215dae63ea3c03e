"""Payout tree (ledger/payout_leaf.py) against the test vectors of docs/settlement-leaf.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edgeledger.ledger.hashing import FormatError
from edgeledger.ledger.payout_leaf import PayoutTree, encode_payout, payout_leaf, verify_payout
from edgeledger.ledger.vault import SettlementStatus

MERCHANT = "0x1111111111111111111111111111111111111111"
TOKEN = "0x2222222222222222222222222222222222222222"
PAYOUTS = {
    "0x3333333333333333333333333333333333333333": 1234567,
    "0x4444444444444444444444444444444444444444": 765433,
    "0x5555555555555555555555555555555555555555": 1,
}
LEAVES = {
    "0x3333333333333333333333333333333333333333": (
        "0x7fc6ec852a8f57ba8e410f9f945b530a4a971eeff7353df68c7f9d036f09a6cc"
    ),
    "0x4444444444444444444444444444444444444444": (
        "0xf2f1bdd51c686c9e533da0debf4e1e421d5fbc6a327d03565ced4fe38a089851"
    ),
    "0x5555555555555555555555555555555555555555": (
        "0x50142fa7ffd554d9c6ba24c7c6af47043ed05a26fbd799db00f65e9c2a7a37b5"
    ),
}
ROOT = "0x825e79a136499525efc4c125280f78dfcb5afa4b94fdaec9e22778e4ae24b34f"
PROOFS = {
    "0x3333333333333333333333333333333333333333": [
        "0x50142fa7ffd554d9c6ba24c7c6af47043ed05a26fbd799db00f65e9c2a7a37b5",
        "0xf2f1bdd51c686c9e533da0debf4e1e421d5fbc6a327d03565ced4fe38a089851",
    ],
    "0x4444444444444444444444444444444444444444": [
        "0xba4f68c3ed7061991799dc0b21496da7072f4b782b2a817d69b1eebb72c25b98"
    ],
    "0x5555555555555555555555555555555555555555": [
        "0x7fc6ec852a8f57ba8e410f9f945b530a4a971eeff7353df68c7f9d036f09a6cc",
        "0xf2f1bdd51c686c9e533da0debf4e1e421d5fbc6a327d03565ced4fe38a089851",
    ],
}


def test_leaves_root_and_proofs_match_the_documented_vectors() -> None:
    for payee, amount in PAYOUTS.items():
        assert "0x" + payout_leaf(42, MERCHANT, TOKEN, payee, amount).hex() == LEAVES[payee]
    tree = PayoutTree(42, MERCHANT, TOKEN, PAYOUTS)
    assert tree.root_hex == ROOT
    assert tree.total == 2000001
    for payee in PAYOUTS:
        proof = tree.proof(payee)
        assert ["0x" + p.hex() for p in proof.proof] == PROOFS[payee]
        assert verify_payout(tree.root, 42, MERCHANT, TOKEN, proof)


def test_tree_does_not_depend_on_order_or_spelling() -> None:
    reversed_upper = {p.upper().replace("0X", "0x"): a for p, a in reversed(PAYOUTS.items())}
    assert PayoutTree(42, MERCHANT, TOKEN, reversed_upper).root_hex == ROOT


def test_a_proof_for_another_amount_or_period_fails() -> None:
    tree = PayoutTree(42, MERCHANT, TOKEN, PAYOUTS)
    proof = tree.proof("0x4444444444444444444444444444444444444444")
    forged = type(proof)(payee=proof.payee, amount=proof.amount + 1, leaf=proof.leaf, proof=proof.proof)
    assert not verify_payout(tree.root, 42, MERCHANT, TOKEN, forged)
    assert not verify_payout(tree.root, 43, MERCHANT, TOKEN, proof)


@pytest.mark.parametrize(
    ("period", "payee", "amount", "code"),
    [
        (-1, "0x3333333333333333333333333333333333333333", 1, "period_invalid"),
        (1 << 64, "0x3333333333333333333333333333333333333333", 1, "period_invalid"),
        (1, "0x3333333333333333333333333333333333333333", 0, "amount_invalid"),
        (1, "0x3333333333333333333333333333333333333333", 1 << 128, "amount_invalid"),
        (1, "not-an-address", 1, "address_invalid"),
    ],
)
def test_bad_leaf_values_are_refused(period: int, payee: str, amount: int, code: str) -> None:
    with pytest.raises(FormatError) as err:
        encode_payout(period, MERCHANT, TOKEN, payee, amount)
    assert err.value.code == code


def test_unknown_payee_and_empty_tree_are_refused() -> None:
    with pytest.raises(FormatError) as err:
        PayoutTree(42, MERCHANT, TOKEN, {})
    assert err.value.code == "nothing_to_pay"
    with pytest.raises(FormatError) as err:
        PayoutTree(42, MERCHANT, TOKEN, PAYOUTS).proof("0x6666666666666666666666666666666666666666")
    assert err.value.code == "payee_unknown"


def test_the_shared_settlement_statuses_follow_the_contracts_enum() -> None:
    """``edgeledger.ledger.vault.SettlementStatus`` (read by the worker and the verifiers alike) lists
    the vault's ``SettlementStatus`` members in the contract's order."""
    source = (Path(__file__).resolve().parents[2] / "contracts" / "SettlementVault.sol").read_text()
    body = re.search(r"enum SettlementStatus \{(.*?)\}", source, re.S)
    assert body is not None
    members = [line.split("//")[0].strip().rstrip(",") for line in body.group(1).splitlines()]
    names = [m.upper() for m in members if m]
    assert names == [status.name for status in SettlementStatus]
    assert [status.value for status in SettlementStatus] == list(range(len(names)))
