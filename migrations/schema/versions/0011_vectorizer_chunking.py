"""Vectorizers that cut each row's text into token windows, as chunking collections do.

reembed_migrations.chunk_max_tokens and chunk_overlap_tokens: NULL for a vectorizer (or a
migration) that stores one vector per row; set, the vectorizer keeps each row's windows in a
table of their own (`<table>_<vector>_chunks`) and marks embedded rows in `<vector>_manifest`.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

LOCK_TIMEOUT = "30s"


def upgrade() -> None:
    """Add the columns; safe to run again."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute(
        "ALTER TABLE reembed_migrations ADD COLUMN IF NOT EXISTS chunk_max_tokens integer,"
        " ADD COLUMN IF NOT EXISTS chunk_overlap_tokens integer"
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_column("reembed_migrations", "chunk_overlap_tokens")
    op.drop_column("reembed_migrations", "chunk_max_tokens")
