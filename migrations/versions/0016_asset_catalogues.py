"""catalogue registrations: one journal row per catalogue over one registration row per item

Adds ``asset_catalogues`` (the state of a catalogue's one ``registerBatchFor`` transaction: its shared
licence and split, deadline and the creator's signature, the transaction hash, the first asset id) and
the ``asset_registrations`` columns ``catalogue_id`` (the catalogue a registration is an item of) and
``position`` (its place in the catalogue). Existing registrations are registrations of their own: both
columns stay NULL. The downgrade drops the columns and the table.

Revision ID: 0016
Revises: 0015
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | tuple[str, ...] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "asset_catalogues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("creator", sa.String(length=42), nullable=False),
        sa.Column("mode", sa.String(length=10), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("params_json", sa.Text(), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("first_asset_id", sa.BigInteger(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=64), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.Integer(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_asset_catalogues")),
    )
    with op.batch_alter_table("asset_catalogues", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_asset_catalogues_creator"), ["creator"], unique=False)
        batch_op.create_index(batch_op.f("ix_asset_catalogues_state"), ["state"], unique=False)
    # ADD COLUMN on both backends (a batch copy of the table on SQLite would have to carry the partial
    # unique index of open registrations over; ADD COLUMN leaves it alone). SQLite takes the foreign key
    # only inline, in the column's definition.
    fk = op.f("fk_asset_registrations_catalogue_id_asset_catalogues")
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f"ALTER TABLE asset_registrations ADD COLUMN catalogue_id INTEGER "
            f"CONSTRAINT {fk} REFERENCES asset_catalogues (id)"
        )
    else:
        op.add_column(
            "asset_registrations",
            sa.Column(
                "catalogue_id", sa.Integer(), sa.ForeignKey("asset_catalogues.id", name=fk), nullable=True
            ),
        )
    op.add_column("asset_registrations", sa.Column("position", sa.Integer(), nullable=True))
    op.create_index(
        op.f("ix_asset_registrations_catalogue_id"), "asset_registrations", ["catalogue_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_asset_registrations_catalogue_id"), table_name="asset_registrations")
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(
            op.f("fk_asset_registrations_catalogue_id_asset_catalogues"),
            "asset_registrations",
            type_="foreignkey",
        )
    # Plain ALTER TABLE ... DROP COLUMN (SQLite 3.35+ and PostgreSQL; SQLite refuses to drop a column
    # its foreign key names, so the column and its REFERENCES go by a copy of the table there).
    op.execute("ALTER TABLE asset_registrations DROP COLUMN position")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE asset_registrations DROP COLUMN catalogue_id")
    else:
        with op.batch_alter_table("asset_registrations", schema=None, recreate="always") as batch_op:
            batch_op.drop_column("catalogue_id")
    op.drop_table("asset_catalogues")
