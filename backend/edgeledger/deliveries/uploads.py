"""Log uploads over HTTP and the ingest views: the request body streamed into ``ingest.ingest_log`` while it
arrives (multipart or raw, bounded by MAX_UPLOAD_BYTES; with INGEST_MODE=queue into
``ingest_queue.enqueue_upload``, stored and enqueued for the ingest workers), who may upload to and read a
source's ingests, and the paged listings of ingests and quarantined lines (docs/ingestion.md).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio.from_thread
from fastapi import Request
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.datastructures import UploadFile as StarletteUploadFile
from starlette.requests import ClientDisconnect

from edgeledger.auth.dependencies import Principal
from edgeledger.auth.models import Role
from edgeledger.config import Settings
from edgeledger.db import utcnow
from edgeledger.deliveries import ingest_queue, service
from edgeledger.deliveries.ingest import IngestFileRead, QuarantinedLineRead
from edgeledger.deliveries.ingest import ingest_log as _ingest_log
from edgeledger.deliveries.models import (
    DeliverySource,
    IngestFile,
    IngestState,
    QuarantinedLineRow,
    SourceStatus,
)


class Page(BaseModel):
    total: int
    limit: int
    offset: int


class IngestFilePage(Page):
    items: list[IngestFileRead]


class QuarantinePage(Page):
    items: list[QuarantinedLineRead]


MAX_PAGE = 1_000


def _page_bounds(limit: int, offset: int) -> tuple[int, int]:
    if limit < 1 or limit > MAX_PAGE or offset < 0:
        raise service.DeliveryError(
            f"limit must be 1..{MAX_PAGE} and offset >= 0", code="bad_page", limit=limit, offset=offset
        )
    return limit, offset


def authorize_ingest(principal: Principal, source: DeliverySource) -> None:
    """Admins, or the operator account the source belongs to, may push its logs."""
    if principal.is_admin:
        return
    if principal.role == Role.operator and principal.user_id == source.operator_user_id:
        return
    raise service.DeliveryError(
        f"only an admin or the operator of source {source.name!r} may push its logs",
        code="forbidden",
        status=403,
    )


class RequestBody:
    """The raw request body as a blocking binary file, for a sync endpoint running in a worker thread.

    Each ``read`` pulls the next chunk from Starlette's receive stream on the event loop
    (``anyio.from_thread.run``), so a chunked upload of any size is parsed as it arrives and never held
    whole in memory.
    """

    def __init__(self, request: Request, max_bytes: int) -> None:
        self._chunks = request.stream().__aiter__()
        self._buffer = b""
        self._done = False
        self._max = max_bytes
        self.received = 0

    def readable(self) -> bool:
        return True

    def _next_chunk(self) -> bytes:
        try:
            chunk: bytes = anyio.from_thread.run(self._chunks.__anext__)
        except StopAsyncIteration:
            self._done = True
            return b""
        except ClientDisconnect:
            raise service.DeliveryError(
                "the client went away before the upload was complete", code="upload_interrupted", status=400
            ) from None
        self.received += len(chunk)
        if self.received > self._max:
            raise service.DeliveryError(
                f"upload larger than {self._max} bytes", code="upload_too_large", status=413
            )
        return chunk

    def read(self, size: int = -1) -> bytes:
        if size < 0:
            parts = [self._buffer]
            while not self._done:
                parts.append(self._next_chunk())
            self._buffer = b""
            return b"".join(parts)
        while len(self._buffer) < size and not self._done:
            self._buffer += self._next_chunk()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


def ingest_request(
    session: Session,
    settings: Settings,
    principal: Principal,
    ref: str,
    request: Request,
    *,
    name: str | None,
    log_format: str | None,
    multipart_allowed: bool = True,
    undeclared_format: str | None = None,
) -> IngestFile:
    """POST .../logs and .../stream: checks first (404, 403, 409), then streams the body to ingest_log.
    The format: ``log_format``, else the source's declared one, else ``undeclared_format`` if given,
    else detected.

    A ``multipart/form-data`` body must carry the log in the field ``file`` (Starlette spools the part to
    a temporary file past 1 MiB); any other body is the log itself, named by ``?name=``.
    """
    source = service.get_source(session, ref)
    authorize_ingest(principal, source)
    # INGEST_MODE=queue: store the body and enqueue it (202); workers parse it (ingest_queue).
    ingest_log = _ingest_log if settings.ingest_mode == "inline" else ingest_queue.enqueue_upload
    if source.status == SourceStatus.suspended:
        raise service.DeliveryError(
            f"source {source.name!r} is suspended", code="source_suspended", status=409, source=source.name
        )
    # ``undeclared_format`` (the stream endpoint's edge-node JSON) stands in for detection only: an explicit
    # ``log_format`` and then the source's declared one come first (ingest_log).
    log_format = log_format or source.log_format or undeclared_format
    content_type = request.headers.get("content-type", "")
    if multipart_allowed and content_type.startswith("multipart/form-data"):
        form = anyio.from_thread.run(partial(request.form, max_files=1, max_fields=10))
        try:
            upload = form.get("file")
            if not isinstance(upload, StarletteUploadFile):
                raise service.DeliveryError("multipart upload without a 'file' part", code="missing_file")
            return ingest_log(
                session,
                settings,
                source,
                upload.file,
                name=name or upload.filename or "upload",
                created_by=principal.user_id,
                log_format=log_format,
            )
        finally:
            anyio.from_thread.run(form.close)
    body = RequestBody(request, settings.max_upload_bytes)
    default_name = f"{source.name}-{utcnow().strftime('%Y%m%dT%H%M%SZ')}.log"
    return ingest_log(
        session,
        settings,
        source,
        body,
        name=name or default_name,
        created_by=principal.user_id,
        log_format=log_format,
    )


def _visible_ingests(principal: Principal) -> Any:
    """Operators see the ingests of their own sources; admins and auditors all (a scoped auditor those
    of its sources)."""
    query = select(IngestFile)
    if principal.role == Role.operator:
        mine = select(DeliverySource.id).where(DeliverySource.operator_user_id == principal.user_id)
        query = query.where(IngestFile.source_pk.in_(mine))
    elif not principal.scope.is_global and not principal.is_admin:
        scoped = select(DeliverySource.id).where(
            DeliverySource.source_id.in_(sorted(principal.scope.sources))
        )
        query = query.where(IngestFile.source_pk.in_(scoped))
    return query


def list_ingests(
    session: Session,
    principal: Principal,
    *,
    source: str | None,
    state: str | None,
    limit: int,
    offset: int,
) -> IngestFilePage:
    limit, offset = _page_bounds(limit, offset)
    query = _visible_ingests(principal)
    if source is not None:
        query = query.where(IngestFile.source_pk == service.get_source(session, source).id)
    if state is not None:
        if state not in set(IngestState):
            raise service.DeliveryError(f"unknown ingest state {state!r}", code="bad_state", state=state)
        query = query.where(IngestFile.state == state)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(IngestFile.id.desc()).limit(limit).offset(offset))
    return IngestFilePage(
        total=total, limit=limit, offset=offset, items=[IngestFileRead.model_validate(r) for r in rows]
    )


def get_ingest(session: Session, principal: Principal, ingest_id: int) -> IngestFile:
    found = session.scalar(_visible_ingests(principal).where(IngestFile.id == ingest_id))
    if found is None:
        raise service.DeliveryError(f"no ingest {ingest_id}", code="ingest_not_found", status=404)
    return found


def list_quarantine(
    session: Session, principal: Principal, ingest_id: int, *, limit: int, offset: int
) -> QuarantinePage:
    limit, offset = _page_bounds(limit, offset)
    ingest = get_ingest(session, principal, ingest_id)
    where = QuarantinedLineRow.ingest_file_pk == ingest.id
    total = session.scalar(select(func.count()).select_from(QuarantinedLineRow).where(where)) or 0
    rows = session.scalars(
        select(QuarantinedLineRow)
        .where(where)
        .order_by(QuarantinedLineRow.line_number, QuarantinedLineRow.id)
        .limit(limit)
        .offset(offset)
    )
    return QuarantinePage(
        total=total, limit=limit, offset=offset, items=[QuarantinedLineRead.model_validate(r) for r in rows]
    )
