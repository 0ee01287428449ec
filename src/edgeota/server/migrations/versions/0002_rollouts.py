"""rollouts: device tags, dynamic groups, staged rollouts and their devices

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30 04:12:56.326471
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Named, so that the downgrade can drop it (SQLite batch mode needs the name).
_DESIRED_ROLLOUT_FK = "fk_desired_components_rollout_id_rollouts"


def upgrade() -> None:
    op.create_table(
        "dynamic_groups",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("filter", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "device_tags",
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=128), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("device_id", "key"),
    )
    with op.batch_alter_table("device_tags", schema=None) as batch_op:
        batch_op.create_index("ix_device_tags_key_value", ["key", "value"], unique=False)

    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("component", sa.String(length=64), nullable=False),
        sa.Column("target_group", sa.String(length=64), nullable=True),
        sa.Column("target_device_ids", sa.JSON(), nullable=True),
        sa.Column("plan", sa.JSON(), nullable=False),
        sa.Column("state", sa.JSON(), nullable=False),
        sa.Column("state_version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("switch_policy", sa.String(length=8), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rollback_of", sa.Integer(), nullable=True),
        sa.Column("created_by", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["release_id"],
            ["releases.id"],
        ),
        sa.ForeignKeyConstraint(
            ["rollback_of"],
            ["rollouts.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_rollouts_component"), ["component"], unique=False)
        batch_op.create_index(batch_op.f("ix_rollouts_status"), ["status"], unique=False)

    op.create_table(
        "rollout_devices",
        sa.Column("rollout_id", sa.Integer(), nullable=False),
        sa.Column("device_id", sa.String(length=64), nullable=False),
        sa.Column("phase", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("told_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["device_id"], ["devices.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["rollout_id"], ["rollouts.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("rollout_id", "device_id"),
    )
    with op.batch_alter_table("rollout_devices", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_rollout_devices_device_id"), ["device_id"], unique=False
        )

    with op.batch_alter_table("desired_components", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rollout_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(_DESIRED_ROLLOUT_FK, "rollouts", ["rollout_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("desired_components", schema=None) as batch_op:
        batch_op.drop_constraint(_DESIRED_ROLLOUT_FK, type_="foreignkey")
        batch_op.drop_column("rollout_id")

    with op.batch_alter_table("rollout_devices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollout_devices_device_id"))

    op.drop_table("rollout_devices")
    with op.batch_alter_table("rollouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_rollouts_status"))
        batch_op.drop_index(batch_op.f("ix_rollouts_component"))

    op.drop_table("rollouts")
    with op.batch_alter_table("device_tags", schema=None) as batch_op:
        batch_op.drop_index("ix_device_tags_key_value")

    op.drop_table("device_tags")
    op.drop_table("dynamic_groups")
