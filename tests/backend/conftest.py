"""Shared fixtures of the backend tests (real databases, IPFS node and chain)."""

from pathlib import Path

_SUPPORT = Path(__file__).parent / "support"
pytest_plugins = [
    f"tests.backend.support.{name}"
    for name in ("database", "ipfs", "stack", "services", "scenes", "browser", "money")
    if (_SUPPORT / f"{name}.py").exists()
]
