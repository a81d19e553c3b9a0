"""Bounded engine refunds per batch, and a migration's row counts kept for status.

job_batches.engine_refunds: how many deliveries of the batch gave their attempt back because the
engine failed a probe text after them; bounded by EMBEDQ_MAX_ENGINE_REFUNDS, so a text that
breaks every engine it meets fails instead of being retried forever.

reembed_migrations.rows_no_text and counted_at: rows without text, counted with rows_total by the
migration at start and at each phase change, so `status` never scans the user's table. Existing
migrations get NULL (status then shows rows_no_text as unknown until their next phase change).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Columns with a constant default are catalog changes, but still need a brief ACCESS EXCLUSIVE
# lock: fail (and let the operator retry) rather than queue every claim behind it.
LOCK_TIMEOUT = "30s"


def upgrade() -> None:
    """Add the three columns; safe to run again."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute(
        "ALTER TABLE job_batches ADD COLUMN IF NOT EXISTS engine_refunds integer NOT NULL DEFAULT 0"
    )
    op.execute(
        "ALTER TABLE reembed_migrations ADD COLUMN IF NOT EXISTS rows_no_text integer,"
        " ADD COLUMN IF NOT EXISTS counted_at timestamptz"
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_column("reembed_migrations", "counted_at")
    op.drop_column("reembed_migrations", "rows_no_text")
    op.drop_column("job_batches", "engine_refunds")
