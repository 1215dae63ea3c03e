"""a registration's and a catalogue's nonce and send time: a stuck one is sent again at its nonce

Adds ``tx_nonce``, ``tx_prev_hash`` and ``tx_sent_at`` to ``asset_registrations`` and
``asset_catalogues``, as 0020 did to anchors: the signer's nonce of the relayed registration, the
transaction it replaced, and when it was sent. The reconciler follows a registration waiting in the
mempool at its nonce and sends the same call again bidding more once it has waited
``TX_REPLACE_AFTER_SECONDS`` (chain/stuck_tx.py; docs/registration.md, "A stuck registration"), instead
of sending a second one at a new nonce. Rows sent before it have none of them: one waiting at the
upgrade is followed by its hash and dated by the first run after it. The downgrade drops the columns.

Revision ID: 0021
Revises: 0020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | tuple[str, ...] | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("asset_registrations", "asset_catalogues")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("tx_nonce", sa.BigInteger(), nullable=True))
        op.add_column(table, sa.Column("tx_prev_hash", sa.String(length=66), nullable=True))
        op.add_column(table, sa.Column("tx_sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} DROP COLUMN tx_sent_at")
        op.execute(f"ALTER TABLE {table} DROP COLUMN tx_prev_hash")
        op.execute(f"ALTER TABLE {table} DROP COLUMN tx_nonce")
