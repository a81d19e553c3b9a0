"""Durability and auth: API keys, enqueue times, unchanged items, tokenizers in the catalog.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add API keys, jobs.enqueued_at, job_items.unchanged and model_manifests.tokenizer_json."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("prefix", sa.Text, nullable=False),
        sa.Column("key_sha256", sa.Text, nullable=False, unique=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.add_column("jobs", sa.Column("enqueued_at", sa.DateTime(timezone=True)))
    op.add_column(
        "job_items",
        sa.Column("unchanged", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.add_column("model_manifests", sa.Column("tokenizer_json", sa.Text))


def downgrade() -> None:
    """Drop what upgrade added."""
    op.drop_column("model_manifests", "tokenizer_json")
    op.drop_column("job_items", "unchanged")
    op.drop_column("jobs", "enqueued_at")
    op.drop_table("api_keys")
