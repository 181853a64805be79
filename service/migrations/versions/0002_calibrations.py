"""calibrations: per-width training regime, seed noise and alpha effect (alphasearch calibrate)

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "app_calibrations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("depth", sa.Integer(), nullable=False),
        sa.Column("norm", sa.String(length=32), nullable=False),
        sa.Column("attention", sa.String(length=32), nullable=False),
        sa.Column("embed_scale", sa.String(length=32), nullable=False),
        sa.Column("corpus", sa.Text(), nullable=True),
        sa.Column("corpus_fingerprint", sa.String(length=64), nullable=False),
        sa.Column("code_version", sa.String(length=32), nullable=False),
        sa.Column("steps", sa.Integer(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("seq_len", sa.Integer(), nullable=False),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("progress", sa.JSON(), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed')", name=op.f("ck_app_calibrations_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_calibrations")),
    )
    op.create_index(
        "ix_app_calibrations_key",
        "app_calibrations",
        ["width", "depth", "norm", "attention", "embed_scale", "corpus_fingerprint", "code_version"],
    )
    op.create_index("ix_app_calibrations_status_created_at", "app_calibrations", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_app_calibrations_status_created_at", table_name="app_calibrations")
    op.drop_index("ix_app_calibrations_key", table_name="app_calibrations")
    op.drop_table("app_calibrations")
