"""one merchant per escrow address, enforced by the database; a settlement post's nonce and send time

Adds the unique index ``uq_settlement_accounts_address`` (the vault keys escrow, caps, the chosen settler
and every settlement by the escrow address, so two accounts on one address would pay each other's bills:
the API refuses it with 409 ``address_taken``, and the index makes two concurrent writes unable to pass
that check together), and ``settlements.tx_nonce``, ``tx_prev_hash`` and ``tx_sent_at``: the signer's
nonce of the post's transaction, the transaction it replaced, and when it was sent (a post left unmined
longer than ``POST_REPLACE_AFTER_SECONDS`` is sent again at that nonce with higher fees, docs/settlement.md
"A post stuck in the mempool"). Posts sent before it have none of them: a post waiting in the mempool at
the upgrade is dated by the first run after it.

An existing database where two accounts already share an address cannot take the index: the upgrade stops
and names them, and an admin points one at the merchant's own escrow address before upgrading again.
The downgrade drops the index and the columns.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | tuple[str, ...] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    shared = (
        op.get_bind()
        .execute(
            sa.text(
                "SELECT address, COUNT(*) FROM settlement_accounts GROUP BY address HAVING COUNT(*) > 1 "
                "ORDER BY address"
            )
        )
        .all()
    )
    if shared:
        listed = ", ".join(f"{address} ({count} accounts)" for address, count in shared)
        raise RuntimeError(
            f"settlement accounts share escrow addresses: {listed}. Each merchant needs its own escrow "
            "address (docs/settlement.md): point all but one account at another address "
            "(PUT /settlement/accounts/{merchant_id}), then run the migration again"
        )
    op.create_index("uq_settlement_accounts_address", "settlement_accounts", ["address"], unique=True)
    op.add_column("settlements", sa.Column("tx_nonce", sa.BigInteger(), nullable=True))
    op.add_column("settlements", sa.Column("tx_prev_hash", sa.String(length=66), nullable=True))
    op.add_column("settlements", sa.Column("tx_sent_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    op.execute("ALTER TABLE settlements DROP COLUMN tx_sent_at")
    op.execute("ALTER TABLE settlements DROP COLUMN tx_prev_hash")
    op.execute("ALTER TABLE settlements DROP COLUMN tx_nonce")
    op.drop_index("uq_settlement_accounts_address", table_name="settlement_accounts")
