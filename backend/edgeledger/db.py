"""Engine, sessions and the declarative base. Schema changes go through Alembic (migrations/)."""

from __future__ import annotations

import fcntl
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import anyio
from fastapi import Request
from sqlalchemy import DateTime, Engine, MetaData, Numeric, String, create_engine, event, func, select, text
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator, TypeEngine

from edgeledger.config import get_settings

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite stores them naive)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


#: the widest token amount a column holds: the vault counts in uint128, leaves carry uint256
TOKEN_AMOUNT_DIGITS = 78


class TokenAmount(TypeDecorator[int]):
    """A non-negative token amount in minor units, exact up to 2^256 - 1 on every backend: NUMERIC(78, 0)
    on PostgreSQL; on SQLite, whose integers stop at 2^63 - 1 (and whose numeric columns turn longer
    numbers into lossy floats), decimal text zero-padded to 78 digits, so that text order is numeric
    order (``ORDER BY amount``) and equality is exact. Python sees ``int`` either way; sums are taken in
    Python, never in SQL."""

    impl = Numeric(TOKEN_AMOUNT_DIGITS, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(TOKEN_AMOUNT_DIGITS))
        return dialect.type_descriptor(Numeric(TOKEN_AMOUNT_DIGITS, 0))

    def process_bind_param(self, value: int | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool):  # never a float or a fraction, rounded
            raise TypeError(f"token amount {value!r} is not an int")
        amount = value
        if amount < 0 or amount >= 10**TOKEN_AMOUNT_DIGITS:
            raise ValueError(f"token amount {amount} outside 0 .. 10^{TOKEN_AMOUNT_DIGITS} - 1")
        return f"{amount:0{TOKEN_AMOUNT_DIGITS}d}" if dialect.name == "sqlite" else Decimal(amount)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


def utcnow() -> datetime:
    return datetime.now(UTC)


def normalize_url(url: str) -> str:
    """SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3; this project ships psycopg2."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int = 10) -> Engine:
    """An engine for ``url``: SQLite with its pragmas, or a pool of at most ``pool_size`` +
    ``max_overflow`` connections (``DB_POOL_SIZE``, ``DB_MAX_OVERFLOW`` for the API)."""
    url = normalize_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow)


@lru_cache(maxsize=1)
def get_engine() -> Engine:
    return make_engine(get_settings().resolved_database_url)


@lru_cache(maxsize=1)
def get_sessionmaker() -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(), expire_on_commit=False)


async def get_session(request: Request) -> AsyncIterator[Session]:
    """FastAPI dependency: one session per request (from the app's engine), closed (rolled back unless
    committed) when the request is done.

    An async generator on purpose: FastAPI runs a sync dependency in the thread pool, one hand-off per
    dependency and two for a sync generator, and each costs more CPU than most read endpoints' own work
    (see server.py and docs/operations.md, "Read paths"). Creating a session does no I/O, so it happens in
    the event loop; closing returns the connection to the pool (a ROLLBACK on the wire), so it runs in a
    worker thread, and only when the session still holds a transaction."""
    session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        if session.in_transaction():
            # A limiter of its own, as FastAPI does for a sync dependency's exit: waiting for a token of
            # the shared thread pool while requests holding every token wait for this very connection
            # would deadlock the process until the pool's timeout.
            await anyio.to_thread.run_sync(session.close, limiter=anyio.CapacityLimiter(1))
        else:
            session.close()


def release_connection(session: Session) -> None:
    """Ends the session's transaction when it has nothing to write, which returns its connection to the
    pool; the session stays usable (the next statement checks a connection out again)."""
    if session.in_transaction() and not (session.new or session.dirty or session.deleted):
        session.rollback()


def migrate(url: str, revision: str = "heads") -> None:
    """Brings the database at `url` to `revision` (default: every head) with the project's Alembic
    migrations."""
    from alembic import command
    from alembic.config import Config

    from edgeledger.config import PROJECT_ROOT

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.attributes["url"] = url
    command.upgrade(config, revision)


#: the work lock's transaction (:func:`exclusive_work`): no idle timeout; a dead peer noticed within
#: 60 + 6 * 10 s
_LOCK_SESSION_SETTINGS = text(
    "SELECT set_config('idle_in_transaction_session_timeout', '0', true), "
    "set_config('tcp_keepalives_idle', '60', true), "
    "set_config('tcp_keepalives_interval', '10', true), "
    "set_config('tcp_keepalives_count', '6', true)"
)


@contextmanager
def exclusive_work(session: Session, lock_dir: Path, name: str, key: int) -> Iterator[bool]:
    """Serialises work named (``name``, ``key``) across workers and hosts; yields False when another
    worker holds it.

    PostgreSQL: a transaction-level advisory lock taken (try, never wait) in a separate connection whose
    transaction stays open while the work session commits step by step; no table row is locked, so the
    work may update any row; that transaction is exempt from ``idle_in_transaction_session_timeout``,
    which would otherwise end it, and free the lock, while the work runs, and a host that died loses
    the lock when TCP keepalive notices (about two minutes). SQLite (single host): an flock on
    ``lock_dir/<name>-<key>.lock``.
    """
    bind = session.get_bind()
    if bind.dialect.name == "postgresql":
        namespace = zlib.crc32(name.encode()) & 0x7FFFFFFF
        with Session(bind) as lock_session:
            # The lock's transaction sits idle while the work runs (a post waits minutes for its
            # receipt): a server-wide idle_in_transaction_session_timeout would end it, and the lock
            # with it, silently, so this transaction alone is exempt. What frees the lock of a host
            # that died instead is TCP keepalive, tightened for this transaction: about two minutes.
            lock_session.execute(_LOCK_SESSION_SETTINGS)
            locked = lock_session.scalar(select(func.pg_try_advisory_xact_lock(namespace, key)))
            try:
                yield bool(locked)
            finally:
                lock_session.rollback()
        return
    path = lock_dir / f"{name}-{key}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
