"""Alembic environment: the URL comes from the caller (edgeledger.db.migrate) or the settings."""

from __future__ import annotations

from alembic import context

import edgeledger.assets.models
import edgeledger.auth.models
import edgeledger.deliveries.models
import edgeledger.settlement.models  # noqa: F401  (registers the tables on Base.metadata)
from edgeledger.config import get_settings
from edgeledger.db import Base, make_engine

config = context.config
url = config.attributes.get("url") or get_settings().resolved_database_url


def run_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # SQLite rebuilds a table to change its constraints (batch mode): copy, drop, rename. Foreign
            # keys are checked once at the end instead of refusing to drop a table others point at
            # (the pragma only takes effect outside a transaction, hence before it begins).
            connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
            connection.commit()
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
            if broken:
                raise RuntimeError(f"migration left rows whose foreign keys point nowhere: {broken[:5]}")
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
