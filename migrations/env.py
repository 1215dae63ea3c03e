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
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
