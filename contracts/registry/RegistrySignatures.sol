// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title RegistrySignatures
/// @notice The EIP-712 messages of {ContentRegistry} (domain: name "EdgeLedger ContentRegistry", version
/// "1"): the `Registration` (one asset) or `Catalogue` (up to 100) a creator signs so the platform's
/// registrar may register exactly that for it, and the `LicenceUpdate` / `SplitUpdate` a rights holder
/// signs for a relayed, gas-free update. One per-signer nonce ({Nonces}) is shared by the four. Signatures are ECDSA, or ERC-1271 for contract
/// wallets ({SignatureChecker}). The server, the tests and the verifiers build the same typed data from
/// `edgeledger.ledger.registration`.
abstract contract RegistrySignatures is EIP712, Nonces {
    /// @notice EIP-712 type of the licence inside the signed messages.
    bytes32 public constant LICENCE_TYPEHASH =
        keccak256("Licence(uint256 territories,uint64 validFrom,uint64 validUntil,uint16 royaltyBps,string termsCid)");
    /// @notice EIP-712 type a creator signs to let the registrar register for it ({registerFor}).
    bytes32 public constant REGISTRATION_TYPEHASH = keccak256(
        "Registration(bytes32 contentHash,string contentCid,string metadataCid,address creator,uint256 parentId,"
        "bool aigc,Licence licence,address[] recipients,uint16[] shares,uint8 importProfile,uint256 nonce,"
        "uint256 deadline)"
        "Licence(uint256 territories,uint64 validFrom,uint64 validUntil,uint16 royaltyBps,string termsCid)"
    );
    /// @notice EIP-712 type a creator signs to let the registrar register a catalogue for it
    /// ({registerBatchFor}); `items` is encoded as EIP-712 encodes an array of structs.
    bytes32 public constant CATALOGUE_TYPEHASH = keccak256(
        "Catalogue(address creator,CatalogueItem[] items,Licence licence,address[] recipients,uint16[] shares,"
        "uint256 nonce,uint256 deadline)"
        "CatalogueItem(bytes32 contentHash,string contentCid,string metadataCid,uint256 parentId,bool aigc,"
        "uint8 importProfile)"
        "Licence(uint256 territories,uint64 validFrom,uint64 validUntil,uint16 royaltyBps,string termsCid)"
    );
    /// @notice EIP-712 type of one asset inside a signed `Catalogue`.
    bytes32 public constant CATALOGUE_ITEM_TYPEHASH = keccak256(
        "CatalogueItem(bytes32 contentHash,string contentCid,string metadataCid,uint256 parentId,bool aigc,"
        "uint8 importProfile)"
    );
    /// @notice EIP-712 type a rights holder signs for a relayed licence update ({updateLicenceFor}).
    bytes32 public constant LICENCE_UPDATE_TYPEHASH = keccak256(
        "LicenceUpdate(uint256 assetId,Licence licence,uint256 nonce,uint256 deadline)"
        "Licence(uint256 territories,uint64 validFrom,uint64 validUntil,uint16 royaltyBps,string termsCid)"
    );
    /// @notice EIP-712 type a rights holder signs for a relayed split update ({updateSplitFor}).
    bytes32 public constant SPLIT_UPDATE_TYPEHASH =
        keccak256("SplitUpdate(uint256 assetId,address[] recipients,uint16[] shares,uint256 nonce,uint256 deadline)");

    struct Licence {
        uint256 territories; // bitmap over the territory table
        uint64 validFrom; // unix seconds
        uint64 validUntil; // unix seconds, 0 = open-ended
        uint16 royaltyBps; // EIP-2981 royalty on secondary sales of the token
        string termsCid; // IPFS CID of the licence terms
    }

    struct Registration {
        bytes32 contentHash; // sha-256 of the content bytes
        string contentCid; // IPFS CID of the content bytes
        string metadataCid; // IPFS CID of the metadata JSON (tokenURI)
        address creator; // receives the token
        uint256 parentId; // 0 = original work
        bool aigc; // generated or altered by AI
        Licence licence;
        address[] recipients;
        uint16[] shares;
        uint8 importProfile; // how the CIDs were cut (`ContentRegistry.IMPORT_PROFILE_COUNT`)
    }

    /// @notice One asset of a catalogue registered in one transaction ({registerBatch}, {registerBatchFor}).
    struct CatalogueItem {
        bytes32 contentHash; // sha-256 of the content bytes
        string contentCid; // IPFS CID of the content bytes
        string metadataCid; // IPFS CID of the metadata JSON (tokenURI)
        uint256 parentId; // 0 = original work; may name an earlier item of the same catalogue
        bool aigc; // generated or altered by AI
        uint8 importProfile; // how the CIDs were cut (`ContentRegistry.IMPORT_PROFILE_COUNT`)
    }

    error SignatureExpired(uint256 deadline);
    error InvalidSignature(address signer);

    constructor() EIP712("EdgeLedger ContentRegistry", "1") {}

    /// @notice The EIP-712 digest a creator signs for {registerFor}.
    function registrationDigest(Registration calldata r, uint256 nonce, uint256 deadline)
        external
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(_registrationStructHash(r, nonce, deadline));
    }

    /// @notice The EIP-712 domain separator (name "EdgeLedger ContentRegistry", version "1").
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    /// @dev Reverts unless `signer` signed the EIP-712 struct `structHash` in this domain, before `deadline`.
    function _requireSigned(address signer, bytes32 structHash, uint256 deadline, bytes calldata signature)
        internal
        view
    {
        if (block.timestamp > deadline) revert SignatureExpired(deadline);
        if (!SignatureChecker.isValidSignatureNow(signer, _hashTypedDataV4(structHash), signature)) {
            revert InvalidSignature(signer);
        }
    }

    function _licenceHash(Licence calldata licence) internal pure returns (bytes32) {
        return keccak256(
            abi.encode(
                LICENCE_TYPEHASH,
                licence.territories,
                licence.validFrom,
                licence.validUntil,
                licence.royaltyBps,
                keccak256(bytes(licence.termsCid))
            )
        );
    }

    function _registrationStructHash(Registration calldata r, uint256 nonce, uint256 deadline)
        internal
        pure
        returns (bytes32)
    {
        // Two halves of the flat EIP-712 encoding (every member is one 32-byte word), to stay in the stack.
        bytes memory head = abi.encode(
            REGISTRATION_TYPEHASH,
            r.contentHash,
            keccak256(bytes(r.contentCid)),
            keccak256(bytes(r.metadataCid)),
            r.creator,
            r.parentId,
            r.aigc
        );
        bytes memory tail = abi.encode(
            _licenceHash(r.licence),
            keccak256(abi.encodePacked(r.recipients)),
            keccak256(abi.encodePacked(r.shares)),
            r.importProfile,
            nonce,
            deadline
        );
        return keccak256(bytes.concat(head, tail));
    }

    /// @dev The struct hash of `creator`'s `Catalogue` message, spending the creator's next nonce.
    function _useCatalogueStructHash(
        address creator,
        CatalogueItem[] calldata items,
        Licence calldata licence,
        address[] calldata recipients,
        uint16[] calldata shares,
        uint256 deadline
    ) internal returns (bytes32) {
        // Two halves of the flat EIP-712 encoding (every member is one 32-byte word), to stay in the stack.
        bytes memory head =
            abi.encode(CATALOGUE_TYPEHASH, creator, _catalogueItemsHash(items), _licenceHash(licence));
        bytes memory tail = abi.encode(
            keccak256(abi.encodePacked(recipients)),
            keccak256(abi.encodePacked(shares)),
            _useNonce(creator),
            deadline
        );
        return keccak256(bytes.concat(head, tail));
    }

    /// @dev EIP-712's encoding of a `CatalogueItem[]`: keccak256 of the items' struct hashes, in order.
    function _catalogueItemsHash(CatalogueItem[] calldata items) internal pure returns (bytes32) {
        bytes32[] memory hashes = new bytes32[](items.length);
        for (uint256 i; i < items.length; ++i) {
            CatalogueItem calldata item = items[i];
            hashes[i] = keccak256(
                abi.encode(
                    CATALOGUE_ITEM_TYPEHASH,
                    item.contentHash,
                    keccak256(bytes(item.contentCid)),
                    keccak256(bytes(item.metadataCid)),
                    item.parentId,
                    item.aigc,
                    item.importProfile
                )
            );
        }
        return keccak256(abi.encodePacked(hashes));
    }
}
