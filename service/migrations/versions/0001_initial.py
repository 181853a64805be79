"""studies, batches, results, figures

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "app_batches",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_batches")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_app_batches_idempotency_key")),
    )
    op.create_table(
        "app_studies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("fingerprint", sa.String(length=32), nullable=False),
        sa.Column("norm", sa.String(length=32), nullable=False),
        sa.Column("attention", sa.String(length=32), nullable=False),
        sa.Column("embed_scale", sa.String(length=32), nullable=False),
        sa.Column("target_width", sa.Integer(), nullable=False),
        sa.Column("target_depth", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("trials_done", sa.Integer(), nullable=False),
        sa.Column("trials_total", sa.Integer(), nullable=False),
        sa.Column("lanes", sa.JSON(), nullable=True),
        sa.Column("eta_s", sa.Float(), nullable=True),
        sa.Column("batch_id", sa.String(length=32), nullable=True),
        sa.Column("batch_index", sa.Integer(), nullable=True),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=True),
        sa.Column("lease_owner", sa.String(length=200), nullable=True),
        sa.Column("lease_expires_at", TS, nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'failed', 'cancelled')", name=op.f("ck_app_studies_status")
        ),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["app_batches.id"], name=op.f("fk_app_studies_batch_id_app_batches"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_studies")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_app_studies_idempotency_key")),
    )
    op.create_index(op.f("ix_app_studies_batch_id"), "app_studies", ["batch_id"])
    op.create_index("ix_app_studies_norm_attention", "app_studies", ["norm", "attention"])
    op.create_index("ix_app_studies_status_created_at", "app_studies", ["status", "created_at"])
    op.create_table(
        "app_figures",
        sa.Column("study_id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("png", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["app_studies.id"], name=op.f("fk_app_figures_study_id_app_studies"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("study_id", "key", name=op.f("pk_app_figures")),
    )
    op.create_table(
        "app_results",
        sa.Column("study_id", sa.String(length=32), nullable=False),
        sa.Column("recommendation", sa.JSON(), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.Column("optima", sa.JSON(), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["study_id"], ["app_studies.id"], name=op.f("fk_app_results_study_id_app_studies"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("study_id", name=op.f("pk_app_results")),
    )


def downgrade() -> None:
    op.drop_table("app_results")
    op.drop_table("app_figures")
    op.drop_index("ix_app_studies_status_created_at", table_name="app_studies")
    op.drop_index("ix_app_studies_norm_attention", table_name="app_studies")
    op.drop_index(op.f("ix_app_studies_batch_id"), table_name="app_studies")
    op.drop_table("app_studies")
    op.drop_table("app_batches")
