"""Brownie's transaction confirmation on anvil: wait for the receipt before judging a transaction dropped.

Brownie 1.22 (``TransactionReceipt._await_confirmation``) reads the sender's nonce, then the receipt, and
calls a transaction *dropped* ("Tx dropped without known replacement") when the nonce has moved past it but
no receipt is found. On a public network that means another transaction took its nonce. anvil 1.x, while
it mines, can answer the sender's new nonce before it answers the transaction's receipt: the transaction
is mined, and brownie raises. The window is short; a 100-asset catalogue (about 15 million gas, 200 logs)
on a busy two-core machine hits it a few times in forty (the contract suite failed on it once).

:func:`install` makes brownie first wait, by transaction hash, for the receipt when the node is anvil
(which never replaces a transaction: it mines each one as it arrives) and only then run brownie's own
check, which then finds the receipt at once. Against any other node nothing changes. If no receipt shows
within :data:`RECEIPT_WAIT_SECONDS`, brownie's own check decides, as before.

Used by the contract tests (tests/contracts/conftest.py) and the deployment script (scripts/deploy.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

RECEIPT_WAIT_SECONDS = 60.0
"""How long to wait for an anvil receipt before leaving the decision to brownie."""

_POLL_SECONDS = 0.02
_anvil_endpoints: dict[str, bool] = {}


def _node_is_anvil(web3: Any) -> bool:
    """Whether brownie's web3 is connected to anvil (asked once per endpoint)."""
    endpoint = str(getattr(web3.provider, "endpoint_uri", ""))
    if endpoint not in _anvil_endpoints:
        try:
            _anvil_endpoints[endpoint] = str(web3.client_version).lower().startswith("anvil")
        except Exception:  # a node that will not say is treated as not anvil
            _anvil_endpoints[endpoint] = False
    return _anvil_endpoints[endpoint]


def _receipt_first(original: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(original)
    def await_confirmation(self: Any, block_number: int | None = None, required_confs: int = 1) -> None:
        from brownie.network import web3
        from web3.exceptions import TimeExhausted

        if self.sender is not None and _node_is_anvil(web3):
            # no receipt in time: brownie's own nonce check decides, as without this wait
            with contextlib.suppress(TimeExhausted):
                web3.eth.wait_for_transaction_receipt(
                    self.txid, timeout=RECEIPT_WAIT_SECONDS, poll_latency=_POLL_SECONDS
                )
        original(self, block_number, required_confs)

    await_confirmation.__edgeledger_receipt_first__ = True  # type: ignore[attr-defined]
    return await_confirmation


def install() -> None:
    """Patches brownie's ``TransactionReceipt._await_confirmation`` (once; later calls do nothing)."""
    from brownie.network.transaction import TransactionReceipt

    current = TransactionReceipt._await_confirmation
    if getattr(current, "__edgeledger_receipt_first__", False):
        return
    TransactionReceipt._await_confirmation = _receipt_first(current)  # type: ignore[method-assign]
