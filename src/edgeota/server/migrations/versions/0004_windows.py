"""windows: device maintenance windows and time zone; the rollout's simulated-environment gate

Revision ID: 0004
Revises: 0005
Create Date: 2026-11-30 05:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
# Chained after the newest head at the time of writing (0005 was written first).
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column(
                "maintenance_windows", sa.JSON(), nullable=False, server_default=sa.text("'[]'")
            )
        )
        batch_op.add_column(
            sa.Column("max_deferrals", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("gate_owner", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("gate_heartbeat_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("gate_result", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_column("gate_result")
        batch_op.drop_column("gate_heartbeat_at")
        batch_op.drop_column("gate_owner")
    with op.batch_alter_table("devices", schema=None) as batch_op:
        batch_op.drop_column("max_deferrals")
        batch_op.drop_column("maintenance_windows")
        batch_op.drop_column("time_zone")
