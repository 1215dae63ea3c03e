// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

/// @title DeliveryLedger
/// @notice Delivery receipts: per delivery source (an edge node or a CDN provider account), an append-only,
/// signed hash chain of batches. Each batch commits to a Merkle root over the source's delivery records
/// for one period; anyone can then prove that a record belongs to an anchored batch.
/// @dev
/// * Manifests are EIP-712 typed structs (domain "EdgeLedger DeliveryLedger", version "1", this chain id and
///   this contract). The source's signer signs them; the platform's anchoring worker (ANCHORER_ROLE) only
///   submits them, so it cannot forge, reorder, drop or rewrite a source's batches.
/// * Chain link: `prevManifestHash` is the EIP-712 *struct hash* (`hashStruct(Manifest)`, see
///   {manifestHash}) of the source's previous manifest, zero for the first. The struct hash, not the
///   digest: the chain is a property of the manifests alone (off-chain code links them without knowing
///   the chain id or the contract address), while the signature over the digest binds each manifest to
///   this chain and contract. Since every struct hash covers its own `prevManifestHash`, the head of the
///   chain commits to the whole history.
/// * Signer rotation: an edge node's signer is its own key, rotated only by the node's operator (the
///   platform cannot move an independent node's receipts to a key it controls). A CDN provider's signer
///   is the platform's ingest key for that provider, rotated only by NODE_ADMIN_ROLE. Rotation is allowed
///   while suspended (suspend, rotate a compromised key, reactivate); manifests signed by the old key
///   and not yet anchored are rejected afterwards.
/// * Storage per batch: ONE word, written once: the high 224 bits of keccak256(abi.encode(sourceId, root))
///   above the source's 32-bit index (see {_batchWord}). It names the batch's source (corrections and
///   {verifyRecord} check it), marks the batch id as used, and commits to the root: a proof is checked by
///   recomputing the root from it and comparing the word (a 224-bit hash: forging a root that matches
///   needs a 2^224 second preimage). Root, period, leaf count, totals, kind and manifest hashes are in the
///   BatchAnchored event and in the signed manifest. One new slot instead of two keeps the steady-state
///   anchor under 80,000 gas, whatever the batch size. Per source, `anchor` touches two more slots: the
///   hot one (signer, index, batch count, kind, status) and the chain head. The manifest is taken as a
///   memory struct: the ABI decoder range-checks every field once, at entry.
/// * Regions are a bitmap over the ISO 3166-1 alpha-2 table of docs/territories.md, as in
///   ContentRegistry (bit i = i-th code; bits at or above TERRITORY_COUNT must be zero).
/// * Leaves follow docs/delivery-leaf.md: OpenZeppelin StandardMerkleTree leaves (double keccak of the
///   ABI-encoded record), sorted-pair inner nodes.
contract DeliveryLedger is AccessControl, EIP712 {
    /// @notice May register, suspend and reactivate sources, and rotate CDN providers' signers.
    bytes32 public constant NODE_ADMIN_ROLE = keccak256("NODE_ADMIN_ROLE");
    /// @notice May submit signed manifests (the platform's anchoring worker).
    bytes32 public constant ANCHORER_ROLE = keccak256("ANCHORER_ROLE");

    /// @notice Number of codes in the territory table; region bits at or above it must be zero.
    uint256 public constant TERRITORY_COUNT = 249;
    /// @notice Manifest kind: a regular batch.
    uint8 public constant KIND_REGULAR = 0;
    /// @notice Manifest kind: a correction of an earlier batch of the same source (`corrects`).
    uint8 public constant KIND_CORRECTION = 1;

    /// @notice EIP-712 type hash of {Manifest}.
    bytes32 public constant MANIFEST_TYPEHASH = keccak256(
        "Manifest(bytes32 sourceId,bytes32 batchId,uint64 periodStart,uint64 periodEnd,bytes32 root,"
        "uint64 leafCount,uint128 totalBytes,uint64 totalRequests,bytes32 prevManifestHash,uint8 kind,"
        "bytes32 corrects)"
    );

    enum SourceKind {
        EdgeNode,
        CdnProvider
    }

    enum SourceStatus {
        Active,
        Suspended
    }

    /// @dev Field order is the storage layout: slot 0 holds everything `anchor` reads and writes besides
    /// the chain head (signer, index, batch count, kind, status), slot 1 the chain head.
    struct Source {
        address signer; // signs manifests: the node's key, or the platform's ingest key for a CDN provider
        uint32 index; // 1-based registration order (0 = unknown source); batches store it instead of the id
        uint48 batchCount; // batches anchored so far (regular and corrections)
        SourceKind kind;
        SourceStatus status;
        bytes32 lastManifestHash; // struct hash of the latest anchored manifest, zero before the first
        address operator; // payout address; for CDN providers the platform account
        bytes2 jurisdiction; // ISO 3166-1 alpha-2 code, ASCII upper case
        uint256 regions; // territory bitmap (docs/territories.md)
    }

    /// @notice A signed batch manifest (EIP-712 struct `Manifest`).
    struct Manifest {
        bytes32 sourceId;
        bytes32 batchId; // unique forever, across all sources; never zero
        uint64 periodStart; // unix seconds
        uint64 periodEnd; // unix seconds, after periodStart
        bytes32 root; // Merkle root over the batch's leaves (docs/delivery-leaf.md)
        uint64 leafCount;
        uint128 totalBytes;
        uint64 totalRequests;
        bytes32 prevManifestHash; // manifestHash of the source's previous manifest, zero for the first
        uint8 kind; // KIND_REGULAR or KIND_CORRECTION
        bytes32 corrects; // for a correction: the batch it corrects (same source); zero otherwise
    }

    /// @notice One delivered request: the leaf preimage of docs/delivery-leaf.md.
    struct DeliveryRecord {
        bytes32 sourceId;
        bytes32 requestId;
        uint64 timestampMs;
        bytes16 edgeLocation;
        bytes2 country;
        uint256 assetId;
        bytes32 merchantId;
        uint64 bytesDelivered;
        uint16 status;
        uint8 cacheResult;
        bytes32 clientCommitment;
    }

    mapping(bytes32 sourceId => Source) private _sources;
    /// @dev Source ids by index - 1.
    bytes32[] private _sourceIds;
    /// @dev {_batchWord} of every anchored batch; non-zero (the source index is), so it doubles as the
    /// "batch id used" marker.
    mapping(bytes32 batchId => uint256 word) private _batches;

    error ZeroSourceId();
    error SourceAlreadyRegistered(bytes32 sourceId);
    error UnknownSource(bytes32 sourceId);
    error ZeroOperator();
    error ZeroSigner();
    error EmptyRegions();
    error UnknownRegion(uint256 regions);
    error InvalidJurisdiction(bytes2 jurisdiction);
    error InvalidSourceStatusTransition(bytes32 sourceId, SourceStatus from, SourceStatus to);
    error RotationNotAuthorized(bytes32 sourceId, address caller);
    error SignerUnchanged(bytes32 sourceId, address signer);
    error SourceNotActive(bytes32 sourceId);
    error ZeroBatchId();
    error ZeroRoot();
    error EmptyBatch();
    error InvalidPeriod(uint64 periodStart, uint64 periodEnd);
    error UnknownManifestKind(uint8 kind);
    error UnexpectedCorrects(bytes32 corrects);
    error WrongSigner(bytes32 sourceId, address expected, address recovered);
    error BatchAlreadyAnchored(bytes32 batchId);
    error PrevManifestMismatch(bytes32 sourceId, bytes32 expected, bytes32 actual);
    error UnknownBatch(bytes32 batchId);
    error CorrectionOfOtherSource(bytes32 corrects, bytes32 sourceId, bytes32 correctedSourceId);

    /// @notice A source was registered (Active, no batches yet).
    event SourceRegistered(
        bytes32 indexed sourceId,
        SourceKind kind,
        address indexed operator,
        address indexed signer,
        uint256 regions,
        bytes2 jurisdiction,
        address admin
    );
    /// @notice A node admin suspended or reactivated a source.
    event SourceStatusChanged(
        bytes32 indexed sourceId, SourceStatus previous, SourceStatus current, address indexed admin
    );
    /// @notice The key that signs a source's manifests changed.
    event SignerRotated(
        bytes32 indexed sourceId, address indexed previousSigner, address indexed newSigner, address rotatedBy
    );
    /// @notice A signed manifest was anchored: its batch's root is now provable against.
    event BatchAnchored(
        bytes32 indexed sourceId,
        bytes32 indexed batchId,
        bytes32 indexed root,
        uint64 periodStart,
        uint64 periodEnd,
        uint64 leafCount,
        uint128 totalBytes,
        uint64 totalRequests,
        bytes32 manifestHash,
        bytes32 prevManifestHash,
        uint8 kind,
        bytes32 corrects
    );

    /// @param admin Receives DEFAULT_ADMIN_ROLE (grants NODE_ADMIN_ROLE and ANCHORER_ROLE).
    constructor(address admin) EIP712("EdgeLedger DeliveryLedger", "1") {
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
    }

    // ------------------------------------------------------------------------------------------
    // Sources
    // ------------------------------------------------------------------------------------------

    /// @notice Registers a delivery source, Active and without batches.
    /// @param sourceId The source's id (non-zero, never registered before); leaves carry it.
    /// @param kind EdgeNode (signed by the node's own key) or CdnProvider (signed by the platform's ingest key).
    /// @param operator Payout address; for CDN providers the platform account. For edge nodes it alone may
    /// rotate the signer.
    /// @param signer The key that signs the source's manifests.
    /// @param regions Territory bitmap of the regions served (non-empty, within the table).
    /// @param jurisdiction ISO 3166-1 alpha-2 code (two ASCII capitals) of the operator's jurisdiction.
    function registerSource(
        bytes32 sourceId,
        SourceKind kind,
        address operator,
        address signer,
        uint256 regions,
        bytes2 jurisdiction
    ) external onlyRole(NODE_ADMIN_ROLE) {
        if (sourceId == bytes32(0)) revert ZeroSourceId();
        if (_sources[sourceId].index != 0) revert SourceAlreadyRegistered(sourceId);
        if (operator == address(0)) revert ZeroOperator();
        if (signer == address(0)) revert ZeroSigner();
        if (regions == 0) revert EmptyRegions();
        if (regions >> TERRITORY_COUNT != 0) revert UnknownRegion(regions);
        if (!_isAlpha2(jurisdiction)) revert InvalidJurisdiction(jurisdiction);

        _sourceIds.push(sourceId);
        Source storage source = _sources[sourceId];
        source.signer = signer;
        source.index = SafeCast.toUint32(_sourceIds.length);
        source.kind = kind;
        source.operator = operator;
        source.jurisdiction = jurisdiction;
        source.regions = regions;
        emit SourceRegistered(sourceId, kind, operator, signer, regions, jurisdiction, msg.sender);
    }

    /// @notice Suspends an active source: its manifests cannot be anchored until it is reactivated.
    /// Batches already anchored stay valid and provable.
    /// @param sourceId The source.
    function suspendSource(bytes32 sourceId) external onlyRole(NODE_ADMIN_ROLE) {
        _changeStatus(sourceId, SourceStatus.Active, SourceStatus.Suspended);
    }

    /// @notice Reactivates a suspended source. Its chain continues where it stopped.
    /// @param sourceId The source.
    function reactivateSource(bytes32 sourceId) external onlyRole(NODE_ADMIN_ROLE) {
        _changeStatus(sourceId, SourceStatus.Suspended, SourceStatus.Active);
    }

    /// @notice Replaces the key that signs a source's manifests (also while suspended). Edge nodes: only
    /// the source's operator. CDN providers: only NODE_ADMIN_ROLE holders.
    /// @param sourceId The source.
    /// @param newSigner The new key (non-zero, different from the current one).
    function rotateSigner(bytes32 sourceId, address newSigner) external {
        Source storage source = _requireSource(sourceId);
        bool authorised = source.kind == SourceKind.EdgeNode
            ? msg.sender == source.operator
            : hasRole(NODE_ADMIN_ROLE, msg.sender);
        if (!authorised) revert RotationNotAuthorized(sourceId, msg.sender);
        if (newSigner == address(0)) revert ZeroSigner();
        address previous = source.signer;
        if (newSigner == previous) revert SignerUnchanged(sourceId, newSigner);
        source.signer = newSigner;
        emit SignerRotated(sourceId, previous, newSigner, msg.sender);
    }

    // ------------------------------------------------------------------------------------------
    // Anchoring
    // ------------------------------------------------------------------------------------------

    /// @notice Anchors a manifest signed by its source's current signer, as the next link of the source's
    /// chain. Checks, in this order: the source exists and is Active; the manifest is well-formed
    /// (non-zero batch id and root, leafCount > 0, periodEnd > periodStart, kind 0 or 1, `corrects` zero
    /// for regular batches); the EIP-712 signature recovers to the source's signer (OpenZeppelin ECDSA:
    /// 65 bytes, low s); the batch id was never anchored; `prevManifestHash` is the source's latest
    /// manifest hash; a correction's `corrects` is an anchored batch of the same source.
    /// @param m The manifest.
    /// @param signature The signer's 65-byte signature (r, s, v) over {manifestDigest}.
    function anchor(Manifest memory m, bytes calldata signature) external onlyRole(ANCHORER_ROLE) {
        Source storage source = _sources[m.sourceId];
        uint32 sourceIndex = source.index;
        if (sourceIndex == 0) revert UnknownSource(m.sourceId);
        if (source.status != SourceStatus.Active) revert SourceNotActive(m.sourceId);
        _requireWellFormed(m);

        bytes32 structHash = _manifestHash(m);
        address recovered = ECDSA.recover(_hashTypedDataV4(structHash), signature);
        if (recovered != source.signer) revert WrongSigner(m.sourceId, source.signer, recovered);

        if (_batches[m.batchId] != 0) revert BatchAlreadyAnchored(m.batchId);
        bytes32 last = source.lastManifestHash;
        if (m.prevManifestHash != last) revert PrevManifestMismatch(m.sourceId, last, m.prevManifestHash);
        if (m.kind == KIND_CORRECTION) _requireCorrectable(m.corrects, m.sourceId, sourceIndex);

        _batches[m.batchId] = _batchWord(m.sourceId, m.root, sourceIndex);
        source.lastManifestHash = structHash;
        ++source.batchCount;
        _emitAnchored(m, structHash);
    }

    // ------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------

    /// @notice A registered source.
    function getSource(bytes32 sourceId) external view returns (Source memory) {
        return _requireSource(sourceId);
    }

    /// @notice Number of registered sources.
    function sourceCount() external view returns (uint256) {
        return _sourceIds.length;
    }

    /// @notice The source of an anchored batch. Its root, period, leaf count, totals and kind are in the
    /// batch's BatchAnchored event (and its signed manifest); {isBatchRoot} checks a root against it.
    /// @dev Reverts UnknownBatch for a batch id never anchored.
    function batchSource(bytes32 batchId) external view returns (bytes32) {
        return _sourceIds[_requireBatch(batchId) - 1];
    }

    /// @notice Whether `root` is the root of the anchored batch `batchId`.
    /// @dev Reverts UnknownBatch for a batch id never anchored.
    function isBatchRoot(bytes32 batchId, bytes32 root) external view returns (bool) {
        uint32 sourceIndex = _requireBatch(batchId);
        return _batches[batchId] == _batchWord(_sourceIds[sourceIndex - 1], root, sourceIndex);
    }

    /// @notice Whether a batch id has been anchored (and can never be anchored again).
    function isAnchored(bytes32 batchId) external view returns (bool) {
        return _batches[batchId] != 0;
    }

    /// @notice The EIP-712 struct hash of a manifest: what the next manifest of its source puts in
    /// `prevManifestHash`, and what `lastManifestHash` holds once it is anchored.
    function manifestHash(Manifest calldata m) external pure returns (bytes32) {
        return _manifestHash(m);
    }

    /// @notice The EIP-712 digest the source's signer signs (this chain, this contract).
    function manifestDigest(Manifest calldata m) external view returns (bytes32) {
        return _hashTypedDataV4(_manifestHash(m));
    }

    /// @notice The Merkle leaf of a delivery record (docs/delivery-leaf.md).
    function recordLeaf(DeliveryRecord calldata r) external pure returns (bytes32) {
        return _recordLeaf(r);
    }

    /// @notice Whether `r` is a record of the anchored batch `batchId`: `r.sourceId` is the batch's
    /// source and `proof` proves r's leaf (docs/delivery-leaf.md) against the batch's root.
    /// @dev Reverts UnknownBatch for a batch id never anchored.
    function verifyRecord(bytes32 batchId, DeliveryRecord calldata r, bytes32[] calldata proof)
        external
        view
        returns (bool)
    {
        uint32 sourceIndex = _requireBatch(batchId);
        if (r.sourceId != _sourceIds[sourceIndex - 1]) return false;
        bytes32 root = MerkleProof.processProofCalldata(proof, _recordLeaf(r));
        return _batches[batchId] == _batchWord(r.sourceId, root, sourceIndex);
    }

    /// @notice Whether `proof` proves `leaf` against the root of the anchored batch `batchId`.
    /// @dev Reverts UnknownBatch for a batch id never anchored. Does not check the leaf's source field: use
    /// {verifyRecord} for records.
    function verifyLeaf(bytes32 batchId, bytes32 leaf, bytes32[] calldata proof) external view returns (bool) {
        uint32 sourceIndex = _requireBatch(batchId);
        bytes32 root = MerkleProof.processProofCalldata(proof, leaf);
        return _batches[batchId] == _batchWord(_sourceIds[sourceIndex - 1], root, sourceIndex);
    }

    // ------------------------------------------------------------------------------------------
    // Internal helpers
    // ------------------------------------------------------------------------------------------

    function _requireSource(bytes32 sourceId) internal view returns (Source storage source) {
        source = _sources[sourceId];
        if (source.index == 0) revert UnknownSource(sourceId);
    }

    /// @dev The index of the source of an anchored batch; reverts UnknownBatch otherwise.
    function _requireBatch(bytes32 batchId) internal view returns (uint32 sourceIndex) {
        sourceIndex = uint32(_batches[batchId]);
        if (sourceIndex == 0) revert UnknownBatch(batchId);
    }

    /// @dev A batch's storage word: high 224 bits of keccak256(abi.encode(sourceId, root)) | sourceIndex.
    function _batchWord(bytes32 sourceId, bytes32 root, uint32 sourceIndex) internal pure returns (uint256) {
        return (uint256(keccak256(abi.encode(sourceId, root))) & ~uint256(type(uint32).max)) | sourceIndex;
    }

    function _changeStatus(bytes32 sourceId, SourceStatus from, SourceStatus to) internal {
        Source storage source = _requireSource(sourceId);
        if (source.status != from) revert InvalidSourceStatusTransition(sourceId, source.status, to);
        source.status = to;
        emit SourceStatusChanged(sourceId, from, to, msg.sender);
    }

    function _requireWellFormed(Manifest memory m) internal pure {
        if (m.batchId == bytes32(0)) revert ZeroBatchId();
        if (m.root == bytes32(0)) revert ZeroRoot();
        if (m.leafCount == 0) revert EmptyBatch();
        if (m.periodEnd <= m.periodStart) revert InvalidPeriod(m.periodStart, m.periodEnd);
        if (m.kind > KIND_CORRECTION) revert UnknownManifestKind(m.kind);
        if (m.kind == KIND_REGULAR && m.corrects != bytes32(0)) revert UnexpectedCorrects(m.corrects);
    }

    function _requireCorrectable(bytes32 corrects, bytes32 sourceId, uint32 sourceIndex) internal view {
        uint32 correctedIndex = uint32(_batches[corrects]);
        if (correctedIndex == 0) revert UnknownBatch(corrects);
        if (correctedIndex != sourceIndex) {
            revert CorrectionOfOtherSource(corrects, sourceId, _sourceIds[correctedIndex - 1]);
        }
    }

    function _emitAnchored(Manifest memory m, bytes32 structHash) internal {
        emit BatchAnchored(
            m.sourceId,
            m.batchId,
            m.root,
            m.periodStart,
            m.periodEnd,
            m.leafCount,
            m.totalBytes,
            m.totalRequests,
            structHash,
            m.prevManifestHash,
            m.kind,
            m.corrects
        );
    }

    function _manifestHash(Manifest memory m) internal pure returns (bytes32) {
        // Every field is a static type: abi.encode(m) is the 11 words hashStruct expects after the type hash.
        return keccak256(abi.encode(MANIFEST_TYPEHASH, m));
    }

    function _recordLeaf(DeliveryRecord calldata r) internal pure returns (bytes32) {
        return keccak256(
            bytes.concat(
                keccak256(
                    abi.encode(
                        r.sourceId,
                        r.requestId,
                        r.timestampMs,
                        r.edgeLocation,
                        r.country,
                        r.assetId,
                        r.merchantId,
                        r.bytesDelivered,
                        r.status,
                        r.cacheResult,
                        r.clientCommitment
                    )
                )
            )
        );
    }

    /// @dev Two ASCII capitals.
    function _isAlpha2(bytes2 code) internal pure returns (bool) {
        bytes1 first = code[0];
        bytes1 second = code[1];
        return first >= "A" && first <= "Z" && second >= "A" && second <= "Z";
    }
}
