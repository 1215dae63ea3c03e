"""delivery receipts per country: settlement reads receipts instead of re-aggregating raw records

Adds ``delivery_receipts.country``, widens the receipt key to (batch, asset, merchant, region, country) and
recomputes the receipts of every batch that had them (and every anchored batch), from its records, as
``deliveries.receipts.compute_receipts`` does.

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | tuple[str, ...] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_records = sa.table(
    "delivery_records",
    sa.column("batch_pk", sa.Integer),
    sa.column("asset_id", sa.BigInteger),
    sa.column("merchant_id", sa.LargeBinary),
    sa.column("region", sa.String),
    sa.column("country", sa.String),
    sa.column("host", sa.String),
    sa.column("bytes_delivered", sa.BigInteger),
    sa.column("excluded", sa.Boolean),
)
_batches = sa.table(
    "delivery_batches",
    sa.column("id", sa.Integer),
    sa.column("state", sa.String),
    sa.column("period_start", sa.BigInteger),
    sa.column("period_end", sa.BigInteger),
)
_receipts = sa.table(
    "delivery_receipts",
    sa.column("batch_pk", sa.Integer),
    sa.column("period_start", sa.BigInteger),
    sa.column("period_end", sa.BigInteger),
    sa.column("asset_id", sa.BigInteger),
    sa.column("merchant_id", sa.String),
    sa.column("host", sa.String),
    sa.column("region", sa.String),
    sa.column("country", sa.String),
    sa.column("requests", sa.BigInteger),
    sa.column("bytes_delivered", sa.BigInteger),
    sa.column("excluded_requests", sa.BigInteger),
    sa.column("excluded_bytes", sa.BigInteger),
    sa.column("computed_at", sa.DateTime(timezone=True)),
)


def _recompute(conn: sa.Connection, batch_pks: list[int], *, by_country: bool = True) -> None:
    now = datetime.now(UTC)
    country = _records.c.country if by_country else sa.literal("")
    keys = [_records.c.asset_id, _records.c.merchant_id, _records.c.region]
    dropped = sa.case((_records.c.excluded, 1), else_=0)
    counted = 1 - dropped
    for batch_pk, period_start, period_end in conn.execute(
        sa.select(_batches.c.id, _batches.c.period_start, _batches.c.period_end).where(
            _batches.c.id.in_(batch_pks)
        )
    ):
        rows = conn.execute(
            sa.select(
                _records.c.asset_id,
                _records.c.merchant_id,
                _records.c.region,
                country,
                sa.func.min(_records.c.host),
                sa.func.sum(counted),
                sa.func.sum(counted * _records.c.bytes_delivered),
                sa.func.sum(dropped),
                sa.func.sum(dropped * _records.c.bytes_delivered),
            )
            .where(_records.c.batch_pk == batch_pk)
            .group_by(*keys, *([_records.c.country] if by_country else []))
        ).all()
        conn.execute(sa.delete(_receipts).where(_receipts.c.batch_pk == batch_pk))
        receipts = []
        for asset_id, merchant_id, region, code, host, requests, nbytes, ex_requests, ex_bytes in rows:
            receipts.append(
                {
                    "batch_pk": batch_pk,
                    "period_start": period_start,
                    "period_end": period_end,
                    "asset_id": int(asset_id),
                    "merchant_id": "0x" + bytes(merchant_id).hex(),
                    "host": str(host).lower(),
                    "region": region,
                    "country": code,
                    "requests": int(requests),
                    "bytes_delivered": int(nbytes or 0),
                    "excluded_requests": int(ex_requests),
                    "excluded_bytes": int(ex_bytes or 0),
                    "computed_at": now,
                }
            )
        if receipts:
            conn.execute(sa.insert(_receipts), receipts)


def upgrade() -> None:
    with op.batch_alter_table("delivery_receipts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("country", sa.String(length=2), nullable=False, server_default=""))
        batch_op.drop_constraint("uq_receipt_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_receipt_key", ["batch_pk", "asset_id", "merchant_id", "region", "country"]
        )
    conn = op.get_bind()
    had = {row[0] for row in conn.execute(sa.select(_receipts.c.batch_pk).distinct())}
    anchored = {
        row[0]
        for row in conn.execute(sa.select(_batches.c.id).where(_batches.c.state.in_(["anchored", "final"])))
    }
    _recompute(conn, sorted(had | anchored))


def downgrade() -> None:
    conn = op.get_bind()
    had = sorted({row[0] for row in conn.execute(sa.select(_receipts.c.batch_pk).distinct())})
    conn.execute(sa.delete(_receipts))
    with op.batch_alter_table("delivery_receipts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_receipt_key", type_="unique")
        batch_op.create_unique_constraint(
            "uq_receipt_key", ["batch_pk", "asset_id", "merchant_id", "region", "country"]
        )
    _recompute(conn, had, by_country=False)  # per (asset, merchant, region) again, country ""
    with op.batch_alter_table("delivery_receipts", schema=None) as batch_op:
        batch_op.drop_constraint("uq_receipt_key", type_="unique")
        batch_op.drop_column("country")
        batch_op.create_unique_constraint("uq_receipt_key", ["batch_pk", "asset_id", "merchant_id", "region"])
