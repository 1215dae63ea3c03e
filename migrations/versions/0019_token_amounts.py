"""token amounts exact beyond 64 bits: 18-decimal tokens settle

Settlement totals, held totals, payouts and held royalties are counted in the settlement token's minor
units, which the vault keeps as uint128. As signed 64-bit columns they stopped at 2^63 - 1: 9.2 tokens of
18 decimals (a charge above it was blocked, ``amount_too_large``). They become ``TokenAmount`` columns
(edgeledger/db.py): NUMERIC(78, 0) on PostgreSQL, and on SQLite decimal text zero-padded to 78 digits
(SQLite's integers stop at 64 bits, and its numeric columns turn longer numbers into lossy floats), so
that text order stays numeric order. SQLite changes a column's type by adding the new column, copying,
dropping the old one and renaming the new one (SQLite 3.35+): no table is rebuilt, so no foreign key
cascades, and a column left by an attempt that stopped half-way is dropped when it is run again.

The downgrade converts back, and stops, naming the column, when an amount no longer fits 64 bits.

Revision ID: 0019
Revises: 0018
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019"
down_revision: str | tuple[str, ...] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DIGITS = 78
INT64_MAX = 2**63 - 1
#: (table, column, NOT NULL)
COLUMNS = (
    ("settlements", "total", True),
    ("settlements", "held_total", True),
    ("settlement_payouts", "amount", True),
    ("settlement_held", "amount", True),
)


def _sqlite_retype(table: str, column: str, not_null: bool, new_type: str, default: str, copy: str) -> None:
    """ADD the new column, copy every value through ``copy`` (an SQL expression of ``{old}``), DROP the old
    one, RENAME the new one: SQLite 3.35+, no table rebuild. Names and types come from this file only."""
    wide = f"{column}__retyped"
    null = f" NOT NULL DEFAULT {default}" if not_null else ""
    columns = {row[1] for row in op.get_bind().execute(sa.text(f"PRAGMA table_info({table})"))}
    if wide in columns:  # left by an attempt that stopped half-way (SQLite commits each ALTER TABLE)
        op.execute(f"ALTER TABLE {table} DROP COLUMN {wide}")
    op.execute(f"ALTER TABLE {table} ADD COLUMN {wide} {new_type}{null}")
    op.execute(f"UPDATE {table} SET {wide} = {copy.format(old=column)}")  # noqa: S608
    op.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
    op.execute(f"ALTER TABLE {table} RENAME COLUMN {wide} TO {column}")


def _require_drop_column() -> None:
    version = op.get_bind().execute(sa.text("SELECT sqlite_version()")).scalar_one()
    if tuple(int(part) for part in str(version).split(".")[:2]) < (3, 35):
        raise RuntimeError(
            f"SQLite {version} cannot drop a column: this migration needs SQLite 3.35 or later"
        )


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        _require_drop_column()
    for table, column, not_null in COLUMNS:
        if sqlite:
            zero = "'" + "0" * DIGITS + "'"
            copy = f"printf('%0{DIGITS}d', {{old}})"
            _sqlite_retype(table, column, not_null, f"VARCHAR({DIGITS})", zero, copy)
        else:
            op.execute(
                f"ALTER TABLE {table} ALTER COLUMN {column} TYPE NUMERIC({DIGITS}, 0) USING {column}::numeric"
            )


def downgrade() -> None:
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    for table, column, _ in COLUMNS:
        values = bind.execute(sa.select(sa.column(column)).select_from(sa.table(table)))
        wide = sum(1 for (value,) in values if int(value) > INT64_MAX)
        if wide:
            raise RuntimeError(
                f"{wide} rows of {table}.{column} hold amounts beyond 2^63 - 1, which the previous "
                "revision cannot store: the downgrade stops here"
            )
    for table, column, not_null in COLUMNS:
        if sqlite:
            _require_drop_column()
            _sqlite_retype(table, column, not_null, "BIGINT", "0", "CAST({old} AS INTEGER)")
        else:
            op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE BIGINT USING {column}::bigint")
