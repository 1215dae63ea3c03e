// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title CidCodec
/// @notice Stores an IPFS CID in one word: the CIDs EdgeLedger registers are CIDv1, sha2-256, codec `raw`
/// (0x55, a file of one block) or `dag-pb` (0x70, a UnixFS file of several blocks), written in multibase
/// base32 lower case: "b" + base32(0x01 ‖ codec ‖ 0x12 ‖ 0x20 ‖ digest), 59 characters. Of those 36
/// bytes only the codec and the 32-byte digest vary, so a CID is kept as (codec, digest) and its text is
/// rebuilt when read (`tokenURI`, `getAsset`, `getLicence`).
/// @dev {decode} accepts only the canonical text {encode} gives back (lower case, zero padding bits), so a
/// stored CID always reads back as exactly the string that was registered. Any other spelling (CIDv0
/// "Qm…", base58btc "z…", upper case, other codecs or hashes) reverts with {InvalidCid}: the API
/// normalises every CID to this form before it reaches the chain (docs/registration.md).
library CidCodec {
    /// @notice Multicodec `raw`: a file stored as one block.
    uint8 internal constant RAW = 0x55;
    /// @notice Multicodec `dag-pb`: a UnixFS file of several blocks.
    uint8 internal constant DAG_PB = 0x70;
    /// @notice Length of the text form.
    uint256 internal constant TEXT_LENGTH = 59;

    /// @notice `cid` is not a canonical CIDv1 base32 sha2-256 CID of codec raw or dag-pb.
    error InvalidCid(string cid);

    bytes internal constant _ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";

    /// @notice (codec, digest) of a CID's text; reverts with {InvalidCid} on anything but the canonical form.
    function decode(string calldata cid) internal pure returns (uint8 codec, bytes32 digest) {
        if (bytes(cid).length != TEXT_LENGTH) revert InvalidCid(cid);
        // 58 base32 characters carry 290 bits: the 40 bits of (0x01, codec, 0x12, 0x20, digest[0]) in the
        // first 8 characters, then the digest's other 31 bytes and 2 zero padding bits in the last 50.
        uint256 head = 0;
        uint256 tail = 0;
        uint256 bad = 0;
        assembly ("memory-safe") {
            let text := cid.offset
            bad := iszero(eq(byte(0, calldataload(text)), 0x62)) // "b"
            for { let i := 1 } lt(i, 59) { i := add(i, 1) } {
                let c := byte(0, calldataload(add(text, i)))
                let v := sub(c, 0x61) // a-z: 0-25
                if gt(v, 25) {
                    v := sub(c, 0x18) // 2-7 (0x32-0x37): 26-31
                    bad := or(bad, or(lt(c, 0x32), gt(c, 0x37)))
                }
                switch lt(i, 9)
                case 1 { head := or(shl(5, head), v) }
                default { tail := or(shl(5, tail), v) }
            }
        }
        if (bad != 0) revert InvalidCid(cid);
        codec = uint8(head >> 24);
        if (head >> 32 != 0x01 || (head >> 8) & 0xffff != 0x1220 || tail & 3 != 0) revert InvalidCid(cid);
        if (codec != RAW && codec != DAG_PB) revert InvalidCid(cid);
        digest = bytes32(((head & 0xff) << 248) | (tail >> 2));
    }

    /// @notice The canonical text of (codec, digest): "b" + 58 base32 characters.
    function encode(uint8 codec, bytes32 digest) internal pure returns (string memory cid) {
        bytes memory out = new bytes(TEXT_LENGTH);
        bytes memory alphabet = _ALPHABET;
        uint256 head = (uint256(0x01) << 32) | (uint256(codec) << 24) | (0x1220 << 8) | (uint256(digest) >> 248);
        uint256 tail = (uint256(digest) << 8 >> 8) << 2;
        out[0] = "b";
        unchecked {
            for (uint256 i = 8; i > 0; --i) {
                out[i] = alphabet[head & 31];
                head >>= 5;
            }
            for (uint256 i = TEXT_LENGTH - 1; i > 8; --i) {
                out[i] = alphabet[tail & 31];
                tail >>= 5;
            }
        }
        cid = string(out);
    }
}
