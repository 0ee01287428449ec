"""deltas: the delta build queue (delta_jobs)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01 04:45:00.000000
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
        "delta_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("release_id", sa.String(length=64), nullable=False),
        sa.Column("file", sa.String(length=255), nullable=False),
        sa.Column("base_release_id", sa.String(length=64), nullable=False),
        sa.Column("base_sha256", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claim_token", sa.String(length=32), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("patch_sha256", sa.String(length=64), nullable=True),
        sa.Column("patch_length", sa.BigInteger(), nullable=True),
        sa.Column("target_path", sa.String(length=512), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["release_id"], ["releases.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("release_id", "file", "base_sha256"),
    )
    with op.batch_alter_table("delta_jobs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_delta_jobs_release_status", ["release_id", "status"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_delta_jobs_status"), ["status"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("delta_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_delta_jobs_status"))
        batch_op.drop_index("ix_delta_jobs_release_status")

    op.drop_table("delta_jobs")
