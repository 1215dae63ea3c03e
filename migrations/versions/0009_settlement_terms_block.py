"""settlement terms from the chain at a recorded block; abandoned batches; authorised sources; held
royalties and their releases

Adds ``settlements.terms_block`` (the block the assets' terms were read at) and
``settlements.unbillable_json`` (abandoned batches listed in the statement), and
``delivery_batches.abandoned_at``, ``abandoned_by`` and ``abandon_reason`` (an admin's decision that a
batch will never anchor; its state is then ``abandoned``), and ``merchant_sources`` (the sources a
merchant authorises to bill it), ``settlements.kind``, ``sequence`` (0 for a period, n for its n-th
supplementary settlement: the unique key becomes (merchant, period_start, sequence, attempt)),
``funded_by_pk`` and ``held_total``, and ``settlement_held`` (each held-back royalty and what became of
it), ``settlement_cases.sources_json`` (each source's volume at a reconciliation key) and
``auth_sessions.api_key_pk`` (the API key a portal session was opened with: revoking it ends the
session). So that an upgrade changes no merchant's bill by itself, every source
that already has anchored receipts for a merchant's hosts is authorised for that merchant
(``authorised_by = "migration:0009"``); merchants review them with ``GET /deliveries/merchant-sources``.

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | tuple[str, ...] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "merchant_sources",
        sa.Column("merchant_user_id", sa.Integer(), nullable=False),
        sa.Column("source_pk", sa.Integer(), nullable=False),
        sa.Column("authorised_by", sa.String(length=120), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["merchant_user_id"], ["auth_users.id"]),
        sa.ForeignKeyConstraint(["source_pk"], ["delivery_sources.id"]),
        sa.PrimaryKeyConstraint("merchant_user_id", "source_pk"),
    )
    op.execute(
        "INSERT INTO merchant_sources (merchant_user_id, source_pk, authorised_by, created_at) "
        "SELECT DISTINCT h.merchant_user_id, b.source_pk, 'migration:0009', CURRENT_TIMESTAMP "
        "FROM delivery_receipts r JOIN delivery_batches b ON b.id = r.batch_pk "
        "JOIN merchant_hosts h ON h.host = r.host"
    )
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.add_column(sa.Column("terms_block", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("unbillable_json", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("kind", sa.String(length=16), nullable=False, server_default="period"))
        batch_op.add_column(sa.Column("sequence", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("funded_by_pk", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("held_total", sa.BigInteger(), nullable=False, server_default="0"))
        batch_op.create_foreign_key("fk_settlements_funded_by", "settlements", ["funded_by_pk"], ["id"])
        batch_op.drop_constraint("uq_settlement_attempt", type_="unique")
        batch_op.create_unique_constraint(
            "uq_settlement_attempt", ["merchant_user_id", "period_start", "sequence", "attempt"]
        )
    op.create_table(
        "settlement_held",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("settlement_pk", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("asset_id", sa.String(length=78), nullable=False),
        sa.Column("reason", sa.String(length=20), nullable=False),
        sa.Column("via_json", sa.Text(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("release_pk", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["settlement_pk"], ["settlements.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["release_pk"], ["settlements.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("settlement_pk", "position", name="uq_settlement_held"),
    )
    op.create_index("ix_settlement_held_release_pk", "settlement_held", ["release_pk"])
    with op.batch_alter_table("delivery_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("abandoned_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("abandoned_by", sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column("abandon_reason", sa.Text(), nullable=True))
    with op.batch_alter_table("settlement_cases", schema=None) as batch_op:
        batch_op.add_column(sa.Column("sources_json", sa.Text(), nullable=True))
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("api_key_pk", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_auth_sessions_api_key", "auth_api_keys", ["api_key_pk"], ["id"], ondelete="CASCADE"
        )


def downgrade() -> None:
    op.drop_index("ix_settlement_held_release_pk", table_name="settlement_held")
    op.drop_table("settlement_held")
    # Releases have no older spelling: they go, with their payouts.
    op.execute(
        "DELETE FROM settlement_payouts "
        "WHERE settlement_pk IN (SELECT id FROM settlements WHERE kind <> 'period')"
    )
    op.execute("DELETE FROM settlements WHERE kind <> 'period'")
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.drop_constraint("uq_settlement_attempt", type_="unique")
        batch_op.create_unique_constraint(
            "uq_settlement_attempt", ["merchant_user_id", "period_start", "attempt"]
        )
        batch_op.drop_constraint("fk_settlements_funded_by", type_="foreignkey")
        batch_op.drop_column("held_total")
        batch_op.drop_column("funded_by_pk")
        batch_op.drop_column("sequence")
        batch_op.drop_column("kind")
        batch_op.drop_column("unbillable_json")
        batch_op.drop_column("terms_block")
    # An abandoned batch has no older spelling: it goes back to "closed" (it never anchors either way).
    op.execute("UPDATE delivery_batches SET state = 'closed' WHERE state = 'abandoned'")
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ and PostgreSQL).
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_constraint("fk_auth_sessions_api_key", type_="foreignkey")
        batch_op.drop_column("api_key_pk")
    for table, column in (
        ("settlement_cases", "sources_json"),
        ("delivery_batches", "abandon_reason"),
        ("delivery_batches", "abandoned_by"),
        ("delivery_batches", "abandoned_at"),
    ):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.drop_table("merchant_sources")
