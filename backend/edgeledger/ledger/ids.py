"""Ids and small encodings that go on chain, derived, never random, so a retried step computes the same
id again (docs/delivery-leaf.md):

* ``source_id  = keccak256("edgeledger:source:" + name)``
* ``batch_id   = keccak256(abi.encode(sourceId, periodStart, periodEnd, kind, correctionSeq))``
  (bytes32, uint64, uint64, uint8, uint32)
* ``merchantId = keccak256(lower-case request host)``, ``requestId = keccak256(request id as logged)``
* ``clientCommitment = keccak256(salt || pseudonym)``
"""

from __future__ import annotations

from edgeledger.ledger.hashing import bytes32, hex32, keccak256

#: The manifest's ``kind``: a period's regular batch, or a correction batch of late records.
BATCH_KIND_CODES: dict[str, int] = {"regular": 0, "correction": 1}


def source_id_for(name: str) -> str:
    return hex32(keccak256(b"edgeledger:source:" + name.encode("utf-8")))


def batch_id_for(source_id: str, period_start: int, period_end: int, kind: str, correction_seq: int) -> str:
    encoded = (
        bytes32(source_id)
        + period_start.to_bytes(32)
        + period_end.to_bytes(32)
        + BATCH_KIND_CODES[kind].to_bytes(32)
        + correction_seq.to_bytes(32)
    )
    return hex32(keccak256(encoded))


def merchant_id_for(host: str) -> bytes:
    return keccak256(host.lower().encode("utf-8"))


def request_key(request_id: str) -> bytes:
    return keccak256(request_id.encode("utf-8"))


def client_commitment(salt: bytes, pseudonym: bytes) -> bytes:
    return keccak256(salt + pseudonym)


def edge_location_bytes(edge_location: str) -> bytes:
    return edge_location.encode("ascii").ljust(16, b"\0")


def country_bytes(country: str) -> bytes:
    return country.encode("ascii") if country else b"\0\0"
