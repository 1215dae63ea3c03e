// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {Nonces} from "@openzeppelin/contracts/utils/Nonces.sol";

/// @title ClaimAuthorization
/// @notice A payee's EIP-712 authorization of claims someone else submits for it (the vault's relayed
/// {claimManyFor}): `ClaimAuthorization(address payee,bytes32 claimsHash,address recipient,uint256 nonce,
/// uint256 deadline)` in the domain "EdgeLedger SettlementVault", version "1", this chain and this
/// contract; signed by the payee's key (ECDSA) or, for a contract payee, accepted by its ERC-1271
/// `isValidSignature`. One nonce per payee ({nonces}), used once.
/// @dev Abstract: the vault hashes the claims (`claimsHash`, over its Claim struct), builds the digest
/// with {_authorizationDigest}, checks it with {_isPayeeSignature} and consumes the payee's nonce.
abstract contract ClaimAuthorization is EIP712, Nonces {
    /// @notice EIP-712 type hash of the payee's authorization of a relayed {claimManyFor}.
    bytes32 public constant CLAIM_AUTHORIZATION_TYPEHASH = keccak256(
        "ClaimAuthorization(address payee,bytes32 claimsHash,address recipient,uint256 nonce,uint256 deadline)"
    );

    constructor() EIP712("EdgeLedger SettlementVault", "1") {}

    /// @notice The EIP-712 digest a payee signs to authorize a {claimManyFor}.
    /// @param payee The payee.
    /// @param claimsHash_ {claimsHash} of the claims.
    /// @param recipient The recipient argument, as it will be passed (zero: the payee).
    /// @param nonce The payee's {nonces} value when the claims are submitted.
    /// @param deadline Last unix second of validity.
    /// @return keccak256("\x19\x01" ‖ domainSeparator ‖ hashStruct(ClaimAuthorization)).
    function claimAuthorizationDigest(
        address payee,
        bytes32 claimsHash_,
        address recipient,
        uint256 nonce,
        uint256 deadline
    ) external view returns (bytes32) {
        return _authorizationDigest(payee, claimsHash_, recipient, nonce, deadline);
    }

    /// @notice The EIP-712 domain separator (name "EdgeLedger SettlementVault", version "1", this chain,
    /// this contract); {eip712Domain} gives its fields.
    /// @return The separator.
    // solhint-disable-next-line func-name-mixedcase
    function DOMAIN_SEPARATOR() external view returns (bytes32) {
        return _domainSeparatorV4();
    }

    function _authorizationDigest(
        address payee,
        bytes32 hashOfClaims,
        address recipient,
        uint256 nonce,
        uint256 deadline
    ) internal view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(CLAIM_AUTHORIZATION_TYPEHASH, payee, hashOfClaims, recipient, nonce, deadline))
        );
    }

    /// @dev ECDSA (low-s, as OpenZeppelin's ECDSA requires) by the payee's key, else ERC-1271 when the payee
    /// is a contract. The ECDSA check comes first so that an EOA payee's check does not load its code
    /// (SignatureChecker.isValidSignatureNow checks the code first: a cold account access).
    function _isPayeeSignature(address payee, bytes32 digest, bytes calldata signature) internal view returns (bool) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err == ECDSA.RecoverError.NoError && recovered == payee) return true;
        return payee.code.length != 0 && SignatureChecker.isValidERC1271SignatureNow(payee, digest, signature);
    }
}
