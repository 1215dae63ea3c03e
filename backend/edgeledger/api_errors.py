"""The API's error handlers: every failure answers ``{"error": {"code", "message", "details"}}`` with a
4xx/5xx status (errors.py defines the shape; this module is the web layer that installs it)."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError, StatementError
from starlette.exceptions import HTTPException as StarletteHTTPException

from edgeledger.errors import EdgeLedgerError, error_body
from edgeledger.ledger.hashing import FormatError

log = logging.getLogger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(EdgeLedgerError)
    async def _domain_error(_: Request, exc: EdgeLedgerError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("%s: %s", exc.code, exc.message)
        retry_after = exc.details.get("retry_after")
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
        return JSONResponse(exc.to_body(), status_code=exc.status, headers=headers)

    @app.exception_handler(FormatError)
    async def _format_error(_: Request, exc: FormatError) -> JSONResponse:
        # A value that cannot take its on-chain form (ledger/): the caller's input.
        return JSONResponse(error_body(exc.code, exc.message), status_code=422)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = problems[0] if problems else {"field": "", "problem": "invalid request"}
        message = f"invalid request: {first['field']}: {first['problem']}"
        return JSONResponse(error_body("validation_error", message, problems=problems), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 401: "unauthenticated", 403: "forbidden"}.get(
            exc.status_code, "http_error"
        )
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(StatementError)
    async def _unstorable(_: Request, exc: StatementError) -> JSONResponse:
        if isinstance(exc, OperationalError):
            # The database went away mid-request (restart, failover, killed connection): nothing half
            # written (the transaction is lost with the connection); the client can retry.
            log.warning("database unavailable: %s", type(exc.orig).__name__)
            message = "the database is unavailable; retry (work already committed is kept, nothing twice)"
            return JSONResponse(error_body("database_unavailable", message), status_code=503)
        # The database refused a value the schema let through (a NUL character, an integer beyond 64
        # bits, ...): the client's input, not our fault; the transaction is rolled back with the session.
        if isinstance(exc, DataError) or isinstance(exc.orig, ValueError | OverflowError):
            log.info("refused unstorable input: %s", type(exc.orig).__name__)
            message = (
                "a value in the request cannot be stored or searched (NUL character or number out of range)"
            )
            return JSONResponse(error_body("invalid_input", message), status_code=422)
        log.exception("database statement failed")
        return JSONResponse(
            error_body("internal_error", "internal error; it has been logged"), status_code=500
        )

    @app.exception_handler(ValueError)
    async def _nul_or_bug(_: Request, exc: ValueError) -> JSONResponse:
        # psycopg2 refuses NUL characters in strings before sending them (unwrapped ValueError).
        if "NUL" in str(exc):
            return JSONResponse(
                error_body("invalid_input", "a string in the request contains a NUL character"),
                status_code=422,
            )
        log.exception("unhandled error")
        return JSONResponse(
            error_body("internal_error", "internal error; it has been logged"), status_code=500
        )

    @app.exception_handler(OverflowError)
    async def _too_large(_: Request, exc: OverflowError) -> JSONResponse:
        # SQLite's driver raises this unwrapped for an integer parameter beyond 64 bits.
        log.warning("refused out-of-range input: %s", exc)
        message = "a number in the request is out of range (at most 64 bits)"
        return JSONResponse(error_body("invalid_input", message), status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error")
        return JSONResponse(
            error_body("internal_error", "internal error; it has been logged"), status_code=500
        )
