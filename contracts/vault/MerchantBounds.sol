// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title MerchantBounds
/// @notice A merchant's own bounds on what the settler keys may do with its escrow: the most one period may
/// reserve from it in a token, over all the period's postings (its own settlement and its corrections,
/// held royalties included); the most all postings together may reserve from it in a token within one
/// span of block time (the rate cap, whatever periods they name); and the only settler that may post for
/// it. Set by the merchant alone, from
/// its own address; no role can change them. The chosen settler binds releases of held royalties (which
/// take nothing from escrow) only while it holds the settler role, so that a merchant cannot freeze what
/// it owes the rights holders: revoking the chosen settler's role lets any settler release.
/// @dev Abstract: the vault calls {_requireChosenSettler}, {_spendPeriodBudget} and {_spendRateBudget} on
/// every posting that reserves from escrow, and {_refundPeriodBudget} when a cancel returns such a reserve
/// to escrow.
///
/// A period is the low 32 bits of a settlement id: the period's own settlement `p` and its supplementary
/// ids `p + (n << 32)` share one budget per (merchant, token). What a period reserved from escrow is
/// tracked on every posting, whether or not the merchant set a cap, so a cap set (or lowered) mid-period
/// counts the postings already made. A release of held royalties takes nothing from escrow (it pays from
/// a reserve the period already counted) and is not counted. No event of its own: the sum follows from
/// the vault's `SettlementPosted` (`total`) and `RoyaltiesHeld` (`held`) of each posting, less the
/// `returned` of each cancelling `SettlementResolved` of a settlement that was not a release (`HeldReleased`).
///
/// The period cap alone does not bound the total: a settler key could post roots for many past periods,
/// each within its period's cap. The rate cap does: spans are stretches of block time one vault period
/// long (PERIOD_SECONDS), aligned like period ids, and what all postings for the merchant reserved in a token
/// within the current span, held royalties included, may not exceed it. Over any `t` seconds the settler
/// keys together reserve at most `rateCap * (ceil(t / span) + 1)`; a merchant (or auditor) that looks at
/// least once per challenge window can challenge every one of them before its claims open. What a span
/// reserved is tracked on every posting, whether or not a rate cap is set, so a cap set mid-span counts
/// the span's postings. A cancel does not give back to the span (the vault does not record the span a
/// posting fell in): it waits at most one span. The stored sum saturates at 2**112 - 1, far above any
/// real amount, so it never reverts on overflow; the cap is checked against the unsaturated sum.
abstract contract MerchantBounds {
    /// @dev Per merchant and token, one slot: the rate cap (0: no bound), what postings reserved in
    /// `span`, and the span they fell in (block time divided by the span length).
    struct RateBudget {
        uint112 cap;
        uint112 spent;
        uint32 span;
    }

    /// @dev Per merchant and token: the most one period may reserve from escrow (0: no bound).
    mapping(address merchant => mapping(address token => uint256)) private _periodCap;
    /// @dev Per merchant: the only settler that may post for it (zero: any SETTLER_ROLE holder).
    mapping(address merchant => address) private _chosenSettler;
    /// @dev Per merchant, token and period: what the period's postings reserved from escrow, held
    /// royalties included, less what cancels gave back to escrow.
    mapping(address merchant => mapping(address token => mapping(uint32 period => uint256))) private
        _periodReserved;
    /// @dev Per merchant and token: the rate cap and what the current span's postings reserved.
    mapping(address merchant => mapping(address token => RateBudget)) private _rate;

    /// @notice A posting would take what one period reserved from `merchant`'s escrow in `token` past
    /// the merchant's cap.
    /// @param cap The merchant's cap ({setPeriodCap}).
    /// @param requested What the period would then have reserved in all: {periodReservedOf} before the
    /// posting plus the posting's own amount (its total and held royalties).
    error PeriodCapExceeded(address merchant, address token, uint256 cap, uint256 requested);
    error SettlerNotChosen(address merchant, address chosen, address caller);
    /// @notice A posting would take what all postings reserved from `merchant`'s escrow in `token` within
    /// the current span of block time past the merchant's rate cap.
    /// @param cap The merchant's rate cap ({setRateCap}).
    /// @param requested What the span would then have reserved in all: {rateSpentOf} before the posting
    /// plus the posting's own amount.
    error RateCapExceeded(address merchant, address token, uint256 cap, uint256 requested);
    /// @notice A rate cap above 2**112 - 1 (use 0 for no bound).
    error RateCapTooLarge(uint256 cap);

    /// @notice A merchant bounded what one period may reserve from its escrow in `token` (0: unbounded).
    event PeriodCapSet(address indexed merchant, address indexed token, uint256 cap);
    /// @notice A merchant bounded what all postings may reserve from its escrow in `token` within one span
    /// of block time (0: unbounded).
    event RateCapSet(address indexed merchant, address indexed token, uint256 cap);
    /// @notice A merchant chose the only settler that may post for it (zero: any settler).
    event SettlerChosen(address indexed merchant, address indexed settler);

    /// @notice Bounds what one period may reserve from the caller's escrow in `token`, over all its
    /// postings: the period's root and its corrections (supplementary ids with the same low 32 bits),
    /// held royalties included. A posting that would take the period's sum past the cap reverts
    /// PeriodCapExceeded; a cancelled posting gives its amount back to the period. Zero removes the
    /// bound. Takes effect on the next posting, counting what the period already reserved; nothing
    /// already reserved moves. Whatever a settler key does, it cannot reserve more than this per period.
    /// @param token The token.
    /// @param cap Token minor units (0: unbounded).
    function setPeriodCap(address token, uint256 cap) external {
        _periodCap[msg.sender][token] = cap;
        emit PeriodCapSet(msg.sender, token, cap);
    }

    /// @notice Bounds what all postings together, for any periods, may reserve from the caller's escrow in
    /// `token` within one span of block time (the vault's period length, aligned like period ids), held
    /// royalties included. A posting that would take the span's sum past it reverts RateCapExceeded.
    /// Zero removes the bound. Takes effect on the next posting, counting what the current span already
    /// reserved. With it, however many past periods a settler key posts for, it reserves at most this much
    /// per span, and the merchant has a whole challenge window to challenge each posting.
    /// @param token The token.
    /// @param cap Token minor units, at most 2**112 - 1 (0: unbounded).
    function setRateCap(address token, uint256 cap) external {
        if (cap > type(uint112).max) revert RateCapTooLarge(cap);
        _rate[msg.sender][token].cap = uint112(cap);
        emit RateCapSet(msg.sender, token, cap);
    }

    /// @notice Chooses the only SETTLER_ROLE holder that may post roots and releases for the caller
    /// (zero: any settler). Another settler key, even a compromised one, then cannot post for it; it can
    /// release held royalties only once the chosen address no longer holds the role.
    /// @param settler The settler's address, or zero.
    function chooseSettler(address settler) external {
        _chosenSettler[msg.sender] = settler;
        emit SettlerChosen(msg.sender, settler);
    }

    /// @notice The bounds `merchant` set itself in `token`.
    /// @param merchant The merchant.
    /// @param token The token.
    /// @return cap The most one period may reserve (0: no bound).
    /// @return settler The only settler that may post for it (zero: any).
    /// @return rateCap The most all postings may reserve within one span of block time (0: no bound).
    /// @return rateSpent What the current span's postings reserved ({rateSpentOf}).
    function boundsOf(address merchant, address token)
        external
        view
        returns (uint256 cap, address settler, uint256 rateCap, uint256 rateSpent)
    {
        uint256 rateCap_ = _rate[merchant][token].cap;
        return (_periodCap[merchant][token], _chosenSettler[merchant], rateCap_, _rateSpent(merchant, token));
    }

    /// @notice What all postings for `merchant` reserved from its escrow in `token` within the current
    /// span of block time, held royalties included (cancels do not give back): the sum the rate cap bounds.
    /// @param merchant The merchant.
    /// @param token The token.
    /// @return Token minor units.
    function rateSpentOf(address merchant, address token) external view returns (uint256) {
        return _rateSpent(merchant, token);
    }

    /// @dev What the current span's postings reserved (0 once the span recorded is over).
    function _rateSpent(address merchant, address token) private view returns (uint256) {
        RateBudget storage rate = _rate[merchant][token];
        return rate.span == _currentSpan() ? rate.spent : 0;
    }

    /// @notice What the postings of one period reserved from `merchant`'s escrow in `token`, held
    /// royalties included, less what cancels returned to escrow: the sum the merchant's cap bounds.
    /// Releases of held royalties are not in it (they pay from a reserve already counted); payouts
    /// claimed since stay in it.
    /// @param merchant The merchant.
    /// @param token The token.
    /// @param periodId Any settlement id of the period: its low 32 bits name the period.
    /// @return Token minor units.
    function periodReservedOf(address merchant, address token, uint64 periodId) external view returns (uint256) {
        return _periodReserved[merchant][token][uint32(periodId)];
    }

    /// @dev Reverts unless the caller is the merchant's chosen settler (when it chose one).
    function _requireChosenSettler(address merchant) internal view {
        address chosen = _chosenSettler[merchant];
        if (chosen != address(0) && chosen != msg.sender) revert SettlerNotChosen(merchant, chosen, msg.sender);
    }

    /// @dev As {_requireChosenSettler}, but a chosen settler that cannot act (`canSettle` false: it
    /// holds no settler role) binds nobody: for payouts the merchant owes others (held royalties), which
    /// its choice must not be able to freeze.
    function _requireChosenSettlerIfAble(address merchant, bool canSettle) internal view {
        address chosen = _chosenSettler[merchant];
        if (chosen != address(0) && chosen != msg.sender && canSettle) {
            revert SettlerNotChosen(merchant, chosen, msg.sender);
        }
    }

    /// @dev The merchant's chosen settler (zero: none).
    function _chosenSettlerOf(address merchant) internal view returns (address) {
        return _chosenSettler[merchant];
    }

    /// @dev Counts `amount` reserved from escrow in `token` by a posting of settlement `id` against its
    /// period's budget; reverts when the period's sum would then exceed the merchant's cap.
    function _spendPeriodBudget(address merchant, address token, uint64 id, uint256 amount) internal {
        mapping(uint32 => uint256) storage reservedOf = _periodReserved[merchant][token];
        uint256 reserved = reservedOf[uint32(id)] + amount;
        uint256 cap = _periodCap[merchant][token];
        if (cap != 0 && reserved > cap) revert PeriodCapExceeded(merchant, token, cap, reserved);
        reservedOf[uint32(id)] = reserved;
    }

    /// @dev Counts `amount` reserved from escrow in `token` against the current span's rate budget;
    /// reverts when the span's sum would then exceed the merchant's rate cap. One slot read and written.
    function _spendRateBudget(address merchant, address token, uint256 amount) internal {
        RateBudget storage rate = _rate[merchant][token];
        uint32 span = _currentSpan();
        uint256 spent = (rate.span == span ? rate.spent : 0) + amount;
        uint256 cap = rate.cap;
        if (cap != 0 && spent > cap) revert RateCapExceeded(merchant, token, cap, spent);
        rate.spent = spent > type(uint112).max ? type(uint112).max : uint112(spent);
        rate.span = span;
    }

    /// @dev The current span of block time: the vault's period length, aligned like period ids.
    function _currentSpan() internal view virtual returns (uint32);

    /// @dev Gives `amount` back to the budget of settlement `id`'s period: a cancel returned it to escrow.
    /// It was counted by the settlement's own posting, so the sum never goes below zero.
    function _refundPeriodBudget(address merchant, address token, uint64 id, uint256 amount) internal {
        _periodReserved[merchant][token][uint32(id)] -= amount;
    }
}
