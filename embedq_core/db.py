"""Database URLs and engines."""

from __future__ import annotations

from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, create_engine, event


def sqlalchemy_url(database_url: str) -> str:
    """Turn a libpq-style URL into one SQLAlchemy drives with psycopg 3."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix) :]
    raise ValueError(f"DATABASE_URL must be a postgresql:// URL, got {database_url.split(':')[0]}")


def libpq_url(database_url: str) -> str:
    """Turn a SQLAlchemy-style URL into one psycopg.connect accepts."""
    return database_url.replace("postgresql+psycopg://", "postgresql://", 1)


def make_engine(
    database_url: str, pool_size: int = 5, statement_timeout_s: float | None = None
) -> Engine:
    """A pooled engine that checks connections before use, so a restarted Postgres is survived;
    with statement_timeout_s, Postgres cancels any statement of its sessions running longer."""
    engine = create_engine(sqlalchemy_url(database_url), pool_size=pool_size, pool_pre_ping=True)
    if statement_timeout_s is not None:
        timeout_ms = max(round(statement_timeout_s * 1000), 1)

        # Set per session (not in the URL's `options`, which a user's URL may already carry).
        @event.listens_for(engine, "connect")
        def _limit_statements(dbapi_connection: Any, _record: Any) -> None:
            with dbapi_connection.cursor() as cursor:
                cursor.execute(f"SET statement_timeout = {timeout_ms}")
            dbapi_connection.commit()

    return engine


def psycopg_connection(conn: Connection) -> psycopg.Connection[Any]:
    """The psycopg connection under a SQLAlchemy one, for code written against psycopg."""
    driver = conn.connection.driver_connection
    if not isinstance(driver, psycopg.Connection):
        raise TypeError(f"expected a psycopg connection, got {type(driver).__name__}")
    return driver


class ReconnectingConnection:
    """One autocommit connection for a background thread (reconciler, index maintenance),
    opened on first use and again after Postgres dropped it."""

    def __init__(self, database_url: str, application_name: str) -> None:
        self._url = libpq_url(database_url)
        self._application_name = application_name
        self._conn: psycopg.Connection[Any] | None = None

    def get(self) -> psycopg.Connection[Any]:
        """The open connection, reopened if it is closed or broken."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(
                self._url, autocommit=True, application_name=self._application_name
            )
        return self._conn

    def close(self) -> None:
        """Close it (the next get() opens a new one)."""
        if self._conn is not None and not self._conn.closed:
            self._conn.close()
