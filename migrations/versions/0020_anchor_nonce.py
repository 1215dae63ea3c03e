"""an anchor's nonce and send time: a stuck anchor is sent again at its nonce

Adds ``delivery_batches.tx_nonce``, ``tx_prev_hash`` and ``tx_sent_at``: the signer's nonce of the
anchor's transaction, the transaction it replaced, and when it was sent. An anchor left unmined longer
than ``TX_REPLACE_AFTER_SECONDS`` is sent again at that nonce with higher fees, as settlement posts are
(chain/stuck_tx.py; docs/anchoring.md, "A stuck anchor"). Anchors sent before it have none of them: one
waiting in the mempool at the upgrade is dated by the first run after it, and a dropped one takes the
signer's next nonce. The downgrade drops the columns.

Revision ID: 0020
Revises: 0019
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0020"
down_revision: str | tuple[str, ...] | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("delivery_batches", sa.Column("tx_nonce", sa.BigInteger(), nullable=True))
    op.add_column("delivery_batches", sa.Column("tx_prev_hash", sa.String(length=66), nullable=True))
    op.add_column("delivery_batches", sa.Column("tx_sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE delivery_batches DROP COLUMN tx_sent_at")
    op.execute("ALTER TABLE delivery_batches DROP COLUMN tx_prev_hash")
    op.execute("ALTER TABLE delivery_batches DROP COLUMN tx_nonce")
