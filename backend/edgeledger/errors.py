"""Errors every API response shares: ``{"error": {"code", "message", "details"}}`` with a 4xx/5xx status.

Each domain raises its own subclass of :class:`EdgeLedgerError` (no web, database or worker code here, so
any module may import it); the handlers installed by ``api_errors.install_error_handlers`` turn them (and
FastAPI's validation errors) into that shape.
"""

from __future__ import annotations

from typing import Any


class EdgeLedgerError(Exception):
    """Base of all domain errors: a machine-readable ``code``, a human ``message``, an HTTP ``status``."""

    status: int = 400
    code: str = "bad_request"

    def __init__(
        self, message: str, *, code: str | None = None, status: int | None = None, **details: Any
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.details = details

    def to_body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def error_body(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "details": details}}
