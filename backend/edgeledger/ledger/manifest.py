"""The EIP-712 batch manifest of ``DeliveryLedger`` (docs/delivery-leaf.md, "Manifest"): one definition
for signing (anchoring, the API's typed data for wallets) and for verifying (the chain-only verifiers).

    Manifest(bytes32 sourceId,bytes32 batchId,uint64 periodStart,uint64 periodEnd,bytes32 root,
             uint64 leafCount,uint128 totalBytes,uint64 totalRequests,bytes32 prevManifestHash,uint8 kind,
             bytes32 corrects)
    domain: name "EdgeLedger DeliveryLedger", version "1", chainId, verifyingContract

``struct_hash`` is ``hashStruct(Manifest)``, the hash a source's next manifest links to
(``prevManifestHash``) and the contract stores; ``digest`` is what the source's signer signs. Both are
computed here word by word (every field is static: one 32-byte word each); tests cross-check them against
``eth_account``'s EIP-712 encoder and the contract's ``manifestDigest``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address
from hexbytes import HexBytes

from edgeledger.ledger.hashing import FormatError, bytes32, hex32, keccak256

DOMAIN_NAME = "EdgeLedger DeliveryLedger"
DOMAIN_VERSION = "1"
#: (Solidity name, type) in struct order = the ABI tuple's order.
MANIFEST_FIELDS: tuple[tuple[str, str], ...] = (
    ("sourceId", "bytes32"),
    ("batchId", "bytes32"),
    ("periodStart", "uint64"),
    ("periodEnd", "uint64"),
    ("root", "bytes32"),
    ("leafCount", "uint64"),
    ("totalBytes", "uint128"),
    ("totalRequests", "uint64"),
    ("prevManifestHash", "bytes32"),
    ("kind", "uint8"),
    ("corrects", "bytes32"),
)
EIP712_DOMAIN_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
)
MANIFEST_TYPE = "Manifest(" + ",".join(f"{t} {n}" for n, t in MANIFEST_FIELDS) + ")"
MANIFEST_TYPEHASH = keccak256(MANIFEST_TYPE.encode())
_DOMAIN_TYPEHASH = keccak256(
    ("EIP712Domain(" + ",".join(f"{t} {n}" for n, t in EIP712_DOMAIN_FIELDS) + ")").encode()
)


def domain_separator(chain_id: int, contract: str) -> bytes:
    """EIP-712 ``domainSeparator`` of the DeliveryLedger at ``contract`` on ``chain_id``."""
    return keccak256(
        _DOMAIN_TYPEHASH
        + keccak256(DOMAIN_NAME.encode())
        + keccak256(DOMAIN_VERSION.encode())
        + chain_id.to_bytes(32)
        + bytes.fromhex(contract.removeprefix("0x")).rjust(32, b"\0")
    )


@dataclass(frozen=True)
class Manifest:
    """``DeliveryLedger.Manifest``; bytes32 fields as ``0x``-hex strings, the others as ints."""

    source_id: str
    batch_id: str
    period_start: int
    period_end: int
    root: str
    leaf_count: int
    total_bytes: int
    total_requests: int
    prev_manifest_hash: str
    kind: int
    corrects: str

    @classmethod
    def from_message(cls, message: Mapping[str, Any]) -> Manifest:
        """A manifest from its EIP-712 message (Solidity field names; bytes32 as 0x-hex, the others as
        JSON integers), as exports and audit packages carry it. FormatError naming the field otherwise."""
        values: list[Any] = []
        for name, type_ in MANIFEST_FIELDS:
            if not isinstance(message, Mapping) or name not in message:
                raise FormatError(f"the manifest has no {name!r}", code="manifest_invalid")
            value = message[name]
            if type_ == "bytes32":
                try:
                    values.append(hex32(bytes32(value)))
                except (TypeError, ValueError, AttributeError):
                    raise FormatError(
                        f"manifest.{name} must be 0x-hex of 32 bytes, got {value!r}", code="manifest_invalid"
                    ) from None
            else:
                bits = int(type_[4:])
                if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
                    raise FormatError(
                        f"manifest.{name} must be an integer in [0, 2**{bits}), got {value!r}",
                        code="manifest_invalid",
                    )
                values.append(value)
        return cls(*values)

    def values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, f.name) for f in fields(self))

    def message(self) -> dict[str, Any]:
        """The EIP-712 message (field names as in Solidity)."""
        return dict(zip([name for name, _ in MANIFEST_FIELDS], self.values(), strict=True))

    def as_tuple(self) -> tuple[Any, ...]:
        """The ABI tuple for ``anchor`` / ``manifestDigest`` (bytes32 as bytes)."""
        return tuple(
            bytes32(v) if t == "bytes32" else v
            for v, (_, t) in zip(self.values(), MANIFEST_FIELDS, strict=True)
        )

    def struct_hash_bytes(self) -> bytes:
        """``hashStruct(Manifest)``: the type hash and one 32-byte word per field."""
        words = [
            bytes32(v) if t == "bytes32" else int(v).to_bytes(32)
            for v, (_, t) in zip(self.values(), MANIFEST_FIELDS, strict=True)
        ]
        return keccak256(MANIFEST_TYPEHASH + b"".join(words))

    def struct_hash(self) -> str:
        """``hashStruct(Manifest)`` as 0x-hex: the manifest hash the chain links on."""
        return hex32(self.struct_hash_bytes())

    def digest_bytes(self, chain_id: int, contract: str) -> bytes:
        """The EIP-712 digest the source's signer signs (``manifestDigest`` on chain)."""
        return keccak256(b"\x19\x01" + domain_separator(chain_id, contract) + self.struct_hash_bytes())

    def digest(self, chain_id: int, contract: str) -> str:
        return hex32(self.digest_bytes(chain_id, contract))

    def typed_data(self, chain_id: int, contract: str) -> dict[str, Any]:
        """The full EIP-712 typed data (``eth_signTypedData_v4``), for wallets that sign manifests."""
        return {
            "types": {
                "EIP712Domain": [{"name": n, "type": t} for n, t in EIP712_DOMAIN_FIELDS],
                "Manifest": [{"name": n, "type": t} for n, t in MANIFEST_FIELDS],
            },
            "primaryType": "Manifest",
            "domain": {
                "name": DOMAIN_NAME,
                "version": DOMAIN_VERSION,
                "chainId": chain_id,
                "verifyingContract": to_checksum_address(contract),
            },
            "message": self.message(),
        }

    def sign(self, private_key: str, chain_id: int, contract: str) -> str:
        signed = Account.sign_typed_data(private_key, full_message=self.typed_data(chain_id, contract))
        return "0x" + bytes(signed.signature).hex()

    def recover(self, signature: str, chain_id: int, contract: str) -> str:
        """The address whose key made ``signature`` over this manifest (checksummed)."""
        signable = encode_typed_data(full_message=self.typed_data(chain_id, contract))
        return str(Account.recover_message(signable, signature=HexBytes(signature)))
