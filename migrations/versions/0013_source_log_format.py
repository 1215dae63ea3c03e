"""delivery sources declare their log format

Adds ``delivery_sources.log_format`` (one of ``edgeledger.deliveries.parsers.FORMATS``; NULL: detected
per file, only when exactly one format fits), ``site_host`` and ``site_edge_location`` (what nginx and
Fastly Common/Combined Log Format lines do not say) and ``log_fields_json`` (the data set field ids of an
Akamai DataStream 2 structured source's columns, a JSON list). Existing sources declare nothing: their
files are detected as before, except that a file whose lines fit several formats (nginx combined and
Fastly combined) is now refused with ``ambiguous_log_format`` until the source declares one. The
downgrade drops the columns.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | tuple[str, ...] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("delivery_sources", schema=None) as batch_op:
        batch_op.add_column(sa.Column("log_format", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("site_host", sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column("site_edge_location", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("log_fields_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("delivery_sources", schema=None) as batch_op:
        batch_op.drop_column("log_fields_json")
        batch_op.drop_column("site_edge_location")
        batch_op.drop_column("site_host")
        batch_op.drop_column("log_format")
