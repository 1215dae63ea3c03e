"""The signed messages and the commitment of ``ContentRegistry`` (docs/registration.md): one definition
for the API (the typed data a creator's wallet signs), the tests and the verifiers.

    Registration(bytes32 contentHash,string contentCid,string metadataCid,address creator,
                 uint256 parentId,bool aigc,Licence licence,address[] recipients,uint16[] shares,
                 uint8 importProfile,uint256 nonce,uint256 deadline)
    Catalogue(address creator,CatalogueItem[] items,Licence licence,address[] recipients,uint16[] shares,
              uint256 nonce,uint256 deadline)
    CatalogueItem(bytes32 contentHash,string contentCid,string metadataCid,uint256 parentId,bool aigc,
                  uint8 importProfile)
    LicenceUpdate(uint256 assetId,Licence licence,uint256 nonce,uint256 deadline)
    SplitUpdate(uint256 assetId,address[] recipients,uint16[] shares,uint256 nonce,uint256 deadline)
    Licence(uint256 territories,uint64 validFrom,uint64 validUntil,uint16 royaltyBps,string termsCid)
    domain: name "EdgeLedger ContentRegistry", version "1", chainId, verifyingContract

A creator signs ``Registration`` to let the platform's registrar register exactly that content, with
exactly those terms, for it (``registerFor``), or ``Catalogue`` for up to 100 assets under one licence and
split in one transaction (``registerBatchFor``); a rights holder signs ``LicenceUpdate`` / ``SplitUpdate``
for a relayed, gas-free update (``updateLicenceFor`` / ``updateSplitFor``). ``nonce`` is the signer's
``ContentRegistry.nonces(address)``, shared by the four messages. A creator registering from its own
wallet instead commits to :func:`commitment` and reveals it a block later (``registerAsset``).

``importProfile`` is the IPFS import profile both CIDs were cut with, as its index in
:data:`IMPORT_PROFILES` (append-only; the registry rejects an index past its end): with it on chain a
verifier knows how to recompute the content CID from the file, and whoever pins the content again gets
the same CID.

Messages are plain dicts in the ABI's field order (:data:`REGISTRATION_FIELDS`), so the same values build
the contract call's tuple (:func:`registration_tuple`) and the typed data: what is signed is what is sent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils.address import to_checksum_address

from edgeledger.ledger.hashing import bytes32, keccak256

#: IPFS import profiles by their on-chain code (``ContentRegistry.IMPORT_PROFILE_COUNT``; append-only).
#: The names are ``edgeledger.ipfs.cid.PROFILES``' keys.
IMPORT_PROFILES: tuple[str, ...] = ("legacy-cidv1", "unixfs-v1-2025")

DOMAIN_NAME = "EdgeLedger ContentRegistry"
DOMAIN_VERSION = "1"

EIP712_DOMAIN_FIELDS: tuple[tuple[str, str], ...] = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
)
LICENCE_FIELDS: tuple[tuple[str, str], ...] = (
    ("territories", "uint256"),
    ("validFrom", "uint64"),
    ("validUntil", "uint64"),
    ("royaltyBps", "uint16"),
    ("termsCid", "string"),
)
#: (Solidity name, type) in struct order = the ABI tuple's order (``ContentRegistry.Registration``).
REGISTRATION_FIELDS: tuple[tuple[str, str], ...] = (
    ("contentHash", "bytes32"),
    ("contentCid", "string"),
    ("metadataCid", "string"),
    ("creator", "address"),
    ("parentId", "uint256"),
    ("aigc", "bool"),
    ("licence", "Licence"),
    ("recipients", "address[]"),
    ("shares", "uint16[]"),
    ("importProfile", "uint8"),
)
SIGNED_FIELDS: tuple[tuple[str, str], ...] = (("nonce", "uint256"), ("deadline", "uint256"))
#: ``CatalogueItem`` in struct order = the ABI tuple's order (``registerBatch`` / ``registerBatchFor`` items).
CATALOGUE_ITEM_FIELDS: tuple[tuple[str, str], ...] = (
    ("contentHash", "bytes32"),
    ("contentCid", "string"),
    ("metadataCid", "string"),
    ("parentId", "uint256"),
    ("aigc", "bool"),
    ("importProfile", "uint8"),
)
CATALOGUE_FIELDS: tuple[tuple[str, str], ...] = (
    ("creator", "address"),
    ("items", "CatalogueItem[]"),
    ("licence", "Licence"),
    ("recipients", "address[]"),
    ("shares", "uint16[]"),
)
LICENCE_UPDATE_FIELDS: tuple[tuple[str, str], ...] = (("assetId", "uint256"), ("licence", "Licence"))
SPLIT_UPDATE_FIELDS: tuple[tuple[str, str], ...] = (
    ("assetId", "uint256"),
    ("recipients", "address[]"),
    ("shares", "uint16[]"),
)


def import_profile_code(name: str) -> int:
    """The on-chain code of an import profile (:data:`IMPORT_PROFILES`); ``ValueError`` for another name."""
    try:
        return IMPORT_PROFILES.index(name)
    except ValueError:
        raise ValueError(
            f"unknown IPFS import profile {name!r}: one of {', '.join(IMPORT_PROFILES)}"
        ) from None


def import_profile_name(code: int) -> str:
    """The name of an on-chain import profile code; ``ValueError`` for a code the registry would refuse."""
    if not 0 <= code < len(IMPORT_PROFILES):
        raise ValueError(f"unknown import profile code {code}")
    return IMPORT_PROFILES[code]


def _word(value: bytes | str) -> bytes:
    """32 bytes from bytes (HexBytes included) or ``0x`` hex."""
    if isinstance(value, str):
        return bytes32(value)
    if len(value) != 32:
        raise ValueError(f"expected 32 bytes, got {len(value)}")
    return bytes(value)


def _fields(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": name, "type": kind} for name, kind in pairs]


def _domain(chain_id: int, contract: str) -> dict[str, Any]:
    return {
        "name": DOMAIN_NAME,
        "version": DOMAIN_VERSION,
        "chainId": chain_id,
        "verifyingContract": to_checksum_address(contract),
    }


def licence_message(licence: Mapping[str, Any] | Sequence[Any]) -> dict[str, Any]:
    """A licence as the typed-data member (from a dict with the Solidity names, or the ABI tuple)."""
    values = [licence[name] for name, _ in LICENCE_FIELDS] if isinstance(licence, Mapping) else list(licence)
    territories, valid_from, valid_until, royalty_bps, terms_cid = values
    return {
        "territories": int(territories),
        "validFrom": int(valid_from),
        "validUntil": int(valid_until),
        "royaltyBps": int(royalty_bps),
        "termsCid": str(terms_cid),
    }


def _split_members(recipients: Sequence[str], shares: Sequence[int]) -> dict[str, list[Any]]:
    """The ``recipients`` and ``shares`` members of a message (checksummed addresses, integer shares)."""
    return {"recipients": [to_checksum_address(r) for r in recipients], "shares": [int(s) for s in shares]}


def registration_message(registration: Sequence[Any]) -> dict[str, Any]:
    """The ``Registration`` members (without nonce and deadline) from the contract call's tuple."""
    (
        content_hash,
        content_cid,
        metadata_cid,
        creator,
        parent_id,
        aigc,
        licence,
        recipients,
        shares,
        import_profile,
    ) = registration
    return {
        "contentHash": _word(content_hash),
        "contentCid": str(content_cid),
        "metadataCid": str(metadata_cid),
        "creator": to_checksum_address(creator),
        "parentId": int(parent_id),
        "aigc": bool(aigc),
        "licence": licence_message(licence),
        **_split_members(recipients, shares),
        "importProfile": int(import_profile),
    }


