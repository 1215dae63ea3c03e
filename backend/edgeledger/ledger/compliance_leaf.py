"""Compliance event leaf (docs/compliance.md), the same construction as the delivery leaf:

    leaf = keccak256(keccak256(abi.encode(eventId, occurredAtMs, actor, action, subject, legalBasis, detail)))

``eventId`` is 32 random bytes; ``occurredAtMs`` a uint64; the other five are ``keccak256`` of the UTF-8
text the event document shows (``actor`` e.g. ``"user:7:auditor"``, ``detail`` the canonical JSON of the
event's details: sorted keys, no spaces). Every word is static, so ``abi.encode`` is seven 32-byte words.
Nothing personal goes into any of them: subjects name records, batches and ingests, never a client.
"""

from __future__ import annotations

import json
from typing import Any

from edgeledger.ledger.hashing import keccak256

EVENT_LEAF_FIELDS = ("eventId", "occurredAtMs", "actor", "action", "subject", "legalBasis", "detail")


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def text_hash(text: str) -> bytes:
    return keccak256(text.encode("utf-8"))


def event_leaf(
    event_id: bytes,
    occurred_at_ms: int,
    actor: str,
    action: str,
    subject: str,
    legal_basis: str,
    detail: dict[str, Any],
) -> bytes:
    if len(event_id) != 32:
        raise ValueError("event id must be 32 bytes")
    encoded = (
        event_id
        + occurred_at_ms.to_bytes(32)
        + text_hash(actor)
        + text_hash(action)
        + text_hash(subject)
        + text_hash(legal_basis)
        + text_hash(canonical_json(detail))
    )
    return keccak256(keccak256(encoded))
