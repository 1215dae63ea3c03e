// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AccessControl} from "@openzeppelin/contracts/access/AccessControl.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";
import {ClaimAuthorization} from "./vault/ClaimAuthorization.sol";
import {MerchantBounds} from "./vault/MerchantBounds.sol";

/// @title SettlementVault
/// @notice Settlement of delivery and licence payouts in allow-listed ERC-20 stablecoins. Merchants keep
/// an escrow per token; per (period, merchant) the settler posts a Merkle root over the period's payouts
/// with its total, which is reserved from the merchant's escrow. After a challenge window (or once the
/// resolver upholds a challenged settlement) every payee pulls its amount with a Merkle proof.
/// @dev
/// * Keys and their bounds (docs/custody.md): DEFAULT_ADMIN_ROLE administers roles, the token allow-list,
///   the challenge window (never below MIN_CHALLENGE_WINDOW) and the recovery of stray tokens; in
///   production it is a TimelockController whose delay is longer than the challenge window, so a role
///   grant (say, itself as settler) is public a whole window before it can act and merchants can withdraw.
///   SETTLER_ROLE posts roots and releases, bounded by the merchant's own caps on what all of a period's
///   postings reserve ({setPeriodCap}) and on what all postings reserve within one period-long span of
///   block time, whatever periods they name ({setRateCap}), and by its choice of settler
///   ({chooseSettler}); challengeable by the merchant for a whole window, and only for a period that has
///   ended (PERIOD_SECONDS). PAUSER_ROLE pauses, which stops the vault's clock, so challenge windows are
///   never shortened by a pause. RESOLVER_ROLE decides challenges. Payouts are claimable forever.
/// * Leaves follow docs/settlement-leaf.md: OpenZeppelin StandardMerkleTree leaves,
///   keccak256(bytes.concat(keccak256(abi.encode(periodId, merchant, token, payee, amount)))), with
///   sorted-pair inner nodes. A payout tree holds at most ONE leaf per payee (the off-chain builder sums a
///   payee's amounts): the claimed marker is keyed by (payee, merchant, periodId), so a second leaf of the
///   same payee could never be claimed. Auditors check this during the challenge window.
/// * Claimed markers: a bitmap word per (payee, merchant, periodId >> 8), bit periodId & 255. Period ids
///   are the settlement periods' sequence numbers, so a payee's consecutive periods at one merchant share
///   one word: only the first claim in 256 periods writes a fresh slot.
/// * Posting writes three slots of the settlement, two of the token and the merchant's two budgets (its
///   period's and its span's), whatever the number of payees.
/// * Conservation, per token: deposited == escrow + reserved + claimed + withdrawn (see {totalsOf}); the
///   vault's token balance equals escrow + reserved (tokens must not charge transfer fees or rebase;
///   deposits credit what actually arrived). `reserved` is every settlement's unclaimed remainder plus
///   every held reserve.
/// * Held royalties ({postWithHeld}): royalties a period cannot pay yet (its asset is disputed or taken
///   down) are reserved from the merchant's escrow with the period's root, in the settlement's token,
///   and leave that reserve only by the dispute's outcome: {releaseHeld} posts them under a supplementary
///   settlement id as a new root with its own challenge window, paying the rights holder once the
///   dispute clears or the rights are reassigned, or the merchant back after a takedown (a leaf to its
///   own address). The merchant or an auditor may challenge a release like any root. A cancelled
///   release goes back to the held reserve it came from; a cancelled period returns its held reserve to
///   escrow with the rest. Supplementary ids are `periodId + (sequence << 32)`, sequence >= 1.
/// * Pull payments: a payee's claim moves only its own money, and its transfer is its own transaction, so
///   a payee the token refuses (blacklisted) blocks nobody else. It may name any other recipient address
///   for its claims (the `recipient` argument) but the vault's own, so a blacklisted payee can still be
///   paid elsewhere.
/// * Relayed claims ({claimManyFor}): anyone (the platform's relayer) may submit a payee's claims with the
///   payee's EIP-712 `ClaimAuthorization` signature (ECDSA, or ERC-1271 for contract payees) over the
///   exact claims, the recipient, a per-payee nonce and a deadline; domain "EdgeLedger SettlementVault",
///   version "1", this chain and this contract. Proofs are not signed: they only prove what the leaf says.
/// * Claims are all-or-nothing per transaction; Checks-Effects-Interactions plus a transient reentrancy
///   guard; everything that moves funds stops while paused, but a merchant's withdrawal of its own
///   unreserved escrow.
contract SettlementVault is AccessControl, Pausable, ReentrancyGuardTransient, ClaimAuthorization, MerchantBounds {
    using SafeERC20 for IERC20;

    /// @notice May post payout roots (the platform's settlement worker).
    bytes32 public constant SETTLER_ROLE = keccak256("SETTLER_ROLE");
    /// @notice May challenge any settlement within its challenge window.
    bytes32 public constant AUDITOR_ROLE = keccak256("AUDITOR_ROLE");
    /// @notice May pause and unpause (an operations key: fast, and a pause only stops the vault's clock).
    bytes32 public constant PAUSER_ROLE = keccak256("PAUSER_ROLE");
    /// @notice Decides challenged settlements: uphold or cancel (the arbiter).
    bytes32 public constant RESOLVER_ROLE = keccak256("RESOLVER_ROLE");
    /// @notice Upper bound of the challenge window (seconds).
    uint40 public constant MAX_CHALLENGE_WINDOW = 30 days;
    /// @notice The shortest challenge window a vault can be deployed with: a window of 0 would open
    /// claims at once, leaving no time to challenge any root (production wants a day or more).
    uint40 public constant MIN_CHALLENGE_WINDOW_FLOOR = 1 minutes;
    /// @notice Lower bound of the challenge window for the vault's lifetime: the window it was deployed
    /// with. DEFAULT_ADMIN_ROLE (a timelock in production) may lengthen the window, never shorten it below.
    uint40 public immutable MIN_CHALLENGE_WINDOW;
    /// @notice Length of a settlement period: period `p` (the low 32 bits of a settlement id) covers
    /// [p * PERIOD_SECONDS, (p + 1) * PERIOD_SECONDS) in unix seconds, and no root is posted for it before
    /// its end.
    uint32 public immutable PERIOD_SECONDS;

    enum SettlementStatus {
        None, // never posted
        Posted, // reserved; claimable from claimsOpenAt unless challenged before
        Challenged, // frozen until an admin resolves it
        Upheld, // an admin upheld the challenge: claimable at once
        Cancelled // an admin cancelled it: the reserve went back to escrow; the settler may post again
    }

    /// @dev Slot layout: root | token, claimsOpenAt, status | total, remaining.
    struct Settlement {
        bytes32 root;
        address token;
        uint40 claimsOpenAt; // end of the challenge window on the vault's clock (stops while paused)
        SettlementStatus status;
        uint128 total;
        uint128 remaining; // reserved and not yet claimed
    }

    /// @dev Per token. Slot layout: deposited, withdrawn | reserved, claimed | escrow, allowed. A claim
    /// touches only the second slot.
    struct TokenTotals {
        uint128 deposited;
        uint128 withdrawn;
        uint128 reserved;
        uint128 claimed;
        uint128 escrow;
        bool allowed;
    }

    /// @notice One payee's claim on one (period, merchant) settlement. The payee is the caller (or, in
    /// {claimManyFor}, the signer of the authorization).
    struct Claim {
        uint64 periodId;
        address merchant;
        uint256 amount;
        bytes32[] proof;
    }

    mapping(address token => TokenTotals) private _totals;
    mapping(address merchant => mapping(address token => uint256)) private _escrow;
    mapping(uint64 periodId => mapping(address merchant => Settlement)) private _settlements;
    /// @dev keccak256(abi.encode(payee, merchant, periodId >> 8)) => bitmap over periodId & 255.
    mapping(bytes32 key => uint256 word) private _claimedWords;
    /// @dev Held royalties of (period, merchant), in that settlement's token (part of `reserved`).
    mapping(uint64 periodId => mapping(address merchant => uint256)) private _held;
    /// @dev For a release ({releaseHeld}): 1 + the period whose held reserve funded it; 0 otherwise.
    mapping(uint64 releaseId => mapping(address merchant => uint64)) private _fundedBy;
    /// @dev One slot: the challenge window, then the pause clock: seconds paused before the current
    /// pause, and when the current pause began (0 when not paused). See {vaultClock}.
    uint40 private _challengeWindow;
    uint40 private _pausedSeconds;
    uint40 private _pausedSince;

    error ZeroAddress();
    /// @notice The vault's own address named as the recipient of a withdrawal or a claim: the tokens would
    /// stay in the vault as no one's (recoverable only as stray tokens), so the payee's money would be lost.
    error VaultAsRecipient();
    error ZeroAmount();
    error ZeroRoot();
    error ZeroPeriodLength();
    error PeriodNotEnded(uint64 periodId, uint256 endsAt);
    error TokenNotAllowed(address token);
    error TokenStatusUnchanged(address token, bool allowed);
    error ChallengeWindowTooLong(uint256 window, uint256 maximum);
    error ChallengeWindowTooShort(uint256 window, uint256 minimum);
    error NothingToRecover(address token);
    error InsufficientEscrow(address merchant, address token, uint256 available, uint256 requested);
    error AlreadyPosted(uint64 periodId, address merchant, SettlementStatus status);
    error UnknownSettlement(uint64 periodId, address merchant);
    error ChallengeNotAuthorized(uint64 periodId, address merchant, address caller);
    error NotChallengeable(uint64 periodId, address merchant, SettlementStatus status);
    error ChallengeWindowClosed(uint64 periodId, address merchant, uint40 claimsOpenAt);
    error NotChallenged(uint64 periodId, address merchant, SettlementStatus status);
    error ClaimsNotOpen(uint64 periodId, address merchant, SettlementStatus status, uint40 claimsOpenAt);
    error AlreadyClaimed(uint64 periodId, address merchant, address payee);
    error InvalidProof(uint64 periodId, address merchant, address payee, uint256 amount);
    error ClaimExceedsRemaining(uint64 periodId, address merchant, uint256 remaining, uint256 amount);
    error NoClaims();
    error AuthorizationExpired(uint256 deadline, uint256 timestamp);
    error InvalidAuthorization(address payee, uint256 nonce);
    error HeldExceeded(uint64 periodId, address merchant, uint256 held, uint256 requested);
    error NotReleasable(uint64 periodId, address merchant, SettlementStatus status);
    error NotSupplementary(uint64 periodId, uint64 releaseId);

    /// @notice An admin added a token to or removed it from the allow-list.
    event TokenAllowed(address indexed token, bool allowed, address indexed admin);
    /// @notice An admin changed the challenge window of future settlements.
    event ChallengeWindowChanged(uint40 previous, uint40 current, address indexed admin);
    /// @notice Tokens sent to the vault by mistake (beyond escrow and reserves) went to `to`.
    event TokensRecovered(address indexed token, address indexed to, uint256 amount, address indexed admin);
    /// @notice A merchant deposited into its escrow (`amount` is what the vault received).
    event Deposited(address indexed merchant, address indexed token, uint256 amount);
    /// @notice A merchant withdrew unreserved escrow.
    event Withdrawn(address indexed merchant, address indexed token, address to, uint256 amount);
    /// @notice The settler posted a period's payout root; `total` moved from escrow to reserved.
    event SettlementPosted(
        uint64 indexed periodId,
        address indexed merchant,
        address indexed token,
        bytes32 root,
        uint256 total,
        uint40 claimsOpenAt,
        address settler
    );
    /// @notice `held` of a period's royalties were reserved with its root ({postWithHeld}).
    event RoyaltiesHeld(uint64 indexed periodId, address indexed merchant, address indexed token, uint256 held);
    /// @notice The settler released `amount` of a period's held royalties as the payout root of the
    /// supplementary settlement `releaseId` (claimable after its own challenge window).
    event HeldReleased(
        uint64 indexed periodId, address indexed merchant, uint64 indexed releaseId, uint256 amount, address settler
    );
    /// @notice The merchant or an auditor challenged a settlement within its window.
    event SettlementChallenged(
        uint64 indexed periodId, address indexed merchant, address indexed challenger, bytes32 reason
    );
    /// @notice An admin resolved a challenge: upheld (claims open) or cancelled (reserve back to escrow).
    event SettlementResolved(
        uint64 indexed periodId, address indexed merchant, bool upheld, uint256 returned, address admin
    );
    /// @notice A payee claimed its leaf of a settlement; the tokens went to `recipient`.
    event Claimed(
        uint64 indexed periodId,
        address indexed merchant,
        address indexed payee,
        address token,
        address recipient,
        uint256 amount
    );

    /// @notice A relayer submitted `payee`'s claims under its signed authorization `nonce`; one
    /// {Claimed} per claim follows.
    event ClaimsRelayed(
        address indexed payee, address indexed relayer, uint256 nonce, bytes32 claimsHash, address recipient
    );

    /// @param admin Receives DEFAULT_ADMIN_ROLE (grants the other roles, allow-lists tokens, sets the
    /// challenge window, recovers stray tokens); a timelock in production.
    /// @param challengeWindow Seconds between a post and the opening of its claims (from
    /// MIN_CHALLENGE_WINDOW_FLOOR to MAX_CHALLENGE_WINDOW); also the window's lifetime minimum
    /// (MIN_CHALLENGE_WINDOW).
    /// @param periodSeconds Length of a settlement period (PERIOD_SECONDS; the service's period length).
    constructor(address admin, uint40 challengeWindow, uint32 periodSeconds) {
        if (admin == address(0)) revert ZeroAddress();
        if (periodSeconds == 0) revert ZeroPeriodLength();
        if (challengeWindow < MIN_CHALLENGE_WINDOW_FLOOR) {
            revert ChallengeWindowTooShort(challengeWindow, MIN_CHALLENGE_WINDOW_FLOOR);
        }
        _grantRole(DEFAULT_ADMIN_ROLE, admin);
        MIN_CHALLENGE_WINDOW = challengeWindow;
        PERIOD_SECONDS = periodSeconds;
        _setChallengeWindow(challengeWindow);
    }

    // ------------------------------------------------------------------------------------------
    // Administration
    // ------------------------------------------------------------------------------------------

    /// @notice Adds a token to the allow-list or removes it. A removed token takes no new deposits or
    /// posts; its escrow can still be withdrawn and its settlements claimed.
    /// @param token The ERC-20 token (no transfer fees, no rebasing).
    /// @param allowed The new status (must differ from the current one).
    function setTokenAllowed(address token, bool allowed) external onlyRole(DEFAULT_ADMIN_ROLE) {
        if (token == address(0)) revert ZeroAddress();
        TokenTotals storage totals = _totals[token];
        if (totals.allowed == allowed) revert TokenStatusUnchanged(token, allowed);
        totals.allowed = allowed;
        emit TokenAllowed(token, allowed, msg.sender);
    }

    /// @notice Sets the challenge window of settlements posted from now on.
    /// @param challengeWindow Seconds (MIN_CHALLENGE_WINDOW to MAX_CHALLENGE_WINDOW).
    function setChallengeWindow(uint40 challengeWindow) external onlyRole(DEFAULT_ADMIN_ROLE) {
        _setChallengeWindow(challengeWindow);
    }

    /// @notice Stops deposits, posts, releases, challenges, resolutions and claims (not withdrawals of
    /// unreserved escrow: a pause never keeps a merchant from leaving). The vault's clock
    /// stops with it: every open challenge window is extended by the time paused, so a pause never eats
    /// into a merchant's chance to challenge.
    function pause() external onlyRole(PAUSER_ROLE) {
        _pause();
        _pausedSince = SafeCast.toUint40(block.timestamp);
    }

    /// @notice Resumes after {pause}; the vault's clock runs again from where it stopped.
    function unpause() external onlyRole(PAUSER_ROLE) {
        _unpause();
        _pausedSeconds += SafeCast.toUint40(block.timestamp) - _pausedSince;
        _pausedSince = 0;
    }

    /// @notice Sends `token`s that reached the vault other than by {deposit} (a plain transfer by
    /// mistake) to `to`: only the balance beyond the token's escrow and reserves, so no merchant's escrow,
    /// reserve or unclaimed payout can be taken this way.
    /// @param token The token.
    /// @param to The recipient.
    function recoverTokens(address token, address to) external onlyRole(DEFAULT_ADMIN_ROLE) nonReentrant {
        if (to == address(0)) revert ZeroAddress();
        TokenTotals storage totals = _totals[token];
        uint256 owned = uint256(totals.escrow) + totals.reserved;
        uint256 balance = IERC20(token).balanceOf(address(this));
        if (balance <= owned) revert NothingToRecover(token);
        uint256 amount = balance - owned;
        emit TokensRecovered(token, to, amount, msg.sender);
        IERC20(token).safeTransfer(to, amount);
    }

    // ------------------------------------------------------------------------------------------
    // Escrow
    // ------------------------------------------------------------------------------------------

    /// @notice Deposits `amount` of an allow-listed token into the caller's escrow (approve first).
    /// @param token The token.
    /// @param amount Token minor units (non-zero).
    function deposit(address token, uint256 amount) external whenNotPaused nonReentrant {
        if (amount == 0) revert ZeroAmount();
        TokenTotals storage totals = _totals[token];
        if (!totals.allowed) revert TokenNotAllowed(token);
        IERC20 erc20 = IERC20(token);
        uint256 before = erc20.balanceOf(address(this));
        erc20.safeTransferFrom(msg.sender, address(this), amount);
        // Credit what arrived, so that the books never exceed the balance.
        uint256 received = erc20.balanceOf(address(this)) - before;
        if (received == 0) revert ZeroAmount();
        uint128 credited = SafeCast.toUint128(received);
        totals.deposited += credited;
        totals.escrow += credited;
        _escrow[msg.sender][token] += received;
        emit Deposited(msg.sender, token, received);
    }

    /// @notice Withdraws unreserved escrow of the caller to `to` (any address but the vault's, e.g. when the token
    /// refuses the merchant's own). Works while the vault is paused: a pause must never keep merchants
    /// from leaving while a timelocked change they object to (a new settler, say) waits out its delay.
    /// @param token The token (allow-listed or not).
    /// @param amount Token minor units (non-zero, at most the caller's escrow).
    /// @param to Recipient (non-zero, not the vault: VaultAsRecipient).
    function withdraw(address token, uint256 amount, address to) external nonReentrant {
        if (amount == 0) revert ZeroAmount();
        if (to == address(0)) revert ZeroAddress();
        if (to == address(this)) revert VaultAsRecipient();
        uint256 available = _escrow[msg.sender][token];
        if (available < amount) revert InsufficientEscrow(msg.sender, token, available, amount);
        _escrow[msg.sender][token] = available - amount;
        TokenTotals storage totals = _totals[token];
        uint128 value = SafeCast.toUint128(amount);
        totals.escrow -= value;
        totals.withdrawn += value;
        emit Withdrawn(msg.sender, token, to, amount);
        IERC20(token).safeTransfer(to, amount);
    }

    // ------------------------------------------------------------------------------------------
    // Settlements
    // ------------------------------------------------------------------------------------------

    /// @notice Posts the payout root of (periodId, merchant) and reserves its total from the merchant's
    /// escrow. Claims open after the current challenge window. A second post of the same (period,
    /// merchant) reverts unless the first was cancelled.
    /// @param periodId The settlement period's sequence number.
    /// @param merchant The merchant whose escrow pays.
    /// @param token An allow-listed token the merchant holds in escrow.
    /// @param root StandardMerkleTree root over the payouts (docs/settlement-leaf.md; non-zero).
    /// @param total Sum of the leaves' amounts (non-zero, at most the merchant's escrow in `token`, what
    /// the merchant's cap leaves to the period ({setPeriodCap}, {periodReservedOf}) and what its rate cap
    /// leaves to the current span ({setRateCap}, {rateSpentOf}).
    function post(uint64 periodId, address merchant, address token, bytes32 root, uint256 total)
        external
        onlyRole(SETTLER_ROLE)
        whenNotPaused
    {
        _post(periodId, merchant, token, root, total, 0);
    }

    /// @notice {post}, and reserves `held` more from the merchant's escrow: the period's royalties that
    /// cannot be paid yet (disputed or taken-down assets). They leave the reserve only by {releaseHeld}
    /// (or with the whole period when an admin cancels it). A period whose every royalty is held and that
    /// pays nobody now is posted with `total` 0 (a held-only post): its `root` then commits to what it
    /// holds (docs/settlement-leaf.md, no payout tree) and no claim can take anything from it.
    /// @param periodId The settlement period's sequence number.
    /// @param merchant The merchant whose escrow pays.
    /// @param token An allow-listed token the merchant holds in escrow.
    /// @param root StandardMerkleTree root over the payouts, or the held-only commitment (non-zero).
    /// @param total Sum of the leaves' amounts (non-zero unless `held` is).
    /// @param held Royalties held back (total + held at most the merchant's escrow in `token`, what the
    /// merchant's cap leaves to the period and what its rate cap leaves to the current span).
    function postWithHeld(
        uint64 periodId,
        address merchant,
        address token,
        bytes32 root,
        uint256 total,
        uint256 held
    ) external onlyRole(SETTLER_ROLE) whenNotPaused {
        _post(periodId, merchant, token, root, total, held);
    }

    /// @notice Pays `amount` of a settlement's held royalties under the supplementary settlement
    /// `releaseId` (`period + (sequence << 32)`, where `period` is the low 32 bits of `periodId`): a new
    /// root with its own challenge window, claimed like any other. Only once the settlement that holds
    /// them is final (upheld, or posted and past its challenge window), so it can no longer be cancelled.
    /// The holding settlement is a period's own (`periodId` < 2**32) or a supplementary settlement of the
    /// same period that held royalties of late records. Takes nothing from escrow, so the merchant's
    /// period cap does not count it: the period counted these royalties when it held them.
    /// @param periodId The settlement whose held reserve pays.
    /// @param merchant The merchant.
    /// @param releaseId The supplementary settlement's id (never posted, or cancelled).
    /// @param root StandardMerkleTree root over the released payouts (leaves name `releaseId`).
    /// @param amount Sum of the leaves' amounts (non-zero, at most what is held).
    function releaseHeld(uint64 periodId, address merchant, uint64 releaseId, bytes32 root, uint256 amount)
        external
        onlyRole(SETTLER_ROLE)
        whenNotPaused
    {
        if (root == bytes32(0)) revert ZeroRoot();
        if (amount == 0) revert ZeroAmount();
        if (releaseId >> 32 == 0 || uint32(releaseId) != uint32(periodId) || releaseId == periodId) {
            revert NotSupplementary(periodId, releaseId);
        }
        // The merchant's chosen settler binds releases only while it holds the role: choosing an address
        // that cannot settle must not freeze the royalties the merchant owes the rights holders.
        _requireChosenSettlerIfAble(merchant, hasRole(SETTLER_ROLE, _chosenSettlerOf(merchant)));
        Settlement storage source = _requireSettlement(periodId, merchant);
        // Only from a settlement that can no longer be cancelled: a release never outlives its reserve.
        if (!_isOpen(source)) revert NotReleasable(periodId, merchant, source.status);
        uint256 held = _held[periodId][merchant];
        if (amount > held) revert HeldExceeded(periodId, merchant, held, amount);
        Settlement storage release = _settlements[releaseId][merchant];
        SettlementStatus current = release.status;
        if (current != SettlementStatus.None && current != SettlementStatus.Cancelled) {
            revert AlreadyPosted(releaseId, merchant, current);
        }
        _held[periodId][merchant] = held - amount; // stays in `reserved`, now as the release's remaining
        _fundedBy[releaseId][merchant] = periodId + 1;
        emit HeldReleased(periodId, merchant, releaseId, amount, msg.sender);
        _record(release, releaseId, merchant, source.token, root, amount);
    }

    /// @notice Challenges a posted settlement before its claims open; it stays frozen until an admin
    /// resolves it. Only the merchant or an AUDITOR_ROLE holder.
    /// @param periodId The period.
    /// @param merchant The merchant.
    /// @param reason Free-form reason (e.g. the hash of an off-chain report).
    function challenge(uint64 periodId, address merchant, bytes32 reason) external whenNotPaused {
        if (msg.sender != merchant && !hasRole(AUDITOR_ROLE, msg.sender)) {
            revert ChallengeNotAuthorized(periodId, merchant, msg.sender);
        }
        Settlement storage settlement = _requireSettlement(periodId, merchant);
        if (settlement.status != SettlementStatus.Posted) {
            revert NotChallengeable(periodId, merchant, settlement.status);
        }
        uint40 clock = _vaultClock();
        if (clock >= settlement.claimsOpenAt) {
            revert ChallengeWindowClosed(periodId, merchant, _wallTime(settlement.claimsOpenAt, clock));
        }
        settlement.status = SettlementStatus.Challenged;
        emit SettlementChallenged(periodId, merchant, msg.sender, reason);
    }

    /// @notice Resolves a challenged settlement: uphold opens its claims at once; cancel returns the
    /// whole reserve, held royalties included, to the merchant's escrow (no claim can have happened) and to
    /// its period's cap ({periodReservedOf}), but not to the span's rate budget ({rateSpentOf}), and lets
    /// the settler post it again; a cancelled release returns to its period's held reserve (the period's
    /// cap never counted it).
    /// @param periodId The period.
    /// @param merchant The merchant.
    /// @param uphold True to uphold, false to cancel.
    function resolve(uint64 periodId, address merchant, bool uphold)
        external
        onlyRole(RESOLVER_ROLE)
        whenNotPaused
    {
        Settlement storage settlement = _requireSettlement(periodId, merchant);
        if (settlement.status != SettlementStatus.Challenged) {
            revert NotChallenged(periodId, merchant, settlement.status);
        }
        uint128 returned;
        if (uphold) {
            settlement.status = SettlementStatus.Upheld;
        } else {
            returned = settlement.remaining;
            address token = settlement.token;
            settlement.status = SettlementStatus.Cancelled;
            settlement.remaining = 0;
            uint64 fundedBy = _fundedBy[periodId][merchant];
            if (fundedBy != 0) {
                // A cancelled release goes back to the held reserve it came from (still reserved).
                _held[fundedBy - 1][merchant] += returned;
            } else {
                uint256 held = _held[periodId][merchant];
                _held[periodId][merchant] = 0;
                returned += SafeCast.toUint128(held);
                TokenTotals storage totals = _totals[token];
                totals.reserved -= returned;
                totals.escrow += returned;
                _escrow[merchant][token] += returned;
                _refundPeriodBudget(merchant, token, periodId, returned);
            }
        }
        emit SettlementResolved(periodId, merchant, uphold, returned, msg.sender);
    }

    // ------------------------------------------------------------------------------------------
    // Claims
    // ------------------------------------------------------------------------------------------

    /// @notice Claims the caller's leaf of one settlement and sends the amount to `recipient`.
    /// @param claim_ The period, merchant, amount and proof (the payee is the caller).
    /// @param recipient Receives the tokens (not the vault: VaultAsRecipient); zero means the caller.
    function claim(Claim calldata claim_, address recipient) external whenNotPaused nonReentrant {
        address to = recipient == address(0) ? msg.sender : recipient;
        (address token, uint256 amount) = _claim(claim_, msg.sender, to);
        _pay(token, amount, to);
    }

    /// @notice Claims many of the caller's leaves (any periods and merchants) in one transaction. Claims of
    /// the same token in a row are paid in one transfer: order them by token.
    /// @param claims The claims (non-empty); any invalid one reverts the whole call.
    /// @param recipient Receives the tokens (not the vault: VaultAsRecipient); zero means the caller.
    function claimMany(Claim[] calldata claims, address recipient) external whenNotPaused nonReentrant {
        if (claims.length == 0) revert NoClaims();
        _claimAll(claims, msg.sender, recipient == address(0) ? msg.sender : recipient);
    }

    /// @notice Claims many of `payee`'s leaves on its behalf (any sender, typically the platform's relayer,
    /// which pays the gas): `payee` signed an EIP-712 `ClaimAuthorization(address payee,bytes32 claimsHash,
    /// address recipient,uint256 nonce,uint256 deadline)` in this contract's domain, where `claimsHash` is
    /// {claimsHash} of exactly these claims in this order, `recipient` the argument below as given and
    /// `nonce` the payee's current {nonces} value. Each authorization works once; a later one of the same
    /// payee needs the next nonce. Otherwise as {claimMany}.
    /// @param payee Whose leaves are claimed (an EOA's ECDSA signature, or ERC-1271 for a contract).
    /// @param claims The claims (non-empty); any invalid one reverts the whole call.
    /// @param recipient Receives the tokens (not the vault: VaultAsRecipient); zero means the payee.
    /// @param deadline Last unix second at which the authorization may be used.
    /// @param signature The payee's signature of the authorization.
    function claimManyFor(
        address payee,
        Claim[] calldata claims,
        address recipient,
        uint256 deadline,
        bytes calldata signature
    ) external whenNotPaused nonReentrant {
        if (block.timestamp > deadline) revert AuthorizationExpired(deadline, block.timestamp);
        if (claims.length == 0) revert NoClaims();
        bytes32 hashOfClaims = _claimsHash(claims);
        uint256 nonce = _useNonce(payee);
        bytes32 digest = _authorizationDigest(payee, hashOfClaims, recipient, nonce, deadline);
        if (!_isPayeeSignature(payee, digest, signature)) revert InvalidAuthorization(payee, nonce);
        address to = recipient == address(0) ? payee : recipient;
        emit ClaimsRelayed(payee, msg.sender, nonce, hashOfClaims, to);
        _claimAll(claims, payee, to);
    }

    // ------------------------------------------------------------------------------------------
    // Views
    // ------------------------------------------------------------------------------------------

    /// @notice The settlement of (periodId, merchant) (status None if never posted).
    /// @param periodId The period.
    /// @param merchant The merchant.
    /// @return settlement The settlement record, `claimsOpenAt` in unix seconds.
    function settlementOf(uint64 periodId, address merchant)
        external
        view
        returns (Settlement memory settlement)
    {
        settlement = _settlements[periodId][merchant];
        if (settlement.status != SettlementStatus.None) {
            settlement.claimsOpenAt = _wallTime(settlement.claimsOpenAt, _vaultClock());
        }
    }

    /// @notice The vault's clock: unix seconds minus every second the vault has been paused (it stops
    /// while paused). Challenge windows run on it; {settlementOf} reports `claimsOpenAt` in unix seconds,
    /// as it stands if the vault is not paused again.
    /// @return Seconds on the vault's clock.
    function vaultClock() external view returns (uint40) {
        return _vaultClock();
    }

    /// @notice Whether the settlement's claims are open now.
    /// @param periodId The period.
    /// @param merchant The merchant.
    /// @return True when upheld, or posted and past its challenge window.
    function claimsOpen(uint64 periodId, address merchant) external view returns (bool) {
        return _isOpen(_settlements[periodId][merchant]);
    }

    /// @notice Whether `payee` has claimed its leaf of (periodId, merchant).
    /// @param periodId The period.
    /// @param merchant The merchant.
    /// @param payee The payee.
    /// @return True once claimed.
    function isClaimed(uint64 periodId, address merchant, address payee) external view returns (bool) {
        (bytes32 key, uint256 mask) = _claimedSlot(periodId, merchant, payee);
        return _claimedWords[key] & mask != 0;
    }

    /// @notice Royalties of (periodId, merchant) held in reserve, in that settlement's token.
    /// @param periodId The period.
    /// @param merchant The merchant.
    /// @return Token minor units.
    function heldOf(uint64 periodId, address merchant) external view returns (uint256) {
        return _held[periodId][merchant];
    }

    /// @notice A merchant's unreserved escrow in `token`.
    /// @param merchant The merchant.
    /// @param token The token.
    /// @return Token minor units.
    function escrowOf(address merchant, address token) external view returns (uint256) {
        return _escrow[merchant][token];
    }

    /// @notice The books of one token: deposited == escrow + reserved + claimed + withdrawn.
    /// @param token The token.
    /// @return The token's totals and allow-list status.
    function totalsOf(address token) external view returns (TokenTotals memory) {
        return _totals[token];
    }

    /// @notice Whether `token` is allow-listed.
    /// @param token The token.
    /// @return True if allow-listed.
    function isTokenAllowed(address token) external view returns (bool) {
        return _totals[token].allowed;
    }

    /// @notice Seconds between a post and the opening of its claims, for settlements posted now.
    /// @return The window.
    function challengeWindow() external view returns (uint40) {
        return _challengeWindow;
    }

    /// @notice The `claimsHash` of a {claimManyFor} authorization: keccak256 over the concatenated
    /// abi.encode(periodId, merchant, amount) of every claim, in order (proofs excluded).
    /// @param claims The claims.
    /// @return keccak256(abi.encode(periodId0, merchant0, amount0, periodId1, merchant1, amount1, ...)).
    function claimsHash(Claim[] calldata claims) external pure returns (bytes32) {
        return _claimsHash(claims);
    }

    /// @notice The leaf hash of a payout (docs/settlement-leaf.md).
    /// @param periodId The period.
    /// @param merchant The merchant.
    /// @param token The settlement's token.
    /// @param payee The payee.
    /// @param amount Token minor units.
    /// @return keccak256(bytes.concat(keccak256(abi.encode(periodId, merchant, token, payee, amount)))).
    function leafHash(uint64 periodId, address merchant, address token, address payee, uint256 amount)
        external
        pure
        returns (bytes32)
    {
        return _leaf(periodId, merchant, token, payee, amount);
    }

    // ------------------------------------------------------------------------------------------
    // Internals
    // ------------------------------------------------------------------------------------------

    function _post(uint64 periodId, address merchant, address token, bytes32 root, uint256 total, uint256 held)
        private
    {
        if (root == bytes32(0)) revert ZeroRoot();
        if (total == 0 && held == 0) revert ZeroAmount(); // held-only posts: {postWithHeld}
        uint256 endsAt = (uint256(uint32(periodId)) + 1) * PERIOD_SECONDS;
        if (block.timestamp < endsAt) revert PeriodNotEnded(periodId, endsAt);
        Settlement storage settlement = _settlements[periodId][merchant];
        SettlementStatus status = settlement.status;
        if (status != SettlementStatus.None && status != SettlementStatus.Cancelled) {
            revert AlreadyPosted(periodId, merchant, status);
        }
        _requireChosenSettler(merchant);
        _spendPeriodBudget(merchant, token, periodId, total + held);
        _spendRateBudget(merchant, token, total + held);
        _reserve(merchant, token, total + held);
        delete _fundedBy[periodId][merchant]; // a cancelled release's id posted anew is funded by escrow
        _record(settlement, periodId, merchant, token, root, total);
        if (held != 0) {
            _held[periodId][merchant] = held;
            emit RoyaltiesHeld(periodId, merchant, token, held);
        }
    }

    /// @dev Writes a posted settlement (a period's, a correction's or a release's root) whose claims open
    /// one challenge window from now on the vault's clock, and announces it.
    function _record(
        Settlement storage settlement,
        uint64 id,
        address merchant,
        address token,
        bytes32 root,
        uint256 total
    ) private {
        uint128 value = SafeCast.toUint128(total);
        uint40 window = _challengeWindow;
        settlement.root = root;
        settlement.token = token;
        settlement.claimsOpenAt = _vaultClock() + window;
        settlement.status = SettlementStatus.Posted;
        settlement.total = value;
        settlement.remaining = value;
        emit SettlementPosted(
            id, merchant, token, root, total, SafeCast.toUint40(block.timestamp) + window, msg.sender
        );
    }

    /// @dev A span of the merchants' rate caps: block time in periods, so spans align with period ids.
    function _currentSpan() internal view override returns (uint32) {
        return uint32(block.timestamp / PERIOD_SECONDS);
    }

    /// @dev The vault's clock ({vaultClock}).
    function _vaultClock() private view returns (uint40) {
        uint40 since = _pausedSince;
        uint40 stopped = since != 0 ? since : SafeCast.toUint40(block.timestamp);
        return stopped - _pausedSeconds;
    }

    /// @dev A time on the vault's clock in unix seconds, as it stands if the vault is not paused again.
    function _wallTime(uint40 vaultTime, uint40 clock) private view returns (uint40) {
        return vaultTime + (SafeCast.toUint40(block.timestamp) - clock);
    }

    /// @dev Moves `amount` of the merchant's escrow in an allow-listed `token` to reserved.
    function _reserve(address merchant, address token, uint256 amount) private {
        TokenTotals storage totals = _totals[token];
        if (!totals.allowed) revert TokenNotAllowed(token);
        uint256 available = _escrow[merchant][token];
        if (available < amount) revert InsufficientEscrow(merchant, token, available, amount);
        _escrow[merchant][token] = available - amount;
        uint128 value = SafeCast.toUint128(amount);
        totals.escrow -= value;
        totals.reserved += value;
    }

    function _setChallengeWindow(uint40 window) private {
        if (window > MAX_CHALLENGE_WINDOW) revert ChallengeWindowTooLong(window, MAX_CHALLENGE_WINDOW);
        if (window < MIN_CHALLENGE_WINDOW) revert ChallengeWindowTooShort(window, MIN_CHALLENGE_WINDOW);
        emit ChallengeWindowChanged(_challengeWindow, window, msg.sender);
        _challengeWindow = window;
    }

    function _requireSettlement(uint64 periodId, address merchant) private view returns (Settlement storage) {
        Settlement storage settlement = _settlements[periodId][merchant];
        if (settlement.status == SettlementStatus.None) revert UnknownSettlement(periodId, merchant);
        return settlement;
    }

    /// @dev Upheld, or posted with its challenge window over (on the vault's clock): claims are open, and
    /// it can no longer be challenged nor cancelled.
    function _isOpen(Settlement storage settlement) private view returns (bool) {
        SettlementStatus status = settlement.status;
        return status == SettlementStatus.Upheld
            || (status == SettlementStatus.Posted && _vaultClock() >= settlement.claimsOpenAt);
    }

    /// @dev The settlement's token if its claims are open now (token, claimsOpenAt and status share a
    /// slot, read once), else reverts with ClaimsNotOpen.
    function _openToken(Settlement storage settlement, uint64 periodId, address merchant)
        private
        view
        returns (address token)
    {
        token = settlement.token;
        uint40 opensAt = settlement.claimsOpenAt;
        SettlementStatus status = settlement.status;
        if (status != SettlementStatus.Upheld) {
            uint40 clock = _vaultClock();
            if (status != SettlementStatus.Posted || clock < opensAt) {
                revert ClaimsNotOpen(periodId, merchant, status, _wallTime(opensAt, clock));
            }
        }
    }

    /// @dev Checks and records every claim of `payee`, paying `to` once per run of claims of one token.
    function _claimAll(Claim[] calldata claims, address payee, address to) private {
        uint256 count = claims.length;
        (address current, uint256 pending) = _claim(claims[0], payee, to);
        for (uint256 i = 1; i < count; ++i) {
            (address token, uint256 amount) = _claim(claims[i], payee, to);
            if (token != current) {
                _pay(current, pending, to);
                current = token;
                pending = 0;
            }
            pending += amount;
        }
        _pay(current, pending, to);
    }

    /// @dev Checks one claim of `payee` and records it (marker, settlement remaining); returns the
    /// settlement's token and the amount. Pays nothing: the caller pays per token (see {_pay}).
    function _claim(Claim calldata c, address payee, address to) private returns (address token, uint256 amount) {
        uint64 periodId = c.periodId;
        address merchant = c.merchant;
        Settlement storage settlement = _settlements[periodId][merchant];
        token = _openToken(settlement, periodId, merchant);
        (bytes32 key, uint256 mask) = _claimedSlot(periodId, merchant, payee);
        uint256 word = _claimedWords[key];
        if (word & mask != 0) revert AlreadyClaimed(periodId, merchant, payee);
        amount = c.amount;
        _verifyLeaf(c, settlement.root, token, payee);
        // Guards the other merchants' reserves against a tree whose leaves sum to more than its total.
        uint128 remaining = settlement.remaining;
        if (amount > remaining) revert ClaimExceedsRemaining(periodId, merchant, remaining, amount);
        _claimedWords[key] = word | mask;
        unchecked {
            settlement.remaining = remaining - uint128(amount); // amount <= remaining
        }
        emit Claimed(periodId, merchant, payee, token, to, amount);
    }

    /// @dev Reverts with InvalidProof unless the claim's leaf (with `token` and `payee`) is in `root`.
    function _verifyLeaf(Claim calldata c, bytes32 root, address token, address payee) private pure {
        uint64 periodId = c.periodId;
        address merchant = c.merchant;
        uint256 amount = c.amount;
        if (!MerkleProof.verifyCalldata(c.proof, root, _leaf(periodId, merchant, token, payee, amount))) {
            revert InvalidProof(periodId, merchant, payee, amount);
        }
    }

    /// @dev Moves `amount` of `token` from reserved to claimed and transfers it to `to` (effects first).
    function _pay(address token, uint256 amount, address to) private {
        if (to == address(this)) revert VaultAsRecipient();
        if (amount == 0) return;
        TokenTotals storage totals = _totals[token];
        // No overflow: `amount` was subtracted from remainings of this token, whose sum is `reserved`.
        uint128 value = uint128(amount);
        uint128 reserved = totals.reserved;
        uint128 claimed = totals.claimed;
        totals.reserved = reserved - value;
        totals.claimed = claimed + value;
        IERC20(token).safeTransfer(to, amount);
    }

    /// @dev keccak256 of the claims' abi.encode(periodId, merchant, amount), 96 bytes per claim, in order.
    function _claimsHash(Claim[] calldata claims) private pure returns (bytes32 result) {
        uint256 count = claims.length;
        bytes memory packed = new bytes(count * 96);
        for (uint256 i = 0; i < count; ++i) {
            Claim calldata c = claims[i];
            uint64 periodId = c.periodId;
            address merchant = c.merchant;
            uint256 amount = c.amount;
            assembly ("memory-safe") {
                let at := add(add(packed, 0x20), mul(i, 96))
                mstore(at, periodId)
                mstore(add(at, 0x20), merchant)
                mstore(add(at, 0x40), amount)
            }
        }
        assembly ("memory-safe") {
            result := keccak256(add(packed, 0x20), mload(packed))
        }
    }

    function _claimedSlot(uint64 periodId, address merchant, address payee)
        private
        pure
        returns (bytes32 key, uint256 mask)
    {
        key = keccak256(abi.encode(payee, merchant, periodId >> 8));
        mask = 1 << (periodId & 0xff);
    }

    function _leaf(uint64 periodId, address merchant, address token, address payee, uint256 amount)
        private
        pure
        returns (bytes32)
    {
        return keccak256(bytes.concat(keccak256(abi.encode(periodId, merchant, token, payee, amount))));
    }
}
