"""What the server prepares for the browser's wallet, in a form the wallet takes exactly.

:func:`js_safe`: typed data and calldata arguments with integers beyond 2**53 as decimal strings (a
browser's ``JSON.parse`` would round a uint256 such as a territories bitmap; EIP-712 encodes the string
``"123"`` and the number ``123`` alike, so the signature is the same). Signature deadlines are counted
on the chain's clock where the typed data is made (``assets.updates``, ``settlement.claims``).
"""

from __future__ import annotations

from typing import Any

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
