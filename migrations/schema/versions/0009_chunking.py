"""Chunking collections: a collection may store each document as token windows.

collections.chunk_max_tokens / chunk_overlap_tokens: the windows' size and overlap in the
collection model's tokens (both NULL: no chunking, one row per item as before). A chunking
collection's vectors table is keyed by (id, chunk_no) and records each chunk's character span;
it is created with the collection, so existing tables are untouched. job_items.chunks and
jobs.chunks: the chunks written for a document and for the job.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

LOCK_TIMEOUT = "30s"


def upgrade() -> None:
    """Add the columns and the check; safe to run again."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute(
        "ALTER TABLE collections"
        " ADD COLUMN IF NOT EXISTS chunk_max_tokens integer,"
        " ADD COLUMN IF NOT EXISTS chunk_overlap_tokens integer"
    )
    op.execute(
        "DO $$ BEGIN"
        " ALTER TABLE collections ADD CONSTRAINT collection_chunking_valid CHECK ("
        " (chunk_max_tokens IS NULL) = (chunk_overlap_tokens IS NULL) AND"
        " (chunk_max_tokens IS NULL OR"
        " (chunk_max_tokens > 0 AND chunk_overlap_tokens >= 0"
        " AND chunk_overlap_tokens < chunk_max_tokens)));"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    op.execute("ALTER TABLE job_items ADD COLUMN IF NOT EXISTS chunks integer")
    op.execute("ALTER TABLE jobs ADD COLUMN IF NOT EXISTS chunks integer NOT NULL DEFAULT 0")


def downgrade() -> None:
    """Drop them (chunking collections' tables stay, as any collection's)."""
    op.drop_column("jobs", "chunks")
    op.drop_column("job_items", "chunks")
    op.execute("ALTER TABLE collections DROP CONSTRAINT IF EXISTS collection_chunking_valid")
    for column in ("chunk_overlap_tokens", "chunk_max_tokens"):
        op.drop_column("collections", column)
