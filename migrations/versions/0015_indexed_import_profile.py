"""IPFS import profile of every asset the chain indexer projects

Adds ``indexed_assets.import_profile``: the import profile the registry records with each registration
(``ContentRegistry.importProfileOf``; its ``ImportProfileRecorded`` event for any profile but
``legacy-cidv1``), named as in ``edgeledger.ledger.registration.IMPORT_PROFILES``. Existing rows get
``legacy-cidv1`` (the column's server default): the registry they were projected from records no
profile, and an asset of the current registry without an ``ImportProfileRecorded`` event is
``legacy-cidv1``. The downgrade drops the column.

Revision ID: 0015
Revises: 0014
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | tuple[str, ...] | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("indexed_assets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("import_profile", sa.String(length=32), nullable=False, server_default="legacy-cidv1")
        )


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ and PostgreSQL).
    op.execute("ALTER TABLE indexed_assets DROP COLUMN import_profile")
