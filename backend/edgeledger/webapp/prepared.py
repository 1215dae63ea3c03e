"""What the server prepares for the browser's wallet, in a form the wallet takes exactly.

* :func:`js_safe`: typed data and calldata arguments with integers beyond 2**53 as decimal strings (a
  browser's ``JSON.parse`` would round a uint256 such as a territories bitmap; EIP-712 encodes the string
  ``"123"`` and the number ``123`` alike, so the signature is the same);
* :func:`deadline`: signature deadlines counted from the chain's clock (what the contracts compare with),
  so a deadline is never already past on a chain whose time runs ahead of this server's.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from typing import Any

from web3.exceptions import Web3Exception

from edgeledger.chain.client import ChainClient, ChainError

#: The largest integer a browser's JSON.parse keeps exactly (2**53 - 1).
JS_SAFE_INTEGER = 2**53 - 1


def js_safe(value: Any) -> Any:
    """``value`` with every integer beyond :data:`JS_SAFE_INTEGER` as a decimal string: a uint256 such as
    a territories bitmap would otherwise reach the wallet rounded (EIP-712 encodes "123" and 123 alike)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return str(value) if abs(value) > JS_SAFE_INTEGER else value
    if isinstance(value, dict):
        return {k: js_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [js_safe(v) for v in value]
    return value


def deadline(chain: ChainClient, seconds: int) -> int:
    """A signature's deadline ``seconds`` ahead of the chain's clock (what the contracts compare with), or of
    this server's when that is later."""
    now = int(datetime.now(UTC).timestamp())
    with contextlib.suppress(ChainError, Web3Exception, ValueError, OSError):
        now = max(now, int(chain.w3.eth.get_block("latest")["timestamp"]))
    return now + seconds
