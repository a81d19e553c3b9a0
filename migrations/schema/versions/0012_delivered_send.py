"""Which message of a batch a worker took: job_batches.delivered_send.

Set with delivered_at from the message's send number (embedq_core/queueing.SEND_NO_HEADER):
0 for the API's first send, n for the reconciler's n-th send; NULL when the message carried
none (sent by an older version). With it the reconciler proves that a re-sent message left
Redis when a message queued behind it was delivered (embedq_core/lifecycle/delivery.py).

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
    """Add the column; safe to run again."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute("ALTER TABLE job_batches ADD COLUMN IF NOT EXISTS delivered_send integer")


def downgrade() -> None:
    """Drop it."""
    op.drop_column("job_batches", "delivered_send")
