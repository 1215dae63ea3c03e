"""reconciliation cases record a converted bill: its amount in the card's units and the FX rate used

Adds ``settlement_cases.theirs_amount_converted`` (a bill in another currency than the rate card's, in the
card's minor units) and ``settlement_cases.fx_json`` (the FxSnapshot that converted it), so anyone can
redo the comparison a case records. Cases before it were either in the card's own currency or flagged
``currency`` (no rate): both columns stay NULL for them. The downgrade drops the columns.

Revision ID: 0017
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | tuple[str, ...] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("settlement_cases") as batch:
        batch.add_column(sa.Column("theirs_amount_converted", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("fx_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("settlement_cases") as batch:
        batch.drop_column("fx_json")
        batch.drop_column("theirs_amount_converted")
