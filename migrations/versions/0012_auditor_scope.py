"""auditor scopes fail closed; indexed assets record what became of their metadata

Adds ``auth_auditor_scopes.granted_by`` (the admin who wrote a scope entry). From this release an auditor
without scope entries reads nothing; only an explicit ``global`` entry (``ref = "*"``, written by an
admin, recorded in the compliance log) makes an auditor global. This migration grants nothing: an
auditor that was global because it had no entries reads nothing after the upgrade until an admin scopes
it (``PUT /admin/users/{id}/scope``), which is the point.

Adds ``indexed_assets.metadata_state`` (``ok``, ``too_large``, ``timeout``, ``invalid``,
``unavailable``), ``metadata_error`` (the reason, when not ``ok``) and ``metadata_attempts``. Existing
rows with a title become ``ok`` after one attempt; rows without one become ``unavailable`` with no
attempt recorded, so the indexer tries their metadata again (within its size, time and attempt caps).

Revision ID: 0012
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | tuple[str, ...] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_auditor_scopes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("granted_by", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_auth_auditor_scopes_granted_by", "auth_users", ["granted_by"], ["id"], ondelete="SET NULL"
        )
    with op.batch_alter_table("indexed_assets", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("metadata_state", sa.String(length=16), nullable=False, server_default="ok")
        )
        batch_op.add_column(sa.Column("metadata_error", sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column("metadata_attempts", sa.Integer(), nullable=False, server_default="1"))
    op.execute(
        "UPDATE indexed_assets SET metadata_state = 'unavailable', metadata_attempts = 0, "
        "metadata_error = 'indexed before metadata reads were recorded' WHERE title IS NULL"
    )


def downgrade() -> None:
    with op.batch_alter_table("indexed_assets", schema=None) as batch_op:
        batch_op.drop_column("metadata_attempts")
        batch_op.drop_column("metadata_error")
        batch_op.drop_column("metadata_state")
    with op.batch_alter_table("auth_auditor_scopes", schema=None) as batch_op:
        batch_op.drop_constraint("fk_auth_auditor_scopes_granted_by", type_="foreignkey")
        batch_op.drop_column("granted_by")
    # Global grants cannot be expressed before this release (no entries meant global there).
    op.execute("DELETE FROM auth_auditor_scopes WHERE kind = 'global'")
