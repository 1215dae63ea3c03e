// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";
import {IERC2981} from "@openzeppelin/contracts/interfaces/IERC2981.sol";
import {IERC165} from "@openzeppelin/contracts/utils/introspection/IERC165.sol";
import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC2309} from "@openzeppelin/contracts/interfaces/IERC2309.sol";
import {CidCodec} from "./registry/CidCodec.sol";
import {RegistrySignatures} from "./registry/RegistrySignatures.sol";

/// @title ContentRegistry
/// @notice Provenance of digital content: who registered which bytes, under which licence, how revenue
/// is split among the rights holders, and which asset a derivative came from. Each asset is an ERC-721
/// token; whoever holds the token is the rights holder and alone may change licence and split (moving the
/// token resets the split to the new holder).
/// @dev Territories are a bitmap over the ISO 3166-1 alpha-2 table documented in docs/territories.md
/// (bit i = i-th code in alphabetical order; append-only). Revenue shares are basis points summing to
/// exactly 10,000. Asset ids start at 1, so 0 means "no parent".
///
/// Storage is kept small and flat in the split's size (docs/registration.md, "What a registration
/// stores"): CIDs are kept as their codec and 32-byte digest ({CidCodec}; the text is rebuilt when read),
/// licence fields are packed, and the split is committed as `keccak256(abi.encode(recipients, shares))`
/// ({splitHashOf}, {splitKeyOf}) with the full split in calldata and `SplitUpdated` events, as 0xSplits:
/// settlement reads the split from the events at its recorded block and checks it against the hash.
/// Each registration records the IPFS import profile its CIDs were cut with ({importProfileOf}), in the
/// packed word, so a verifier recomputes the content CID from the file the way it was registered.
/// A catalogue of up to {MAX_BATCH} assets registers in one transaction ({registerBatch}): each its own
/// token, minted ERC721A-style (one ownership word per registration, an ERC-2309 `ConsecutiveTransfer`),
/// with one licence and split stored once and copied to an asset when it changes its own.
///
/// Registration cannot be stolen from the mempool (docs/registration.md):
/// * a creator registering from its own wallet commits first ({commitRegistration}: a hash of content
///   hash, creator and a secret salt) and reveals at least one block later ({registerAsset}): a copy of
///   the reveal names the copier's own address, whose commitment cannot predate the reveal it copied;
/// * the platform's registrar registers for a creator only with the creator's EIP-712 `Registration`
///   (or, for a catalogue, `Catalogue`) signature over the whole registration, a per-creator nonce and a
///   deadline ({registerFor}, {registerBatchFor}; ECDSA or ERC-1271 for contract wallets), so neither the
///   registrar key nor a copier can register anything the creator did not sign, for anyone else.
/// Licence and split updates may be relayed gas-free with the rights holder's EIP-712 signature
/// ({updateLicenceFor}, {updateSplitFor}). Domain: name "EdgeLedger ContentRegistry", version "1".
///
/// The arbiter can freeze an asset's revenue at once (dispute, takedown) but move its rights only after
/// the asset has been contested for {REASSIGN_DELAY} seconds ({reassignRights}): a stolen arbiter key
/// is seen on chain (`AssetStatusChanged`) that long before it can redirect any revenue, longer than the
/// admin's timelock needs to revoke it (docs/custody.md).
contract ContentRegistry is ERC721, AccessControl, IERC2981, IERC2309, RegistrySignatures {
    /// @notice May register assets on behalf of a creator (the platform's server signer).
    bytes32 public constant REGISTRAR_ROLE = keccak256("REGISTRAR_ROLE");
    /// @notice May mark assets disputed or taken down, clear them, and reassign rights (notice-and-takedown).
    bytes32 public constant ARBITER_ROLE = keccak256("ARBITER_ROLE");

    uint16 public constant TOTAL_BPS = 10_000;
    uint256 public constant MAX_RECIPIENTS = 50;
    /// @notice Number of IPFS import profiles a CID may be cut with (0: `legacy-cidv1`, 256 KiB chunks and
    /// 174 links; 1: IPIP-499 `unixfs-v1-2025`, 1 MiB and 1,024 links; append-only, docs/registration.md).
    uint8 public constant IMPORT_PROFILE_COUNT = 2;
    /// @notice Number of codes in the territory table; bits at or above it must be zero.
    uint256 public constant TERRITORY_COUNT = 249;
    /// @notice Seconds an asset must have been contested (disputed or taken down, without being cleared)
    /// before the arbiter may reassign its rights. Set at deployment, longer than the admin timelock's delay.
    uint256 public immutable REASSIGN_DELAY;

    enum Status { Active, Disputed, TakenDown }

    struct Asset {
        bytes32 contentHash;
        address creator;
        uint64 registeredAt;
        Status status;
        bool aigc;
        uint64 registeredBlock;
        uint256 parentId;
        string contentCid;
        string metadataCid;
        string statusReasonCid;
    }

    /// @notice What settlement prices an asset's deliveries with, as of the block a call is made at
    /// (`settlementTerms`). `exists` is false for an id never registered (every other field is then zero).
    /// The split itself is in the asset's latest `SplitUpdated` event; `splitHash` commits to it.
    struct Terms {
        bool exists;
        Status status;
        address holder;
        uint256 parentId;
        uint256 territories;
        uint64 validFrom;
        uint64 validUntil;
        bytes32 splitHash;
        uint256 splitKey; // the asset id whose SplitUpdated events hold the split's preimage
    }

    /// @dev What the registry stores per asset: 4 words (one more for a derivative's parent), whatever
    /// the split's size; the registration's creator and time and the asset's terms live in records shared
    /// by every asset of a catalogue ({Origin}, {TermsRecord}).
    struct Record {
        bytes32 contentHash;
        // word 1
        Status status;
        bool aigc;
        uint8 contentCodec;
        uint8 metadataCodec;
        uint8 importProfile;
        uint64 origin; // key of `_origins`: the first asset id of its transaction
        uint64 termsId; // key of `_termsRecords`
        bytes32 contentDigest;
        bytes32 metadataDigest;
        uint256 parentId; // written only for a derivative
        string statusReasonCid; // written by the arbiter
    }

    /// @dev Who registered in one transaction, and when; the owner of its tokens until each first moves
    /// (ERC721A-style ownership: one word per transaction, not per token).
    struct Origin {
        address creator;
        uint48 registeredAt;
        uint48 registeredBlock;
    }

    /// @dev Licence and split, shared by every asset of a catalogue until one of them changes its own
    /// (copied on write, {_ownTerms}).
    struct TermsRecord {
        uint256 territories;
        // word 1
        address royaltyReceiver; // the split's largest shareholder (the first on a tie), for EIP-2981
        uint16 royaltyBps;
        uint64 validFrom;
        uint8 termsCodec; // 0: no terms CID
        // word 2
        uint64 validUntil;
        uint64 splitKey; // the asset id whose SplitUpdated event carries this split
        uint64 users; // assets whose terms these are
        uint48 splitBlock; // the block of that event: where settlement looks, however old the chain
        uint16 splitCommits; // bumped by every commit, so a commit always rewrites this word (see below)
        bytes32 splitHash;
        bytes32 termsDigest; // written only when the licence names a terms CID
    }

    /// @notice Most assets {registerBatch} takes: 100 fit well inside a transaction's gas cap (2^24).
    uint256 public constant MAX_BATCH = 100;

    uint256 private _assetCount;
    uint256 private _termsCount;
    mapping(uint256 assetId => Record) private _records;
    mapping(uint256 firstAssetId => Origin) private _origins;
    mapping(uint256 termsId => TermsRecord) private _termsRecords;
    mapping(bytes32 contentHash => uint256 assetId) private _assetIdByHash;
    /// @dev Registration commitments ({commitRegistration}) => the block they were made in.
    mapping(bytes32 commitment => uint256 blockNumber) private _commitments;
    /// @dev When a contested asset left the Active status (unix seconds); 0 while active.
    mapping(uint256 assetId => uint256 since) private _contestedSince;

    error ZeroContentHash();
    error EmptyCid();
    error ZeroCreator();
    error AlreadyRegistered(bytes32 contentHash, uint256 assetId);
    error UnknownParent(uint256 parentId);
    error NotRightsHolder(uint256 assetId, address caller);
    error AssetNotActive(uint256 assetId, Status status);
    error EmptySplit();
    error SplitLengthMismatch(uint256 recipients, uint256 shares);
    error TooManyRecipients(uint256 count, uint256 max);
    error ZeroRecipient(uint256 index);
    error ZeroShare(uint256 index);
    error SharesNotWhole(uint256 total);
    error EmptyTerritories();
    error UnknownTerritory(uint256 territories);
    error InvalidValidityWindow(uint64 validFrom, uint64 validUntil);
    error RoyaltyTooHigh(uint16 royaltyBps);
    error InvalidStatusTransition(uint256 assetId, Status from, Status to);
    error EmptyReason();
    error NotCreator(address caller, address creator);
    error AlreadyCommitted(bytes32 commitment, uint256 blockNumber);
    error NoCommitment(bytes32 commitment);
    error CommitmentTooRecent(bytes32 commitment, uint256 blockNumber);
    error ReassignTooEarly(uint256 assetId, uint256 notBefore);
    error EmptyBatch();
    error BatchTooLarge(uint256 count, uint256 max);
    error UnknownImportProfile(uint8 importProfile);

    /// @notice A new asset (token) was registered.
    event AssetRegistered(
        uint256 indexed assetId,
        bytes32 indexed contentHash,
        address indexed creator,
        address registrar,
        uint256 parentId,
        bool aigc,
        string contentCid,
        string metadataCid
    );
    /// @notice The asset's CIDs were cut with IPFS import profile `importProfile` ({importProfileOf}).
    /// Emitted right after `AssetRegistered`, only for a profile other than 0 (`legacy-cidv1`): an asset
    /// without it was cut as `legacy-cidv1`.
    event ImportProfileRecorded(uint256 indexed assetId, uint8 importProfile);
    /// @notice The licence of an asset was set (at registration) or changed.
    event LicenceUpdated(
        uint256 indexed assetId, uint256 territories, uint64 validFrom, uint64 validUntil, uint16 royaltyBps,
        string termsCid
    );
    /// @notice The revenue split of an asset was set (at registration) or changed.
    event SplitUpdated(uint256 indexed assetId, address[] recipients, uint16[] shares);
    /// @notice A catalogue of `count` assets, ids `firstId` to `firstId + count - 1`, was registered in one
    /// transaction ({registerBatch}); they share the licence and split in the `LicenceUpdated` and
    /// `SplitUpdated` events of `firstId` emitted just before, until each changes its own.
    event BatchRegistered(uint256 indexed firstId, uint256 count, address indexed creator);
    /// @notice Someone committed to a registration it will reveal at least one block later.
    event RegistrationCommitted(bytes32 indexed commitment, address indexed committer);
    /// @notice An arbiter changed an asset's dispute status.
    event AssetStatusChanged(
        uint256 indexed assetId, Status previous, Status current, address indexed arbiter, string reasonCid
    );
    /// @notice An arbiter moved an asset to its rightful holder after a dispute.
    event RightsReassigned(
        uint256 indexed assetId, address indexed from, address indexed to, address arbiter, string reasonCid
    );

    /// @param admin Receives DEFAULT_ADMIN_ROLE (grants REGISTRAR_ROLE and ARBITER_ROLE).
    /// @param reassignDelay {REASSIGN_DELAY}: seconds an asset stays contested before its rights can move.
    constructor(address admin, uint256 reassignDelay) ERC721("EdgeLedger Content", "EDGE") {
        REASSIGN_DELAY = reassignDelay;
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------------------------------
    // Registration and updates
    // ------------------------------------------------------------------------------------------

    /// @notice Commits to a registration revealed later by {registerAsset}: `commitment` is
    /// {registrationCommitment}(content hash, creator, salt), which hides the content hash until the reveal.
    /// @param commitment The commitment (each may be made once).
    function commitRegistration(bytes32 commitment) external {
        uint256 made = _commitments[commitment];
        if (made != 0) revert AlreadyCommitted(commitment, made);
        _commitments[commitment] = block.number;
        emit RegistrationCommitted(commitment, msg.sender);
    }

    /// @notice Registers content for the caller and mints its token to it, revealing a commitment made
    /// in an earlier block. The first registrant of a content hash wins; a wrongful first registration is
    /// resolved through the arbiter's takedown process.
    /// @param r The registration; `r.creator` must be the caller.
    /// @param salt The secret of the commitment keccak256(abi.encode(r.contentHash, r.creator, salt)).
    /// @return assetId The new asset's id (= token id).
    function registerAsset(Registration calldata r, bytes32 salt) external returns (uint256 assetId) {
        if (r.creator != msg.sender) revert NotCreator(msg.sender, r.creator);
        _reveal(registrationCommitment(r.contentHash, r.creator, salt));
        return _register(r);
    }

    /// @notice Registers content for `r.creator` with the creator's EIP-712 `Registration` signature
    /// over exactly this registration, its next nonce and `deadline`. Only the registrar (the platform
    /// pays the gas); the signature decides what is registered and for whom.
    /// @param r The registration.
    /// @param deadline Unix seconds after which the signature is void.
    /// @param signature The creator's signature (ECDSA, or ERC-1271 when the creator is a contract).
    /// @return assetId The new asset's id (= token id).
    function registerFor(Registration calldata r, uint256 deadline, bytes calldata signature)
        external
        onlyRole(REGISTRAR_ROLE)
        returns (uint256 assetId)
    {
        if (r.creator == address(0)) revert ZeroCreator();
        _requireSigned(r.creator, _registrationStructHash(r, _useNonce(r.creator), deadline), deadline, signature);
        return _register(r);
    }

    /// @notice Registers a catalogue for the caller in one transaction: each item its own asset and token
    /// (ids `firstId` on, in order), all under one licence and split until each changes its own. Reveals a
    /// commitment made in an earlier block: {registrationCommitment}({batchHash}(items), caller, salt).
    /// Tokens are minted as one ERC-2309 `ConsecutiveTransfer`; `BatchRegistered` closes the events.
    /// @param items At most {MAX_BATCH} assets; a parent may be an earlier item of the same catalogue.
    /// @param licence The licence of every item.
    /// @param recipients Payees of every item, at most 50, no zero address.
    /// @param shares Basis points per payee, each above zero, summing to exactly 10,000.
    /// @param salt The commitment's secret.
    /// @return firstId The first item's asset id.
    function registerBatch(
        CatalogueItem[] calldata items,
        Licence calldata licence,
        address[] calldata recipients,
        uint16[] calldata shares,
        bytes32 salt
    ) external returns (uint256 firstId) {
        _requireBatchSize(items.length);
        _reveal(registrationCommitment(batchHash(items), msg.sender, salt));
        return _registerBatch(msg.sender, items, licence, recipients, shares);
    }

    /// @notice Registers a catalogue for `creator` with the creator's EIP-712 `Catalogue` signature over
    /// exactly these items, licence and split, its next nonce and `deadline`: as {registerBatch}, the gas
    /// paid by the platform. Only the registrar; the signature decides what is registered and for whom.
    /// @param items At most {MAX_BATCH} assets; a parent may be an earlier item of the same catalogue.
    /// @param licence The licence of every item.
    /// @param recipients Payees of every item, at most 50, no zero address.
    /// @param shares Basis points per payee, each above zero, summing to exactly 10,000.
    /// @param creator Receives the tokens; signed the catalogue.
    /// @param deadline Unix seconds after which the signature is void.
    /// @param signature The creator's signature (ECDSA, or ERC-1271 when the creator is a contract).
    /// @return firstId The first item's asset id.
    function registerBatchFor(
        CatalogueItem[] calldata items,
        Licence calldata licence,
        address[] calldata recipients,
        uint16[] calldata shares,
        address creator,
        uint256 deadline,
        bytes calldata signature
    ) external onlyRole(REGISTRAR_ROLE) returns (uint256 firstId) {
        if (creator == address(0)) revert ZeroCreator();
        _requireBatchSize(items.length);
        bytes32 structHash = _useCatalogueStructHash(creator, items, licence, recipients, shares, deadline);
        _requireSigned(creator, structHash, deadline, signature);
        return _registerBatch(creator, items, licence, recipients, shares);
    }

    /// @notice Replaces an asset's licence. Only the rights holder (token owner), only while active.
    /// @param assetId The asset.
    /// @param licence The new licence.
    function updateLicence(uint256 assetId, Licence calldata licence) external {
        _requireActiveRightsHolder(assetId);
        _setLicence(assetId, licence);
    }

    /// @notice Replaces an asset's revenue split. Only the rights holder (token owner), only while active.
    /// @param assetId The asset.
    /// @param recipients Payees, at most 50, no zero address.
    /// @param shares Basis points per payee, each above zero, summing to exactly 10,000.
    function updateSplit(uint256 assetId, address[] calldata recipients, uint16[] calldata shares) external {
        _requireActiveRightsHolder(assetId);
        _setSplit(assetId, recipients, shares);
    }

    /// @notice {updateLicence}, relayed: anyone submits the rights holder's EIP-712 `LicenceUpdate`
    /// signature over the asset, the licence, the holder's next nonce and `deadline`.
    /// @param assetId The asset.
    /// @param licence The new licence.
    /// @param deadline Unix seconds after which the signature is void.
    /// @param signature The rights holder's signature (ECDSA or ERC-1271).
    function updateLicenceFor(uint256 assetId, Licence calldata licence, uint256 deadline, bytes calldata signature)
        external
    {
        address holder = _requireActiveHolder(assetId);
        bytes32 structHash = keccak256(
            abi.encode(LICENCE_UPDATE_TYPEHASH, assetId, _licenceHash(licence), _useNonce(holder), deadline)
        );
        _requireSigned(holder, structHash, deadline, signature);
        _setLicence(assetId, licence);
    }

    /// @notice {updateSplit}, relayed: anyone submits the rights holder's EIP-712 `SplitUpdate` signature
    /// over the asset, the split, the holder's next nonce and `deadline`.
    /// @param assetId The asset.
    /// @param recipients Payees, at most 50, no zero address.
    /// @param shares Basis points per payee, each above zero, summing to exactly 10,000.
    /// @param deadline Unix seconds after which the signature is void.
    /// @param signature The rights holder's signature (ECDSA or ERC-1271).
    function updateSplitFor(
        uint256 assetId,
        address[] calldata recipients,
        uint16[] calldata shares,
        uint256 deadline,
        bytes calldata signature
    ) external {
        address holder = _requireActiveHolder(assetId);
        bytes32 structHash = keccak256(
            abi.encode(
                SPLIT_UPDATE_TYPEHASH,
                assetId,
                keccak256(abi.encodePacked(recipients)),
                keccak256(abi.encodePacked(shares)),
                _useNonce(holder),
                deadline
            )
        );
        _requireSigned(holder, structHash, deadline, signature);
        _setSplit(assetId, recipients, shares);
    }

    // ------------------------------------------------------------------------------------------
    // Notice and takedown
    // ------------------------------------------------------------------------------------------

    /// @notice Marks an active asset disputed: it accrues nothing until cleared.
    /// @param assetId The asset.
    /// @param reasonCid IPFS CID of the notice.
    function markDisputed(uint256 assetId, string calldata reasonCid) external onlyRole(ARBITER_ROLE) {
        _changeStatus(assetId, Status.Active, Status.Disputed, reasonCid);
    }

    /// @notice Takes an active or disputed asset down: it accrues nothing until cleared.
    /// @param assetId The asset.
    /// @param reasonCid IPFS CID of the takedown decision.
    function takeDown(uint256 assetId, string calldata reasonCid) external onlyRole(ARBITER_ROLE) {
        Status current = _requireAsset(assetId).status;
        if (current == Status.TakenDown) {
            revert InvalidStatusTransition(assetId, current, Status.TakenDown);
        }
        _changeStatus(assetId, current, Status.TakenDown, reasonCid);
    }

    /// @notice Clears a dispute or takedown: the asset is active again.
    /// @param assetId The asset.
    /// @param reasonCid IPFS CID of the decision.
    function clearDispute(uint256 assetId, string calldata reasonCid) external onlyRole(ARBITER_ROLE) {
        Status current = _requireAsset(assetId).status;
        if (current == Status.Active) revert InvalidStatusTransition(assetId, current, Status.Active);
        _changeStatus(assetId, current, Status.Active, reasonCid);
    }

    /// @notice Resolves a dispute in favour of `to`: moves the token (and with it the rights) and
    /// reactivates the asset. Only for disputed or taken-down assets, contested for at least
    /// {REASSIGN_DELAY} seconds ({reassignableAt}).
    /// @param assetId The asset.
    /// @param to The rightful rights holder.
    /// @param reasonCid IPFS CID of the decision.
    function reassignRights(uint256 assetId, address to, string calldata reasonCid)
        external
        onlyRole(ARBITER_ROLE)
    {
        Status current = _requireAsset(assetId).status;
        if (current == Status.Active) revert AssetNotActive(assetId, current);
        if (to == address(0)) revert ZeroRecipient(0);
        uint256 notBefore = _contestedSince[assetId] + REASSIGN_DELAY;
        if (block.timestamp < notBefore) revert ReassignTooEarly(assetId, notBefore);
        address from = _ownerOf(assetId);
        _update(to, assetId, address(0));
        emit RightsReassigned(assetId, from, to, msg.sender, reasonCid);
        _changeStatus(assetId, current, Status.Active, reasonCid);
    }

    // ------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------

    /// @notice The provenance record of an asset (CIDs in their text form, rebuilt from the stored digests).
    function getAsset(uint256 assetId) external view returns (Asset memory) {
        Record storage record = _requireAsset(assetId);
        Origin storage origin = _origins[record.origin];
        return Asset({
            contentHash: record.contentHash,
            creator: origin.creator,
            registeredAt: origin.registeredAt,
            status: record.status,
            aigc: record.aigc,
            registeredBlock: origin.registeredBlock,
            parentId: record.parentId,
            contentCid: CidCodec.encode(record.contentCodec, record.contentDigest),
            metadataCid: CidCodec.encode(record.metadataCodec, record.metadataDigest),
            statusReasonCid: record.statusReasonCid
        });
    }

    /// @notice The IPFS import profile the asset's CIDs were cut with (0 `legacy-cidv1`, 1 `unixfs-v1-2025`):
    /// with it, anyone recomputes the content CID from the file exactly as registered.
    function importProfileOf(uint256 assetId) external view returns (uint8) {
        return _requireAsset(assetId).importProfile;
    }

    /// @notice The licence of an asset (`termsCid` is "" when the licence names none).
    function getLicence(uint256 assetId) external view returns (Licence memory) {
        TermsRecord storage terms = _termsRecords[_requireAsset(assetId).termsId];
        return Licence({
            territories: terms.territories,
            validFrom: terms.validFrom,
            validUntil: terms.validUntil,
            royaltyBps: terms.royaltyBps,
            termsCid: terms.termsCodec == 0 ? "" : CidCodec.encode(terms.termsCodec, terms.termsDigest)
        });
    }

    /// @notice The commitment to an asset's revenue split: {splitHash} of the split in its latest
    /// `SplitUpdated` event.
    function splitHashOf(uint256 assetId) external view returns (bytes32) {
        return _termsRecords[_requireAsset(assetId).termsId].splitHash;
    }

    /// @notice The asset id whose `SplitUpdated` events hold the preimage of the asset's {splitHashOf}:
    /// the asset itself once it set or reset its own split, else the first asset of its catalogue.
    function splitKeyOf(uint256 assetId) external view returns (uint256) {
        return _termsRecords[_requireAsset(assetId).termsId].splitKey;
    }

    /// @notice The block of the `SplitUpdated` event holding each asset's split, so that readers fetch that
    /// block's logs instead of searching the registry's history. 0 for an id never registered.
    function splitBlocks(uint256[] calldata assetIds) external view returns (uint256[] memory blocks) {
        blocks = new uint256[](assetIds.length);
        for (uint256 i; i < assetIds.length; ++i) {
            uint256 id = assetIds[i];
            if (_ownerOf(id) != address(0)) blocks[i] = _termsRecords[_records[id].termsId].splitBlock;
        }
    }

    /// @notice How a split is committed: keccak256(abi.encode(recipients, shares)).
    function splitHash(address[] calldata recipients, uint16[] calldata shares) public pure returns (bytes32) {
        return keccak256(abi.encode(recipients, shares));
    }

    /// @notice Settlement terms of many assets in one call: status, rights holder, parent, licence window
    /// and territories, the split's commitment. Settlement reads them at a recorded block (`eth_call` at
    /// that block), takes each split from the asset's latest `SplitUpdated` event up to that block, checks
    /// it against `splitHash`, and publishes the block, so anyone can read the same terms again.
    /// @param assetIds The assets; unknown ids give `exists = false` instead of reverting.
    function settlementTerms(uint256[] calldata assetIds) external view returns (Terms[] memory terms) {
        terms = new Terms[](assetIds.length);
        for (uint256 i; i < assetIds.length; ++i) {
            uint256 assetId = assetIds[i];
            address holder = _ownerOf(assetId);
            if (holder == address(0)) continue;
            Record storage record = _records[assetId];
            TermsRecord storage held = _termsRecords[record.termsId];
            terms[i] = Terms({
                exists: true,
                status: record.status,
                holder: holder,
                parentId: record.parentId,
                territories: held.territories,
                validFrom: held.validFrom,
                validUntil: held.validUntil,
                splitHash: held.splitHash,
                splitKey: held.splitKey
            });
        }
    }

    /// @notice The earliest time (unix seconds) the arbiter may reassign a contested asset's rights; 0 while
    /// the asset is active (or unknown).
    function reassignableAt(uint256 assetId) external view returns (uint256) {
        uint256 since = _contestedSince[assetId];
        return since == 0 ? 0 : since + REASSIGN_DELAY;
    }

    /// @notice The commitment {registerAsset} reveals: keccak256(abi.encode(contentHash, creator, salt)).
    function registrationCommitment(bytes32 contentHash, address creator, bytes32 salt) public pure returns (bytes32) {
        return keccak256(abi.encode(contentHash, creator, salt));
    }

    /// @notice What a catalogue's commitment hides: keccak256 of its items' content hashes, in order.
    function batchHash(CatalogueItem[] calldata items) public pure returns (bytes32 hash) {
        bytes memory hashes = new bytes(items.length * 32);
        for (uint256 i; i < items.length; ++i) {
            bytes32 contentHash = items[i].contentHash;
            assembly ("memory-safe") {
                mstore(add(add(hashes, 32), mul(i, 32)), contentHash)
            }
        }
        hash = keccak256(hashes);
    }

    /// @notice The block a commitment was made in (0: never, or already revealed).
    function commitmentBlock(bytes32 commitment) external view returns (uint256) {
        return _commitments[commitment];
    }

    /// @notice The asset registered for a content hash, or 0.
    function assetIdOf(bytes32 contentHash) external view returns (uint256) {
        return _assetIdByHash[contentHash];
    }

    /// @notice Number of assets registered so far (ids run from 1 to this).
    function totalAssets() external view returns (uint256) {
        return _assetCount;
    }

    /// @notice The rights holder of an asset: whoever holds its token.
    function rightsHolder(uint256 assetId) external view returns (address) {
        return ownerOf(assetId);
    }

    /// @notice Whether the asset accrues revenue now (false while disputed or taken down).
    function isAccruing(uint256 assetId) external view returns (bool) {
        return _requireAsset(assetId).status == Status.Active;
    }

    /// @notice Whether a delivery at `timestamp` in territory `territoryIndex` is within the licence.
    function isLicensedFor(uint256 assetId, uint256 territoryIndex, uint64 timestamp) external view returns (bool) {
        TermsRecord storage terms = _termsRecords[_requireAsset(assetId).termsId];
        if (territoryIndex >= TERRITORY_COUNT || (terms.territories >> territoryIndex) & 1 == 0) return false;
        if (timestamp < terms.validFrom) return false;
        return terms.validUntil == 0 || timestamp <= terms.validUntil;
    }

    /// @notice `ipfs://<metadata CID>`, the CID's text rebuilt from its stored codec and digest.
    function tokenURI(uint256 assetId) public view override returns (string memory) {
        _requireOwned(assetId);
        Record storage record = _records[assetId];
        return string.concat("ipfs://", CidCodec.encode(record.metadataCodec, record.metadataDigest));
    }

    /// @notice EIP-2981. The standard names one receiver: the split's largest shareholder (the first on a
    /// tie) receives `royaltyBps` of the sale price; the full split is applied by off-chain settlement.
    /// A disputed or taken-down asset accrues nothing: the amount is 0 until the arbiter clears it.
    function royaltyInfo(uint256 assetId, uint256 salePrice)
        external
        view
        override
        returns (address receiver, uint256 royaltyAmount)
    {
        _requireOwned(assetId);
        Record storage record = _records[assetId];
        TermsRecord storage terms = _termsRecords[record.termsId];
        receiver = terms.royaltyReceiver;
        if (record.status == Status.Active) {
            royaltyAmount = (salePrice * terms.royaltyBps) / TOTAL_BPS;
        }
    }

    /// @inheritdoc IERC165
    function supportsInterface(bytes4 interfaceId)
        public
        view
        override(ERC721, AccessControl, IERC165)
        returns (bool)
    {
        return interfaceId == type(IERC2981).interfaceId || super.supportsInterface(interfaceId);
    }

    // ------------------------------------------------------------------------------------------
    // Internal helpers
    // ------------------------------------------------------------------------------------------

    function _requireAsset(uint256 assetId) internal view returns (Record storage) {
        _requireOwned(assetId);
        return _records[assetId];
    }

    function _requireActiveRightsHolder(uint256 assetId) internal view {
        Record storage asset = _requireAsset(assetId);
        if (ownerOf(assetId) != msg.sender) revert NotRightsHolder(assetId, msg.sender);
        if (asset.status != Status.Active) revert AssetNotActive(assetId, asset.status);
    }

    /// @dev The rights holder of an active asset (for relayed updates).
    function _requireActiveHolder(uint256 assetId) internal view returns (address holder) {
        Record storage asset = _requireAsset(assetId);
        if (asset.status != Status.Active) revert AssetNotActive(assetId, asset.status);
        return ownerOf(assetId);
    }

    /// @dev Consumes a commitment made in an earlier block ({commitRegistration}); reverts otherwise.
    function _reveal(bytes32 commitment) internal {
        uint256 made = _commitments[commitment];
        if (made == 0) revert NoCommitment(commitment);
        if (made >= block.number) revert CommitmentTooRecent(commitment, made);
        delete _commitments[commitment];
    }

    function _requireBatchSize(uint256 count) internal pure {
        if (count == 0) revert EmptyBatch();
        if (count > MAX_BATCH) revert BatchTooLarge(count, MAX_BATCH);
    }

    /// @dev Writes a catalogue of a checked size ({_requireBatchSize}) for `creator`, mints its tokens
    /// (one ERC-2309 range).
    function _registerBatch(
        address creator,
        CatalogueItem[] calldata items,
        Licence calldata licence,
        address[] calldata recipients,
        uint16[] calldata shares
    ) internal returns (uint256 firstId) {
        uint256 count = items.length;
        firstId = _assetCount + 1;
        _origins[firstId] = Origin(creator, uint48(block.timestamp), uint48(block.number));
        uint256 termsId = ++_termsCount;
        TermsRecord storage terms = _termsRecords[termsId];
        terms.users = uint64(count);
        for (uint256 i; i < count; ++i) {
            CatalogueItem calldata item = items[i];
            _writeAsset(
                firstId + i,
                firstId,
                termsId,
                item.contentHash,
                item.contentCid,
                item.metadataCid,
                item.parentId,
                item.aigc,
                item.importProfile
            );
        }
        _writeLicence(terms, firstId, licence);
        _writeSplit(terms, firstId, recipients, shares);
        _increaseBalance(creator, uint128(count));
        emit ConsecutiveTransfer(firstId, firstId + count - 1, address(0), creator);
        emit BatchRegistered(firstId, count, creator);
    }

    /// @dev Checks and writes a registration, mints its token to the creator.
    function _register(Registration calldata r) internal returns (uint256 assetId) {
        if (r.creator == address(0)) revert ZeroCreator();
        assetId = _assetCount + 1;
        _origins[assetId] = Origin(r.creator, uint48(block.timestamp), uint48(block.number));
        uint256 termsId = ++_termsCount;
        _termsRecords[termsId].users = 1;
        _writeAsset(
            assetId,
            assetId,
            termsId,
            r.contentHash,
            r.contentCid,
            r.metadataCid,
            r.parentId,
            r.aigc,
            r.importProfile
        );
        _writeLicence(_termsRecords[termsId], assetId, r.licence);
        _writeSplit(_termsRecords[termsId], assetId, r.recipients, r.shares);
        // ERC721A-style mint: the token's owner is its registration's creator until it first moves
        // ({_ownerOf}); no per-token owner word. Not a safe mint: creators are often contract wallets
        // without IERC721Receiver, and registering provenance must not depend on that.
        _increaseBalance(r.creator, 1);
        emit Transfer(address(0), r.creator, assetId);
    }

    /// @dev Checks and writes one asset's provenance (CIDs as codec and digest), counts it, emits
    /// `AssetRegistered`. Zero words are not written.
    function _writeAsset(
        uint256 assetId,
        uint256 origin,
        uint256 termsId,
        bytes32 contentHash,
        string calldata contentCid,
        string calldata metadataCid,
        uint256 parentId,
        bool aigc,
        uint8 importProfile
    ) internal {
        if (contentHash == bytes32(0)) revert ZeroContentHash();
        if (bytes(contentCid).length == 0 || bytes(metadataCid).length == 0) revert EmptyCid();
        if (importProfile >= IMPORT_PROFILE_COUNT) revert UnknownImportProfile(importProfile);
        uint256 existing = _assetIdByHash[contentHash];
        if (existing != 0) revert AlreadyRegistered(contentHash, existing);
        if (parentId != 0 && _ownerOf(parentId) == address(0)) revert UnknownParent(parentId);
        Record storage record = _records[assetId];
        (record.contentCodec, record.contentDigest) = CidCodec.decode(contentCid);
        (record.metadataCodec, record.metadataDigest) = CidCodec.decode(metadataCid);
        record.contentHash = contentHash;
        record.aigc = aigc;
        record.importProfile = importProfile;
        record.origin = uint64(origin);
        record.termsId = uint64(termsId);
        if (parentId != 0) record.parentId = parentId;
        _assetIdByHash[contentHash] = assetId;
        _assetCount = assetId;
        _announce(assetId, record, parentId, contentCid, metadataCid);
    }

    /// @dev Emits `AssetRegistered` (and `ImportProfileRecorded`) from the record just written (warm
    /// slots; keeps {_writeAsset}'s stack small).
    function _announce(
        uint256 assetId,
        Record storage record,
        uint256 parentId,
        string calldata contentCid,
        string calldata metadataCid
    ) internal {
        emit AssetRegistered(
            assetId,
            record.contentHash,
            _origins[record.origin].creator,
            msg.sender,
            parentId,
            record.aigc,
            contentCid,
            metadataCid
        );
        uint8 importProfile = record.importProfile;
        if (importProfile != 0) emit ImportProfileRecorded(assetId, importProfile);
    }

    /// @dev The asset's own terms record, copied first if other assets share it (copy on write).
    function _ownTerms(uint256 assetId) internal returns (TermsRecord storage own) {
        Record storage record = _records[assetId];
        TermsRecord storage shared = _termsRecords[record.termsId];
        if (shared.users <= 1) return shared;
        shared.users -= 1;
        uint256 termsId = ++_termsCount;
        own = _termsRecords[termsId];
        own.territories = shared.territories;
        own.royaltyReceiver = shared.royaltyReceiver;
        own.royaltyBps = shared.royaltyBps;
        own.validFrom = shared.validFrom;
        own.termsCodec = shared.termsCodec;
        own.validUntil = shared.validUntil;
        own.splitKey = shared.splitKey;
        own.users = 1;
        own.splitBlock = shared.splitBlock;
        own.splitHash = shared.splitHash;
        if (shared.termsCodec != 0) own.termsDigest = shared.termsDigest;
        record.termsId = uint64(termsId);
    }

    function _setLicence(uint256 assetId, Licence calldata licence) internal {
        _writeLicence(_ownTerms(assetId), assetId, licence);
    }

    function _writeLicence(TermsRecord storage terms, uint256 assetId, Licence calldata licence) internal {
        if (licence.territories == 0) revert EmptyTerritories();
        if (licence.territories >> TERRITORY_COUNT != 0) revert UnknownTerritory(licence.territories);
        if (licence.validUntil != 0 && licence.validUntil <= licence.validFrom) {
            revert InvalidValidityWindow(licence.validFrom, licence.validUntil);
        }
        if (licence.royaltyBps > TOTAL_BPS) revert RoyaltyTooHigh(licence.royaltyBps);
        terms.territories = licence.territories;
        terms.validFrom = licence.validFrom;
        terms.validUntil = licence.validUntil;
        terms.royaltyBps = licence.royaltyBps;
        if (bytes(licence.termsCid).length == 0) {
            if (terms.termsCodec != 0) {
                terms.termsCodec = 0;
                delete terms.termsDigest;
            }
        } else {
            (terms.termsCodec, terms.termsDigest) = CidCodec.decode(licence.termsCid);
        }
        emit LicenceUpdated(
            assetId, licence.territories, licence.validFrom, licence.validUntil, licence.royaltyBps, licence.termsCid
        );
    }

    function _setSplit(uint256 assetId, address[] calldata recipients, uint16[] calldata shares) internal {
        _writeSplit(_ownTerms(assetId), assetId, recipients, shares);
    }

    function _writeSplit(
        TermsRecord storage terms,
        uint256 assetId,
        address[] calldata recipients,
        uint16[] calldata shares
    ) internal {
        uint256 count = recipients.length;
        if (count == 0) revert EmptySplit();
        if (count != shares.length) revert SplitLengthMismatch(count, shares.length);
        if (count > MAX_RECIPIENTS) revert TooManyRecipients(count, MAX_RECIPIENTS);
        uint256 total;
        uint256 lead;
        for (uint256 i; i < count; ++i) {
            if (recipients[i] == address(0)) revert ZeroRecipient(i);
            if (shares[i] == 0) revert ZeroShare(i);
            if (shares[i] > shares[lead]) lead = i;
            total += shares[i];
        }
        if (total != TOTAL_BPS) revert SharesNotWhole(total);
        _commitSplit(terms, assetId, splitHash(recipients, shares), recipients[lead]);
        emit SplitUpdated(assetId, recipients, shares);
    }

    /// @dev Commits a split (its hash, its EIP-2981 receiver) whose preimage is `assetId`'s next
    /// `SplitUpdated` event.
    function _commitSplit(TermsRecord storage terms, uint256 assetId, bytes32 hash, address receiver) internal {
        terms.splitHash = hash;
        terms.royaltyReceiver = receiver;
        terms.splitKey = uint64(assetId);
        // The counter makes every commit rewrite this word: a gas estimate at the previous commit's block
        // (where splitBlock would not change) then costs what the transaction does a block later.
        terms.splitBlock = uint48(block.number);
        unchecked { ++terms.splitCommits; }
    }

    /// @dev A token's owner: the one written at its last move, else its registration's creator
    /// (ERC721A-style: minting writes no owner word per token). Ids never registered have none.
    function _ownerOf(uint256 tokenId) internal view override returns (address owner) {
        owner = super._ownerOf(tokenId);
        if (owner == address(0) && tokenId != 0 && tokenId <= _assetCount) {
            owner = _origins[_records[tokenId].origin].creator;
        }
    }

    /// @dev Moving the token moves the rights, and with them the revenue: a transfer (a sale) or an
    /// arbiter's `reassignRights` resets the split to the new holder alone, who may then set another. A
    /// split the previous holder chose never keeps paying its recipients after the rights have moved.
    function _update(address to, uint256 tokenId, address auth) internal override returns (address from) {
        from = super._update(to, tokenId, auth);
        if (from != address(0) && to != address(0) && from != to) {
            address[] memory recipients = new address[](1);
            uint16[] memory shares = new uint16[](1);
            recipients[0] = to;
            shares[0] = TOTAL_BPS;
            _commitSplit(_ownTerms(tokenId), tokenId, keccak256(abi.encode(recipients, shares)), to);
            emit SplitUpdated(tokenId, recipients, shares);
        }
    }

    function _changeStatus(uint256 assetId, Status from, Status to, string calldata reasonCid) internal {
        Record storage asset = _requireAsset(assetId);
        if (asset.status != from) revert InvalidStatusTransition(assetId, asset.status, to);
        if (bytes(reasonCid).length == 0) revert EmptyReason();
        asset.status = to;
        asset.statusReasonCid = reasonCid;
        // Contested from the moment it leaves Active (a takedown after a dispute keeps that moment).
        if (to == Status.Active) delete _contestedSince[assetId];
        else if (from == Status.Active) _contestedSince[assetId] = block.timestamp;
        emit AssetStatusChanged(assetId, from, to, msg.sender, reasonCid);
    }
}
