"""Re-embedding migrations count failed attempts (steps and index builds) and catch-up passes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = ("step_attempts", "index_attempts", "catchup_passes", "pass_rows")


def upgrade() -> None:
    """Add the counters (0 for migrations already recorded)."""
    for name in COLUMNS:
        op.add_column(
            "reembed_migrations",
            sa.Column(name, sa.Integer, nullable=False, server_default="0"),
        )


def downgrade() -> None:
    """Drop the counters."""
    for name in COLUMNS:
        op.drop_column("reembed_migrations", name)
