"""Table vectorizers (re-embedding migrations that follow a table for good), templates over
several text columns, per-row failures, and admin API keys.

reembed_migrations.kind: 'migration' (a move to a new model, finalized in the end) or
'vectorizer' (keeps a table's vector column embedded for as long as it exists).
text_columns and text_template: the text is a template over several columns (text_column is
then the first of them); NULL for one column. reembed_row_failures: rows whose write failed
(an error from the table's own trigger or constraint), retried with backoff and parked after
EMBEDQ_REEMBED_MAX_ROW_ATTEMPTS, so one bad row never holds the others up. api_keys.admin: keys
that may manage vectorizers over HTTP (`embedq keys create NAME --admin`).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LOCK_TIMEOUT = "30s"


def upgrade() -> None:
    """Add the columns and the failures table; safe to run again."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute(
        "ALTER TABLE reembed_migrations"
        " ADD COLUMN IF NOT EXISTS kind text NOT NULL DEFAULT 'migration',"
        " ADD COLUMN IF NOT EXISTS text_columns text[],"
        " ADD COLUMN IF NOT EXISTS text_template text"
    )
    op.execute(
        "DO $$ BEGIN"
        " ALTER TABLE reembed_migrations ADD CONSTRAINT reembed_kind_known"
        " CHECK (kind IN ('migration', 'vectorizer'));"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )
    op.execute(
        "CREATE TABLE IF NOT EXISTS reembed_row_failures ("
        " migration text NOT NULL REFERENCES reembed_migrations(name) ON DELETE CASCADE,"
        " row_key jsonb NOT NULL,"
        " text_md5 text NOT NULL,"
        " attempts integer NOT NULL,"
        " error text NOT NULL,"
        " parked boolean NOT NULL DEFAULT false,"
        " retry_at timestamptz NOT NULL,"
        " first_failed_at timestamptz NOT NULL DEFAULT now(),"
        " last_failed_at timestamptz NOT NULL DEFAULT now(),"
        " PRIMARY KEY (migration, row_key))"
    )
    op.execute("ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS admin boolean NOT NULL DEFAULT false")


def downgrade() -> None:
    """Drop them."""
    op.drop_column("api_keys", "admin")
    op.execute("DROP TABLE IF EXISTS reembed_row_failures")
    op.execute("ALTER TABLE reembed_migrations DROP CONSTRAINT IF EXISTS reembed_kind_known")
    for column in ("text_template", "text_columns", "kind"):
        op.drop_column("reembed_migrations", column)
