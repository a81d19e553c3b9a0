"""Alembic environment: online migrations only, against the URL set by schema_upgrade."""

from __future__ import annotations

from alembic import context
from sqlalchemy import engine_from_config, pool

from embedq_core.tables import metadata

config = context.config


def run_migrations_online() -> None:
    """Run migrations in one transaction on a fresh connection."""
    connectable = engine_from_config(
        config.get_section(config.config_ini_section, {}),
        prefix="sqlalchemy.",
        poolclass=pool.NullPool,
    )
    with connectable.connect() as connection:
        context.configure(connection=connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) mode is not supported; run against a database")
run_migrations_online()
