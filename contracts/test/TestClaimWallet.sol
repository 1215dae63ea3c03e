// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC1271} from "@openzeppelin/contracts/interfaces/IERC1271.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";

/// @title TestClaimWallet
/// @notice A minimal ERC-1271 smart-contract wallet for tests: a signature is valid when its owner's key
/// signed the hash. Stands for a payee that is a contract (a multisig, a smart account) in relayed claims.
contract TestClaimWallet is IERC1271 {
    /// @notice The key holder whose signatures the wallet accepts.
    address public immutable owner;

    /// @param owner_ The key holder.
    constructor(address owner_) {
        owner = owner_;
    }

    /// @inheritdoc IERC1271
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        return err == ECDSA.RecoverError.NoError && recovered == owner ? this.isValidSignature.selector : bytes4(0);
    }
}
