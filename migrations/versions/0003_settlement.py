"""settlement

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22 08:02:13.555770
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "settlement_fx_rates",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("base", sa.String(length=10), nullable=False),
        sa.Column("quote", sa.String(length=10), nullable=False),
        sa.Column("numerator", sa.String(length=80), nullable=False),
        sa.Column("denominator", sa.String(length=80), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_fx_rates")),
        sa.UniqueConstraint("source", "timestamp", "base", "quote", name="uq_fx_rate"),
    )
    op.create_table(
        "settlement_accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_user_id", sa.Integer(), nullable=False),
        sa.Column("address", sa.String(length=42), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("token_symbol", sa.String(length=10), nullable=False),
        sa.Column("token_decimals", sa.Integer(), nullable=False),
        sa.Column("tolerance_bps", sa.Integer(), nullable=False),
        sa.Column("require_billing", sa.Boolean(), nullable=False),
        sa.Column("auto_settle", sa.Boolean(), nullable=False),
        sa.Column("next_period_start", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_user_id"],
            ["auth_users.id"],
            name=op.f("fk_settlement_accounts_merchant_user_id_auth_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_accounts")),
        sa.UniqueConstraint("merchant_user_id", name=op.f("uq_settlement_accounts_merchant_user_id")),
    )
    op.create_table(
        "settlement_billing_imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_user_id", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("layout", sa.String(length=20), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("ignored", sa.Integer(), nullable=False),
        sa.Column("superseded", sa.Boolean(), nullable=False),
        sa.Column("reconciled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("imported_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_user_id"],
            ["auth_users.id"],
            name=op.f("fk_settlement_billing_imports_merchant_user_id_auth_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_billing_imports")),
    )
    with op.batch_alter_table("settlement_billing_imports", schema=None) as batch_op:
        batch_op.create_index("ix_billing_imports_period", ["merchant_user_id", "period_start"], unique=False)

    op.create_table(
        "settlement_rate_cards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_user_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("valid_from", sa.BigInteger(), nullable=False),
        sa.Column("valid_until", sa.BigInteger(), nullable=True),
        sa.Column("card_json", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_user_id"],
            ["auth_users.id"],
            name=op.f("fk_settlement_rate_cards_merchant_user_id_auth_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_rate_cards")),
        sa.UniqueConstraint("merchant_user_id", "version", name="uq_rate_card_version"),
    )
    with op.batch_alter_table("settlement_rate_cards", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_settlement_rate_cards_merchant_user_id"), ["merchant_user_id"], unique=False
        )

    op.create_table(
        "settlements",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_user_id", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("period_end", sa.BigInteger(), nullable=False),
        sa.Column("period_id", sa.BigInteger(), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("merchant_address", sa.String(length=42), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("root", sa.String(length=66), nullable=True),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("payee_count", sa.Integer(), nullable=False),
        sa.Column("receipt_count", sa.Integer(), nullable=False),
        sa.Column("inputs_digest", sa.String(length=66), nullable=True),
        sa.Column("inputs_gz", sa.LargeBinary(), nullable=True),
        sa.Column("statement_json", sa.Text(), nullable=True),
        sa.Column("usage_json", sa.Text(), nullable=True),
        sa.Column("batch_ids_json", sa.Text(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("block_number", sa.BigInteger(), nullable=True),
        sa.Column("claims_open_at", sa.BigInteger(), nullable=True),
        sa.Column("send_attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("posted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["merchant_user_id"], ["auth_users.id"], name=op.f("fk_settlements_merchant_user_id_auth_users")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlements")),
        sa.UniqueConstraint("merchant_user_id", "period_start", "attempt", name="uq_settlement_attempt"),
    )
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.create_index("ix_settlements_state", ["state"], unique=False)

    op.create_table(
        "settlement_billing_usage",
        sa.Column("import_pk", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=8), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=10), nullable=True),
        sa.ForeignKeyConstraint(
            ["import_pk"],
            ["settlement_billing_imports.id"],
            name=op.f("fk_settlement_billing_usage_import_pk_settlement_billing_imports"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("import_pk", "region", "day", name=op.f("pk_settlement_billing_usage")),
    )
    op.create_table(
        "settlement_cases",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("merchant_user_id", sa.Integer(), nullable=False),
        sa.Column("period_start", sa.BigInteger(), nullable=False),
        sa.Column("import_pk", sa.Integer(), nullable=False),
        sa.Column("region", sa.String(length=8), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("reasons", sa.String(length=100), nullable=False),
        sa.Column("ours_bytes", sa.BigInteger(), nullable=False),
        sa.Column("theirs_bytes", sa.BigInteger(), nullable=False),
        sa.Column("ours_requests", sa.BigInteger(), nullable=False),
        sa.Column("theirs_requests", sa.BigInteger(), nullable=False),
        sa.Column("ours_amount", sa.BigInteger(), nullable=True),
        sa.Column("theirs_amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=10), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("adjustment", sa.BigInteger(), nullable=False),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_by_name", sa.String(length=200), nullable=True),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["import_pk"],
            ["settlement_billing_imports.id"],
            name=op.f("fk_settlement_cases_import_pk_settlement_billing_imports"),
        ),
        sa.ForeignKeyConstraint(
            ["merchant_user_id"],
            ["auth_users.id"],
            name=op.f("fk_settlement_cases_merchant_user_id_auth_users"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_settlement_cases")),
        sa.UniqueConstraint("import_pk", "region", "day", name="uq_case_key"),
    )
    with op.batch_alter_table("settlement_cases", schema=None) as batch_op:
        batch_op.create_index(
            "ix_settlement_cases_period", ["merchant_user_id", "period_start", "state"], unique=False
        )

    op.create_table(
        "settlement_payouts",
        sa.Column("settlement_pk", sa.Integer(), nullable=False),
        sa.Column("payee", sa.String(length=42), nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("leaf", sa.String(length=66), nullable=False),
        sa.ForeignKeyConstraint(
            ["settlement_pk"],
            ["settlements.id"],
            name=op.f("fk_settlement_payouts_settlement_pk_settlements"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("settlement_pk", "payee", name=op.f("pk_settlement_payouts")),
    )
    with op.batch_alter_table("settlement_payouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_settlement_payouts_payee"), ["payee"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("settlement_payouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlement_payouts_payee"))

    op.drop_table("settlement_payouts")
    with op.batch_alter_table("settlement_cases", schema=None) as batch_op:
        batch_op.drop_index("ix_settlement_cases_period")

    op.drop_table("settlement_cases")
    op.drop_table("settlement_billing_usage")
    with op.batch_alter_table("settlements", schema=None) as batch_op:
        batch_op.drop_index("ix_settlements_state")

    op.drop_table("settlements")
    with op.batch_alter_table("settlement_rate_cards", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlement_rate_cards_merchant_user_id"))

    op.drop_table("settlement_rate_cards")
    with op.batch_alter_table("settlement_billing_imports", schema=None) as batch_op:
        batch_op.drop_index("ix_billing_imports_period")

    op.drop_table("settlement_billing_imports")
    op.drop_table("settlement_accounts")
    op.drop_table("settlement_fx_rates")
