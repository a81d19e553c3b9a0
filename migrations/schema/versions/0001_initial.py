"""Initial schema: manifests, collections, jobs and job items.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create the catalog and job tables; per-collection vector tables are made with collections."""
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    now = sa.text("now()")
    op.create_table(
        "model_manifests",
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("pooling", sa.Text, nullable=False),
        sa.Column("manifest", JSONB, nullable=False),
        sa.Column("registered_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
    )
    op.create_table(
        "collections",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("manifest_id", sa.Text, sa.ForeignKey("model_manifests.id"), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("vector_table", sa.Text, nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.CheckConstraint("name ~ '^[a-z][a-z0-9_]{0,47}$'", name="collection_name_format"),
    )
    op.create_table(
        "jobs",
        sa.Column("id", UUID(as_uuid=True), primary_key=True),
        sa.Column("collection", sa.Text, sa.ForeignKey("collections.name"), nullable=False),
        sa.Column("manifest_id", sa.Text, sa.ForeignKey("model_manifests.id"), nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="queued"),
        sa.Column("total", sa.Integer, nullable=False),
        sa.Column("done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("batches", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'completed', 'completed_with_errors', 'failed')",
            name="job_status_known",
        ),
    )
    op.create_index(
        "jobs_unfinished", "jobs", ["updated_at"], postgresql_where=sa.text("finished_at IS NULL")
    )
    op.create_table(
        "job_items",
        sa.Column(
            "job_id",
            UUID(as_uuid=True),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("item_index", sa.Integer, nullable=False),
        sa.Column("batch_no", sa.Integer, nullable=False),
        sa.Column("external_id", sa.Text, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("metadata", JSONB, nullable=False, server_default="{}"),
        sa.Column("content_hash", sa.LargeBinary, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("truncated", sa.Boolean, nullable=False, server_default="false"),
        sa.Column("error", sa.Text),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.PrimaryKeyConstraint("job_id", "item_index"),
        sa.UniqueConstraint("job_id", "external_id", name="job_items_external_id_unique"),
        sa.CheckConstraint("status IN ('pending', 'done', 'failed')", name="item_status_known"),
    )
    op.create_index("job_items_batch", "job_items", ["job_id", "batch_no"])


def downgrade() -> None:
    """Drop the job and catalog tables (vector tables of collections are left in place)."""
    op.drop_table("job_items")
    op.drop_table("jobs")
    op.drop_table("collections")
    op.drop_table("model_manifests")
