"""When each batch's own message last reached a worker: job_batches.delivered_at.

A claim made on delivery of the batch's message, unlike one a coalescing worker makes before
the message arrives, tells the reconciler that every message sent before it in that queue has
left Redis (embedq_core/lifecycle/delivery.py). Existing rows get NULL: no delivery is presumed.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

# A nullable column with no default is a catalog change, but it still needs a brief ACCESS
# EXCLUSIVE lock: fail (and let the operator retry) rather than queue every claim behind it.
LOCK_TIMEOUT = "30s"
INDEX = "job_batches_delivered"


def upgrade() -> None:
    """Add delivered_at, and index it concurrently (job_batches keeps a row per batch ever).
    Safe to run again after a failure: a failed concurrent build leaves an invalid index."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute("ALTER TABLE job_batches ADD COLUMN IF NOT EXISTS delivered_at timestamptz")
    with op.get_context().autocommit_block():
        op.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {INDEX}")
        op.execute(
            f"CREATE INDEX CONCURRENTLY {INDEX} ON job_batches (delivered_at)"
            " WHERE delivered_at IS NOT NULL"
        )


def downgrade() -> None:
    """Drop the column (its index goes with it)."""
    op.drop_column("job_batches", "delivered_at")
