"""The compliance event leaf (docs/compliance.md) against an independent eth_abi encoding, and a fixed
vector that the documentation quotes."""

from __future__ import annotations

import json

from eth_abi import encode
from eth_utils import keccak
from hypothesis import given
from hypothesis import strategies as st

from edgeledger.ledger.compliance_leaf import canonical_json, event_leaf

VECTOR_EVENT = {
    "event_id": bytes(range(32)),
    "occurred_at_ms": 1_763_683_200_000,
    "actor": "user:7:admin",
    "action": "erase",
    "subject": "data-subject:pseudonymous",
    "legal_basis": "GDPR Art. 17 request #42",
    "detail": {"records": 1, "reference": "#42"},
}
#: Quoted in docs/compliance.md.
DOC_VECTOR = "0x4e6f70ba7b3ef902d669fcd01a842af735efa48d634dc25d8fe11c6a7f0d4a8e"


def reference_leaf(event: dict) -> bytes:  # type: ignore[type-arg]
    words = encode(
        ["bytes32", "uint64", "bytes32", "bytes32", "bytes32", "bytes32", "bytes32"],
        [
            event["event_id"],
            event["occurred_at_ms"],
            keccak(text=event["actor"]),
            keccak(text=event["action"]),
            keccak(text=event["subject"]),
            keccak(text=event["legal_basis"]),
            keccak(
                text=json.dumps(event["detail"], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
            ),
        ],
    )
    return keccak(keccak(words))


def _leaf(event: dict) -> bytes:  # type: ignore[type-arg]
    return event_leaf(
        event["event_id"],
        event["occurred_at_ms"],
        event["actor"],
        event["action"],
        event["subject"],
        event["legal_basis"],
        event["detail"],
    )


def test_documented_vector() -> None:
    assert "0x" + _leaf(VECTOR_EVENT).hex() == DOC_VECTOR
    assert _leaf(VECTOR_EVENT) == reference_leaf(VECTOR_EVENT)


@given(
    event_id=st.binary(min_size=32, max_size=32),
    occurred=st.integers(min_value=0, max_value=2**64 - 1),
    texts=st.lists(st.text(max_size=80), min_size=4, max_size=4),
    detail=st.dictionaries(st.text(max_size=10), st.integers() | st.text(max_size=20), max_size=5),
)
def test_matches_eth_abi_on_random_events(
    event_id: bytes,
    occurred: int,
    texts: list[str],
    detail: dict,  # type: ignore[type-arg]
) -> None:
    event = {
        "event_id": event_id,
        "occurred_at_ms": occurred,
        "actor": texts[0],
        "action": texts[1],
        "subject": texts[2],
        "legal_basis": texts[3],
        "detail": detail,
    }
    assert _leaf(event) == reference_leaf(event)


def test_detail_is_hashed_in_canonical_form() -> None:
    assert canonical_json({"b": 1, "a": "é"}) == '{"a":"é","b":1}'
    reordered = {**VECTOR_EVENT, "detail": {"reference": "#42", "records": 1}}
    assert _leaf(reordered) == _leaf(VECTOR_EVENT)
