"""Pytest plugin: real databases for backend tests, SQLite and PostgreSQL by default.

``TEST_DATABASE_URLS`` (space-separated) picks the backends; ``sqlite`` means a fresh file database.
For a PostgreSQL URL a uniquely named database is created per test module (through an AUTOCOMMIT
connection to the given URL) and dropped afterwards. Tests in a module share the schema; every table is
emptied after each test, so each test starts from empty tables.

Fixtures: ``database_url`` (module), ``db_engine`` and ``db_session`` (function).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

import edgeledger
from edgeledger.db import Base, make_engine, migrate

DEFAULT_DATABASE_URLS = "sqlite postgresql://postgres@127.0.0.1:5432/test"


def _database_urls() -> list[str]:
    return os.environ.get("TEST_DATABASE_URLS", DEFAULT_DATABASE_URLS).split()


def _backend_id(url: str) -> str:
    return "sqlite" if url == "sqlite" else make_url(url).get_backend_name()


def _with_installed_driver(url: URL) -> URL:
    # SQLAlchemy 2.1 maps a bare postgresql:// to psycopg (3); this project installs psycopg2.
    if url.drivername == "postgresql" and importlib.util.find_spec("psycopg") is None:
        return url.set(drivername="postgresql+psycopg2")
    return url


def import_all_models() -> None:
    """Registers every domain's tables on ``Base.metadata`` (each ``edgeledger/<domain>/models.py``)."""
    # Looks for the files rather than asking importlib: find_spec would import every domain package,
    # including ones without tables.
    for models_file in sorted(Path(edgeledger.__file__).parent.glob("*/models.py")):
        importlib.import_module(f"edgeledger.{models_file.parent.name}.models")


@pytest.fixture(scope="module", params=_database_urls(), ids=_backend_id)
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if request.param == "sqlite":
        directory: Path = tmp_path_factory.mktemp("sqlite")
        yield f"sqlite:///{directory / 'edgeledger.db'}"
        return
    yield from _scratch_postgresql_database(_with_installed_driver(make_url(request.param)))


def _scratch_postgresql_database(server_url: URL) -> Iterator[str]:
    name = f"edgeledger_t_{secrets.token_hex(6)}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        yield server_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="module")
def _schema_engine(database_url: str) -> Iterator[Engine]:
    import_all_models()
    engine = make_engine(database_url)
    migrate(database_url)  # the real Alembic migrations, on both backends
    yield engine
    engine.dispose()


@pytest.fixture
def db_engine(_schema_engine: Engine) -> Iterator[Engine]:
    yield _schema_engine
    _empty_all_tables(_schema_engine)


def _empty_all_tables(engine: Engine) -> None:
    tables = list(reversed(Base.metadata.sorted_tables))
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            names = ", ".join(f'"{table.name}"' for table in tables)
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
        else:
            for table in tables:
                conn.execute(table.delete())


@pytest.fixture
def db_session(db_engine: Engine) -> Iterator[Session]:
    with Session(db_engine, expire_on_commit=False) as session:
        yield session
