"""Keccak-256 and the hex forms every on-chain value takes (bytes32 as ``0x`` + 64 lower-case hex digits).

Keccak-256: ``_pysha3.keccak_256`` (safe-pysha3, a dependency of eth-brownie, pinned in requirements.lock)
is the fastest implementation in the venv. Per call ``keccak(x).digest()``, measured on the dev container
(Python 3.11, best of 5, timeit):

    implementation                                   32 bytes   64 bytes
    _pysha3.keccak_256(x).digest()                     550 ns     540 ns
    Crypto.Hash.keccak.new(digest_bits=256, data=x)   3600 ns    3630 ns   (pycryptodome)
    eth_hash.auto.keccak(x)  (selects pycryptodome)   4000 ns    3940 ns
    eth_hash Keccak256 with its pysha3 backend         720 ns     725 ns

pycryptodome pays for its Python-level wrapper around the C code (object set-up, keyword handling, one
foreign call per step); pysha3 is a plain C type whose cost is almost all the Keccak-f permutation (a
352-byte record encoding takes three permutations, ~1.3 us). Without pysha3 the module falls back to
pycryptodome (same digests, about 7x slower per hash). ``hashlib.sha3_256`` is *not* Keccak-256 (different
padding).
"""

from __future__ import annotations

from typing import Any

try:
    from _pysha3 import keccak_256 as keccak_hasher  # type: ignore[import-not-found]

    KECCAK_IMPLEMENTATION = "pysha3"
except ImportError:  # pragma: no cover - safe-pysha3 is in requirements.lock
    from Crypto.Hash import keccak as _cryptodome_keccak

    def keccak_hasher(data: bytes = b"") -> Any:
        return _cryptodome_keccak.new(digest_bits=256, data=data)

    KECCAK_IMPLEMENTATION = "pycryptodome"

__all__ = [
    "KECCAK_IMPLEMENTATION",
    "ZERO32",
    "FormatError",
    "bytes32",
    "hex32",
    "keccak256",
    "keccak_hasher",
]

ZERO32 = "0x" + "00" * 32


class FormatError(ValueError):
    """A value that cannot take its on-chain form (wrong length, out of range, not an address, ...).

    ``code`` is machine-readable; the API answers it as a 422 with that code."""

    def __init__(self, message: str, *, code: str = "invalid_format") -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def keccak256(data: bytes) -> bytes:
    """Keccak-256 (Ethereum's, not NIST SHA3-256) of ``data``."""
    digest: bytes = keccak_hasher(data).digest()
    return digest


def hex32(value: bytes) -> str:
    """``0x`` + lower-case hex of a byte string (bytes32 values, hashes, ids)."""
    return "0x" + value.hex()


def bytes32(value: str) -> bytes:
    """The 32 bytes of ``0x``-prefixed (or bare) hex; ValueError for any other length."""
    raw = bytes.fromhex(value.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes of hex, got {len(raw)}")
    return raw
