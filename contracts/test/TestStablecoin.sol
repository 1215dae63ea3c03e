// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";

/// @title TestStablecoin
/// @notice A 6-decimal, USDC-like token for development and tests: the owner mints and keeps a
/// blacklist; a blacklisted address can neither send nor receive (as USDC refuses them).
contract TestStablecoin is ERC20, Ownable {
    mapping(address account => bool) private _blacklisted;

    error Blacklisted(address account);

    /// @notice The owner added an account to or removed it from the blacklist.
    event BlacklistChanged(address indexed account, bool blacklisted);

    /// @param name_ Token name.
    /// @param symbol_ Token symbol.
    /// @param owner_ May mint and blacklist.
    constructor(string memory name_, string memory symbol_, address owner_) ERC20(name_, symbol_) Ownable(owner_) {}

    /// @notice USDC's precision.
    /// @return 6.
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints `amount` to `to`.
    /// @param to Recipient.
    /// @param amount Minor units.
    function mint(address to, uint256 amount) external onlyOwner {
        _mint(to, amount);
    }

    /// @notice Blacklists or clears an account.
    /// @param account The account.
    /// @param blacklisted_ The new status.
    function setBlacklisted(address account, bool blacklisted_) external onlyOwner {
        _blacklisted[account] = blacklisted_;
        emit BlacklistChanged(account, blacklisted_);
    }

    /// @notice Whether `account` is blacklisted.
    /// @param account The account.
    /// @return True if blacklisted.
    function isBlacklisted(address account) external view returns (bool) {
        return _blacklisted[account];
    }

    function _update(address from, address to, uint256 value) internal override {
        if (_blacklisted[from]) revert Blacklisted(from);
        if (_blacklisted[to]) revert Blacklisted(to);
        super._update(from, to, value);
    }
}
