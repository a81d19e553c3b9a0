"""Re-embedding migrations: their state and a log of committed chunks.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Create reembed_migrations and reembed_chunks."""
    now = sa.func.now()
    op.create_table(
        "reembed_migrations",
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("table_schema", sa.Text, nullable=False),
        sa.Column("table_name", sa.Text, nullable=False),
        sa.Column("id_column", sa.Text, nullable=False),
        sa.Column("id_type", sa.Text, nullable=False),
        sa.Column("text_column", sa.Text, nullable=False),
        sa.Column("legacy_column", sa.Text, nullable=False),
        sa.Column("new_column", sa.Text, nullable=False),
        sa.Column("manifest_id", sa.Text, sa.ForeignKey("model_manifests.id"), nullable=False),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("chunk_size", sa.Integer, nullable=False),
        sa.Column("status", sa.Text, nullable=False, server_default="planned"),
        sa.Column("phase", sa.Text, nullable=False, server_default="keyset"),
        sa.Column("checkpoint", JSONB),
        sa.Column("cut_over", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("rows_total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("rows_embedded", sa.Integer, nullable=False, server_default="0"),
        sa.Column("chunks_done", sa.Integer, nullable=False, server_default="0"),
        sa.Column("step_token", sa.Text),
        sa.Column("error", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.CheckConstraint(
            "status IN ('planned', 'running', 'paused', 'failed', 'finalized')",
            name="reembed_status_known",
        ),
        sa.CheckConstraint(
            "phase IN ('keyset', 'catchup', 'index', 'following')", name="reembed_phase_known"
        ),
    )
    op.create_table(
        "reembed_chunks",
        sa.Column(
            "migration",
            sa.Text,
            sa.ForeignKey("reembed_migrations.name", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("chunk_no", sa.Integer, nullable=False),
        sa.Column("phase", sa.Text, nullable=False),
        sa.Column("first_id", JSONB),
        sa.Column("last_id", JSONB),
        sa.Column("rows_read", sa.Integer, nullable=False),
        sa.Column("rows_written", sa.Integer, nullable=False),
        sa.Column("seconds", sa.Float, nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False, server_default=now),
        sa.PrimaryKeyConstraint("migration", "chunk_no"),
    )


def downgrade() -> None:
    """Drop the re-embedding state (the columns added to user tables stay)."""
    op.drop_table("reembed_chunks")
    op.drop_table("reembed_migrations")
