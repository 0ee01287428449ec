"""variants: what the server chooses a release's model variant by, per release file

Revision ID: 0006
Revises: 0004
Create Date: 2026-11-30 06:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
# Chained after the newest head at the time of writing (0003 -> 0005 -> 0004).
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("release_files", schema=None) as batch_op:
        batch_op.add_column(sa.Column("memory_mb", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("quality", sa.Float(), nullable=True))
        batch_op.add_column(sa.Column("arch", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("accelerator", sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("release_files", schema=None) as batch_op:
        batch_op.drop_column("accelerator")
        batch_op.drop_column("arch")
        batch_op.drop_column("quality")
        batch_op.drop_column("memory_mb")
