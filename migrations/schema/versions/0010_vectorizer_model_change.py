"""A vectorizer's model change, and migrations and vectorizers that store lexical weights.

reembed_migrations.vectorizer names the vectorizer whose column the migration re-embeds with
a new model (NULL: an ordinary migration). Its cutover and rollback also move the vectorizer's
own columns, and its finalize hands the table back to the vectorizer, which then follows with
the new model. A dropped vectorizer leaves its finished changes' records unlinked.
reembed_migrations.sparse_dimension: a model with a sparse head (BGE-M3) also fills
`<vector column>_sparse sparsevec(sparse_dimension)`; NULL for dense models.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

LOCK_TIMEOUT = "30s"


def upgrade() -> None:
    """Add the columns and the foreign key; safe to run again."""
    op.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
    op.execute(
        "ALTER TABLE reembed_migrations ADD COLUMN IF NOT EXISTS vectorizer text,"
        " ADD COLUMN IF NOT EXISTS sparse_dimension integer"
    )
    op.execute(
        "DO $$ BEGIN"
        " ALTER TABLE reembed_migrations ADD CONSTRAINT reembed_migrations_vectorizer_fkey"
        " FOREIGN KEY (vectorizer) REFERENCES reembed_migrations(name) ON DELETE SET NULL;"
        " EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )


def downgrade() -> None:
    """Drop them."""
    op.drop_column("reembed_migrations", "sparse_dimension")
    op.drop_column("reembed_migrations", "vectorizer")