def registration_tuple(message: Mapping[str, Any]) -> tuple[Any, ...]:
    """The contract call's ``Registration`` tuple from a :func:`registration_message` dict."""
    licence = message["licence"]
    return (
        _word(message["contentHash"]),
        message["contentCid"],
        message["metadataCid"],
        to_checksum_address(message["creator"]),
        int(message["parentId"]),
        bool(message["aigc"]),
        tuple(licence[name] for name, _ in LICENCE_FIELDS),
        [to_checksum_address(r) for r in message["recipients"]],
        [int(s) for s in message["shares"]],
        int(message["importProfile"]),
    )


def _typed_data(
    primary: str,
    fields: tuple[tuple[str, str], ...],
    message: dict[str, Any],
    *,
    nonce: int,
    deadline: int,
    chain_id: int,
    contract: str,
) -> dict[str, Any]:
    """Typed data of one of the four messages: its fields, then the signer's nonce and the deadline;
    the ``Licence`` type is declared when the message holds one."""
    types = {"EIP712Domain": _fields(EIP712_DOMAIN_FIELDS), primary: _fields(fields + SIGNED_FIELDS)}
    if "licence" in message:
        types["Licence"] = _fields(LICENCE_FIELDS)
    return {
        "types": types,
        "primaryType": primary,
        "domain": _domain(chain_id, contract),
        "message": {**message, "nonce": int(nonce), "deadline": int(deadline)},
    }


