// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title MerchantBounds
/// @notice A merchant's own bounds on what the settler keys may do with its escrow: the most one posting
/// (a period, a correction or a release, held royalties included) may reserve in a token, and the only
/// settler that may post for it. Set by the merchant alone, from its own address; no role can change them.
/// @dev Abstract: the vault calls {_requireWithinCap} and {_requireChosenSettler} on every posting.
abstract contract MerchantBounds {
    /// @dev Per merchant and token: the most one posting may reserve (0: no bound).
    mapping(address merchant => mapping(address token => uint256)) private _periodCap;
    /// @dev Per merchant: the only settler that may post for it (zero: any SETTLER_ROLE holder).
    mapping(address merchant => address) private _chosenSettler;

    error PeriodCapExceeded(address merchant, address token, uint256 cap, uint256 requested);
    error SettlerNotChosen(address merchant, address chosen, address caller);

    /// @notice A merchant bounded what one posting may reserve from its escrow in `token` (0: unbounded).
    event PeriodCapSet(address indexed merchant, address indexed token, uint256 cap);
    /// @notice A merchant chose the only settler that may post for it (zero: any settler).
    event SettlerChosen(address indexed merchant, address indexed settler);

    /// @notice Bounds what one posting (a period or a correction, its held royalties included) may
    /// reserve from the caller's escrow in `token`; a larger post reverts PeriodCapExceeded. Zero removes
    /// the bound. Whatever a settler key does, it cannot reserve more than this per posting.
    /// @param token The token.
    /// @param cap Token minor units (0: unbounded).
    function setPeriodCap(address token, uint256 cap) external {
        _periodCap[msg.sender][token] = cap;
        emit PeriodCapSet(msg.sender, token, cap);
    }

    /// @notice Chooses the only SETTLER_ROLE holder that may post roots and releases for the caller
    /// (zero: any settler). Another settler key, even a compromised one, then cannot post for it.
    /// @param settler The settler's address, or zero.
    function chooseSettler(address settler) external {
        _chosenSettler[msg.sender] = settler;
        emit SettlerChosen(msg.sender, settler);
    }

    /// @notice The bounds `merchant` set itself in `token`.
    /// @param merchant The merchant.
    /// @param token The token.
    /// @return cap The most one posting may reserve (0: no bound).
    /// @return settler The only settler that may post for it (zero: any).
    function boundsOf(address merchant, address token) external view returns (uint256 cap, address settler) {
        return (_periodCap[merchant][token], _chosenSettler[merchant]);
    }

    /// @dev Reverts unless the caller is the merchant's chosen settler (when it chose one).
    function _requireChosenSettler(address merchant) internal view {
        address chosen = _chosenSettler[merchant];
        if (chosen != address(0) && chosen != msg.sender) revert SettlerNotChosen(merchant, chosen, msg.sender);
    }

    /// @dev Reverts when reserving `amount` in `token` in one posting exceeds the merchant's cap.
    function _requireWithinCap(address merchant, address token, uint256 amount) internal view {
        uint256 cap = _periodCap[merchant][token];
        if (cap != 0 && amount > cap) revert PeriodCapExceeded(merchant, token, cap, amount);
    }
}
