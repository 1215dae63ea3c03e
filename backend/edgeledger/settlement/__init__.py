"""Off-chain settlement: rate cards and FX (rates), CDN billing import and reconciliation (billing), and the
deterministic payout computation (payouts), and the assets' terms read from the chain at a recorded block
(terms). Those four are pure (terms only reads through a call it is given): no database or clock, so a
statement can be recomputed by anyone from the anchored data, the rate card, the recorded decisions and
the chain at the recorded block; so is held (what becomes of held royalties, and a release's statement).
The database and chain steps: period_inputs (what a computation reads), flows (the period state machine:
open, compute, post, follow), releases (releases of held royalties), corrections (late records of a
settled period), posting (one post in flight per merchant, and the vault's checks before a post), post_tx
(a post's one transaction: recorded before it leaves, replaced at its nonce bidding more when stuck), bounds
(the merchant's own bounds in the vault, checked before a post), claims (proofs,
claimMany, relaying, the payee's ledger), service (accounts and their
escrow in the vault, rate cards, FX table, billing imports, cases), tasks; statements, statement_html and
charts render; views, schemas and cli are the API and the command line.

Money is always an ``int`` of minor units; see docs/settlement.md for the formulas and rounding rules.
"""

from __future__ import annotations

from edgeledger.errors import EdgeLedgerError


class SettlementError(EdgeLedgerError):
    """Inputs that cannot be settled (bad rate card, missing FX rate, open reconciliation case, ...)."""

    status = 422
    code = "settlement_invalid"
