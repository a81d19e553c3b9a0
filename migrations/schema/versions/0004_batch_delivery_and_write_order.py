"""Batch delivery records and submission order: job_batches, job_items.seq, vectors_*.seq.

Existing databases keep working: every new column is nullable or has a constant default (no
table rewrite), pending items of unfinished jobs get a seq in submission order, unfinished jobs
get their job_batches rows, and every collection's vectors table gets seq = 0 (the oldest), so
any new submission replaces what is there.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import UUID

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Adding a column takes a brief ACCESS EXCLUSIVE lock on each vectors table; fail (and let the
# operator retry) rather than queue every reader of the product behind a long query.
LOCK_TIMEOUT = "30s"


def _vector_tables() -> list[str]:
    rows = op.get_bind().execute(sa.text("SELECT vector_table FROM collections ORDER BY 1"))
    return [row[0] for row in rows]


def _quoted(name: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote(name)


def upgrade() -> None:
    """Create job_batches and the submission sequence; add seq to job_items and vector tables."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.create_table(
        "job_batches",
        sa.Column(
            "job_id",
            UUID(as_uuid=True),
            sa.ForeignKey("jobs.id", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("batch_no", sa.Integer, nullable=False),
        sa.Column("sends", sa.Integer, nullable=False, server_default="0"),
        sa.Column("sent_at", sa.DateTime(timezone=True)),
        sa.Column("claimed_at", sa.DateTime(timezone=True)),
        sa.Column("claimed_by", sa.Text),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("job_id", "batch_no"),
    )
    op.create_index(
        "job_batches_unfinished",
        "job_batches",
        ["job_id"],
        postgresql_where=sa.text("finished_at IS NULL"),
    )

    op.execute("CREATE SEQUENCE job_item_seq AS bigint")
    # Nullable and no default while adding: a volatile default would rewrite job_items.
    op.add_column("job_items", sa.Column("seq", sa.BigInteger))
    op.execute("ALTER TABLE job_items ALTER COLUMN seq SET DEFAULT nextval('job_item_seq')")
    op.execute("ALTER SEQUENCE job_item_seq OWNED BY job_items.seq")
    # Pending items will still be written: number them in submission order. Finished items are
    # never written again and keep NULL.
    op.execute(
        """
        UPDATE job_items i SET seq = o.seq
        FROM (SELECT i.job_id, i.item_index,
                     row_number() OVER (ORDER BY j.created_at, i.job_id, i.item_index) AS seq
              FROM job_items i JOIN jobs j ON j.id = i.job_id
              WHERE i.status = 'pending') o
        WHERE i.job_id = o.job_id AND i.item_index = o.item_index
        """
    )
    op.execute("SELECT setval('job_item_seq', max(seq)) FROM job_items HAVING max(seq) IS NOT NULL")

    # Delivery records of unfinished jobs. A batch whose items were claimed counts as sent no
    # later than its last claim: if no worker holds it, it is re-sent (a duplicate at worst).
    op.execute(
        """
        INSERT INTO job_batches (job_id, batch_no, sends, sent_at, claimed_at, finished_at)
        SELECT b.job_id, b.batch_no, (b.enqueued_at IS NOT NULL)::int,
               least(b.enqueued_at, b.claimed_at), b.claimed_at,
               CASE WHEN b.pending = 0 THEN b.last_update END
        FROM (SELECT i.job_id, i.batch_no, j.enqueued_at,
                     max(i.updated_at) FILTER (WHERE i.attempts > 0) AS claimed_at,
                     count(*) FILTER (WHERE i.status = 'pending') AS pending,
                     max(i.updated_at) AS last_update
              FROM job_items i JOIN jobs j ON j.id = i.job_id
              WHERE j.finished_at IS NULL
              GROUP BY i.job_id, i.batch_no, j.enqueued_at) b
        """
    )

    for table in _vector_tables():
        # A constant default: no rewrite, existing rows read as seq 0 (the oldest).
        op.execute(
            f"ALTER TABLE IF EXISTS {_quoted(table)}"
            " ADD COLUMN IF NOT EXISTS seq bigint NOT NULL DEFAULT 0"
        )
    op.execute("RESET lock_timeout")


def downgrade() -> None:
    """Drop what upgrade added (the sequence goes with job_items.seq)."""
    for table in _vector_tables():
        op.execute(f"ALTER TABLE IF EXISTS {_quoted(table)} DROP COLUMN IF EXISTS seq")
    op.drop_column("job_items", "seq")
    op.drop_index("job_batches_unfinished", table_name="job_batches")
    op.drop_table("job_batches")
