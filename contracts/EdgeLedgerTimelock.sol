// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title EdgeLedgerTimelock
/// @notice The SettlementVault's DEFAULT_ADMIN_ROLE in production: OpenZeppelin's TimelockController,
/// unchanged. Every role grant, allow-list change, challenge-window change and token recovery is
/// scheduled in public and can execute only `minDelay` later; the deployment sets `minDelay` longer than
/// the vault's challenge window, so merchants see a hostile change coming a whole window before it can
/// act and can withdraw their escrow meanwhile (docs/custody.md).
/// @dev No admin of its own (`admin` zero): the timelock administers itself, so changing its proposers,
/// executors or delay goes through the delay too.
contract EdgeLedgerTimelock is TimelockController {
    /// @param minDelay Seconds between scheduling and executing (longer than the vault's challenge window).
    /// @param proposers May schedule and cancel operations.
    /// @param executors May execute ready operations (zero address: anyone).
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors)
        TimelockController(minDelay, proposers, executors, address(0))
    {}
}
