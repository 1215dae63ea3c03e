"""The SettlementVault's on-chain vocabulary, shared by the server and the verifiers: the status
``settlementOf`` returns and the layout of supplementary settlement ids (docs/settlement-leaf.md).

One definition, so the settlement worker and an auditor's verifier can never read a status number or a
correction's id differently. Pure data: no database, web or worker code.
"""

from __future__ import annotations

from enum import IntEnum


class SettlementStatus(IntEnum):
    """``SettlementVault.SettlementStatus``, in the contract's order."""

    NONE = 0
    POSTED = 1
    CHALLENGED = 2
    UPHELD = 3
    CANCELLED = 4


#: Supplementary settlements' ids (corrections and releases): ``period id + (sequence << 32)``,
#: sequence >= 1; the low 32 bits name the period (``PERIOD_MASK``).
SUPPLEMENT_SHIFT = 32
PERIOD_MASK = (1 << SUPPLEMENT_SHIFT) - 1
