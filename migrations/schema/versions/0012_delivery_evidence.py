"""Evidence that a message left Redis: job_batches.delivered_send and worker_presence.

job_batches.delivered_send: which message of a batch a worker took.
Set with delivered_at from the message's send number (embedq_core/queueing.SEND_NO_HEADER):
0 for the API's first send, n for the reconciler's n-th send; NULL when the message carried
none (sent by an older version). With it the reconciler proves that a re-sent message left
Redis when a message queued behind it was delivered (embedq_core/lifecycle/delivery.py).
worker_presence: each worker's model and since when its consumer has held no task
(embedq_core/lifecycle/presence.py).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

LOCK_TIMEOUT = "30s"


def upgrade() -> None:
    """Add the column and the table; safe to run again."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute("ALTER TABLE job_batches ADD COLUMN IF NOT EXISTS delivered_send integer")
    op.execute(
        "CREATE TABLE IF NOT EXISTS worker_presence ("
        " worker text PRIMARY KEY, manifest_id text NOT NULL,"
        " beat_at timestamptz NOT NULL, idle_since timestamptz)"
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_table("worker_presence")
    op.drop_column("job_batches", "delivered_send")
