"""IPFS import profile per asset

Adds ``assets.import_profile``: the import profile (``edgeledger.ipfs.cid.PROFILES``) the asset's
content CID was computed and pinned with. Every asset registered before this revision was added with
the only layout the service knew, so existing rows get ``legacy-cidv1`` (the column's server default);
the downgrade drops the column.

Revision ID: 0010
Revises: 0009
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | tuple[str, ...] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("assets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("import_profile", sa.String(length=32), nullable=False, server_default="legacy-cidv1")
        )


def downgrade() -> None:
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ and PostgreSQL).
    op.execute("ALTER TABLE assets DROP COLUMN import_profile")