def registration_typed_data(
    registration: Sequence[Any], *, nonce: int, deadline: int, chain_id: int, contract: str
) -> dict[str, Any]:
    """The full EIP-712 typed data (``eth_signTypedData_v4``) a creator signs for ``registerFor``."""
    message = registration_message(registration)
    message["contentHash"] = "0x" + message["contentHash"].hex()
    return _typed_data(
        "Registration",
        REGISTRATION_FIELDS,
        message,
        nonce=nonce,
        deadline=deadline,
        chain_id=chain_id,
        contract=contract,
    )


def catalogue_typed_data(
    creator: str,
    items: Sequence[Sequence[Any]],
    licence: Mapping[str, Any] | Sequence[Any],
    recipients: Sequence[str],
    shares: Sequence[int],
    *,
    nonce: int,
    deadline: int,
    chain_id: int,
    contract: str,
) -> dict[str, Any]:
    """The typed data a creator signs for ``registerBatchFor``: the catalogue's items (ABI tuples in
    :data:`CATALOGUE_ITEM_FIELDS` order), its licence and split, for ``creator``."""
    message = {
        "creator": to_checksum_address(creator),
        "items": [
            {
                "contentHash": "0x" + _word(content_hash).hex(),
                "contentCid": str(content_cid),
                "metadataCid": str(metadata_cid),
                "parentId": int(parent_id),
                "aigc": bool(aigc),
                "importProfile": int(import_profile),
            }
            for content_hash, content_cid, metadata_cid, parent_id, aigc, import_profile in items
        ],
        "licence": licence_message(licence),
        **_split_members(recipients, shares),
    }
    typed = _typed_data(
        "Catalogue",
        CATALOGUE_FIELDS,
        message,
        nonce=nonce,
        deadline=deadline,
        chain_id=chain_id,
        contract=contract,
    )
    typed["types"]["CatalogueItem"] = _fields(CATALOGUE_ITEM_FIELDS)
    return typed


def licence_update_typed_data(
    asset_id: int,
    licence: Mapping[str, Any] | Sequence[Any],
    *,
    nonce: int,
    deadline: int,
    chain_id: int,
    contract: str,
) -> dict[str, Any]:
    """The typed data a rights holder signs for ``updateLicenceFor``."""
    message = {"assetId": int(asset_id), "licence": licence_message(licence)}
    return _typed_data(
        "LicenceUpdate",
        LICENCE_UPDATE_FIELDS,
        message,
        nonce=nonce,
        deadline=deadline,
        chain_id=chain_id,
        contract=contract,
    )


def split_update_typed_data(
    asset_id: int,
    recipients: Sequence[str],
    shares: Sequence[int],
    *,
    nonce: int,
    deadline: int,
    chain_id: int,
    contract: str,
) -> dict[str, Any]:
    """The typed data a rights holder signs for ``updateSplitFor``."""
    message = {
        "assetId": int(asset_id),
        **_split_members(recipients, shares),
    }
    return _typed_data(
        "SplitUpdate",
        SPLIT_UPDATE_FIELDS,
        message,
        nonce=nonce,
        deadline=deadline,
        chain_id=chain_id,
        contract=contract,
    )


def digest(typed_data: Mapping[str, Any]) -> bytes:
    """keccak256(0x1901 ‖ domainSeparator ‖ hashStruct(message)) of any of the typed data above."""
    signable = encode_typed_data(full_message=dict(typed_data))
    return keccak256(b"\x19" + signable.version + signable.header + signable.body)


def commitment(content_hash: bytes | str, creator: str, salt: bytes | str) -> bytes:
    """``registrationCommitment``: keccak256(abi.encode(contentHash, creator, salt))."""
    creator_word = bytes(12) + bytes.fromhex(to_checksum_address(creator)[2:])
    return keccak256(_word(content_hash) + creator_word + _word(salt))


def sign(typed_data: Mapping[str, Any], private_key: bytes | str) -> str:
    """``0x`` + the 65-byte ECDSA signature (r ‖ s ‖ v) of any of the typed data above, as a wallet's
    ``eth_signTypedData_v4`` gives it (the CLI and the demo sign with a creator's key file this way)."""
    signed = Account.sign_message(encode_typed_data(full_message=dict(typed_data)), private_key)
    return "0x" + bytes(signed.signature).hex()
